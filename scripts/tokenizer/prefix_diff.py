#!/usr/bin/env python3
"""Golden trainable counts for a chat template without {% generation %} blocks, computed
the way trainers without generation blocks find assistant turns.

The template is fixtures/tokenizer/chatml-nogen.jinja (the fixture's ChatML template with
its generation tags taken out), with the fixture tokenizer (fixtures/tokenizer/chatml).
For each line of golden/samples.jsonl:

  tokens      len(apply_chat_template(messages, tools=..., tokenize=True))
  trainable   sum over assistant messages i of
                len(ids(messages[:i+1])) - common_prefix(ids(messages[:i], add_generation_prompt=True),
                                                         ids(messages[:i+1]))
              (axolotl's per-turn search; the assistant header is not trained, its end is)
  last_turn   the same for the last assistant message only (mlx-lm --mask-prompt)

Writes fixtures/tokenizer/golden/prefix-diff.json. Run it through
scripts/tokenizer.sh prefix-diff.
"""
import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GOLDEN = "fixtures/tokenizer/golden"
WORK = "target/tokenizer-nogen"


def model_dir():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join("fixtures/tokenizer/chatml", f), WORK)
    shutil.copy("fixtures/tokenizer/chatml-nogen.jinja", os.path.join(WORK, "chat_template.jinja"))
    return WORK


def ids(tok, messages, tools, generation_prompt):
    out = tok.apply_chat_template(
        messages,
        tools=tools,
        tokenize=True,
        return_dict=True,
        add_generation_prompt=generation_prompt,
    )
    return list(out["input_ids"])


def counts(tok, sample):
    messages, tools = sample["messages"], sample.get("tools")
    full = ids(tok, messages, tools, False)
    trainable, last = 0, 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = ids(tok, messages[:i], tools, True)
        with_it = ids(tok, messages[: i + 1], tools, False)
        common = 0
        for a, b in zip(before, with_it):
            if a != b:
                break
            common += 1
        last = len(with_it) - common
        trainable += last
    return {"tokens": len(full), "trainable": trainable, "last_turn": last}


def main():
    os.chdir(REPO)
    from transformers import AutoTokenizer
    import transformers

    tok = AutoTokenizer.from_pretrained(model_dir())
    with open(os.path.join(GOLDEN, "samples.jsonl"), encoding="utf-8") as f:
        samples = [json.loads(line) for line in f if line.strip()]
    out = {
        "generated_by": "scripts/tokenizer/prefix_diff.py",
        "transformers": transformers.__version__,
        "template": "fixtures/tokenizer/chatml-nogen.jinja",
        "samples": [counts(tok, s) for s in samples],
    }
    with open(os.path.join(GOLDEN, "prefix-diff.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {GOLDEN}/prefix-diff.json ({len(samples)} samples)")


if __name__ == "__main__":
    main()
