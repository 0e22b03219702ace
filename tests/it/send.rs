//! `send` against in-test fake API servers on 127.0.0.1:0: what goes over
//! the wire, what comes out, and every failure's exit code.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

const KEY: &str = "it-secret-key-9f8e7d6c5b4a3210";
const TURN: &str =
    "[perception] archon_entering: Archon 'Ezra' entered the Nexus at (12,0,4) in world 'w'.";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }

    fn content(&self) -> String {
        self.json()["messages"][0]["content"]
            .as_str()
            .expect("messages[0].content")
            .to_owned()
    }
}

/// What the fake does with a request.
enum Answer {
    Status(u16, &'static str, String),
    /// Keep the connection open and say nothing.
    Hang,
    /// These bytes, as the whole response.
    Raw(Vec<u8>),
}

fn completion(text: &str) -> String {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "hermes-agent",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    })
    .to_string()
}

fn ok(text: &str) -> Answer {
    Answer::Status(200, "application/json", completion(text))
}

/// A server that answers each connection with `answer(request)`, and
/// reports every request on the returned channel.
fn serve(answer: impl Fn(&Seen) -> Answer + Send + 'static) -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let Some(seen) = read_request(&mut stream) else {
                continue;
            };
            let _ = tx.send(seen.clone());
            match answer(&seen) {
                Answer::Status(code, ctype, body) => {
                    let head = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Hermes-Session-Id: {}\r\nConnection: close\r\n\r\n",
                        body.len(),
                        seen.header("X-Hermes-Session-Id").unwrap_or("")
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body.as_bytes());
                }
                Answer::Raw(bytes) => {
                    let _ = stream.write_all(&bytes);
                }
                Answer::Hang => {
                    thread::spawn(move || {
                        thread::sleep(Duration::from_secs(30));
                        drop(stream);
                    });
                }
            }
        }
    });
    (port, rx)
}

fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// The binary with a clean environment: no Hermes settings leak in from
/// the machine running the tests.
fn send_cmd(home: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(common::bin());
    for var in [
        "HERMES_API_URL",
        "API_SERVER_KEY",
        "API_SERVER_HOST",
        "API_SERVER_PORT",
        "HERMES_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home).arg("send");
    cmd
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn run(mut cmd: assert_cmd::Command) -> Run {
    let start = Instant::now();
    let out = cmd.timeout(Duration::from_secs(60)).output().expect("run");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// `send archon_entering --actor Ezra --at 12,0,4 --world w --url ...`
/// with the key in the environment.
fn entering(home: &Path, port: u16) -> assert_cmd::Command {
    let mut cmd = send_cmd(home);
    cmd.env("API_SERVER_KEY", KEY).args([
        "archon_entering",
        "--actor",
        "Ezra",
        "--at",
        "12,0,4",
        "--world",
        "w",
        "--url",
        &url(port),
    ]);
    cmd
}

/// A failure: the code, nothing on stdout, one line on stderr, no key.
fn assert_failure(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, code, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "", "nothing on stdout on failure");
    assert_eq!(r.stderr.lines().count(), 1, "one line: {:?}", r.stderr);
    assert!(r.stderr.starts_with("hermes-harvest: "), "{}", r.stderr);
    assert!(
        r.stderr.contains(needle),
        "{needle:?} not in {:?}",
        r.stderr
    );
    assert!(!r.stderr.contains(KEY), "the key leaked: {}", r.stderr);
}

#[test]
fn success_prints_the_reply_and_sends_header_key_and_turn() {
    let home = tempfile::tempdir().unwrap();
    let (port, rx) = serve(|_| ok("Welcome, Ezra."));
    let r = run(entering(home.path(), port));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "Welcome, Ezra.\n");
    assert_eq!(r.stderr, "");
    assert!(!r.stderr.contains(KEY));

    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("Authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen.header("X-Hermes-Session-Id"), Some("nexus-w"));
    assert!(
        seen.header("Content-Type")
            .is_some_and(|v| v.starts_with("application/json"))
    );
    assert_eq!(
        seen.json(),
        json!({"model": "hermes-agent", "messages": [{"role": "user", "content": TURN}], "stream": false})
    );
}

#[test]
fn json_prints_the_raw_response() {
    let home = tempfile::tempdir().unwrap();
    let (port, _rx) = serve(|_| ok("raw"));
    let mut cmd = entering(home.path(), port);
    cmd.arg("--json");
    let r = run(cmd);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, completion("raw") + "\n");
}

#[test]
fn event_from_stdin_and_file_renders_like_the_flags() {
    let home = tempfile::tempdir().unwrap();
    let (port, rx) = serve(|_| ok("ok"));
    let event = r#"{"type":"archon_entering","actor":"Ezra","at":[12,0,4],"world":"w"}"#;

    let mut cmd = send_cmd(home.path());
    cmd.env("API_SERVER_KEY", KEY)
        .args(["--event", "-", "--url", &url(port)])
        .write_stdin(event);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.content(), TURN);
    assert_eq!(seen.header("X-Hermes-Session-Id"), Some("nexus-w"));

    let file = home.path().join("event.json");
    std::fs::write(&file, event).unwrap();
    let mut cmd = send_cmd(home.path());
    cmd.env("API_SERVER_KEY", KEY).args([
        "--event",
        file.to_str().unwrap(),
        "--url",
        &url(port),
        "--session",
        "nexus-custom",
    ]);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.content(), TURN);
    assert_eq!(seen.header("X-Hermes-Session-Id"), Some("nexus-custom"));
}

