"""Message ids: a random (version 4) UUID per row, stamped at enqueue and never regenerated.

Pub/Sub has no producer idempotence, so downstream dedups on ``msg_id``: a row sent twice must
carry the same one. They are made for a whole group at once because at 100,000 rows a second
`uuid.uuid4` alone (2.5 us each) would be a quarter of the event loop's budget.
"""

from __future__ import annotations

import os

_UUID_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
"""Byte 6 of a UUID: high nibble 4 (version 4), low nibble random."""
_UUID_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
"""Byte 8 of a UUID: top bits 10 (the RFC 4122 variant), the rest random."""
_UUID_HEX_AT = [j + (j >= 8) + (j >= 12) + (j >= 16) + (j >= 20) for j in range(32)]
"""Where hex digit ``j`` of a UUID lands in its 36-character ``8-4-4-4-12`` text."""


def new_msg_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUID strings, as ``str(uuid.uuid4())`` gives them.

    One urandom call for the whole group, and no per-id Python for large groups: the version
    and variant bits are set with `bytes.translate` on strided slices, the hex digits are laid
    into ``8-4-4-4-12`` text (one line per id) with 32 strided slice assignments, and the text
    is split into lines. About 0.15 us per id (1,000 at a time) instead of 2.5 us for
    `uuid.uuid4`.
    """
    if n < 32:  # the strided path costs about 8 us whatever n is: format each id
        h = os.urandom(16 * n).hex()
        return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-"
                f"{'89ab'[int(h[i + 16], 16) & 3]}{h[i + 17:i + 20]}-{h[i + 20:i + 32]}"
                for i in range(0, 32 * n, 32)]
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    digits = raw.hex().encode()
    text = bytearray(b"-" * (37 * n))
    text[36::37] = b"\n" * n
    for j, at in enumerate(_UUID_HEX_AT):
        text[at::37] = digits[j::32]
    del text[-1]
    return text.decode().split("\n")
