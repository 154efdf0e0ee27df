#!/usr/bin/env bash
# Installs distgem and its test extras into a virtual environment: scripts/install.sh VENV.
# torch goes first, pinned to 2.13.0 (the CPU build on local disk), so no package pulls a CUDA build;
# constraints.txt resolves qpth's numpy<2 against pyarrow/pandas (docs/INSTALL.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$1"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip=("$VENV/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" torch==2.13.0
# deepspeed builds against the installed torch (no isolated build env, no CUDA ops compiled).
DS_BUILD_OPS=0 "${pip[@]}" --no-build-isolation -c "$ROOT/constraints.txt" deepspeed
"${pip[@]}" -c "$ROOT/constraints.txt" -e "$ROOT[test,mpi,lora]"
"$VENV/bin/python" -c "import torch, deepspeed, qpth, datasets, seqeval, transformers" \
    || { echo "[setup] the installed stack does not import" >&2; exit 1; }