#[test]
fn url_and_key_come_from_the_hermes_home() {
    let home = tempfile::tempdir().unwrap();
    let (port, rx) = serve(|_| ok("from config"));
    let hermes = home.path().join("hermes");
    std::fs::create_dir(&hermes).unwrap();
    std::fs::write(
        hermes.join("config.yaml"),
        format!(
            "model:\n  provider: custom\nplatforms:\n  api_server:\n    enabled: true\n    extra:\n      host: 127.0.0.1\n      port: {port}\n      key: {KEY}\n"
        ),
    )
    .unwrap();

    let mut cmd = send_cmd(home.path());
    cmd.args(["tick", "--world", "w"])
        .env("HERMES_HOME", &hermes);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "from config\n");
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        seen.header("Authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen.content(), "[perception] tick: World 'w' ticked.");

    // .env overrides config.yaml, as in Hermes.
    std::fs::write(
        hermes.join(".env"),
        "API_SERVER_KEY=\"dotenv-key-0123456789\"\n",
    )
    .unwrap();
    let mut cmd = send_cmd(home.path());
    cmd.args(["tick", "--hermes-home", hermes.to_str().unwrap()]);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        seen.header("Authorization"),
        Some("Bearer dotenv-key-0123456789")
    );
    assert_eq!(seen.header("X-Hermes-Session-Id"), Some("nexus-world"));
}

#[test]
fn wrong_key_is_exit_11() {
    let home = tempfile::tempdir().unwrap();
    // The server even echoes the key back: it must still not be printed.
    let (port, _rx) = serve(|seen| {
        let auth = seen.header("Authorization").unwrap_or("").to_owned();
        Answer::Status(
            401,
            "application/json",
            json!({"error": {"message": format!("Invalid API key ({auth})")}}).to_string(),
        )
    });
    let r = run(entering(home.path(), port));
    assert_failure(&r, 11, "API_SERVER_KEY");
    assert!(r.stderr.contains("401"), "{}", r.stderr);
}

#[test]
fn forbidden_is_exit_11_and_says_when_no_key_was_found() {
    let home = tempfile::tempdir().unwrap();
    let (port, rx) = serve(|_| {
        Answer::Status(
            403,
            "application/json",
            r#"{"error":{"message":"Session continuation requires API key authentication."}}"#
                .into(),
        )
    });
    let mut cmd = send_cmd(home.path());
    cmd.args(["tick", "--url", &url(port)]);
    let r = run(cmd);
    assert_failure(&r, 11, "no key was found");
    assert!(
        r.stderr.contains("Session continuation requires"),
        "{}",
        r.stderr
    );
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.header("Authorization"), None);
}

