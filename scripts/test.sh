#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit and integration, with the real
# kubectl and real HTTPS servers). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
