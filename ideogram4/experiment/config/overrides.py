"""Command-line overrides checked against the schema before Hydra composes anything.

Hydra accepts `+cfgg=3` silently (a `+` adds any key) and answers `cfgg=3` or `sampler=turbo12` with
several lines and exit 1. Here every override's key is looked up in the typed schema (`RunConf`) and
every group choice in the group's options, so each mistake is one line naming the key and the
nearest valid one (exit 2), in well under a second and before any weights load. Hydra's own keys
(`hydra.*`, `hydra/...` groups) are left to Hydra.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

from .problems import ConfigError, problem
from .schema import RunConf, register_configs

# Hydra's command-line flags that take a value (so the value is not read as an override), and the
# flags after which nothing is composed for a run (help pages, info, completion).
_VALUE_FLAGS = (
    ("--cfg", "-c"),
    ("--package", "-p"),
    ("--config-path", "-cp"),
    ("--config-name", "-cn"),
    ("--config-dir", "-cd"),
    ("--experimental-rerun",),
)
_NO_RUN = ("help", "hydra_help", "info", "shell_completion", "experimental_rerun")


def overrides_from_argv(argv: list[str]) -> list[str] | None:
    """The overrides Hydra will apply from `argv` (no program name); None when nothing is composed."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("overrides", nargs="*")
    for flag in ("--help", "--hydra-help", "--shell-completion", "--multirun", "--run", "--resolve", "--version"):
        parser.add_argument(flag, action="store_true")
    for names in _VALUE_FLAGS:
        parser.add_argument(*names)
    parser.add_argument("--info", "-i", nargs="?", const="all")
    parser.add_argument("-m", action="store_true")
    known, rest = parser.parse_known_args(argv)
    if any(getattr(known, name, None) for name in _NO_RUN):
        return None
    return known.overrides + [a for a in rest if not a.startswith("-")]  # overrides after a flag


def check_overrides(overrides: list[str], conf_dir: Path) -> None:
    """Raise ConfigError (one problem) for the first override Hydra would reject or silently add."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException as e:
            fix = "quote a value holding '=', ',' or spaces in the shell and for Hydra: 'summary_baseline=\"cfg=7\"'"
            raise ConfigError(
                [problem(text.split("=")[0], text, f"cannot be parsed ({_first_line(e)})", fix)]
            ) from None
        key = override.key_or_group
        if key.startswith("hydra") and (key == "hydra" or key[5] in "./"):
            continue
        groups = group_options(conf_dir)
        if override.package is None and key in groups and override.value_type is not None:
            _check_group_choice(key, override, groups[key])
        elif "/" not in key:
            node = _check_key(key, text)
            if not override.is_sweep_override() and not override.is_delete():
                _check_value(node, override.value(), key, text)


def _check_group_choice(group: str, override: Any, options: list[str]) -> None:
    try:
        choices = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    except Exception:  # glob(...) and ranges: Hydra expands and checks them
        return
    for choice in choices:
        if str(choice) not in options:
            fix = f"choose one of: {', '.join(options)}"
            raise ConfigError([problem(group, choice, f"is not a {group} option", fix)])


def group_options(conf_dir: Path) -> dict[str, list[str]]:
    """{group: sorted option names}: conf/<group>/*.yaml plus the groups registered in code (sampler)."""
    from hydra.core.config_store import ConfigStore

    register_configs()
    store = ConfigStore.instance()
    out: dict[str, set[str]] = {}
    for folder in sorted(p for p in Path(conf_dir).iterdir() if p.is_dir() and p.name != "hydra"):
        out.setdefault(folder.name, set()).update(f.stem for f in folder.glob("*.yaml"))
    for group in [k for k, v in store.repo.items() if isinstance(v, dict) and k != "hydra"]:
        out.setdefault(group, set()).update(Path(name).stem for name in store.list(group))
    return {k: sorted(v) for k, v in out.items()}


def _check_key(key: str, text: str) -> Any:
    """The schema type at `key`; ConfigError when a part of it is no key."""
    where, node = "", RunConf
    for part in key.split("."):
        parent, (node, ok) = node, _child(node, part)
        shown = f"{where}{part}"
        if not ok:
            fix = _list_fix(where) if _is_list(parent) else _nearest(shown, where, parent)
            raise ConfigError([problem(shown, text.split("=", 1)[-1], "is not a config key", fix)])
        if node is Any:
            return Any
        where = f"{shown}."
    return node


def _check_value(node: Any, value: Any, where: str, text: str) -> None:
    """The keys inside a mapping or list value (`lora=[{path:a.safetensors}]`) against the schema."""
    if isinstance(value, dict) and dataclasses.is_dataclass(_unwrap_optional(node)):
        for key, inner in value.items():
            child, ok = _child(node, str(key))
            if not ok:
                shown = f"{where}.{key}"
                raise ConfigError([problem(shown, inner, "is not a config key", _nearest(shown, f"{where}.", node))])
            _check_value(child, inner, f"{where}.{key}", text)
    elif isinstance(value, list) and _is_list(node):
        for i, inner in enumerate(value):
            _check_value(_child(node, str(i))[0], inner, f"{where}.{i}", text)


def _child(node: Any, part: str) -> tuple[Any, bool]:
    """(the type below `part`, whether `part` exists) in a schema type."""
    node = _unwrap_optional(node)
    if dataclasses.is_dataclass(node):
        hints = typing.get_type_hints(node)
        return (hints[part], True) if part in hints else (None, False)
    origin, args = typing.get_origin(node), typing.get_args(node)
    if _is_list(node):
        return (args[0] if args else Any), part.isdigit()
    if origin in (dict, typing.Dict):  # noqa: UP006
        return (args[1] if len(args) == 2 else Any), True
    return Any, True  # an untyped value (seed, metric_options): anything below it is its own business


def _is_list(node: Any) -> bool:
    return typing.get_origin(_unwrap_optional(node)) in (list, typing.List)  # noqa: UP006


def _list_fix(where: str) -> str:
    name = where.rstrip(".")
    return f"{name} is a list: give it whole ({name}=[{{...}}]) or index an entry ({name}.0.<field>=...)"


def _unwrap_optional(node: Any) -> Any:
    args = [a for a in typing.get_args(node) if a is not type(None)]
    return args[0] if typing.get_origin(node) is typing.Union and len(args) == 1 else node


def _nearest(key: str, where: str, parent: Any) -> str:
    siblings = list(typing.get_type_hints(_unwrap_optional(parent)))
    keys = [f"{where}{name}" for name in siblings] + list(schema_keys(RunConf))
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if near:
        return f"did you mean {near[0]}? (python run.py --help lists the groups)"
    return f"use one of {', '.join(siblings)}"


def schema_keys(node: Any, prefix: str = ""):
    """Every dotted key of the schema's dataclasses (lists and mappings not expanded)."""
    for name, hint in typing.get_type_hints(_unwrap_optional(node)).items():
        yield f"{prefix}{name}"
        inner = _unwrap_optional(hint)
        if dataclasses.is_dataclass(inner):
            yield from schema_keys(inner, f"{prefix}{name}.")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0].strip()
