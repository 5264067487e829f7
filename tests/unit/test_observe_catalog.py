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
