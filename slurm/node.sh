#!/usr/bin/env bash
# One node's share of a run (started by srun, one task per node): the deepspeed launcher with this
# node's ranks. Slurm's warning signal (USR1/TERM) reaches this script; it is forwarded to the
# training ranks, which checkpoint at the next step boundary and exit for a requeue.
# Usage: node.sh RANKS_PER_NODE launch/train.py ARGS...
# On several nodes MASTER_ADDR and MASTER_PORT come from the batch script (slurm/job.sh: rendezvous).
set -uo pipefail
ranks="$1"; shift
nodes="${SLURM_NNODES:-1}"
if [ "$nodes" -gt 1 ]; then
    : "${MASTER_ADDR:?is not set: start node.sh from slurm/train.sbatch or slurm/sweep.sh}" "${MASTER_PORT:?is not set}"
    hostfile="$(mktemp)"
    trap 'rm -f "$hostfile"' EXIT
    scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=$ranks/" > "$hostfile"
    # gloo binds to the address this host's name resolves to: where that is loopback (Debian's 127.0.1.1 line)
    # the other nodes cannot reach it. Bind it to the interface that holds or routes to MASTER_ADDR instead.
    if [ -z "${GLOO_SOCKET_IFNAME:-}" ] && command -v ip >/dev/null 2>&1; then
        dev="$(ip -o addr show to "$MASTER_ADDR" 2>/dev/null | awk '{print $2; exit}')"
        [ -n "$dev" ] || dev="$(ip -o route get "$MASTER_ADDR" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')"
        [ -z "$dev" ] || export GLOO_SOCKET_IFNAME="$dev"
    fi
    launcher=(deepspeed --hostfile "$hostfile" --no_ssh --node_rank "$SLURM_NODEID"
              --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
else
    launcher=(deepspeed --num_gpus "$ranks" --master_port "${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}")
fi
echo "[node.sh] $(hostname): node $((${SLURM_NODEID:-0} + 1)) of $nodes, $ranks rank(s)" \
     "${GLOO_SOCKET_IFNAME:+(gloo on $GLOO_SOCKET_IFNAME)}"
# Slurm delivers a step's signals to every process of the step (proctrack), the launchers included: USR1 would
# kill them (its default action) and orphan the ranks before they checkpoint. The launchers ignore it; the ranks
# install their own handler (an ignored signal stays ignored across exec until a program handles it).
( trap '' USR1; exec "${launcher[@]}" "$@" ) &
pid=$!
descendants() { local child; for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done; }
forward() {  # the training ranks only: the launcher processes in between would just die of USR1
    local p cmd sent=""
    for p in $(descendants "$pid"); do
        cmd="$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" || continue
        case "$cmd" in
            *deepspeed.launcher*|*bin/deepspeed*) ;;
            *launch/train.py*) kill "-$1" "$p" 2>/dev/null && sent+=" $p" ;;
        esac
    done
    echo "[node.sh] $(hostname): SIG$1 to rank process(es)${sent:- (none)}"
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid"
    code=$?
done
exit "${code:-0}"
