#!/usr/bin/env bash
# Kiln on one machine: installs what the service needs and starts it.
#
#   ./deploy/quickstart.sh        install and start
#   ./deploy/quickstart.sh stop   stop what it started
#
# Run as root or through sudo on Debian 12 / Ubuntu 22.04+, from a clone of the repository.
# The scheduler and workers join this script with issue #6; today it prepares the machine.
# KILN_STATE_DIR (default /var/lib/kiln) keeps the record of what was started.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup/lib.sh

state=${KILN_STATE_DIR:-/var/lib/kiln}/quickstart

case "${1:-start}" in
start)
    # uidmap: newuidmap/newgidmap give the rootless workers their subordinate id range.
    ensure_packages ca-certificates curl gcc libc6-dev pkg-config uidmap squashfs-tools
    ensure_rabbitmq
    if [ -n "$RABBITMQ_STARTED" ]; then
        # Remember it, so `stop` ends this broker and never one that was running before us.
        as_root mkdir -p "$state"
        echo "$RABBITMQ_STARTED" | as_root tee "$state/rabbitmq" >/dev/null
    fi
    echo ">> Kiln's services are ready"
    ;;
stop)
    if [ -f "$state/rabbitmq" ]; then
        echo ">> stopping the RabbitMQ this script started"
        stop_rabbitmq "$(cat "$state/rabbitmq")"
        as_root rm -f "$state/rabbitmq"
    fi
    ;;
*)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac
