#!/usr/bin/env bash
# Builds the offline wheelhouse for the GPU machine: bash scripts/gpu_wheels.sh [--rehearse]
#
# wheels/ gets every package in scripts/gpu/wheels.txt (what distgem, its tests and its benchmarks need and the
# device image lacks) as a wheel for CPython 3.12 on manylinux x86_64: binary wheels downloaded as published,
# sdists (deepspeed, qpth, seqeval) built into wheels, deepspeed with DS_BUILD_OPS=0 against the image's torch.
# Never a torch wheel: the device runs the image's torch. scripts/gpu/wheelhouse.py then checks that the set is
# complete against the image's package list (scripts/gpu/image.txt) and fits the carry limit.
#
# The build needs an environment like the image's: IMAGE_VENV (default .venv-gpu312), a Python 3.12 virtual
# environment holding scripts/gpu/rehearsal.txt at the image's versions (torch 2.11 with its CUDA 13 libraries, as
# the image has them: ~4 GB, a minute or two from PyPI, made once and reused while rehearsal.txt is unchanged).
# --rehearse then installs wheels/ offline (--no-index) into a fresh target next to it, as gpu_check.sh does on the
# device, imports everything, and runs the CPU rehearsal of gpu_check.sh under that Python, with every CPU case of
# tests/gpu (about 15 minutes on 2 loaded cores).
#
# Needs the network (PyPI); not run in CI. Environment: WHEELS, IMAGE_VENV, PY312 (a python3.12), IMAGE_DATE.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/wheels}"
IMAGE_VENV="${IMAGE_VENV:-$ROOT/.venv-gpu312}"
IMAGE_DATE="${IMAGE_DATE:-2026-11-17T00:00:00Z}"   # the day the image's package list was read (KINDS.md)
REHEARSE=0
for arg in "$@"; do
    case "$arg" in
        --rehearse) REHEARSE=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
        *) echo "gpu_wheels.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done
say() { echo "[gpu_wheels] $*" >&2; }
die() { echo "[gpu_wheels] error: $*" >&2; exit 1; }

find_python312() {
    local candidate
    for candidate in "${PY312:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
        [ -n "$candidate" ] || continue
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            command -v "$candidate" || echo "$candidate"
            return 0
        fi
    done
    return 1
}

# pip against PyPI alone: this machine's pip configuration adds local indexes and find-links without upload times
pypi=(--isolated --cert "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" --disable-pip-version-check)

image_venv() {
    local stamp="$IMAGE_VENV/.gpu-image" want
    want="$(cat "$ROOT/scripts/gpu/rehearsal.txt" "$ROOT/scripts/gpu/image.txt" | sha256sum | cut -c1-16)-$IMAGE_DATE"
    [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
    local python
    python="$(find_python312)" || die "no Python 3.12 found (set PY312=/path/to/python3.12)"
    say "building the image-like environment $IMAGE_VENV with $python (torch 2.11 + CUDA 13 libraries: ~4 GB)"
    rm -rf "$IMAGE_VENV"
    "$python" -m venv "$IMAGE_VENV"
    "$IMAGE_VENV/bin/python" -m pip install -q "${pypi[@]}" --upgrade pip   # 26+ for --uploaded-prior-to
    "$IMAGE_VENV/bin/python" -m pip install -q "${pypi[@]}" --uploaded-prior-to "$IMAGE_DATE" \
        -r "$ROOT/scripts/gpu/rehearsal.txt"
    # the image is the reference: drop what pip added that the image does not have (it has other versions there)
    local extra
    extra="$("$IMAGE_VENV/bin/python" "$ROOT/scripts/gpu/wheelhouse.py" not-in-image)"
    if [ -n "$extra" ]; then
        say "removing packages the image does not have: $extra"
        # shellcheck disable=SC2086
        "$IMAGE_VENV/bin/python" -m pip uninstall -q -y $extra
    fi
    echo "$want" > "$stamp"
}

download_binaries() {
    local names
    names="$(awk '!/^#/ && NF && $2 != "sdist" {print $1}' "$ROOT/scripts/gpu/wheels.txt")"
    # shellcheck disable=SC2086
    python3 -m pip download -q "${pypi[@]}" --no-deps --only-binary=:all: --dest "$WHEELS" \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
        $names
}

build_sdists() {
    local spec
    for spec in $(awk '!/^#/ && NF && $2 == "sdist" {print $1}' "$ROOT/scripts/gpu/wheels.txt"); do
        say "building $spec into a wheel"
        # deepspeed's setup.py imports torch: build it against the image's torch 2.11 (no isolated build
        # environment), with no op compiled ahead (DS_BUILD_OPS=0); the others are pure Python, built in
        # pip's isolated environment (seqeval's setup.py reports version 0.0.0 under the image's setuptools)
        local isolation=()
        [ "${spec%%==*}" = deepspeed ] && isolation=(--no-build-isolation)
        DS_BUILD_OPS=0 DS_ACCELERATOR=cuda "$IMAGE_VENV/bin/python" -m pip wheel -q "${pypi[@]}" --no-deps \
            "${isolation[@]}" --no-binary=:all: --wheel-dir "$WHEELS" "$spec" \
            || die "could not build $spec into a wheel"
    done
}

image_venv
mkdir -p "$WHEELS"
find "$WHEELS" -maxdepth 1 -name '*.whl' -delete
say "downloading binary wheels into $WHEELS"
download_binaries
build_sdists
"$IMAGE_VENV/bin/python" "$ROOT/scripts/gpu/wheelhouse.py" check --wheels "$WHEELS"

if [ "$REHEARSE" = 1 ]; then
    # every CPU case of tests/gpu (not only the numerics): the device's stack (torch 2.11, numpy 2.5.2,
    # transformers 5.17, the carried deepspeed and datasets) trains every stage, resumes and exports here first
    say "rehearsal: offline install into a fresh target, imports, then gpu_check.sh --rehearse under $IMAGE_VENV"
    # its own extensions directory: DeepSpeed's CPU op built for Python 3.12 and torch 2.11 would otherwise
    # replace the project's (.venv's) build, and each would rebuild it for the other
    TORCH_EXTENSIONS_DIR="$ROOT/.cache/torch_extensions-py312" \
    PYTHON="$IMAGE_VENV/bin/python" WHEELS="$WHEELS" TESTS="${TESTS:-tests/gpu -k cpu}" \
        BUDGET_TESTS="${BUDGET_TESTS:-1500}" TOTAL_BUDGET="${TOTAL_BUDGET:-2400}" \
        bash "$ROOT/scripts/gpu_check.sh" --rehearse
fi
