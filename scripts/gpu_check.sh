#!/usr/bin/env bash
# The GPU check in one command: bash scripts/gpu_check.sh [--rehearse]
#
# On the GPU machine (carrying `wheels`): installs wheels/ offline next to the image's packages, then runs, in
# order of value and each under its own time budget (a slow stage cannot eat the next one's time):
#   install     the wheelhouse (pip --no-index) into a fresh target dir, versions, imports
#   tests       correctness on CUDA: pytest -m gpu (tests/gpu/: every method at ZeRO 0-3 against the CPU
#               reference, bf16, the torch kernel path, qpth, resume, export)
#   floor       GEM's overhead against its floor at mBERT-sized partitions (bench/floor.py)
#   projection  ours against the original GEM path at P = 178M (bench/projection.py)
#   step        naive, MTF-both, GEM-both on an mBERT-sized encoder, batch 32 x 128 tokens, bf16, ZeRO 0
#               and 2 (bench/step.py --encoder mbert): ms/step, GEM/naive against k + 1, peak GPU memory
# and writes $OUT/gpu_check.json (every figure), $OUT/gpu_check.md (the section for docs/PERFORMANCE.md) and
# one log per stage: 7 files. The summary table comes last.
#
# --rehearse: every stage on the CPU with small sizes (CI runs it: tests/e2e/test_gpu_check.py); the install
# stage runs where wheels/ exists (scripts/gpu_wheels.sh --rehearse does that in a Python 3.12 image-like venv).
#
# Environment: PYTHON (default python3 on the device; the project's .venv in a rehearsal), OUT (default
# runs/gpu-check), WHEELS (default wheels), TOTAL_BUDGET (s, default 480 on the device), BUDGET_<STAGE> (s),
# TESTS (pytest arguments of the tests stage), XDIST (pytest-xdist workers on the device).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE=device
for arg in "$@"; do
    case "$arg" in
        --rehearse) MODE=rehearse ;;
        -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$MODE" = rehearse ] && [ -z "${PYTHON:-}" ]; then
    # shellcheck source=scripts/setup.sh
    source "$ROOT/scripts/setup.sh"
    PYTHON=python
fi
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/runs/gpu-check}"
WHEELS="${WHEELS:-$ROOT/wheels}"
mkdir -p "$OUT" || { echo "gpu_check.sh: cannot create OUT=$OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
CPUS="$(getconf _NPROCESSORS_ONLN)"   # before OMP_NUM_THREADS=1, which nproc would report
export DISTGEM_GPU_RECORD="$WORK/records.jsonl" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
: > "$WORK/stages.jsonl"
STARTED=$(date +%s)

if [ "$MODE" = device ]; then
    TOTAL_BUDGET="${TOTAL_BUDGET:-480}"
    budget_install=${BUDGET_INSTALL:-45}; budget_tests=${BUDGET_TESTS:-120}; budget_floor=${BUDGET_FLOOR:-60}
    budget_projection=${BUDGET_PROJECTION:-75}; budget_step=${BUDGET_STEP:-70}   # step: per ZeRO stage, two of them
    export DS_ACCELERATOR=cuda
    # DeepSpeed must compile nothing on the GPU (torch's AdamW, no FusedAdam): a fresh extensions directory
    # shows what it built (the CPU reference runs build DeepSpeed's CPU communication op, on the CPU)
    export TORCH_EXTENSIONS_DIR="$WORK/torch_extensions"
    TESTS_ARGS=(-m gpu)
    FLOOR_ARGS=(--device cuda --models mbert --ranks 1 8 64 --ks 1 2 4 8 --repeats 3)
    PROJECTION_ARGS=(--device cuda --sizes 1.78e8 --ks 1 2 --repeats 2 --qp-ks 1 2 5 8 --qp-batches 1 16 128)
    STEP_ARGS=(--encoder mbert --seq 128 --batch 32 --memory-batch 16 --steps 10 --warmup 3 --set train.precision=bf16)
else
    # about 100 s of work on 2 quiet cores: the budgets are only a safety net for a loaded machine
    TOTAL_BUDGET="${TOTAL_BUDGET:-600}"
    budget_install=${BUDGET_INSTALL:-120}; budget_tests=${BUDGET_TESTS:-120}; budget_floor=${BUDGET_FLOOR:-60}
    budget_projection=${BUDGET_PROJECTION:-60}; budget_step=${BUDGET_STEP:-240}
    export DS_ACCELERATOR=cpu
    # DeepSpeed's CPU communication op (a minute or two of g++ the first time): the project's cache, as the suite's
    export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.cache/torch_extensions}"
    # the CPU cases of the numerics: the stage's plumbing, in seconds (tests/gpu's training cases run in the suite)
    TESTS_ARGS=(tests/gpu/test_numerics.py -k cpu)
    FLOOR_ARGS=(--device cpu --quick)
    PROJECTION_ARGS=(--device cpu --sizes 1e5 --ks 1 2 --repeats 1 --qp-ks 1 2 --qp-batches 1 16)
    STEP_ARGS=(--encoder tiny --seq 32 --batch 8 --memory-batch 4 --steps 2 --warmup 1)
fi
[ -n "${TESTS:-}" ] && read -r -a TESTS_ARGS <<< "$TESTS"

