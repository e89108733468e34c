#!/usr/bin/env bash
# Installs what `kinetic bench pull` needs besides the kinetic binary: the peers (containerd 1.6
# with ctr, pigz for its unpigz path, skopeo and umoci), the registry (docker-registry), the tools
# that build the benchmark images from Debian packages (debootstrap), and curl for the transfer
# floor, libdeflate-tools for the libdeflate decoder figure. Debian packages only; run as root.
# Bounded in time.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
timeout 300 apt-get update -qq
timeout 900 apt-get install -y -qq --no-install-recommends \
  containerd pigz skopeo umoci docker-registry debootstrap curl zstd ca-certificates \
  libdeflate-tools
# containerd is driven by the benchmark with its own config and directories; the packaged
# service (if the package started one) is not used.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl stop containerd || true
fi
containerd --version
ctr --version
