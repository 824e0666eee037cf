#!/usr/bin/env bash
# Benchmark: `docker://debian:bookworm` (the debootstrap minbase, one ~95 MB layer) to SIF,
#   A: kiln-worker build (a definition with only Bootstrap/From: the streaming path), vs
#   B: skopeo copy + umoci unpack (rootless) + mksquashfs + siftool new/add,
# at the same codec and level (gzip 9, mksquashfs's and Singularity's default), alternately,
# RUNS times each (default 3). Both start from a cold layer cache and write to the same disk.
# Prints per-run wall time and peak RSS (/usr/bin/time -v), then the median wall ratio B/A and
# each side's median peak RSS. Goal: ratio >= 2, worker RSS < 256 MiB. Never a pass/fail test.
#   usage: tests/bench/build-vs-tools.sh [REGISTRY_REF]   (default $KILN_TEST_DEBIAN, else a
#          private registry started here with the image pushed by tests/setup/debootstrap.sh)
# Run as root (CI) or as a user with subordinate ids; as root the worker runs as kiln-build.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-3}
cargo build -q --release -p kiln-worker
cargo build -q -p kiln-tests --bin kiln-fixtures
worker=$PWD/target/release/kiln-worker

work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
chmod 0777 "$work"
registry_pid=
cleanup() {
    if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

ref=${1:-${KILN_TEST_DEBIAN:-}}
if [ -z "$ref" ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$work/registry"
    cat > "$work/registry/config.yml" <<CFG
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry/data
http:
  addr: 127.0.0.1:$port
CFG
    docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
    ref=$(tests/setup/debootstrap.sh "127.0.0.1:$port")
fi
host=${ref%%/*}
echo ">> image $ref"

as_user=
if [ "$(id -u)" = 0 ]; then
    as_user="setpriv --reuid=kiln-build --regid=kiln-build --clear-groups --"
fi
export work worker host ref as_user

printf 'Bootstrap: docker\nFrom: %s\n' "$ref" > "$work/bench.def"
chmod 0644 "$work/bench.def"

# measure NAME CMD...: runs CMD under /usr/bin/time -v; appends "wall_s rss_kib" to $work/NAME.
measure() {
    local name=$1; shift  # $1: an exported function
    /usr/bin/time -v -o "$work/time.txt" bash -c "$1" >"$work/out.txt" 2>&1 || {
        cat "$work/out.txt" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$work/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    echo "$wall $rss" >> "$work/$name.times"
    printf '%-8s run: %6.2f s  peak RSS %7.1f MiB\n' "$name" "$wall" "$(echo "$rss/1024" | bc -l)"
}

kiln_run() {
    local d=$work/kiln; rm -rf "$d"; mkdir -p "$d"; chmod 0777 "$d"
    $as_user "$worker" build --insecure-registry "$host" --cache-dir "$d/cache" \
        --work-dir "$d/work" --comp gzip --level 9 -o "$d/out.sif" "$work/bench.def"
}

tools_run() {
    local d=$work/tools; rm -rf "$d"; mkdir -p "$d"; chmod 0777 "$d"
    $as_user env HOME="$d" bash -c '
        set -euo pipefail
        d=$1; ref=$2
        skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$d/layout:img"
        umoci unpack --rootless --image "$d/layout:img" "$d/bundle" >/dev/null
        mksquashfs "$d/bundle/rootfs" "$d/rootfs.squashfs" -noappend -comp gzip \
            -Xcompression-level 9 -no-progress -quiet
        printf "Bootstrap: docker\nFrom: %s\n" "$ref" > "$d/def"
        siftool new "$d/out.sif"
        siftool add --datatype 1 "$d/out.sif" "$d/def"
        siftool add --datatype 4 --parttype 1 --partfs 1 --partarch 2 "$d/out.sif" "$d/rootfs.squashfs"
    ' _ "$d" "$ref"
}

export -f kiln_run tools_run

for i in $(seq "$runs"); do
    echo ">> round $i"
    measure kiln kiln_run
    measure tools tools_run
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
kiln_wall=$(cut -d' ' -f1 "$work/kiln.times" | median)
tools_wall=$(cut -d' ' -f1 "$work/tools.times" | median)
kiln_rss=$(cut -d' ' -f2 "$work/kiln.times" | median)
tools_rss=$(cut -d' ' -f2 "$work/tools.times" | median)
echo
printf 'median wall: kiln-worker %.2f s, skopeo+umoci+mksquashfs+siftool %.2f s, ratio %.2fx (goal >= 2)\n' \
    "$kiln_wall" "$tools_wall" "$(echo "$tools_wall/$kiln_wall" | bc -l)"
printf 'median peak RSS: kiln-worker %.1f MiB (goal < 256), tools (largest single process) %.1f MiB\n' \
    "$(echo "$kiln_rss/1024" | bc -l)" "$(echo "$tools_rss/1024" | bc -l)"
