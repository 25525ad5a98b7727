"""What an image cost, measured: the manifest's `cost` entry and the sweep summary's cost columns.

Per image: `sampling_s` (its batch's denoising wall time: the latency), `device_s_per_image` (the
batch's denoising + decoding time divided by the images in it: GPU-seconds on a GPU run, the CPU's
on a CPU run; text encoding is left out because text features are cached across a sweep),
`transformer_passes` (conditional / unconditional DiT calls of its batch) and `flops` (the DiT matmul
FLOPs of its passes at exact lengths, `ideogram4.flops`; a runtime LoRA's low-rank path is not
counted). Peak memory is the record's `peak_memory_bytes` (CUDA only).
"""

from __future__ import annotations

import math

# the per-image cost values a summary gives a mean and interval for
COST_VALUES = ("sampling_s", "device_s_per_image", "gflops")


def cost_record(output, index: int, batch_size: int) -> dict:
    """The `cost` entry of image `index` of a pipeline GenerationOutput."""
    t = output.timings
    return {
        "sampling_s": round(t["sampling_s"], 6),
        "device_s_per_image": round((t["sampling_s"] + t["decoding_s"]) / batch_size, 6),
        "batch_size": batch_size,
        "transformer_passes": dict(output.cost.get("transformer_passes", {})),
        "flops": output.cost["flops"][index] if output.cost.get("flops") else None,
    }


def record_costs(record: dict) -> dict[str, float]:
    """COST_VALUES of one manifest record (absent for records written before costs were)."""
    cost = record.get("cost") or {}
    values = {k: cost.get(k) for k in ("sampling_s", "device_s_per_image")}
    values["gflops"] = cost["flops"] / 1e9 if isinstance(cost.get("flops"), (int, float)) else None
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def images_per_hour(device_s_mean: float | None) -> float | None:
    return 3600.0 / device_s_mean if device_s_mean else None
