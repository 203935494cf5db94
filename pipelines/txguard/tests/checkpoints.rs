//! Durable state, tested by killing: `txguard run` of the default pipeline over a file of
//! transactions (a few lines malformed) is SIGKILLed at pseudo-random moments and restarted
//! each time; the Delta tables it ends with hold exactly what an uninterrupted run wrote —
//! the same rows, each once, with the same window features and scores (which shows the
//! state was restored, not rebuilt). Also: Ctrl-C takes a last checkpoint the next run
//! continues from, a corrupt newest checkpoint is skipped for the previous one with a log
//! line saying so, a crash at each step of the checkpoint protocol (injected) changes
//! nothing in the end, a second run into a folder in use is refused, a pipeline whose windows
//! changed refuses the old state and names
//! `--from-scratch`, and `txguard checkpoints list|inspect` show what a checkpoint holds.
//! Into Postgres: killed runs, sessions terminated in a loop, and a server of the test's own
//! stopped for a minute mid-run and started again, each ending with the uninterrupted rows.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{bounded, delta_digests, finish, kill_and_restart, repo, run_command, txguard};

const TABLES: [&str; 4] = [
    "transactions_scored",
    "anomalies",
    "dead_letters",
    "user_window_stats",
];

/// Writes `n` generated transactions to `dir/tx.jsonl`, with a malformed line every 5000.
fn transactions(dir: &Path, n: u64) {
    let (ok, _, err) = txguard(
        dir,
        &[
            "generate",
            "--count",
            &n.to_string(),
            "--users",
            "500",
            "--seed",
            "11",
            "-o",
            "gen.jsonl",
        ],
    );
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(dir.join("gen.jsonl")).expect("read");
    let mut out = String::with_capacity(text.len() + 1024);
    for (i, line) in text.lines().enumerate() {
        out.push_str(line);
        out.push('\n');
        if i % 5000 == 4999 {
            out.push_str("{\"transaction_id\": \"broken\", \"amount\": \"lots\"\n");
        }
    }
    std::fs::write(dir.join("tx.jsonl"), out).expect("write");
}

/// The default pipeline reading `../tx.jsonl` in `dir`, its tables under `dir/data`.
fn command(dir: &Path, extra: &[&str]) -> Command {
    command_of("sql/pipeline.sql", dir, extra)
}

/// `pipeline` (a file of the repository) reading `../tx.jsonl` in `dir`.
fn command_of(pipeline: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut c = run_command(dir, pipeline);
    c.args([
        "--set",
        "transactions.connector=file",
        "--set",
        "transactions.path=../tx.jsonl",
        "--set",
        "transactions.batch_rows=2000",
        "--checkpoint-interval",
        "150ms",
    ])
    .args(extra);
    c
}

/// Runs to the end, within a bound.
fn run_to_end(dir: &Path, extra: &[&str]) -> String {
    finish(command(dir, extra))
}

fn digests(data: &Path) -> serde_json::Value {
    delta_digests(data, &TABLES)
}

/// `n` transactions under `root`, the uninterrupted reference run of them in
/// `root/reference`, and an empty folder `root/<name>` for the run under test: that folder
/// and the reference's table digests.
fn with_reference(root: &Path, n: u64, name: &str) -> (std::path::PathBuf, serde_json::Value) {
    transactions(root, n);
    let reference = root.join("reference");
    let dir = root.join(name);
    std::fs::create_dir_all(&reference).expect("dir");
    std::fs::create_dir_all(&dir).expect("dir");
    run_to_end(&reference, &[]);
    (dir, digests(&reference.join("data")))
}

#[test]
fn killed_and_restarted_runs_end_with_the_uninterrupted_runs_output() {
    let root = tempfile::tempdir().expect("tempdir");
    let (killed, want) = with_reference(root.path(), 150_000, "killed");
    assert_eq!(want["transactions_scored"]["rows"], 150_000);
    assert_eq!(want["dead_letters"]["rows"], 30, "the malformed lines");

    let restored = kill_and_restart(|| command(&killed, &[]), 0x5eed, 12, (400, 1500));
    assert!(
        restored >= 3,
        "the kills must fall after checkpoints ({restored} restores)"
    );
    let err = run_to_end(&killed, &[]);
    assert!(err.contains("continuing from checkpoint"), "{err}");
    let got = digests(&killed.join("data"));
    for t in TABLES {
        assert_eq!(
            got[t], want[t],
            "table {t}: after kills and restarts, the same rows as the uninterrupted run"
        );
    }
    // A run of a pipeline that has ended finds nothing more to do, and writes nothing twice.
    let err = run_to_end(&killed, &[]);
    assert!(err.contains("continuing from checkpoint"), "{err}");
    assert_eq!(digests(&killed.join("data")), want);
}

