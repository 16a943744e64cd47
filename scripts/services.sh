#!/usr/bin/env bash
# Make sure a Redis server and a PostgreSQL server are reachable on loopback
# before the test suite runs; install (apt-get) and start them if needed.
#
# Idempotent: services that already answer are left alone (never restarted,
# never flushed, no data is ever dropped). Prints one line per service.
#
# Environment:
#   REDIS_HOST (127.0.0.1)  REDIS_PORT (6379)
#   PGHOST     (127.0.0.1)  PGPORT     (5432)   -- user is always "postgres"
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
# Three primaries of our own on loopback (no replicas), for the cluster tests.
# Their data directories are ours alone, so a half-made cluster may be reset.

read -r -a CLUSTER_PORTS <<<"${REDIS_CLUSTER_PORTS:-7101 7102 7103}"
CLUSTER_DIR=${REDIS_CLUSTER_DIR:-/var/lib/sqlmodel-cache-cluster}

cluster_ok() {
    redis-cli -h 127.0.0.1 -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null \
        | grep -q '^cluster_state:ok'
}

ensure_redis_cluster() {
    command -v redis-cli >/dev/null || die "redis-cluster: redis-cli is missing"
    if cluster_ok; then
        log "redis-cluster: already running on ports ${CLUSTER_PORTS[*]}"
        return
    fi
    local port addrs=()
    for port in "${CLUSTER_PORTS[@]}"; do
        mkdir -p "$CLUSTER_DIR/$port"
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
            redis-cli -h 127.0.0.1 -p "$port" flushall >/dev/null
            redis-cli -h 127.0.0.1 -p "$port" cluster reset hard >/dev/null
        else
            # A config left by an earlier run makes the node rejoin a cluster
            # whose peers are gone, and 'cluster create' refuses such a node.
            rm -f "$CLUSTER_DIR/$port/nodes-$port.conf"
            redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
                --cluster-config-file "nodes-$port.conf" --dir "$CLUSTER_DIR/$port" \
                --save "" --appendonly no --daemonize yes \
                --logfile "$CLUSTER_DIR/$port/redis.log"
        fi
        addrs+=("127.0.0.1:$port")
    done
    for port in "${CLUSTER_PORTS[@]}"; do
        wait_for 10 redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null \
            || die "redis-cluster: node $port did not start (see $CLUSTER_DIR/$port/redis.log)"
    done
    local out
    out=$(redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes 2>&1 </dev/null) \
        || die "redis-cluster: 'redis-cli --cluster create' failed: $(printf '%s' "$out" | tail -n 3)"
    wait_for 20 cluster_ok || die "redis-cluster: cluster_state never became ok"
    log "redis-cluster: started on ports ${CLUSTER_PORTS[*]}"
}

ensure_redis
ensure_postgres
ensure_redis_cluster
