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


@pytest.mark.slow
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
        assert v["ours-fp8"]["fp8_paths"]["fp8_matmul"] == 5 * TINY_DIT.num_layers
        assert v["ours-bf16"]["fp8_paths"] == {"float": v["ours-bf16"]["fp8_paths"]["float"]}
        # ours skips the unconditional pass when the guidance weight is 1; diffusers runs it anyway
        assert v["ours-bf16"]["uncond_pass"]["n"] == (2 if c["cfg"] else 0)
        assert v["diffusers-bf16"]["uncond_pass"]["n"] == 2


@pytest.mark.slow
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


# --- bench/gpu_check.py ------------------------------------------------------------------------------

# the table (issue 11), then the fast paths of issue 25
GPU_CHECK_VARIANTS = ("ours_bf16", "diffusers_bf16", "ours_fp8_matmul", "ours_compiled") + (
    "ours_fp8_matmul_fast_accum",
    "ours_offload_streamed",
    "ours_reduce_overhead",
)
# Checks the CPU can decide (values measured there) and the ones that are about CUDA (null + reason).
CPU_CHECKS = (
    "ours_vs_diffusers",
    "fp8_matmul_vs_bf16",
    "fp8_fast_accum_vs_bf16",
    "compiled_vs_eager",
    "offload_streamed_vs_resident",
    "reduce_overhead_vs_eager",
    "vae_tiling_2048",
    "pipeline_compile_blocks",
)
CUDA_CHECKS = (
    "rand_device_cuda",
    "manifest_peak_memory_gpu_name",
    "offload_text_encoder",
    "offload_transformers_one_step",
    "no_host_sync_in_loop",
)


@pytest.fixture(scope="module")
def gpu_check_small(tmp_path_factory):
    """One `python bench/gpu_check.py --small` run in a subprocess, as CI and a user run it."""
    import os
    import subprocess

    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--small", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=str(BENCH.parent),
    )
    return proc, out