#[test]
fn a_crash_at_each_step_of_the_checkpoint_protocol_ends_with_the_uninterrupted_output() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, want) = with_reference(root.path(), 100_000, "run");

    // One crash at each step (txguard_engine::fault), each run continuing from what the
    // one before left: sinks prepared but no checkpoint; state files without a manifest; a
    // durable checkpoint with no sink committed; the first sink committed and the others
    // perhaps not; the last sink committed.
    let steps = [
        "prepared@3",
        "files@1",
        "checkpointed@1",
        "committed:0@1",
        "committed:3@1",
    ];
    for (i, fault) in steps.iter().enumerate() {
        let mut c = command(&dir, &[]);
        c.env("TXGUARD_FAULT", fault);
        let (ok, err) = bounded(c);
        let point = fault.split('@').next().unwrap_or_default();
        assert!(
            !ok && err.contains(&format!("crashing at {point} in epoch")),
            "a crash at {fault}:\n{err}"
        );
        assert!(
            i == 0 || err.contains("continuing from checkpoint"),
            "after a crash, the run continues from a checkpoint:\n{err}"
        );
    }
    let err = run_to_end(&dir, &[]);
    assert!(err.contains("continuing from checkpoint"), "{err}");
    assert_eq!(
        digests(&dir.join("data")),
        want,
        "after a crash at each step: every row once, the same features and scores"
    );
}

#[test]
fn ctrl_c_checkpoints_corrupt_ones_are_skipped_and_changed_sql_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, want) = with_reference(root.path(), 100_000, "run");

    // A second run into the same checkpoint folder while the first goes on is refused at
    // once, naming the holder; then Ctrl-C mid-run: a last checkpoint, a clean exit.
    let child = command(&dir, &[]).spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, err) = bounded(command(&dir, &[]));
    assert!(
        !ok && err.contains("in use by another txguard run")
            && err.contains(&format!("process {}", child.id()))
            && err.contains("--checkpoint-dir"),
        "a second run into one checkpoint folder:\n{err}"
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Ctrl-C ends the run cleanly:\n{err}");

    // What the checkpoints hold, as a user sees it.
    let cp_dir = dir.join("data/_checkpoints/pipeline");
    let cp = cp_dir.to_str().expect("utf8");
    let (ok, listed, err) = txguard(
        &dir,
        &["checkpoints", "list", "--checkpoint-dir", cp, "--json"],
    );
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let epochs: Vec<u64> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["epoch"].as_u64().expect("epoch"))
        .collect();
    assert!(epochs.len() >= 2, "several checkpoints kept: {listed}");
    let (ok, shown, err) = txguard(&dir, &["checkpoints", "inspect", "--checkpoint-dir", cp]);
    assert!(ok, "{err}");
    for want in [
        "transactions: at ../tx.jsonl:",
        "watermark",
        "OVER",
        "rows held",
        "transactions_scored",
    ] {
        assert!(shown.contains(want), "inspect shows {want}:\n{shown}");
    }

    // A checkpoint torn by a crash while it was written (so its epoch was never committed):
    // a copy of the newest as the next epoch, one bit of a state file flipped. The run
    // skips it for the newest whole one, and says so.
    let newest = cp_dir.join(format!("checkpoint-{:07}", epochs[0]));
    let torn_epoch = epochs[0] + 1;
    let torn = cp_dir.join(format!("checkpoint-{torn_epoch:07}"));
    std::fs::create_dir_all(&torn).expect("dir");
    for e in std::fs::read_dir(&newest)
        .expect("dir")
        .filter_map(Result::ok)
    {
        std::fs::copy(e.path(), torn.join(e.file_name())).expect("copy");
    }
    let manifest = torn.join("_manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("read")).expect("json");
    m["epoch"] = torn_epoch.into();
    std::fs::write(&manifest, serde_json::to_vec(&m).expect("json")).expect("write");
    let file = std::fs::read_dir(&torn)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "arrow"))
        .expect("a state file");
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).expect("write");

    // Changed SQL (another window width) refuses the saved state and says what to do.
    let sql = std::fs::read_to_string(repo().join("sql/pipeline.sql")).expect("sql");
    let changed = sql.replacen("INTERVAL '10' MINUTE", "INTERVAL '11' MINUTE", 1);
    assert_ne!(changed, sql, "the test edits a window width");
    std::fs::write(dir.join("changed.sql"), changed).expect("write");
    let model = repo().join("models/default.json");
    let (ok, _, err) = txguard(
        &dir,
        &[
            "run",
            "changed.sql",
            "--model",
            model.to_str().expect("utf8"),
            "--no-ui",
            "--quiet",
            "--checkpoint-dir",
            cp,
            "--set",
            "transactions.connector=file",
            "--set",
            "transactions.path=../tx.jsonl",
        ],
    );
    assert!(!ok, "a changed pipeline must not restore the old state");
    assert!(err.contains("--from-scratch"), "{err}");

    let err = run_to_end(&dir, &[]);
    assert!(
        err.contains(&format!("checkpoint {torn_epoch} cannot be used"))
            && err.contains("does not match"),
        "the log names the skipped checkpoint and why:\n{err}"
    );
    assert!(
        err.contains(&format!("continuing from checkpoint {}", epochs[0])),
        "{err}"
    );
    assert_eq!(
        digests(&dir.join("data")),
        want,
        "stopped with Ctrl-C, restarted past a torn checkpoint: the same output"
    );
}

/// Every row of `table` as JSON text without the columns the database fills in when it
/// writes (ids, insert times) or the pipeline stamps with the wall clock, sorted, digested.
async fn pg_digest(c: &tokio_postgres::Client, table: &str) -> (i64, String) {
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r), '')) FROM \
                 (SELECT ((to_jsonb(t) - 'id') - 'inserted_at' - 'received_at')::text AS r \
                  FROM {table} t) s"
            ),
            &[],
        )
        .await
        .expect("digest");
    (row.get(0), row.get(1))
}

/// A scratch database on `server` with the default pipeline's tables (`txguard db init`),
/// its connection string, and an empty folder `root/<mode>` for the run.
fn initialised_db(
    rt: &tokio::runtime::Runtime,
    server: &str,
    root: &Path,
    mode: &str,
) -> (
    txguard_connectors::postgres::scratch::ScratchDb,
    String,
    std::path::PathBuf,
) {
    let db = rt
        .block_on(txguard_connectors::postgres::scratch::ScratchDb::create(
            server,
        ))
        .expect("scratch database");
    let conn = db.connection();
    let dir = root.join(mode);
    std::fs::create_dir_all(&dir).expect("dir");
    let (ok, _, err) = txguard(&dir, &["db", "init", "--connection", &conn]);
    assert!(ok, "{err}");
    (db, conn, dir)
}

/// [`pg_digest`] of every table the Postgres pipeline writes, in the database `conn` names.
async fn pg_digests(conn: &str) -> Vec<(&'static str, (i64, String))> {
    use txguard_connectors::postgres;
    let c = postgres::connect(&postgres::config(conn, None, "txguard test").expect("config"))
        .await
        .expect("connect");
    let mut got = Vec::new();
    for t in TABLES {
        got.push((t, pg_digest(&c, t).await));
    }
    got
}

/// Terminates every session of the run's sinks in database `db` every 200 ms, for 8 s (or
/// until `stop`): a database dropping connections for a while, then back. (Terminated
/// forever, an epoch whose one transaction takes longer than 200 ms could never land: the
/// sink retries it whole, by design of one transaction per epoch.)
async fn terminate_sessions(
    conn: String,
    db: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use txguard_connectors::postgres;
    let c =
        postgres::connect(&postgres::config(&conn, None, "txguard terminator").expect("config"))
            .await
            .expect("connect");
    let mut terminated = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rows = c
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 \
                 AND application_name LIKE 'txguard %' \
                 AND application_name NOT IN ('txguard test', 'txguard terminator')",
                &[&db],
            )
            .await
            .expect("terminate");
        terminated += rows.len() as u64;
    }
    terminated
}

#[test]
fn killed_runs_into_postgres_write_every_row_once() {
    use txguard_connectors::postgres::DEFAULT_CONNECTION;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server =
        std::env::var("TXGUARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_CONNECTION.to_string());
    let root = tempfile::tempdir().expect("tempdir");
    transactions(root.path(), 80_000);
    let mut digests = Vec::new();
    // An uninterrupted run; runs SIGKILLed and restarted; a run whose database sessions are
    // terminated every 200 ms for 8 s (the database restarting, a proxy dropping
    // connections), then left alone.
    for mode in ["reference", "killed", "terminated"] {
        let (db, conn, dir) = initialised_db(&rt, &server, root.path(), mode);
        let command = || {
            let mut c = command_of("sql/pipeline_postgres.sql", &dir, &[]);
            c.env("TXGUARD_POSTGRES", &conn);
            c
        };
        if mode == "killed" {
            let restored = kill_and_restart(command, 0xbead, 10, (400, 1500));
            assert!(restored >= 3, "{restored} restores");
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let terminator = (mode == "terminated").then(|| {
            rt.spawn(terminate_sessions(
                conn.clone(),
                db.name.clone(),
                stop.clone(),
            ))
        });
        let err = finish(command());
        if let Some(t) = terminator {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let terminated = rt.block_on(t).expect("terminator");
            assert!(terminated > 0, "sessions were terminated");
            assert!(err.contains("retrying"), "the log says it retries:\n{err}");
            let rss = err.lines().find(|l| l.starts_with("peak memory"));
            eprintln!(
                "{terminated} sessions terminated; {}",
                rss.unwrap_or("no peak RSS")
            );
        }
        assert_eq!(
            mode == "killed",
            err.contains("continuing from checkpoint"),
            "{err}"
        );
        let got = rt.block_on(pg_digests(&conn));
        rt.block_on(db.drop_db()).expect("drop");
        digests.push(got);
    }
    let (reference, killed, terminated) = (&digests[0], &digests[1], &digests[2]);
    assert_eq!(reference[0].1.0, 80_000, "every transaction scored");
    assert_eq!(reference[2].1.0, 16, "every malformed line a dead letter");
    assert_eq!(
        killed, reference,
        "after kills and restarts, every table (the appended dead letters too) holds what \
         the uninterrupted run wrote"
    );
    assert_eq!(
        terminated, reference,
        "with its sessions terminated again and again, the same rows, each once"
    );
}

/// A PostgreSQL cluster of the test's own (Debian's binaries, `$TXGUARD_PG_BIN` or the newest
/// `/usr/lib/postgresql/*/bin`; run as the `postgres` user when the tests run as root) on a
/// free loopback port, which the test may stop and start again. Stopped on drop.
struct PrivatePostgres {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = std::env::var("TXGUARD_PG_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
                    .expect("/usr/lib/postgresql (Debian's postgresql package) or $TXGUARD_PG_BIN")
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|p| p.join("pg_ctl").exists())
                    .collect();
                dirs.sort();
                dirs.pop().expect("a PostgreSQL bin directory with pg_ctl")
            });
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        if as_root() {
            // The server refuses to run as root: its folders belong to `postgres`.
            let id = |flag: &str| -> u32 {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .expect("id");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("the postgres user")
            };
            for p in [dir.path(), data.as_path()] {
                std::os::unix::fs::chown(p, Some(id("-u")), Some(id("-g"))).expect("chown");
            }
        }
        let port = common::broker::free_port();
        let pg = PrivatePostgres {
            bin,
            data,
            port,
            _dir: dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.up();
        pg
    }

    fn data(&self) -> &str {
        self.data.to_str().expect("utf8")
    }

    /// One of the server's programs, as `postgres` when the tests run as root.
    fn program(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        }
    }

    /// Runs one of the server's programs; panics with its output when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self.program(program).args(args).output().expect(program);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.data()
        );
        let log = format!("{}/server.log", self.data());
        self.run(
            "pg_ctl",
            &["-D", self.data(), "-l", &log, "-w", "-o", &opts, "start"],
        );
    }

    fn down(&self) {
        self.run("pg_ctl", &["-D", self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn connection(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .program("pg_ctl")
            .args(["-D", self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The database stopped for 60 s mid-run, then started again: the run waits (retrying,
/// holding the source back), then ends with exactly the rows of an uninterrupted run, each
/// once; its peak RSS is reported.
#[test]
fn postgres_stopped_for_a_minute_mid_run_loses_and_doubles_nothing() {
    use txguard_connectors::postgres;
    let pg = PrivatePostgres::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    transactions(root.path(), 80_000);
    let mut digests = Vec::new();
    let mut peak = String::new();
    for mode in ["reference", "outage"] {
        let (_db, conn, dir) = initialised_db(&rt, &pg.connection(), root.path(), mode);
        let mut command = command_of("sql/pipeline_postgres.sql", &dir, &[]);
        command.env("TXGUARD_POSTGRES", &conn);
        let err = if mode == "reference" {
            finish(command)
        } else {
            let run = std::thread::spawn(move || bounded(command));
            // As soon as the first rows are in, the server goes away for a minute.
            let client = rt.block_on(async {
                postgres::connect(&postgres::config(&conn, None, "txguard test").expect("config"))
                    .await
                    .expect("connect")
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let n: i64 = rt
                    .block_on(client.query_one("SELECT count(*) FROM transactions_scored", &[]))
                    .expect("count")
                    .get(0);
                if n > 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no rows arrived within 60 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(client);
            pg.down();
            std::thread::sleep(Duration::from_secs(60));
            pg.up();
            let (ok, err) = run.join().expect("run");
            assert!(ok, "{err}");
            assert!(
                err.contains("retrying"),
                "the log says it waits and retries:\n{err}"
            );
            peak = err
                .lines()
                .find(|l| l.starts_with("peak memory"))
                .unwrap_or("no peak RSS line")
                .to_string();
            err
        };
        let got = rt.block_on(pg_digests(&conn));
        assert!(err.contains("done in"), "{err}");
        digests.push(got);
    }
    eprintln!("Postgres stopped for 60 s mid-run: {peak}");
    assert_eq!(
        digests[1], digests[0],
        "after a minute without its database, the same rows, each once"
    );
    assert!(
        digests[0][0].1.0 > 70_000,
        "the reference holds the transactions"
    );
}
