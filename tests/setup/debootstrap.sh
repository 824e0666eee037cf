#!/usr/bin/env bash
# The realistic base image for benchmarks and heavy tests, made once per machine:
#   1. /var/cache/kiln-tests/debian-minbase: `debootstrap --variant=minbase bookworm` from the
#      Debian mirror apt uses (~40 s, ~200 MB), built in a private .tmp dir and renamed at the end;
#   2. /var/cache/kiln-tests/debian-bookworm.oci: that tree packed by `kiln-fixtures pack-rootfs`
#      as a one-layer OCI layout (tag bookworm);
#   3. with a REGISTRY argument (host:port, plain HTTP), pushed there as debian:bookworm, whose
#      reference is printed on stdout.
# Both caches are reused as they are; delete them to rebuild. KILN_TEST_CACHE moves them.
#   usage: tests/setup/debootstrap.sh [REGISTRY]
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/setup/lib.sh

cache=${KILN_TEST_CACHE:-/var/cache/kiln-tests}
rootfs=$cache/debian-minbase
layout=$cache/debian-bookworm.oci
fixtures=${CARGO_TARGET_DIR:-target}/debug/kiln-fixtures

# debian_mirror: the first Debian archive URL apt is configured with (no internet but the mirror).
debian_mirror() {
    local url
    url=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
            /etc/apt/sources.list.d/*.list |
        grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ') || true
    echo "${url:-http://deb.debian.org/debian}"
}

if [ ! -d "$rootfs" ]; then
    tmp=$rootfs.tmp.$$
    trap 'as_root rm -rf "$tmp"' EXIT
    mirror=$(debian_mirror)
    echo ">> debootstrap bookworm minbase from $mirror into $rootfs" >&2
    as_root mkdir -p "$cache"
    as_root debootstrap --variant=minbase bookworm "$tmp" "$mirror" >&2
    # -T: fail rather than nest ours inside a tree another run finished first.
    as_root mv -T "$tmp" "$rootfs" 2>/dev/null || echo ">> another run made $rootfs first" >&2
fi

[ -x "$fixtures" ] || cargo build -q -p kiln-tests --bin kiln-fixtures
# Root: the tree has root-only files (/etc/shadow) and the cache is root's.
as_root "$fixtures" pack-rootfs --rootfs "$rootfs" --out "$layout" --tag bookworm >&2

if [ $# -ge 1 ]; then
    skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
        "oci:$layout:bookworm" "docker://$1/debian:bookworm" >&2
    echo "$1/debian:bookworm"
fi
