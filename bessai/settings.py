"""Gateway settings from the environment and ``config/.env``.

`get_settings()` reads every key once, validates each value and the consistency between values,
and returns a frozen `Settings`. Invariants:

- The process environment wins over the file (so ``docker run -e`` and systemd overrides work);
  an empty value (``KEY=``) counts as unset and takes the default.
- Every problem is reported at once: one `SettingsError` lists each bad key with its value and
  what is expected, so an operator fixes the file in one pass, not one error per restart.
- Nothing secret reaches a repr or an error message: URL credentials (``user:pass@``) are
  redacted, and the credentials key file is never opened here (its path is not secret).
- Safety limits are consistent: ``0 <= SOC_MIN_PCT < SOC_MAX_PCT <= 100`` and the hysteresis
  bands (clear at ``min + hysteresis`` / ``max - hysteresis``) do not overlap.

Several inverters at one site: ``DEVICES=inv1@192.168.1.50:502/1,inv2@192.168.1.51`` (each entry
``ID@HOST[:PORT][/UNIT][?profile=PATH]``; a missing port, unit or profile takes INVERTER_PORT,
MODBUS_UNIT_ID, DEVICE_PROFILE). Without DEVICES there is one device, ``DEVICE_ID`` (default
``inv1``) at INVERTER_IP. Every key is documented in ``config/.env.example``.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import attrs
from dotenv import dotenv_values

from bessai.bounds import clip
from bessai.errors import ConfigError

__all__ = [
    "DEFAULT_ENV_FILE",
    "DEFAULT_PROFILE",
    "KNOWN_KEYS",
    "BindAddress",
    "DeviceSpec",
    "SettingProblem",
    "Settings",
    "SettingsCheck",
    "SettingsError",
    "check_settings",
    "get_settings",
    "load_env",
    "parse_bind",
    "parse_size",
    "read_log_level",
    "redact_url",
    "setting_default",
    "soc_band_problem",
]

DEFAULT_ENV_FILE = "config/.env"
DEFAULT_PROFILE = "profiles/huawei_sun2000.json"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
UplinkMode = Literal["emulator", "cloud", "off"]



# --------------------------------------------------------------------------------------------
# Values


@attrs.frozen
class BindAddress:
    """A ``host:port`` to listen on (IPv6 hosts are bracketed when printed)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{_bracket(self.host)}:{self.port}"

    @property
    def connect_host(self) -> str:
        """Where a local client connects: a wildcard bind (0.0.0.0, ::) is reached on loopback."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)

    @property
    def url(self) -> str:
        """The base URL a local client uses, e.g. ``http://127.0.0.1:8080``."""
        return f"http://{_bracket(self.connect_host)}:{self.port}"


@attrs.frozen
class DeviceSpec:
    """One inverter the gateway polls: its id (in logs and messages), address and profile."""

    id: str
    host: str
    """The inverter's (or converter's) address; for ``transport="serial"`` the port path."""
    port: int = 502
    unit_id: int = 1
    profile: Path = Path(DEFAULT_PROFILE)
    transport: str = "tcp"
    """``tcp`` (Modbus TCP), ``rtu-over-tcp`` (RTU frames through an RS485-to-Ethernet
    converter) or ``serial`` (RTU on a serial port: a USB-RS485 adapter)."""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1

    def __str__(self) -> str:
        if self.transport == "serial":
            return f"{self.id}@serial:{self.host}/{self.unit_id}"
        prefix = "" if self.transport == "tcp" else f"{self.transport}:"
        return f"{self.id}@{prefix}{_bracket(self.host)}:{self.port}/{self.unit_id}"


@attrs.frozen
class SettingProblem:
    """One bad setting: the key, the value read (None when missing) and what was expected."""

    key: str
    value: str | None
    expected: str

    def __str__(self) -> str:
        if self.value is None:
            return f"{clip(self.key)} is not set — {self.expected}"
        return f"{clip(self.key)}={clip(self.value)!r} {self.expected}"


