"""Loads each export directory with `load_dataset(DIR)` (one call, both
splits, through the card's front matter) and compares every row with its
JSON line. Run by hand with any `datasets` (the figures of docs/output.md: 5.2.0 from
target/recipes-venv, and 4.8.5, on exports of both captures in each format,
with and without meta, tools, tool calls and reasoning):

    python load_check.py DIR...

A key a line does not carry reads back as None (the column is declared for
the whole split); anything else that differs from the line is reported.
"""
import json
import sys
import tempfile

import datasets
from datasets import load_dataset

SPLITS = {"train": "train.jsonl", "validation": "valid.jsonl"}


def check(d):
    try:
        ds = load_dataset(d, cache_dir=tempfile.mkdtemp())
    except Exception as e:  # noqa: BLE001 (the failure is the finding)
        return f"FAILED: {type(e).__name__}: {str(e)[:200]}"
    rows, changed = 0, 0
    for split, name in SPLITS.items():
        lines = [json.loads(l) for l in open(f"{d}/{name}")] if split in ds else []
        got = list(ds[split]) if split in ds else []
        if len(lines) != len(got):
            return f"FAILED: {split} has {len(got)} rows, {name} {len(lines)} lines"
        for line, row in zip(lines, got):
            rows += 1
            row = {k: v for k, v in row.items() if not (v is None and k not in line)}
            changed += row != line
    keys = ", ".join(f"{k}: {v}" for k, v in ds["train"].features.items()) if "train" in ds else ""
    return f"{rows} rows, {rows - changed} as written ({keys})"


print(f"datasets {datasets.__version__}")
for d in sys.argv[1:]:
    print(f"  {d.rstrip('/').split('/')[-1]}: {check(d)}")
