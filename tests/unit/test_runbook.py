"""The runbooks (English and Spanish) name every operator event, and every `bessai ...` command
they show is one the CLI accepts (parsed with the real parser, not run)."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

from bessai.cli.main import build_parser
from bessai.settings import KNOWN_KEYS

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = [ROOT / "ops" / "RUNBOOK.md", ROOT / "ops" / "RUNBOOK.es.md"]
EVENTS = [
    "SAFETY_BLOCK", "SAFETY_CLEAR", "LINK_DOWN", "LINK_UP", "SPOOL_BUDGET_WARN",
    "PUBSUB_CONFIG_FAULT", "PUBSUB_POISON_MESSAGE", "HEARTBEAT_LATE", "DEVICE_LINK_DOWN",
    "DEVICE_LINK_UP", "COMMAND_ACCEPTED", "COMMAND_REJECTED", "ACTOR_RESTARTED",
    "ACTOR_ESCALATED", "SPOOL_BUDGET_FULL", "CONFIG_RELOADED", "CONFIG_RELOAD_FAILED",
    "GATEWAY_READY", "GATEWAY_STOPPED", "SHUTDOWN_REQUESTED",
    "UPLINK_ALL_REJECTED", "UPLINK_ALL_REJECTED_CLEARED",
    "SPOOL_DISK_FAULT",
    "SPOOL_DISK_RECOVERED", "SPOOL_RECREATED", "SPOOL_CORRUPT", "EVENTS_HOLD_FULL",
    "EVENTS_HOLD_OK", "DATA_BRANCH_DEGRADED", "DATA_BRANCH_RECOVERED",
    "SCHEDULE_ACCEPTED", "SCHEDULE_REJECTED", "SCHEDULE_SLOT_APPLIED", "SCHEDULE_SETPOINT",
    "SCHEDULE_SLOT_HELD", "SCHEDULE_SLOT_RESUMED", "SCHEDULE_OVERRIDDEN", "SCHEDULE_EXPIRED",
    "SCHEDULE_APPLY_FAILED", "SCHEDULE_STORE_FAILED", "SCHEDULE_STORE_ROW_BAD",
]


def _after_bessai(words: list[str]) -> list[list[str]]:
    for i, word in enumerate(words):
        if (word == "bessai" or word.endswith("/bessai")) and i + 1 < len(words):
            return [words[i + 1:]] if not words[i + 1].startswith("-") else []
    return []


def _bessai_commands(text: str) -> list[list[str]]:
    """Argument lists of every `bessai ...` invocation inside fenced code blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            segment: list[str] = []
            for token in [*lexer, ";"]:
                if token in ("&&", "||", "|", ";", ">", ">>", "<", "&"):
                    commands += _after_bessai(segment)
                    segment = []
                else:
                    segment.append(token)
    return commands


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_runbook_names_every_operator_event(runbook):
    text = runbook.read_text()
    missing = [event for event in EVENTS if f"`{event}`" not in text]
    assert missing == []


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_every_bessai_command_in_the_runbook_is_accepted_by_the_cli(runbook):
    commands = _bessai_commands(runbook.read_text())
    assert len(commands) >= 15
    parser = build_parser()
    for argv in commands:
        if argv[0] == "sim":
            continue  # passed through to bessai-sim untouched
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{runbook.name}: `bessai {' '.join(argv)}` is not a valid command")


def test_both_runbooks_show_the_same_commands():
    english, spanish = (_bessai_commands(p.read_text()) for p in RUNBOOKS)
    assert english == spanish


def test_runbook_check_config_line_matches_the_cli_output_format():
    text = RUNBOOKS[0].read_text()
    assert "Site: X, IP: Y, devices: ..., profile: ..., uplink: emulator|cloud|off" in text


# --- every command, event and name in the runbooks is real ---------------------------------------

COMPOSE = ROOT / "ops" / "docker" / "docker-compose.yml"
UNIT = ROOT / "ops" / "systemd" / "bessai-gateway.service"
LOG_METHODS = {"debug", "info", "warning", "error", "critical", "exception", "msg", "_emit"}
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
EVENT_NAME = re.compile(r"^(?:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[a-z][a-z0-9]*(?:_[a-z0-9]+)+)$")
DEPLOYMENT_VARIABLES = {"BESSAI_IMAGE", "BESSAI_GCP_KEY_DIR", "OTELCOL_UPSTREAM_ENDPOINT",
                        "BESSAI_COMMAND_KEYS_DIR",
                        "BESSAI_ENV_FILE",
                        "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
                        "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_EXPORTER_OTLP_HEADERS",
                        "OTEL_EXPORTER_OTLP_TIMEOUT"}
"""Upper-case names in the runbooks that are neither events nor gateway settings: variables of
the compose file or the OTel SDK's standard variables (checked to be there by
test_deployment_variables_named_exist)."""


