#!/usr/bin/env python3
"""Token counts of the 28 golden renderings (fixtures/tokenizer/golden/rendered/N.txt) under
every real tokenizer that calibrate.py loads (special tokens recognized where the tokenizer
knows them), for checking the estimate per tokenizer family. Writes
fixtures/tokenizer/golden/families.json. Run it through scripts/tokenizer.sh families.
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calibrate  # noqa: E402

GOLDEN = "fixtures/tokenizer/golden"


def main():
    os.chdir(calibrate.REPO)
    paths = sorted(glob.glob(f"{GOLDEN}/rendered/*.txt"), key=lambda p: int(os.path.basename(p)[:-4]))
    texts = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            texts.append(f.read())
    out = {"generated_by": "scripts/tokenizer/families.py", "tokenizers": {}}
    for tok in calibrate.load_tokenizers():
        out["tokenizers"][tok["name"]] = [tok["rendered"](t) for t in texts]
    with open(f"{GOLDEN}/families.json", "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {GOLDEN}/families.json ({len(out['tokenizers'])} tokenizers, {len(texts)} samples)")


if __name__ == "__main__":
    main()
