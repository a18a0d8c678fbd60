#!/usr/bin/env bash
# Installs what infra/local runs, from Debian's packages, only when missing: redis-server, redis-cli
# (redis-tools, which redis-server depends on; up.sh's REDIS_CLUSTER=1 forms the cluster with it),
# nginx, prometheus (which brings promtool). Needs root (or sudo). The packaged services are not
# used: up.sh starts its own processes with its own configuration, on loopback.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]} == 0)); then
  exit 0
fi
sudo_cmd=()
[[ "$(id -u)" -ne 0 ]] && sudo_cmd=(sudo)
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d-less containers may try to start the packaged services; harmless, up.sh never uses them.
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
