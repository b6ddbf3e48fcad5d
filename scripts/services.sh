#!/usr/bin/env bash
# Make sure the external services the test suite needs are up:
#
#   scripts/services.sh [postgres|zookeeper|rabbitmq|graphviz|chromium]...   (no argument: all of them)
#
# Idempotent and quiet when everything already runs; it says one line for each
# thing it had to do (install, create, start, configure) and exits non-zero
# with one error line when it cannot bring a service up. `./dev test` (and so
# `.ci/run`) calls it before the tests. Works without systemd (CI containers).
#
# PostgreSQL: a server answering on 127.0.0.1:5432 (ZAG_PG_PORT) to user
# `postgres` without a password, with a database `test`. When missing, Debian's
# `postgresql` package is installed and its cluster started; a cluster that
# asks 127.0.0.1 for a password gets a trust line for user postgres.
#
# ZooKeeper: a server answering `ruok` on 127.0.0.1:2181 (ZAG_ZK_PORT); when
# missing, Debian's `zookeeper` package is installed and the server started
# in the background with our own zoo.cfg (see ensure_zookeeper).
#
# RabbitMQ: a broker answering AMQP on 127.0.0.1:5672 (ZAG_RMQ_PORT) for user
# guest/guest; when missing, Debian's `rabbitmq-server` package is installed
# and the node started with `rabbitmq-server -detached` (see ensure_rabbitmq).
#
# Graphviz: not a service, a program: `dot`, which `zag-async graph --format
# svg|png` runs; when missing, Debian's `graphviz` package is installed.
#
# Chromium: not a service, a browser: /usr/bin/chromium, which the operations
# UI's browser tests (tests/ui/test_browser.py) drive headless through
# Playwright; when missing, Debian's `chromium` package is installed.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT="${ZAG_PG_PORT:-5432}"
PG_USER=postgres
PG_DB=test
HBA_MARK="# zag-async scripts/services.sh: test user without password"

note() { echo "services: $*" >&2; }
die() {
    echo "services: error: $*" >&2
    exit 1
}

# Run a command as root: directly, or through passwordless sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

can_be_root() {
    [[ "$(id -u)" -eq 0 ]] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

# psql over TCP as the test user; prints the single value of a query.
pg_query() {
    local db="$1" sql="$2"
    PGCONNECT_TIMEOUT=5 psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$db" \
        -w -X -A -t -q -c "$sql" 2>&1
}

pg_bin() {
    # The newest installed server's bin directory (Debian layout), or nothing.
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/postgres" ]]; then
        echo "$dir"
    fi
}

pg_ready() {
    # 0 when the server accepts connections (pg_isready: 0 ok, 1 starting, 2 down).
    local isready
    isready="$(command -v pg_isready || true)"
    [[ -n "$isready" ]] || isready="$(pg_bin)/pg_isready"
    # (an empty pg_bin leaves "/pg_isready", which the next test rejects)
    [[ -x "$isready" ]] || return 2
    "$isready" -h "$PG_HOST" -p "$PG_PORT" -t 2 -q
}

pg_wait_ready() {
    local i
    for ((i = 0; i < 60; i++)); do
        pg_ready && return 0
        sleep 0.5
    done
    return 1
}

pg_install() {
    can_be_root || die "PostgreSQL is not installed and installing it needs root: run 'sudo $0 postgres' (or: sudo apt-get install postgresql)"
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and there is no apt-get here: install PostgreSQL and make it listen on $PG_HOST:$PG_PORT"
    note "installing PostgreSQL (apt-get install postgresql)"
    local log
    log="$(mktemp)"
    if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        die "apt-get install postgresql failed (output above)"
    fi
    rm -f "$log"
}

# "VERSION NAME STATUS" of the Debian cluster configured for $PG_PORT, if any.
pg_cluster_for_port() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port { print $1, $2, $4; exit }'
}

