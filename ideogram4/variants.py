"""The guard for distilled variants: settings a variant's card warns against, found before sampling.

A distilled model still runs with any settings (researchers measure what happens off the card); the
guard only says so, once, naming the setting and what the card gives instead. Each layer words the
fix in its own terms: `CardWarning.fix` holds `from_pretrained` / `generate` keyword names, which the
runner translates into config keys. Torch-free, so the runner checks a config in milliseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .spec import PRESETS, VARIANTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardWarning:
    variant: str  # a spec.VARIANTS name
    setting: str  # "guidance" | "steps" | "unconditional" | "negative_prompt"
    what: str  # what runs that the card warns against
    preset: str  # the spec.PRESETS entry for this variant closest to what was asked
    fix: tuple[tuple[str, object], ...]  # (keyword of from_pretrained / generate, value the card gives)

    def api_text(self) -> str:
        fix = ", ".join(f"{k}={v!r}" for k, v in self.fix)
        return f"{self.variant}: {self.what}. Its card's settings: {fix} (a warning: the run goes on)"


def nearest_preset(variant: str, steps: int) -> str:
    return min(VARIANTS[variant].presets, key=lambda p: (abs(PRESETS[p].steps - steps), PRESETS[p].steps))


def card_warnings(
    variant: str,
    guidance_schedule: list[float],
    unconditional_loaded: bool = False,
    negative_prompt: str = "",
) -> list[CardWarning]:
    """What the run does that `variant`'s card warns against ([] when it follows the card)."""
    v = VARIANTS[variant]
    steps = len(guidance_schedule)
    preset = nearest_preset(variant, steps)
    p = PRESETS[preset]
    out = []
    guided = sorted({float(w) for w in guidance_schedule if float(w) != p.cfg})
    if guided:
        what = (
            f"{v.repo} is distilled to run without CFG (guidance {p.cfg} on every step, one transformer call "
            f"per step), but guidance weights {guided} add an unconditional pass it was not trained with"
        )
        out.append(CardWarning(variant, "guidance", what, preset, (("cfg_scale", p.cfg),)))
    if steps not in v.steps:
        what = f"{v.repo} is distilled for {' or '.join(map(str, v.steps))} steps, not {steps}"
        out.append(CardWarning(variant, "steps", what, preset, (("num_inference_steps", p.steps),)))
    if unconditional_loaded:
        what = f"{v.repo} is single-branch, yet an unconditional transformer is loaded (memory it does not use)"
        out.append(CardWarning(variant, "unconditional", what, preset, (("load_unconditional", False),)))
    if negative_prompt and not guided:
        what = f"{v.repo} runs without CFG, so the negative prompt has no effect"
        out.append(CardWarning(variant, "negative_prompt", what, preset, (("negative_prompt", ""),)))
    return out


_WARNED: set[str] = set()  # each warning once per process: a sweep repeats its settings job after job


def warn_against_card(variant: str | None, req, unconditional_loaded: bool) -> None:
    """Log what a `generate` request (checks.Request) does that `variant`'s card warns against."""
    if variant is None:
        return
    negative = next((n for n in req.negatives if n), "")
    for w in card_warnings(variant, req.guidance_schedule, unconditional_loaded, negative):
        if w.api_text() not in _WARNED:
            _WARNED.add(w.api_text())
            log.warning("%s", w.api_text())