class SettingsError(ConfigError):
    """Every problem found in the settings, reported together."""

    def __init__(self, problems: list[SettingProblem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = "1 setting is wrong" if count == 1 else f"{count} settings are wrong"
        body = "\n".join(f"  {p}".replace("\n", "\n    ") for p in self.problems)
        where = source or DEFAULT_ENV_FILE
        super().__init__(
            f"{head}:\n{body}",
            hint=f"fix {'it' if count == 1 else 'them'} in {where} (every key is documented in "
            "config/.env.example), then run `bessai check-config`",
        )

    @property
    def errors(self) -> list[str]:
        """The problems as one line each."""
        return [str(p) for p in self.problems]


def redact_url(url: str | None) -> str | None:
    """The URL with any ``user:password@`` replaced, for reprs and messages."""
    if url is None or "@" not in url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{host}").geturl()


def _device_default(field: str) -> Any:
    """What a device entry takes unless it says otherwise (DeviceSpec's own default)."""
    return attrs.fields_dict(DeviceSpec)[field].default


def _redacted(url: str | None) -> str:
    return str(redact_url(url))


def _device_tuple(devices: Iterable[DeviceSpec]) -> tuple[DeviceSpec, ...]:
    return tuple(devices)


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class Settings:
    """The validated configuration of one gateway. Build it with `get_settings`.

    Field names are the keys in lower case (``SOC_MIN_PCT`` → ``soc_min_pct``). Constructing it
    directly still checks the cross-key rules (safety limits, intervals, uplink keys).
    """

    site_id: str
    devices: tuple[DeviceSpec, ...] = attrs.field(converter=_device_tuple)
    inverter_ip: IPAddress | str | None = None
    # what a device entry inherits unless it says otherwise: DeviceSpec's defaults
    inverter_port: int = _device_default("port")
    modbus_unit_id: int = _device_default("unit_id")
    device_id: str = "inv1"
    device_profile: Path = Path(DEFAULT_PROFILE)
    modbus_transport: str = _device_default("transport")
    serial_port: str | None = None
    serial_baudrate: int = _device_default("baudrate")
    serial_parity: str = _device_default("parity")
    serial_stopbits: int = _device_default("stopbits")
    poll_interval_s: float = 1.0
    slow_poll_interval_s: float = 30.0
    # the runbook's safety limits (bessai.control.limits.Limits takes its defaults from here)
    soc_min_pct: float = 5.0
    soc_max_pct: float = 98.0
    soc_hysteresis_pct: float = 2.0
    temp_max_c: float = 45.0
    temp_hysteresis_c: float = 3.0
    gcp_project_id: str | None = None
    pubsub_topic: str | None = None
    pubsub_commands_subscription: str | None = None
    pubsub_commands_topic: str | None = None
    google_application_credentials: Path | None = None
    pubsub_emulator_host: str | None = None
    otel_exporter_otlp_endpoint: str | None = attrs.field(default=None, repr=_redacted)
    spool_path: Path = Path("var/spool/outbox.sqlite")
    spool_max_bytes: int = 1024**3
    status_bind: BindAddress = BindAddress("127.0.0.1", 8080)
    log_level: str = "INFO"
    log_file: Path | None = None  # the status screen's full log (default: beside the spool)
    shutdown_deadline_s: float = 20.0
    command_max_ttl_s: float = 3600.0
    command_min_power_w: float = 100.0
    command_min_interval_s: float = 5.0
    # -- command trust (issue 14) --
    command_verify_keys: Path | None = None
    clock_skew_max_s: float = 30.0
    # --
    # schedules (issue 15): the slot controllers (bessai.control.controllers.ControllerConfig
    # takes its defaults from here)
    schedule_control_step_s: float = 10.0
    schedule_deadband_w: float = 200.0
    schedule_ramp_w_per_s: float = 50.0
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, eq=False,
                                            repr=False)

    def __attrs_post_init__(self) -> None:
        problems = _consistency_problems(attrs.asdict(self, recurse=False))
        if not self.devices:
            problems.append(
                SettingProblem("DEVICES", None, "the gateway needs at least one inverter")
            )
        if problems:
            raise SettingsError(problems)

    @property
    def inverter_ip_str(self) -> str:
        """The (first) inverter's address as text, e.g. ``192.168.1.50``."""
        if self.inverter_ip is not None:
            return str(self.inverter_ip)
        return self.devices[0].host

    @property
    def uplink_mode(self) -> UplinkMode:
        """``off`` without PUBSUB_TOPIC, ``emulator`` with PUBSUB_EMULATOR_HOST, else ``cloud``."""
        if self.pubsub_topic is None:
            return "off"
        return "emulator" if self.pubsub_emulator_host else "cloud"

    @property
    def status_url(self) -> str:
        """Base URL of the local status endpoint (``/healthz``, ``/status``)."""
        return self.status_bind.url

    def device(self, device_id: str) -> DeviceSpec:
        """The device with this id; a `ConfigError` naming the known ids otherwise."""
        for spec in self.devices:
            if spec.id == device_id:
                return spec
        known = ", ".join(d.id for d in self.devices)
        raise ConfigError(
            f"no device {device_id!r} at site {self.site_id}",
            hint=f"use one of: {known} (set in DEVICES or DEVICE_ID)",
        )


# --------------------------------------------------------------------------------------------
# Parsers: raw text -> value, or ValueError whose text completes "KEY='value' ..."

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_TOPIC = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")
_PROJECT = re.compile(r"^([a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_SIZE = re.compile(r"^([0-9]{1,15}(?:\.[0-9]{1,15})?) *([KMGT]i?B|B)?$", re.IGNORECASE)
# Numbers are ASCII digits only: Python's int()/float() also take "٥٠٢", "5_0_2", "1e3", " 5 ",
# "inf" and "nan", none of which an operator means when writing a port or a limit.
_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,15}(?:\.[0-9]{0,15})?|\.[0-9]{1,15})")
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_IP_EXAMPLE = "set it to the inverter's address, e.g. 192.168.1.50"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_host(raw: str) -> IPAddress | str:
    """An IP address (v4 or v6) or a DNS hostname; rejects things like ``999.1.1.1``."""
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", text):
        raise ValueError(f"is not an IP address — {_IP_EXAMPLE}")
    if re.fullmatch(r"[^/\s]+:\d+", text) and text.count(":") == 1:
        raise ValueError(
            f"has a port in it — put only the address here (e.g. {text.split(':')[0]}) "
            "and the port in INVERTER_PORT"
        )
    labels = text.rstrip(".").split(".")
    if (
        len(text) > 253
        or not all(_HOST_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError(f"is neither an IP address nor a hostname — {_IP_EXAMPLE}")
    return text.lower()


_Number = TypeVar("_Number", int, float)


def _number_in(pattern: re.Pattern[str], convert: Callable[[str], _Number], form: str,
               low: _Number, high: _Number, what: str) -> Callable[[str], _Number]:
    """A parser of ``form`` (ASCII digits matching ``pattern``) within [low, high]."""

    def parse(raw: str) -> _Number:
        text = raw.strip()
        if not pattern.fullmatch(text):
            raise ValueError(f"is not {form} — expected {what}")
        value = convert(text)
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"is out of range — expected {what}")
        return value

    return parse


def _int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    return _number_in(_INT, int, "a whole number in ASCII digits", low, high, what)


def _float_in(low: float, high: float, what: str) -> Callable[[str], float]:
    return _number_in(_FLOAT, float, "a number in ASCII digits (e.g. 2.5)", low, high, what)


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        text = raw.strip()
        if not regex.match(text):
            raise ValueError(f"is not valid — expected {what}")
        return text

    return parse


def _topic(raw: str) -> str:
    text = raw.strip()
    if text.startswith("projects/"):
        short = text.rsplit("/", 1)[-1]
        raise ValueError(f"is a full resource path — give the short name only, e.g. {short!r}")
    if not _TOPIC.match(text) or text.lower().startswith("goog"):
        raise ValueError(
            "is not a valid Pub/Sub name — expected 3-255 characters starting with a letter "
            "(letters, digits, - _ . ~ + %), not starting with 'goog', e.g. bessai-telemetry"
        )
    return text


NAME_MAX_BYTES = 255
"""The longest file or directory name (one path component) on Linux file systems, in bytes."""
PATH_MAX_BYTES = 4096
"""The longest path the kernel accepts (PATH_MAX), in bytes."""
SPOOL_SUFFIX_RESERVE_BYTES = 40
"""Room the spool needs after its file name: ``-wal``, ``-shm`` and a corrupt file moved aside
as ``<name>.corrupt-20260101T000000Z.9-wal``."""
SPOOL_PATH_MAX_BYTES = 400
"""SQLite's unix VFS refuses database paths over 512 bytes; the spool adds its suffixes to the
absolute path."""


def _path_problem(path: Path, max_bytes: int, name_max_bytes: int) -> str | None:
    """Why ``path`` cannot be a file name on this system, or None."""
    text = str(path)
    if "\0" in text:
        return "contains a NUL character — a path cannot"
    try:
        encoded = os.fsencode(text)
    except UnicodeError:
        return "cannot be encoded as a file name on this system"
    if len(encoded) > max_bytes:
        return f"is {len(encoded)} bytes long — the limit is {max_bytes} bytes"
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > name_max_bytes:
            return (f"has a name of {size} bytes ({clip(part, 40)!r}) — one file or directory "
                    f"name may be at most {name_max_bytes} bytes")
    return None


def _path(raw: str) -> Path:
    """A file path that the kernel can open: no NUL, at most PATH_MAX, names at most NAME_MAX."""
    try:
        path = Path(raw.strip()).expanduser()
    except RuntimeError:  # ``~user`` for a user this host does not have
        raise ValueError(f"starts with {clip(raw.strip().split('/')[0], 40)!r}, a home "
                         "directory this host does not know — write the full path") from None
    problem = _path_problem(path, PATH_MAX_BYTES, NAME_MAX_BYTES)
    if problem:
        raise ValueError(f"{problem} — set a shorter path")
    return path


def _spool_path(raw: str) -> Path:
    """The spool's file: short enough for SQLite and for the names the spool derives from it."""
    path = _path(raw)
    if path.name in ("", ".", ".."):
        raise ValueError("names no file — give the spool's file, e.g. var/spool/outbox.sqlite")
    absolute = Path(os.path.abspath(path))
    problem = _path_problem(absolute, SPOOL_PATH_MAX_BYTES,
                            NAME_MAX_BYTES - SPOOL_SUFFIX_RESERVE_BYTES)
    if problem:
        raise ValueError(
            f"{problem.replace('is ', 'is (as an absolute path) ', 1)} for the spool (SQLite "
            f"and the spool's -wal/.corrupt-* files need the room) — set a shorter path, e.g. "
            "/var/lib/bessai/outbox.sqlite")
    return path


def parse_bind(raw: str) -> BindAddress:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6); used for STATUS_BIND and PUBSUB_EMULATOR_HOST."""
    text = raw.strip()
    match = re.fullmatch(r"\[([^\]]+)\]:([0-9]{1,5})|([^:\[\]]*):([0-9]{1,5})", text)
    expected = "expected HOST:PORT, e.g. 127.0.0.1:8080 (IPv6 as [::1]:8080)"
    if not match:
        raise ValueError(f"is not HOST:PORT — {expected}")
    host = match.group(1) or match.group(3) or ""
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"has a port out of range — {expected}")
    if host:
        try:
            parse_host(host)
        except ValueError:
            raise ValueError(f"has an invalid host — {expected}") from None
    return BindAddress(host or "0.0.0.0", port)


def _emulator_host(raw: str) -> str:
    bind = parse_bind(raw)
    return str(bind)


def _url(raw: str) -> str:
    text = raw.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http(s) URL — expected e.g. http://127.0.0.1:4318")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has an invalid port — expected e.g. http://127.0.0.1:4318") from None
    return text


def parse_size(raw: str) -> int:
    """Bytes from ``1073741824``, ``500MB`` (10^6) or ``2GiB`` (2^30)."""
    expected = "expected a size such as 500MB, 2GiB or a number of bytes, at least 10MB"
    match = _SIZE.match(raw.strip())
    if not match:
        raise ValueError(f"is not a size — {expected}")
    number, unit = match.groups()
    value = int(float(number) * _SIZE_UNITS[(unit or "B").upper()])
    if value < 10 * 1000**2:
        raise ValueError(f"is too small — {expected}")
    if value > 1000**5:
        raise ValueError(f"is over 1 PB — {expected}")
    return value


TRANSPORTS = ("tcp", "rtu-over-tcp", "serial")
"""MODBUS_TRANSPORT values: Modbus TCP, RTU through an RS485-to-Ethernet converter, RTU on a
serial port."""


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if value not in options:
            raise ValueError(f"is not one of {', '.join(options)}")
        return value

    return parse


def _serial_port(raw: str) -> str:
    value = raw.strip()
    if not value.startswith("/") or any(c.isspace() for c in value) or len(value) > 200:
        raise ValueError("is not a serial device path, e.g. /dev/ttyUSB0 (a USB-RS485 adapter)")
    return value


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
    if level not in _LOG_LEVELS:
        raise ValueError(f"is not a log level — expected one of {', '.join(_LOG_LEVELS)}")
    return level


@attrs.frozen
class _Key:
    """How one key is parsed; its default is the `Settings` field's (stated there, once)."""

    name: str
    parse: Callable[[str], Any]
    required_hint: str | None = None  # set when the key must be present

    @property
    def field(self) -> str:
        return self.name.lower()

    @property
    def default(self) -> Any:
        """The value of an unset key: the `Settings` field's default (None for a key without
        one, such as SITE_ID, which is then reported missing)."""
        return setting_default(self.field)


