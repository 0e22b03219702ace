"""Runs the training recipes of docs/training.md (its "## Recipes" section,
of which the README's recipes are copies) and of the dataset cards as
written (for scripts/trainer-recipes.sh), and prints one result block per
recipe for the golden file.

    python recipes.py docs/training.md WORK

WORK holds the exports (`timmy-sft/`, `timmy-dpo/`, `timmy-dpo-flat/`, each
with the card the tool wrote) and the model (`models/base/`). Every recipe
runs in WORK, so the recipes' relative paths (`timmy-sft`, `models/base`)
name them; its `~/autolora/data/` and `~/models/` are read as WORK, and a
card's `DIR` and `MODEL` as the card's directory and `models/base`.

To run on a CPU in minutes, and only for that, each recipe gets:
- TRL: `use_cpu=True, bf16=False, max_steps=1, report_to="none"` added to
  its `SFTConfig(` / `DPOConfig(`, and the output under WORK;
- mlx-lm / mlx-lm-lora: `--iters 2 --steps-per-report 1 --steps-per-eval 2
  --val-batches 1 --adapter-path …` appended.
Everything else is the text of the recipe.
"""
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

print = functools.partial(print, flush=True)  # noqa: A001 (the golden file fills as recipes run)
README, WORK = Path(sys.argv[1]), Path(sys.argv[2])
TIMEOUT = int(os.environ.get("RECIPE_TIMEOUT", "1800"))
CPU_TRL = 'use_cpu=True, bf16=False, max_steps=1, report_to="none", output_dir="trainer-output", '
CPU_MLX = " --iters 2 --steps-per-report 1 --steps-per-eval 2 --val-batches 1 --adapter-path adapters"


def blocks(text):
    """(language, code) of each fenced block."""
    return re.findall(r"```(\w+)\n(.*?)```", text, re.S)


def readme_recipes():
    text = README.read_text()
    start = text.index("## Recipes")
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    out = []
    for lang, code in blocks(text[start:end]):
        code = code.replace("~/autolora/data/", "").replace("~/models/base", "models/base")
        out.append((f"README {lang} block {len(out) + 1}", lang, code))
    return out


def card_recipes(name):
    card = (WORK / name / "README.md").read_text()
    start = card.index("## Training on it")
    out = []
    for lang, code in blocks(card[start:]):
        q = '"' if lang == "python" else ""
        code = re.sub(r"\bDIR\b", f"{q}{name}{q}", code)
        code = re.sub(r"\bMODEL\b", f"{q}models/base{q}", code)
        out.append((f"card of {name}, {lang} block {len(out) + 1}", lang, code))
    return out


def commands(lang, code):
    """The processes a block runs (an sh block: its tool lines; export lines
    were already run by the script)."""
    if lang == "python":
        code = re.sub(r"\b(SFTConfig|DPOConfig)\(", lambda m: m.group(0) + CPU_TRL, code)
        return [(["python", "-c", code], code)]
    out = []
    for line in code.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("hermes-harvest "):
            continue
        line += CPU_MLX
        out.append((["sh", "-c", line], line))
    return out


def outcome(code, log):
    """How a run ended: its exit, or the error it ended with."""
    if code == 0:
        return "exit 0"
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", l).strip() for l in log.splitlines() if l.strip()]
    for pat in ("Error", "error:", "Traceback"):
        errs = [l for l in lines if pat in l and "Warning" not in l]
        if errs:
            return errs[-1][:300]
    return lines[-1][:300] if lines else "(no output)"


def main():
    recipes = readme_recipes()
    for name in ("timmy-sft", "timmy-dpo", "timmy-dpo-flat"):
        recipes += card_recipes(name)
    failed = 0
    for title, lang, code in recipes:
        for argv, shown in commands(lang, code):
            env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
            try:
                p = subprocess.run(argv, cwd=WORK, env=env, capture_output=True, text=True, timeout=TIMEOUT)
                code_, log = p.returncode, p.stdout + p.stderr
            except subprocess.TimeoutExpired:
                code_, log = "timeout", f"no end within {TIMEOUT} s"
            ok = code_ == 0
            failed += not ok
            print(f"## {title}: {'ran' if ok else 'FAILED (exit ' + str(code_) + ')'}")
            print("```")
            print(shown.strip())
            print("```")
            print(f"-> {outcome(code_, log)}")
            print()
            (WORK / "logs").mkdir(exist_ok=True)
            safe = re.sub(r"[^a-z0-9]+", "-", title.lower())
            (WORK / "logs" / f"{safe}.log").write_text(log)
    print(f"{len(recipes)} recipes, {failed} failed runs")


main()
