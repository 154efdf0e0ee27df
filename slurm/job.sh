# Sourced by slurm/train.sbatch and slurm/sweep.sh in their batch step, which Slurm runs on the job's first
# node: the rendezvous of the job's ranks, and the training step (srun, the warning signal, requeues).

# rendezvous: export MASTER_ADDR and MASTER_PORT for every rank of the job (srun passes them to each node).
#   MASTER_ADDR: the head node's address (the first of `scontrol show hostnames`): its NodeAddr in Slurm,
#     else what its name resolves to. On several nodes never loopback: the other nodes would dial themselves.
#   MASTER_PORT: 20000 + job id mod 10000 (distinct for jobs that run at once on one head node, below the
#     ephemeral range), moved up past ports already listening on the head node.
# Values set by the user are kept (and checked).
rendezvous() {
    local head addr port
    head="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
    if [ -z "${MASTER_ADDR:-}" ]; then
        addr="$(scontrol show node -o "$head" | tr ' ' '\n' | sed -n 's/^NodeAddr=//p')"
        if [ -z "$addr" ] || [ "$addr" = "$head" ]; then
            addr="$(getent ahostsv4 "$head" | awk 'NR == 1 {print $1}')"
        fi
        MASTER_ADDR="${addr:-$head}"
    fi
    if [ "${SLURM_NNODES:-1}" -gt 1 ]; then
        case "$MASTER_ADDR" in
            127.*|localhost|::1)
                echo "error: the head node $head has the loopback address $MASTER_ADDR, which the other nodes cannot" \
                     "reach: set its NodeAddr in slurm.conf, fix its /etc/hosts, or export MASTER_ADDR" >&2
                return 1 ;;
        esac
    fi
    if [ -n "${MASTER_PORT:-}" ]; then
        port_free "$MASTER_PORT" || {
            echo "error: MASTER_PORT=$MASTER_PORT is in use on $head (another job?); unset it to get a free one" >&2
            return 1; }
    else
        port=$((20000 + ${SLURM_JOB_ID:-0} % 10000))
        while ! port_free "$port"; do port=$((port + 1)); done
        MASTER_PORT="$port"
    fi
    export MASTER_ADDR MASTER_PORT
}

# port_free PORT: nothing listens on TCP PORT here (true when `ss` is missing: nothing to check with).
port_free() {
    command -v ss >/dev/null 2>&1 || return 0
    [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# run_step LABEL RUN_DIR RANKS_PER_NODE TRAIN_ARGS...: srun starts slurm/node.sh once per node, this shell
# forwards the warning signal (USR1/TERM: `--signal=B:USR1@N`, or `scancel --signal=USR1 --batch`) to it, and
# then the job is requeued when the run
#   - checkpointed for a preemption (RUN_DIR/PREEMPTED), or
#   - failed after checkpointing since this start (a rank or a node was lost): it resumes from that checkpoint.
# A failure without a new checkpoint, a configuration error (exit 2) or a diverged run (RUN_DIR/DIVERGED, exit 3)
# ends the job, so nothing loops forever.
# A node that stops answering is Slurm's own business: it ends the job (NODE_FAIL) and requeues it.
run_step() {
    local label="$1" run_dir="$2" ranks="$3" job step code=0 before after
    shift 3
    job="${SLURM_JOB_ID}"
    [ -z "${SLURM_ARRAY_JOB_ID:-}" ] || job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    before="$(cat "$run_dir/checkpoints/latest" 2>/dev/null || true)"
    echo "[$label] job $job (start $((${SLURM_RESTART_COUNT:-0} + 1))) on ${SLURM_JOB_NODELIST}:" \
         "$ranks rank(s) per node, master $MASTER_ADDR:$MASTER_PORT${before:+, resuming from $before}"
    srun --ntasks-per-node=1 --kill-on-bad-exit=1 slurm/node.sh "$ranks" launch/train.py "$@" &
    step=$!
    trap 'echo "[$label] SIGUSR1: the ranks checkpoint at the next step"; kill -USR1 "$step" 2>/dev/null || true' USR1
    trap 'echo "[$label] SIGTERM: the ranks checkpoint at the next step"; kill -USR1 "$step" 2>/dev/null || true' TERM
    while kill -0 "$step" 2>/dev/null; do
        if wait "$step"; then code=0; else code=$?; fi  # a trapped signal interrupts wait: wait again
    done
    trap - USR1 TERM
    if [ -f "$run_dir/PREEMPTED" ]; then
        echo "[$label] checkpointed at step $(cat "$run_dir/PREEMPTED"): requeueing"
        scontrol requeue "$job"
        exit 0
    fi
    [ "$code" != 0 ] || return 0
    if [ -f "$run_dir/DIVERGED" ]; then  # a diverged run would diverge again from its checkpoint: no requeue
        echo "[$label] error: the run diverged at step $(cat "$run_dir/DIVERGED") (non-finite losses or gradients;" \
             "$run_dir/results.json): not requeued" >&2
        return 3
    fi
    after="$(cat "$run_dir/checkpoints/latest" 2>/dev/null || true)"
    if [ "$code" != 2 ] && [ -n "$after" ] && [ "$after" != "$before" ]; then
        echo "[$label] training failed (exit $code) after checkpoint $after: requeueing to resume from it"
        scontrol requeue "$job"
        exit 0
    fi
    echo "[$label] error: training failed (exit $code) with no checkpoint since this start: not requeued" >&2
    return "$code"
}
