"""A strict logfmt parser for tests, independent of the renderer in bessai.observe.logfmt."""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}


def parse_logfmt(line: str) -> list[tuple[str, str]]:
    """Parse one logfmt line strictly: key=value pairs separated by single spaces; raises."""
    if "\n" in line or "\r" in line:
        raise ValueError("raw line break inside a line")
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(line):
        match = _KEY.match(line, i)
        if not match or match.end() >= len(line) or line[match.end()] != "=":
            raise ValueError(f"bad key at {i}: {line[i:i + 20]!r}")
        key = match.group(0)
        i = match.end() + 1
        if i < len(line) and line[i] == '"':
            i += 1
            out = []
            while True:
                if i >= len(line):
                    raise ValueError("unterminated quoted value")
                char = line[i]
                if char == '"':
                    i += 1
                    break
                if char == "\\":
                    nxt = line[i + 1:i + 2]
                    if nxt == "u":
                        out.append(chr(int(line[i + 2:i + 6], 16)))
                        i += 6
                        continue
                    if nxt not in _UNESCAPE:
                        raise ValueError(f"bad escape \\{nxt}")
                    out.append(_UNESCAPE[nxt])
                    i += 2
                    continue
                if ord(char) < 0x20:
                    raise ValueError("raw control character in quoted value")
                out.append(char)
                i += 1
            value = "".join(out)
        else:
            end = line.find(" ", i)
            end = len(line) if end == -1 else end
            value = line[i:end]
            if not value or any(c in value for c in '"=\\') or any(ord(c) < 0x21 for c in value):
                raise ValueError(f"bad bare value {value!r}")
            i = end
        pairs.append((key, value))
        if i < len(line):
            if line[i] != " ":
                raise ValueError(f"expected a space at {i}")
            i += 1
            if i == len(line):
                raise ValueError("trailing space")
    return pairs
