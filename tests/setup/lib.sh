# Shared by ./tests/run.sh and ./deploy/quickstart.sh: run as root or through sudo, idempotently.

# as_root CMD...: run CMD as root, through sudo when we are not root.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_packages PKG...: install the Debian packages that are missing, waiting for apt's lock
# (other installs may run on the same machine) rather than failing.
ensure_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo ">> installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${missing[@]}"
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# ensure_rabbitmq: RabbitMQ installed and answering on 127.0.0.1:5672.
ensure_rabbitmq() {
    ensure_packages rabbitmq-server
    if port_open 127.0.0.1 5672; then return 0; fi
    echo ">> starting RabbitMQ"
    # systemd is not running on every machine (containers, CI VMs): start the node directly.
    as_root rabbitmq-server -detached
    local i
    for i in $(seq 1 60); do
        port_open 127.0.0.1 5672 && { echo ">> RabbitMQ is up"; return 0; }
        sleep 1
    done
    echo "RabbitMQ did not open 127.0.0.1:5672 within 60 s" >&2
    return 1
}
