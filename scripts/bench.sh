#!/usr/bin/env bash
# Speed benchmark on two large synthetic Hermes 0.19 stores, with paired runs.
#
#   scripts/bench.sh
#
# The stores (made by the synth-store example when absent, reused otherwise, never
# written to: the incremental runs and Hermes get copies, removed at the end):
#   - synth:  $BENCH_DIR/home/state.db: the captured sessions replicated with a light
#             per-instance word substitution (its text-keyed caches hit often);
#   - varied: $BENCH_DIR/varied/home/state.db (`synth-store --varied`): text that varies
#             as real conversations do (a 40,000-word lexicon, generated prose of varying
#             length at varying offsets, varied tool arguments and results).
# Both about 220,000 sessions and 900,000 messages, Hermes's FTS tables and triggers kept.
#
# For each store, after one untimed run of each command (to warm the page cache; these
# runs also count the cache hit rates, HERMES_HARVEST_CACHE_STATS=1), paired, interleaved
# runs: the baseline scan then our export, the ratio taken pair by pair; BENCH_PAIRS pairs
# (default 5) for the default SFT export (`export --out - --quiet > /dev/null`) and
# BENCH_TOK_PAIRS pairs (default 3) for `--tokenizer fixtures/tokenizer/chatml` (every
# sample rendered with that chat template and tokenized). The baseline scan is
# `sqlite3 state.db "SELECT m.*, s.source FROM messages m JOIN sessions s ON s.id =
# m.session_id ORDER BY m.session_id, m.id" > /dev/null`. Reported: the median ratio and
# its spread (lowest-highest), the median wall times, the highest peak RSS. A pair
# tolerates a loaded machine better than a best-of-N does, not heavy load changing within
# a pair. Then, per store: an incremental export (`--state`) on a copy (first full run,
# one more day appended, the night's run, a run with nothing new); and, on the synth
# store only, Hermes's own `hermes sessions export --format jsonl` (test venv, no
# network, on a copy, bounded by a timeout). The bars: default export <= 2x the scan
# (goal 1.3x), with --tokenizer <= 3x, the two exports' peak RSS < 100 MB (the --state
# runs' peak is reported beside it), the night < 1 s.
#
# Environment: BENCH_PAIRS, BENCH_TOK_PAIRS; BENCH_STORES (default "synth varied");
# BENCH_SESSIONS (size of a newly generated store, default 220000); BENCH_DIR (default
# target/bench); BENCH_VARIETY=0 (leave out the stores' variety figures, a full read of
# each); HERMES_TIMEOUT (seconds, default 900); HERMES_VERSION (default 0.19.0);
# SKIP_HERMES=1 (leave the Hermes export out); CARGO_TARGET_DIR. Needs cargo, GNU time
# and sqlite3 (installed with apt-get when missing and run as root), python3 for the
# Hermes venv, unshare and ip for the network-less Hermes run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
BENCH="${BENCH_DIR:-$TARGET/bench}"
SESSIONS="${BENCH_SESSIONS:-220000}"
HERMES_TIMEOUT="${HERMES_TIMEOUT:-900}"
HERMES_VERSION="${HERMES_VERSION:-0.19.0}"
PAIRS="${BENCH_PAIRS:-5}"
TOK_PAIRS="${BENCH_TOK_PAIRS:-3}"
STORES="${BENCH_STORES:-synth varied}"
for n in "$PAIRS" "$TOK_PAIRS"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: BENCH_PAIRS and BENCH_TOK_PAIRS must be positive integers" >&2; exit 1; }
done
TOKENIZER="$REPO/fixtures/tokenizer/chatml"
SCAN_SQL="SELECT m.*, s.source FROM messages m JOIN sessions s ON s.id = m.session_id ORDER BY m.session_id, m.id"

