#!/usr/bin/env bash
# Creates the unprivileged build user that runs sandboxed scripts (default `kiln-build`), with a
# range of 65536 subordinate uids and gids in /etc/subuid and /etc/subgid, so that newuidmap and
# newgidmap can map the full range (inner 0 -> the user, inner 1..65536 -> the range).
# Idempotent; run as root or through sudo. Prints the user's uid, gid and ranges.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

user=${KILN_BUILD_USER:-kiln-build}
count=65536

ensure_packages uidmap

if ! getent passwd "$user" >/dev/null; then
    echo ">> creating the build user $user"
    # No home, no login shell: the user only owns build trees and sandboxed processes.
    as_root useradd --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$user"
fi

# next_free_start FILE: the first id above every range in FILE and above 100000, so a new range
# never overlaps another user's (useradd's own allocation starts at 100000 too).
next_free_start() {
    awk -F: 'BEGIN { s = 100000 } NF == 3 && $2 + $3 > s { s = $2 + $3 } END { print s }' "$1"
}

# has_range FILE: true when FILE gives the user (by name or uid) a range of at least $count ids.
has_range() {
    local uid
    uid=$(id -u "$user")
    awk -F: -v u="$user" -v id="$uid" -v n="$count" \
        '($1 == u || $1 == id) && $3 >= n { found = 1 } END { exit !found }' "$1"
}

for kind in uid gid; do
    file=/etc/sub$kind
    [ -e "$file" ] || as_root touch "$file"
    if ! has_range "$file"; then
        start=$(next_free_start "$file")
        echo ">> giving $user the subordinate ${kind}s $start-$((start + count - 1))"
        as_root usermod "--add-sub${kind}s" "$start-$((start + count - 1))" "$user"
    fi
done

echo ">> build user $user: uid $(id -u "$user"), gid $(id -g "$user")," \
    "subuid $(grep "^$user:" /etc/subuid | head -n1), subgid $(grep "^$user:" /etc/subgid | head -n1)"
