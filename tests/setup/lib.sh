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

# rabbitmqctl_node ARGS...: rabbitmqctl against the node this script manages (RABBITMQ_NODENAME
# when set, as rabbitmq-server itself reads it; else the package's default node).
rabbitmqctl_node() {
    as_root rabbitmqctl ${RABBITMQ_NODENAME:+-n "$RABBITMQ_NODENAME"} "$@"
}

# ensure_rabbitmq: RabbitMQ installed and answering on 127.0.0.1:${RABBITMQ_NODE_PORT:-5672}.
# Sets RABBITMQ_STARTED to how it started the broker (systemd | detached), or leaves it empty when
# the broker was already running, so the caller can stop only what it started.
RABBITMQ_STARTED=
ensure_rabbitmq() {
    local port=${RABBITMQ_NODE_PORT:-5672}
    ensure_packages rabbitmq-server
    if port_open 127.0.0.1 "$port"; then return 0; fi
    echo ">> starting RabbitMQ"
    if [ -d /run/systemd/system ] && [ -z "${RABBITMQ_NODENAME:-}" ]; then
        as_root systemctl start rabbitmq-server
        RABBITMQ_STARTED=systemd
    else
        # systemd is not running on every machine (containers, CI VMs): start the node directly.
        # Debian's wrapper runs it as the rabbitmq user; `su` there keeps RABBITMQ_* variables.
        as_root rabbitmq-server -detached
        RABBITMQ_STARTED=detached
    fi
    local i
    for i in $(seq 1 90); do
        port_open 127.0.0.1 "$port" && { echo ">> RabbitMQ is up on 127.0.0.1:$port"; return 0; }
        sleep 1
    done
    echo "RabbitMQ did not open 127.0.0.1:$port within 90 s" >&2
    return 1
}

# stop_rabbitmq HOW: stops a broker that ensure_rabbitmq started HOW (systemd | detached).
stop_rabbitmq() {
    case "$1" in
    systemd) as_root systemctl stop rabbitmq-server ;;
    detached) rabbitmqctl_node stop ;;
    esac
}
