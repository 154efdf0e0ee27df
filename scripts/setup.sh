#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: makes sure .venv is installed (once per change of pyproject.toml or
# constraints.txt) and exports the environment every distgem process wants on CPU and GPU alike.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DISTGEM_VENV:-$ROOT/.venv}"
STAMP="$VENV/.distgem-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/scripts/install.sh" | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing into $VENV (first run: about a minute)" >&2
    rm -f "$STAMP"
    bash "$ROOT/scripts/install.sh" "$VENV" || { echo "[setup] install failed" >&2; exit 1; }
    echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"    # the deepspeed launcher does not set it: 50x slower on CPU
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.cache/torch_extensions}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"      # no hub here; fail fast instead of retrying
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
if ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
fi
# DeepSpeed compiles its CPU communication op on first use; build it once here, under distgem's own lock
# (a build killed half-way must not leave every later run waiting: docs/USAGE.md, "When a run fails")
if [ "${DS_ACCELERATOR:-}" = cpu ] && ! compgen -G "$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm/*.so" >/dev/null; then
    echo "[setup] building DeepSpeed's CPU communication op (once, about 20 s)" >&2
    python -c "from distgem.distributed.deepspeed import prebuild_ops; prebuild_ops()" >&2 \
        || { echo "[setup] the DeepSpeed op does not build" >&2; exit 1; }
fi
