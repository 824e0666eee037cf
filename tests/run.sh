#!/usr/bin/env bash
# The test command: installs test-only packages, starts the private registries with the fixture
# images, then runs the format check, clippy and the whole test suite. Idempotent; leaves no process
# behind.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/setup/lib.sh
start=$(date +%s)

ensure_packages ca-certificates gcc libc6-dev pkg-config git \
    squashfs-tools siftool docker-registry skopeo umoci uidmap apache2-utils debootstrap busybox-static \
    chromium chromium-driver \
    podman runc binutils  # chromium: the browser tests; podman: the autoscaler test's worker containers (runc)
# The library interop test builds a Go program against Apptainer's library client from Debian,
# and runs an S3 server (moto, from PyPI into a venv under target/ on first use).
ensure_packages golang-go golang-github-apptainer-container-library-client-dev \
    golang-github-sylabs-json-resp-dev python3 python3-venv
ensure_rabbitmq
tests/setup/build-user.sh  # kiln-build with subordinate ids: the sandbox tests run as it

tmp=$(mktemp -d -t kiln-run.XXXXXX)
serve_pid=
cleanup() {
    if [ -n "$serve_pid" ]; then
        kill -TERM "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    # A broker this run had to start goes too; one that was already running stays.
    stop_rabbitmq "$RABBITMQ_STARTED"
}
trap cleanup EXIT

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
tests/setup/validate-manifests.sh  # deploy/kubernetes against the Kubernetes schemas

# Two registries on free 127.0.0.1 ports, plain and with basic auth, holding the fixtures built
# by tests/src/fixtures.rs; kiln-fixtures stops them on SIGTERM (or on the Ctrl-C every process
# of the foreground group gets).
cargo build -q -p kiln-tests --bin kiln-fixtures
"${CARGO_TARGET_DIR:-target}/debug/kiln-fixtures" serve --env-file "$tmp/env" &
serve_pid=$!
until [ -s "$tmp/env" ]; do
    kill -0 "$serve_pid" 2>/dev/null || { echo "kiln-fixtures serve failed" >&2; exit 1; }
    sleep 0.1
done
# KILN_TEST_REGISTRY, KILN_TEST_REGISTRY_AUTH(_USER, _PASSWORD): the contract in tests/README.md.
. "$tmp/env"
KILN_TEST_DEBIAN=$(tests/setup/debootstrap.sh "$KILN_TEST_REGISTRY")
export KILN_TEST_DEBIAN
echo ">> fixtures ready after $(( $(date +%s) - start )) s"

cargo test --workspace

echo ">> tests/run.sh passed in $(( $(date +%s) - start )) s"
