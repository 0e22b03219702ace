#!/usr/bin/env bash
# Peak memory of an export on three extreme inputs (hardening issue):
#   1. one 200 MB message in state.db,
#   2. one session of 1,000,000 messages,
#   3. a sessions/ folder of 100,000 session files.
# Each store is built under target/size-checks/ from the 0.19 capture plus
# generated rows; prints wall time and peak RSS of `export` for each.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/size-checks
mkdir -p "$OUT"
cargo build --release --quiet --example fixture-home --bin hermes-harvest
BIN=target/release/hermes-harvest

fresh_home() {
  rm -rf "$1"
  target/release/examples/fixture-home fixtures/hermes-0.19.0/home "$1" >/dev/null 2>&1
}

measure() { # name, home, extra args...
  local name=$1 home=$2; shift 2
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$OUT/$name.rss" "$BIN" export --hermes-home "$home" --quiet "$@" >"$OUT/$name.jsonl"
  t1=$(date +%s.%N)
  rss=$(cat "$OUT/$name.rss")
  printf '%-28s wall %6.2f s   peak RSS %7.1f MB   lines %s\n' "$name" "$(echo "$t1 - $t0" | bc)" "$(echo "$rss / 1024" | bc -l)" "$(wc -l <"$OUT/$name.jsonl")"
}

command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
command -v bc >/dev/null || { echo "needs bc (apt-get install bc)" >&2; exit 1; }

# 1. A single 200 MB message.
fresh_home "$OUT/big-message"
python3 - "$OUT/big-message/state.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
    db.execute(f'DROP TRIGGER "{t}"')
db.execute("INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('nexus-world-0001', 'user', 'paste: ' || printf('%.*c', 200000000, 'x'), 1.9e9, 1, 0)")
db.execute("INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('nexus-world-0001', 'assistant', 'That is a lot of x.', 1.9e9 + 1, 'stop', 1, 0)")
db.commit()
PY
measure "200 MB message" "$OUT/big-message"

# 2. One session of a million messages.
fresh_home "$OUT/million"
python3 - "$OUT/million/state.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
    db.execute(f'DROP TRIGGER "{t}"')
db.execute("INSERT INTO sessions (id, source, started_at, system_prompt) VALUES ('nexus-world-forever', 'api_server', 1.8e9, 'You are Timmy, keeper of the Nexus.')")
db.execute("""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999)
  INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted)
  SELECT 'nexus-world-forever', CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END,
         CASE i % 2 WHEN 0 THEN '[perception] tick: ' || (i / 2) || ' archons present, the wind turns over the plaza'
                   ELSE 'Noted tick ' || (i / 2) || '; I keep watch over the gate and the northern ridge.' END,
         1.8e9 + i, CASE i % 2 WHEN 1 THEN 'stop' END, 1, 0 FROM n""")
db.commit()
PY
measure "1M-message session" "$OUT/million" --session nexus-world-forever

# 3. A sessions/ folder of 100,000 files (snapshots of sessions state.db lacks).
fresh_home "$OUT/many-files"
python3 - "$OUT/many-files/sessions" <<'PY'
import json, os, sys
d = sys.argv[1]
for i in range(100000):
    sid = f"20260101_{i:06d}_{i:06x}"
    doc = {"session_id": sid, "platform": "cli", "model": "fake-model-1",
           "session_start": "2026-01-01T00:00:00", "system_prompt": "You are Timmy.",
           "messages": [{"role": "user", "content": f"question {i}"},
                        {"role": "assistant", "content": f"answer {i}"}]}
    with open(os.path.join(d, f"session_{sid}.json"), "w") as f:
        json.dump(doc, f)
PY
measure "100k session files" "$OUT/many-files"
