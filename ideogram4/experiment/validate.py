"""Turn a composed Hydra config into a checked, typed plan, before anything heavy is imported.

Every problem is collected (not just the first) and reported as ``field = value: problem. Fix: ...``
so a researcher learns about all mistakes at once, in seconds, without a weights download.
Nothing here imports torch, diffusers or wandb; the tokenizer (transformers) is loaded only for
captions long enough that they might exceed the token limit.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

log = logging.getLogger("ideogram4.experiment")

DTYPES = ("bfloat16", "float16", "float32")
OFFLOAD_MODES = ("none", "text_encoder", "transformers", "all")
FINAL_STEPS = ("official", "clean")
SOLVERS = ("euler",)
TRACKER_MODES = ("auto", "online", "offline", "disabled")
TRACKERS = ("wandb", "none")
MAX_ASPECT = 6.0
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """One or more problems in the run configuration, each naming the field, the value and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the run configuration:\n{lines}")


def problem(field_name: str, value: Any, what: str, fix: str) -> str:
    return f"{field_name} = {_show(value)}: {what}. Fix: {fix}"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# --- the plan -------------------------------------------------------------------------------------


@dataclass
class ModelPlan:
    name: str
    source: str  # what from_pretrained gets ("tiny" is resolved to its folder at load time)
    kind: str  # hub | local | tiny
    revision: str | None
    tokenizer_source: str | None
    dtype: str
    device: str
    load_unconditional: bool
    fp8_mode: str
    offload: str
    vae_tiling: bool
    compile_blocks: bool
    layout: str
    cache_dir: str | None

    def cache_key(self) -> str:
        """Identity of a loaded pipeline: jobs with an equal key reuse it."""
        return json.dumps(self.__dict__, sort_keys=True)

    def identity(self) -> dict:
        """What determines the weights (for the settings hash): not where they run."""
        ident = {
            "source": self.source,
            "revision": self.revision,
            "tokenizer_source": self.tokenizer_source,
            "dtype": self.dtype,
            "load_unconditional": self.load_unconditional,
            "fp8_mode": self.fp8_mode,
        }
        if self.kind == "tiny":
            ident["layout"] = self.layout
        if self.kind == "local":
            ident["files"] = folder_fingerprints(self.source)
        return ident


@dataclass
class PromptPlan:
    id: str
    prompt: Any  # str or dict (plain python)
    caption: str  # exact string fed to the text encoder
    issues: list[str] = field(default_factory=list)


@dataclass
class GenPlan:
    height: int
    width: int
    steps: int
    cfg: float
    guidance_schedule: list[float]
    mu: float
    std: float
    final_step: str
    solver: str
    sampler: str
    resolution: str
    rand_device: str
    negative_prompt: str
    input_image: str | None
    denoising_strength: float

    def settings(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RunPlan:
    model: ModelPlan
    gen: GenPlan
    prompts: list[PromptPlan]
    seeds: list[int]
    batch_size: int
    progress: bool
    output: dict
    tracker: dict
    config: dict  # the full resolved config
    warnings: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[PromptPlan, int]]:
        return [(p, s) for p in self.prompts for s in self.seeds]


# --- helpers ----------------------------------------------------------------------------------------


def official_schedule(steps: int, cfg: float, polish_steps: int, polish_cfg: float) -> list[float]:
    """Chronological guidance weights: (steps - polish) x cfg, then polish x polish_cfg.

    Same contract as ``ideogram4.sampling.official_guidance_schedule`` (a test checks they agree);
    kept here so validation never imports torch.
    """
    return [float(cfg)] * (steps - polish_steps) + [float(polish_cfg)] * polish_steps


def folder_fingerprints(folder: str) -> dict[str, str]:
    """sha256 of the first MiB + size of every weights file in a local folder (cheap identity)."""
    out = {}
    root = Path(folder)
    for path in sorted(root.glob("**/*.safetensors")):
        out[str(path.relative_to(root))] = file_fingerprint(path)
    return out


def file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return f"{h.hexdigest()[:16]}+{path.stat().st_size}"


def original_cwd() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return HydraConfig.get().runtime.cwd
    except Exception:  # pragma: no cover - outside Hydra
        pass
    return os.getcwd()


def abspath(path: str) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else Path(original_cwd()) / p)