#[test]
fn rate_limited_is_exit_12() {
    let home = tempfile::tempdir().unwrap();
    let (port, _rx) = serve(|_| Answer::Status(429, "text/plain", "slow down".into()));
    let r = run(entering(home.path(), port));
    assert_failure(&r, 12, "retry later");
}

#[test]
fn server_errors_are_exit_13_with_status_and_body() {
    let home = tempfile::tempdir().unwrap();
    let body = format!("Internal Server Error: {}", "x".repeat(400));
    let (port, _rx) = serve(move |_| Answer::Status(500, "text/plain", body.clone()));
    let r = run(entering(home.path(), port));
    assert_failure(&r, 13, "HTTP 500: Internal Server Error: xxx");
    assert!(
        !r.stderr.contains(&"x".repeat(300)),
        "body not cut: {}",
        r.stderr
    );

    let (port, _rx) = serve(|_| Answer::Status(404, "text/plain", "no such route".into()));
    let r = run(entering(home.path(), port));
    assert_failure(&r, 13, "HTTP 404: no such route");
}

#[test]
fn a_server_that_never_answers_is_exit_14_within_the_timeout() {
    let home = tempfile::tempdir().unwrap();
    let (port, _rx) = serve(|_| Answer::Hang);
    let mut cmd = entering(home.path(), port);
    cmd.args(["--timeout", "1"]);
    let r = run(cmd);
    assert_failure(&r, 14, "--timeout");
    // Far below the 30 s the fake holds the connection (a loose bound, so a
    // loaded machine does not make it flake).
    assert!(r.elapsed < Duration::from_secs(20), "took {:?}", r.elapsed);
}

#[test]
fn a_malformed_reply_is_exit_15() {
    let home = tempfile::tempdir().unwrap();
    let (port, _rx) = serve(|_| Answer::Status(200, "text/html", "<html>hello</html>".into()));
    let r = run(entering(home.path(), port));
    assert_failure(&r, 15, "not JSON");

    let (port, _rx) =
        serve(|_| Answer::Status(200, "application/json", r#"{"choices":[]}"#.into()));
    let r = run(entering(home.path(), port));
    assert_failure(&r, 15, "choices[0]");
}

#[test]
fn nothing_listening_is_exit_10() {
    let home = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = run(entering(home.path(), port));
    assert_failure(&r, 10, "hermes gateway run");
    assert!(r.stderr.contains("--url"), "{}", r.stderr);
}

#[test]
fn bad_events_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 4] = [
        &["archon_entering"],
        &["tick", "--at", "1,2"],
        &["tick", "--at", "1,inf,2"],
        &["tick", "--session", "../etc"],
    ];
    for args in cases {
        let mut cmd = send_cmd(home.path());
        cmd.args(args).args(["--url", "http://127.0.0.1:9"]);
        let r = run(cmd);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "");
    }
    for bad_url in [
        "ftp://127.0.0.1:9",
        "127.0.0.1:9",
        "http://user:pw@127.0.0.1:9",
    ] {
        let mut cmd = send_cmd(home.path());
        cmd.args(["tick", "--url", bad_url]);
        let r = run(cmd);
        assert_eq!(r.code, 2, "{bad_url}: {}", r.stderr);
        assert!(!r.stderr.contains("pw@"), "{}", r.stderr);
    }
    // A broken setting in the Hermes home is an error (exit 1) naming it.
    let hermes = home.path().join("hermes");
    std::fs::create_dir(&hermes).unwrap();
    std::fs::write(hermes.join(".env"), "API_SERVER_PORT=eighty\n").unwrap();
    let mut cmd = send_cmd(home.path());
    cmd.args(["tick", "--hermes-home", hermes.to_str().unwrap()]);
    let r = run(cmd);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("\"eighty\""), "{}", r.stderr);

    let mut cmd = send_cmd(home.path());
    cmd.args(["--event", "-", "--url", "http://127.0.0.1:9"])
        .write_stdin(r#"{"type":"archon_departed"}"#);
    let r = run(cmd);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("needs an actor"), "{}", r.stderr);
}

