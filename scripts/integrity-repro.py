#!/usr/bin/env python3
"""Counts for the cron-integrity cases of issue 11, for one binary.

    python3 scripts/integrity-repro.py target/debug/hermes-harvest

Builds scratch Hermes homes from the captured fixtures (through
`cargo run --example fixture-home`), runs each case and prints one line per
case: what was expected and what the binary produced. The integration tests
in tests/it/integrity.rs assert the same cases; this script only measures, so
an older binary can be compared.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

BIN = os.path.abspath(sys.argv[1])
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = tempfile.mkdtemp(prefix="hh-repro-")


def home(version, name):
    dst = os.path.join(WORK, name)
    subprocess.run(
        ["cargo", "run", "-q", "--example", "fixture-home", "--",
         f"fixtures/hermes-{version}/home", dst],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = sqlite3.connect(os.path.join(dst, "state.db"))
    for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        db.execute(f'DROP TRIGGER "{t}"')
    db.commit()
    db.close()
    return dst


# Turns are counted as training targets: SFT context (earlier turns repeated
# before a sample that starts mid-session) is turned off where the binary
# knows the flag.
CONTEXT_OFF = ["--sft-context", "0"] if b"--sft-context" in subprocess.run(
    [BIN, "export", "--help"], capture_output=True).stdout else []


def run(h, *args, stdin=None):
    return subprocess.run([BIN, "export", "--hermes-home", h, *CONTEXT_OFF, *args],
                          capture_output=True, stdin=stdin)


def count(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def turns(data):
    """User turns in SFT JSONL bytes (samples are cut differently by
    incremental and one-shot runs; turns are what must match)."""
    n = 0
    for line in data.splitlines():
        if line.strip():
            n += sum(1 for m in json.loads(line)["messages"] if m["role"] == "user")
    return n


def dir_turns(d):
    n = 0
    for f in ("train.jsonl", "valid.jsonl"):
        try:
            with open(os.path.join(d, f), "rb") as fh:
                n += turns(fh.read())
        except FileNotFoundError:
            pass
    return n


def grow(h, times):
    db = sqlite3.connect(os.path.join(h, "state.db"))
    for k in range(times):
        sfx = f"~g{k}"
        db.executescript(f"""
            CREATE TEMP TABLE s AS SELECT * FROM sessions WHERE id NOT LIKE '%~%';
            UPDATE s SET id = id || '{sfx}', parent_session_id = NULL, title = CASE WHEN title IS NULL THEN NULL ELSE title || '{sfx}' END;
            CREATE TEMP TABLE m AS SELECT * FROM messages WHERE session_id IN (SELECT substr(id, 1, length(id) - {len(sfx)}) FROM s);
            UPDATE m SET id = NULL, session_id = session_id || '{sfx}', content = content || ' ({sfx})';
            INSERT INTO sessions SELECT * FROM s; INSERT INTO messages SELECT * FROM m ORDER BY rowid;
            DROP TABLE s; DROP TABLE m;""")
    db.commit()
    db.close()


def append_turn(db, session, text, t):
    db.execute("INSERT INTO messages (session_id, role, content, timestamp) VALUES (?, 'user', ?, ?)",
               (session, text, t))
    db.execute("INSERT INTO messages (session_id, role, content, timestamp, finish_reason) VALUES (?, 'assistant', ?, ?, 'stop')",
               (session, "Answer to " + text, t + 1))
    db.commit()


def case_head():
    h = home("0.19.0", "head")
    grow(h, 40)
    total = run(h).stdout.count(b"\n")
    state = os.path.join(WORK, "head.json")
    p1 = subprocess.Popen([BIN, "export", "--hermes-home", h, "--state", state],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = sum(1 for _ in zip(range(10), p1.stdout))
    p1.stdout.close()
    rc = p1.wait()
    second = run(h, "--state", state).stdout.count(b"\n")
    print(f"--state with stdout into head -10 (exit {rc}), then a run to the end: "
          f"{total} lines in the export, the second run delivered {second} "
          f"({total - second} never delivered)")


def case_min_turns():
    h = home("0.19.0", "minturns")
    out, state = os.path.join(WORK, "mt-out") + "/", os.path.join(WORK, "mt.json")
    run(h, "--min-turns", "2", "--out", out, "--state", state)
    db = sqlite3.connect(os.path.join(h, "state.db"))
    db.execute("INSERT INTO sessions (id, source, started_at) VALUES ('nexus-world-0777', 'api_server', 1900000000)")
    db.commit()
    for night in range(4):
        append_turn(db, "nexus-world-0777", f"night {night} new session", 1.9e9 + night * 10)
        append_turn(db, "nexus-world-0001", f"night {night} long session", 1.9e9 + night * 10 + 5)
        run(h, "--min-turns", "2", "--out", out, "--state", state)
    want = turns(run(h, "--min-turns", "2").stdout)
    print(f"--min-turns 2 over 5 runs: {want} turns expected (one-shot), {dir_turns(out)} written")


def case_until():
    h = home("0.19.0", "until")
    out, state = os.path.join(WORK, "u-out") + "/", os.path.join(WORK, "u.json")
    run(h, "--until", "2026-01-01", "--out", out, "--state", state)
    run(h, "--out", out, "--state", state)
    want = turns(run(h).stdout)
    print(f"--until 2026-01-01, then no filter: {want} turns expected, {dir_turns(out)} written")


def case_locked():
    h = home("0.13.0", "locked")
    out, state = os.path.join(WORK, "l-out") + "/", os.path.join(WORK, "l.json")
    blocker = sqlite3.connect(os.path.join(h, "state.db"), isolation_level=None)
    blocker.execute("PRAGMA journal_mode=delete")
    blocker.execute("BEGIN EXCLUSIVE")
    env = dict(os.environ, HERMES_HARVEST_BUSY_TIMEOUT_MS="100")
    r1 = subprocess.run([BIN, "export", "--hermes-home", h, "--out", out, "--state", state],
                        capture_output=True, env=env)
    blocker.execute("ROLLBACK")
    blocker.close()
    run(h, "--out", out, "--state", state)
    want = turns(run(h).stdout)
    print(f"state.db locked on night 1 (exit {r1.returncode}), then free: {want} turns expected, "
          f"{dir_turns(out)} written")


def case_dpo_into_sft():
    h = home("0.19.0", "dpo")
    grow(h, 20)
    out, state = os.path.join(WORK, "d-out") + "/", os.path.join(WORK, "d.json")
    run(h, "--out", out, "--state", state)
    before = os.path.getsize(os.path.join(out, "train.jsonl"))
    r = run(h, "--format", "dpo", "--out", out, "--state", os.path.join(WORK, "d-own.json"))
    after = os.path.getsize(os.path.join(out, "train.jsonl"))
    print(f"DPO with its own state into the SFT directory: exit {r.returncode}, "
          f"train.jsonl {before} -> {after} bytes")


def case_split():
    h = home("0.19.0", "split")
    os.remove(os.path.join(h, "response_store.db"))
    shutil.rmtree(os.path.join(h, "sessions"))
    db = sqlite3.connect(os.path.join(h, "state.db"))
    db.executescript("DELETE FROM messages; DELETE FROM sessions;")
    for i in range(1000):
        sid = f"nexus-world-{i:04d}"
        db.execute("INSERT INTO sessions (id, source, started_at) VALUES (?, 'api_server', 1.8e9)", (sid,))
        append_turn(db, sid, "hello from " + sid, 1.8e9)
    out = os.path.join(WORK, "s-out") + "/"
    run(h, "--out", out)
    print(f"1000 nexus-world-NNNN sessions at --valid-fraction 0.05: "
          f"{count(os.path.join(out, 'valid.jsonl'))} in valid.jsonl (about 50 expected)")


for case in [case_head, case_min_turns, case_until, case_locked, case_dpo_into_sft, case_split]:
    case()
shutil.rmtree(WORK)
