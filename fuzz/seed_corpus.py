#!/usr/bin/env python3
"""Regenerates the seed corpora under fuzz/corpus/ from the repo's fixtures.

Usage (from the repo root):

    cargo run --example fixture-home -- fixtures/hermes-0.19.0/home /tmp/fz-home
    cargo build
    python3 fuzz/seed_corpus.py /tmp/fz-home

Snapshots and transcripts are slimmed (tools list cut to one tool, long
texts cut) so seeds stay small and fast; one full snapshot and one full
SFT line are kept as they are. The output is deterministic.
"""

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
SESS = {v: os.path.join(ROOT, "fixtures", f"hermes-{v}", "home", "sessions") for v in ("0.13.0", "0.19.0")}
TEXT_MAX = 300


def cut(s, n=TEXT_MAX):
    return s if not isinstance(s, str) or len(s) <= n else s[:n]


def slim_message(m):
    m = dict(m)
    for k in ("content", "reasoning", "reasoning_content"):
        if k in m:
            m[k] = cut(m[k])
    return m


def slim_snapshot(d):
    d = dict(d)
    if "system_prompt" in d:
        d["system_prompt"] = cut(d["system_prompt"])
    if isinstance(d.get("tools"), list):
        d["tools"] = d["tools"][:1]
    d["messages"] = [slim_message(m) for m in d["messages"]]
    return d


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def snapshot_text(d):
    # Hermes writes snapshots with indent=2 and non-ASCII kept.
    return json.dumps(d, indent=2, ensure_ascii=False)


def session_json():
    t = "session_json"
    full = os.path.join(SESS["0.19.0"], "session_20261125_133326_23113b.json")
    with open(full, "rb") as f:
        write(t, "full-0.19-cli-one-turn.json", f.read())
    picks = [
        ("0.13.0", "session_20261125_133437_b0c3747f.json", "0.13-tools-retry"),
        ("0.13.0", "session_20261125_133506_6db9e0.json", "0.13-tools-long-user"),
        ("0.13.0", "session_nexus-longrun-0002.json", "0.13-nexus-longrun"),
        ("0.13.0", "session_20261125_133623_c82d2b.json", "0.13-api-compacted"),
        ("0.19.0", "session_20261125_133228_38953c62.json", "0.19-tools-retry"),
        ("0.19.0", "session_cfa230c9-cd76-4825-a529-3b116286200e.json", "0.19-api-orphan-users"),
        ("0.19.0", "session_nexus-world-0001.json", "0.19-nexus-world"),
    ]
    for v, name, label in picks:
        text = snapshot_text(slim_snapshot(load(os.path.join(SESS[v], name))))
        write(t, f"slim-{label}.json", text)
        if label in ("0.13-tools-retry", "0.19-nexus-world"):
            # A snapshot cut while being written.
            write(t, f"prefix-half-{label}.json", text[: len(text) // 2])
            write(t, f"prefix-head-{label}.json", text[:700])
    # Shapes the fixtures do not show: compaction summary, merged summary,
    # harness prompt, list-of-parts content, numeric timestamps, a failed
    # tool call retried, a repeated prompt.
    summary = "[CONTEXT COMPACTION — REFERENCE ONLY] Earlier turns were compacted."
    merged = ("[PRIOR CONTEXT — for reference only; not a new message] T3 "
              "[END OF PRIOR CONTEXT — COMPACTION SUMMARY BELOW] summary")
    call = lambda i, name, args: {"id": i, "type": "function", "function": {"name": name, "arguments": args}}
    msgs = [
        {"role": "user", "content": "T1", "timestamp": 1764077000.5},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "T2"},
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "read_file", "{\"path\": \"map\"}")], "finish_reason": "tool_calls"},
        {"role": "tool", "tool_call_id": "c1", "content": "Error: file not found"},
        {"role": "assistant", "content": "", "tool_calls": [call("c2", "read_file", {"path": "map.md"})]},
        {"role": "tool", "tool_call_id": "c2", "name": "read_file", "content": "{\"content\": \"x\"}"},
        {"role": "assistant", "content": "A2"},
        {"role": "user", "content": "T1"},
        {"role": "assistant", "content": summary, "_compressed_summary": True},
        {"role": "user", "content": merged},
        {"role": "assistant", "content": "A3"},
        {"role": "user", "content": "Review the conversation above and update the skill library"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "\u0000json:[{\"type\":\"text\",\"text\":\"seen\"}]", "effect_disposition": "ok"},
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": "seen again"},
        {"role": "system", "content": "late"},
    ]
    write(t, "synthetic-compaction-retry-harness.json", snapshot_text({
        "session_id": "synthetic", "platform": "api_server", "model": "m",
        "session_start": "2026-11-25T13:33:37+00:00", "system_prompt": "You are Timmy.",
        "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}],
        "messages": msgs}))