/// Every example in the schema, and a set of good and bad events: the
/// schema and the code agree on each.
#[test]
fn schema_and_code_agree() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("schemas/perception-event.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut cases: Vec<(Value, bool)> = schema["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e.clone(), true))
        .collect();
    cases.extend([
        (
            json!({"type": "tick", "detail": "t=1", "at": [0.5, -1, 2e3]}),
            true,
        ),
        (json!({"type": "archon_departed", "actor": "Ezra"}), true),
        (json!({"type": "archon_departed"}), false),
        (json!({"type": "archon_departed", "actor": " "}), false),
        (json!({"type": "boom"}), false),
        (json!({"actor": "Ezra"}), false),
        (json!({"type": "tick", "at": [1, 2]}), false),
        (json!({"type": "tick", "at": [1, 2, "3"]}), false),
        (json!({"type": "tick", "world": ""}), false),
        (json!({"type": "tick", "extra": 1}), false),
        (json!({"type": "tick", "detail": null}), false),
        (json!(["tick"]), false),
    ]);
    for (event, valid) in cases {
        assert_eq!(validator.is_valid(&event), valid, "schema on {event}");
        let code = hermes_harvest::send::Event::from_json(&event.to_string(), "w").is_ok();
        assert_eq!(code, valid, "code on {event}");
    }
}

/// A minimal state.db the store reader accepts.
fn make_state_db(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, source TEXT NOT NULL, started_at REAL,
                                parent_session_id TEXT);
         CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,
                                role TEXT NOT NULL, content TEXT, timestamp REAL);",
    )
    .unwrap();
}

/// What Hermes does with a turn: store the user row and the reply.
fn record(db: &Path, session: &str, user: &str, reply: &str) {
    let db = rusqlite::Connection::open(db).unwrap();
    db.execute(
        "INSERT OR IGNORE INTO sessions (id, source, started_at) VALUES (?1, 'api_server', 1.0)",
        [session],
    )
    .unwrap();
    for (role, text) in [("user", user), ("assistant", reply)] {
        db.execute(
            "INSERT INTO messages (session_id, role, content, timestamp) VALUES (?1, ?2, ?3, 1.0)",
            [session, role, text],
        )
        .unwrap();
    }
}

#[test]
fn verify_waits_for_the_turn_to_be_stored() {
    let home = tempfile::tempdir().unwrap();
    let hermes = home.path().join("hermes");
    std::fs::create_dir(&hermes).unwrap();
    let db = hermes.join("state.db");
    make_state_db(&db);

    // Stores the turn 600 ms after replying, like a slow writer.
    let db_for_server = db.clone();
    let (port, _rx) = serve(move |seen| {
        let session = seen.header("X-Hermes-Session-Id").unwrap().to_owned();
        let turn = seen.content();
        let db = db_for_server.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(600));
            record(&db, &session, &turn, "stored reply");
        });
        ok("stored reply")
    });
    let send_tick = || {
        let mut cmd = send_cmd(home.path());
        cmd.env("API_SERVER_KEY", KEY).args([
            "tick",
            "--world",
            "w",
            "--url",
            &url(port),
            "--hermes-home",
            hermes.to_str().unwrap(),
            "--verify",
            "--verify-timeout",
            "10",
        ]);
        run(cmd)
    };
    let r = send_tick();
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "stored reply\n");
    assert_eq!(r.stderr, "verified: session nexus-w\n");
    assert!(r.elapsed >= Duration::from_millis(600), "{:?}", r.elapsed);

    // The same tick again renders the same turn: the first one must not
    // count as proof of the second.
    let r = send_tick();
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert!(r.elapsed >= Duration::from_millis(600), "{:?}", r.elapsed);
}

