//! The generator's `WITH (...)` options, declared once and read back through the same
//! constants into a [`GeneratorConfig`] and a pace.

use txguard_engine::sql::{
    ConnectorSpec, Loc, OptionError, OptionKind, OptionSpec, Role, TableDef,
};

use super::GeneratorConfig;

pub const SEED: OptionSpec = OptionSpec::optional(
    "seed",
    OptionKind::Integer,
    "random seed; the same seed gives the same stream",
);
pub const USERS: OptionSpec =
    OptionSpec::optional("users", OptionKind::Integer, "distinct card holders");
pub const COUNT: OptionSpec = OptionSpec::optional(
    "count",
    OptionKind::Integer,
    "stop after this many transactions (default: endless)",
);
pub const EVENTS_PER_SECOND: OptionSpec = OptionSpec::optional(
    "events_per_second",
    OptionKind::Number,
    "simulated transactions per event-time second",
);
pub const RATE: OptionSpec = OptionSpec::optional(
    "rate",
    OptionKind::Number,
    "pace at this many transactions per wall-clock second",
);
pub const START: OptionSpec = OptionSpec::optional(
    "start",
    OptionKind::Text,
    "event time of the first transaction, RFC 3339",
);
pub const FRAUD_RATE: OptionSpec = OptionSpec::optional(
    "fraud_rate",
    OptionKind::Number,
    "share of transactions starting a fraud episode",
);
pub const OUT_OF_ORDER: OptionSpec = OptionSpec::optional(
    "out_of_order",
    OptionKind::Number,
    "share of transactions arriving late",
);
pub const MAX_DELAY_MS: OptionSpec = OptionSpec::optional(
    "max_delay_ms",
    OptionKind::Integer,
    "largest lateness of a late transaction",
);

/// Every option, as [`SPEC`] declares them.
pub const OPTIONS: &[OptionSpec] = &[
    SEED,
    USERS,
    COUNT,
    EVENTS_PER_SECOND,
    RATE,
    START,
    FRAUD_RATE,
    OUT_OF_ORDER,
    MAX_DELAY_MS,
];

/// `connector = 'generator'`.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "generator",
    roles: &[Role::Source],
    options: OPTIONS,
    metadata: &[],
    decodes: false,
    check_table: Some(check_table),
};

/// At validate: the options make a generator, and the DDL is one it can fill.
fn check_table(t: &TableDef, _: Role) -> Result<(), (Loc, String)> {
    config_from(t).map_err(OptionError::located)?;
    pace_from(t).map_err(OptionError::located)?;
    super::schema::check_table(t)
}

/// The generator configuration a table's options describe.
pub fn config_from(table: &TableDef) -> Result<GeneratorConfig, OptionError> {
    let mut c = GeneratorConfig::default();
    if let Some(v) = table.int(&SEED)? {
        c.seed = v;
    }
    if let Some(v) = table.int(&USERS)? {
        c.users = v;
    }
    c.count = table.int(&COUNT)?;
    if let Some(v) = table.number(&EVENTS_PER_SECOND)? {
        c.events_per_second = v;
    }
    if let Some(v) = table.text(&START) {
        c.start_micros = chrono::DateTime::parse_from_rfc3339(&v)
            .map_err(|e| table.option_error(&START, format!("'{v}': {e}")))?
            .timestamp_micros();
    }
    if let Some(v) = table.number(&FRAUD_RATE)? {
        c.fraud_rate = v;
    }
    if let Some(v) = table.number(&OUT_OF_ORDER)? {
        c.out_of_order = v;
    }
    if let Some(v) = table.int(&MAX_DELAY_MS)? {
        c.max_delay_ms = v;
    }
    c.validate().map_err(|e| {
        let spec = OPTIONS.iter().find(|o| o.key == e.option).unwrap_or(&SEED);
        table.option_error(spec, e.message)
    })?;
    Ok(c)
}

/// The `rate` option: wall-clock pacing in transactions per second (`None` = as fast as
/// possible).
pub fn pace_from(table: &TableDef) -> Result<Option<f64>, OptionError> {
    match table.number(&RATE)? {
        Some(r) if r <= 0.0 => Err(table.option_error(
            &RATE,
            format!("{r} is not a positive number of transactions per second"),
        )),
        r => Ok(r),
    }
}
