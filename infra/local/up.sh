#!/usr/bin/env bash
# Brings the deployment's topology up on loopback from Debian's packages, for machines without
# Docker: redis-server (or a Redis Cluster, REDIS_CLUSTER=1 below), three edge nodes, nginx as the
# load balancer (infra/nginx/plate.local.conf and plate-proxy.conf) and Prometheus
# (infra/prometheus/prometheus.yml and alerts.yml), the same files the compose stack uses but for
# the addresses. Everything runs in the foreground of its own process, logs and state in one
# folder; down.sh stops what this started.
#
#   npm run build && bash infra/local/install.sh && bash infra/local/up.sh
#
# Settings (environment): PLATE_LOCAL_DIR (the folder; default /tmp/plate-local), LB_PORT (18080),
# EDGE_PORTS ("18081 18082 18083"), REDIS_PORT (16379), PROMETHEUS_PORT (19090),
# SCRAPE_INTERVAL (15s), READY_TIMEOUT_S (how long the edges and nginx, and each step of forming a
# cluster, may take; 30), ADMIN_TOKEN (made up when unset), BOOTSTRAP_PLATES (default: plate `demo`
# with a key made up when unset, printed).
#
# REDIS_CLUSTER=1 puts a Redis Cluster (7+) in place of the one redis-server: six redis-servers on
# REDIS_CLUSTER_BASE_PORT (17000) and the five ports after it, their cluster buses on
# REDIS_CLUSTER_BUS_BASE_PORT (27000, Redis' own choice for 17000: port + 10000) and after. Three
# masters, the fewest that keep a majority to vote a replica in when one dies, and one replica
# each. The edges get REDIS_CLUSTER_NODES (the masters as seeds) instead of REDIS_URL. The cluster
# keeps nothing on disk and is formed anew by every up.sh; REDIS_PORT is then unused.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${PLATE_LOCAL_DIR:-/tmp/plate-local}"
LB_PORT="${LB_PORT:-18080}"
read -r -a EDGE_PORTS <<<"${EDGE_PORTS:-18081 18082 18083}"
REDIS_PORT="${REDIS_PORT:-16379}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-19090}"
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-15s}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-30}"
REDIS_CLUSTER="${REDIS_CLUSTER:-0}"
REDIS_CLUSTER_BASE_PORT="${REDIS_CLUSTER_BASE_PORT:-17000}"
REDIS_CLUSTER_BUS_BASE_PORT="${REDIS_CLUSTER_BUS_BASE_PORT:-27000}"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
EDGE_MAIN="$ROOT/apps/edge/dist/main.js"

random() { node -e "console.log(require('node:crypto').randomBytes(18).toString('base64url'))"; }
ADMIN_TOKEN="${ADMIN_TOKEN:-$(random)}"
DEMO_KEY="pk_local_$(random)"
# Not "${BOOTSTRAP_PLATES:-{...}}": the default's own } would close the expansion early and append
# a stray } to a value that is set.
DEFAULT_PLATES="{\"demo\":\"$DEMO_KEY\"}"
BOOTSTRAP_PLATES="${BOOTSTRAP_PLATES:-$DEFAULT_PLATES}"

tools=(redis-server "$NGINX" prometheus promtool node)
[[ "$REDIS_CLUSTER" == 1 ]] && tools+=(redis-cli)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool: run bash infra/local/install.sh" >&2; exit 1; }
done
[[ -f "$EDGE_MAIN" ]] || { echo "missing $EDGE_MAIN: run npm run build" >&2; exit 1; }
if [[ -f "$DIR/pids" ]]; then
  echo "$DIR/pids exists: run infra/local/down.sh first" >&2
  exit 1
fi
mkdir -p "$DIR/redis" "$DIR/prometheus-data" "$DIR/nginx" "$DIR/logs"

# Configuration: the shipped files, with this run's addresses.
upstreams=""
targets=""
for port in "${EDGE_PORTS[@]}"; do
  upstreams+="    server 127.0.0.1:$port;\n"
  targets+="\"127.0.0.1:$port\", "
done
sed -e '/^    server 127\.0\.0\.1:1808[1-3];$/d' \
    -e "s|^upstream plate_edges {|upstream plate_edges {\n$upstreams|" \
    -e "s|listen 127\.0\.0\.1:18080;|listen 127.0.0.1:$LB_PORT;|" \
    "$ROOT/infra/nginx/plate.local.conf" >"$DIR/nginx/plate.local.conf"
cp "$ROOT/infra/nginx/plate-proxy.conf" "$ROOT/infra/nginx/plate-limits.conf" "$DIR/nginx/"
cat >"$DIR/nginx/nginx.conf" <<NGINX
# The main configuration of infra/local's nginx (the shipped files do the load balancing).
worker_processes 1;
pid $DIR/nginx/nginx.pid;
error_log $DIR/logs/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log $DIR/logs/nginx-access.log;
  client_body_temp_path $DIR/nginx/body;
  proxy_temp_path $DIR/nginx/proxy;
  fastcgi_temp_path $DIR/nginx/fastcgi;
  uwsgi_temp_path $DIR/nginx/uwsgi;
  scgi_temp_path $DIR/nginx/scgi;
  include plate.local.conf;
}
NGINX
sed -e "s|^  scrape_interval: 15s|  scrape_interval: $SCRAPE_INTERVAL|" \
    -e "s|^      - targets: .*|      - targets: [${targets%, }]|" \
    "$ROOT/infra/prometheus/prometheus.yml" >"$DIR/prometheus.yml"
