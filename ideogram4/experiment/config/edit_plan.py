"""Masked editing in the runner: the config's edit keys -> `generate`'s edit arguments, checked by the core.

The keys carry `generate`'s names (mask_image, strength_map, outpaint.<side>, edit_elements, mask_blur,
paste_back, edit_margin) and the core check layer (ideogram4.edit_checks, ideogram4.masks) judges them
with the input image, the mask and each prompt's caption, so validation accepts exactly what the
pipeline would, before any weights load. Mask files are named by sha256 in the resume key and the PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ideogram4.errors import ArgumentError
from ideogram4.rules import multiple_problems
from ideogram4.spec import EDIT_KINDS, EDIT_MARGIN, OUTPAINT_SIDES

from ..run.paths import abspath, file_sha256
from .problems import core_problem, problem
from .schema import RunConf

EDIT_FILES = ("mask_image", "strength_map")  # edit keys naming a file (matched by sha256 on reproduce)


def outpaint_sides(conf: RunConf) -> dict[str, int] | None:
    sides = {side: getattr(conf.outpaint, side) for side in OUTPAINT_SIDES}
    return sides if any(sides.values()) else None


def edit_kind(conf: RunConf) -> str | None:
    """Which edit the config asks for (the first given; the core reports a second one)."""
    given = {**{k: getattr(conf, k) for k in EDIT_KINDS}, "outpaint": outpaint_sides(conf)}
    return next((k for k in EDIT_KINDS if given[k] is not None), None)


def edit_arguments(conf: RunConf) -> dict[str, Any]:
    """`generate`'s edit keyword arguments (files as absolute paths)."""
    return {
        "mask_image": abspath(conf.mask_image) if conf.mask_image else None,
        "strength_map": abspath(conf.strength_map) if conf.strength_map else None,
        "outpaint": outpaint_sides(conf),
        "edit_elements": list(conf.edit_elements) if conf.edit_elements is not None else None,
        "mask_blur": float(conf.mask_blur),
        "paste_back": conf.paste_back,
        "edit_margin": conf.edit_margin,
    }


def plan_edit(conf: RunConf, prompts: list) -> tuple[dict | None, dict[str, str], list[str]]:
    """(the edit's settings for the resume key, or None; its files' paths; problems)."""
    kind, args = edit_kind(conf), edit_arguments(conf)
    if kind is None and not (args["mask_blur"] or args["paste_back"]):
        return None, {}, []  # no edit: validation stays free of torch (the core check layer imports it)
    from ideogram4.edit_checks import check_edit_args, open_edit

    missing = [
        problem(k, getattr(conf, k), f"no such file ({args[k]})", "give an existing greyscale image file")
        for k in EDIT_FILES
        if args[k] is not None and not os.path.isfile(args[k])
    ]
    if missing:
        return None, {}, missing
    r = conf.resolution
    input_image = abspath(conf.input_image) if conf.input_image else None
    exists = input_image is not None and os.path.isfile(input_image)
    if kind == "outpaint" and exists and (size := _outpaint_problem(input_image, args["outpaint"], r.height, r.width)):
        return None, {}, [size]  # the resolution to set, before the core judges that canvas
    try:
        edit = check_edit_args({**args, "input_image": input_image})
        if edit is None or not exists:
            return None, {}, []  # no edit, or plan_generation reports the missing input
        # the edit_elements mask depends on each prompt's caption; a drawn mask on none
        for p in prompts if kind == "edit_elements" else prompts[:1]:
            strength = float(conf.denoising_strength)
            open_edit(edit, input_image, [p.caption], r.height, r.width, strength, [f"prompt {p.id!r}"])
    except ArgumentError as e:  # the core's finding, named by its config key
        return None, {}, [core_problem(e)]
    except (ValueError, TypeError) as e:
        field = kind or ("mask_blur" if conf.mask_blur else "paste_back")
        what, _, fix = str(e).rpartition(": ")  # the core's "what is wrong: what to do"
        return None, {}, [problem(field, args.get(field, getattr(conf, field, None)), what or fix, fix)]
    files = {k: args[k] for k in EDIT_FILES if args[k] is not None}
    settings = {"kind": kind, **{k: v for k, v in args.items() if k not in EDIT_FILES and v is not None}}
    if kind != "edit_elements":
        del settings["edit_margin"]  # not used: must not change the resume key
    settings.update({f"{k}_sha256": file_sha256(path) for k, path in files.items()})
    return settings, files, []


def _outpaint_problem(input_image: str, sides: dict[str, int], height: int, width: int) -> str | None:
    """The output must be the input plus the margins: say which resolution that is."""
    from ideogram4.image_files import ImageFileError, opened_image

    try:
        with opened_image(input_image) as im:
            w, h = im.size
    except ImageFileError:
        return None  # plan_generation reports an unreadable or oversized input
    if any(v < 0 or multiple_problems("outpaint", v) for v in sides.values()):
        return None  # the core names the bad side
    canvas = (w + sides["left"] + sides["right"], h + sides["top"] + sides["bottom"])
    if canvas == (width, height):
        return None
    what = f"grows the {w}x{h} input_image to {canvas[0]}x{canvas[1]}, but the output is {width}x{height}"
    return problem("outpaint", sides, what, f"set resolution.width={canvas[0]} resolution.height={canvas[1]}")


def recorded_region(record: dict, allowed: Sequence[str | os.PathLike]):
    """The masks.EditRegion of a manifest record, rebuilt from its recorded files (scoring an edit later);
    None when the image is no edit, or its input or mask is gone or changed (sha256) since. A manifest is
    data: a recorded path is opened only inside one of the `allowed` folders (the user's say-so,
    `score --edit-files DIR`), never wherever the manifest points."""
    import logging

    from ideogram4.edit_checks import check_edit_args, open_edit

    s = record.get("settings") or {}
    edit = s.get("edit")
    if not edit:
        return None
    files = {k: (edit.get(k), edit.get(f"{k}_sha256")) for k in EDIT_FILES if edit.get(k)}
    files["input_image"] = (s.get("input_image"), s.get("input_image_sha256"))
    roots = [Path(a).resolve() for a in allowed]
    for key, (path, sha) in files.items():
        if not (path and any(Path(path).resolve().is_relative_to(root) for root in roots)):
            logging.getLogger(__name__).warning(
                "%s: its %s %s is in no folder given with --edit-files: no edit metrics (pass --edit-files "
                "FOLDER to let the score read it)",
                record["image"],
                key,
                path,
            )
            return None
        if not (os.path.isfile(path) and file_sha256(path) == sha):
            logging.getLogger(__name__).warning(
                "%s: its %s %s is gone or changed: no edit metrics", record["image"], key, path
            )
            return None
    args = {k: edit.get(k) for k in ("outpaint", "edit_elements")}
    args.update({k: files[k][0] if k in files else None for k in EDIT_FILES}, input_image=files["input_image"][0])
    args.update(mask_blur=edit.get("mask_blur", 0.0), paste_back=edit.get("paste_back", False))
    args["edit_margin"] = edit.get("edit_margin", EDIT_MARGIN)
    checked = check_edit_args(args)
    plan = open_edit(
        checked, args["input_image"], [record["caption"]], s["height"], s["width"], s["denoising_strength"]
    )
    return plan.regions[0]
