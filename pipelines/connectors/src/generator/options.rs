//! The generator's `WITH (...)` options and their mapping to [`GeneratorConfig`].

use txguard_engine::sql::{ConnectorSpec, OptionKind, OptionSpec, Role, TableDef};

use super::GeneratorConfig;

const fn opt(key: &'static str, kind: OptionKind, help: &'static str) -> OptionSpec {
    OptionSpec {
        key,
        kind,
        required: false,
        help,
    }
}

/// `connector = 'generator'`.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "generator",
    roles: &[Role::Source],
    options: &[
        opt(
            "seed",
            OptionKind::Integer,
            "random seed; the same seed gives the same stream",
        ),
        opt("users", OptionKind::Integer, "distinct card holders"),
        opt(
            "count",
            OptionKind::Integer,
            "stop after this many transactions (default: endless)",
        ),
        opt(
            "events_per_second",
            OptionKind::Number,
            "simulated transactions per event-time second",
        ),
        opt(
            "rate",
            OptionKind::Number,
            "pace at this many transactions per wall-clock second",
        ),
        opt(
            "start",
            OptionKind::Text,
            "event time of the first transaction, RFC 3339",
        ),
        opt(
            "fraud_rate",
            OptionKind::Number,
            "share of transactions starting a fraud episode",
        ),
        opt(
            "out_of_order",
            OptionKind::Number,
            "share of transactions arriving late",
        ),
        opt(
            "max_delay_ms",
            OptionKind::Integer,
            "largest lateness of a late transaction",
        ),
    ],
    metadata: &[],
    decodes: false,
    check_table: Some(super::check_table),
};

/// The generator configuration a table's options describe (validated by the SQL check).
pub fn config_from(table: &TableDef) -> Result<GeneratorConfig, String> {
    let mut c = GeneratorConfig::default();
    let num = |k: &str| table.option(k).map(|o| o.value.as_text());
    if let Some(v) = num("seed") {
        c.seed = v
            .parse()
            .map_err(|_| format!("seed {v} is not a whole number"))?;
    }
    if let Some(v) = num("users") {
        c.users = v
            .parse()
            .map_err(|_| format!("users {v} is not a whole number"))?;
    }
    if let Some(v) = num("count") {
        c.count = Some(
            v.parse()
                .map_err(|_| format!("count {v} is not a whole number"))?,
        );
    }
    if let Some(v) = num("events_per_second") {
        c.events_per_second = v.parse().map_err(|_| format!("{v} is not a number"))?;
    }
    if let Some(v) = num("start") {
        c.start_micros = chrono::DateTime::parse_from_rfc3339(&v)
            .map_err(|e| format!("start '{v}': {e}"))?
            .timestamp_micros();
    }
    if let Some(v) = num("fraud_rate") {
        c.fraud_rate = v
            .parse()
            .map_err(|_| format!("fraud_rate {v} is not a number"))?;
    }
    if let Some(v) = num("out_of_order") {
        c.out_of_order = v
            .parse()
            .map_err(|_| format!("out_of_order {v} is not a number"))?;
    }
    if let Some(v) = num("max_delay_ms") {
        c.max_delay_ms = v
            .parse()
            .map_err(|_| format!("max_delay_ms {v} is not a whole number"))?;
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The `rate` option: wall-clock pacing in transactions per second (`None` = as fast as
/// possible).
pub fn pace_from(table: &TableDef) -> Result<Option<f64>, String> {
    match table.option("rate").map(|o| o.value.as_text()) {
        None => Ok(None),
        Some(v) => match v.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Some(r)),
            _ => Err(format!(
                "rate {v} is not a positive number of transactions per second"
            )),
        },
    }
}
