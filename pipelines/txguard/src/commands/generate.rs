//! `txguard generate`: the built-in generator's transactions as JSON lines, to a file or
//! standard output, as fast as possible or at a wall-clock rate.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use txguard_connectors::generator::{Generator, GeneratorConfig};

use crate::tabular::row_progress;

/// The generator's settings, shared by `generate` and `produce`.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// Transactions to write; 0 = until interrupted.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Random seed: the same seed gives the same transactions.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Distinct card holders.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Pace output at this many transactions per wall-clock second, with event times starting
    /// now; without it, write as fast as possible with simulated event time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Simulated transactions per event-time second, over all users
    /// [default: 1, or --rate when pacing].
    #[arg(long)]
    pub events_per_second: Option<f64>,
    /// Event time of the first transaction (RFC 3339) [default: 2026-01-01T00:00:00Z, or now when pacing].
    #[arg(long)]
    pub start: Option<String>,
    /// Share of transactions that start a labelled fraud episode.
    #[arg(long, default_value_t = 0.002)]
    pub fraud_rate: f64,
    /// Share of transactions that arrive late (out of order).
    #[arg(long, default_value_t = 0.01)]
    pub out_of_order: f64,
    /// Largest lateness of a late transaction, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub max_delay_ms: u64,
}

impl GeneratorArgs {
    /// The generator these settings describe.
    pub fn generator(&self) -> Result<Generator> {
        if let Some(r) = self.rate
            && !(r > 0.0 && r.is_finite())
        {
            bail!("--rate {r}: give a positive number of transactions per second");
        }
        let start_micros = match &self.start {
            Some(s) => chrono::DateTime::parse_from_rfc3339(s)
                .with_context(|| format!("--start {s:?}: use RFC 3339, e.g. 2026-01-01T00:00:00Z"))?
                .timestamp_micros(),
            None if self.rate.is_some() => chrono::Utc::now().timestamp_micros(),
            None => txguard_connectors::generator::DEFAULT_START_MICROS,
        };
        Ok(Generator::new(GeneratorConfig {
            seed: self.seed,
            users: self.users,
            count: (self.count > 0).then_some(self.count),
            events_per_second: self.events_per_second.or(self.rate).unwrap_or(1.0),
            start_micros,
            fraud_rate: self.fraud_rate,
            out_of_order: self.out_of_order,
            max_delay_ms: self.max_delay_ms,
        })?)
    }

    /// With `--rate`, how long to wait before the `n`th transaction of a run that started
    /// at `started`.
    pub fn wait_before(&self, started: Instant, n: u64) -> Option<Duration> {
        let rate = self.rate?;
        (started + Duration::from_secs_f64(n as f64 / rate)).checked_duration_since(Instant::now())
    }

    /// The total for a progress bar.
    pub fn total(&self) -> Option<u64> {
        (self.count > 0).then_some(self.count)
    }
}

/// A flag Ctrl-C sets, for a clean stop.
pub fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Output file (.jsonl); `-` for standard output.
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let generator = args.generator.generator()?;
    let stop = stop_on_ctrl_c()?;

    let to_stdout = args.output.as_os_str() == "-";
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Box::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("creating {}", args.output.display()))?,
        )
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let pb = (!to_stdout).then(|| row_progress(args.generator.total(), "generating"));
    let started = Instant::now();
    let (mut n, mut fraud) = (0u64, 0u64);
    for e in generator {
        if stop.load(Ordering::Relaxed) {
            tracing::info!("interrupted; stopping cleanly");
            break;
        }
        if let Some(wait) = args.generator.wait_before(started, n) {
            out.flush().context("writing")?;
            std::thread::sleep(wait);
        }
        let written = serde_json::to_writer(&mut out, &e.transaction)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        match written {
            Ok(()) => {}
            // The reader went away (e.g. `| head`): a clean stop.
            Err(err) if to_stdout && err.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(err) => return Err(err).context("writing"),
        }
        n += 1;
        fraud += u64::from(e.pattern.is_some());
        if n % 4096 == 0
            && let Some(pb) = &pb
        {
            pb.set_position(n);
        }
    }
    match out.flush() {
        Err(err) if !(to_stdout && err.kind() == std::io::ErrorKind::BrokenPipe) => {
            return Err(err).context("writing");
        }
        _ => {}
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "generated {n} transactions ({fraud} labelled fraud) in {secs:.2} s ({:.0}/s){}",
        n as f64 / secs.max(1e-9),
        if to_stdout {
            String::new()
        } else {
            format!(" into {}", args.output.display())
        }
    );
    Ok(())
}