_KEYS: tuple[_Key, ...] = (
    _Key(
        "SITE_ID",
        _pattern(_ID, "a site name of letters, digits, . _ - (e.g. site-santiago-01)"),
        required_hint="name this site, e.g. SITE_ID=site-santiago-01",
    ),
    _Key("INVERTER_IP", parse_host),
    _Key("INVERTER_PORT", _int_in(1, 65535, "a TCP port 1-65535 (Huawei: 502 or 6607)")),
    _Key(
        "MODBUS_UNIT_ID",
        _int_in(0, 255, "a unit id 0-255 (Huawei: 0 direct, 1 via SDongle)"),
    ),
    _Key("DEVICE_ID", _pattern(_DEVICE_ID, "a short id of letters, digits, _ - (e.g. inv1)")),
    _Key("DEVICE_PROFILE", _path),
    _Key("MODBUS_TRANSPORT", _choice(TRANSPORTS)),
    _Key("SERIAL_PORT", _serial_port),
    _Key("SERIAL_BAUDRATE", _int_in(300, 1_000_000, "a baud rate, e.g. 9600 (Huawei COM port)")),
    _Key("SERIAL_PARITY", _choice(("N", "E", "O"))),
    _Key("SERIAL_STOPBITS", _int_in(1, 2, "1 or 2 stop bits")),
    _Key("DEVICES", str),  # parsed after the defaults it inherits are known
    _Key("POLL_INTERVAL_S", _float_in(0.1, 3600, "seconds between 0.1 and 3600, e.g. 1.0")),
    _Key("SLOW_POLL_INTERVAL_S", _float_in(0.1, 86400, "seconds between 0.1 and 86400")),
    _Key("SOC_MIN_PCT", _float_in(0, 100, "a percentage 0-100, e.g. 5.0")),
    _Key("SOC_MAX_PCT", _float_in(0, 100, "a percentage 0-100, e.g. 98.0")),
    _Key("SOC_HYSTERESIS_PCT", _float_in(0, 50, "percentage points 0-50, e.g. 2.0")),
    _Key("TEMP_MAX_C", _float_in(-40, 100, "°C between -40 and 100, e.g. 45.0")),
    _Key("TEMP_HYSTERESIS_C", _float_in(0, 20, "°C between 0 and 20, e.g. 3.0")),
    _Key(
        "GCP_PROJECT_ID",
        _pattern(_PROJECT, "a Google Cloud project id: 6-30 lower-case letters, digits, -"),
    ),
    _Key("PUBSUB_TOPIC", _topic),
    _Key("PUBSUB_COMMANDS_SUBSCRIPTION", _topic),
    _Key("PUBSUB_COMMANDS_TOPIC", _topic),
    _Key("GOOGLE_APPLICATION_CREDENTIALS", _path),
    _Key("PUBSUB_EMULATOR_HOST", _emulator_host),
    _Key("OTEL_EXPORTER_OTLP_ENDPOINT", _url),
    _Key("SPOOL_PATH", _spool_path),
    _Key("SPOOL_MAX_BYTES", parse_size),
    _Key("STATUS_BIND", parse_bind),
    _Key("LOG_LEVEL", _log_level),
    _Key("LOG_FILE", _path),
    _Key(
        "SHUTDOWN_DEADLINE_S",
        _float_in(1, 300, "seconds between 1 and 300 (below the stop timeout of Docker/systemd)"),
    ),
    # Bounds on dispatch commands (the command gate, bessai.control.gate.CommandPolicy)
    _Key("COMMAND_MAX_TTL_S", _float_in(60, 86400, "seconds between 60 and 86400, e.g. 3600")),
    _Key("COMMAND_MIN_POWER_W", _float_in(0, 100000, "watts between 0 and 100000, e.g. 100")),
    _Key("COMMAND_MIN_INTERVAL_S", _float_in(0, 3600, "seconds between 0 and 3600, e.g. 5")),
    # -- command trust (issue 14): operator public keys, the clock skew a command may meet --
    _Key("COMMAND_VERIFY_KEYS", _path),
    _Key(
        "CLOCK_SKEW_MAX_S",
        _float_in(1, 86400, "seconds between 1 and 86400, e.g. 30 (skew from Pub/Sub's clock "
                  "beyond which charge/discharge are refused)"),
    ),
    # Schedules (issue 15): the peak_shave / export_limit slot controllers
    _Key("SCHEDULE_CONTROL_STEP_S", _float_in(1, 3600, "seconds between 1 and 3600, e.g. 10")),
    _Key("SCHEDULE_DEADBAND_W", _float_in(0, 100000, "watts between 0 and 100000, e.g. 200")),
    _Key("SCHEDULE_RAMP_W_PER_S",
         _float_in(1, 100000, "watts per second between 1 and 100000, e.g. 50")),
)

