#!/usr/bin/env bash
# Installs nginx and the Nchan module from Debian's packages, only when missing.
# Idempotent: a second run installs nothing and prints the same report.
# Used by load-tests/src/nchan.ts (startNchan), which needs `nginx` on PATH and
# the nchan dynamic module under /usr/lib/nginx/modules.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

readonly PACKAGES=(nginx libnginx-mod-nchan)

missing=()
for pkg in "${PACKAGES[@]}"; do
  # dpkg-query exits non-zero for unknown packages; "install ok installed" is the only good state.
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  sudo_cmd=()
  if [[ "$(id -u)" -ne 0 ]]; then
    sudo_cmd=(sudo)
  fi
  echo "installing: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -q
  # policy-rc.d-less containers may try to start the packaged nginx service; that is harmless
  # (startNchan runs its own nginx with its own config) but must not fail the install.
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "already installed: ${PACKAGES[*]}"
fi

nginx_bin="$(command -v nginx || true)"
if [[ -z "$nginx_bin" && -x /usr/sbin/nginx ]]; then
  nginx_bin=/usr/sbin/nginx
fi
if [[ -z "$nginx_bin" ]]; then
  echo "error: nginx binary not found after install" >&2
  exit 1
fi

echo "nginx binary: $nginx_bin"
# nginx -v prints to stderr.
"$nginx_bin" -v 2>&1
echo "nchan package: $(dpkg-query -W -f='${Version}' libnginx-mod-nchan)"

module_so="$(dpkg-query -L libnginx-mod-nchan | grep -E '/ngx_nchan_module\.so$' | head -n1 || true)"
if [[ -z "$module_so" || ! -f "$module_so" ]]; then
  echo "error: ngx_nchan_module.so not found in libnginx-mod-nchan" >&2
  exit 1
fi
echo "nchan module: $module_so"

for conf in /usr/share/nginx/modules-available/*nchan*.conf /etc/nginx/modules-enabled/*nchan*.conf; do
  if [[ -e "$conf" ]]; then
    echo "nchan module conf: $conf -> $(tr -s ' \n' ' ' <"$conf")"
  fi
done