say() { echo "bench.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# --- tools --------------------------------------------------------------------------
apt_install() {
  # Debian packages, only when missing and only if we may.
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; } \
      || say "could not install $*"
  fi
}
command -v sqlite3 >/dev/null || apt_install sqlite3
command -v sqlite3 >/dev/null || die "needs sqlite3 (Debian package sqlite3)"
GNU_TIME=""
if /usr/bin/time -f %e true >/dev/null 2>&1; then GNU_TIME=/usr/bin/time; else
  apt_install time
  if /usr/bin/time -f %e true >/dev/null 2>&1; then GNU_TIME=/usr/bin/time; fi
fi
[ -n "$GNU_TIME" ] || say "no GNU time: peak RSS is sampled from /proc/<pid>/status (VmHWM)"

TMPD="$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")"
SCRATCH="$BENCH/scratch.$$"
cleanup() { rm -rf "$TMPD" "$SCRATCH"; }
trap cleanup EXIT

# measure NAME CMD...: runs CMD with stdout to /dev/null; sets WALL (s), RSS (MB), RC.
measure() {
  local name="$1"; shift
  local out="$TMPD/$name.time"
  RC=0
  if [ -n "$GNU_TIME" ]; then
    "$GNU_TIME" -f '%e %M' -o "$out" "$@" >/dev/null || RC=$?
    read -r WALL RSS_KB < <(tail -1 "$out")
  else
    local t0 t1 hwm=0 h
    t0=$(date +%s.%N)
    "$@" >/dev/null &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
      h=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
      [ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h
      sleep 0.02
    done
    wait "$pid" || RC=$?
    t1=$(date +%s.%N)
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    RSS_KB=$hwm
  fi
  RSS=$(awk -v k="$RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')
}

# pairs NAME N CMD...: N interleaved pairs (the scan, then CMD); sets RATIOS and WALLS
# (space-separated, pair order), SCANS, RSS (the highest of CMD's runs).
pairs() {
  local name="$1" n="$2"; shift 2
  local i top=0 scan
  RATIOS="" WALLS="" SCANS=""
  for ((i = 1; i <= n; i++)); do
    measure "scan.$name.$i" sqlite3 "$STORE" "$SCAN_SQL"
    [ "$RC" = 0 ] || die "sqlite3 scan failed (exit $RC)"
    scan=$WALL
    measure "$name.$i" "$@"
    [ "$RC" = 0 ] || die "$name failed (exit $RC)"
    SCANS="${SCANS:+$SCANS }$scan"
    WALLS="${WALLS:+$WALLS }$WALL"
    RATIOS="${RATIOS:+$RATIOS }$(awk -v a="$WALL" -v b="$scan" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
    top=$(printf '%s\n' "$top" "$RSS" | sort -g | tail -1)
  done
  RSS=$top
}

# median LIST / spread LIST: of space-separated numbers.
median() { tr ' ' '\n' <<<"$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { tr ' ' '\n' <<<"$1" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "MISSED"; fi; }

# cache_stats NAME CMD...: one untimed run with the cache counters on; sets STATS_PROMPTS,
# STATS_PIECES and STATS_WORDS ("lookups hits", each counted by the cache itself).
cache_stats() {
  local name="$1"; shift
  HERMES_HARVEST_CACHE_STATS=1 "$@" >/dev/null 2>"$TMPD/$name.stats" \
    || { cat "$TMPD/$name.stats" >&2; die "$name failed"; }
  local f="$TMPD/$name.stats"
  STATS_PROMPTS=$(sed -n 's/.*system prompts: \([0-9]*\) lookups, \([0-9]*\) hits.*/\1 \2/p' "$f")
  STATS_PIECES=$(sed -n 's/.*rendered pieces: \([0-9]*\) lookups, \([0-9]*\) hits.*/\1 \2/p' "$f")
  STATS_WORDS=$(sed -n 's/.*words (BPE): \([0-9]*\) lookups, \([0-9]*\) hits.*/\1 \2/p' "$f")
}
rate() { awk -v n="$1" -v h="$2" 'BEGIN { if (n > 0) printf "%.1f%% of %d", 100 * h / n, n; else printf "- (no lookups)" }'; }

# --- build --------------------------------------------------------------------------
say "building (release)"
nice cargo build --release --quiet --bin hermes-harvest --example synth-store
OURS="$TARGET/release/hermes-harvest"
SYNTH="$TARGET/release/examples/synth-store"

# copy_store SRC DST_HOME: a private copy of a store.
copy_store() {
  mkdir -p "$2"
  if [ -s "$1-wal" ]; then
    sqlite3 "$1" ".backup '$2/state.db'"
  else
    cp --reflink=auto "$1" "$2/state.db"
  fi
}

REPORT="$TMPD/report"
: >"$REPORT"
out() { printf '%s\n' "$*" >>"$REPORT"; }
SUMMARY=()

# bench_store KIND: the whole benchmark of one store.
bench_store() {
  local kind="$1" mode=() home
  case "$kind" in
    synth) home="$BENCH/home" ;;
    varied) home="$BENCH/varied/home"; mode=(--varied) ;;
    *) die "unknown store $kind (synth or varied)" ;;
  esac
  STORE="$home/state.db"
  if [ ! -f "$STORE" ]; then
    say "generating the $kind store $STORE ($SESSIONS sessions; several minutes)"
    mkdir -p "$home"
    nice "$SYNTH" "${mode[@]}" --out "$STORE" --sessions "$SESSIONS" 2>"$TMPD/gen.$kind.log" \
      || { cat "$TMPD/gen.$kind.log" >&2; die "synth-store failed"; }
    grep -E 'variety|GB' "$TMPD/gen.$kind.log" >&2 || true
  else
    say "reusing $STORE"
  fi
  local n_sessions n_messages bytes
  read -r n_sessions n_messages < <(sqlite3 -separator ' ' "$STORE" \
    "SELECT (SELECT COUNT(*) FROM sessions), (SELECT COUNT(*) FROM messages)")
  bytes=$(stat -c %s "$STORE")
  local load_start rows=()
  load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
  row() { rows+=("$(printf '%-44s %10s %12s   %s' "$1" "$2" "$3" "$4")"); }
  # The bar on peak RSS is the two exports'; the --state runs' peak (which holds the
  # state's curation memory too) is reported beside it.
  local peak=0 state_peak=0
  peak_of() { peak=$(printf '%s\n' "$peak" "$RSS" | sort -g | tail -1); }
  state_peak_of() { state_peak=$(printf '%s\n' "$state_peak" "$RSS" | sort -g | tail -1); }
  local EXPORT=("$OURS" export --hermes-home "$home" --out - --quiet)

  say "$kind: warm-up runs (scan, export, export --tokenizer), counting cache hits"
  measure "scan-warm.$kind" sqlite3 "$STORE" "$SCAN_SQL"
  [ "$RC" = 0 ] || die "sqlite3 scan failed (exit $RC)"
  cache_stats "stats.$kind" "${EXPORT[@]}"
  local prompts_def=$STATS_PROMPTS
  cache_stats "stats-tok.$kind" "${EXPORT[@]}" --tokenizer "$TOKENIZER"
  local pieces_tok=$STATS_PIECES words_tok=$STATS_WORDS

  say "$kind: $PAIRS pairs (scan, export)"
  pairs "ours.$kind" "$PAIRS" "${EXPORT[@]}"
  local ratio ratio_spread
  ratio=$(median "$RATIOS") ratio_spread=$(spread "$RATIOS")
  peak_of
  row "hermes-harvest export (full SFT, redacted)" "$(median "$WALLS")" "$RSS" "runs: $WALLS"
  row "sqlite3 scan (baseline, its pairs)" "$(median "$SCANS")" "" "runs: $SCANS"
  local ratios_def=$RATIOS ours_wall
  ours_wall=$(median "$WALLS")

  say "$kind: $TOK_PAIRS pairs (scan, export --tokenizer)"
  pairs "tok.$kind" "$TOK_PAIRS" "${EXPORT[@]}" --tokenizer "$TOKENIZER"
  local tok_ratio tok_spread
  tok_ratio=$(median "$RATIOS") tok_spread=$(spread "$RATIOS")
  peak_of
  row "export --tokenizer (exact counts)" "$(median "$WALLS")" "$RSS" "runs: $WALLS"
  row "sqlite3 scan (baseline, its pairs)" "$(median "$SCANS")" "" "runs: $SCANS"
  local ratios_tok=$RATIOS

  if [ "$kind" = synth ] && [ "${SKIP_HERMES:-0}" != 1 ]; then
    hermes_export "$n_sessions"
  fi

  say "$kind: incremental: full --state run on a copy, append one day, second run"
  local I_HOME="$SCRATCH/incr/home"
  rm -rf "$SCRATCH/incr"
  copy_store "$STORE" "$I_HOME"
  local INCR=("$OURS" export --hermes-home "$I_HOME" --state "$SCRATCH/incr/state.json"
    --out "$SCRATCH/incr/out/" --quiet)
  measure "incr-full.$kind" "${INCR[@]}"
  [ "$RC" = 0 ] || die "incremental first run failed (exit $RC)"
  state_peak_of
  row "export --state --out DIR/ (first, full)" "$WALL" "$RSS" ""
  nice "$SYNTH" "${mode[@]}" --append-day --out "$I_HOME/state.db" 2>"$TMPD/append.log" \
    || { cat "$TMPD/append.log" >&2; die "synth-store --append-day failed"; }
  local day_sessions day_messages
  read -r day_sessions day_messages < <(sed -n 's/.*appended \([0-9]*\) sessions, \([0-9]*\) messages.*/\1 \2/p' "$TMPD/append.log")
  measure "incr.$kind" "${INCR[@]}"
  [ "$RC" = 0 ] || die "incremental second run failed (exit $RC)"
  state_peak_of
  local night=$WALL
  row "export --state, after one more day" "$night" "$RSS" "+$day_sessions sessions, +$day_messages messages"
  measure "incr-noop.$kind" "${INCR[@]}"
  [ "$RC" = 0 ] || die "incremental third run failed (exit $RC)"
  state_peak_of
  row "export --state, nothing new" "$WALL" "$RSS" ""
  rm -rf "$SCRATCH/incr"

  local variety=""
  if [ "${BENCH_VARIETY:-1}" != 0 ]; then
    variety=$("$SYNTH" --measure --out "$STORE" | sed 's/^[^:]*: variety: //')
  fi

  # Cache hit rates: system prompts from the default export, rendered pieces and BPE words
  # from the one with --tokenizer.
  local sys_n sys_h p_n p_h w_n w_h
  read -r sys_n sys_h <<<"${prompts_def:-0 0}"
  read -r p_n p_h <<<"${pieces_tok:-0 0}"
  read -r w_n w_h <<<"${words_tok:-0 0}"

  out ""
  out "== $kind store: $STORE"
  out "   $n_sessions sessions, $n_messages messages, $(awk -v b="$bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }'); load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  [ -z "$variety" ] || out "   $variety"
  out ""
  out "$(printf '%-44s %10s %12s   %s' "command" "wall (s)" "peak RSS MB" "notes")"
  for r in "${rows[@]}"; do out "$r"; done
  out ""
  out "ours / sqlite3 scan, paired:      median $ratio ($PAIRS pairs, $ratio_spread: $ratios_def)   (bar <= 2.0: $(verdict "$ratio <= 2.0"); goal <= 1.3: $(verdict "$ratio <= 1.3"))"
  out "with --tokenizer / scan, paired:  median $tok_ratio ($TOK_PAIRS pairs, $tok_spread: $ratios_tok)   (bar <= 3.0: $(verdict "$tok_ratio <= 3.0"))"
  out "peak RSS of our exports:          $peak MB   (bar < 100 MB: $(verdict "$peak < 100")); the --state runs: $state_peak MB"
  out "incremental run, one new day:     $night s   (bar < 1 s: $(verdict "$night < 1"))"
  out "cache hit rates:                  system prompts $(rate "$sys_n" "$sys_h"); rendered pieces $(rate "$p_n" "$p_h"); words (BPE) $(rate "$w_n" "$w_h")"
  if [ "$kind" = synth ] && [ -n "${HERMES_WALL:-}" ]; then
    out "hermes sessions export / ours:    $(awk -v a="$HERMES_WALL" -v b="$ours_wall" 'BEGIN { printf "%.1f", (b > 0 ? a / b : 0) }')x the time, ${EXPORTED:-0} of $n_sessions sessions"
  fi
  SUMMARY+=("$(printf '%-7s default %s (%s)   --tokenizer %s (%s)   peak RSS %s MB   night %s s' "$kind" "$ratio" "$ratio_spread" "$tok_ratio" "$tok_spread" "$peak" "$night")")
}