def _inline_commands(text: str, program: str) -> list[list[str]]:
    """Argument lists of `program ...` in inline code spans (outside the fenced blocks)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    found = []
    for span in re.findall(r"`([^`\n]+)`", prose):
        words = shlex.split(span.split(" > ")[0].split(" && ")[0], posix=True)
        for i, word in enumerate(words):
            if (word == program or word.endswith(f"/{program}")) and (
                    i == 0 or words[i - 1] not in ("-u", "-g", "-o")):
                rest = words[i + 1:]
                if rest and rest[0] != "...":
                    found.append(rest)
                break
    return found


def _program_lines(text: str, program: str) -> list[list[str]]:
    """`program ...` argument lists from fenced bash blocks and inline code."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#")[0]) if line.strip() else []
            if program in words:
                out.append(words[words.index(program) + 1:])
    return out + _inline_commands(text, program)


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_every_inline_bessai_command_is_accepted_by_the_cli(runbook):
    commands = [c for c in _inline_commands(runbook.read_text(), "bessai") if c[0] != "sim"]
    assert len(commands) >= 8
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{runbook.name}: `bessai {' '.join(argv)}` is not a valid command")


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_every_bessai_run_and_bessai_sim_line_is_accepted_by_its_parser(runbook):
    from bessai.cli.run import build_parser as run_parser
    from bessai.sim.cli import build_parser as sim_parser

    text = runbook.read_text()
    sims = _program_lines(text, "bessai-sim") + [
        c[1:] for c in _bessai_commands(text) + _inline_commands(text, "bessai") if c[0] == "sim"]
    runs = _program_lines(text, "bessai-run")
    assert len(sims) >= 2
    assert len(runs) >= 2
    for parser, lines, name in ((sim_parser(), sims, "bessai-sim"), (run_parser(), runs,
                                                                      "bessai-run")):
        for argv in lines:
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{runbook.name}: `{name} {' '.join(argv)}` is not valid")


LINK_EVENT_FIELDS = ("name", "up_event", "down_event", "reason_changed_event")
"""Keywords that carry an event name: ``Event(name=...)`` and a `bessai.link.Link`'s events."""


def _emitted_names() -> set[str]:
    """UPPER_SNAKE names the code logs or publishes: the first argument of a log call (or of the
    guard's ``_emit``), an ``Event(name=...)``, or either branch of ``name = A if ... else B``."""
    names: set[str] = set()

    def constant(node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and EVENT_NAME.match(node.value):
            names.add(node.value)
        elif (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
              and isinstance(node.left, ast.Constant) and str(node.left.value).endswith("_")):
            names.add(node.left.value + "*")  # "actor_" + kind: a family of names

    for path in [*(ROOT / "bessai").rglob("*.py"), *(ROOT / "actors").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in LOG_METHODS and node.args:
                    constant(node.args[0])
                for keyword in node.keywords:
                    if keyword.arg in LINK_EVENT_FIELDS:
                        constant(keyword.value)
            elif (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                  and node.target.id in LINK_EVENT_FIELDS and node.value is not None):
                constant(node.value)  # a `bessai.link.Link` default event name
            elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.IfExp)
                  and any(isinstance(t, ast.Name) and t.id == "name" for t in node.targets)):
                constant(node.value.body)
                constant(node.value.orelse)
    return names


