#!/usr/bin/env bash
# One entry point for the Python side of token budgeting (not part of `cargo test`).
#
#   scripts/tokenizer.sh fixture              rebuild fixtures/tokenizer/{chatml,chatml-config}
#   scripts/tokenizer.sh golden [--resample]  fixtures/tokenizer/golden/counts.json + rendered/
#                                             (--resample: first rebuild samples.jsonl from real
#                                             exports; needs target/release/hermes-harvest)
#   scripts/tokenizer.sh calibrate            fixtures/tokenizer/calibration.json
#   scripts/tokenizer.sh prefix-diff          fixtures/tokenizer/golden/prefix-diff.json (trainable
#                                             tokens of a template without generation blocks)
#   scripts/tokenizer.sh families             fixtures/tokenizer/golden/families.json (the golden
#                                             renderings counted by every real tokenizer)
#   scripts/tokenizer.sh estimate             the per-family estimate's constants and figures
#                                             (src/tokens/family.rs; standard library only)
#   scripts/tokenizer.sh judge FILE.jsonl --tokenizer DIR --max-length N
#   scripts/tokenizer.sh all                  fixture, golden, calibrate
#
# The venv (pinned transformers, tokenizers, jinja2 and the packages that ship real
# tokenizers) is built by scripts/trainer-venv.sh under target/trainer-venv/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = estimate ]; then
  shift
  exec python3 scripts/tokenizer/estimate_fit.py "$@"
fi
VENV="$(scripts/trainer-venv.sh)"
PY="$VENV/bin/python"
export PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_VERBOSITY=error TRANSFORMERS_NO_ADVISORY_WARNINGS=1

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  fixture) exec "$PY" scripts/tokenizer/build_fixture.py "$@" ;;
  golden) exec "$PY" scripts/tokenizer/golden.py "$@" ;;
  calibrate) exec "$PY" scripts/tokenizer/calibrate.py "$@" ;;
  judge) exec "$PY" scripts/tokenizer/judge.py "$@" ;;
  prefix-diff) exec "$PY" scripts/tokenizer/prefix_diff.py "$@" ;;
  families) exec "$PY" scripts/tokenizer/families.py "$@" ;;
  all)
    "$PY" scripts/tokenizer/build_fixture.py
    "$PY" scripts/tokenizer/golden.py "$@"
    "$PY" scripts/tokenizer/calibrate.py
    "$PY" scripts/tokenizer/prefix_diff.py
    "$PY" scripts/tokenizer/families.py
    ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