KNOWN_KEYS: tuple[str, ...] = tuple(k.name for k in _KEYS)
"""Every key the gateway reads (config/.env.example documents each)."""

# Keys that may sit in config/.env for other readers (the collector, compose, the OTel SDK).
_FOREIGN_KEYS = {"OTELCOL_UPSTREAM_ENDPOINT", "BESSAI_IMAGE", "TZ"}
_FOREIGN_PREFIXES = ("OTEL_", "OTELCOL_", "COMPOSE_", "GOOGLE_", "GRPC_", "PYTHON", "DOCKER_")


# --------------------------------------------------------------------------------------------
# Multi-device


def _parse_devices(
    raw: str, port: int, unit_id: int, profile: Path, transport: str = "tcp",
    line: tuple[int, str, int] = (9600, "N", 1),
) -> tuple[tuple[DeviceSpec, ...], list[str]]:
    """Parse ``ID@[TRANSPORT:]HOST[:PORT][/UNIT][?profile=PATH]`` entries (serial:
    ``ID@serial:/dev/ttyUSB0[/UNIT]``); returns devices and problems. An entry without a
    transport takes MODBUS_TRANSPORT; serial entries take the SERIAL_* line settings."""
    devices: list[DeviceSpec] = []
    problems: list[str] = []
    entry_re = re.compile(
        r"^(?P<id>[^@\s]+)@(?:(?P<transport>tcp|rtu-over-tcp):)?(?P<host>\[[^\]]+\]|[^:/?\s]+)"
        r"(?::(?P<port>[0-9]{1,5}))?(?:/(?P<unit>[0-9]{1,3}))?(?:\?profile=(?P<profile>\S+))?$"
    )
    serial_re = re.compile(
        r"^(?P<id>[^@\s]+)@serial:(?P<path>/[^\s?]+?)(?:/(?P<unit>[0-9]{1,3}))?"
        r"(?:\?profile=(?P<profile>\S+))?$"
    )
    form = ("ID@[TRANSPORT:]HOST[:PORT][/UNIT][?profile=PATH] (TRANSPORT tcp or rtu-over-tcp) "
            "or ID@serial:PORT[/UNIT], e.g. inv1@192.168.1.50:502/1, "
            "inv2@rtu-over-tcp:192.168.1.60:4001/2, inv3@serial:/dev/ttyUSB0/1")
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        serial_match = serial_re.match(entry)
        match = serial_match or entry_re.match(entry)
        if not match:
            problems.append(f"entry {clip(entry)!r} is not {form}")
            continue
        dev_id = match["id"]
        if not _DEVICE_ID.match(dev_id):
            problems.append(f"entry {clip(entry)!r}: id {clip(dev_id, 40)!r} must be letters, "
                            "digits, _ - (≤32)")
            continue
        dev_unit = int(match["unit"]) if match["unit"] else unit_id
        try:
            dev_profile = _path(match["profile"]) if match["profile"] else profile
        except ValueError as exc:
            problems.append(f"entry {clip(entry)!r}: profile {exc}")
            continue
        if serial_match or (transport == "serial" and not match["transport"]):
            if not serial_match:
                problems.append(f"entry {clip(entry)!r}: MODBUS_TRANSPORT=serial needs serial "
                                "entries, e.g. inv1@serial:/dev/ttyUSB0/1")
                continue
            if not 0 <= dev_unit <= 255:
                problems.append(f"entry {clip(entry)!r}: unit must be 0-255")
                continue
            devices.append(DeviceSpec(dev_id, match["path"], 0, dev_unit, dev_profile,
                                      "serial", *line))
            continue
        try:
            host = str(parse_host(match["host"]))
        except ValueError as exc:
            problems.append(f"entry {clip(entry)!r}: host {clip(match['host'], 80)!r} {exc}")
            continue
        dev_port = int(match["port"]) if match["port"] else port
        if not 1 <= dev_port <= 65535 or not 0 <= dev_unit <= 255:
            problems.append(f"entry {clip(entry)!r}: port must be 1-65535 and unit 0-255")
            continue
        devices.append(DeviceSpec(dev_id, host, dev_port, dev_unit, dev_profile,
                                  match["transport"] or transport))
    if not devices and not problems:
        problems.append(f"lists no device — expected {form}")
    ids = [d.id for d in devices]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"lists device id {dup!r} twice — each id must be unique")
    addrs = [(d.host, d.port, d.unit_id) for d in devices]
    for addr in sorted({a for a in addrs if addrs.count(a) > 1}):
        where = addr[0] if addr[1] == 0 else f"{_bracket(addr[0])}:{addr[1]}"
        problems.append(
            f"lists {where}/{addr[2]} twice — one inverter, one entry "
            "(an inverter accepts one Modbus client)"
        )
    transports: dict[tuple[str, int], set[str]] = {}
    for d in devices:
        transports.setdefault((d.host, d.port), set()).add(d.transport)
    for (host, dev_port), kinds in sorted(transports.items()):
        if len(kinds) > 1:
            problems.append(f"speaks {' and '.join(sorted(kinds))} to {_bracket(host)}:"
                            f"{dev_port} — one endpoint has one transport")
    return tuple(devices), problems


