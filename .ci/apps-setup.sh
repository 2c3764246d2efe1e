#!/usr/bin/env bash
# Programs the application tests (tests/apps) drive in network namespaces. Idempotent.
set -euo pipefail
need=()
for program in wireguard-go:wireguard-go wg:wireguard-tools swanctl:strongswan-swanctl \
    ping:iputils-ping openssl:openssl ip:iproute2; do
  command -v "${program%%:*}" >/dev/null 2>&1 || need+=("${program##*:}")
done
[ -e /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] || need+=(libcharon-extra-plugins)
[ -e /usr/lib/ipsec/charon ] || need+=(charon-systemd strongswan-charon)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
