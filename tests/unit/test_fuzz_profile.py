"""Fuzz: the profile loader turns ANY input into a Profile or a listed ProfileError.

A profile is a file an operator (or a vendor) hands the gateway; whatever it holds, the loader
must answer with a `ProfileError` naming the problems, never another exception (RecursionError,
UnicodeDecodeError, OverflowError, KeyError...) that would reach the operator as a traceback.
Three shapes of input: raw bytes, arbitrary JSON, and the shipped profile with one value
replaced by arbitrary JSON (the only way random input gets past the schema into the semantic
checks).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bessai.device.errors import ProfileError
from bessai.device.profile import (
    MAX_PROFILE_BYTES,
    MAX_PROFILE_DEPTH,
    Profile,
    load_profile,
    parse_profile,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((ROOT / "profiles" / "huawei_sun2000.json").read_text())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(["0xFFFF", "0x", "u16", "rw", "fast", "holding"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


SHIPPED_PATHS = _paths(SHIPPED)[1:]


def _loads_or_refuses(text: str) -> None:
    refused: ProfileError | None = None
    try:
        result = parse_profile(text, file="fuzz.json")
    except ProfileError as error:
        refused = error
    if refused is None:
        assert isinstance(result, Profile)
        return
    assert refused.problems, "a ProfileError must list at least one problem"
    assert all(len(line) < 1000 for line in str(refused).splitlines())


def _shipped_with(where: tuple[Any, ...], value: Any) -> Any:
    """A copy of the shipped profile's document with the value at ``where`` replaced."""
    doc = copy.deepcopy(SHIPPED)
    node = doc
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_a_profile_file_give_a_profile_error(tmp_path_factory: Any,
                                                          data: bytes) -> None:
    path = tmp_path_factory.mktemp("p") / "fuzz.json"
    path.write_bytes(data)
    with pytest.raises(ProfileError):
        load_profile(path)


@settings(max_examples=300, deadline=None)
@given(doc=json_values)
def test_any_json_document_gives_a_profile_or_a_profile_error(doc: Any) -> None:
    _loads_or_refuses(json.dumps(doc))


@settings(max_examples=600, deadline=None)
@given(where=st.sampled_from(SHIPPED_PATHS), value=json_values)
def test_shipped_profile_with_any_one_value_replaced_gives_a_profile_or_a_profile_error(
        where: tuple[Any, ...], value: Any) -> None:
    doc = _shipped_with(where, value)
    _loads_or_refuses(json.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(where=st.sampled_from(SHIPPED_PATHS),
       value=st.integers(min_value=-(10**500), max_value=10**500)
       | st.sampled_from([1e308, -1e308, 5e-324, 2**64, -(2**63)]))
def test_shipped_profile_with_extreme_numbers_gives_a_profile_or_a_profile_error(
        where: tuple[Any, ...], value: Any) -> None:
    doc = _shipped_with(where, value)
    import sys
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # only to WRITE the test document; the loader keeps its limit
    try:
        text = json.dumps(doc)
    finally:
        sys.set_int_max_str_digits(old)
    _loads_or_refuses(text)


def test_deeply_nested_profile_is_a_listed_problem_not_a_recursion_error() -> None:
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ProfileError, match="nest more than"):
        parse_profile(text, file="deep.json")
    # just over the limit is refused; the shipped profile (about 5 deep) is far below it
    with pytest.raises(ProfileError, match="nest more than"):
        parse_profile("[" * (MAX_PROFILE_DEPTH + 1) + "]" * (MAX_PROFILE_DEPTH + 1))


def test_oversized_profile_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (MAX_PROFILE_BYTES + 1))
    with pytest.raises(ProfileError, match="over"):
        load_profile(path)


def test_non_utf8_profile_names_the_byte_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{\n"device": "caf\xe9"}')
    with pytest.raises(ProfileError, match=r"0xE9 on line 2"):
        load_profile(path)


def test_a_fifo_as_profile_is_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import threading
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    # open() of a FIFO blocks until a writer appears: give it one that never writes
    writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
    writer.start()
    with pytest.raises(ProfileError, match="not a regular file"):
        load_profile(fifo)
    writer.join(5)


def test_a_5000_digit_enum_key_is_a_listed_problem() -> None:
    doc = copy.deepcopy(SHIPPED)
    tag = next(t for t in doc["tags"].values() if "enum" in t)
    tag["enum"]["1" + "0" * 5000] = "huge"
    with pytest.raises(ProfileError, match="enum"):
        parse_profile(json.dumps(doc))
