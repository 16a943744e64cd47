#!/usr/bin/env bash
# Make sure a Redis server, a PostgreSQL server and a three-node Redis Cluster
# are reachable on loopback before the test suite runs; install (apt-get) and
# start them if needed.
#
# Idempotent: services that already answer are left alone (never restarted,
# never flushed, no data is ever dropped). Prints one line per service. The only
# Redis nodes it ever resets or stops are cluster nodes it started itself (it
# records them under its own directory); a cluster port held by anything else
# is used only when it belongs to a healthy cluster of exactly those ports, and
# otherwise the script stops with an error naming the port.
#
# Environment:
#   REDIS_HOST (127.0.0.1)  REDIS_PORT (6379)
#   PGHOST     (127.0.0.1)  PGPORT     (5432)   -- user is always "postgres"
#   REDIS_CLUSTER_PORTS ("7101 7102 7103")  the cluster's nodes, on 127.0.0.1
#   SQLMODEL_CACHE_SERVICES_DIR (${TMPDIR:-/tmp}/sqlmodel-cache-services)
#              this script's own directory: the cluster nodes' data, logs and
#              pid files (REDIS_CLUSTER_DIR overrides the cluster part)
#   CI=true    allows relaxing pg_hba.conf of an already running local cluster
#              when password-less login fails (otherwise only done for a
#              cluster this script installed or started).
set -euo pipefail

REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
PG_HOST="${PGHOST:-127.0.0.1}"
PG_PORT="${PGPORT:-5432}"
PG_USER=postgres

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0

log() { printf '%s\n' "$*"; }
note() { printf 'services.sh: %s\n' "$*" >&2; }
die() {
    printf 'services.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

# Run a command as root (directly, or through sudo when not root).
as_root() {
    if [[ ${EUID} -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
    else
        die "need root privileges for: $* (not root and no sudo)"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    if [[ ${APT_UPDATED} -eq 0 ]]; then
        note "apt-get update"
        as_root apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    note "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
        || die "apt-get install $* failed"
}

is_local_host() {
    case "$1" in
        127.* | localhost | ::1 | /*) return 0 ;;
        *) return 1 ;;
    esac
}

# 0 if something accepts TCP connections on host:port.
tcp_open() {
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout 2 bash -c ': >"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# Wait up to $1 seconds for "${@:2}" to succeed (polling every 0.25 s).
wait_for() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 4; i++)); do
        "$@" && return 0
        sleep 0.25
    done
    "$@"
}

# ---------------------------------------------------------------- Redis ----

# 0 = answers PONG, 1 = port open but no PONG, 2 = nothing listening.
redis_probe() {
    local out=""
    if command -v redis-cli >/dev/null 2>&1; then
        out=$(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) || true
        [[ $out == PONG ]] && return 0
    else
        # shellcheck disable=SC2016  # expanded by the inner bash
        if timeout 3 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "PING\r\n" >&3
            IFS= read -r -t 2 line <&3 || exit 1
            [[ $line == "+PONG"* ]]' _ "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null; then
            return 0
        fi
    fi
    if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then return 1; fi
    return 2
}

redis_pong() { redis_probe; }

ensure_redis() {
    local rc=0 did=""
    redis_probe || rc=$?
    case $rc in
        0)
            log "redis: already running at ${REDIS_HOST}:${REDIS_PORT} (PONG)"
            return 0
            ;;
        1)
            die "redis: ${REDIS_HOST}:${REDIS_PORT} is open but does not answer PING with PONG" \
                "(password-protected or not Redis?); not touching it"
            ;;
    esac

    is_local_host "$REDIS_HOST" \
        || die "redis: ${REDIS_HOST}:${REDIS_PORT} unreachable and not a loopback host; cannot start it here"

    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
        command -v redis-server >/dev/null 2>&1 || die "redis: redis-server still missing after install"
        did="installed redis-server, "
    fi

    # apt's postinst may already have started a server on the default port.
    if redis_pong; then
        log "redis: ${did}running at ${REDIS_HOST}:${REDIS_PORT} (PONG)"
        return 0
    fi

    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
        || die "redis: redis-server failed to start (see /var/log/redis/ci.log)"

    if ! wait_for 10 redis_pong; then
        tail -n 20 /var/log/redis/ci.log >&2 2>/dev/null || true
        die "redis: started redis-server but ${REDIS_HOST}:${REDIS_PORT} did not answer PONG within 10 s" \
            "(log: /var/log/redis/ci.log)"
    fi
    log "redis: ${did}started redis-server at ${REDIS_HOST}:${REDIS_PORT} (PONG)"
}

# ----------------------------------------------------------- PostgreSQL ----

# Exit status like pg_isready: 0 accepting, 1 rejecting (e.g. starting up),
# 2 no response.
pg_probe() {
    if command -v pg_isready >/dev/null 2>&1; then
        local rc=0
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3 >/dev/null 2>&1 || rc=$?
        [[ $rc -eq 3 ]] && rc=2
        return "$rc"
    fi
    if [[ $PG_HOST == /* ]]; then
        [[ -S "$PG_HOST/.s.PGSQL.$PG_PORT" ]] && return 0
    elif tcp_open "$PG_HOST" "$PG_PORT"; then
        return 0
    fi
    return 2
}

pg_ready() { pg_probe; }

PSQL_ERR=""
psql_ok() {
    local out
    out=$(PGCONNECT_TIMEOUT=3 psql -X -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres \
        -Atc 'select 1' 2>&1) || true
    if [[ $out == 1 ]]; then return 0; fi
    PSQL_ERR=$(printf '%s' "$out" | head -n 3)
    return 1
}

# Latest server version with an installed server binary or cluster config.
pg_version() {
    local v=""
    if [[ -d /etc/postgresql ]]; then
        # shellcheck disable=SC2012  # directory names are plain version numbers
        v=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    fi
    if [[ -z $v ]]; then
        v=$(for d in /usr/lib/postgresql/*/bin/postgres; do
            [[ -x $d ]] && basename "$(dirname "$(dirname "$d")")"
        done | sort -V | tail -n 1) || true
    fi
    printf '%s' "$v"
}

pg_server_installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 || return 1
    [[ -n $(pg_version) ]] || return 1
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# "ver cluster" of the local cluster configured on $PG_PORT (empty if none).
pg_cluster_on_port() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }'
}

