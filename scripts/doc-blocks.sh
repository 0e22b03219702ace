#!/usr/bin/env bash
# Runs every shell block of README.md and docs/*.md that is marked runnable, so that
# what the documentation tells you to type works as written.
#
#   scripts/doc-blocks.sh                 # every file
#   scripts/doc-blocks.sh docs/cron.md    # some files
#
# A runnable block is a ```sh block whose line before is `<!-- runnable -->`, or
# `<!-- runnable: exit N -->` when the block is meant to end with exit code N. The blocks
# of one file run in order (a later block may use what an earlier one wrote), each as
# `bash -euo pipefail`, in a fresh temporary directory per file where:
#
#   * HOME is that directory, and HERMES_HOME is $HOME/.hermes, a Hermes home built from
#     a real capture (fixtures/hermes-$VERSION/home, VERSION=0.19.0 by default);
#   * `hermes-harvest` on PATH is this checkout's debug build (built first);
#   * fixtures/, schemas/ and scripts/ of the checkout are linked in, so a block can
#     name fixtures/tokenizer/chatml as the docs do.
#
# Blocks that need what the fixtures cannot give (a running Hermes, a trainer, a GPU) are
# left unmarked; the docs say where they were run. Exits 1 when any block failed, after
# printing its output.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
VERSION="${VERSION:-0.19.0}"
cargo build --quiet --bin hermes-harvest --example fixture-home
BIN_DIR="$REPO/target/debug"

if [ $# -gt 0 ]; then FILES=("$@"); else FILES=(README.md docs/*.md); fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/doc-blocks.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Writes each runnable block of $1 into $2/NNN.sh, with its expected code in NNN.code
# and its first line number in NNN.line.
extract() {
  awk -v dir="$2" '
    /^<!-- runnable(: exit [0-9]+)? -->$/ {
      code = 0
      if (match($0, /exit [0-9]+/)) code = substr($0, RSTART + 5, RLENGTH - 5)
      armed = NR; next
    }
    armed && NR == armed + 1 && /^```sh$/ {
      n++; file = sprintf("%s/%03d", dir, n)
      print code > (file ".code"); print NR + 1 > (file ".line")
      printf "" > (file ".sh"); inside = 1; armed = 0; next
    }
    inside && /^```$/ { inside = 0; close(file ".sh"); next }
    inside { print >> (file ".sh"); next }
    { armed = 0 }
  ' "$1"
}

failed=0
total=0
for doc in "${FILES[@]}"; do
  name="$(echo "$doc" | tr '/.' '__')"
  blocks="$WORK/$name.blocks"
  mkdir -p "$blocks"
  extract "$doc" "$blocks"
  ls "$blocks"/*.sh >/dev/null 2>&1 || continue
  home="$WORK/$name.home"
  mkdir -p "$home"
  "$BIN_DIR/examples/fixture-home" "fixtures/hermes-$VERSION/home" "$home/.hermes" >/dev/null 2>&1
  for d in fixtures schemas scripts; do ln -s "$REPO/$d" "$home/$d"; done
  for block in "$blocks"/*.sh; do
    base="${block%.sh}"
    want="$(cat "$base.code")"
    line="$(cat "$base.line")"
    total=$((total + 1))
    set +e
    (cd "$home" && env -u HERMES_API_URL -u API_SERVER_KEY HOME="$home" \
      HERMES_HOME="$home/.hermes" PATH="$BIN_DIR:$PATH" \
      bash -euo pipefail "$block") >"$base.out" 2>&1 </dev/null
    got=$?
    set -e
    if [ "$got" = "$want" ]; then
      echo "ok    $doc:$line"
    else
      failed=$((failed + 1))
      echo "FAIL  $doc:$line: exit $got, wanted $want"
      sed 's/^/      | /' "$base.out" | tail -40
    fi
  done
done
echo "doc-blocks: $((total - failed)) passed, $failed failed"
[ "$failed" = 0 ]