pg_start_cluster() {
    command -v pg_ctlcluster >/dev/null 2>&1 || die "PostgreSQL does not answer on $PG_HOST:$PG_PORT and pg_ctlcluster (Debian's postgresql-common) is missing: start your server by hand"
    local found version name status
    found="$(pg_cluster_for_port)"
    if [[ -z "$found" ]]; then
        local bin
        bin="$(pg_bin)"
        [[ -n "$bin" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
        version="$(basename "$(dirname "$bin")")"
        if [[ -d "/etc/postgresql/$version/main" ]]; then
            die "PostgreSQL $version cluster 'main' exists but is not configured for port $PG_PORT (see pg_lsclusters)"
        fi
        can_be_root || die "no PostgreSQL cluster for port $PG_PORT and creating one needs root: run 'sudo $0 postgres'"
        note "creating PostgreSQL $version cluster 'main' on port $PG_PORT"
        as_root pg_createcluster -p "$PG_PORT" "$version" main >/dev/null ||
            die "pg_createcluster $version main failed"
        found="$(pg_cluster_for_port)"
    fi
    read -r version name status <<<"$found"
    if [[ "$status" != online* ]]; then
        can_be_root || die "PostgreSQL $version/$name is down and starting it needs root: run 'sudo $0 postgres'"
        note "starting PostgreSQL $version/$name"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start ||
            die "could not start PostgreSQL $version/$name (see /var/log/postgresql/)"
    fi
    pg_wait_ready || die "PostgreSQL $version/$name started but does not answer on $PG_HOST:$PG_PORT"
}

# Let the test user in from 127.0.0.1 without a password (dev and CI machines only).
pg_trust_localhost() {
    local found version name hba
    found="$(pg_cluster_for_port)"
    [[ -n "$found" ]] || return 1
    read -r version name _ <<<"$found"
    hba="/etc/postgresql/$version/$name/pg_hba.conf"
    [[ -f "$hba" ]] && can_be_root || return 1
    if ! grep -qF "$HBA_MARK" "$hba"; then
        note "allowing user $PG_USER from $PG_HOST without a password ($hba)"
        # First matching line wins, so put ours on top.
        as_root sed -i "1i $HBA_MARK\nhost all $PG_USER $PG_HOST/32 trust" "$hba" || return 1
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload >/dev/null
}

ensure_postgres() {
    if ! pg_ready; then
        [[ -n "$(pg_bin)" ]] || pg_install
        pg_start_cluster
    fi
    command -v psql >/dev/null 2>&1 || die "psql is missing (apt-get install postgresql-client)"
    local out
    if ! out="$(pg_query postgres "SELECT 1")"; then
        if [[ "$out" == *password* || "$out" == *authentication* ]] && pg_trust_localhost &&
            out="$(pg_query postgres "SELECT 1")"; then
            :
        else
            die "PostgreSQL on $PG_HOST:$PG_PORT refuses user $PG_USER: ${out%%$'\n'*}"
        fi
    fi
    if [[ -z "$(pg_query postgres "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" ]]; then
        out="$(pg_query postgres "CREATE DATABASE $PG_DB")" ||
            [[ "$out" == *"already exists"* ]] || # another process won the race
            die "could not create database '$PG_DB': ${out%%$'\n'*}"
    fi
}

# ---------------------------------------------------------------------------
# ZooKeeper
# ---------------------------------------------------------------------------

# ZooKeeper: a server answering `ruok` with `imok` on 127.0.0.1:2181 (ZAG_ZK_PORT).
# When nothing answers, Debian's `zookeeper` package is installed if its jar is
# missing, and ZooKeeperServerMain is started in the background (no init system)
# with our own zoo.cfg in a state directory: /var/lib/zag-zookeeper[-PORT] as root,
# else under ${TMPDIR:-/tmp} (ZAG_ZK_DIR overrides). tickTime=200 ms lets tests use
# short session timeouts; the accepted range is set explicitly to 0.4..20 s
# (by default ZooKeeper would allow only 2..20 ticks, 0.4..4 s).
ZK_HOST=127.0.0.1
ZK_PORT="${ZAG_ZK_PORT:-2181}"
ZK_JAVA_DIR=/usr/share/java

# 0 when the server on $ZK_PORT answers ruok with imok.
zk_ready() {
    local reply
    reply="$(timeout 2 bash -c "exec 3<>/dev/tcp/$ZK_HOST/$ZK_PORT && printf ruok >&3 && cat <&3" 2>/dev/null || true)"
    [[ "$reply" == imok* ]]
}

zk_state_dir() {
    if [[ -n "${ZAG_ZK_DIR:-}" ]]; then
        echo "$ZAG_ZK_DIR"
        return
    fi
    local suffix=""
    [[ "$ZK_PORT" == 2181 ]] || suffix="-$ZK_PORT"
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "/var/lib/zag-zookeeper$suffix"
    else
        echo "${TMPDIR:-/tmp}/zag-zookeeper-$(id -u)$suffix"
    fi
}

zk_install() {
    can_be_root || die "ZooKeeper is not installed and installing it needs root: run 'sudo $0 zookeeper' (or: sudo apt-get install zookeeper)"
    command -v apt-get >/dev/null 2>&1 || die "ZooKeeper is not installed and there is no apt-get here: start a ZooKeeper 3.5+ on $ZK_HOST:$ZK_PORT yourself"
    note "installing ZooKeeper (apt-get install zookeeper)"
    local log
    log="$(mktemp)"
    if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        die "apt-get install zookeeper failed (output above)"
    fi
    rm -f "$log"
    [[ -f "$ZK_JAVA_DIR/zookeeper.jar" ]] || die "apt-get installed zookeeper but $ZK_JAVA_DIR/zookeeper.jar is missing"
}

# The server's class path: Debian's config dir (log4j.properties) and the jars that exist.
zk_classpath() {
    local cp="" jar
    [[ -d /etc/zookeeper/conf ]] && cp=/etc/zookeeper/conf
    for jar in zookeeper zookeeper-jute slf4j-api slf4j-log4j12 log4j-1.2 netty-all; do
        if [[ -f "$ZK_JAVA_DIR/$jar.jar" ]]; then
            cp="${cp:+$cp:}$ZK_JAVA_DIR/$jar.jar"
        fi
    done
    echo "$cp"
}

zk_start() {
    command -v java >/dev/null 2>&1 || die "ZooKeeper needs java, which is missing (apt-get install default-jre-headless)"
    local dir
    dir="$(zk_state_dir)"
    mkdir -p "$dir/data" || die "cannot create ZooKeeper state directory $dir"
    cat >"$dir/zoo.cfg" <<CFG
# Written by zag-async scripts/services.sh (rewritten at every start).
tickTime=200
minSessionTimeout=400
maxSessionTimeout=20000
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$ZK_PORT
clientPortAddress=$ZK_HOST
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,envi
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
CFG
    note "starting ZooKeeper on $ZK_HOST:$ZK_PORT (state in $dir, log $dir/zookeeper.log)"
    setsid java -Xmx256m \
        -Dzookeeper.root.logger=INFO,CONSOLE -Dzookeeper.log.dir="$dir" \
        -cp "$(zk_classpath)" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
        </dev/null >"$dir/zookeeper.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/zookeeper.pid"
    local i
    for ((i = 0; i < 75; i++)); do
        zk_ready && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            local why
            why="$(grep -m1 -E '^[a-zA-Z.]+(Exception|Error):' "$dir/zookeeper.log" ||
                grep -m1 ERROR "$dir/zookeeper.log" || tail -n 1 "$dir/zookeeper.log")"
            die "ZooKeeper exited at start on $ZK_HOST:$ZK_PORT: $why (log: $dir/zookeeper.log)"
        fi
        sleep 0.2
    done
    die "ZooKeeper (pid $pid) does not answer ruok on $ZK_HOST:$ZK_PORT after 15 s (log: $dir/zookeeper.log)"
}

ensure_zookeeper() {
    zk_ready && return 0
    [[ -f "$ZK_JAVA_DIR/zookeeper.jar" ]] || zk_install
    zk_start
}

# ---------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------

# RabbitMQ: a broker answering AMQP 0-9-1 on 127.0.0.1:5672 (ZAG_RMQ_PORT) with the
# default guest/guest user (allowed from loopback only, which is all the tests need).
# When nothing answers, Debian's `rabbitmq-server` package is installed if missing
# and the node started with `rabbitmq-server -detached` (no init system needed),
# then awaited with `rabbitmqctl await_startup`. A node that already runs is never
# stopped or restarted. The RABBITMQ_* environment (node name, dirs, port) is passed
# through, so the same function can bring up a non-default node.
RMQ_HOST=127.0.0.1
RMQ_PORT="${ZAG_RMQ_PORT:-5672}"
RMQ_START_TIMEOUT=60

# 0 when the port answers the AMQP 0-9-1 protocol header with a Connection.Start
# frame (type 1, channel 0, then class 10 / method 10 after the 4-byte size).
rmq_ready() {
    local reply
    reply="$(timeout 3 bash -c "exec 3<>/dev/tcp/$RMQ_HOST/$RMQ_PORT && printf 'AMQP\\x00\\x00\\x09\\x01' >&3 && head -c 11 <&3" 2>/dev/null |
        od -An -tx1 | tr -d ' \n' || true)"
    [[ "$reply" == 010000????????000a000a ]]
}

rmq_install() {
    can_be_root || die "RabbitMQ is not installed and installing it needs root: run 'sudo $0 rabbitmq' (or: sudo apt-get install rabbitmq-server)"
    command -v apt-get >/dev/null 2>&1 || die "RabbitMQ is not installed and there is no apt-get here: start a RabbitMQ 3.8+ on $RMQ_HOST:$RMQ_PORT (guest/guest) yourself"
    note "installing RabbitMQ (apt-get install rabbitmq-server)"
    local log
    log="$(mktemp)"
    # The package's own start attempt may fail without an init system; we start it below.
    if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        die "apt-get install rabbitmq-server failed (output above)"
    fi
    rm -f "$log"
    command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/sbin/rabbitmq-server ]] ||
        die "apt-get installed rabbitmq-server but the rabbitmq-server command is missing"
}