# Put trust lines for loopback/local at the top of the cluster's pg_hba.conf.
pg_trust_loopback() {
    local ver=$1 cluster=$2 hba tmp
    hba="/etc/postgresql/$ver/$cluster/pg_hba.conf"
    as_root test -f "$hba" || die "postgres: $hba not found"
    if as_root grep -q '^# added by scripts/services.sh' "$hba"; then
        die "postgres: trust lines already present in $hba but login as $PG_USER still fails: $PSQL_ERR"
    fi
    note "postgres: password-less login failed; prepending trust rules to $hba"
    tmp=$(mktemp)
    {
        echo "# added by scripts/services.sh: password-less loopback access for tests"
        echo "local   all   all                  trust"
        echo "host    all   all   127.0.0.1/32   trust"
        echo "host    all   all   ::1/128        trust"
        as_root cat "$hba"
    } >"$tmp"
    as_root cp -p "$hba" "$hba.services-sh.bak"
    as_root tee "$hba" <"$tmp" >/dev/null # keeps owner and mode of $hba
    rm -f "$tmp"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$cluster" reload \
        || die "postgres: reload of cluster $ver/$cluster failed"
}

ensure_postgres() {
    local rc=0 did="" managed=0 ver="" cluster="main" status
    pg_probe || rc=$?

    if [[ $rc -ne 0 ]]; then
        is_local_host "$PG_HOST" \
            || die "postgres: ${PG_HOST}:${PG_PORT} unreachable and not a loopback host; cannot start it here"
    fi

    if [[ $rc -eq 2 ]]; then
        if ! pg_server_installed; then
            apt_install postgresql
            pg_server_installed || die "postgres: server still missing after apt-get install postgresql"
            did+="installed postgresql, "
            managed=1
        fi
        ver=$(pg_version)
        [[ -n $ver ]] || die "postgres: cannot determine installed server version"
        if ! pg_probe; then
            if [[ ! -f /etc/postgresql/$ver/main/postgresql.conf ]]; then
                note "postgres: creating cluster $ver/main on port $PG_PORT"
                as_root pg_createcluster -p "$PG_PORT" "$ver" main >&2 \
                    || die "postgres: pg_createcluster $ver main failed"
                did+="created cluster $ver/main, "
            fi
            local cport
            cport=$(pg_lsclusters -h "$ver" main 2>/dev/null | awk '{ print $3 }') || true
            [[ -z $cport || $cport == "$PG_PORT" ]] \
                || die "postgres: nothing on ${PG_HOST}:${PG_PORT}, and cluster $ver/main is" \
                    "configured for port $cport; set PGPORT=$cport"
            status=$(pg_lsclusters -h "$ver" main 2>/dev/null | awk '{ print $4 }') || true
            if [[ $status != online* ]]; then
                as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 \
                    || die "postgres: pg_ctlcluster $ver main start failed"
                did+="started cluster $ver/main, "
            fi
            managed=1
        fi
    fi

    if ! wait_for 20 pg_ready; then
        local port
        port=$(pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main" { print $3 }') || true
        die "postgres: ${PG_HOST}:${PG_PORT} not accepting connections after 20 s" \
            "${port:+(cluster $ver/main is configured for port $port)}"
    fi

    if ! command -v psql >/dev/null 2>&1; then
        apt_install postgresql-client
        did+="installed postgresql-client, "
    fi

    if ! psql_ok; then
        # Only relax auth when login actually fails, and only for a local
        # cluster we installed/started (or in CI).
        local target
        target=$(pg_cluster_on_port)
        if [[ -n $target ]] && is_local_host "$PG_HOST" \
            && [[ $managed -eq 1 || ${CI:-} == true ]]; then
            # shellcheck disable=SC2086  # "ver cluster" split on purpose
            pg_trust_loopback $target
            did+="enabled trust auth in pg_hba.conf, "
            wait_for 5 psql_ok \
                || die "postgres: still cannot log in as $PG_USER at ${PG_HOST}:${PG_PORT}: $PSQL_ERR"
        else
            die "postgres: server at ${PG_HOST}:${PG_PORT} is up but password-less login as" \
                "$PG_USER fails: $PSQL_ERR (set PGPASSWORD, or add 'host all all 127.0.0.1/32 trust'" \
                "to pg_hba.conf, or run with CI=true to let this script do it)"
        fi
    fi

    if [[ -z $did ]]; then
        log "postgres: already running at ${PG_HOST}:${PG_PORT} (login as $PG_USER OK)"
    else
        log "postgres: ${did%, } -> ${PG_HOST}:${PG_PORT} (login as $PG_USER OK)"
    fi
}

# -------------------------------------------------------- Redis Cluster ----
# Three primaries on loopback (no replicas), for the cluster tests.
#
# A node is "ours" when it reports the process id that the pid file in our own
# directory records and our data directory: only such nodes are ever stopped,
# reset or flushed. Ports held by anything else are used as they are when they
# form a healthy cluster of exactly CLUSTER_PORTS; otherwise nothing is touched
# and the script fails, naming the port.

read -r -a CLUSTER_PORTS <<<"${REDIS_CLUSTER_PORTS:-7101 7102 7103}"
SERVICES_DIR=${SQLMODEL_CACHE_SERVICES_DIR:-${TMPDIR:-/tmp}/sqlmodel-cache-services}
CLUSTER_DIR=${REDIS_CLUSTER_DIR:-$SERVICES_DIR/cluster}

# redis-cli against a cluster node, quiet and bounded in time.
node_cli() {
    local port=$1
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

node_pong() { [[ $(node_cli "$1" ping) == PONG ]]; }

node_dir() { printf '%s/%s' "$CLUSTER_DIR" "$1"; }

# 0 if the node answering on $1 is one this script started.
node_is_ours() {
    local port=$1 dir pidfile pid reported_pid reported_dir
    dir=$(node_dir "$port")
    pidfile="$dir/redis.pid"
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    reported_pid=$(node_cli "$port" info server | tr -d '\r' \
        | awk -F: '$1 == "process_id" { print $2 }') || true
    [[ $reported_pid == "$pid" ]] || return 1
    reported_dir=$(node_cli "$port" config get dir | sed -n 2p) || true
    [[ -n $reported_dir && $reported_dir == "$(cd "$dir" && pwd -P)" ]]
}

# 0 if every port answers as a node of one healthy cluster whose primaries are
# exactly CLUSTER_PORTS on 127.0.0.1.
cluster_healthy() {
    local port want got
    want=$(printf '127.0.0.1:%s\n' "${CLUSTER_PORTS[@]}" | sort)
    for port in "${CLUSTER_PORTS[@]}"; do
        node_cli "$port" cluster info | grep -q '^cluster_state:ok' || return 1
        got=$(node_cli "$port" cluster nodes \
            | awk '$3 ~ /master/ && $3 !~ /fail|handshake|noaddr/ { split($2, a, "@"); print a[1] }' \
            | sort) || return 1
        [[ $got == "$want" ]] || return 1
    done
}

# Our own directories: created private, and refused if someone else owns them
# (in a shared /tmp another user could have made them first).
cluster_prepare_dir() {
    local d dirs=("$CLUSTER_DIR")
    [[ -n ${REDIS_CLUSTER_DIR:-} ]] || dirs=("$SERVICES_DIR" "$CLUSTER_DIR")
    for d in "${dirs[@]}"; do
        mkdir -p "$d" || die "redis-cluster: cannot create $d"
        [[ -O $d && ! -L $d ]] || die "redis-cluster: $d is not a directory of this user's own;" \
            "set SQLMODEL_CACHE_SERVICES_DIR to one"
        chmod 700 "$d"
    done
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# Stop a node of ours (verified by the caller) and forget it.
stop_our_node() {
    local port=$1 dir pid
    dir=$(node_dir "$port")
    pid=$(<"$dir/redis.pid")
    node_cli "$port" shutdown nosave >/dev/null || true
    if ! wait_for 10 pid_gone "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 5 pid_gone "$pid" \
            || die "redis-cluster: node $port (pid $pid, started by this script) does not stop"
    fi
    rm -f "$dir/redis.pid" "$dir/nodes-$port.conf"
}

start_our_node() {
    local port=$1 dir
    dir=$(node_dir "$port")
    mkdir -p "$dir"
    # A config left by an earlier run makes the node rejoin a cluster whose
    # peers are gone, and 'cluster create' refuses such a node.
    rm -f "$dir/nodes-$port.conf" "$dir/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file "nodes-$port.conf" --dir "$dir" \
        --save "" --appendonly no --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        || die "redis-cluster: redis-server failed to start on port $port (see $dir/redis.log)"
}

ensure_redis_cluster() {
    command -v redis-cli >/dev/null || die "redis-cluster: redis-cli is missing"
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
    fi
    if cluster_healthy; then
        log "redis-cluster: already running on ports ${CLUSTER_PORTS[*]} (cluster_state:ok)"
        return
    fi
    cluster_prepare_dir

    # Look at every port before touching any: one foreign node stops everything.
    local port ours=()
    for port in "${CLUSTER_PORTS[@]}"; do
        if node_pong "$port"; then
            node_is_ours "$port" || die "redis-cluster: port $port is taken by a Redis node this" \
                "script did not start, and ports ${CLUSTER_PORTS[*]} are not a healthy cluster;" \
                "not touching it. Stop that node yourself (if it is yours to stop:" \
                "redis-cli -p $port shutdown nosave) or pick free ports with REDIS_CLUSTER_PORTS."
            ours+=("$port")
        elif tcp_open 127.0.0.1 "$port"; then
            die "redis-cluster: port $port is in use by a process this script did not start" \
                "(it does not answer PING: not Redis, or password-protected); not touching it." \
                "Free the port or pick others with REDIS_CLUSTER_PORTS."
        fi
    done

    # Nodes of ours in a broken cluster (a peer died, a create failed): their
    # data is ours, so they are stopped and the cluster is made afresh.
    for port in "${ours[@]}"; do
        note "redis-cluster: restarting node $port (started by this script; cluster not healthy)"
        stop_our_node "$port"
    done

    local addrs=()
    for port in "${CLUSTER_PORTS[@]}"; do
        start_our_node "$port"
        addrs+=("127.0.0.1:$port")
    done
    for port in "${CLUSTER_PORTS[@]}"; do
        wait_for 10 node_pong "$port" \
            || die "redis-cluster: node $port did not start (see $(node_dir "$port")/redis.log)"
        wait_for 5 node_is_ours "$port" \
            || die "redis-cluster: port $port answers, but not as the node this script just started" \
                "(see $(node_dir "$port")/redis.log)"
    done
    local out
    out=$(redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes 2>&1 </dev/null) \
        || die "redis-cluster: 'redis-cli --cluster create' failed: $(printf '%s' "$out" | tail -n 3)"
    wait_for 20 cluster_healthy || die "redis-cluster: cluster_state never became ok"
    log "redis-cluster: started on ports ${CLUSTER_PORTS[*]} (data in $CLUSTER_DIR)"
}

ensure_redis
ensure_postgres
ensure_redis_cluster