@pytest.mark.slow
def test_gpu_check_small_writes_every_key(gpu_check_small):
    from ideogram4 import flops
    from ideogram4.tiny import TINY_DIT

    proc, out = gpu_check_small
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    r = json.loads((out / "gpu_check.json").read_text())
    assert r["finished"] and r["small"] and all(s["status"] == "done" for s in r["sections"])

    dev = r["device"]
    assert {"name", "capability", "memory_bytes", "torch", "cuda"} <= set(dev)
    assert dev["type"] == "cpu" and dev["torch"].startswith("2.") and dev["capability"] is None and dev["reason"]

    steps = r["setup"]["steps"]
    for name in GPU_CHECK_VARIANTS:
        v = r["variants"][name]
        assert v["status"] == "done", (name, v)
        s = v["per_step_s"]
        assert s["n"] == steps["timed"] and 0 < s["min"] <= s["median"] <= s["max"]
        assert v["s_per_image_48"] == pytest.approx(48 * s["median"])
        assert v["peak_memory_bytes"] is None and "CUDA" in v["peak_memory_reason"]
    assert r["variants"]["ours_fp8_matmul"]["fp8_paths"]["fp8_matmul"] == 5 * TINY_DIT.num_layers
    assert r["variants"]["ours_fp8_matmul_fast_accum"]["fast_accum"] is True
    assert r["variants"]["ours_compiled"]["compile"]["backend"] == "aot_eager"
    assert r["variants"]["ours_compiled"]["compile"]["scope"] == "blocks"
    assert r["variants"]["ours_compiled"]["compile_s"] > 0  # reported apart from the timed steps
    assert r["variants"]["ours_reduce_overhead"]["compile"]["scope"] == "model"
    assert r["variants"]["ours_reduce_overhead"]["text_rows"]["padded_to"] % 64 == 0
    streamed = r["variants"]["ours_offload_streamed"]
    assert streamed["streamed_bytes_per_step"] > 0 and streamed["streamed_gb_per_s"] > 0
    # on the CPU the streamed DiTs give the resident ones' latents bit for bit
    assert r["checks"]["offload_streamed_vs_resident"]["value"]["max_abs"] == 0
    order = [s["name"] for s in r["sections"]]
    assert order.index("nf4_one_step") < order.index("vae_tiling_2048")  # DiTs dropped before the VAE
    assert any("scaled_dot_product" in k for k in r["variants"]["ours_bf16"]["attention_kernels"])

    medians = {k: r["variants"][k]["per_step_s"]["median"] for k in GPU_CHECK_VARIANTS}
    assert r["ratios"]["ours_vs_diffusers"]["value"] == pytest.approx(medians["diffusers_bf16"] / medians["ours_bf16"])
    assert r["ratios"]["fp8_vs_bf16"]["value"] == pytest.approx(medians["ours_bf16"] / medians["ours_fp8_matmul"])
    assert r["ratios"]["ours_vs_diffusers"]["meets_goal"] is None  # goals are for the GPU

    mfu = r["mfu"]
    res, T = r["setup"]["resolution"], r["setup"]["text_tokens"]
    assert mfu["useful_flops_per_step"] == flops.image_flops(TINY_DIT, T, res, res, [7.0]).total
    assert mfu["peak_flops_bf16_dense"] is None and mfu["reason"]
    for name in GPU_CHECK_VARIANTS:
        got = mfu["per_variant"][name]
        assert got["mfu"] is None
        assert got["achieved_tflops"] == pytest.approx(mfu["useful_flops_per_step"] / medians[name] / 1e12)

    checks = r["checks"]
    assert set(CPU_CHECKS + CUDA_CHECKS + ("nf4_one_step",)) <= set(checks)
    for name in CPU_CHECKS:
        assert checks[name]["ok"] is True, (name, checks[name])
    assert checks["ours_vs_diffusers"]["value"]["max_abs"] < 1e-4
    assert checks["vae_tiling_2048"]["value"]["tiles"] == 4
    for name in CUDA_CHECKS:  # null on the CPU, with the CPU run of the same code standing in
        assert checks[name]["ok"] is None and "CUDA" in checks[name]["reason"], (name, checks[name])
        assert checks[name]["cpu_stand_in"]["ok"] is True, (name, checks[name])
    nf4 = checks["nf4_one_step"]
    assert nf4["ok"] is None and ("bitsandbytes" in nf4["reason"] or "CUDA" in nf4["reason"])

    table = (out / "gpu_check.md").read_text()
    for name in GPU_CHECK_VARIANTS + tuple(checks):
        assert f"| {name} |" in table and f"| {name} |" in proc.stdout


