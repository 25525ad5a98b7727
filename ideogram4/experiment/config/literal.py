"""Text that is data, never an OmegaConf interpolation (prompts, and everything read from a PNG).

OmegaConf reads ``${...}`` in any string as an interpolation (``${oc.env:TOKEN}`` reads the
environment), ``\\${`` as a literal ``${`` and ``\\\\${`` as a backslash followed by an interpolation.
:func:`literal` escapes a string so that OmegaConf gives it back exactly, whatever backslashes it
holds; :func:`as_typed` is what a string typed into a config means with every interpolation taken as
text (OmegaConf's escapes applied, nothing resolved).
"""

from __future__ import annotations

import re
from typing import Any

# a run of backslashes (maybe empty) before "${": the only place OmegaConf gives backslashes a meaning
_BEFORE_INTERPOLATION = re.compile(r"(\\*)\$\{")


def literal(text: str) -> str:
    """`text` escaped so that OmegaConf reads it back verbatim: n backslashes + "${" -> 2n + 1."""
    return _BEFORE_INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", text)


def as_typed(text: str) -> str:
    """What `text` (a config value as composed) says, each interpolation kept as the text it is."""
    return _BEFORE_INTERPOLATION.sub(lambda m: "\\" * (len(m.group(1)) // 2) + "${", text)


def literal_tree(value: Any) -> Any:
    """`value` (JSON-like) with every string, key or value, passed through :func:`literal`."""
    if isinstance(value, str):
        return literal(value)
    if isinstance(value, dict):
        return {literal(k) if isinstance(k, str) else k: literal_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal_tree(v) for v in value]
    return value