# stage NAME BUDGET COMMAND...: runs COMMAND under min(BUDGET, what the total leaves); the log is
# $OUT/NAME.log (a NAME-suffix shares NAME's log: step-zero0 and step-zero2 write step.log)
stage() {
    local name=$1 budget=$2 rc=0 start left log="$OUT/${1%%-*}.log"
    shift 2
    start=$(date +%s)
    left=$(( TOTAL_BUDGET - (start - STARTED) - 10 ))   # 10 s stay for the report
    [ "$budget" -gt "$left" ] && budget=$left
    if [ "$budget" -le 5 ]; then
        echo "{\"stage\": \"$name\", \"status\": \"skipped\", \"why\": \"no time left\"}" >> "$WORK/stages.jsonl"
        return 1
    fi
    echo "[gpu_check] $name (budget ${budget}s)" >&2
    echo "\$ $*" >> "$log"
    timeout --kill-after=10 "$budget" "$@" >> "$log" 2>&1 || rc=$?
    local status=ok
    [ $rc -ne 0 ] && status=failed
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
    printf '{"stage": "%s", "status": "%s", "rc": %d, "seconds": %d, "budget": %d}\n' \
        "$name" "$status" "$rc" "$(( $(date +%s) - start ))" "$budget" >> "$WORK/stages.jsonl"
    # a stage stopped while torch compiled an extension leaves its lock, and every later build waits on it
    # forever: nothing else runs now, so any lock left is stale
    [ "$status" = timeout ] && find "$TORCH_EXTENSIONS_DIR" -name lock -type f -delete 2>/dev/null
    echo "[gpu_check] $name: $status (rc $rc, $(( $(date +%s) - start )) s)" >&2
    return $rc
}

# the wheels go to a target directory of their own (the image stays as it is), first on PYTHONPATH after the
# checkout; pip compiles them (a module compiled on first import would warn, and the tests turn warnings into errors)
SITE="$WORK/site"
install_wheels() {
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl \
        && PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}" "$PYTHON" scripts/gpu/wheelhouse.py installed \
            --json "$WORK/install.json"
}
export -f install_wheels
export PYTHON ROOT SITE WHEELS WORK

rm -f "$OUT"/*.log
{
    echo "{\"mode\": \"$MODE\", \"command\": \"bash scripts/gpu_check.sh${1:+ $1}\", \"started\": \"$(date -u +%FT%TZ)\","
    echo " \"git\": \"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\", \"host_cpus\": $CPUS,"
    echo " \"gpu\": \"$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)\"}"
} > "$WORK/run.json"

WHEELS_FIT=0   # the wheelhouse is for the image's CPython 3.12; a rehearsal in another Python uses its own packages
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && WHEELS_FIT=1
if [ -d "$WHEELS" ] && compgen -G "$WHEELS/*.whl" > /dev/null && { [ "$MODE" = device ] || [ $WHEELS_FIT = 1 ]; }; then
    if stage install "$budget_install" bash -c install_wheels; then
        export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}"
    else
        INSTALL_FAILED=1
    fi
elif [ "$MODE" = device ]; then
    echo '{"stage": "install", "status": "failed", "why": "no wheels/: carry it (bash scripts/gpu_wheels.sh builds it)"}' \
        >> "$WORK/stages.jsonl"
    INSTALL_FAILED=1
else
    echo '{"stage": "install", "status": "skipped", "why": "no wheels/ for this Python: the rehearsal uses its packages"}' \
        >> "$WORK/stages.jsonl"
fi

if [ -n "${INSTALL_FAILED:-}" ]; then
    for name in tests floor projection step; do
        echo "{\"stage\": \"$name\", \"status\": \"skipped\", \"why\": \"the install stage failed\"}" >> "$WORK/stages.jsonl"
    done
else
    xdist=()
    if [ "$MODE" = device ] && "$PYTHON" -c "import xdist" 2>/dev/null; then
        workers="${XDIST:-$(( CPUS > 14 ? 12 : CPUS - 2 ))}"
        [ "$workers" -ge 2 ] && xdist=(-n "$workers")
    fi
    # pytest-timeout (>= 2.3) fails a test that hangs and starts none after the session's time, before the
    # stage's budget stops pytest (the outcomes are recorded as they come either way: tests/conftest.py)
    timeouts=()
    "$PYTHON" -c 'import importlib.metadata as m, sys
sys.exit(tuple(map(int, m.version("pytest-timeout").split(".")[:2])) < (2, 3))' 2>/dev/null \
        && timeouts=(--timeout 100 --session-timeout $(( budget_tests - 15 )))
    stage tests "$budget_tests" "$PYTHON" -m pytest -q -p no:cacheprovider -rfE --continue-on-collection-errors \
        "${xdist[@]}" "${timeouts[@]}" "${TESTS_ARGS[@]}"
    stage floor "$budget_floor" "$PYTHON" bench/floor.py "${FLOOR_ARGS[@]}" --json "$WORK/floor.json"
    stage projection "$budget_projection" env OMP_NUM_THREADS="$CPUS" \
        "$PYTHON" bench/projection.py "${PROJECTION_ARGS[@]}" --json "$WORK/projection.json"
    for zero in 0 2; do
        stage "step-zero$zero" "$budget_step" "$PYTHON" bench/step.py "${STEP_ARGS[@]}" --ranks 1 \
            --methods naive mtf-both gem-both --encoder-dir "$WORK/encoder" --set "train.zero_stage=$zero" \
            --json "$WORK/step-zero$zero.json"
    done
fi

if [ -n "${TORCH_EXTENSIONS_DIR:-}" ] && [ "$MODE" = device ]; then
    find "$TORCH_EXTENSIONS_DIR" -maxdepth 2 -mindepth 2 -type d -printf '%f\n' 2>/dev/null | sort -u \
        > "$WORK/extensions.txt"
fi
"$PYTHON" scripts/gpu/report.py --work "$WORK" --out "$OUT" --seconds "$(( $(date +%s) - STARTED ))"
rc=$?
rm -rf "$WORK"
exit $rc
