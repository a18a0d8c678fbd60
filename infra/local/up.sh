#!/usr/bin/env bash
# Brings the deployment's topology up on loopback from Debian's packages, for machines without
# Docker: redis-server, three edge nodes, nginx as the load balancer (infra/nginx/plate.local.conf
# and plate-proxy.conf) and Prometheus (infra/prometheus/prometheus.yml and alerts.yml), the same
# files the compose stack uses but for the addresses. Everything runs in the foreground of its own
# process, logs and state in one folder; down.sh stops what this started.
#
#   npm run build && bash infra/local/install.sh && bash infra/local/up.sh
#
# Settings (environment): PLATE_LOCAL_DIR (the folder; default /tmp/plate-local), LB_PORT (18080),
# EDGE_PORTS ("18081 18082 18083"), REDIS_PORT (16379), PROMETHEUS_PORT (19090),
# SCRAPE_INTERVAL (15s), READY_TIMEOUT_S (how long the edges and nginx may take to answer; 30),
# ADMIN_TOKEN (made up when unset), BOOTSTRAP_PLATES (default: plate `demo` with a key made up
# when unset, printed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${PLATE_LOCAL_DIR:-/tmp/plate-local}"
LB_PORT="${LB_PORT:-18080}"
read -r -a EDGE_PORTS <<<"${EDGE_PORTS:-18081 18082 18083}"
REDIS_PORT="${REDIS_PORT:-16379}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-19090}"
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-15s}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-30}"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
EDGE_MAIN="$ROOT/apps/edge/dist/main.js"

random() { node -e "console.log(require('node:crypto').randomBytes(18).toString('base64url'))"; }
ADMIN_TOKEN="${ADMIN_TOKEN:-$(random)}"
DEMO_KEY="pk_local_$(random)"
# Not "${BOOTSTRAP_PLATES:-{...}}": the default's own } would close the expansion early and append
# a stray } to a value that is set.
DEFAULT_PLATES="{\"demo\":\"$DEMO_KEY\"}"
BOOTSTRAP_PLATES="${BOOTSTRAP_PLATES:-$DEFAULT_PLATES}"

for tool in redis-server "$NGINX" prometheus promtool node; do
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

start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR/redis" \
  --appendonly yes --save "" --maxmemory-policy noeviction
for i in "${!EDGE_PORTS[@]}"; do
  start "edge$((i + 1))" env PORT="${EDGE_PORTS[$i]}" HOST=127.0.0.1 REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    ADMIN_TOKEN="$ADMIN_TOKEN" BOOTSTRAP_PLATES="$BOOTSTRAP_PLATES" MAX_PENDING_CONNECTIONS_PER_ADDRESS=0 node "$EDGE_MAIN"
done
start nginx "$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;"
start prometheus prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"

# Ready when every edge says so and the load balancer answers.
for _ in $(seq 1 $((READY_TIMEOUT_S * 10))); do
  ready=1
  for port in "${EDGE_PORTS[@]}"; do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 || ready=0
  done
  curl -fsS "http://127.0.0.1:$LB_PORT/healthz" >/dev/null 2>&1 || ready=0
  ((ready == 1)) && break
  sleep 0.1
done
if ((ready != 1)); then
  echo "the topology did not come up; logs in $DIR/logs" >&2
  exit 1
fi

cat <<DONE
Plate on loopback, logs in $DIR/logs (stop with: PLATE_LOCAL_DIR=$DIR bash infra/local/down.sh)
  load balancer  http://127.0.0.1:$LB_PORT
  edges          ${EDGE_PORTS[*]/#/http://127.0.0.1:}
  prometheus     http://127.0.0.1:$PROMETHEUS_PORT
  admin token    $ADMIN_TOKEN
DONE
if [[ "$BOOTSTRAP_PLATES" == *"$DEMO_KEY"* ]]; then
  echo "  plate demo, key $DEMO_KEY"
fi
