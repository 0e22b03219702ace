#!/usr/bin/env python3
"""The trainer's view of an export: render every line with transformers' real
apply_chat_template and count what a trainer with keep-start truncation would see.

  judge.py FILE.jsonl --tokenizer DIR --max-length N

SFT lines: `messages` (+ `tools`). DPO conversational lines: `prompt` + the longer of
`chosen` / `rejected` (by tokens), with the line's `tools` if any. Per line: tokens,
assistant tokens (the template's {% generation %} spans) and the assistant tokens left
after truncating to the first N tokens. Exits 1 when any line is longer than N.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def measure(tok, messages, tools):
    out = tok.apply_chat_template(
        messages,
        tools=tools,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        add_generation_prompt=False,
    )
    return list(out["assistant_masks"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--tokenizer", required=True, help="directory with tokenizer.json and its config/template")
    parser.add_argument("--max-length", type=int, required=True)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    over = zero = lines = 0
    print(f"{'line':>6} {'kind':4} {'tokens':>8} {'assistant':>9} {'kept':>8}")
    with open(args.file, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            d = json.loads(raw)
            tools = d.get("tools")
            if "messages" in d:
                kind, mask = "sft", measure(tok, d["messages"], tools)
            elif isinstance(d.get("prompt"), list):
                kind = "dpo"
                masks = [measure(tok, d["prompt"] + d[k], tools) for k in ("chosen", "rejected")]
                mask = max(masks, key=len)
            else:
                sys.exit(f"judge.py: line {n}: neither `messages` nor conversational `prompt`")
            lines += 1
            kept = sum(mask[: args.max_length])
            over += len(mask) > args.max_length
            zero += kept == 0
            flag = "  OVER" if len(mask) > args.max_length else ""
            print(f"{n:6} {kind:4} {len(mask):8} {sum(mask):9} {kept:8}{flag}")
    print(f"{lines} lines, max length {args.max_length}: {over} over, {zero} with no assistant token left")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
