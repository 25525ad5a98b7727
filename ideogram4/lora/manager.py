"""`LoraManager`: the LoRAs of a pipeline (`Ideogram4Pipeline.lora_manager`), behind its LoRA methods:

    name = pipe.load_lora("style.safetensors", scale=0.8)            # conditional DiT, as diffusers
    pipe.load_lora("owner/repo/lora.safetensors", target="both", revision="abc123")
    pipe.set_lora_scale(name, 0.5)                                    # no reload
    pipe.unload_lora(name)                                            # or unload_lora() for all
    pipe.load_lora(pipe.transformer, "style.safetensors", alpha=0.8)  # DiffSynth's call form

LoRAs run as a low-rank path beside each base Linear (`models/lora.py`), so they work on bf16, fp8 (every
fp8 mode) and nf4 weights, stack with their own scales, and change scale without touching the base
weights. `merge=True` folds one into float weights instead (no per-step cost), restored bit for bit on
unload. A load either fully succeeds or leaves the pipeline as it was: the file is read, every key
placed and every shape checked before the first module changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import torch.nn as nn

from ..models import lora as lora_path
from ..rules import lora_name_problems
from ..spec import LORA_TARGETS
from .files import LoraError, read_lora
from .layouts import LoraWeights, map_lora

log = logging.getLogger(__name__)


@dataclass
class LoraInfo:
    """What a manifest records about one loaded LoRA."""

    name: str
    path: str | None  # local file (the hub cache's copy for a hub file); None for an in-memory state dict
    sha256: str  # of the file: its identity for resume keys
    scale: float
    target: str  # "transformer", "unconditional_transformer" or "both"
    layout: str  # "ai-toolkit", "kohya", "peft", "diffsynth"
    rank: int
    merged: bool
    layers: int  # Linears it changes in each targeted network
    addnet_hash: str | None = None  # A1111's hash of a .safetensors file's tensor data (PNG `Lora hashes`: [:12])


@dataclass
class _Loaded:
    info: LoraInfo
    modules: list[nn.Module]  # every base Linear it is attached to (both networks for "both")


def _is_linear(module: nn.Module) -> bool:
    return hasattr(module, "in_features") and hasattr(module, "out_features") and hasattr(module, "weight")


def linear_shapes(net: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: lora_path.weight_shape(m) for name, m in net.named_modules() if _is_linear(m)}


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise LoraError(f"scale={scale!r}: a LoRA scale must be a finite number (0 turns it off, 1 is as trained)")
    return float(scale)


def _refresh_compiled(nets: list[nn.Module]) -> None:
    """Make torch.compile'd blocks see the LoRA hooks. By default dynamo does not guard on module hooks,
    so code traced before the hooks existed, or traced on a block of the other network (same code, no
    hooks), would run without them: turn those guards on (process-wide) and drop the compiled code; it
    retraces on the next call. Later scale changes and unloads are guarded through what the hook reads."""
    if any(getattr(m, "_compiled_call_impl", None) is not None for net in nets for m in net.modules()):
        import torch

        log.info("LoRA added to a compiled transformer: compiled code reset, it recompiles on the next step")
        torch._dynamo.config.skip_nnmodule_hook_guards = False
        torch._dynamo.reset()


class LoraManager:
    """The LoRAs loaded into a pipeline's transformers: their order, scales, targets and merge state.

    `transformer` is the conditional DiT; `unconditional_transformer` the other one, or None when the
    conditional network serves both branches. The pipeline exposes this as its `load_lora` etc."""

    def __init__(self, transformer: nn.Module, unconditional_transformer: nn.Module | None = None):
        self.transformer = transformer
        self.unconditional_transformer = unconditional_transformer
        self._loaded: dict[str, _Loaded] = {}  # load order

    @property
    def loras(self) -> dict[str, LoraInfo]:
        """The loaded LoRAs in load order, name -> LoraInfo (copies: edit through set_scale)."""
        return {name: replace(entry.info) for name, entry in self._loaded.items()}

    def list_loras(self) -> list[dict]:
        return [asdict(info) for info in self.loras.values()]

    def load(
        self,
        source,
        scale: float = 1.0,
        target: str = "transformer",
        name: str | None = None,
        merge: bool = False,
        *,
        weight_name: str | None = None,
        revision: str | None = None,
        verbose: int = 1,
    ) -> str:
        """Load a LoRA and return its name.

        `source`: a local file or folder, a hub file ("owner/repo/file.safetensors", or "owner/repo" with
        `weight_name=`; `revision=` pins it), a DiffSynth ModelConfig, a state dict, or a `LoraFile`.
        `target`: "transformer" (default: the conditional DiT, as diffusers does), "unconditional_transformer"
        or "both" (as DiffSynth's validation scripts do). `name`: defaults to the file's stem.
        `merge=True` folds it into float base weights (restored on unload) instead of the runtime path.
        """
        scale = _check_scale(scale)
        nets = self._nets(target)
        if name is not None and (found := lora_name_problems("name", name)):
            raise LoraError(str(found[0]))  # the rule the runner applies to lora.N.name
        if name in self._loaded:
            raise LoraError(
                f"a LoRA named {name!r} is already loaded: unload_lora({name!r}) first, or pick another name"
            )
        if source is None:
            raise LoraError("load_lora needs a source: a file, folder, hub file, ModelConfig or state dict")
        file = read_lora(source, weight_name, revision)
        weights = map_lora(file, linear_shapes(nets[0]))
        name = name or self._free_name(file.stem)
        modules = self._check_placement(weights, nets, merge)
        self._attach_all(name, weights, nets, modules, scale, merge)
        _refresh_compiled(nets)
        shape = dict(layout=weights.layout, rank=weights.rank, merged=merge, layers=len(weights.layers))
        info = LoraInfo(name, file.path, file.sha256, scale, target, addnet_hash=file.addnet_hash, **shape)
        self._loaded[name] = _Loaded(info, [m for per_net in modules for m in per_net])
        if verbose:
            detail = (name, info.layout, info.rank, info.layers, target, scale, "merged" if merge else "runtime path")
            log.info("LoRA %r (%s, rank %d, %d Linears) loaded into %s at scale %g (%s)", *detail)
        return name

    def load_into(self, module: nn.Module, source, alpha: float = 1.0, verbose: int = 1) -> str:
        """DiffSynth's call form, `load_lora(pipe.transformer, path, alpha=0.8)`: `module` names the
        target, `alpha` is the scale; the LoRA runs as the runtime path (merge through `load`)."""
        return self.load(source, alpha, self._target_of(module), verbose=verbose)

    def set_scale(self, name: str, scale: float) -> None:
        """Change a loaded LoRA's scale in place (no reload; a merged LoRA is re-merged from the kept weights)."""
        entry = self._entry(name)
        scale = _check_scale(scale)
        for module in entry.modules:
            lora_path.set_scale(module, name, scale)
        entry.info.scale = scale

    def unload(self, name: str | None = None) -> None:
        """Remove one LoRA (all when name is None); merged weights return bit for bit."""
        names = list(self._loaded) if name is None else [self._entry(name).info.name]
        for n in reversed(names):
            for module in self._loaded[n].modules:
                lora_path.detach(module, n)
            del self._loaded[n]

    def sync(self, specs: Mapping[str, Mapping]) -> dict[str, str]:
        """Make the loaded LoRAs exactly `specs` ({name: {source, scale, target, merge, weight_name,
        revision}}), changing only what differs. For a sweep: a scale change is applied in place, the
        same file (by sha256) and target stays loaded, anything else is (re)loaded; names not in `specs`
        are unloaded. Every file is read and checked before anything changes.
        Returns {name: "kept" | "rescaled" | "loaded" | "reloaded" | "unloaded"}.
        """
        wanted = {}
        for name, spec in specs.items():
            file = read_lora(spec.get("source"), spec.get("weight_name"), spec.get("revision"))
            target = spec.get("target", "transformer")
            map_lora(file, linear_shapes(self._nets(target)[0]))
            wanted[name] = (file, _check_scale(spec.get("scale", 1.0)), target, bool(spec.get("merge", False)))
        actions = {}
        for name in [n for n in self._loaded if n not in wanted]:
            self.unload(name)
            actions[name] = "unloaded"
        for name, (file, scale, target, merge) in wanted.items():
            loaded = self._loaded.get(name)
            same = loaded is not None and (loaded.info.sha256, loaded.info.target, loaded.info.merged) == (
                file.sha256,
                target,
                merge,
            )
            if same:
                actions[name] = "kept" if loaded.info.scale == scale else "rescaled"
                self.set_scale(name, scale)
                continue
            if loaded is not None:
                self.unload(name)
            self.load(file, scale, target, name, merge)
            actions[name] = "reloaded" if loaded is not None else "loaded"
        return actions

    # --- helpers -----------------------------------------------------------------------------------

    def _entry(self, name: str) -> _Loaded:
        if name not in self._loaded:
            loaded = ", ".join(repr(n) for n in self._loaded) or "none"
            raise LoraError(f"no LoRA named {name!r} is loaded (loaded: {loaded})")
        return self._loaded[name]

    def _free_name(self, stem: str) -> str:
        name, i = stem, 2
        while name in self._loaded:
            name, i = f"{stem}-{i}", i + 1
        return name

    def _target_of(self, module: nn.Module) -> str:
        for target in ("transformer", "unconditional_transformer"):
            if module is not None and module is getattr(self, target):
                return target
        raise LoraError(
            "load_lora(module, ...): module must be pipe.transformer or pipe.unconditional_transformer "
            "(DiffSynth's pipe.dit / pipe.dit_uncond)"
        )

    def _nets(self, target: str) -> list[nn.Module]:
        if target not in LORA_TARGETS:
            raise LoraError(f"target={target!r}: use one of {LORA_TARGETS} (default 'transformer', as diffusers)")
        uncond = self.unconditional_transformer
        if target == "transformer":
            return [self.transformer]
        if uncond is None:
            if target == "unconditional_transformer":
                raise LoraError(
                    "target='unconditional_transformer' but this pipeline has none (loaded with "
                    "load_unconditional=False: the conditional transformer serves both branches); use "
                    "target='transformer' or load the unconditional transformer"
                )
            log.info("target='both': no unconditional_transformer loaded, so the LoRA goes into the one transformer")
            return [self.transformer]
        return [uncond] if target == "unconditional_transformer" else [self.transformer, uncond]

    @staticmethod
    def _check_placement(weights: LoraWeights, nets: list[nn.Module], merge: bool) -> list[list[nn.Module]]:
        """The base modules in each net; for merge=True, that each can take a merged LoRA."""
        modules = []
        for net in nets[1:]:
            if linear_shapes(net) != linear_shapes(nets[0]):
                raise LoraError("the two transformers have different Linear shapes: load the LoRA into each separately")
        for net in nets:
            modules.append([net.get_submodule(layer) for layer in weights.layers])
            for layer, module in zip(weights.layers, modules[-1]):
                why = lora_path.merge_refusal(module) if merge else None
                if why:
                    raise LoraError(
                        f"merge=True needs float (bf16/fp32) base weights, but {layer}: {why}. Use merge=False "
                        "(the runtime path works on every fp8 mode and nf4), or fp8_mode='dequantize_once'"
                    )
        return modules

    @staticmethod
    def _attach_all(name, weights: LoraWeights, nets, modules, scale: float, merge: bool) -> None:
        """Attach to every module, or to none: a failure part-way takes the attached ones back off."""
        done = []
        try:
            for net, per_net in zip(nets, modules):
                dtype = getattr(net, "compute_dtype", None)
                for (A, B), module in zip(weights.layers.values(), per_net):
                    device = next(iter(module.parameters())).device
                    A_, B_ = (t.to(device=device, dtype=dtype or t.dtype) for t in (A, B))
                    lora_path.attach(module, name, A_, B_, scale, merge)
                    done.append(module)
        except BaseException:
            for module in reversed(done):
                lora_path.detach(module, name)
            raise
