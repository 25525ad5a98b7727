"""JSON and YAML from a caption or prompt file, with bounded cost.

A few hundred bytes of YAML anchors can expand to billions of values, and a deeply nested JSON or
YAML document exhausts Python's recursion. Every reader of caption and prompt text parses here:
nesting is capped at spec.MAX_NESTING, and a YAML document's size with its aliases expanded at
spec.MAX_YAML_NODES, checked on the composed node graph before any value is built.
"""

from __future__ import annotations

import json
from typing import Any

from ideogram4.spec import MAX_NESTING, MAX_YAML_NODES


class BoundError(ValueError):
    """A document over a cost bound: `what` is over which bound, `fix` what to do."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")
        self.what, self.fix = what, fix


def _too_deep() -> BoundError:
    return BoundError(
        f"nests deeper than {MAX_NESTING} levels (spec.MAX_NESTING)", "flatten it (captions nest about 5 deep)"
    )


def loads_json(text: str) -> Any:
    """json.loads within the nesting bound (JSONDecodeError as json raises it; BoundError when too deep)."""
    try:
        doc = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    _check_depth(doc)
    return doc


def _check_depth(doc: Any) -> None:
    level, depth = [doc], 0
    while level:
        depth += 1
        if depth > MAX_NESTING:
            raise _too_deep()
        children = [v for x in level if isinstance(x, (dict, list)) for v in (x.values() if isinstance(x, dict) else x)]
        level = [x for x in children if isinstance(x, (dict, list))]


def load_yaml(text: str) -> tuple[Any, Any]:
    """(document, composed root node) of YAML `text` (safe tags only) within the size and nesting bounds."""
    import yaml

    _check_event_depth(text)  # before composing: the composer recurses once per level
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    _check_nodes(root)
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root) if root is not None else None, root
    finally:
        loader.dispose()


def _check_event_depth(text: str) -> None:
    """Stop at the first collection nested deeper than MAX_NESTING (the event parser keeps no recursion)."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise _too_deep()
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_nodes(root: Any) -> None:
    """Expanded size (an alias counts as a copy of its anchor's values) and depth of a node graph."""
    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > MAX_NESTING:
            raise _too_deep()
        if id(node) in sizes:
            if sizes[id(node)] < 0:
                raise BoundError("holds an alias to itself (a recursive anchor)", "write the values out")
            return sizes[id(node)]
        sizes[id(node)] = -1
        children = node.value if isinstance(node.value, list) else []
        flat = [n for c in children for n in (c if isinstance(c, tuple) else (c,))]
        total = 1 + sum(size(c, depth + 1) for c in flat)
        if total > MAX_YAML_NODES:
            what = f"expands to over {MAX_YAML_NODES} values through its anchors and aliases (spec.MAX_YAML_NODES)"
            raise BoundError(what, "write the values out, without nested aliases")
        sizes[id(node)] = total
        return total

    if root is not None:
        size(root, 0)
