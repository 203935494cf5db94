//! `txguard produce`: the built-in generator's transactions as JSON messages to a Kafka
//! topic, keyed by `user_id` (so one user's transactions stay in order on one partition), as
//! fast as possible or at a wall-clock rate, with a live rate/total display.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use txguard_connectors::kafka::sink::Deliveries;

use crate::commands::generate::{GeneratorArgs, stop_on_ctrl_c};
use crate::tabular::row_progress;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The brokers, comma-separated host:port.
    #[arg(long, env = "TXGUARD_KAFKA", default_value = "127.0.0.1:9092")]
    pub bootstrap_servers: String,
    /// The topic.
    #[arg(long, default_value = "transactions")]
    pub topic: String,
    /// Extra librdkafka settings, `key=value`; repeatable (e.g. SASL/SSL for a real cluster).
    #[arg(long = "client-config", value_name = "KEY=VALUE")]
    pub client_configs: Vec<String>,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: ProduceArgs) -> Result<()> {
    let generator = args.generator.generator()?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &args.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "500000");
    for kv in &args.client_configs {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--client-config {kv:?}: give key=value"))?;
        cfg.set(k, v);
    }
    let producer: ThreadedProducer<Deliveries> = cfg
        .create_with_context(Deliveries::new(args.bootstrap_servers.clone()))
        .context("creating the Kafka producer")?;
    let stop = stop_on_ctrl_c()?;
    let pb = (!args.quiet).then(|| row_progress(args.generator.total(), "producing"));
    let started = Instant::now();
    let mut payload = Vec::with_capacity(512);
    let mut n = 0u64;
    for e in generator {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::info!("interrupted; delivering what was sent");
            break;
        }
        if let Some(wait) = args.generator.wait_before(started, n) {
            std::thread::sleep(wait);
        }
        payload.clear();
        serde_json::to_writer(&mut payload, &e.transaction).context("encoding JSON")?;
        let mut record = BaseRecord::<str, [u8]>::to(&args.topic)
            .key(e.transaction.user_id.as_str())
            .payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("sending to {}: {e}", args.topic),
            }
        }
        n += 1;
        if n.is_multiple_of(4096)
            && let Some(pb) = &pb
        {
            pb.set_position(n);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .with_context(|| format!("waiting for {} to acknowledge", args.bootstrap_servers))?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let failed = producer.context().failed();
    if failed > 0 {
        bail!(
            "{failed} of {n} messages were not delivered to {}: {}",
            args.topic,
            producer.context().last_error().unwrap_or_default()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "produced {n} transactions to {} at {} in {secs:.2} s ({:.0}/s)",
        args.topic,
        args.bootstrap_servers,
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}
