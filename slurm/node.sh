#!/usr/bin/env bash
# One node's share of a run (started by srun, one task per node): the deepspeed launcher with this
# node's ranks. Slurm's warning signal (USR1/TERM) reaches this script; it is forwarded to the
# training ranks, which checkpoint at the next step boundary and exit for a requeue.
# Usage: node.sh RANKS_PER_NODE launch/train.py ARGS...
set -uo pipefail
ranks="$1"; shift
nodes="${SLURM_NNODES:-1}"
if [ "$nodes" -gt 1 ]; then
    head="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
    hostfile="$(mktemp)"
    scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=$ranks/" > "$hostfile"
    launcher=(deepspeed --hostfile "$hostfile" --no_ssh --node_rank "$SLURM_NODEID"
              --master_addr "$head" --master_port "${MASTER_PORT:-29500}")
else
    launcher=(deepspeed --num_gpus "$ranks" --master_port "${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}")
fi
"${launcher[@]}" "$@" &
pid=$!
descendants() { local child; for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done; }
forward() {  # the training ranks only: the launcher processes in between would just die of USR1
    local p cmd
    for p in $(descendants "$pid"); do
        cmd="$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" || continue
        case "$cmd" in *deepspeed.launcher*|*bin/deepspeed*) ;; *launch/train.py*) kill "-$1" "$p" 2>/dev/null || true ;; esac
    done
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid"
    code=$?
done
exit "${code:-0}"
