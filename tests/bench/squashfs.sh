#!/usr/bin/env bash
# SquashFS writer benchmark: `kiln-worker squashfs` against `mksquashfs -processors 2 -noappend`
# on the same trees, same codec, level and block size, runs alternating (ours, mksquashfs, ours,
# ...) so that load from other processes hits both. Prints the median wall time and output size
# of each, their ratios, and whether `unsquashfs -lln` lists the two images identically.
#
# Goal (issue #4): at least 2x faster than mksquashfs at gzip-9 and zstd-3 with 2 threads, with
# output at most 1% larger. This script reports; it never fails on a missed goal.
#
# Environment:
#   RUNS       runs per tool and configuration (default 3)
#   THREADS    threads for both tools (default 2)
#   MINBASE    debootstrap rootfs (default /var/cache/kiln-tests/debian-minbase)
#   USR_PARTS  parts of /usr copied into the second tree (default "bin sbin lib/python3.11
#              share/doc"; "." copies all of /usr)
#   WORK       scratch directory (default target/bench-squashfs; the /usr copy is kept there)
#   CONFIGS    "codec:level" list (default "gzip:9 zstd:3")
set -euo pipefail

cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
MINBASE=${MINBASE:-/var/cache/kiln-tests/debian-minbase}
USR_PARTS=${USR_PARTS:-"bin sbin lib/python3.11 share/doc"}
WORK=${WORK:-$PWD/target/bench-squashfs}
CONFIGS=${CONFIGS:-"gzip:9 zstd:3"}
BLOCK=131072

command -v mksquashfs >/dev/null || { echo "mksquashfs not found (apt-get install squashfs-tools)" >&2; exit 1; }
cargo build --release -q -p kiln-worker
BIN=$PWD/target/release/kiln-worker
mkdir -p "$WORK"

trees=()
if [ -d "$MINBASE" ]; then
    trees+=("$MINBASE")
else
    echo "note: $MINBASE missing, skipping the debootstrap tree" >&2
fi
USR_COPY=$WORK/usr-copy
if [ ! -d "$USR_COPY" ]; then
    rm -rf "$USR_COPY.partial"
    mkdir -p "$USR_COPY.partial"
    for part in $USR_PARTS; do
        mkdir -p "$USR_COPY.partial/$(dirname "$part")"
        cp -a "/usr/$part" "$USR_COPY.partial/$part"
    done
    mv "$USR_COPY.partial" "$USR_COPY"
fi
trees+=("$USR_COPY")

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

printf '%-28s %-7s %9s %9s %7s %12s %12s %7s %s\n' tree codec ours_s mksq_s speedup ours_bytes mksq_bytes size listing
for tree in "${trees[@]}"; do
    tree_mib=$(du -sm "$tree" | cut -f1)
    for config in $CONFIGS; do
        codec=${config%%:*}
        level=${config##*:}
        ours_img=$WORK/ours.sqfs
        ref_img=$WORK/ref.sqfs
        ours_t=()
        ref_t=()
        for _ in $(seq "$RUNS"); do
            t0=$(now)
            "$BIN" squashfs "$tree" -o "$ours_img" --comp "$codec" --level "$level" \
                --block-size $BLOCK --threads "$THREADS" 2>/dev/null
            t1=$(now)
            mksquashfs "$tree" "$ref_img" -noappend -processors "$THREADS" -comp "$codec" \
                -Xcompression-level "$level" -b $BLOCK -quiet -no-progress >/dev/null
            t2=$(now)
            ours_t+=("$(echo "$t1 - $t0" | bc -l)")
            ref_t+=("$(echo "$t2 - $t1" | bc -l)")
        done
        ours_m=$(median "${ours_t[@]}")
        ref_m=$(median "${ref_t[@]}")
        ours_b=$(stat -c %s "$ours_img")
        ref_b=$(stat -c %s "$ref_img")
        if diff -q <(unsquashfs -lln "$ours_img") <(unsquashfs -lln "$ref_img") >/dev/null; then
            same=identical
        else
            same="$(diff <(unsquashfs -lln "$ours_img") <(unsquashfs -lln "$ref_img") | grep -c '^<') lines differ"
        fi
        printf '%-28s %-7s %9.2f %9.2f %6.2fx %12d %12d %6.3f %s\n' \
            "$(basename "$tree") (${tree_mib}M)" "$codec-$level" "$ours_m" "$ref_m" \
            "$(echo "$ref_m / $ours_m" | bc -l)" "$ours_b" "$ref_b" \
            "$(echo "$ours_b / $ref_b" | bc -l)" "$same"
        echo "  runs ours: ${ours_t[*]}" >&2
        echo "  runs mksquashfs: ${ref_t[*]}" >&2
    done
done