def session_jsonl():
    t = "session_jsonl"
    for name in ("20261125_133511_450942fe.jsonl", "20261125_133437_b0c3747f.jsonl"):
        with open(os.path.join(SESS["0.13.0"], name), "rb") as f:
            write(t, "full-" + name, f.read())
    lines = []
    with open(os.path.join(SESS["0.13.0"], "20261125_133627_4207d6bc.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(json.dumps(slim_message(json.loads(line)), ensure_ascii=False))
    text = "\n".join(lines) + "\n"
    write(t, "slim-20261125_133627_4207d6bc.jsonl", text)
    write(t, "prefix-20261125_133627_4207d6bc.jsonl", text[: len(text) // 2])
    with open(os.path.join(SESS["0.13.0"], "20261125_133437_b0c3747f.jsonl"), encoding="utf-8") as f:
        b = f.read().splitlines()
    write(t, "damaged-line.jsonl", "\n".join(b[:3] + [b[3][:40], "", "not json"] + b[4:8]) + "\n")
    write(t, "crlf-and-meta.jsonl",
          '{"role": "session_meta", "platform": "telegram", "model": "m", "tools": [{"type": "function", "function": {"name": "todo"}}]}\r\n'
          '{"role": "user", "content": "hi", "timestamp": 1764077000}\r\n'
          '{"role": "assistant", "content": "hello", "reasoning": "r"}\r\n')


def content():
    t = "content"
    seeds = {
        "plain.txt": "Hi, Nova here. What time is it in the Nexus?",
        "multimodal-prefixed.txt": "\u0000json:[{\"type\":\"text\",\"text\":\"Look at this map\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]",
        "parts-list.json": "[{\"type\":\"text\",\"text\":\"look\"},{\"type\":\"input_audio\"},{\"content\":[{\"text\":\"nested\"}]},\"bare\",7,null]",
        "part-object.json": "{\"type\":\"image\",\"source\":{}}",
        "prefixed-string.json": "\"\\u0000json:[{\\\"text\\\":\\\"inner\\\"}]\"",
        "tool-calls-string-args.json": "[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"todo\",\"arguments\":\"{\\\"a\\\": 1}\"}}]",
        "tool-calls-object-args.json": "[{\"call_id\":\"c\",\"name\":\"read_file\",\"arguments\":{\"path\":\"x\"}}]",
        "tool-calls-bad-args.json": "[{\"id\":\"c\",\"function\":{\"name\":\"x\",\"arguments\":\"{oops\"}}]",
        "null.json": "null",
    }
    for k, v in seeds.items():
        write(t, k, v)
    # Real stored values from the fixtures: a tool result and a tool_calls list.
    d = load(os.path.join(SESS["0.13.0"], "session_20261125_133437_b0c3747f.json"))
    tool = next(m for m in d["messages"] if m["role"] == "tool")
    write(t, "fixture-tool-result.txt", cut(tool["content"], 600))
    calls = next(m for m in d["messages"] if m.get("tool_calls"))
    write(t, "fixture-tool-calls.json", json.dumps(calls["tool_calls"]))


def event():
    t = "event"
    schema = load(os.path.join(ROOT, "schemas", "perception-event.schema.json"))
    for i, e in enumerate(schema["examples"]):
        write(t, f"example-{i}.json", json.dumps(e))
    extra = [
        {"type": "tick", "detail": "t=1", "at": [0.5, -1, 2e3]},
        {"type": "archon_departed", "actor": "Ezra"},
        {"type": "archon_materialized", "actor": " Ez\nra\t", "at": [-3.5, 0.25, 1e-7], "world": "w", "detail": "a\r\nb"},
        {"type": "scene_change", "actor": "Nova", "at": [-0.0, 1e300, 12]},
        {"type": "archon_departed"},
        {"type": "tick", "at": [1, 2, "3"]},
        {"type": "tick", "world": ""},
        {"type": "tick", "extra": 1},
    ]
    for i, e in enumerate(extra):
        write(t, f"case-{i}.json", json.dumps(e, ensure_ascii=False))


def validate_line(home):
    t = "validate_line"
    exe = os.path.join(ROOT, "target", "debug", "hermes-harvest")
    def export(*args):
        out = subprocess.run([exe, "export", "--hermes-home", home, "-q", *args],
                             check=True, capture_output=True).stdout.decode("utf-8")
        return [l for l in out.splitlines() if l]
    sft = export()
    openai = export("--target", "openai")
    dpo = export("--format", "dpo")
    flat = export("--format", "dpo", "--dpo-style", "flat")
    def slim(line):
        v = json.loads(line)
        if isinstance(v.get("tools"), list):
            v["tools"] = v["tools"][:1]
        for k in ("messages", "prompt", "chosen", "rejected"):
            if isinstance(v.get(k), list):
                v[k] = [slim_message(m) for m in v[k]]
        if isinstance(v.get("system"), str):
            v["system"] = cut(v["system"])
        return json.dumps(v, ensure_ascii=False)
    write(t, "full-sft.jsonl", sft[0] + "\n")
    with_calls = [l for l in sft if "tool_calls" in l]
    write(t, "slim-sft.jsonl", slim(sft[1]) + "\n" + slim(sft[2]) + "\n")
    write(t, "slim-sft-tool-calls.jsonl", slim(with_calls[0]) + "\n")
    write(t, "slim-sft-openai.jsonl", slim([l for l in openai if "tool_calls" in l][0]) + "\n")
    write(t, "dpo.jsonl", "\n".join(slim(l) for l in dpo[:2]) + "\n")
    write(t, "dpo-flat.jsonl", "\n".join(slim(l) for l in flat[:2]) + "\n")
    # One file, two flavours / two shapes / odd lines: the per-file checks.
    write(t, "mixed-flavours.jsonl", slim(with_calls[0]) + "\n" + slim([l for l in openai if "tool_calls" in l][0]) + "\n")
    write(t, "mixed-shapes.jsonl", slim(sft[1]) + "\n" + slim(dpo[0]) + "\n   \n{}\nnot json\n")
    write(t, "dpo-flat-truncated.jsonl", slim(flat[0])[:200])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    session_json()
    session_jsonl()
    content()
    event()
    validate_line(sys.argv[1])


if __name__ == "__main__":
    main()
