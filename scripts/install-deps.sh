#!/usr/bin/env bash
# Installs what building, testing and running Kinetic needs on Debian 12, as root. Idempotent:
# only missing packages are installed.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
# A C compiler for the bundled SQLite; curl for the demo's health checks.
have cc || need+=(gcc libc6-dev)
have curl || need+=(curl)
# kubectl: this machine ships one at /usr/bin/kubectl; on a fresh machine Debian's
# kubernetes-client provides it.
have kubectl || need+=(kubernetes-client)
# The node agent runs pods with runc, wires their network with the standard CNI plugins and
# creates network namespaces with iproute2. Tests run a local OCI registry (docker-registry), build
# their images from busybox-static, and compare against skopeo + umoci.
have runc || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
have ip || need+=(iproute2)
have docker-registry || need+=(docker-registry)
[ -x /bin/busybox ] || need+=(busybox-static)
have skopeo || need+=(skopeo)
have umoci || need+=(umoci)
# `kinetic bench serve` compares the serving gateway with Debian's nginx as a reverse proxy.
[ -x /usr/sbin/nginx ] || need+=(nginx)

if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing ${need[*]}; run as root so they can be installed" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Only the programs are wanted: no package's service (nginx on port 80, a registry on 5000)
  # is started, as Debian's policy-rc.d convention allows.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! have cargo; then
  echo "error: no Rust toolchain: Kinetic needs Rust 1.95 (rustup's stable) on PATH" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