#[test]
fn verify_fails_with_16_when_the_turn_never_shows_up() {
    let home = tempfile::tempdir().unwrap();
    let hermes = home.path().join("hermes");
    std::fs::create_dir(&hermes).unwrap();
    let db = hermes.join("state.db");
    make_state_db(&db);
    // An earlier, identical turn is already there; this one never arrives.
    record(
        &db,
        "nexus-w",
        "[perception] tick: World 'w' ticked.",
        "old reply",
    );
    let (port, _rx) = serve(|_| ok("a reply nobody stored"));
    let mut cmd = send_cmd(home.path());
    cmd.env("API_SERVER_KEY", KEY).args([
        "tick",
        "--world",
        "w",
        "--url",
        &url(port),
        "--hermes-home",
        hermes.to_str().unwrap(),
        "--verify",
        "--verify-timeout",
        "1",
    ]);
    let r = run(cmd);
    assert_eq!(r.code, 16, "stderr: {}", r.stderr);
    // The reply itself was received, so it is printed.
    assert_eq!(r.stdout, "a reply nobody stored\n");
    assert!(r.stderr.contains("not captured"), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);

    // --verify without a Hermes home is an error before anything is sent.
    let mut cmd = send_cmd(home.path());
    cmd.env("API_SERVER_KEY", KEY).args([
        "tick",
        "--url",
        &url(port),
        "--hermes-home",
        home.path().join("missing").to_str().unwrap(),
        "--verify",
    ]);
    let r = run(cmd);
    assert_eq!(r.code, 1, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "");
}

#[test]
fn a_key_echoed_late_in_an_error_body_is_not_printed_even_in_part() {
    let home = tempfile::tempdir().unwrap();
    // The key straddles the 200-character cut of the snippet.
    let body = format!("{} bad key {KEY} rejected", "y".repeat(185));
    let (port, _rx) = serve(move |_| Answer::Status(401, "text/plain", body.clone()));
    let r = run(entering(home.path(), port));
    assert_eq!(r.code, 11, "{}", r.stderr);
    for n in 6..=KEY.len() {
        assert!(
            !r.stderr.contains(&KEY[..n]),
            "a {n}-character prefix of the key leaked: {}",
            r.stderr
        );
    }
}

#[test]
fn settings_that_are_not_regular_files_do_not_hang_send() {
    let home = tempfile::tempdir().unwrap();
    let hermes = home.path().join("hermes");
    std::fs::create_dir(&hermes).unwrap();
    let fifo = hermes.join(".env");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut cmd = send_cmd(home.path());
    cmd.args([
        "tick",
        "--timeout",
        "1",
        "--hermes-home",
        hermes.to_str().unwrap(),
    ]);
    let r = run(cmd);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
    let mut cmd = send_cmd(home.path());
    cmd.args([
        "tick",
        "--timeout",
        "1",
        "--hermes-home",
        hermes.to_str().unwrap(),
    ]);
    let r = run(cmd);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
}

