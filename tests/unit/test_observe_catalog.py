"""The metric table in docs/telemetry.md is the catalogue the sink exports with."""

from pathlib import Path

from bessai.observe.catalog import METRICS, markdown_table


def test_docs_table_is_the_catalogue() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "telemetry.md").read_text()
    assert markdown_table() in docs


def test_catalogue_names_are_unique_dotted_and_prefixed() -> None:
    names = [spec.name for spec in METRICS]
    assert len(names) == len(set(names))
    assert all(name.startswith("bessai.") and " " not in name for name in names)


def _metric_calls() -> list[tuple[str, str, frozenset[str], str]]:
    """Every ``<sink>.count/record/gauge("bessai....", ...)`` call in the package: (method, name,
    attribute keywords, where)."""
    import ast

    root = Path(__file__).parents[2] / "bessai"
    calls = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("count", "record", "gauge") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).startswith("bessai.")):
                keywords = frozenset(k.arg for k in node.keywords if k.arg is not None)
                where = f"{path.relative_to(root.parent)}:{node.lineno}"
                calls.append((node.func.attr, node.args[0].value, keywords, where))
    return calls


def _link_gauges() -> set[str]:
    """Gauge names handed to a `bessai.link.Link` (``gauge="bessai..."``, or its default),
    which reports ``<gauge>{link=...}`` on every transition."""
    import ast

    names = set()
    for path in sorted((Path(__file__).parents[2] / "bessai").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            value = None
            keyword = isinstance(node, ast.keyword) and node.arg == "gauge"
            default = (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                       and node.target.id == "gauge")
            if keyword or default:
                value = node.value
            if isinstance(value, ast.Constant) and str(value.value).startswith("bessai."):
                names.add(value.value)
    return names


def test_every_metric_an_actor_emits_is_catalogued_with_its_kind_and_attributes() -> None:
    from bessai.observe.catalog import BY_NAME, Kind

    kind_of = {"count": Kind.COUNTER, "record": Kind.HISTOGRAM, "gauge": Kind.GAUGE}
    calls = _metric_calls()
    assert len(calls) >= 30  # the scan found the actors' calls (not an empty pass)
    problems = []
    for method, name, keywords, where in calls:
        spec = BY_NAME.get(name)
        if spec is None:
            problems.append(f"{where}: {name} is not in bessai/observe/catalog.py")
            continue
        if spec.kind is not kind_of[method]:
            problems.append(f"{where}: {name} is a {spec.kind.value}, reported with .{method}")
        if keywords != set(spec.attributes):
            problems.append(f"{where}: {name} attributes {sorted(keywords)} != catalogue "
                            f"{sorted(spec.attributes)}")
    assert not problems, "\n".join(problems)


def test_every_catalogued_metric_is_emitted_somewhere() -> None:
    emitted = ({name for _, name, _, _ in _metric_calls()} | {"bessai.telemetry.dropped"}
               | _link_gauges())
    assert {spec.name for spec in METRICS} - emitted == set()