cp "$ROOT/infra/prometheus/alerts.yml" "$DIR/alerts.yml"

# Refuse to start on a configuration nginx or Prometheus would not take.
"$NGINX" -t -q -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf"
promtool check config "$DIR/prometheus.yml" >/dev/null

: >"$DIR/pids"
start() { # name, command...
  local name="$1"
  shift
  "$@" >>"$DIR/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$DIR/pids"
}

# Runs "$@" every 0.1 s until it succeeds, for READY_TIMEOUT_S at most; then fails saying what.
wait_until() { # what, command...
  local what="$1"
  shift
  for _ in $(seq 1 $((READY_TIMEOUT_S * 10))); do
    "$@" && return 0
    sleep 0.1
  done
  echo "$what within ${READY_TIMEOUT_S} s; logs in $DIR/logs (stop with down.sh)" >&2
  return 1
}

if [[ "$REDIS_CLUSTER" == 1 ]]; then
  # Three masters, then the three replicas redis-cli --cluster create gives them, in that order.
  CLUSTER_PORTS=()
  for i in 0 1 2 3 4 5; do CLUSTER_PORTS+=($((REDIS_CLUSTER_BASE_PORT + i))); done
  cluster_answers() {
    local port
    for port in "${CLUSTER_PORTS[@]}"; do
      [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]] || return 1
    done
  }
  cluster_ok() {
    local port
    for port in "${CLUSTER_PORTS[@]}"; do
      [[ "$(redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null)" == *cluster_state:ok* ]] || return 1
    done
  }
  # A nodes file left by an earlier run would make a node refuse to join a new cluster.
  mkdir -p "$DIR/redis-cluster"
  rm -f "$DIR/redis-cluster"/nodes-*.conf
  for i in "${!CLUSTER_PORTS[@]}"; do
    port="${CLUSTER_PORTS[$i]}"
    # cluster-node-timeout 1000 ms: on loopback a node silent for 1 s is down, so its replica takes
    # over within about 2 s (Redis' default, 15 s, allows for real networks). No delay before a
    # replica's diskless sync (default 5 s, to wait for more replicas): it is ready at once.
    start "redis-$port" redis-server --bind 127.0.0.1 --port "$port" --dir "$DIR/redis-cluster" \
      --cluster-enabled yes --cluster-config-file "$DIR/redis-cluster/nodes-$port.conf" \
      --cluster-port "$((REDIS_CLUSTER_BUS_BASE_PORT + i))" --cluster-node-timeout 1000 \
      --cluster-require-full-coverage no --repl-diskless-sync-delay 0 \
      --save "" --appendonly no --maxmemory-policy noeviction
  done
  wait_until "the cluster's redis-servers did not answer" cluster_answers
  redis-cli --cluster create "${CLUSTER_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 1 --cluster-yes \
    >>"$DIR/logs/redis-cluster-create.log" 2>&1 ||
    { echo "redis-cli --cluster create failed; see $DIR/logs/redis-cluster-create.log (stop with down.sh)" >&2; exit 1; }
  # A master says cluster_state:ok no sooner than 2 s after it started (Redis waits that long for
  # a rebooted master's slots to be settled by the others).
  wait_until "the cluster did not reach cluster_state:ok" cluster_ok
  # The masters as seeds; the edges read the rest of the cluster from them.
  seeds=()
  for port in "${CLUSTER_PORTS[@]:0:3}"; do seeds+=("127.0.0.1:$port"); done
  redis_env=(REDIS_CLUSTER_NODES="$(IFS=,; echo "${seeds[*]}")")
else
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR/redis" \
    --appendonly yes --save "" --maxmemory-policy noeviction
  redis_env=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT")
fi
for i in "${!EDGE_PORTS[@]}"; do
  start "edge$((i + 1))" env PORT="${EDGE_PORTS[$i]}" HOST=127.0.0.1 "${redis_env[@]}" \
    ADMIN_TOKEN="$ADMIN_TOKEN" BOOTSTRAP_PLATES="$BOOTSTRAP_PLATES" MAX_PENDING_CONNECTIONS_PER_ADDRESS=0 node --max-semi-space-size=4 "$EDGE_MAIN"
done
start nginx "$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;"
start prometheus prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"

# Ready when every edge says so and the load balancer answers.
topology_ready() {
  local port
  for port in "${EDGE_PORTS[@]}"; do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 || return 1
  done
  curl -fsS "http://127.0.0.1:$LB_PORT/healthz" >/dev/null 2>&1
}
wait_until "the topology did not come up" topology_ready

cat <<DONE
Plate on loopback, logs in $DIR/logs (stop with: PLATE_LOCAL_DIR=$DIR bash infra/local/down.sh)
  load balancer  http://127.0.0.1:$LB_PORT
  edges          ${EDGE_PORTS[*]/#/http://127.0.0.1:}
  redis          ${redis_env[0]}
  prometheus     http://127.0.0.1:$PROMETHEUS_PORT
  admin token    $ADMIN_TOKEN
DONE
if [[ "$BOOTSTRAP_PLATES" == *"$DEMO_KEY"* ]]; then
  echo "  plate demo, key $DEMO_KEY"
fi
