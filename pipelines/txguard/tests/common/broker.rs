//! A tansu Kafka-protocol broker (0.6, in-memory storage) in its own process on a free
//! loopback port, for the tests that need a broker: built by scripts/setup.sh into
//! ~/.cache/txguard/tansu (or `$TXGUARD_TANSU`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu binary scripts/setup.sh builds (or `$TXGUARD_TANSU`).
pub fn tansu() -> PathBuf {
    std::env::var("TXGUARD_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/txguard/tansu/bin/tansu")
        })
}

/// A tansu broker on a free loopback port, killed on drop.
pub struct Broker {
    child: Child,
    pub addr: String,
}

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_advertising(None)
    }

    /// A broker that tells clients to connect to `advertised` (a port on 127.0.0.1) instead
    /// of its own, e.g. a TLS front of it.
    pub fn start_advertising(advertised: Option<u16>) -> Broker {
        Self::start_on(free_port(), advertised)
    }

    /// A broker on `port` (e.g. where a killed one listened), advertising `advertised`.
    pub fn start_on(port: u16, advertised: Option<u16>) -> Broker {
        let bin = tansu();
        assert!(
            bin.exists(),
            "{} is missing: run scripts/setup.sh (it builds the tansu broker once)",
            bin.display()
        );
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let bin = tansu();
        let out = Command::new(bin)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &format!("tcp://{}", self.addr),
            ])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "creating {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Broker {
    /// `txguard produce` of `count` generated transactions to `topic`, with more generator
    /// options in `extra` (e.g. `--users 300`); panics with its stderr when it fails.
    pub fn produce(&self, topic: &str, count: &str, extra: &[&str]) {
        let out = Command::new(env!("CARGO_BIN_EXE_txguard"))
            .args([
                "produce",
                "--bootstrap-servers",
                &self.addr,
                "--topic",
                topic,
            ])
            .args(["--count", count, "--quiet"])
            .args(extra)
            .output()
            .expect("txguard produce");
        assert!(
            out.status.success(),
            "txguard produce: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the broker process (SIGKILL) and waits for it: its in-memory topics are gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
