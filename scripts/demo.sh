#!/usr/bin/env bash
# Runs the main job on the data shipped in the repo: builds a Hermes home from a
# real capture (fixtures/hermes-<version>/home, SQL dumps + session files) under
# target/demo/, then exports it. Extra arguments go to `hermes-harvest export`.
#
#   scripts/demo.sh                          # SFT JSONL of the 0.19.0 capture on stdout
#   scripts/demo.sh --channel nexus --format dpo
#   VERSION=0.13.0 scripts/demo.sh --out target/demo/out/
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${VERSION:-0.19.0}"
HOME_DIR="target/demo/hermes-$VERSION"
cargo build --release --quiet --example fixture-home --bin hermes-harvest
if [ ! -e "$HOME_DIR/state.db" ]; then
  rm -rf "$HOME_DIR"
  target/release/examples/fixture-home "fixtures/hermes-$VERSION/home" "$HOME_DIR" >&2
fi
target/release/hermes-harvest sources --hermes-home "$HOME_DIR" >&2
exec target/release/hermes-harvest export --hermes-home "$HOME_DIR" "$@"