def setting_default(field: str) -> Any:
    """The default of a `Settings` field (None for a field without one): each default is
    stated once, on the field; `Limits` and `ControllerConfig` take theirs from here."""
    default = attrs.fields_dict(Settings)[field].default
    return None if default is attrs.NOTHING else default


# --------------------------------------------------------------------------------------------
# Cross-key rules


def soc_band_problem(min_pct: float, max_pct: float,
                     hysteresis_pct: float | None) -> Literal["order", "overlap"] | None:
    """The SOC band rule, stated once (settings and `bessai.control.limits.Limits` both ask
    it): ``order`` when the minimum is not below the maximum; ``overlap`` when the clearing
    points ``min + hysteresis`` and ``max - hysteresis`` meet, so a block could never clear;
    None when the band is sound. ``hysteresis_pct`` None (not known) checks the order only."""
    if min_pct >= max_pct:
        return "order"
    if hysteresis_pct is not None and min_pct + hysteresis_pct >= max_pct - hysteresis_pct:
        return "overlap"
    return None

_INVALID: Any = object()
"""Stands for a value that was present but failed to parse (distinct from None: not set)."""


def _consistency_problems(values: Mapping[str, Any]) -> list[SettingProblem]:
    """Rules between keys; a rule whose inputs are missing (failed to parse) is skipped."""
    problems: list[SettingProblem] = []

    def have(*names: str) -> bool:
        return all(values.get(n) not in (None, _INVALID) for n in names)

    if have("soc_min_pct", "soc_max_pct"):
        low, high = values["soc_min_pct"], values["soc_max_pct"]
        hyst = values["soc_hysteresis_pct"] if have("soc_hysteresis_pct") else None
        band = soc_band_problem(low, high, hyst)
        if band == "order":
            problems.append(SettingProblem(
                "SOC_MIN_PCT", f"{low:g}",
                f"must be below SOC_MAX_PCT={high:g} — e.g. {setting_default('soc_min_pct'):g} "
                f"and {setting_default('soc_max_pct'):g}"))
        elif band == "overlap":
            problems.append(SettingProblem(
                "SOC_HYSTERESIS_PCT", f"{hyst:g}",
                f"is too wide for SOC_MIN_PCT={low:g} and SOC_MAX_PCT={high:g} — a block clears "
                "at MIN+HYSTERESIS and MAX-HYSTERESIS, which must not meet"))
    if have("poll_interval_s", "slow_poll_interval_s") and (
        values["slow_poll_interval_s"] < values["poll_interval_s"]
    ):
        problems.append(
            SettingProblem(
                "SLOW_POLL_INTERVAL_S",
                f"{values['slow_poll_interval_s']:g}",
                f"must be at least POLL_INTERVAL_S={values['poll_interval_s']:g}",
            )
        )
    project_needed = [
        k
        for k in ("pubsub_topic", "pubsub_commands_subscription", "pubsub_commands_topic")
        if values.get(k) is not None
    ]
    if project_needed and values.get("gcp_project_id") is None:
        names = ", ".join(k.upper() for k in project_needed)
        problems.append(
            SettingProblem("GCP_PROJECT_ID", None, f"{names} need a project, e.g. my-bess-project")
        )
    if have("pubsub_commands_subscription") and not have("pubsub_topic"):
        problems.append(
            SettingProblem(
                "PUBSUB_TOPIC",
                None,
                "PUBSUB_COMMANDS_SUBSCRIPTION is set but telemetry has no topic — set both, "
                "or neither for a gateway without uplink",
            )
        )
    return problems


