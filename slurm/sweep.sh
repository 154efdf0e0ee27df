#!/usr/bin/env bash
# The paper's protocol as one command: a Slurm job array over a sweep grid (configs/sweep*.yaml).
#
#   sbatch slurm/sweep.sh [GRID]      # or: bash slurm/sweep.sh [GRID]
#   distgem sweep list GRID           # print the grid (and what finished) without submitting
#   DISTGEM_SUMMARY=report/runs.jsonl sbatch slurm/sweep.sh GRID   # only the runs not kept in that summary
#
# Outside an array it submits the array (resources from the grid; partition and account from
# SBATCH_PARTITION / SBATCH_ACCOUNT, which sbatch reads itself) and exits. As an array element it
# resolves its run from SLURM_ARRAY_TASK_ID, skips it when results.json exists, trains with srun and
# the deepspeed launcher on the GPUs it was given (CPU ranks when none), on as many nodes as the grid
# asks (slurm/job.sh: rendezvous on the first), and requeues itself when preempted (SIGUSR1 before the
# time limit, or a scontrol/scheduler preemption: checkpoint, requeue, resume) or when it loses a rank
# or a node after checkpointing. Extra arguments after GRID go to every run's launch/train.py.
#SBATCH --requeue
#SBATCH --open-mode=append
set -euo pipefail
cd "${DISTGEM_HOME:-$PWD}"    # SLURM_SUBMIT_DIR is where sbatch ran; submit from the checkout
GRID="${1:-${DISTGEM_GRID:-configs/sweep.yaml}}"
shift || true
source scripts/setup.sh

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    size="$(distgem sweep size "$GRID")"
    array="0-$((size - 1))"
    if [ -n "${DISTGEM_SUMMARY:-}" ]; then  # runs kept in a report's runs.jsonl are not run again
        array="$(distgem sweep todo "$GRID" --summary $DISTGEM_SUMMARY)"
        [ -n "$array" ] || { echo "every run of $GRID is finished or kept in $DISTGEM_SUMMARY"; exit 0; }
    fi
    logs="$(distgem sweep logs "$GRID")"
    mkdir -p "$logs"                 # sbatch cannot open --output in a missing directory
    read -r -a options <<< "$(distgem sweep sbatch-args "$GRID")"
    job="$(sbatch --parsable --array="$array${DISTGEM_ARRAY_LIMIT:+%$DISTGEM_ARRAY_LIMIT}" "${options[@]}" \
        --output="$logs/%A_%a.out" --export=ALL,DISTGEM_HOME="$PWD" "$0" "$GRID" "$@")"
    echo "submitted array $job: elements $array of the $size runs of $GRID (logs in $logs/)"
    exit 0
fi

eval "$(distgem sweep resolve "$GRID" "$SLURM_ARRAY_TASK_ID")"
if [ -f "$RUN_DIR/results.json" ]; then
    echo "[$RUN_ID] finished already: skipping"
    exit 0
fi
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "${DS_ACCELERATOR:-}" != cpu ]; then
    IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
    RANKS_PER_NODE="${#gpus[@]}"
else
    export DS_ACCELERATOR=cpu
fi
source slurm/job.sh
rendezvous
echo "[$RUN_ID] array ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname): $RANKS_PER_NODE ranks per node, ${SLURM_NNODES:-1} node(s)"
run_step "$RUN_ID" "$RUN_DIR" "$RANKS_PER_NODE" "${RUN_ARGS[@]}" --resume "$@"
