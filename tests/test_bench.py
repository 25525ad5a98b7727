"""The benchmarks run in CI at tiny size on the CPU, so they cannot rot.

`bench/bench_gpu.py --small` runs the whole GPU protocol (random DiTs built on the device, the
diffusers twin sharing our tensors, the fp8 twin, correctness gate, A/B timing, FLOP/MFU accounting,
SDPA kernel report) on the tiny model in fp32; `bench/bench_cpu.py` runs its checkpoint-folder path
at 64x64. The numbers are not checked (CI machines are noisy), the bookkeeping is.
"""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_cpu
        import bench_gpu

        yield bench_cpu, bench_gpu
    finally:
        sys.path.remove(str(BENCH))


def test_gpu_protocol_small_on_cpu(bench_modules, tmp_path):
    from ideogram4 import flops
    from ideogram4.tiny import TINY_DIT

    _, bench_gpu = bench_modules
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--small", "--steps", "2", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["sdpa_ops"]) == {"ours-bf16", "ours-fp8", "diffusers-bf16"}
    assert [(c["resolution"], c["cfg"]) for c in res["configs"]] == [(64, True), (64, False)]
    for c in res["configs"]:
        assert c["gate"]["pass"] and c["gate"]["ours_vs_diffusers_max_abs"] < 1e-4
        assert c["gate"]["fp8_vs_bf16_cos"] > 0.99
        schedule = [7.0, 7.0] if c["cfg"] else [1.0, 1.0]
        assert c["useful_flops"] == flops.image_flops(TINY_DIT, 12, 64, 64, schedule).total
        assert c["diffusers_flops"] == flops.image_flops(TINY_DIT, 12, 64, 64, schedule, exact=False).total
        v = c["variants"]
        for name in ("ours-bf16", "ours-fp8", "diffusers-bf16"):
            assert v[name]["call"]["n"] == 1 and v[name]["per_step"]["n"] == 1
            assert v[name]["call"]["median"] > 0 and v[name]["speedup_vs_diffusers"] > 0
        assert v["ours-fp8"]["fp8_paths"]["fp8_matmul"] == 4 * TINY_DIT.num_layers
        assert v["ours-bf16"]["fp8_paths"] == {"float": v["ours-bf16"]["fp8_paths"]["float"]}
        # ours skips the unconditional pass when the guidance weight is 1; diffusers runs it anyway
        assert v["ours-bf16"]["uncond_pass"]["n"] == (2 if c["cfg"] else 0)
        assert v["diffusers-bf16"]["uncond_pass"]["n"] == 2


def test_cpu_bench_tiny(bench_modules, tmp_path):
    bench_cpu, _ = bench_modules
    out = tmp_path / "cpu.json"
    argv = [
        "--sizes",
        "tiny",
        "--resolution",
        "64",
        "--prompt-tokens",
        "40",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--out",
        str(out),
    ]
    assert bench_cpu.main(argv) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert r["gate_pass"] and r["max_abs_diff"] < 1e-4
    assert 30 <= r["prompt_tokens"] <= 40
    assert r["per_step_ratio"] > 0 and set(r["results"]) == {"ours", "diffusers"}
