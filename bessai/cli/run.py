"""``bessai-run``: run the gateway tree until a signal says stop.

Shutdown (SIGTERM or SIGINT): the tree stops in reverse start order — the status endpoint, the
device sites (polling stops, the Modbus connection closes; an active forced command is left to
its device-side lease), the commands source, the uplink (drains what the deadline allows; the
rest stays on disk), the recorder, the spool (its last group is committed), and telemetry last
(flushed with a deadline). The whole stop is bounded by ``SHUTDOWN_DEADLINE_S``; then the rest is
cancelled. Exit 0. A second signal forces an immediate exit (130). SIGHUP re-reads the whole
configuration: the live keys apply at once, the others are named as needing a restart
(`bessai.config_reload`).

``--simulator`` runs the built-in SUN2000 + LUNA2000 simulator in-process (one per configured
device, over in-memory streams) for a one-command demo; no inverter or config file is needed.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import structlog
import trio

from actors import SupervisorEscalation
from bessai.bounds import clip
from bessai.config_files import find_env_file
from bessai.errors import BessaiError, ConfigError, OperationFailedError
from bessai.settings import DEFAULT_ENV_FILE, get_settings, load_env
from bessai.version import gateway_version

if TYPE_CHECKING:
    from bessai.cli.screen import LogTail
    from bessai.device.modbus import StreamFactory
    from bessai.settings import Settings

log = structlog.get_logger("bessai.run")

EXIT_FORCED = 130
EXIT_DEADLINE = 1

SIMULATOR_DEFAULTS = {"SITE_ID": "demo-site", "INVERTER_IP": "127.0.0.1"}


def simulator_defaults(env_file: str | None) -> dict[str, str]:
    """SIMULATOR_DEFAULTS for the keys neither the environment nor ``env_file`` sets (a site's
    own SITE_ID is kept; no INVERTER_IP is added beside DEVICES, which would be an error)."""
    raw, _ = load_env(None, env_file)
    defaults = {k: v for k, v in SIMULATOR_DEFAULTS.items() if k not in raw}
    if "DEVICES" in raw:
        defaults.pop("INVERTER_IP", None)
    return defaults


def load_run_settings(args: argparse.Namespace) -> Settings:
    """The settings as `bessai-run` reads them, at start and again on every SIGHUP."""
    env: dict[str, str] | None = None
    if args.simulator:
        env = {**simulator_defaults(args.env_file), **os.environ}
    settings = get_settings(env=env, env_file=args.env_file)
    if args.simulator:
        settings = simulator_settings(settings, publish=args.publish_simulated)
    return settings


def simulator_spool(spool_path: Path) -> Path:
    """``outbox.sqlite`` → ``outbox.simulator.sqlite``: simulated readings never share the
    production spool (its rows would be published as the site's)."""
    return spool_path.with_name(f"{spool_path.stem}.simulator{spool_path.suffix or '.sqlite'}")


def simulator_settings(settings: Settings, *, publish: bool) -> Settings:
    """The settings of a ``--simulator`` run: its own spool, and no publishing to a real Pub/Sub
    topic (the emulator is fine) unless ``--publish-simulated``. Every message it publishes
    carries ``simulated=true`` (`Gateway.simulated`)."""
    changes: dict[str, Any] = {"spool_path": simulator_spool(settings.spool_path)}
    if settings.uplink_mode == "cloud" and not publish:
        changes.update(pubsub_topic=None, pubsub_commands_subscription=None,
                       pubsub_commands_topic=None)
    return attrs.evolve(settings, **changes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bessai-run", description="Run the BESSAI Edge Gateway. See ops/RUNBOOK.md.")
    parser.add_argument("--env-file", default=None, metavar="PATH",
                        help="settings file read under the environment (must exist; default: "
                        f"$BESSAI_ENV_FILE, else ./{DEFAULT_ENV_FILE}, else "
                        "/etc/bessai/bessai.env, the first found)")
    parser.add_argument("--simulator", action="store_true",
                        help="also run the built-in simulator in-process (demo, no inverter)")
    parser.add_argument("--publish-simulated", action="store_true",
                        help="with --simulator: publish to a real Pub/Sub topic too (refused "
                        "by default; every message carries simulated=true; the emulator is "
                        "always allowed)")
    parser.add_argument("--sim-soc", type=float, default=50.0, metavar="PCT",
                        help="simulator's initial SOC, 0-100 %% (default %(default)s)")
    parser.add_argument("--sim-temp", type=float, default=25.0, metavar="C",
                        help="simulator's initial battery temperature, -20 to 60 °C (default "
                        "%(default)s; above TEMP_MAX_C, 45, blocks)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop gracefully after S seconds, > 0 (demos and tests)")
    screen = parser.add_mutually_exclusive_group()
    screen.add_argument("--screen", dest="screen", action="store_true", default=None,
                        help="show the live status screen (default: when stdout is a terminal)")
    screen.add_argument("--no-screen", dest="screen", action="store_false",
                        help="log to stdout instead of showing the screen")
    parser.add_argument("--debug", action="store_true", help="tracebacks on startup errors")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {gateway_version()}")
    return parser


def _exit_now(code: int) -> None:
    """Leave at once: the operator asked twice. Shielded clean-up (the telemetry flush, a
    Modbus close) is abandoned; what the spool committed is on disk (WAL, synchronous=FULL),
    exactly as after a SIGKILL."""
    from bessai.cli.screen import restore_terminal

    restore_terminal()  # the status screen's key mode; no finally runs after os._exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


force_exit = _exit_now
"""How a second signal ends the process (a seam for in-process tests)."""


HARD_STOP_MARGIN_S = 5.0
"""How long past SHUTDOWN_DEADLINE_S the process may take before it is ended regardless."""


class Stoppable(Protocol):
    """What a shutdown asks of the tree (`bessai.gateway.Gateway`)."""

    def request_stop(self) -> None: ...


@attrs.define(eq=False)
class Shutdown:
    """This process's one stop: begun once (a signal, or ``--duration``), forced by a second
    signal, bounded by a hard-stop timer that `run_gateway` disarms once the tree has ended."""

    deadline_s: float
    """SHUTDOWN_DEADLINE_S: the graceful stop's budget; then the rest is cancelled."""
    stopping: bool = False
    forced: bool = False
    hard_stop: threading.Timer | None = None
    """Armed by `begin`: ends the process `HARD_STOP_MARGIN_S` after the deadline."""

    def begin(self, gateway: Stoppable, cancel: trio.CancelScope, **why: str) -> None:
        """Graceful stop within the deadline, then cancellation; and a hard stop behind both.

        Cancellation cannot cut short clean-up that a supervisor shields (each child's grace),
        so a timer thread ends the process ``HARD_STOP_MARGIN_S`` after the deadline: a service
        manager waiting on the stop must never wait forever. What the spool committed is on
        disk."""
        self.stopping = True
        log.warning("SHUTDOWN_REQUESTED", **why, deadline_s=self.deadline_s)
        gateway.request_stop()
        cancel.deadline = trio.current_time() + self.deadline_s
        deadline_s = self.deadline_s

        def hard_stop() -> None:
            log.critical("SHUTDOWN_DEADLINE_EXCEEDED", deadline_s=deadline_s, action="exit now")
            force_exit(EXIT_DEADLINE)

        timer = threading.Timer(self.deadline_s + HARD_STOP_MARGIN_S, hard_stop)
        timer.daemon = True
        timer.start()
        self.hard_stop = timer

    def force(self, cancel: trio.CancelScope, signal_name: str) -> None:
        """A second signal: leave now (exit 130)."""
        log.warning("SHUTDOWN_FORCED", signal=signal_name)
        self.forced = True
        cancel.cancel()
        force_exit(EXIT_FORCED)

    def disarm(self) -> None:
        """The tree has ended: the hard stop must not fire any more."""
        if self.hard_stop is not None:
            self.hard_stop.cancel()


async def _watch_signals(gateway: Stoppable, cancel: trio.CancelScope,
                         shutdown: Shutdown) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if shutdown.stopping:
                shutdown.force(cancel, name)
                return
            shutdown.begin(gateway, cancel, signal=name)


async def _stop_after(gateway: Stoppable, duration_s: float, cancel: trio.CancelScope,
                      shutdown: Shutdown) -> None:
    await trio.sleep(duration_s)
    if not shutdown.stopping:
        shutdown.begin(gateway, cancel, reason="duration elapsed")


async def run_gateway(args: argparse.Namespace, settings: Settings, tail: LogTail | None,
                      shutdown: Shutdown | None = None) -> int:
    """The whole run, as ``bessai-run`` does it inside ``trio.run``: returns the exit code.
    ``shutdown``: the stop's state (default: a new one with SHUTDOWN_DEADLINE_S; a test passes
    its own to look at the hard-stop timer afterwards)."""
    if shutdown is None:
        shutdown = Shutdown(settings.shutdown_deadline_s)
    try:
        return await _run_until_stopped(args, settings, tail, shutdown)
    finally:
        shutdown.disarm()


async def _run_until_stopped(args: argparse.Namespace, settings: Settings,
                             tail: LogTail | None, shutdown: Shutdown) -> int:
    from bessai.cli.screen import show
    from bessai.gateway import Gateway
    from bessai.sim import Simulator

    async with trio.open_nursery() as outer:
        factories: dict[str, StreamFactory] = {}
        if args.simulator:
            for device in settings.devices:
                sim = Simulator(str(device.profile), soc_pct=args.sim_soc, temp_c=args.sim_temp,
                                unit_id=device.unit_id)
                await outer.start(sim.run)
                factories[device.id] = sim.stream_factory()
        gateway = Gateway(settings, stream_factories=factories, env_file=args.env_file,
                          handle_sighup=True, settings_loader=lambda: load_run_settings(args),
                          simulated=args.simulator)
        if args.simulator:
            _log_simulator_mode(args, settings)
        with trio.CancelScope() as cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, gateway, cancel, shutdown)
                if args.duration is not None:
                    nursery.start_soon(_stop_after, gateway, args.duration, cancel, shutdown)
                await nursery.start(gateway.run)
                if not gateway.supervisor_done.is_set():
                    # Everything built at startup (modules, profiles, the tree, the OTel SDK:
                    # ~72k objects) moves to the permanent generation, so a full collection no
                    # longer walks it: 60-120 ms -> 0.04 ms per full pass here
                    # (bench/results/gc_freeze.md).
                    gc.freeze()
                    log.info("GATEWAY_READY", site=settings.site_id, version=gateway_version(),
                             status=f"http://{settings.status_bind}/status")
                if tail is not None:
                    nursery.start_soon(show, gateway.status, sys.stdout, tail)
                await gateway.supervisor_done.wait()
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    if shutdown.forced:
        return EXIT_FORCED
    if cancel.cancelled_caught:
        log.warning("SHUTDOWN_DEADLINE_EXCEEDED", deadline_s=settings.shutdown_deadline_s)
    log.info("GATEWAY_STOPPED")
    return 0


def _log_simulator_mode(args: argparse.Namespace, settings: Settings) -> None:
    """One WARNING that says what a simulator run does with its data, and why."""
    fields: dict[str, Any] = {"spool": str(settings.spool_path), "uplink": settings.uplink_mode}
    if settings.uplink_mode == "off" and not args.publish_simulated:
        full = get_settings(env={**simulator_defaults(args.env_file), **os.environ},
                            env_file=args.env_file)
        if full.uplink_mode == "cloud":
            fields["not_published_to"] = (f"projects/{full.gcp_project_id}/topics/"
                                          f"{full.pubsub_topic}")
            fields["hint"] = ("simulated data stays local; --publish-simulated publishes it "
                              "(attribute simulated=true), PUBSUB_EMULATOR_HOST uses the emulator")
    elif settings.uplink_mode != "off":
        fields["attribute"] = "simulated=true"
    log.warning("SIMULATOR_MODE", **fields)


def main(argv: Sequence[str] | None = None) -> int:
    from bessai.observe import configure_logging

    args = build_parser().parse_args(argv)
    try:
        args.env_file = find_env_file(args.env_file).env_file  # bessai.config_files
        settings = load_run_settings(args)
    except BessaiError as error:
        print(error.render(), file=sys.stderr)
        return error.exit_code
    try:
        check_profiles(settings, env_file=args.env_file)
        check_status_bind(settings)
    except BessaiError as error:
        print(error.render(), file=sys.stderr)
        return error.exit_code
    from bessai.observe.otel import adopt_standard_variables

    adopt_standard_variables(load_env(None, args.env_file)[1])  # OTEL_* for the SDK to read
    screen = args.screen if args.screen is not None else sys.stdout.isatty()
    tail = None
    if screen:
        from bessai.cli.screen import LogTail

        tail = LogTail(log_file=settings.log_file or settings.spool_path.parent / "gateway.log")
        configure_logging(settings.log_level, stream=tail, site_id=settings.site_id)
    else:
        configure_logging(settings.log_level, site_id=settings.site_id)
    for warning in settings.warnings:
        log.warning("CONFIG_WARNING", detail=warning)
    try:
        return trio.run(run_gateway, args, settings, tail)
    except Exception as error:  # the supervisor's escalation, a bind failure...
        if args.debug:
            raise
        return report_failure(error)


def check_profiles(settings: Settings, *, env_file: str | None = None) -> None:
    """Load every device's profile before anything starts: a missing or broken profile is a
    configuration error (exit 2) with the path to fix, not a traceback from inside the tree."""
    from bessai.device import load_profile
    from bessai.device.errors import ProfileError

    where = env_file or DEFAULT_ENV_FILE
    for device in settings.devices:
        path = Path(device.profile)
        key = "DEVICE_PROFILE" if path == Path(settings.device_profile) else "DEVICES"
        try:
            exists = path.is_file()
        except (OSError, ValueError):  # settings bound the length; a file system may be stricter
            exists = False
        if not exists:
            raise ConfigError(
                f"{key}={clip(str(path))!r} not found — looked in "
                f"{clip(str(path.absolute().parent))} (a relative path is read from the working "
                f"directory, {Path.cwd()})",
                hint=f"set DEVICE_PROFILE in {where} to the profile's absolute path, e.g. "
                     "/opt/bessai/profiles/huawei_sun2000.json, or run bessai-run from the "
                     "directory that holds profiles/")
        try:
            load_profile(path)
        except ProfileError as error:
            raise ConfigError(str(error), hint=f"fix the profile, or point {key} in {where} "
                              "at a valid one (`bessai profile validate PATH`)") from None


def check_status_bind(settings: Settings) -> None:
    """Fail fast when STATUS_BIND cannot be bound: most often another gateway is already
    running here, and two gateways would fight over the inverter's only Modbus connection."""
    bind = settings.status_bind
    family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind((bind.host, bind.port))
        except OSError as error:
            raise OperationFailedError(
                f"STATUS_BIND={str(bind)!r} cannot be bound ({error.strerror or error}) — is "
                "another gateway already running on this host?",
                hint="stop the other instance (`systemctl status bessai-gateway` / `docker "
                     "compose ps`), or set STATUS_BIND to a free HOST:PORT") from None


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def report_failure(error: BaseException) -> int:
    """Log and print why the gateway ended on its own, in one line each; the exit code.

    Trio wraps what escapes a nursery in an ExceptionGroup; an operator needs the leaf: the
    supervisor's escalation (which child kept failing, and with what) or the one real error.
    """
    leaves = _leaves(error)
    escalation = next((e for e in leaves if isinstance(e, SupervisorEscalation)), None)
    if escalation is not None:
        root = escalation.root_exception
        child = "/".join(escalation.path)
        failure = "it returned instead of running" if root is None else repr(root)
        log.critical("SUPERVISOR_ESCALATED", supervisor=escalation.supervisor, child=child,
                     error=failure, intensity=escalation.intensity,
                     period_s=escalation.period_s)
        print(f"error: the gateway stopped: supervisor {escalation.supervisor!r} gave up after "
              f"more than {escalation.intensity} restarts within {escalation.period_s:g} s; "
              f"failing: {child} (last: {failure}) — see the "
              "ACTOR_CRASHED lines above for each failure; fix the cause and start it again "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
    for leaf in leaves:
        if isinstance(leaf, BessaiError):
            print(leaf.render(), file=sys.stderr)
            return leaf.exit_code
    leaf = leaves[0] if leaves else error
    text = " ".join(f"{type(leaf).__name__}: {leaf}".split())
    log.critical("GATEWAY_FAILED", error=text)
    print(f"error: {text} — see the log lines above; run with --debug for the traceback",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
