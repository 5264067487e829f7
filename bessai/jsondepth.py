"""How deeply a JSON text nests, measured before it is parsed.

Every boundary that takes JSON from outside (a command or schedule message, a device profile)
refuses a document nested deeper than its limit before ``json.loads`` sees it, so a deep
document is a listed problem, never a RecursionError. One scan for all of them.
"""

from __future__ import annotations

import re

__all__ = ["json_depth"]

_SIGNIFICANT = re.compile(r'[\[\]{}"\\]')


def json_depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` (JSON), strings skipped; cheap, never recursive.

    Unbalanced or odd text gives some number: ``json.loads`` reports what is wrong with it.
    """
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the index a backslash inside a string escapes
    for match in _SIGNIFICANT.finditer(text):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
