//! Thousands of hostile messages through a whole `txguard run` (file source → CHECKs, an OVER
//! window, a TUMBLE window → stdout sinks, dead letters to stdout): the run ends by itself with
//! success, and every message is accounted for — the source's count is the file's non-blank
//! lines, and
//! rows out + dead letters (malformed, failing a CHECK, late) = messages in.
//! The decoder's own properties are in the engine's tests/hostile.rs.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// One line of the file: a transaction now and then late, often broken.
fn line() -> impl Strategy<Value = Vec<u8>> {
    // `@TS@` becomes the line's event time when the file is written.
    let good = (0u32..50, any::<u32>(), -10.0f64..1e5).prop_map(|(user, id, amount)| {
        format!("{{\"id\":\"t{id}\",\"user\":\"u{user}\",\"amount\":{amount},\"ts\":\"@TS@\"}}")
            .into_bytes()
    });
    let hostile = prop_oneof![
        Just(b"".to_vec()),
        Just(b"   \t ".to_vec()),
        Just(b"{\"id\":\"a\",\"user\":\"u\",\"amount\":NaN,\"ts\":\"2026-12-01T10:00:00Z\"}".to_vec()),
        Just(b"{\"id\":\"a\",\"user\":\"u\",\"amount\":1e999,\"ts\":\"2026-12-01T10:00:00Z\"}".to_vec()),
        Just(b"{\"id\":\"a\",\"user\":\"u\",\"amount\":1,\"ts\":\"+275760-09-13T00:00:00Z\"}".to_vec()),
        Just(b"{\"id\":\"a\",\"user\":\"u\",\"amount\":1,\"ts\":\"0001-01-01T00:00:00Z\"}".to_vec()),
        Just(b"{\"id\":\"a\",\"id\":\"b\",\"user\":\"u\",\"amount\":1,\"ts\":\"2026-12-01T10:00:00Z\"}".to_vec()),
        Just(b"{\"id\":\"\xff\xfe\",\"user\":\"u\",\"amount\":1,\"ts\":\"2026-12-01T10:00:00Z\"}".to_vec()),
        Just(b"{\"id\":\"a\\u0000\",\"user\":\"\x00\",\"amount\":1,\"ts\":\"2026-12-01T10:00:00Z\"}".to_vec()),
        (1usize..50_000).prop_map(|n| "[".repeat(n).into_bytes()),
        (1usize..20_000).prop_map(|n| format!("{{\"id\":\"{}\"}}", "x".repeat(n)).into_bytes()),
        proptest::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..200),
    ];
    let mutated = (good.clone(), any::<usize>(), any::<u8>()).prop_map(|(mut m, at, b)| {
        let i = at % m.len();
        m[i] = if b == b'\n' { b'#' } else { b };
        m
    });
    prop_oneof![6 => good, 3 => hostile, 2 => mutated]
}

/// `haystack` with each `from` replaced by `to` (bytes: lines need not be UTF-8).
fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn thousands_of_hostile_messages_leave_the_run_whole_and_every_one_accounted_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut runner = TestRunner::deterministic();
    let lines: Vec<Vec<u8>> = (0..12_000)
        .map(|_| line().new_tree(&mut runner).expect("value").current())
        .collect();
    // Event time advances a second per line; every 37th line is a minute behind (late).
    let lines: Vec<Vec<u8>> = lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let behind = if i % 37 == 0 { 60 } else { 0 };
            let t = chrono::DateTime::from_timestamp(1_796_119_200 + i as i64 - behind, 0)
                .expect("time")
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            replace(&l, b"@TS@", t.as_bytes())
        })
        .collect();
    let mut file = std::fs::File::create(dir.path().join("h.jsonl")).expect("create");
    for l in &lines {
        file.write_all(l)
            .and_then(|()| file.write_all(b"\n"))
            .expect("write");
    }
    drop(file);
    std::fs::write(
        dir.path().join("h.sql"),
        "CREATE TABLE tx (
    id TEXT NOT NULL, user TEXT NOT NULL, amount DOUBLE NOT NULL CHECK (amount >= 0),
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'file', path = 'h.jsonl');
CREATE TABLE out (id TEXT, n BIGINT, total DOUBLE) WITH (connector = 'stdout');
CREATE TABLE per_minute (user TEXT, n BIGINT) WITH (connector = 'stdout');
CREATE TABLE dead (source TEXT, position TEXT, reason TEXT, raw TEXT, received_at TIMESTAMP)
    WITH (connector = 'stdout');
INSERT INTO out SELECT id,
    COUNT(*) OVER w, SUM(amount) OVER w FROM tx
    WINDOW w AS (PARTITION BY user ORDER BY ts
        RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW);
INSERT INTO per_minute SELECT user, COUNT(*) FROM tx GROUP BY user, TUMBLE(INTERVAL '1' MINUTE);
INSERT INTO dead SELECT * FROM txguard_dead_letters;",
    )
    .expect("write");

    let mut child = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(["run", "h.sql", "--no-ui", "--quiet"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the run did not end within 240 s:\n{}",
                err.join().expect("stderr")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().expect("stdout");
    let stderr = err.join().expect("stderr");
    assert!(status.success(), "{stderr}");

    let (mut rows, mut dead, mut late, mut failed_check, mut windows) = (0, 0, 0, 0, 0);
    for l in stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(l)
            .unwrap_or_else(|e| panic!("a sink printed {:?}: {e}", String::from_utf8_lossy(l)));
        if let Some(reason) = v.get("reason").and_then(|r| r.as_str()) {
            dead += 1;
            late += usize::from(reason.contains("late"));
            failed_check += usize::from(reason.contains("CHECK"));
            assert!(!reason.trim().is_empty(), "{v}");
        } else if v.get("total").is_some() {
            rows += 1;
        } else {
            windows += 1;
        }
    }
    // A blank line is layout, not a message (the file source skips it); every other line is.
    let n = lines
        .iter()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    assert!(n < lines.len(), "blank lines were among them");
    assert!(
        stderr.contains(&format!("source tx: {n} events in")),
        "the source counts every line: {stderr}"
    );
    assert_eq!(
        rows + dead,
        n,
        "in = out + dead letters (late and CHECK among them)\n{stderr}"
    );
    assert!(
        late > 0 && failed_check > 0 && windows > 0,
        "late {late}, CHECK {failed_check}, windows {windows}"
    );
    assert!(rows > n / 3, "the good messages go through: {rows} of {n}");
}
