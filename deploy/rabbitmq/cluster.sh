#!/bin/bash
# One node of a three-node RabbitMQ cluster for the integration bus, from Debian's
# rabbitmq-server package (docs/high-availability.md, RabbitMQ). On each host:
#
#   cluster.sh node DIR ADDRESS         this node, in the foreground (for systemd, or `&`):
#                                       rabbit@ADDRESS listening on ADDRESS:5672, its
#                                       configuration, data and logs under DIR
#   cluster.sh join DIR ADDRESS SEED    on every node but the first, once it runs: wait for
#                                       it, then join the cluster of rabbit@SEED
#   cluster.sh ctl DIR ADDRESS ARGS...  rabbitmqctl against this node (cluster_status, ...)
#   cluster.sh queues DIR ADDRESS ARGS... rabbitmq-queues against this node (quorum_status)
#
# ADDRESS is the node's IP address, or a fully qualified name every node resolves: it names
# the node (long node names) and is where it listens. Environment:
#
#   RABBITMQ_CLUSTER_COOKIE    node: the Erlang cookie, the same on every node (required, a
#                              secret: whoever has it controls the node); kept in DIR/home
#   RABBITMQ_CLUSTER_PASSWORD  node: the password of the user the first node creates (required)
#   RABBITMQ_CLUSTER_USER      that user (integration); the vhost is `integration`
#   RABBITMQ_NET_TICKTIME      seconds until a silent peer counts as down (60; tests use 10)
#   RABBITMQ_AMQP_PORT         5672
#   RABBITMQ_BIN               /usr/lib/rabbitmq/bin: the scripts themselves, since the
#                              /usr/sbin wrappers switch user and use the host's own cookie
#
# The node reads its own rabbitmq.conf and env file under DIR, never /etc/rabbitmq's (Debian's
# rabbitmq-env.conf fixes the node name and binds to 127.0.0.1). A network partition pauses
# the nodes on its minority side (cluster_partition_handling = pause_minority): a node cut
# off from the other two closes its clients' connections instead of taking messages the
# others never see, and resumes by itself once it reaches them again.
set -eu

command=${1:?usage: cluster.sh node|join|ctl|queues DIR ADDRESS ...}
dir=${2:?the node directory}
address=${3:?the node address}
shift 3
bin=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
node="rabbit@$address"
port=${RABBITMQ_AMQP_PORT:-5672}

# The node's and the CLI's environment: the cookie in HOME, never the host's.
setup() {
    export HOME="$dir/home" RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_NODENAME="$node" \
        RABBITMQ_USE_LONGNAME=true RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_PID_FILE="$dir/rabbit.pid" ERL_EPMD_ADDRESS="$address"
}

setup

ctl() {
    "$bin/rabbitmqctl" -q -n "$node" "$@"
}

case "$command" in
node)
    : "${RABBITMQ_CLUSTER_COOKIE:?set RABBITMQ_CLUSTER_COOKIE, the same on every node}"
    : "${RABBITMQ_CLUSTER_PASSWORD:?set RABBITMQ_CLUSTER_PASSWORD}"
    mkdir -p "$dir/home"
    cookie="$dir/home/.erlang.cookie"
    rm -f "$cookie"
    (umask 077 && printf '%s' "$RABBITMQ_CLUSTER_COOKIE" > "$cookie")
    chmod 400 "$cookie"
    : > "$dir/rabbitmq-env.conf"
    # It holds the password: readable by its owner only from the moment it exists.
    rm -f "$dir/rabbitmq.conf"
    (umask 077 && cat > "$dir/rabbitmq.conf") <<EOF
listeners.tcp.default = $address:$port
net_ticktime = ${RABBITMQ_NET_TICKTIME:-60}
cluster_partition_handling = pause_minority
default_user = ${RABBITMQ_CLUSTER_USER:-integration}
default_pass = $RABBITMQ_CLUSTER_PASSWORD
default_vhost = integration
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
EOF
    chmod 600 "$dir/rabbitmq.conf"
    # One epmd per host, bound to the node's address (rabbitmq-server would start one too).
    epmd -daemon -address "$address"
    exec "$bin/rabbitmq-server"
    ;;
join)
    seed=${1:?the seed address}
    # The node registers with epmd early in its boot; the CLI can only reach it after that.
    for _ in $(seq 600); do
        epmd -names 2>/dev/null | grep -q "^name rabbit at" && break
        sleep 0.1
    done
    ctl await_startup --timeout 120
    ctl stop_app
    ctl join_cluster "rabbit@$seed"
    ctl start_app
    ;;
ctl)
    exec "$bin/rabbitmqctl" -n "$node" "$@"
    ;;
queues)
    exec "$bin/rabbitmq-queues" -n "$node" "$@"
    ;;
*)
    echo "unknown command $command: node, join, ctl or queues" >&2
    exit 2
    ;;
esac
