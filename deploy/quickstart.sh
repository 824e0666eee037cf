#!/usr/bin/env bash
# Kiln on one machine: installs what the service needs and starts it.
#
#   ./deploy/quickstart.sh        install and start
#   ./deploy/quickstart.sh stop   stop what it started
#
# Run as root or through sudo on Debian 12 / Ubuntu 22.04+, from a clone of the repository.
# The scheduler and workers join this script with issue #6; today it prepares the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup/lib.sh

case "${1:-start}" in
start)
    # uidmap: newuidmap/newgidmap give the rootless workers their subordinate id range.
    ensure_packages ca-certificates curl gcc libc6-dev pkg-config uidmap squashfs-tools
    ensure_rabbitmq
    ;;
stop)
    ;;
*)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac
