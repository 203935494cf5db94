//! Latency of the online scoring API under load: starts `txguard run` on the default pipeline
//! (release build), lets it run alone for a while to measure its rate, then sends `POST
//! /api/v1/score` requests at a fixed rate (open loop: each request leaves at its scheduled
//! time, late ones at once, and its latency counts from its scheduled time, so a stalled
//! server is not hidden) from several keep-alive connections, and prints p50/p90/p99/p99.9/max
//! and the pipeline's rate with and without the requests.
//!
//! `cargo bench -p txguard --bench score_api -- [--requests-per-second 1000] [--seconds 30]
//! [--pipeline-rate 0] [--connections 8] [--batch-rows 8192] [--score-api-batch-rows 1024]
//! [--checkpoints]` (`--pipeline-rate 0`: the generator unpaced, as fast as the pipeline goes;
//! `--score-api-batch-rows 8192`: no smaller batches while requests come; `--checkpoints`:
//! checkpoint every second as `txguard run` does by default, else `--no-checkpoints`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: f64) -> f64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: {v} is not a number"))
        })
        .unwrap_or(default)
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Rows the source has released and its watermark (µs), from /api/status.
fn progress(addr: &str) -> (u64, Option<i64>) {
    let body = get(addr, "/api/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let s = &v["sources"][0];
    let w = s["watermark"].as_str().and_then(|w| {
        chrono::DateTime::parse_from_rfc3339(w)
            .ok()
            .map(|t| t.timestamp_micros())
    });
    (s["on_time"].as_u64().unwrap_or(0), w)
}

/// One keep-alive request; the status code.
fn post(conn: &mut BufReader<TcpStream>, body: &str) -> u16 {
    let req = format!(
        "POST /api/v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes()).expect("send");
    let mut line = String::new();
    conn.read_line(&mut line).expect("status line");
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).expect("body");
    code
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rps = arg(&args, "--requests-per-second", 1000.0);
    let seconds = arg(&args, "--seconds", 30.0);
    let pipeline_rate = arg(&args, "--pipeline-rate", 0.0);
    let connections = arg(&args, "--connections", 8.0) as usize;
    let batch_rows = arg(&args, "--batch-rows", 8192.0) as usize;
    let api_batch_rows = arg(&args, "--score-api-batch-rows", 1024.0) as usize;
    let checkpoints = args.iter().any(|a| a == "--checkpoints");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sets = vec!["transactions.count=1000000000".to_string()];
    if pipeline_rate > 0.0 {
        // Only the wall-clock pace: event time keeps the generator's 1 event a second (as
        // the default model's training data), so the data is the model's. (Setting
        // events_per_second to the rate makes each user buy thousands of times as often:
        // ~17% flagged and explained instead of 1%, a different load.)
        sets.push(format!("transactions.rate={pipeline_rate}"));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_txguard"));
    cmd.args(["run"])
        .arg(repo.join("sql/pipeline.sql"))
        .arg("--model")
        .arg(repo.join("models/default.json"))
        .args(["--ui", "127.0.0.1:0", "--quiet"])
        .args(if checkpoints {
            &[][..]
        } else {
            &["--no-checkpoints"][..]
        })
        .args(["--batch-rows", &batch_rows.to_string()])
        .args(["--score-api-batch-rows", &api_batch_rows.to_string()]);
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let mut child = cmd
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn txguard");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("a web UI line").expect("read");
        if let Some(rest) = line.strip_prefix("web UI: http://") {
            break rest.split('/').next().expect("addr").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    eprintln!("pipeline up at {addr}; measuring it alone for 11 s ...");
    // Warm up, then the pipeline alone.
    std::thread::sleep(Duration::from_secs(3));
    let (r0, _) = progress(&addr);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let (r1, w) = progress(&addr);
    let alone = (r1 - r0) as f64 / t0.elapsed().as_secs_f64();
    let w = w.expect("a watermark");

    // Requests: users spread over the generator's 10k, times ahead of the watermark, which a
    // poller reads every 100 ms (event time runs the pipeline's rate times faster than the
    // clock, ~1e4 to ~2e5: 20 h ahead stays ahead between two reads and still sees the last
    // hours of each user's 24 h windows).
    let ahead: i64 = 20 * 3_600_000_000;
    let mark = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(w));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (addr, mark, done) = (addr.clone(), mark.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let (_, Some(w)) = progress(&addr) {
                    mark.store(w, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    eprintln!("pipeline alone: {alone:.0} tx/s; sending {rps} requests/s for {seconds} s ...");
    let start = Instant::now() + Duration::from_millis(200);
    let total = (rps * seconds) as usize;
    let interval = Duration::from_secs_f64(connections as f64 / rps);
    // A server slower than the offered rate never drains an open loop: requests not sent
    // by the deadline are counted as missed and the verdict says the server fell behind.
    let deadline = start + Duration::from_secs_f64(seconds) + Duration::from_secs(10);
    let (r2, _) = progress(&addr);
    let t2 = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|c| {
            let addr = addr.clone();
            let mark = mark.clone();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut conn = BufReader::new(stream);
                let mut lat = Vec::new();
                let mut failed = 0usize;
                let mut missed = 0usize;
                let offset = interval.mul_f64(c as f64 / connections as f64);
                let each = total / connections;
                for i in 0..each {
                    if Instant::now() > deadline {
                        missed = each - i;
                        break;
                    }
                    let due = start + offset + interval * i as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let user = (c * 7919 + i * 104_729) % 10_000;
                    let w = mark.load(std::sync::atomic::Ordering::Relaxed);
                    let ts = chrono::DateTime::from_timestamp_micros(w + ahead)
                        .expect("time")
                        .to_rfc3339();
                    let body = format!(
                        r#"{{"transaction_id":"b{c}-{i}","user_id":"u{user:06}","amount":{}.5,"ts":"{ts}","merchant":"m_0001","category":"grocery","location":"Berlin","channel":"pos","lat":52.5,"lon":13.4}}"#,
                        10 + i % 900
                    );
                    if post(&mut conn, &body) != 200 {
                        failed += 1;
                    }
                    lat.push(due.elapsed());
                }
                (lat, failed, missed)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let (mut failed, mut missed) = (0, 0);
    for w in workers {
        let (l, f, m) = w.join().expect("worker");
        lat.extend(l);
        failed += f;
        missed += m;
    }
    let answered_for = t2.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (r3, _) = progress(&addr);
    let loaded = (r3 - r2) as f64 / t2.elapsed().as_secs_f64();
    // Where the pipeline's thread spent the run, and how long requests queued for it.
    let metrics = get(&addr, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    lat.sort();
    assert!(!lat.is_empty(), "no request was answered");
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "score API: {} requests at {rps}/s over {connections} connections ({failed} not 200), \
         pipeline {}, --batch-rows {batch_rows} --score-api-batch-rows {api_batch_rows}, {}",
        lat.len(),
        if pipeline_rate > 0.0 {
            format!("paced at {pipeline_rate} tx/s")
        } else {
            "unpaced".to_string()
        },
        if checkpoints {
            "checkpoints every 1 s"
        } else {
            "--no-checkpoints"
        }
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    println!("pipeline: {alone:.0} tx/s alone, {loaded:.0} tx/s while answering");
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let steps: Vec<String> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("txguard_pipeline_step_seconds_sum{step=\"")?;
            Some(format!("{} {:.1} s", rest.split('"').next()?, value(l)?))
        })
        .collect();
    println!("pipeline thread, whole run: {}", steps.join(", "));
    let queued: Vec<(String, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let le = l.strip_prefix("txguard_score_api_queue_seconds_bucket{le=\"")?;
            Some((le.split('"').next()?.to_string(), value(l)?))
        })
        .collect();
    if let Some((_, all)) = queued.last().cloned().filter(|(_, n)| *n > 0.0) {
        let within: Vec<String> = queued
            .iter()
            .filter(|(le, _)| ["0.001", "0.01", "0.1"].contains(&le.as_str()))
            .map(|(le, n)| format!("≤ {le} s {:.1}%", 100.0 * n / all))
            .collect();
        println!("queued for the pipeline's thread: {}", within.join(", "));
    }
    if missed > 0 {
        println!(
            "FELL BEHIND: {missed} of {total} requests not sent by the deadline (the server \
             answered {:.0} requests/s); the latencies above are of the ones sent",
            lat.len() as f64 / answered_for
        );
    }
}
