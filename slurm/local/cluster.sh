#!/usr/bin/env bash
# A real Slurm (22.05, Debian 12) on one machine for tests and CI, everything under one root directory:
# one node (`localhost`), or N nodes (`node1`..`nodeN`), each a slurmd in its own network, UTS and mount
# namespace with its own host name and an address on a bridge this script creates (no route off the
# machine), so that ranks on different nodes talk over TCP between namespaces as across hosts.
#
#   slurm/local/cluster.sh up [--nodes N]   install if needed, (re)start munged + slurmctld + slurmd(s),
#                                           wait for idle nodes
#   slurm/local/cluster.sh down      cancel jobs, stop the daemons, kill orphaned job processes, remove the
#                                    namespaces (idempotent)
#   slurm/local/cluster.sh status    sinfo / squeue summary
#   eval "$(slurm/local/cluster.sh env)"   SLURM_CONF etc. for sbatch/srun/squeue/scontrol
#   slurm/local/cluster.sh node-down NAME   N nodes: the node dies (link cut, its slurmd and processes SIGKILLed)
#   slurm/local/cluster.sh node-up NAME     N nodes: the node comes back (link up, slurmd restarted, waits until usable)
#   slurm/local/cluster.sh pids NAME        N nodes: the processes running on the node (in its network namespace)
#   slurm/local/cluster.sh exec NAME CMD..  N nodes: run CMD on the node (its network, UTS and mount namespaces)
#
# Environment knobs:
#   DISTGEM_SLURM_ROOT   root dir (default /tmp/distgem-slurm): conf, munge, state, spool, logs, pids, fake GPUs
#   DISTGEM_SLURM_NODES  number of nodes when `up` gets no --nodes (default 1)
#   SLURM_NET_PREFIX     N nodes: the /24 the nodes live on, e.g. 10.77.3 (default 10.77.K, K from a hash of the root)
#   SLURMD_TIMEOUT       N nodes: seconds of silence after which slurmctld declares a node DOWN (default 15)
#   SLURM_CRED_EXPIRE    credential lifetime, also how long a requeued job waits before it may run again (default 10)
#   SLURM_NODE_CPUS      CPUs each node advertises (default: the real count from `slurmd -C`)
#   SLURM_FAKE_GPUS      number of fake GPUs per node (symlinks to /dev/null; default 2)
#   SLURM_FAKE_GPU_TYPE  optional GPU type (e.g. a100) so typed requests (gpu:a100:1) work
#   SLURM_CTLD_PORT, SLURMD_PORT   ports (default 6817, 6818)
#
# Must run as root. Pitfalls it handles are documented in docs/SLURM.md ("Local Slurm for tests");
# numbers in comments refer to its list.
set -euo pipefail

ROOT="${DISTGEM_SLURM_ROOT:-/tmp/distgem-slurm}"
ROOT="${ROOT%/}"
CONF_DIR="$ROOT/etc"
CONF="$CONF_DIR/slurm.conf"
MUNGE_KEY_DIR="$ROOT/munge/etc"
MUNGE_RUN_DIR="$ROOT/munge/run"
MUNGE_SOCKET="$MUNGE_RUN_DIR/munge.socket.2"
STATE_DIR="$ROOT/state"
SPOOL_DIR="$ROOT/spool"
LOG_DIR="$ROOT/log"
PID_DIR="$ROOT/run"
GPU_DIR="$ROOT/fakegpu"
NODE=localhost
NODES_FILE="$ROOT/nodes"  # how many nodes `up` started: down/status/env/node-* read it
NNODES=1                  # set by `up --nodes N` or read from NODES_FILE (load_nodes)
CTLD_PORT="${SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURMD_PORT:-6818}"
NGPUS="${SLURM_FAKE_GPUS:-2}"
GPU_TYPE="${SLURM_FAKE_GPU_TYPE:-}"
# Markers in /proc/PID/environ: daemons (and what they fork) carry DAEMON_MARK, every job task
# carries JOB_MARK (injected by the TaskProlog, so even --export=NONE jobs have it). They are not
# DISTGEM_SLURM_ROOT on purpose: a client shell that eval'd `env` has that one, and `down` must not
# kill the shell (or pytest) that called it.
DAEMON_MARK="DISTGEM_SLURM_DAEMON_OF=$ROOT"
JOB_MARK="DISTGEM_SLURM_JOB_OF=$ROOT"
UP_TIMEOUT=30
STOPPED=()  # pids stopped or killed by this invocation
# N nodes: names of namespaces and links carry a short hash of the root, so that two roots can be up at once.
TAG="dg$(printf %s "$ROOT" | md5sum | cut -c1-4)"
NET_PREFIX="${SLURM_NET_PREFIX:-10.77.$((16#${TAG:2:2}))}"
BRIDGE="${TAG}br"
CTL_ADDR="$NET_PREFIX.1"
HOST_ADDR="$NET_PREFIX.254"  # the machine itself on the bridge: the submit host that sbatch/srun run on
SLURMD_TIMEOUT="${SLURMD_TIMEOUT:-15}"
# A requeued job waits cred_expire seconds before it may start again (Slurm's default: 120).
CRED_EXPIRE="${SLURM_CRED_EXPIRE:-10}"

