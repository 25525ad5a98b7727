"""The distilled variants (issue 23): component-level sources, fal Fast / Instant, TurboTime, the card guard.

Every weight is a tiny random stand-in built locally in the published layout (ideogram4.tiny); the hub
is replaced by a fake that serves those folders and records what was asked of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runner_helpers import compose, run_cli
from safetensors import safe_open

from ideogram4 import Ideogram4Pipeline, ModelConfig
from ideogram4.checkpoints import sources
from ideogram4.checkpoints.readers import SafetensorsReader, fingerprint, weight_files
from ideogram4.spec import PRESETS, VARIANTS

BASE, INSTANT = "ideogram-ai/ideogram-4-fp8", VARIANTS["fal_instant"].repo


@pytest.fixture(scope="module")
def tiny_instant(tiny_cache) -> str:
    from ideogram4.tiny import ensure_tiny_variant

    return ensure_tiny_variant(tiny_cache, "fal_instant")


@pytest.fixture
def fake_hub(monkeypatch, tiny_original, tiny_instant):
    """hub_download served from local folders; the list records (repo, patterns) of every call."""
    repos = {BASE: Path(tiny_original), INSTANT: Path(tiny_instant)}
    asked: list[tuple[str, list[str]]] = []

    def download(repo_id, patterns, revision=None, error=None):
        asked.append((repo_id, list(patterns)))
        return repos[repo_id]

    monkeypatch.setattr(sources, "hub_folder", download)
    return asked


@pytest.fixture
def opened(monkeypatch):
    """Every safetensors file a loader opens."""
    files: list[Path] = []
    original = SafetensorsReader.__init__

    def spy(self, paths):
        files.extend(paths)
        original(self, paths)

    monkeypatch.setattr(SafetensorsReader, "__init__", spy)
    return files


def load_instant(**kw) -> Ideogram4Pipeline:
    configs = [ModelConfig(model_id=INSTANT, origin_file_pattern="transformer/")]
    return Ideogram4Pipeline.from_pretrained(
        BASE, model_configs=configs, load_unconditional=False, torch_dtype=torch.float32, device="cpu", **kw
    )


def distilled_state(folder: str) -> dict[str, torch.Tensor]:
    """The distilled shards read directly, q/k/v fused as rows [Q | K | V] (the oracle for our loader)."""
    out = {}
    for f in weight_files(Path(folder) / "transformer", "transformer"):
        with safe_open(str(f), "pt") as h:
            out.update({k: h.get_tensor(k).float() for k in h.keys()})
    for k in [k for k in out if ".attention.to_q." in k]:
        parts = [out.pop(k.replace("to_q", n)) for n in ("to_q", "to_k", "to_v")]
        out[k.replace(".to_q.", ".qkv.")] = torch.cat(parts)
    return {k.replace(".to_out.0.", ".o."): v for k, v in out.items()}


# --- component-level sources ------------------------------------------------------------------------


def test_transformer_only_repo_loads_with_the_base_components_and_no_unconditional(
    fake_hub, opened, tiny_original, tiny_instant
):
    pipe = load_instant()
    assert {(repo, tuple(p)) for repo, p in fake_hub} == {
        (INSTANT, ("transformer/*",)),
        (BASE, ("text_encoder/*", "vae/*", "tokenizer/*")),  # neither base transformer is fetched
    }
    assert not [f for f in opened if "transformer" in f.parent.name and Path(tiny_original) in f.parents]
    assert pipe.unconditional_transformer is None
    expected = distilled_state(tiny_instant)
    got = {k: v.float() for k, v in pipe.transformer.state_dict().items()}
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    info = pipe.describe()
    assert info["variant"] == "fal_instant" and info["layout"] == "diffusers"
    assert info["components"]["transformer"] == {"source": INSTANT, "revision": None}
    assert info["components"]["vae"]["source"] == BASE and "unconditional_transformer" not in info["components"]
    te_files = weight_files(Path(tiny_original) / "text_encoder", "text_encoder")
    assert info["fingerprints"]["text_encoder"] == fingerprint(te_files)
    assert info["fingerprints"]["unconditional_transformer"] is None and info["fingerprints"]["tokenizer"]


def test_component_source_rules(tiny_original, tiny_instant):
    root = Path(tiny_original)
    by_checkpoint = sources.resolve_component(ModelConfig(path=str(root), component="vae"), "vae")
    by_folder = sources.resolve_component(ModelConfig(path=str(root / "vae"), component="vae"), "vae")
    assert by_checkpoint == by_folder == root / "vae"
    one_file = root / "text_encoder" / "model.safetensors"
    assert (
        sources.resolve_component(ModelConfig(path=str(one_file), component="text_encoder"), "text_encoder") == one_file
    )
    with pytest.raises(sources.CheckpointError, match="component='dit'"):
        ModelConfig(path=str(root), component="dit").component_name()


def test_instant_at_cfg_1_runs_one_transformer_call_per_step(fake_hub, caplog):
    from ideogram4.flops import exact_pass_flops

    pipe = load_instant()
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    preset = PRESETS["instant_8"]
    kw = dict(height=64, width=64, num_inference_steps=8, output_type="latent", progress=False)
    with caplog.at_level("WARNING"):
        out = pipe.generate(["a cat"], [0], guidance_schedule=preset.guidance_schedule, **kw)
    assert len(calls) == 8 and out.cost["transformer_passes"] == {"conditional": 8, "unconditional": 0}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert not any("fal_instant" in w for w in warnings)  # the card's settings: no warning (INFO lines may name it)
    text_tokens = pipe.encode_prompt(out.captions[0])[0].shape[1]
    assert out.cost["flops"] == [8 * exact_pass_flops(pipe.transformer.config, text_tokens, 16).total]

    calls.clear()
    with caplog.at_level("WARNING"):
        out = pipe.generate(["a cat"], [0], cfg_scale=3.0, **kw)  # runs, with the guard's warning
    assert len(calls) == 16 and out.cost["transformer_passes"] == {"conditional": 8, "unconditional": 8}
    assert "fal_instant" in caplog.text and "without CFG" in caplog.text and "cfg_scale=1.0" in caplog.text


# --- TurboTime ----------------------------------------------------------------------------------------


def test_turbotime_lora_loads_in_its_published_key_layout(tiny_cache, pipe):
    from ideogram4.tiny import TINY_DIT, TURBOTIME_SITES, ensure_tiny_variant

    path = ensure_tiny_variant(tiny_cache, "turbotime")
    with safe_open(path, "pt") as h:
        tensors = {k: h.get_tensor(k) for k in h.keys()}
    # ai-toolkit keys, as published: 6 sites x {A, B} per layer, bf16, no alpha (408 tensors at 34 layers)
    wanted = {
        f"diffusion_model.layers.{i}.{site}.lora_{ab}.weight"
        for i in range(TINY_DIT.num_layers)
        for site in TURBOTIME_SITES
        for ab in "AB"
    }
    assert set(tensors) == wanted and {t.dtype for t in tensors.values()} == {torch.bfloat16}
    name = pipe.load_lora(path, name="turbotime")
    try:
        info = pipe.loras["turbotime"]
        assert (info.layout, info.rank, info.layers) == ("ai-toolkit", 8, len(wanted) // 2)
        for site in ("attention.qkv", "feed_forward.w2"):
            module = pipe.transformer.get_submodule(f"layers.1.{site}")
            key = f"diffusion_model.layers.1.{site}"
            B, A = tensors[f"{key}.lora_B.weight"].float(), tensors[f"{key}.lora_A.weight"].float()
            x_in = torch.randn(3, A.shape[1])
            expected = torch.nn.functional.linear(x_in, module.weight.float() + B @ A)
            torch.testing.assert_close(module(x_in), expected, rtol=1e-5, atol=1e-5)
    finally:
        pipe.unload_lora(name)


def test_turbotime_layout_accounts_for_the_published_file_size():
    """6 sites x 34 layers at rank 128 in bf16 is the 847 MB of ideogram_4_turbotime_v1.safetensors."""
    from ideogram4.models.transformer import Ideogram4Config, Ideogram4Transformer
    from ideogram4.tiny import TURBOTIME_SITES

    with torch.device("meta"):
        net = Ideogram4Transformer(Ideogram4Config())
    size = sum(
        128 * sum(net.get_submodule(f"layers.{i}.{site}").weight.shape) * 2
        for i in range(34)
        for site in TURBOTIME_SITES
    )
    assert abs(size / 1e6 - 847) < 1  # the hub page: 847 MB


# --- the runner's plan -----------------------------------------------------------------------------------


def plan(overrides: list[str]):
    from ideogram4.experiment.config.plan import build_plan

    return build_plan(compose(["device=cpu", *overrides]), check_tokens=False)


@pytest.mark.slow
def test_distilled_presets_are_sampler_options_with_their_guidance():
    for name in ("fast_20", "instant_8", "turbotime_2", "turbotime_4", "turbotime_8"):
        p = plan([f"sampler={name}"])
        preset = PRESETS[name]
        assert (p.gen.steps, p.gen.mu, p.gen.std, p.gen.sampler) == (preset.steps, preset.mu, preset.std, name)
        assert p.gen.guidance_schedule == [1.0] * preset.steps  # the preset's cfg, not the official 7
    assert plan(["sampler=instant_8", "cfg=3"]).gen.guidance_schedule == [3.0] * 8


def test_fal_models_take_the_transformer_elsewhere_and_pick_their_preset():
    p = plan(["model=fal_instant"])
    assert p.gen.sampler == "instant_8" and not p.model.conf.load_unconditional
    assert p.model.source == BASE and p.model.model_configs() == [
        {"model_id": INSTANT, "revision": None, "component": "transformer"}
    ]
    assert p.model.identity()["components"]["transformer"]["source"] == INSTANT
    assert plan(["model=fal_fast"]).gen.steps == 20 and plan(["model=fal_instant"]).warnings == []


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["model=fal_instant", "cfg=3"], ["fal_instant", "without CFG", "cfg=1.0", "sampler=instant_8"]),
        (["model=fal_instant", "sampler.steps=20"], ["for 8 steps, not 20", "sampler.steps=8"]),
        (["model=fal_instant", "model.load_unconditional=true"], ["model.load_unconditional=false"]),
        (["+variant=turbotime", "sampler=quality_48"], ["turbotime", "2 or 4 or 8 steps", "sampler=turbotime_8"]),
        (["model=fal_fast"], ["NVFP4"]),
    ],
)
def test_card_guard_warns_without_refusing(overrides, words):
    warnings = "\n".join(plan(overrides).warnings)
    assert all(w in warnings for w in words), warnings


def test_component_source_mistakes_are_one_line_each():
    from ideogram4.experiment.config.problems import ConfigError

    with pytest.raises(ConfigError, match="model.transformer.source = '/nonexistent/dit'"):
        plan(["model.transformer.source=/nonexistent/dit"])
    with pytest.raises(ConfigError, match="model.source = 'fal/ideogram-v4-instant': is a transformer-only repo"):
        plan([f"model.source={INSTANT}"])


# --- the variants sweep on a CPU ------------------------------------------------------------------------


@pytest.mark.slow
def test_variants_tiny_summary_has_a_row_per_variant_with_cost_and_metric_columns(runner_env, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "+experiment=variants_tiny", f"hydra.sweep.dir={sweep}", "progress=false"]
    proc = run_cli(args, runner_env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import csv

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    variants = ("quality_48", "turbo_12", "fal_fast", "fal_instant", "turbotime")
    assert sorted((r["variant"], r["prompts"]) for r in rows) == sorted(
        (v, p) for v in variants for p in ("typography", "layout")
    )
    for column in ("sampling_s_mean", "device_s_per_image_mean", "images_per_hour", "gflops_mean"):
        assert all(float(r[column]) > 0 for r in rows), column
    for r in rows:  # two prompts per row: an interval exists (how wide is the intervals module's business)
        assert float(r["sampling_s_ci_low"]) <= float(r["sampling_s_mean"]) <= float(r["sampling_s_ci_high"])
    for column in ("ocr_word_accuracy_mean", "palette_delta_e_mean", "pixel_std_mean"):
        assert all(r[column] != "" for r in rows), column
    g = {(r["variant"], r["prompts"]): float(r["gflops_mean"]) for r in rows}
    for p in ("typography", "layout"):  # the passes each preset makes, at the same text lengths
        assert g["fal_instant", p] == pytest.approx(g["turbotime", p])
        assert g["fal_fast", p] == pytest.approx(g["fal_instant", p] * 20 / 8)
        assert g["quality_48", p] == pytest.approx(g["turbo_12", p] * 48 / 12)  # 48 + 48 passes vs 12 + 12
    passes = {}
    for manifest in sweep.glob("*/manifest.jsonl"):
        for line in manifest.read_text().splitlines():
            rec = json.loads(line)
            passes[rec["sampler"]] = rec["cost"]["transformer_passes"]
            assert set(rec["weights"]["fingerprints"]) == {
                "transformer", "unconditional_transformer", "text_encoder", "vae", "tokenizer",
            }  # fmt: skip
    assert passes["instant_8"] == {"conditional": 8, "unconditional": 0}
    assert passes["turbotime_8"] == {"conditional": 8, "unconditional": 0}
    assert passes["quality_48"] == {"conditional": 48, "unconditional": 48}
    assert (sweep / "summary.png").is_file()


def test_summary_cost_columns_are_exact_on_known_numbers(tmp_path):
    from test_summary import read_csv, record, write_job

    from ideogram4.experiment.summary.table import summarize

    sweep = tmp_path / "sweep"
    for num, (variant, seconds) in enumerate((("fal_instant", [1.0, 3.0]), ("quality_48", [10.0, 14.0]))):
        recs = []
        for i, s in enumerate(seconds):
            rec = record(f"p{i}", 0, ocr_word_accuracy=0.5)
            rec["cost"] = {"sampling_s": s, "device_s_per_image": s + 1, "flops": int(2e9 * s)}
            rec["peak_memory_bytes"] = (i + 1) * 2**30
            recs.append(rec)
        write_job(sweep, num, [f"+variant={variant}"], recs)
    summarize(sweep)
    _, rows = read_csv(sweep / "summary.csv")
    by = {r["variant"]: r for r in rows}
    assert float(by["fal_instant"]["sampling_s_mean"]) == 2.0 and float(by["quality_48"]["sampling_s_mean"]) == 12.0
    assert float(by["fal_instant"]["sampling_s_ci_low"]) < 2.0 < float(by["fal_instant"]["sampling_s_ci_high"])
    assert by["fal_instant"]["sampling_s_better"] == "lower"
    assert float(by["fal_instant"]["images_per_hour"]) == pytest.approx(3600 / 3.0)  # mean device s: (2 + 4) / 2
    assert float(by["quality_48"]["gflops_mean"]) == pytest.approx(24.0)
    assert float(by["fal_instant"]["peak_memory_gb"]) == 2.0