rmq_cmd() {
    # Debian puts the wrappers (which switch to the rabbitmq user) in /usr/sbin,
    # which a non-login PATH may lack.
    local name="$1"
    shift
    if command -v "$name" >/dev/null 2>&1; then
        as_root "$name" "$@"
    else
        as_root "/usr/sbin/$name" "$@"
    fi
}

rmq_start() {
    can_be_root || die "RabbitMQ does not answer on $RMQ_HOST:$RMQ_PORT and starting it needs root: run 'sudo $0 rabbitmq'"
    note "starting RabbitMQ (rabbitmq-server -detached; log in /var/log/rabbitmq/)"
    local log
    log="$(mktemp)"
    if [[ "$RMQ_PORT" != 5672 ]]; then
        export RABBITMQ_NODE_PORT="$RMQ_PORT"
    fi
    if ! rmq_cmd rabbitmq-server -detached >"$log" 2>&1; then
        tail -n 5 "$log" >&2
        rm -f "$log"
        die "rabbitmq-server -detached failed (output above; logs in /var/log/rabbitmq/)"
    fi
    # await_startup fails at once while the node has not yet registered with epmd,
    # so retry it until the deadline; then the port itself must answer.
    local deadline=$((SECONDS + RMQ_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if rmq_cmd rabbitmqctl -q await_startup --timeout "$((deadline - SECONDS))" >"$log" 2>&1 && rmq_ready; then
            rm -f "$log"
            return 0
        fi
        sleep 1
    done
    local why
    why="$(grep -m1 -iE 'error|fail' "$log" || tail -n 1 "$log" || true)"
    rm -f "$log"
    die "RabbitMQ does not answer AMQP on $RMQ_HOST:$RMQ_PORT ${RMQ_START_TIMEOUT}s after start: ${why:-no output} (logs in /var/log/rabbitmq/)"
}

# The tests log in as guest/guest: check it when rabbitmqctl can reach the node
# (it needs root for the node's cookie; without it the tests themselves will tell).
rmq_check_guest() {
    can_be_root || return 0
    local out
    out="$(rmq_cmd rabbitmqctl -q authenticate_user guest guest 2>&1)" && return 0
    if [[ "$out" == *"unable to"* || "$out" == *nodedown* || "$out" == *"could not"* ]]; then
        return 0 # a node rabbitmqctl does not control (other cookie or name): not our call
    fi
    die "RabbitMQ on $RMQ_HOST:$RMQ_PORT refuses guest/guest: ${out%%$'\n'*} (restore it: rabbitmqctl add_user guest guest; rabbitmqctl set_permissions guest '.*' '.*' '.*')"
}

ensure_rabbitmq() {
    if ! rmq_ready; then
        command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/sbin/rabbitmq-server ]] || rmq_install
        rmq_start
    fi
    rmq_check_guest
}

