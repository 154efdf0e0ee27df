# Sourced by slurm/local/cluster.sh: the N-node cluster's namespaces and bridge, and the commands that act on one
# node (node-down, node-up, pids, exec). Uses cluster.sh's variables (ROOT, TAG, NET_PREFIX, ...) and helpers.

# --- N nodes: namespaces and the bridge ----------------------------------------------------------
load_nodes() { NNODES="$(cat "$NODES_FILE" 2>/dev/null || echo 1)"; }
multi() { [ "$NNODES" -gt 1 ]; }
node_names() { if multi; then seq -f 'node%g' 1 "$NNODES"; else echo "$NODE"; fi; }
node_addr() { echo "$NET_PREFIX.$((10 + ${1#node}))"; }
netns_of() { echo "$TAG-$1"; }  # ctl, node1, ...: a network namespace ...
link_of() { echo "$TAG-$1"; }   # ... and the host's end of its veth pair, on the bridge

# our_netns: this root's namespaces that exist (also after a crashed `up` or an `up` with another N).
our_netns() { ip netns list 2>/dev/null | awk -v p="$TAG-" 'index($1, p) == 1 {print $1}'; }

# netns_pids NS: live processes in network namespace NS (the pid namespace is shared: /proc shows them all).
netns_pids() {
    local want pid
    want="$(stat -L -c %i "/run/netns/$1" 2>/dev/null)" || return 0
    { stat -L -c '%i %n' /proc/[0-9]*/ns/net 2>/dev/null || true; } |
        awk -v w="$want" '$1 == w {split($2, a, "/"); print a[3]}' |
        while read -r pid; do if alive "$pid"; then echo "$pid"; fi; done
}

kill_netns_pids() {
    kill_until_gone "processes in $1" netns_pids "$1"
}

# net_up: a bridge with the machine on .254, and per host (ctl, node1..N) a network namespace with one veth
# end on the bridge and the other inside as eth0 at .1 (ctl) or .1K (nodeK). No default route anywhere:
# the namespaces reach the /24 and their own loopback only.
net_up() {
    local name ns link addr
    command -v ip >/dev/null 2>&1 || die "N nodes need iproute2 (ip)"
    if ip -o -4 addr show | awk '{print $4}' | grep -q "^${NET_PREFIX//./\\.}\\."; then
        die "$NET_PREFIX.0/24 is already in use on this machine (ip -4 addr); set SLURM_NET_PREFIX"
    fi
    if ! ip netns add "$TAG-probe" 2>/dev/null; then
        log "error: cannot create network namespaces here (ip netns add failed: no CAP_NET_ADMIN?); N nodes need them"
        exit 77
    fi
    ip netns del "$TAG-probe"
    ip link add "$BRIDGE" type bridge
    ip addr add "$HOST_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for name in ctl $(node_names); do
        ns="$(netns_of "$name")"
        link="$(link_of "$name")"
        if [ "$name" = ctl ]; then addr="$CTL_ADDR"; else addr="$(node_addr "$name")"; fi
        ip netns add "$ns"
        ip link add "$link" type veth peer name eth0 netns "$ns"
        ip link set "$link" master "$BRIDGE" up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

# net_down: kill what runs in this root's namespaces, remove them, their links and the bridge.
net_down() {
    local ns link
    for ns in $(our_netns); do kill_netns_pids "$ns"; done
    for link in $(ip -o link show 2>/dev/null |
                  awk -F': ' -v p="$TAG-" 'index($2, p) == 1 {sub(/@.*/, "", $2); print $2}'); do
        ip link del "$link" 2>/dev/null || true
    done
    for ns in $(our_netns); do ip netns del "$ns" 2>/dev/null || true; done
    ip link del "$BRIDGE" 2>/dev/null || true
}

# in_host NAME: the command prefix that runs a daemon as host NAME (ctl, nodeK): in NAME's network namespace,
# in a new UTS namespace with NAME as host name and a new mount namespace with the cluster's hosts file on
# /etc/hosts (private to it). What the daemon forks (slurmstepd, the job's tasks) inherits all three.
in_host() {
    IN_HOST=(nsenter "--net=/run/netns/$(netns_of "$1")" unshare --uts --mount --propagation private
             sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"' in-host "$1" "$CONF_DIR/hosts")
}

network() {
    local name
    printf 'network %s.0/24: ctl %s, this machine %s,' "$NET_PREFIX" "$CTL_ADDR" "$HOST_ADDR"
    for name in $(node_names); do printf ' %s %s' "$name" "$(node_addr "$name")"; done
    echo
}

write_hosts() {
    local name
    {
        echo "127.0.0.1 localhost"
        echo "$CTL_ADDR ctl"
        echo "$HOST_ADDR $(hostname)"
        for name in $(node_names); do echo "$(node_addr "$name") $name"; done
    } > "$CONF_DIR/hosts"
}

# --- commands on one node -----------------------------------------------------------------------
# check_node NAME: NAME is a node of a running N-node cluster, or exit 2 with one line.
check_node() {
    load_nodes
    multi || die "node-down/node-up/pids/exec need a cluster started with 'up --nodes N' (N >= 2) under $ROOT"
    node_names | grep -qx -- "$1" || die "no node '$1' (nodes: $(node_names | tr '\n' ' '))"
    [ -e "/run/netns/$(netns_of "$1")" ] || die "node $1 has no network namespace: is the cluster up?"
}

# node-down NAME: the node dies as when it loses power. Its link goes first, so no FIN or RST reaches the
# other nodes: their ranks see silence, not a closed connection. Then its slurmd and every process in it die.
cmd_node_down() {
    local name="$1" pid
    check_node "$name"
    ip link set "$(link_of "$name")" down
    pid="$(pid_from "$PID_DIR/slurmd-$name.pid")"
    if alive "$pid"; then STOPPED+=("$pid"); kill -KILL "$pid" 2>/dev/null || true; fi
    kill_netns_pids "$(netns_of "$name")"
    rm -f "$PID_DIR/slurmd-$name.pid"
    wait_reaped
    log "$name down: link cut, slurmd and its processes killed"
}

# node-up NAME: link back, a new slurmd (new UTS and mount namespace, same network namespace), and wait until
# slurmctld has it back in service (ReturnToService=2: a DOWN node returns when it registers).
cmd_node_up() {
    local name="$1" state
    check_node "$name"
    ! alive "$(pid_from "$PID_DIR/slurmd-$name.pid")" || die "node $name is up already"
    ip link set "$(link_of "$name")" up
    start_slurmd "$name"
    state="$(wait_usable "$name")"
    log "$name up ($state)"
}

cmd_pids() {
    check_node "$1"
    netns_pids "$(netns_of "$1")"
}

cmd_exec() {
    local name="$1" pid
    shift
    check_node "$name"
    [ "$#" -gt 0 ] || die "usage: $0 exec NAME CMD..."
    pid="$(pid_from "$PID_DIR/slurmd-$name.pid")"
    if alive "$pid"; then
        exec nsenter -t "$pid" --net --uts --mount "$@"
    fi
    exec nsenter "--net=/run/netns/$(netns_of "$name")" "$@"  # node down: its network only
}
