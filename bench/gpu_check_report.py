"""The markdown table gpu_check prints and writes next to its JSON (also for partial results)."""

from __future__ import annotations

import json

VARIANTS = (
    "ours_bf16",
    "diffusers_bf16",
    "ours_fp8_matmul",
    "ours_fp8_matmul_fast_accum",
    "ours_compiled",
    "ours_offload_streamed",
    "ours_reduce_overhead",
)


def _ms(x) -> str:
    return f"{x * 1e3:.1f} ms" if isinstance(x, (int, float)) else "-"


def _gib(x) -> str:
    return f"{x / 2**30:.2f}" if isinstance(x, (int, float)) else "-"


def _short(value, limit: int = 110) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_short(v, 40)}" for k, v in value.items() if not isinstance(v, dict))
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def variant_rows(result: dict) -> list[str]:
    mfu = result.get("mfu", {}).get("per_variant", {})
    rows = [
        "| variant | per step median | min / p90 / max | CV | s/image (48 steps) | peak GiB (process / alone) | MFU "
        "| status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        v = result["variants"].get(name, {})
        s = v.get("per_step_s") or {}
        m = (mfu.get(name) or {}).get("mfu")
        spread = f"{_ms(s.get('min'))} / {_ms(s.get('p90'))} / {_ms(s.get('max'))}" if s else "-"
        cv = f"{s['cv'] * 100:.1f}%" if s.get("cv") is not None else "-"
        s_img = f"{v['s_per_image_48']:.2f}" if v.get("s_per_image_48") is not None else "-"
        status = v.get("status", "-") + (f": {_short(v['reason'], 60)}" if v.get("reason") else "")
        mfu_text = f"{m * 100:.1f}%" if m is not None else "-"
        rows.append(
            f"| {name} | {_ms(s.get('median'))} | {spread} | {cv} | {s_img} "
            f"| {_gib(v.get('peak_memory_bytes'))} / {_gib(v.get('peak_alone_estimate_bytes'))} "
            f"| {mfu_text} | {status} |"
        )
    return rows


def render(result: dict) -> str:
    dev, setup = result["device"], result.get("setup", {})
    mfu = result.get("mfu", {})
    peak = mfu.get("peak_flops_bf16_dense")
    lines = [
        f"## gpu_check: {dev.get('name')} ({'--small, CPU' if result['small'] else 'full size'})",
        "",
        f"`{result['command']}`; torch {dev.get('torch')}, CUDA {dev.get('cuda')}, diffusers {dev.get('diffusers')}; "
        f"{setup.get('resolution')}^2, T = {setup.get('text_tokens')}, guidance on (cond + uncond per step), "
        f"{(setup.get('steps') or {}).get('timed')} timed steps after {(setup.get('steps') or {}).get('warmup')} "
        f"warm-up, {setup.get('dtype')}; MFU against "
        + (f"{peak / 1e12:.0f} TFLOP/s dense bf16" if peak else f"no peak ({mfu.get('reason', 'not computed')})")
        + f"; {result.get('elapsed_s', 0):.0f} s so far.",
        "",
        *variant_rows(result),
        "",
        "| ratio | value | goal | meets | definition |",
        "|---|---|---|---|---|",
    ]
    for key, r in result.get("ratios", {}).items():
        value = f"{r['value']:.3f}x" if r.get("value") else f"- ({r.get('reason', '')})"
        lines.append(
            f"| {key} | {value} | {r.get('goal') or '-'} | {_short(r.get('meets_goal'))} | {r['definition']} |"
        )
    lines += ["", "| check | ok | value | detail / reason |", "|---|---|---|---|"]
    for key, c in result.get("checks", {}).items():
        note = c.get("reason") or c.get("detail") or ""
        if c.get("tolerance"):
            note = f"{note} (tolerance: {c['tolerance']})"
        lines.append(f"| {key} | {_short(c.get('ok'))} | {_short(c.get('value'))} | {_short(note, 160)} |")
    return "\n".join(lines) + "\n"