def _runbook_event_names(text: str) -> set[str]:
    """Names the runbook presents as log events: ``event=name`` anywhere (and each name of an
    ``event=(A|B)`` grep), every backticked UPPER_SNAKE name that is not a setting or a
    deployment variable, and lower_snake names shown as the start of a log line."""
    names = set(re.findall(r"event=\(?([A-Za-z][A-Za-z0-9_]+)", text))
    for group in re.findall(r"event=\(([A-Za-z0-9_|]+)\)", text):
        names |= set(group.split("|"))
    names |= {n for n in re.findall(r"`([A-Z][A-Z0-9_]+)`", text)
              if n not in KNOWN_KEYS and n not in DEPLOYMENT_VARIABLES}
    names |= set(re.findall(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+) [a-z_]+=", text))
    return {n for n in names if EVENT_NAME.match(n)}


def test_deployment_variables_named_exist():
    stack = COMPOSE.read_text() + (ROOT / "config" / ".env.example").read_text()
    for name in DEPLOYMENT_VARIABLES:
        assert name in stack


def test_the_event_scan_finds_what_the_code_logs():
    emitted = _emitted_names()
    assert {"SAFETY_BLOCK", "COMMAND_ACCEPTED", "COMMAND_REJECTED", "LINK_DOWN",
            "ACTOR_ESCALATED", "CONFIG_RELOADED", "SAFETY_STOP"} <= emitted
    assert "SPOOL_GAP" not in emitted  # an event an old draft named, never emitted


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_every_event_in_the_runbook_is_emitted_by_the_code(runbook):
    named = _runbook_event_names(runbook.read_text())
    assert len(named) >= 25
    emitted = _emitted_names()
    families = tuple(n[:-1] for n in emitted if n.endswith("*"))
    assert sorted(n for n in named - emitted if not n.startswith(families)) == []


def test_both_runbooks_name_the_same_events():
    english, spanish = (_runbook_event_names(p.read_text()) for p in RUNBOOKS)
    assert english == spanish


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


_DC_VALUE_OPTIONS = {"-f", "--file", "--profile", "-p", "--project-name", "--env-file", "-s",
                     "--signal", "-t", "--timeout", "-e", "--entrypoint", "-u", "--user", "-w"}


def _dc_targets(text: str) -> tuple[list[str], list[str]]:
    """(services, profiles) named by ``dc ...`` / ``docker compose ...`` command lines."""
    services, profiles = [], []
    for match in re.finditer(r"(?:^|[`;|&(]\s*|\s)(?:dc|docker compose(?: -f \S+)?) ([^`\n#|]+)",
                             text, re.MULTILINE):
        words = shlex.split(re.split(r"&&|[()]", match[1])[0])
        i, subcommand = 0, None
        while i < len(words):
            word = words[i]
            if word in _DC_VALUE_OPTIONS:
                if word == "--profile":
                    profiles.append(words[i + 1])
                i += 2
                continue
            if word.startswith("-"):
                i += 1
                continue
            if subcommand is None:
                subcommand = word
            else:
                services.append(word)
                if subcommand == "run":
                    break  # the rest is the command run in the container
            i += 1
    return services, profiles


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_every_compose_name_in_the_runbooks_exists(runbook, compose):
    text = runbook.read_text()
    services, profiles = _dc_targets(text)
    assert {"gateway", "otel-collector"} <= set(services)
    assert sorted(set(services) - set(compose["services"])) == []
    known_profiles = {p for s in compose["services"].values() for p in s.get("profiles", [])}
    assert profiles
    assert sorted(set(profiles) - known_profiles) == []
    containers = set(re.findall(
        r"docker (?:exec|logs|kill|restart|stop|start|inspect)(?: -{1,2}[a-z]+(?: [A-Z0-9h]+)?)*"
        r" (bessai-[a-z-]+)", text))
    assert {"bessai-gateway", "bessai-otel-collector"} <= containers
    names = {svc.get("container_name") for svc in compose["services"].values()}
    assert sorted(containers - names) == []
    for row in re.findall(r"^\| (bessai-[a-z-]+) \|", text, re.MULTILINE):  # the `dc ps` table
        assert row in names
    volumes = {v.get("name") for v in compose["volumes"].values()}
    used = set(re.findall(r"-v (bessai-[a-z-]+):", text)) | set(
        re.findall(r"volume[^`\n]{0,20}`(bessai-[a-z-]+)`", text))
    assert "bessai-spool" in used
    assert sorted(used - volumes) == []


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_systemd_commands_name_the_unit_that_ships(runbook):
    text = runbook.read_text()
    units = set(re.findall(r"(?:systemctl \w+(?: --\w+)*|journalctl -u) ([\w-]+)", text))
    assert units == {UNIT.stem}


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_ports_and_paths_in_the_runbook_match_the_stack(runbook, compose):
    text = runbook.read_text()
    gateway = compose["services"]["gateway"]
    spool_path = gateway["environment"]["SPOOL_PATH"]
    assert spool_path in text
    assert "127.0.0.1:8080:8080" in gateway["ports"]
    assert "curl -s 127.0.0.1:8080/status" in text
    assert "5020:502" in compose["services"]["modbus-simulator"]["ports"]
    assert "localhost:5020" in text
    key_mount = next(v for v in gateway["volumes"] if "BESSAI_GCP_KEY_DIR" in v)
    assert key_mount.startswith("${BESSAI_GCP_KEY_DIR:-/etc/bessai/gcp}:/var/run/bessai/gcp")
    assert "/etc/bessai/gcp/key.json" in text
    assert "/var/run/bessai/gcp" in text


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_every_test_the_runbook_cites_exists(runbook):
    """The §13 table names real test files and functions."""
    text = runbook.read_text()
    section = text[text.index("## 13."):]
    cited = 0
    for row in section.splitlines():
        if not row.startswith("| "):
            continue
        current = None
        for token in re.findall(r"`([^`]+)`|\b(e2e)\b", row):
            name = token[0] or token[1]
            if name == "e2e":
                current = ROOT / "tests" / "e2e" / "test_runbook_procedures.py"
                continue
            path, _, func = name.partition("::")
            if path.startswith("tests/") and path.endswith(".py"):
                current = ROOT / path
                assert current.exists(), f"{runbook.name}: {path} does not exist"
                name = func
            if name.startswith("test_") and current is not None:
                assert re.search(rf"def {re.escape(name)}\(", current.read_text()), \
                    f"{runbook.name}: no {name} in {current.relative_to(ROOT)}"
                cited += 1
    assert cited >= 40
