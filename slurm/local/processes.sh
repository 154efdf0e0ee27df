# Sourced by slurm/local/cluster.sh: finding and stopping this root's processes (daemons, job tasks, orphans),
# by pid file and by the markers in their environment. Uses cluster.sh's variables (ROOT, JOB_MARK, DAEMON_MARK,
# STOPPED) and log.

# alive PID: the process exists and is not a zombie (pitfall 12: PID 1 reaps late, kill -0 lies).
alive() {
    local pid="$1" key val _
    [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
    while read -r key val _; do
        [ "$key" = State: ] || continue
        case "$val" in Z|X) return 1 ;; *) return 0 ;; esac
    done < "/proc/$pid/status" 2>/dev/null
    return 1
}

pid_from() { [ -s "$1" ] && tr -dc '0-9' < "$1" || true; }

# has_marker PID: one of this root's markers (NAME=value) is in the process's initial environment.
has_marker() {
    grep -qzxF -e "$JOB_MARK" -e "$DAEMON_MARK" "/proc/$1/environ" 2>/dev/null
}

# stop_pid PID NAME: TERM, wait up to 5 s, then KILL; zombies count as stopped.
stop_pid() {
    local pid="$1" name="$2" i
    alive "$pid" || return 0
    STOPPED+=("$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
    log "$name ($pid) ignored SIGTERM; killing"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
    log "warning: $name ($pid) still alive"
}

# The process ids of this script and its ancestors: never killed by the sweep.
self_and_ancestors() {
    local pid=$$
    while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
        echo "$pid"
        pid="$(awk '/^PPid:/ {print $2; exit}' "/proc/$pid/status" 2>/dev/null || true)"
    done
    echo "${BASHPID:-}"
}

# daemon_of_root PID: the daemon belongs to this root: its command line names it, or its working
# directory or an open file is under it. slurmstepd blanks its environment and command line for
# its process title ("slurmstepd: [5.batch]") but keeps slurmd's cwd and log file.
daemon_of_root() {
    local link
    grep -qzF -- "$ROOT/" "/proc/$1/cmdline" 2>/dev/null && return 0
    for link in "/proc/$1/cwd" "/proc/$1"/fd/*; do
        case "$(readlink "$link" 2>/dev/null || true)" in "$ROOT"/*|"$ROOT") return 0 ;; esac
    done
    return 1
}

# marked_pids: live processes carrying one of this root's markers, or Slurm/munge daemons of this root
# (pitfall 11: slurmstepd and tasks outlive slurmd under PID 1).
marked_pids() {
    local keep p pid comm
    keep=" $(self_and_ancestors | tr '\n' ' ') "
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        case "$keep" in *" $pid "*) continue ;; esac
        alive "$pid" || continue
        if has_marker "$pid"; then
            echo "$pid"
            continue
        fi
        comm="$(cat "$p/comm" 2>/dev/null || true)"
        case "$comm" in
            slurmctld|slurmd|slurmstepd|munged|slurmscriptd) daemon_of_root "$pid" && echo "$pid" ;;
        esac
    done
}

# wait_reaped: give PID 1 (which reaps late here: pitfall 12) up to 5 s to reap what we stopped,
# so that `ps` shows no <defunct> daemons after `down`. Cosmetic: zombies hold no resources.
wait_reaped() {
    local i pid left
    for i in $(seq 50); do
        left=0
        for pid in "${STOPPED[@]}"; do
            [ -r "/proc/$pid/status" ] && ! alive "$pid" && left=1 && break
        done
        [ "$left" = 1 ] || return 0
        sleep 0.1
    done
}

# kill_until_gone WHAT LISTER [ARGS]: SIGKILL what `LISTER ARGS` prints (pids) until it prints nothing, at most 20
# rounds (PID 1 reaps late: a killed process lingers a moment); the pids are remembered in STOPPED
kill_until_gone() {
    local what="$1" round pids
    shift
    for round in $(seq 20); do
        pids="$("$@" | tr '\n' ' ')"
        [ -n "${pids// /}" ] || return 0
        [ "$round" -gt 1 ] || log "killing $what: $pids"
        # shellcheck disable=SC2206
        STOPPED+=($pids)
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.2
    done
    log "warning: $what still alive: $("$@" | tr '\n' ' ')"
}

kill_orphans() {
    kill_until_gone "leftover processes" marked_pids
}