# hermes_export N_SESSIONS: Hermes's own export on a copy of $STORE; adds a row.
hermes_export() {
  local HERMES="" VENV
  if [ -f scripts/hermes-venv.sh ]; then
    VENV="$(bash scripts/hermes-venv.sh "$HERMES_VERSION")" || VENV=""
  else
    VENV="$TARGET/hermes-venvs/$HERMES_VERSION"
    if [ ! -x "$VENV/bin/hermes" ]; then
      python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "hermes-agent[sms]==$HERMES_VERSION" \
        || VENV=""
    fi
  fi
  [ -n "$VENV" ] && [ -x "$VENV/bin/hermes" ] && HERMES="$VENV/bin/hermes"
  if [ -z "$HERMES" ]; then
    row "hermes sessions export --format jsonl" "-" "-" "not run: no Hermes $HERMES_VERSION venv"
    return
  fi
  say "hermes sessions export on a copy of the store (timeout ${HERMES_TIMEOUT}s, no network)"
  local H_HOME="$SCRATCH/hermes/home"
  copy_store "$STORE" "$H_HOME"
  mkdir -p "$SCRATCH/hermes/user"
  local NET=(unshare --net sh -c 'ip link set lo up && exec "$@"' sh)
  if ! unshare --net true 2>/dev/null; then
    say "unshare --net not permitted: running Hermes with the network"
    NET=()
  fi
  local COUNT="$TMPD/hermes.count" note
  # The copy was just written, so it is in the page cache: no warm-up run.
  measure hermes bash -c 'set -o pipefail; out="$1"; shift
    "$@" sessions export --format jsonl - | wc -l > "$out"' bash "$COUNT" \
    env HOME="$SCRATCH/hermes/user" HERMES_HOME="$H_HOME" \
    timeout "$HERMES_TIMEOUT" "${NET[@]}" "$HERMES"
  EXPORTED=$(tr -d ' ' < "$COUNT" 2>/dev/null || echo 0)
  HERMES_WALL=$WALL
  case "$RC" in
    0) note="$EXPORTED of $1 sessions exported" ;;
    124) note="stopped by the ${HERMES_TIMEOUT}s timeout; $EXPORTED of $1 sessions written" ;;
    *) note="exit $RC; $EXPORTED of $1 sessions exported" ;;
  esac
  row "hermes sessions export --format jsonl" "$HERMES_WALL" "$RSS" "$note"
  rm -rf "$SCRATCH/hermes"
}

for kind in $STORES; do bench_store "$kind"; done

CPU="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo
echo "Benchmark of $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') on $(nproc) cores (${CPU:-unknown CPU}), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(date -u '+%Y-%m-%d %H:%M UTC')"
cat "$REPORT"
echo
echo "summary (paired median ratios to the scan, their spread):"
printf '  %s\n' "${SUMMARY[@]}"
