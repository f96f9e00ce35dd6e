#!/usr/bin/env bash
# Installs what metald and its tests need on Debian 12 (run as root):
# Debian packages (only those missing) and the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(iproute2 iputils-ping nftables radvd ndisc6 tcpdump python3-scapy ipv6toolkit thc-ipv6 iperf3 procps psmisc kmod openssl
  qemu-system-x86 cpio gcc libc6-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci also runs `buf generate` (postinstall), producing src/gen from proto/.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
[ -d src/gen ] || npx buf generate