# --------------------------------------------------------------------------------------------
# Loading


MAX_ENV_FILE_BYTES = 1024 * 1024
"""The largest settings file read (a real one is a few KiB); a bigger one is refused unread."""
MAX_VALUE_CHARS = 16384
"""The longest value of one key; a longer one is refused before any parser sees it."""


def _read_env_file(path: Path) -> str:
    """The file's text: a regular file of at most MAX_ENV_FILE_BYTES in UTF-8, else ConfigError.

    Size first (a FIFO or a 2 GB file is never read whole), then the encoding: a stray Latin-1
    byte is an operator's typo, reported with its line and column, not a traceback.
    """
    where = clip(str(path), 120)
    hint = "fix the file (every key is documented in config/.env.example), or pass another " \
           "with --env-file"
    try:
        with path.open("rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"settings file {where} is not a regular file", hint=hint)
            data = fh.read(MAX_ENV_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"settings file {where} cannot be read ({exc.strerror or exc})",
                          hint="check the path and that this user may read it") from None
    if len(data) > MAX_ENV_FILE_BYTES:
        raise ConfigError(f"settings file {where} is over {MAX_ENV_FILE_BYTES} bytes — not a "
                          "settings file?", hint=hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"settings file {where} is not UTF-8 text: byte 0x{data[exc.start]:02X} at line "
            f"{line}, column {column}",
            hint="save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or replace the character "
                 "with plain ASCII; " + hint) from None


def load_env(
    env: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = DEFAULT_ENV_FILE
) -> tuple[dict[str, str], dict[str, str]]:
    """Merge the file under the environment; returns (merged values, the file's own values).

    A missing file is not an error (Docker's env_file and systemd pass the environment); one
    that exists but is unreadable, too big or not UTF-8 is a `ConfigError`.
    Empty values are dropped, in either place, so that ``KEY=`` means "not set here".
    """
    environ = dict(os.environ if env is None else env)
    file_values: dict[str, str] = {}
    if env_file is not None and _exists(Path(env_file)):
        text = _read_env_file(Path(env_file))
        file_values = {
            k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None
        }
    merged = {k: v for k, v in file_values.items() if v.strip()}
    merged.update({k: v for k, v in environ.items() if v.strip()})
    return merged, file_values


def _exists(path: Path) -> bool:
    """Like ``path.exists()``, but a name too long or with a NUL is "exists" (so the read says
    why) rather than an OSError or ValueError."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    return True


def _unknown_key_warnings(file_values: Mapping[str, str], source: str) -> list[str]:
    warnings = []
    for key in file_values:
        if key in KNOWN_KEYS or key in _FOREIGN_KEYS or key.startswith(_FOREIGN_PREFIXES):
            continue
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6) if len(key) < 64 \
            else []
        suggestion = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{source}: unknown key {clip(key, 80)} is ignored{suggestion}")
    return warnings


@attrs.frozen
class SettingsCheck:
    """What one read of the settings found: every problem, and every value that did parse.

    ``values`` holds the keys (lower case, as on `Settings`) whose value parsed or took its
    default; a key whose value is wrong is absent. `bessai check-config` uses it to check the
    files the good keys point at (profiles, credentials, spool directory) in the same run.
    """

    source: str
    values: Mapping[str, Any]
    devices: tuple[DeviceSpec, ...]
    problems: tuple[SettingProblem, ...]
    warnings: tuple[str, ...]

    @property
    def uplink_mode(self) -> UplinkMode | None:
        """As `Settings.uplink_mode`, or None when PUBSUB_TOPIC itself is wrong."""
        if "pubsub_topic" not in self.values:
            return None
        if self.values["pubsub_topic"] is None:
            return "off"
        return "emulator" if self.values.get("pubsub_emulator_host") else "cloud"

    def settings(self) -> Settings:
        """The validated `Settings`; `SettingsError` listing every problem otherwise."""
        if self.problems:
            raise SettingsError(list(self.problems), source=self.source)
        return Settings(devices=self.devices, warnings=self.warnings, **self.values)


def check_settings(
    env: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = DEFAULT_ENV_FILE
) -> SettingsCheck:
    """Read and check every key; never raises for a bad value (see `SettingsCheck.problems`).

    A settings file that cannot be read at all (not UTF-8, too big, unreadable) is the one
    exception: a `ConfigError`, since no key can be trusted then.
    """
    raw, file_values = load_env(env, env_file)
    source = str(env_file) if env_file is not None else "the environment"
    problems: list[SettingProblem] = []
    values: dict[str, Any] = {}
    for key in _KEYS:
        text = raw.get(key.name)
        if text is None:
            if key.required_hint:
                problems.append(SettingProblem(key.name, None, key.required_hint))
            values[key.field] = key.default
            continue
        shown = redact_url(text) if key.name == "OTEL_EXPORTER_OTLP_ENDPOINT" else text
        if len(text) > MAX_VALUE_CHARS:
            problems.append(SettingProblem(
                key.name, shown, f"is {len(text)} characters long — the limit is "
                f"{MAX_VALUE_CHARS}"))
            values[key.field] = _INVALID
            continue
        try:
            values[key.field] = key.parse(text)
        except ValueError as exc:
            problems.append(SettingProblem(key.name, shown, str(exc)))
            values[key.field] = _INVALID

    devices_raw = values.pop("devices")
    devices: tuple[DeviceSpec, ...] = ()
    port, unit_id, profile = (values[k] for k in ("inverter_port", "modbus_unit_id",
                                                   "device_profile"))
    inherit = (port, unit_id, profile)
    line = (values["serial_baudrate"], values["serial_parity"], values["serial_stopbits"])
    transport = values["modbus_transport"]
    inherit_ok = _INVALID not in (*inherit, *line, transport)
    serial = transport == "serial"
    if values["serial_port"] not in (None, _INVALID) and transport not in ("serial", _INVALID):
        problems.append(SettingProblem(
            "SERIAL_PORT", values["serial_port"],
            f"is set but MODBUS_TRANSPORT={transport} — set MODBUS_TRANSPORT=serial to use it "
            "(or remove SERIAL_PORT)"))
    if serial and devices_raw is None:
        if "SERIAL_PORT" not in raw:
            problems.append(SettingProblem(
                "SERIAL_PORT", None, "MODBUS_TRANSPORT=serial needs the port, e.g. "
                "SERIAL_PORT=/dev/ttyUSB0 (a USB-RS485 adapter)"))
        if "INVERTER_IP" in raw:
            problems.append(SettingProblem(
                "INVERTER_IP", raw["INVERTER_IP"], "is set but MODBUS_TRANSPORT=serial reaches "
                "the inverter through SERIAL_PORT — remove one"))
        if inherit_ok and _INVALID not in (values["serial_port"], values["device_id"]) \
                and values["serial_port"] is not None:
            devices = (DeviceSpec(values["device_id"], values["serial_port"], 0, unit_id,
                                  profile, "serial", *line),)
    elif devices_raw is not None:
        if "INVERTER_IP" in raw:
            problems.append(
                SettingProblem(
                    "DEVICES",
                    devices_raw,
                    "is set together with INVERTER_IP — use one: INVERTER_IP for a single "
                    "inverter, DEVICES for several",
                )
            )
        elif inherit_ok:
            devices, device_problems = _parse_devices(devices_raw, port, unit_id, profile,
                                                      transport, line)
            problems += [SettingProblem("DEVICES", devices_raw, p) for p in device_problems]
    elif "INVERTER_IP" not in raw:
        problems.append(
            SettingProblem(
                "INVERTER_IP", None, f"{_IP_EXAMPLE} (or list several inverters in DEVICES)"
            )
        )
    elif inherit_ok and _INVALID not in (values["inverter_ip"], values["device_id"]):
        devices = (
            DeviceSpec(values["device_id"], str(values["inverter_ip"]), port, unit_id, profile,
                       transport),
        )

    problems += _consistency_problems(values)
    if not problems and not devices:
        problems.append(SettingProblem("DEVICES", None, "the gateway needs at least one inverter"))
    return SettingsCheck(
        source=source,
        values={k: v for k, v in values.items() if v is not _INVALID},
        devices=devices,
        problems=tuple(problems),
        warnings=tuple(_unknown_key_warnings(file_values, source)),
    )


def get_settings(
    env: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = DEFAULT_ENV_FILE
) -> Settings:
    """Read, validate and return the settings; raise `SettingsError` listing every problem.

    ``env`` defaults to ``os.environ``; ``env_file`` (default ``config/.env``, relative to the
    working directory) is read if it exists, and the environment wins over it. A file that
    cannot be read as UTF-8 text is a `ConfigError` (exit 2), never a traceback.
    """
    return check_settings(env, env_file).settings()


def read_log_level(
    env: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = DEFAULT_ENV_FILE
) -> str:
    """LOG_LEVEL as it stands now, for a reload on SIGHUP (the file is read again).

    Same precedence as `get_settings` (a LOG_LEVEL in the process environment wins, so with
    Docker's env_file a change needs the container recreated); a bad value raises `SettingsError`
    and the caller keeps the current level.
    """
    raw, _ = load_env(env, env_file)
    text = raw.get("LOG_LEVEL")
    if text is None:
        return str(setting_default("log_level"))
    try:
        return _log_level(text)
    except ValueError as exc:
        source = str(env_file) if env_file is not None else "the environment"
        raise SettingsError([SettingProblem("LOG_LEVEL", text, str(exc))], source=source) from None
