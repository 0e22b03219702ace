#!/usr/bin/env python3
"""Golden values for the Rust token budgeting, computed with transformers' real
apply_chat_template on the committed fixture tokenizer.

  golden.py                 counts.json + rendered/<line>.txt from samples.jsonl
  golden.py --resample      first rebuild samples.jsonl from real exports of the captures
                            (needs target/release/hermes-harvest; the capture homes are
                            materialized with target/release/examples/fixture-home when it
                            exists, else by loading the SQL dumps with Python's sqlite3)

Both layouts (fixtures/tokenizer/chatml and chatml-config) must give the same rendered
text and the same counts; the script fails otherwise. Run it through
scripts/tokenizer.sh golden [--resample].
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
LAYOUTS = ["chatml", "chatml-config"]
GOLDEN = "fixtures/tokenizer/golden"
WORK = "target/tokenizer-golden"
HARVEST = "target/release/hermes-harvest"
FIXTURE_HOME = "target/release/examples/fixture-home"
VERSIONS = ["0.19.0", "0.13.0"]
LONG = 150_000  # bytes of an exported line


# --------------------------------------------------------------------------------------
# samples.jsonl from real exports
# --------------------------------------------------------------------------------------
def materialize(version):
    src = f"fixtures/hermes-{version}/home"
    dst = os.path.join(WORK, f"hermes-{version}")
    shutil.rmtree(dst, ignore_errors=True)
    if os.access(FIXTURE_HOME, os.X_OK):
        subprocess.run([FIXTURE_HOME, src, dst], check=True, stderr=subprocess.DEVNULL)
    else:
        shutil.copytree(src, dst)
        for dump in sorted(glob.glob(os.path.join(dst, "*.sql"))):
            db = sqlite3.connect(dump[: -len(".sql")])
            with open(dump, encoding="utf-8") as f:
                db.executescript(f.read())
            db.commit()
            db.close()
            os.remove(dump)
    return dst


def export(home, *args):
    cmd = [HARVEST, "export", "--hermes-home", home, "--max-tokens", "100000", "-q", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def called_tools(messages):
    names = []
    for m in messages:
        for call in m.get("tool_calls") or []:
            name = call.get("function", {}).get("name")
            if name and name not in names:
                names.append(name)
    return names


def trim_tools(tools, messages, extra):
    """The called tools plus `extra` others (the first ones in list order), same JSON."""
    called = set(called_tools(messages))
    others = [t for t in tools if t["function"]["name"] not in called][:extra]
    keep = {id(t) for t in tools if t["function"]["name"] in called} | {id(t) for t in others}
    return [t for t in tools if id(t) in keep]


def resample():
    if not os.access(HARVEST, os.X_OK):
        sys.exit(f"golden.py: {HARVEST} is missing: build it first (cargo build --release)")
    samples = []  # (source description, sample dict)

    def add(source, messages, tools=None):
        sample = {"messages": messages}
        if tools is not None:
            sample["tools"] = tools
        samples.append((source, sample))

    full_tools = {}
    kept_long = []
    for version in VERSIONS:
        home = materialize(version)
        sft = export(home)
        full_tools[version] = sft[0]["tools"]
        first_call = next(i for i, s in enumerate(sft) if called_tools(s["messages"]))
        first_plain = next(i for i, s in enumerate(sft) if not called_tools(s["messages"]))
        for i, s in enumerate(sft):
            if len(json.dumps(s)) > LONG:
                if kept_long:
                    continue  # one long (compaction) session is enough for the size budget
                kept_long.append(i)
            if (version, i) in ((VERSIONS[0], first_call), (VERSIONS[1], first_plain)):
                add(f"{version} sft line {i + 1}, all tools", s["messages"], s["tools"])
            else:
                extra = 1 + i % 2
                add(
                    f"{version} sft line {i + 1}, tools trimmed to called + {extra}",
                    s["messages"],
                    trim_tools(s["tools"], s["messages"], extra),
                )
        if version == VERSIONS[0]:
            nosys = export(home, "--system-prompt", "none")
            add(f"{version} sft --system-prompt none line 2, no tools", nosys[1]["messages"])
            j = next(i for i, s in enumerate(nosys) if called_tools(s["messages"]))
            add(
                f"{version} sft --system-prompt none line {j + 1}, tools trimmed to called + 0",
                nosys[j]["messages"],
                trim_tools(nosys[j]["tools"], nosys[j]["messages"], 0),
            )
            openai = export(home, "--target", "openai")
            j = next(i for i, s in enumerate(openai) if called_tools(s["messages"]))
            add(
                f"{version} sft --target openai line {j + 1} (string arguments), tools trimmed to called + 1",
                openai[j]["messages"],
                trim_tools(openai[j]["tools"], openai[j]["messages"], 1),
            )
        else:
            reasoning = export(home, "--include-reasoning")
            j = next(i for i, s in enumerate(reasoning) if called_tools(s["messages"]))
            add(
                f"{version} sft --include-reasoning line {j + 1}, tools trimmed to called + 2",
                reasoning[j]["messages"],
                trim_tools(reasoning[j]["tools"], reasoning[j]["messages"], 2),
            )
        dpo = export(home, "--format", "dpo")
        for i, d in enumerate(dpo[:3]):
            messages = d["prompt"] + d["chosen"]
            if called_tools(messages):
                add(
                    f"{version} dpo line {i + 1}, prompt + chosen, tools of the capture trimmed to called + 1",
                    messages,
                    trim_tools(full_tools[version], messages, 1),
                )
            else:
                add(f"{version} dpo line {i + 1}, prompt + chosen, no tools", messages)

    os.makedirs(GOLDEN, exist_ok=True)
    with open(os.path.join(GOLDEN, "samples.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for _, sample in samples:
            f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    with open(os.path.join(GOLDEN, "sources.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump([{"line": n, "source": src} for n, (src, _) in enumerate(samples, 1)], f, indent=2)
        f.write("\n")
    print(f"golden.py: {len(samples)} samples -> {GOLDEN}/samples.jsonl", file=sys.stderr)


# --------------------------------------------------------------------------------------
# counts.json
# --------------------------------------------------------------------------------------
def render(tok, sample):
    tools = sample.get("tools")
    text = tok.apply_chat_template(sample["messages"], tools=tools, tokenize=False)
    out = tok.apply_chat_template(
        sample["messages"],
        tools=tools,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        add_generation_prompt=False,
    )
    ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    assert len(ids) == len(mask)
    # The tokenized path renders again; both renderings must agree.
    assert tok.decode(ids, skip_special_tokens=False) == text, "decode(input_ids) != rendered text"
    return text, len(ids), sum(mask)


def versions():
    import jinja2
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "jinja2": jinja2.__version__,
    }


def counts():
    from transformers import AutoTokenizer

    toks = {name: AutoTokenizer.from_pretrained(f"fixtures/tokenizer/{name}") for name in LAYOUTS}
    with open(os.path.join(GOLDEN, "samples.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    rendered_dir = os.path.join(GOLDEN, "rendered")
    shutil.rmtree(rendered_dir, ignore_errors=True)
    os.makedirs(rendered_dir)
    results = []
    for n, sample in enumerate(lines, 1):
        per_layout = {name: render(tok, sample) for name, tok in toks.items()}
        first = per_layout[LAYOUTS[0]]
        for name, got in per_layout.items():
            assert got == first, f"line {n}: layout {name} differs from {LAYOUTS[0]}"
        text, tokens, assistant = first
        data = text.encode("utf-8")
        with open(os.path.join(rendered_dir, f"{n}.txt"), "wb") as f:
            f.write(data)
        results.append(
            {
                "line": n,
                "tokens": tokens,
                "assistant_tokens": assistant,
                "rendered_sha256": hashlib.sha256(data).hexdigest(),
                "rendered_bytes": len(data),
            }
        )
        print(f"line {n:2}: {tokens:6} tokens, {assistant:5} assistant, {len(data):7} bytes", file=sys.stderr)
    doc = {
        "generated_by": "scripts/tokenizer/golden.py",
        "versions": versions(),
        "layouts": LAYOUTS,
        "samples": results,
    }
    with open(os.path.join(GOLDEN, "counts.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resample", action="store_true", help="rebuild samples.jsonl from real exports first")
    args = parser.parse_args()
    os.chdir(REPO)
    if args.resample:
        resample()
    counts()


if __name__ == "__main__":
    main()
