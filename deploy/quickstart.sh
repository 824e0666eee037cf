#!/usr/bin/env bash
# Kiln on one machine: installs what the service needs, builds it and starts it.
#
#   ./deploy/quickstart.sh        install, build and start (again: starts what is not running)
#   ./deploy/quickstart.sh stop   stop what it started
#
# Run as root or through sudo on Debian 12 / Ubuntu 22.04+, from a clone of the repository, with
# cargo on the PATH (https://rustup.rs; rust-toolchain.toml picks the version).
# Settings (environment):
#   KILN_STATE_DIR      /var/lib/kiln      data (SQLite database, contexts, images), logs, pids
#   KILN_LISTEN         127.0.0.1:8080     where the scheduler listens
#   KILN_PUBLIC_URL     http://KILN_LISTEN the URL users reach it at
#   KILN_WORKERS        2                  worker processes
#   KILN_AMQP           amqp://guest:guest@127.0.0.1:5672/%2f
#   KILN_ADMIN          admin              the first user, an admin; its token is printed
#   KILN_BUILD_PROFILE  release            cargo profile (`dev` reuses a debug build)
#   KILN_INSECURE_REGISTRIES               HOST:PORT,... registries the workers reach over HTTP
#   KILN_BIN_DIR                           use the binaries there instead of building
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. tests/setup/lib.sh

state=${KILN_STATE_DIR:-/var/lib/kiln}
run=$state/quickstart
listen=${KILN_LISTEN:-127.0.0.1:8080}
public_url=${KILN_PUBLIC_URL:-http://$listen}
workers=${KILN_WORKERS:-2}
amqp=${KILN_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
admin=${KILN_ADMIN:-admin}
profile=${KILN_BUILD_PROFILE:-release}
case "$profile" in
release) bin=$repo/target/release ;;
dev) bin=$repo/target/debug ;;
*) echo "KILN_BUILD_PROFILE must be release or dev" >&2; exit 2 ;;
esac
bin=${KILN_BIN_DIR:-$bin}

# alive NAME: true when the process recorded in $run/NAME.pid runs.
alive() {
    [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null
}

# start_daemon NAME CMD...: starts CMD detached, logging to $run/NAME.log, unless it runs.
start_daemon() {
    local name=$1
    shift
    if alive "$name"; then
        echo ">> $name already runs (pid $(cat "$run/$name.pid"))"
        return 0
    fi
    setsid "$@" >>"$run/$name.log" 2>&1 </dev/null &
    echo $! >"$run/$name.pid"
    echo ">> started $name (pid $!, log $run/$name.log)"
}

# stop_daemon NAME: SIGTERM (drain), then SIGKILL after 30 s.
stop_daemon() {
    local name=$1 pid i
    alive "$name" || { rm -f "$run/$name.pid"; return 0; }
    pid=$(cat "$run/$name.pid")
    echo ">> stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$run/$name.pid"
}

start() {
    # uidmap: newuidmap/newgidmap give the rootless workers their subordinate id range.
    ensure_packages ca-certificates curl gcc libc6-dev pkg-config uidmap squashfs-tools
    ensure_rabbitmq
    as_root mkdir -p "$run" "$state/data"
    if [ -n "$RABBITMQ_STARTED" ]; then
        # Remember it, so `stop` ends this broker and never one that was running before us.
        echo "$RABBITMQ_STARTED" | as_root tee "$run/rabbitmq" >/dev/null
    fi
    if [ -z "${KILN_BIN_DIR:-}" ]; then
        if ! command -v cargo >/dev/null; then
            echo "cargo is missing: install Rust from https://rustup.rs, then run this again" >&2
            exit 1
        fi
        echo ">> building Kiln ($profile)"
        cargo build --profile "$profile" -p kiln-scheduler -p kiln-worker
    fi
    tests/setup/build-user.sh >/dev/null
    local build_user=${KILN_BUILD_USER:-kiln-build}

    start_daemon scheduler "$bin/kiln-scheduler" serve --listen "$listen" --data "$state/data" \
        --amqp "$amqp" --public-url "$public_url"
    local i
    for i in $(seq 1 100); do
        curl -fsS "http://$listen/version" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://$listen/version" >/dev/null || {
        echo "the scheduler did not answer; see $run/scheduler.log" >&2
        exit 1
    }

    local registries=()
    if [ -n "${KILN_INSECURE_REGISTRIES:-}" ]; then
        registries=(--insecure-registry "$KILN_INSECURE_REGISTRIES")
    fi
    as_root mkdir -p "$state/worker"
    for i in $(seq 1 "$workers"); do
        as_root mkdir -p "$state/worker/$i" "$state/worker/cache"
        as_root chown "$build_user:" "$state/worker/$i" "$state/worker/cache"
        # Started as root, the worker becomes the build user before it takes any job.
        start_daemon "worker-$i" "$bin/kiln-worker" serve --amqp "$amqp" \
            --scheduler "http://$listen" --worker-id "$(hostname)-quickstart-$i" \
            --work-dir "$state/worker/$i" --cache-dir "$state/worker/cache" \
            --build-user "$build_user" "${registries[@]}"
    done

    local admin_cli=("$bin/kiln-scheduler" admin --data "$state/data")
    if ! "${admin_cli[@]}" user add "$admin" --admin >/dev/null 2>"$run/admin.err"; then
        grep -q "exists" "$run/admin.err" || { cat "$run/admin.err" >&2; exit 1; }
    fi
    local token
    token=$("${admin_cli[@]}" token create "$admin")
    local hostport=${public_url#*://}
    hostport=${hostport%%/*}
    cat <<EOF

Kiln is running.
  web and API:  $public_url
  admin user:   $admin
  admin token:  $token   (shown once; make more with: ${admin_cli[*]} token create $admin)
  logs:         $run/*.log
  stop:         $0 stop

Point singularity at it: \`singularity remote add\` cannot take a port (build-api.md §2.1),
so put these lines into ~/.singularity/remote.yaml under Remotes: and make it Active:

  kiln:
    URI: //$hostport
    Token: $token
    System: false
    Exclusive: false
    Insecure: true

then: singularity build --remote out.sif my.def
EOF
}

stop() {
    local pidfile name
    for pidfile in "$run"/worker-*.pid; do
        [ -e "$pidfile" ] || continue
        name=$(basename "$pidfile" .pid)
        stop_daemon "$name"
    done
    stop_daemon scheduler
    if [ -f "$run/rabbitmq" ]; then
        echo ">> stopping the RabbitMQ this script started"
        stop_rabbitmq "$(cat "$run/rabbitmq")"
        as_root rm -f "$run/rabbitmq"
    fi
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac
