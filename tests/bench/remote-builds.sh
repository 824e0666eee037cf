#!/usr/bin/env bash
# Benchmark: BUILDS trivial remote builds (busybox + one %post echo; default 200) through the
# scheduler and two `kiln-worker serve` processes on RabbitMQ, IN_FLIGHT at once (default 2).
# Prints submit→start latency p50/p99, builds per second and log-line latency p99 from the
# worker to a WebSocket viewer. Release binaries; never a pass/fail test.
#   usage: tests/bench/remote-builds.sh [BUILDS] [IN_FLIGHT]
# Needs what ./tests/run.sh sets up (RabbitMQ, the build user); run as root like the suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${KILN_BENCH_PROFILE:-release}
cargo build -q --profile "$profile" -p kiln-worker -p kiln-tests --bin kiln-worker --bin kiln-bench-remote
dir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
KILN_WORKER_EXE=$PWD/$dir/kiln-worker KILN_LOG=warn "$dir/kiln-bench-remote" "$@"
