#!/usr/bin/env bash
# The test command: installs test-only packages, starts the private registries with the fixture
# images, then runs the format check, clippy and the whole test suite. Idempotent; leaves no process
# behind.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup/lib.sh
start=$(date +%s)

ensure_packages ca-certificates gcc libc6-dev pkg-config git \
    squashfs-tools siftool docker-registry skopeo umoci uidmap apache2-utils debootstrap busybox-static
ensure_rabbitmq

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

echo ">> tests/run.sh passed in $(( $(date +%s) - start )) s"