log() { echo "[slurm-local] $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes: alive, stop_pid, marked_pids, kill_until_gone, kill_orphans -------------------------
# shellcheck source=slurm/local/processes.sh
source "$(dirname "${BASH_SOURCE[0]}")/processes.sh"

# N nodes: namespaces, the bridge, and node-down/node-up/pids/exec
# shellcheck source=slurm/local/nodes.sh
source "$(dirname "${BASH_SOURCE[0]}")/nodes.sh"

# --- install -------------------------------------------------------------------------------------
ensure_installed() {
    local b missing=0
    for b in slurmctld slurmd sbatch munged; do command -v "$b" >/dev/null 2>&1 || missing=1; done
    [ "$missing" = 1 ] || return 0
    [ "$(id -u)" = 0 ] || { log "error: Slurm is not installed and installing it needs root"; exit 77; }
    command -v apt-get >/dev/null 2>&1 || { log "error: Slurm is not installed and there is no apt-get"; exit 77; }
    log "installing slurmctld slurmd slurm-client munge (apt)"
    # The packages' service starts fail here (policy-rc.d / no systemd: pitfall 2); harmless.
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=120 update -qq >"$ROOT/apt.log" 2>&1 \
        && apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge >>"$ROOT/apt.log" 2>&1 \
        || { tail -n 20 "$ROOT/apt.log" >&2; log "error: apt-get could not install Slurm"; exit 77; }
    hash -r
    for b in slurmctld slurmd sbatch munged; do
        command -v "$b" >/dev/null 2>&1 || { log "error: $b still missing after install"; exit 77; }
    done
}

# --- config --------------------------------------------------------------------------------------
node_topology() {
    # pitfall 6: copy the topology slurmd detects, or the node is reconfigured/drained.
    local line cpus real_cpus
    line="$(slurmd -C 2>/dev/null | head -n 1)"
    [ -n "$line" ] || die "slurmd -C printed nothing"
    line="$(tr ' ' '\n' <<<"$line" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')"
    cpus="${SLURM_NODE_CPUS:-}"
    real_cpus="$(tr ' ' '\n' <<<"$line" | sed -n 's/^CPUs=//p')"
    if [ -n "$cpus" ] && [ "$cpus" != "$real_cpus" ]; then
        [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "SLURM_NODE_CPUS must be a positive integer"
        local mem
        mem="$(tr ' ' '\n' <<<"$line" | grep '^RealMemory=' || true)"
        # One socket of N single-thread cores; SlurmdParameters=config_overrides keeps the node up.
        line="CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 $mem"
    fi
    echo "$line"
}

write_config() {
    local topo gres_node="" gres_type="" last files nodes ctl_host slurmd_files node_lines="" name addr timeout=300
    topo="$(node_topology)"
    mkdir -p "$CONF_DIR" "$GPU_DIR"
    if multi; then
        write_hosts
        # Each slurmd finds its own spool, pid and log file through %n (its node name, from -N).
        nodes="node[1-$NNODES]"
        ctl_host="ctl($CTL_ADDR)"
        slurmd_files="SlurmdSpoolDir=$SPOOL_DIR/%n
SlurmdPidFile=$PID_DIR/slurmd-%n.pid
SlurmdLogFile=$LOG_DIR/slurmd-%n.log"
        timeout="$SLURMD_TIMEOUT"  # a node that stops answering is DOWN (and its jobs requeued) after this
    else
        nodes="$NODE"
        ctl_host="$NODE(127.0.0.1)"
        slurmd_files="SlurmdSpoolDir=$SPOOL_DIR/slurmd
SlurmdPidFile=$PID_DIR/slurmd.pid
SlurmdLogFile=$LOG_DIR/slurmd.log"
    fi
    mkdir -p "$CONF_DIR" "$GPU_DIR"
    rm -f "$GPU_DIR"/nvidia*
    if [ "$NGPUS" -gt 0 ]; then
        # GPUs: File= must be character devices; symlinks to /dev/null work (notes, GPU section).
        for ((i = 0; i < NGPUS; i++)); do ln -s /dev/null "$GPU_DIR/nvidia$i"; done
        last=$((NGPUS - 1))
        [ -z "$GPU_TYPE" ] || gres_type="Type=$GPU_TYPE "
        gres_node=" Gres=gpu${GPU_TYPE:+:$GPU_TYPE}:$NGPUS"
        if [ "$last" = 0 ]; then files="$GPU_DIR/nvidia0"; else files="$GPU_DIR/nvidia[0-$last]"; fi
        echo "AutoDetect=off
NodeName=$nodes Name=gpu ${gres_type}File=$files" > "$CONF_DIR/gres.conf"
    else
        echo "AutoDetect=off" > "$CONF_DIR/gres.conf"
    fi
    # pitfall 3: slurmd always loads a cgroup plugin; name v1 explicitly (no autodetection).
    echo "CgroupPlugin=cgroup/v1
CgroupAutomount=no" > "$CONF_DIR/cgroup.conf"
    # Every task gets the orphan marker (pitfall 11), also under --export=NONE.
    cat > "$CONF_DIR/task_prolog.sh" <<EOF
#!/bin/sh
echo "export $JOB_MARK"
EOF
    chmod 0755 "$CONF_DIR/task_prolog.sh"
    for name in $(node_names); do
        if multi; then addr="$(node_addr "$name")"; else addr=127.0.0.1; fi
        node_lines+="NodeName=$name NodeAddr=$addr ${topo}${gres_node} State=UNKNOWN"$'\n'
    done
    cat > "$CONF" <<EOF
# Generated by slurm/local/cluster.sh: $NNODES-node test cluster under $ROOT
ClusterName=distgem-local
SlurmctldHost=$ctl_host
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE
StateSaveLocation=$STATE_DIR
SlurmctldPidFile=$PID_DIR/slurmctld.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
$slurmd_files
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$CONF_DIR/task_prolog.sh
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1
GresTypes=gpu
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
MinJobAge=600
ReturnToService=2
InactiveLimit=0
KillWait=5
SlurmdTimeout=$timeout
Waittime=0
${node_lines}PartitionName=debug Nodes=$nodes Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

# --- daemons -------------------------------------------------------------------------------------
# start NAME CMD...: detached from our stdio (pitfall 16), in its own session, with the marker.
start() {
    local name="$1"; shift
    env "$DAEMON_MARK" SLURM_CONF="$CONF" setsid "$@" </dev/null >>"$LOG_DIR/$name.stdio" 2>&1 9>&-
}

start_munged() {
    # pitfall 1: key dir 0700, key 0600, socket dir o+x.
    mkdir -p "$MUNGE_KEY_DIR" "$MUNGE_RUN_DIR" "$ROOT/munge/lib"
    chmod 0700 "$MUNGE_KEY_DIR" "$ROOT/munge/lib"
    chmod 0755 "$ROOT/munge" "$MUNGE_RUN_DIR"
    if [ ! -s "$MUNGE_KEY_DIR/munge.key" ]; then
        (umask 077; dd if=/dev/urandom of="$MUNGE_KEY_DIR/munge.key" bs=1024 count=1 status=none)
    fi
    chmod 0600 "$MUNGE_KEY_DIR/munge.key"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    start munged munged --key-file="$MUNGE_KEY_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$PID_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$ROOT/munge/lib/munged.seed"
    local i
    for i in $(seq 100); do [ -S "$MUNGE_SOCKET" ] && return 0; sleep 0.1; done
    fail_up "munged did not create $MUNGE_SOCKET"
}

stop_daemons() {
    local f
    for f in "$PID_DIR"/slurmd*.pid; do
        [ -e "$f" ] && stop_pid "$(pid_from "$f")" "$(basename "$f" .pid)"
    done
    stop_pid "$(pid_from "$PID_DIR/slurmctld.pid")" slurmctld
    stop_pid "$(pid_from "$PID_DIR/munged.pid")" munged
    rm -f "$PID_DIR"/*.pid
}

show_logs() {
    local f
    for f in "$LOG_DIR"/*; do
        [ -s "$f" ] || continue
        echo "----- $f (tail)" >&2
        tail -n 25 "$f" >&2
    done
}

fail_up() {
    log "error: $*"
    show_logs
    sinfo_cmd -R 2>/dev/null >&2 || true
    stop_all
    exit 1
}

sinfo_cmd() { SLURM_CONF="$CONF" timeout 5 sinfo "$@"; }
squeue_cmd() { SLURM_CONF="$CONF" timeout 10 squeue "$@"; }

cancel_jobs() {
    alive "$(pid_from "$PID_DIR/slurmctld.pid")" || return 0
    local ids i
    ids="$(squeue_cmd -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)"
    [ -n "${ids// /}" ] || return 0
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    SLURM_CONF="$CONF" timeout 10 scancel $ids 2>/dev/null || true
    for i in $(seq 50); do
        [ -z "$(squeue_cmd -h -o %A 2>/dev/null || echo x)" ] && return 0
        sleep 0.2
    done
}

stop_all() {
    cancel_jobs
    stop_daemons
    kill_orphans
    net_down
}

# node_state NAME: its state in sinfo (idle, alloc, mix, down*, drain, ...), empty when unknown.
node_state() { sinfo_cmd -h -N -n "$1" -o %t 2>/dev/null | head -n 1 || true; }

# wait_usable NAME...: until every node is idle/mix/alloc; fails `up` on drain/inval/fail or after UP_TIMEOUT.
wait_usable() {
    local started=$SECONDS name state d
    for name in "$@"; do
        while :; do
            state="$(node_state "$name")"
            case "$state" in
                idle|mix|alloc) break ;;
                *drain*|*inval*|*fail*) fail_up "node $name is '$state'" ;;
            esac
            if [ $((SECONDS - started)) -ge 3 ]; then  # pid files exist by then
                for d in munged slurmctld; do
                    alive "$(pid_from "$PID_DIR/$d.pid")" || fail_up "$d is not running"
                done
            fi
            [ $((SECONDS - started)) -lt "$UP_TIMEOUT" ] || fail_up "node $name not idle after ${UP_TIMEOUT}s (state '$state')"
            sleep 0.1
        done
    done
    echo "$state"
}

start_slurmd() {
    local name="$1"
    if multi; then
        in_host "$name"
        start "slurmd-$name" "${IN_HOST[@]}" slurmd -f "$CONF" -N "$name"
    else
        start slurmd slurmd -f "$CONF" -N "$name"
    fi
}

# --- commands ------------------------------------------------------------------------------------
cmd_up() {
    local t0 name state
    t0="$(date +%s.%N)"
    chmod 0755 "$ROOT"
    ensure_installed
    load_nodes  # what runs now, so that stop_all finds it
    # pitfall 13: never start a second slurmd with the same pidfile: stop everything first.
    stop_all
    NNODES="$WANT_NODES"
    # pitfall 5: saved DRAIN/INVALID state comes back; start from empty state every time.
    rm -rf "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"
    mkdir -p "$STATE_DIR" "$SPOOL_DIR/slurmd" "$LOG_DIR" "$PID_DIR"
    echo "$NNODES" > "$NODES_FILE"
    write_config
    multi && net_up
    start_munged
    if multi; then
        in_host ctl
        start slurmctld "${IN_HOST[@]}" slurmctld -f "$CONF" -c -i
    else
        start slurmctld slurmctld -f "$CONF" -c -i
    fi
    for name in $(node_names); do start_slurmd "$name"; done
    # shellcheck disable=SC2046
    state="$(wait_usable $(node_names))"
    log "up: $NNODES node(s) $(node_names | tr '\n' ' ')$state" \
        "($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s); root $ROOT"
    multi && log "$(network)"
    log 'clients: eval "$('"$0"' env)"'
}

cmd_down() {
    load_nodes
    [ -d "$ROOT" ] || { kill_orphans; net_down; return 0; }
    stop_all
    wait_reaped
    rm -f "$NODES_FILE"
    log "down ($ROOT)"
}

cmd_env() {
    load_nodes
    printf 'export SLURM_CONF=%q\n' "$CONF"
    printf 'export DISTGEM_SLURM_ROOT=%q\n' "$ROOT"
    printf 'export DISTGEM_SLURM_NODES=%q\n' "$NNODES"
}

cmd_status() {
    local f pids=""
    load_nodes
    if ! alive "$(pid_from "$PID_DIR/slurmctld.pid")"; then
        echo "slurmctld: not running (root $ROOT)"
    else
        for f in "$PID_DIR"/slurmd*.pid; do [ -e "$f" ] && pids+="$(basename "$f" .pid): $(pid_from "$f")  "; done
        echo "slurmctld: $(pid_from "$PID_DIR/slurmctld.pid")  ${pids}munged: $(pid_from "$PID_DIR/munged.pid")" \
             " (root $ROOT)"
        multi && network
        sinfo_cmd -N -o '%N %P %t %C %G' || true
        squeue_cmd -o '%.10i %.9P %.20j %.8T %.10M %R' || true
    fi
}

usage() {
    echo "usage: $0 up [--nodes N] | down | status | env | node-down NAME | node-up NAME | pids NAME | exec NAME CMD..." >&2
    exit 2
}

locked() {
    [ "$(id -u)" = 0 ] || { log "error: the local cluster runs its daemons as root; run as root"; exit 77; }
    mkdir -p "$ROOT"
    # One up/down/node-down/node-up at a time per root.
    exec 9>"$ROOT/.lock"
    flock -w 120 9 || die "another up/down holds $ROOT/.lock"
    "$@"
}

main() {
    local cmd="${1:-}"
    shift || true
    case "$cmd" in
        up)
            WANT_NODES="${DISTGEM_SLURM_NODES:-1}"
            while [ "$#" -gt 0 ]; do
                case "$1" in
                    --nodes) WANT_NODES="${2:-}"; shift 2 || usage ;;
                    --nodes=*) WANT_NODES="${1#--nodes=}"; shift ;;
                    *) usage ;;
                esac
            done
            [[ "$WANT_NODES" =~ ^[1-9]$ ]] || die "--nodes must be 1 to 9 (got '$WANT_NODES')"
            locked cmd_up
            ;;
        down) [ "$#" = 0 ] || usage; locked cmd_down ;;
        node-down|node-up) [ "$#" = 1 ] || usage; locked "cmd_${cmd/-/_}" "$1" ;;
        pids) [ "$#" = 1 ] || usage; cmd_pids "$1" ;;
        exec) [ "$#" -ge 1 ] || usage; cmd_exec "$@" ;;
        env) cmd_env ;;
        status) cmd_status ;;
        *) usage ;;
    esac
}

main "$@"