def test_gpu_check_budget_skips_with_reason(bench_modules, tmp_path):
    sys.path.insert(0, str(BENCH))
    import gpu_check

    assert gpu_check.main(["--small", "--budget-s", "0.001", "--out", str(tmp_path)]) == 2
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert all(s["status"] == "skipped" and s["reason"].startswith("time budget") for s in r["sections"])
    assert all(v["status"] == "skipped" and v["per_step_s"] is None for v in r["variants"].values())
    assert all(c["ok"] is None and c["reason"] for c in r["checks"].values())
    assert "| ours_bf16 |" in (tmp_path / "gpu_check.md").read_text()

    # a second run keeps the first result under a time-stamped name
    first = (tmp_path / "gpu_check.json").read_text()
    gpu_check.main(["--small", "--budget-s", "0.001", "--out", str(tmp_path)])
    kept = [p for p in tmp_path.glob("gpu_check.*.json")]
    assert len(kept) == 1 and kept[0].read_text() == first


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--small", "--resolution", "100"], ["--resolution 100", "multiple of 16"]),
        (["--small", "--timed-steps", "1"], ["--timed-steps 1"]),
        (["--small", "--skip", "ours_bf17"], ["ours_bf17", "ours_bf16"]),
    ],
)
def test_gpu_check_bad_arguments_fail_before_work(bench_modules, capsys, argv, words):
    sys.path.insert(0, str(BENCH))
    import gpu_check

    with pytest.raises(SystemExit):
        gpu_check.parse_args(argv)
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_gpu_check_mfu_ratios_and_table_for_a_gpu_run(bench_modules):
    """The GPU-only arithmetic (peak lookup, MFU, goals) on made-up step times, as an H100 run reports it."""
    import torch

    sys.path.insert(0, str(BENCH))
    import gpu_check_dit as dit
    import gpu_check_report as report

    from ideogram4 import flops
    from ideogram4.models.transformer import Ideogram4Config

    full = Ideogram4Config()
    bench = dit.DitBench("cpu", torch.float32, dit.C.tiny.TINY_DIT, 64, 12, 1, 2, 7.0)
    bench.config, bench.resolution, bench.text_tokens = full, 1024, 300  # what the GPU run times
    bench.clock.cuda = True
    step = {"ours_bf16": 0.30, "diffusers_bf16": 0.50, "ours_fp8_matmul": 0.25, "ours_compiled": 0.24}
    variants = {k: {"status": "done", "per_step_s": {"median": v}} for k, v in step.items()}

    m = dit.mfu(bench, variants, "NVIDIA H100 80GB HBM3")
    useful = flops.image_flops(full, 300, 1024, 1024, [7.0]).total
    assert useful == pytest.approx(169.9e12, rel=1e-3)  # performance.md: 169.9 TFLOP per guided step
    assert m["peak_flops_bf16_dense"] == 989e12 and "H100" in m["peak_source"]
    assert m["per_variant"]["ours_bf16"]["mfu"] == pytest.approx(useful / 0.30 / 989e12)
    assert m["per_variant"]["ours_fp8_matmul"]["mfu_vs_fp8_peak"] == pytest.approx(useful / 0.25 / 1979e12)
    padded = flops.image_flops(full, 300, 1024, 1024, [7.0], exact=False).total
    assert m["per_variant"]["diffusers_bf16"]["hfu_padded_flops"] == pytest.approx(padded / 0.50 / 989e12)
    assert dit.mfu(bench, variants, "Some Future GPU")["reason"].startswith("no peak known")

    r = dit.ratios(variants, on_gpu=True)
    assert r["ours_vs_diffusers"]["value"] == pytest.approx(0.50 / 0.30) and r["ours_vs_diffusers"]["meets_goal"]
    assert r["fp8_vs_bf16"]["value"] == pytest.approx(1.2) and r["fp8_vs_bf16"]["meets_goal"] is False
    missing = dit.ratios({"ours_bf16": variants["ours_bf16"]}, on_gpu=True)["fp8_vs_bf16"]
    assert missing["value"] is None and missing["meets_goal"] is None and "ours_fp8_matmul" in missing["reason"]

    result = {
        "command": "python bench/gpu_check.py",
        "small": False,
        "device": {"name": "NVIDIA H100 80GB HBM3", "torch": "2.11", "cuda": "13.0", "diffusers": "0.42.1"},
        "setup": bench.setup(),
        "variants": variants,
        "ratios": r,
        "mfu": m,
        "checks": {"nf4_one_step": {"ok": None, "value": None, "reason": "bitsandbytes is not importable"}},
    }
    table = report.render(result)
    assert "989 TFLOP/s dense bf16" in table and f"{useful / 0.30 / 989e12 * 100:.1f}%" in table
    assert "| ours_vs_diffusers | 1.667x | 1.5 | true |" in table
    assert "| nf4_one_step | - | - | bitsandbytes is not importable |" in table


@pytest.mark.slow
def test_sweep_overhead_bench_tiny(tiny_cache, tmp_path):
    import subprocess

    out = tmp_path / "sweep.json"
    args = [sys.executable, str(BENCH / "bench_sweep.py"), "--reps", "1", "--jobs", "3"]
    res = subprocess.run(
        [*args, "--cache-dir", str(tiny_cache), "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    (rep,) = data["reps"]
    assert data["jobs"] == 3 and data["tracker"] == "none"
    assert rep["t_3"] > 0 and rep["t_2"] > 0 and rep["per_job"] == pytest.approx(rep["t_3"] - rep["t_2"])
    assert 0 < rep["in_sweep_per_job"] < rep["t_3"]
    assert "median over 1" in res.stdout
