#!/usr/bin/env python3
"""The constants of the per-family token estimate (src/tokens/family.rs), from data the repo
already has; standard library only. Run it through scripts/tokenizer.sh estimate.

For each family (the real tokenizers of golden/families.json it stands for), a sample's estimate
is, before the factor:

    prose / text_bytes_per_token          user and assistant content and reasoning bytes
  + system  * system prompt bytes
  + tools   * tool definition bytes as tojson writes them (json.dumps)
  + tool_result * tool message content bytes
  + call    * tool call bytes (name + arguments: a string as is, else json.dumps)
  + per_message * messages + per_tool * tools + per_sample

text_bytes_per_token is the family's aggregate for conversation texts in calibration.json
(independent of the goldens; the lowest of the family's tokenizers). The other coefficients are
fitted to the family's counts of the 28 golden renderings (the highest of its tokenizers per
sample): least squares on the relative error, no coefficient below zero. The factor is the
raise that puts no golden sample under, times the leave-one-out margin: the raise that puts
every sample over when it was left out of the fit (and its own raise made without it).
"""
import json
import os
import statistics

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GOLDEN = os.path.join(REPO, "fixtures/tokenizer/golden")
FAMILIES = {
    "qwen": ["Qwen 2 / 2.5 / 3", "Qwen 3.5 / 3.6"],
    "llama3": ["Llama 3 (3.1/3.2/3.3; Hermes 3/4 bases)"],
}
FITTED = ["system", "tools", "tool_result", "call", "per_message", "per_tool", "per_sample"]


def blen(s):
    return len((s or "").encode("utf-8"))


def pylen(v):
    return len(json.dumps(v, ensure_ascii=False).encode("utf-8"))


def features(sample):
    f = dict.fromkeys(["prose"] + FITTED, 0.0)
    f["per_sample"] = 1.0
    for m in sample["messages"]:
        if m["role"] == "system":
            f["system"] += blen(m.get("content"))
            continue
        f["per_message"] += 1
        if m["role"] == "tool":
            f["tool_result"] += blen(m.get("content"))
        else:
            f["prose"] += blen(m.get("content")) + blen(m.get("reasoning_content"))
        for c in m.get("tool_calls") or []:
            a = c["function"]["arguments"]
            f["call"] += blen(c["function"]["name"]) + (blen(a) if isinstance(a, str) else pylen(a))
    tools = sample.get("tools") or []
    f["per_tool"] = float(len(tools))
    f["tools"] = float(sum(pylen(t) for t in tools))
    return f


def solve(a, b):
    n = len(a)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        if abs(m[c][c]) < 1e-12:
            continue
        for r in range(n):
            if r != c:
                g = m[r][c] / m[c][c]
                m[r] = [x - g * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] if abs(m[i][i]) > 1e-12 else 0.0 for i in range(n)]


def nnls(feats, y, base, idx):
    """Least squares of (y - base) / y on the FITTED features, dropping the most negative
    coefficient until none is negative."""
    active = list(FITTED)
    while True:
        n = len(active)
        a = [[0.0] * n for _ in range(n)]
        b = [0.0] * n
        for i in idx:
            x = [feats[i][k] for k in active]
            w = 1.0 / y[i] ** 2
            for p in range(n):
                b[p] += w * x[p] * (y[i] - base[i])
                for q in range(n):
                    a[p][q] += w * x[p] * x[q]
        c = dict(zip(active, solve(a, b)))
        negative = [k for k, v in c.items() if v < 0]
        if not negative:
            return {k: c.get(k, 0.0) for k in FITTED}
        active.remove(min(negative, key=lambda k: c[k]))


def fit(feats, y, base, idx):
    c = nnls(feats, y, base, idx)
    est = lambda i: base[i] + sum(c[k] * feats[i][k] for k in FITTED)  # noqa: E731
    return c, max(y[i] / est(i) for i in idx), est


def summary(r):
    r = sorted(r)
    return f"{r[0]:.3f} / {statistics.median(r):.3f} / {r[-1]:.3f}"


def main():
    with open(os.path.join(GOLDEN, "samples.jsonl"), encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    with open(os.path.join(GOLDEN, "families.json"), encoding="utf-8") as f:
        counts = json.load(f)["tokenizers"]
    with open(os.path.join(REPO, "fixtures/tokenizer/calibration.json"), encoding="utf-8") as f:
        conversation = json.load(f)["bytes_per_token"]["conversation"]
    feats = [features(s) for s in samples]
    n = len(samples)
    for family, names in FAMILIES.items():
        y = [max(counts[t][i] for t in names) for i in range(n)]
        rate = min(conversation[t]["aggregate"] for t in names)
        base = [f["prose"] / rate for f in feats]
        c, raise_, est = fit(feats, y, base, range(n))
        loo = []
        for i in range(n):
            rest = [j for j in range(n) if j != i]
            _, k, e = fit(feats, y, base, rest)
            loo.append(k * e(i) / y[i])
        margin = max(1.0, 1.0 / min(loo))
        print(f"{family}: text_bytes_per_token {rate}, factor {raise_:.4f} * {margin:.4f}")
        print("  " + ", ".join(f"{k} {v:.4g}" for k, v in c.items()))
        print(f"  left out, estimate / real (min / median / max): {summary(loo)}")
        for t in names:
            r = [est(i) * raise_ * margin / counts[t][i] for i in range(n)]
            print(f"  {t}: estimate / real {summary(r)}")


if __name__ == "__main__":
    main()