# ---------------------------------------------------------------------------
# Graphviz
# ---------------------------------------------------------------------------

# Graphviz's `dot` on PATH (the CLI renders SVG/PNG pictures with it); when
# missing, Debian's `graphviz` package is installed. Silent when present.
ensure_graphviz() {
    command -v dot >/dev/null 2>&1 && return 0
    can_be_root || die "Graphviz (dot) is not installed and installing it needs root: run 'sudo $0 graphviz' (or: sudo apt-get install graphviz)"
    command -v apt-get >/dev/null 2>&1 || die "Graphviz (dot) is not installed and there is no apt-get here: install Graphviz yourself"
    note "installing Graphviz (apt-get install graphviz)"
    local log
    log="$(mktemp)"
    if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        die "apt-get install graphviz failed (output above)"
    fi
    rm -f "$log"
    command -v dot >/dev/null 2>&1 || die "apt-get installed graphviz but the dot command is missing"
}

# Debian's headless-capable Chromium at /usr/bin/chromium (the UI's browser tests
# launch it with Playwright, never `playwright install`). Silent when present.
ensure_chromium() {
    [[ -x /usr/bin/chromium ]] && return 0
    can_be_root || die "Chromium is not installed and installing it needs root: run 'sudo $0 chromium' (or: sudo apt-get install chromium)"
    command -v apt-get >/dev/null 2>&1 || die "Chromium is not installed and there is no apt-get here: install Chromium at /usr/bin/chromium yourself"
    note "installing Chromium (apt-get install chromium)"
    local log
    log="$(mktemp)"
    if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        die "apt-get install chromium failed (output above)"
    fi
    rm -f "$log"
    [[ -x /usr/bin/chromium ]] || die "apt-get installed chromium but /usr/bin/chromium is missing"
}

# ---------------------------------------------------------------------------

ALL_SERVICES=(postgres zookeeper rabbitmq graphviz chromium)

main() {
    local services=("$@")
    [[ ${#services[@]} -gt 0 ]] || services=("${ALL_SERVICES[@]}")
    local s
    for s in "${services[@]}"; do
        case "$s" in
            postgres | zookeeper | rabbitmq | graphviz | chromium) ;;
            -h | --help)
                echo "usage: $0 [${ALL_SERVICES[*]// /|}]..."
                exit 0
                ;;
            *)
                echo "usage: $0 [postgres|zookeeper|rabbitmq|graphviz|chromium]..." >&2
                exit 2
                ;;
        esac
    done
    for s in "${services[@]}"; do
        "ensure_$s"
    done
}

main "$@"