def cuda_driver_present() -> bool:
    """Cheap check (no torch import) that this machine could have a CUDA GPU at all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def to_plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


# --- prompt loading -----------------------------------------------------------------------------------


def load_prompt_file(path: str) -> list[dict]:
    """Read a user's prompt file: .jsonl (one {id, prompt} per line), .json or .yaml (a list, or a
    mapping with `items`/`prompts`). Raises ConfigError naming the file, line and fix."""
    field_name = "prompts.file"
    full = abspath(path)
    if not os.path.isfile(full):
        raise ConfigError(
            [
                problem(
                    field_name,
                    path,
                    f"no such file ({full})",
                    "give an existing .jsonl/.json/.yaml path (relative paths are from the directory you ran in)",
                )
            ]
        )
    suffix = Path(full).suffix.lower()
    text = Path(full).read_text(encoding="utf-8")
    if suffix == ".jsonl":
        entries = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ConfigError(
                    [
                        problem(
                            field_name,
                            path,
                            f"line {lineno}, column {e.colno}: {e.msg}",
                            'write one JSON object per line, e.g. {"id": "cat", "prompt": "a cat"}',
                        )
                    ]
                ) from None
    elif suffix == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                [
                    problem(
                        field_name,
                        path,
                        f"line {e.lineno}, column {e.colno}: {e.msg}",
                        "fix the JSON syntax at that position",
                    )
                ]
            ) from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            entries = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ConfigError(
                [
                    problem(
                        field_name,
                        path,
                        f"{where}{getattr(e, 'problem', None) or e}",
                        "fix the YAML syntax at that position",
                    )
                ]
            ) from None
    else:
        raise ConfigError(
            [problem(field_name, path, f"unsupported file type {suffix!r}", "use .jsonl, .json, .yaml or .yml")]
        )
    if isinstance(entries, dict):
        entries = entries.get("items", entries.get("prompts"))
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            [
                problem(
                    field_name,
                    path,
                    "holds no list of prompts",
                    "make it a list of {id, prompt} entries (or a mapping with an `items` list)",
                )
            ]
        )
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, str):
            e = {"id": f"p{i:03d}", "prompt": e}
        if not isinstance(e, dict) or "prompt" not in e:
            raise ConfigError(
                [
                    problem(
                        f"{field_name}[{i}]",
                        e,
                        "is not an {id, prompt} entry",
                        "give each entry a `prompt` (string or caption mapping) and an `id`",
                    )
                ]
            )
        out.append({"id": str(e.get("id", f"p{i:03d}")), "prompt": e["prompt"]})
    return out


# --- the check --------------------------------------------------------------------------------------


def build_plan(cfg: DictConfig, *, check_tokens: bool = True) -> RunPlan:
    """Validate the composed config; raise ConfigError listing every problem."""
    problems: list[str] = []
    warnings: list[str] = []

    def get(path: str, default: Any = None) -> Any:
        try:
            return to_plain(OmegaConf.select(cfg, path, default=default, throw_on_missing=True))
        except MissingMandatoryValue:
            hint = "model=local model.path=/path/to/folder" if path == "model.path" else f"{path}=<value>"
            problems.append(problem(path, "???", "is required but not set", f"pass {hint}"))
            return default

    # model -------------------------------------------------------------------------------------------
    m = cfg.model
    name = get("model.name")
    source = get("model.source")
    path = get("model.path")
    kind = "hub"
    if source == "tiny":
        kind = "tiny"
    elif path is not None or source == "local":
        kind = "local"
        if path is None:
            problems.append(
                problem(
                    "model.path",
                    None,
                    "is required for model=local",
                    "pass model=local model.path=/path/to/folder (official layout: transformer/, text_encoder/, vae/, tokenizer/)",
                )
            )
        else:
            source = abspath(path)
        if path is not None and not os.path.isdir(source):
            problems.append(
                problem(
                    "model.path",
                    path,
                    f"is not a folder ({source})",
                    "point model.path at a folder with transformer/, text_encoder/, vae/ and tokenizer/",
                )
            )
    elif source and (source.startswith((".", "/", "~")) or os.path.isdir(abspath(source))):
        kind = "local"
        source = abspath(source)
        if not os.path.isdir(source):
            problems.append(
                problem(
                    "model.source",
                    m.source,
                    f"looks like a path but is not a folder ({source})",
                    "give an existing folder or a hub repo id like ideogram-ai/ideogram-4-fp8",
                )
            )
    dtype = get("model.dtype")
    if dtype not in DTYPES:
        problems.append(problem("model.dtype", dtype, "is not a supported dtype", f"use one of {', '.join(DTYPES)}"))
    offload = get("model.offload")
    if offload not in OFFLOAD_MODES:
        problems.append(
            problem("model.offload", offload, "is not an offload mode", f"use one of {', '.join(OFFLOAD_MODES)}")
        )
    device = get("device") or get("model.device")
    device_field = "device" if get("device") else "model.device"
    if not isinstance(device, str) or not re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", device):
        problems.append(problem(device_field, device, "is not a device", "use cpu, cuda, cuda:N or auto"))
    elif device.startswith("cuda") and not cuda_driver_present():
        problems.append(
            problem(
                device_field,
                device,
                "no CUDA GPU is visible on this machine",
                "run on a GPU machine, or try the runner on CPU with `model=tiny device=cpu`",
            )
        )
    elif device == "auto":
        device = "cuda" if cuda_driver_present() else "cpu"
    min_side, max_side = int(get("model.min_side", 256)), int(get("model.max_side", 2048))
    model = ModelPlan(
        name=name,
        source=source,
        kind=kind,
        revision=get("model.revision"),
        tokenizer_source=get("model.tokenizer_source"),
        dtype=dtype,
        device=device,
        load_unconditional=bool(get("model.load_unconditional")),
        fp8_mode=get("model.fp8_mode"),
        offload=offload,
        vae_tiling=bool(get("model.vae_tiling")),
        compile_blocks=bool(get("model.compile_blocks")),
        layout=get("model.layout"),
        cache_dir=abspath(get("model.cache_dir")) if get("model.cache_dir") else None,
    )

    # resolution --------------------------------------------------------------------------------------
    height, width = get("resolution.height"), get("resolution.width")
    for fname, v in (("resolution.height", height), ("resolution.width", width)):
        if v % 16:
            lo, hi = v // 16 * 16, v // 16 * 16 + 16
            problems.append(
                problem(
                    fname,
                    v,
                    "is not a multiple of 16 (one latent token = 16x16 pixels)",
                    f"use {lo if lo >= min_side else hi} or {hi}",
                )
            )
        if not min_side <= v <= max_side:
            problems.append(
                problem(
                    fname,
                    v,
                    f"is outside {min_side}..{max_side}",
                    f"pick a value in {min_side}..{max_side} (or a preset such as resolution=square_1024)",
                )
            )
    if height > 0 and width > 0 and max(height, width) / min(height, width) > MAX_ASPECT + 1e-9:
        problems.append(
            problem(
                "resolution",
                f"{width}x{height}",
                f"aspect ratio {max(height, width) / min(height, width):.2f}:1 is beyond 6:1",
                "bring width/height within 6:1 (e.g. resolution=banner_6_1 is 2016x336)",
            )
        )

    # sampler -----------------------------------------------------------------------------------------
    steps = get("sampler.steps")
    cfg_w = float(get("cfg"))
    polish_steps, polish_cfg = get("sampler.polish_steps"), float(get("sampler.polish_cfg"))
    schedule = get("sampler.guidance_schedule")
    if steps < 1:
        problems.append(
            problem("sampler.steps", steps, "must be at least 1", "use e.g. sampler.steps=48 (or sampler=turbo_12)")
        )
    if schedule is not None:
        schedule = [float(x) for x in schedule]
        if len(schedule) != steps:
            problems.append(
                problem(
                    "sampler.guidance_schedule",
                    schedule,
                    f"has {len(schedule)} entries but sampler.steps = {steps}",
                    f"give exactly {steps} weights (one per step, first step first) or drop the list to use cfg/polish_*",
                )
            )
    else:
        if polish_steps < 0 or (steps >= 1 and polish_steps >= steps):
            problems.append(
                problem(
                    "sampler.polish_steps",
                    polish_steps,
                    f"must be in 0..{max(steps - 1, 0)} for sampler.steps = {steps}",
                    f"set sampler.polish_steps={min(max(steps - 1, 0), 1)} (or sampler=constant for no polish)",
                )
            )
        else:
            schedule = official_schedule(steps, cfg_w, polish_steps, polish_cfg)
    for fname, allowed in (("sampler.final_step", FINAL_STEPS), ("sampler.solver", SOLVERS)):
        v = get(fname)
        if v not in allowed:
            problems.append(problem(fname, v, "is not a known option", f"use one of {', '.join(allowed)}"))
    std = float(get("sampler.std"))
    if std <= 0:
        problems.append(problem("sampler.std", std, "must be positive", "use e.g. 1.5 (quality_48) or 1.75"))
    rand_device = get("sampler.rand_device")
    if rand_device not in ("cpu", "cuda"):
        problems.append(
            problem("sampler.rand_device", rand_device, "is not a noise device", "use cpu (portable seeds) or cuda")
        )
    strength = float(get("denoising_strength"))
    input_image = get("input_image")
    if not 0.0 < strength <= 1.0:
        problems.append(
            problem(
                "denoising_strength", strength, "must be in (0, 1]", "use 1.0 for text-to-image, lower with input_image"
            )
        )
    if input_image is None and strength != 1.0:
        problems.append(
            problem(
                "denoising_strength",
                strength,
                "only applies with an input image",
                "set input_image=path/to.png or denoising_strength=1.0",
            )
        )
    if input_image is not None:
        input_image = abspath(input_image)
        if not os.path.isfile(input_image):
            problems.append(problem("input_image", get("input_image"), "no such file", "give an existing image file"))
    neg = get("negative_prompt")
    if neg is None:
        neg = get("prompts.negative_prompt") or ""
    gen = GenPlan(
        height=height,
        width=width,
        steps=steps,
        cfg=cfg_w,
        guidance_schedule=schedule or [],
        mu=float(get("sampler.mu")),
        std=std,
        final_step=get("sampler.final_step"),
        solver=get("sampler.solver"),
        sampler=get("sampler.name"),
        resolution=get("resolution.name"),
        rand_device=rand_device,
        negative_prompt=neg,
        input_image=input_image,
        denoising_strength=strength,
    )

    # seeds -------------------------------------------------------------------------------------------
    seed = get("seed")
    n_img = get("images_per_prompt")
    if n_img < 1:
        problems.append(problem("images_per_prompt", n_img, "must be at least 1", "use images_per_prompt=1 or more"))
        n_img = 1
    seeds: list[int] = []
    if seed is None:
        seeds = [random.SystemRandom().randrange(2**31) for _ in range(n_img)]
        warnings.append(f"seed = null: using random seeds {seeds} (recorded in the manifest)")
    elif isinstance(seed, bool) or not (
        isinstance(seed, int)
        or (isinstance(seed, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seed))
    ):
        problems.append(
            problem(
                "seed",
                seed,
                "must be an int, a list of ints or null",
                "use seed=0, seed=[0,1,2] (one job) or -m seed=0,1,2 (a sweep)",
            )
        )
    elif isinstance(seed, int):
        seeds = [seed + k for k in range(n_img)]
    else:
        seeds = [s + k for s in seed for k in range(n_img)]
    for s in seeds:
        if not 0 <= s < 2**63:
            problems.append(problem("seed", s, "is outside 0..2^63-1", "use a non-negative seed"))
    seeds = list(dict.fromkeys(seeds))
    if get("batch_size") < 1:
        problems.append(problem("batch_size", get("batch_size"), "must be at least 1", "use batch_size=1"))

    # prompts -----------------------------------------------------------------------------------------
    prompts = _plan_prompts(cfg, get, problems, warnings)

    # tracker -----------------------------------------------------------------------------------------
    tracker = get("tracker") or {}
    if tracker.get("name") not in TRACKERS:
        problems.append(
            problem("tracker.name", tracker.get("name"), "is not a tracker", "use tracker=wandb or tracker=none")
        )
    if tracker.get("mode") not in TRACKER_MODES:
        problems.append(
            problem("tracker.mode", tracker.get("mode"), "is not a W&B mode", f"use one of {', '.join(TRACKER_MODES)}")
        )
    output = get("output") or {}

    if problems:
        raise ConfigError(problems)

    if check_tokens:
        _check_token_counts(model, prompts, int(get("prompts.max_tokens", 2048)), problems)
        if problems:
            raise ConfigError(problems)

    config = OmegaConf.to_container(cfg, resolve=True)
    return RunPlan(
        model=model,
        gen=gen,
        prompts=prompts,
        seeds=seeds,
        batch_size=get("batch_size"),
        progress=bool(get("progress")),
        output=output,
        tracker=tracker,
        config=config,
        warnings=warnings,
    )


def _plan_prompts(cfg: DictConfig, get, problems: list[str], warnings: list[str]) -> list[PromptPlan]:
    from ideogram4.prompts import parse_caption, serialize_caption, validate_caption

    strict = bool(get("prompts.strict"))
    single = get("prompt")
    source_field = "prompts.items"
    if single is not None:
        if isinstance(single, (dict, list)):
            problems.append(
                problem(
                    "prompt",
                    single,
                    "was parsed by Hydra as a mapping, not a caption string",
                    'quote a JSON caption for Hydra: "prompt=\'{\\"high_level_description\\": ...}\'"',
                )
            )
            return []
        entries = [{"id": "prompt", "prompt": str(single)}]
        source_field = "prompt"
    elif get("prompts.file"):
        try:
            entries = load_prompt_file(get("prompts.file"))
        except ConfigError as e:
            problems.extend(e.problems)
            return []
        source_field = "prompts.file"
    else:
        entries = get("prompts.items") or []
    if not entries:
        problems.append(
            problem(
                "prompts.items",
                [],
                "no prompts to run",
                'pick a set (prompts=seed_example|typography|layout|plain), prompts.file=my.jsonl or prompt="..."',
            )
        )
        return []
    out: list[PromptPlan] = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        where = f"{source_field}[{i}]" if source_field != "prompt" else "prompt"
        pid, raw = str(e["id"]), e["prompt"]
        if not _ID_RE.match(pid):
            problems.append(
                problem(
                    f"{where}.id",
                    pid,
                    "is not usable in a file name",
                    "use letters, digits, '_', '-' or '.' (no spaces or slashes)",
                )
            )
        if pid in seen:
            problems.append(problem(f"{where}.id", pid, "is used twice", "give every prompt its own id"))
        seen.add(pid)
        if not isinstance(raw, (str, dict)):
            problems.append(
                problem(
                    f"{where}.prompt",
                    raw,
                    "must be a string or a caption mapping",
                    "give prose text or a structured caption",
                )
            )
            continue
        if isinstance(raw, str) and not raw.strip():
            problems.append(problem(f"{where}.prompt", raw, "is empty", "write a prompt"))
            continue
        try:
            parse_caption(raw)
        except ValueError as err:
            problems.append(
                problem(
                    f"{where}.prompt",
                    raw,
                    str(err),
                    "fix the JSON at that line/column, or write plain prose that does not start with '{'",
                )
            )
            continue
        issues = [str(x) for x in validate_caption(raw)]
        if issues:
            for msg in issues:
                text = problem(
                    f"{where}.prompt",
                    pid,
                    f"caption schema: {msg}",
                    "fix the caption (spec section G)"
                    + ("" if strict else "; prompts.strict=true turns this into an error"),
                )
                (problems if strict else warnings).append(text)
        out.append(PromptPlan(id=pid, prompt=raw, caption=serialize_caption(raw), issues=issues))
    return out


def _tokenizer_dir(model: ModelPlan) -> str:
    if model.kind == "local" and os.path.isdir(os.path.join(model.source, "tokenizer")):
        return os.path.join(model.source, "tokenizer")
    from ideogram4.prompts import bundled_tokenizer_dir  # same vocabulary as Qwen3-VL

    return str(bundled_tokenizer_dir())


def _check_token_counts(model: ModelPlan, prompts: list[PromptPlan], limit: int, problems: list[str]) -> None:
    # BPE never yields more tokens than UTF-8 bytes; the chat template adds < 32. Skip the tokenizer
    # load (transformers import, ~2 s) when no caption could possibly exceed the limit.
    long = [p for p in prompts if len(p.caption.encode("utf-8")) + 32 > limit]
    if not long:
        return
    from ideogram4.prompts import count_tokens, load_tokenizer

    tok = load_tokenizer(_tokenizer_dir(model))
    for p in long:
        n = count_tokens(tok, p.caption)
        if n > limit:
            problems.append(
                problem(
                    f"prompt[{p.id}]",
                    p.caption,
                    f"is {n} tokens after the chat template; the limit is {limit}",
                    f"shorten the caption by {n - limit} tokens (e.g. fewer or shorter elements[].desc)",
                )
            )
