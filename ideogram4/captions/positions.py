"""Where each value of a JSON or YAML document starts: {JSON path: 1-based line}.

Paths are written as the caption verifier writes them (`compositional_deconstruction.elements[2].bbox`,
`items[0].prompt`, `[3]` for a top-level list), so a finding is reported at the line of the value it
is about, not at the start of its file. Only called on text that already parsed.
"""

from __future__ import annotations

import bisect
import json
import re
from json.decoder import scanstring

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def json_lines(text: str) -> dict[str, int]:
    newlines = [i for i, c in enumerate(text) if c == "\n"]
    out: dict[str, int] = {}
    _json_value(text, 0, "", out, lambda pos: bisect.bisect_left(newlines, pos) + 1)
    return out


def _json_value(text: str, pos: int, path: str, out: dict, line_at) -> int:
    pos = _WS.match(text, pos).end()
    out[path] = line_at(pos)
    opener = text[pos]
    if opener not in "{[":
        return _DECODER.raw_decode(text, pos)[1]
    closer, index = ("}" if opener == "{" else "]"), 0
    pos = _WS.match(text, pos + 1).end()
    while text[pos] != closer:
        if opener == "{":
            key, pos = scanstring(text, pos + 1)
            pos = _WS.match(text, pos).end() + 1  # the colon
            child = join(path, key)
        else:
            child = join(path, index)
        pos = _WS.match(text, _json_value(text, pos, child, out, line_at)).end()
        index += 1
        if text[pos] == ",":
            pos = _WS.match(text, pos + 1).end()
    return pos + 1


def yaml_lines(node, path: str = "", out: dict | None = None, line: int | None = None) -> dict[str, int]:
    """The same map for a composed YAML node (`yaml.compose`); a mapping's values sit at their key's line."""
    import yaml

    out = {} if out is None else out
    out[path] = line if line is not None else node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yaml_lines(value, join(path, str(key.value)), out, key.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            yaml_lines(value, join(path, i), out)
    return out


def line_of(lines: dict[str, int], path: str) -> int | None:
    """The line of `path`, or of its nearest recorded parent."""
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        cut = max(path.rfind("."), path.rfind("["))
        path = path[: max(cut, 0)]
