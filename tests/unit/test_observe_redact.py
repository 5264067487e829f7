"""Redaction holds for any credential, wherever it sits in a value."""

from __future__ import annotations

import string

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bessai.observe.redact import MASK, is_secret_key, redact_fields, redact_text

_TOKEN = st.text(string.ascii_letters + string.digits + "-._~+/", min_size=12, max_size=64)
_B64 = st.text(string.ascii_letters + string.digits + "+/", min_size=16, max_size=64)
_FILLER = st.text(string.ascii_letters + string.digits + " :;,()[]{}'\"\n\t", max_size=40)
_SEP = st.sampled_from([" ", "\n", ": ", "=", "(", "'", '"'])


@settings(max_examples=300, deadline=None)
@given(_FILLER, _SEP, st.sampled_from(["Bearer", "bearer", "Basic", "Token"]), _TOKEN, _FILLER)
def test_an_authorization_credential_never_survives(before: str, sep: str, scheme: str,
                                                    token: str, after: str) -> None:
    assume(token not in before + after)
    text = redact_text(f"{before}{sep}{scheme} {token}{after}")
    assert token not in text


@settings(max_examples=300, deadline=None)
@given(_FILLER, st.lists(_B64, min_size=1, max_size=4), _FILLER,
       st.sampled_from(["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "CERTIFICATE"]),
       st.booleans())
def test_a_pem_block_never_survives(before: str, lines: list[str], after: str, label: str,
                                    json_escaped: bool) -> None:
    assume(not any(line in before + after for line in lines))
    newline = "\\n" if json_escaped else "\n"
    pem = f"-----BEGIN {label}-----{newline}{newline.join(lines)}{newline}-----END {label}-----"
    text = redact_text(before + pem + after)
    for line in lines:
        assert line not in text


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["password", "access_token", "client_secret", "api_key", "private_key_id",
                        "refresh_token", "token", "secret"]),
       st.sampled_from(["=", ": ", '": "', "='"]), _TOKEN.filter(lambda t: "/" not in t))
def test_a_secret_named_pair_in_free_text_never_survives(name: str, glue: str,
                                                         value: str) -> None:
    text = redact_text(f'failed: {{"{name}{glue}{value}"}}' if '"' in glue
                       else f"failed: {name}{glue}{value}&next=1")
    assert value not in text


def test_secret_keys_are_masked_whole_and_ordinary_keys_are_kept() -> None:
    fields = redact_fields({"token": 12345, "private_key": b"bytes", "client_secret": None,
                            "Authorization": "x", "site_key": "k", "rule": "soc_min",
                            "limit": 5.0, "monkey": "banana"})
    assert fields == {"token": MASK, "private_key": MASK, "client_secret": MASK,
                      "Authorization": MASK, "site_key": MASK, "rule": "soc_min",
                      "limit": 5.0, "monkey": "banana"}
    assert not is_secret_key("keyboard_layout")