#[test]
fn out_of_range_values_are_usage_errors_not_panics() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["tick", "--timeout", "18446744073709551615"][..],
        &["tick", "--timeout", "0"],
        &["tick", "--verify-timeout", "18446744073709551615"],
        &["tick", "--url", "http://[::1"],
        &["tick", "--url", "http://127.0.0.1:99999"],
        &["tick", "--url", "http://a b"],
    ] {
        let mut cmd = send_cmd(home.path());
        cmd.args(args);
        let r = run(cmd);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

/// A CA and a certificate it signed for 127.0.0.1, made for this test.
struct TestPki {
    ca_pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn test_pki() -> TestPki {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hermes-harvest test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        leaf: leaf.der().clone(),
        leaf_key: rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    }
}

/// An HTTPS server on 127.0.0.1 (rustls, in a thread) that answers every
/// request with a completion of `text`, reporting what it saw.
fn serve_tls(pki: &TestPki, text: &'static str) -> (u16, mpsc::Receiver<Seen>) {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], pki.leaf_key.clone_key())
        .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // A client that does not trust us fails the handshake here.
            let Some(seen) = read_tls_request(&mut tls) else {
                continue;
            };
            let _ = tx.send(seen);
            let body = completion(text);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(head.as_bytes());
            let _ = tls.write_all(body.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (port, rx)
}

fn read_tls_request(stream: &mut impl Read) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

#[test]
fn https_with_a_private_ca_passes_with_cacert_and_fails_clearly_without() {
    let home = tempfile::tempdir().unwrap();
    let pki = test_pki();
    let ca = home.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (port, seen) = serve_tls(&pki, "hello over TLS");
    let url = format!("https://127.0.0.1:{port}");
    let send = |extra: &[&str]| {
        let mut cmd = send_cmd(home.path());
        cmd.env("API_SERVER_KEY", KEY)
            .args(["tick", "--world", "w", "--url", &url, "--timeout", "30"])
            .args(extra);
        run(cmd)
    };
    let r = send(&["--cacert", ca.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim_end(), "hello over TLS");
    let got = seen
        .recv_timeout(Duration::from_secs(30))
        .expect("a request");
    assert_eq!(got.method, "POST");
    assert_eq!(
        got.header("Authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    // The system's roots do not know the test CA.
    let r = send(&[]);
    assert_failure(&r, 17, "TLS");
    assert!(r.stderr.contains("--cacert"), "{}", r.stderr);
    assert!(r.stderr.contains("not trusted"), "{}", r.stderr);

    // A --cacert that holds no certificate is a usage error.
    let junk = home.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let r = send(&["--cacert", junk.to_str().unwrap()]);
    assert_failure(&r, 2, "--cacert");
    // Plain HTTP to the TLS port fails, but never hangs.
    let mut cmd = send_cmd(home.path());
    cmd.args([
        "tick",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--timeout",
        "5",
    ]);
    let r = run(cmd);
    assert_ne!(r.code, 0, "{}", r.stderr);
}

#[test]
fn the_key_never_travels_in_the_clear_beyond_loopback() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = send_cmd(home.path());
    cmd.env("API_SERVER_KEY", KEY).args([
        "tick",
        "--url",
        "http://192.0.2.1:8642",
        "--timeout",
        "1",
    ]);
    let r = run(cmd);
    assert_failure(&r, 2, "in the clear");
    // With the flag that says so, the call is made (and fails to connect).
    let mut cmd = send_cmd(home.path());
    cmd.env("API_SERVER_KEY", KEY).args([
        "tick",
        "--url",
        "http://192.0.2.1:8642",
        "--timeout",
        "1",
        "--insecure-http",
    ]);
    let r = run(cmd);
    assert!([10, 14].contains(&r.code), "{}", r.stderr);
    // Without a key there is nothing to leak.
    let mut cmd = send_cmd(home.path());
    cmd.args(["tick", "--url", "http://192.0.2.1:8642", "--timeout", "1"]);
    let r = run(cmd);
    assert!([10, 14].contains(&r.code), "{}", r.stderr);
}

#[test]
fn a_reply_that_echoes_the_key_does_not_print_it() {
    let home = tempfile::tempdir().unwrap();
    let (port, _seen) = serve(|_| ok(&format!("your key is {KEY}, right?")));
    for json_flag in [false, true] {
        let mut cmd = entering(home.path(), port);
        if json_flag {
            cmd.arg("--json");
        }
        let r = run(cmd);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!r.stdout.contains(KEY), "the key leaked: {}", r.stdout);
        assert!(r.stdout.contains("<API_SERVER_KEY>"), "{}", r.stdout);
    }
}

#[test]
fn huge_headers_and_unrequested_gzip_are_bad_replies() {
    let home = tempfile::tempdir().unwrap();
    let big = format!(
        "HTTP/1.1 200 OK\r\nX-Filler: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        "a".repeat(70 * 1024)
    );
    let (port, _seen) = serve(move |_| Answer::Raw(big.clone().into_bytes()));
    let r = run(entering(home.path(), port));
    assert_failure(&r, 15, "headers");
    let gz: &[u8] = &[
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    raw.extend_from_slice(gz);
    let (port, _seen) = serve(move |_| Answer::Raw(raw.clone()));
    let r = run(entering(home.path(), port));
    assert_failure(&r, 15, "gzip");
}

#[test]
fn verify_without_stores_here_says_so_before_sending() {
    let home = tempfile::tempdir().unwrap();
    let hermes = home.path().join("remote-hermes");
    std::fs::create_dir(&hermes).unwrap();
    let (port, seen) = serve(|_| ok("hi"));
    let mut cmd = entering(home.path(), port);
    cmd.args(["--verify", "--hermes-home", hermes.to_str().unwrap()]);
    let r = run(cmd);
    assert_failure(&r, 2, "holds none");
    assert!(r.stderr.contains("another machine"), "{}", r.stderr);
    assert!(seen.try_recv().is_err(), "nothing is sent");
}
