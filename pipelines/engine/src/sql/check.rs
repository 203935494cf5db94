//! Validation of a parsed pipeline before anything runs: connectors and their options (unknown
//! options get a "did you mean"), source watermarks, sink usage, and DataFusion planning of
//! every view and insert (unknown columns, type errors, wrong arity of the forest functions),
//! with the insert's columns checked against the sink's declared columns.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::{
    Column, ConnectorSpec, MetadataKind, OptionKind, OptionSpec, OptionValue, Pipeline, Role,
    SqlError, TableDef,
};

/// Scalar functions the queries may call (the forest UDFs of the registered models).
pub type PlanningFunctions = Vec<Arc<ScalarUDF>>;

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min()
        .map(|(_, c)| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}

/// The role of a table: its `type` option, else the connector's default.
pub fn role_of(p: &Pipeline, t: &TableDef, spec: &ConnectorSpec) -> Result<Role, SqlError> {
    match t.option("type") {
        None => spec
            .roles
            .first()
            .copied()
            .ok_or_else(|| p.err(t.loc, format!("connector {} has no role", spec.name))),
        Some(o) => {
            let role = match o.value.as_text().as_str() {
                "source" => Role::Source,
                "sink" => Role::Sink,
                other => {
                    return Err(p.err(o.loc, format!("type = '{other}': use 'source' or 'sink'")));
                }
            };
            if !spec.roles.contains(&role) {
                return Err(p.err(o.loc, format!("connector {} cannot be a {role}", spec.name)));
            }
            Ok(role)
        }
    }
}

/// Each table's role, from its connector (tables whose connector `specs` lacks are left out:
/// [`check`] names them).
pub fn roles(
    p: &Pipeline,
    specs: &[ConnectorSpec],
) -> Result<std::collections::HashMap<String, Role>, SqlError> {
    let mut out = std::collections::HashMap::new();
    for t in &p.tables {
        if let Some(spec) = specs.iter().find(|s| s.name == t.connector) {
            out.insert(t.name.clone(), role_of(p, t, spec)?);
        }
    }
    Ok(out)
}

/// Every option a connector takes: its own and, for a source that decodes payloads, the
/// format options.
fn all_options(spec: &ConnectorSpec) -> impl Iterator<Item = &OptionSpec> + Clone {
    let format: &[OptionSpec] = if spec.decodes {
        crate::decode::FORMAT_OPTIONS
    } else {
        &[]
    };
    spec.options.iter().chain(format)
}

fn check_options(p: &Pipeline, t: &TableDef, spec: &ConnectorSpec) -> Result<(), SqlError> {
    for o in &t.options {
        if o.key == "connector" || o.key == "type" {
            continue;
        }
        let Some(s) = all_options(spec).find(|s| s.key == o.key) else {
            return Err(p.err(
                o.loc,
                format!(
                    "connector {} has no option {}{}; its options: {}",
                    spec.name,
                    o.key,
                    did_you_mean(&o.key, all_options(spec).map(|s| s.key)),
                    all_options(spec)
                        .map(|s| s.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let ok = match (s.kind, &o.value) {
            (OptionKind::Text, OptionValue::Text(_)) => true,
            (OptionKind::Integer, v) => v.as_text().parse::<i64>().is_ok(),
            (OptionKind::Number, v) => v.as_text().parse::<f64>().is_ok_and(f64::is_finite),
            (OptionKind::Bool, OptionValue::Bool(_)) => true,
            (OptionKind::Bool, OptionValue::Text(t)) => t == "true" || t == "false",
            (OptionKind::OneOf(allowed), v) => allowed.contains(&v.as_text().as_str()),
            _ => false,
        };
        if !ok {
            let want = match s.kind {
                OptionKind::Text => "a 'string'".to_string(),
                OptionKind::Integer => "a whole number".into(),
                OptionKind::Number => "a number".into(),
                OptionKind::Bool => "true or false".into(),
                OptionKind::OneOf(a) => format!("one of {}", a.join(", ")),
            };
            return Err(p.err(
                o.loc,
                format!(
                    "option {} = {}: expected {want} ({})",
                    o.key, o.value, s.help
                ),
            ));
        }
    }
    if let Some(missing) = spec
        .options
        .iter()
        .find(|s| s.required && t.option(s.key).is_none())
    {
        return Err(p.err(
            t.loc,
            format!(
                "table {} (connector {}) needs option {} ({})",
                t.name, spec.name, missing.key, missing.help
            ),
        ));
    }
    Ok(())
}

/// A table's `metadata('key')` columns: each must be on a source, name a field its connector
/// offers, and have a type that field fits.
fn check_metadata(
    p: &Pipeline,
    t: &TableDef,
    spec: &ConnectorSpec,
    role: Role,
) -> Result<(), SqlError> {
    for c in &t.columns {
        let Some(key) = &c.metadata else { continue };
        if role == Role::Sink {
            return Err(p.err(
                c.loc,
                format!(
                    "column {}.{}: metadata('{key}') columns are filled by a source; {} is a sink",
                    t.name, c.name, t.name
                ),
            ));
        }
        let Some(m) = spec.metadata.iter().find(|m| m.key == key) else {
            let offered = if spec.metadata.is_empty() {
                format!("connector {} offers no metadata fields", spec.name)
            } else {
                format!(
                    "connector {} offers {}",
                    spec.name,
                    spec.metadata
                        .iter()
                        .map(|m| m.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(p.err(
                c.loc,
                format!(
                    "column {}.{}: no metadata field '{key}'{}; {offered}",
                    t.name,
                    c.name,
                    did_you_mean(key, spec.metadata.iter().map(|m| m.key)),
                ),
            ));
        };
        let fits = match m.kind {
            MetadataKind::Integer => c.data_type.is_numeric(),
            MetadataKind::Text => c.data_type == DataType::Utf8,
            MetadataKind::Timestamp => matches!(c.data_type, DataType::Timestamp(..)),
        };
        if !fits {
            let want = match m.kind {
                MetadataKind::Integer => "BIGINT or INT",
                MetadataKind::Text => "TEXT",
                MetadataKind::Timestamp => "TIMESTAMP",
            };
            return Err(p.err(
                c.loc,
                format!(
                    "column {}.{}: metadata('{key}') ({}) needs a {want} column, not {}",
                    t.name, c.name, m.help, c.data_type
                ),
            ));
        }
    }
    Ok(())
}

/// What a table's DDL asks of its connector: constraints that plan (on sources only), a
/// payload schema its decoder can fill, and the connector's own checks.
fn check_ddl(p: &Pipeline, t: &TableDef, spec: &ConnectorSpec, role: Role) -> Result<(), SqlError> {
    if role == Role::Sink {
        if let Some(c) = t.checks.first() {
            return Err(p.err(
                c.loc,
                format!(
                    "CHECK constraint {} on sink {}: constraints apply to source tables \
                     (rows a sink cannot take are refused by its NOT NULL columns)",
                    c.name, t.name
                ),
            ));
        }
        return connector_check(p, t, spec, role);
    }
    if let Err(e) = crate::constraints::Constraints::new(t.schema(), &t.checks, None) {
        let at = t
            .checks
            .iter()
            .find(|c| c.name == e.name)
            .map_or(t.loc, |c| c.loc);
        return Err(p.err(at, format!("table {}: {e}", t.name)));
    }
    let parquet = t.text(&crate::decode::FORMAT).as_deref() == Some("parquet");
    if spec.decodes && !parquet {
        let opts = crate::decode::DecodeOptions::from_table(t)
            .map_err(|e| p.err(e.loc, format!("table {}: {e}", t.name)))?;
        if let Err(e) = crate::decode::Decoder::new(t.payload_schema(), &opts) {
            let at = t.option_loc(&crate::decode::FORMAT);
            return Err(p.err(at, format!("table {}: {e}", t.name)));
        }
    }
    connector_check(p, t, spec, role)
}

fn connector_check(
    p: &Pipeline,
    t: &TableDef,
    spec: &ConnectorSpec,
    role: Role,
) -> Result<(), SqlError> {
    if let Some(f) = spec.check_table
        && let Err((at, message)) = f(t, role)
    {
        return Err(p.err(at, format!("table {}: {message}", t.name)));
    }
    Ok(())
}

/// A source table's metadata columns with their keys, in declaration order.
pub fn metadata_columns(t: &TableDef) -> Vec<(&Column, &str)> {
    t.columns
        .iter()
        .filter_map(|c| c.metadata.as_deref().map(|k| (c, k)))
        .collect()
}

/// `tumble(width)`, `hop(slide, width)`, `session(gap)` for planning: they type as a
/// `STRUCT<start, end>` window column. The streaming planner turns a GROUP BY on them into a
/// windowed aggregation; evaluated anywhere else they fail.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowFn {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for WindowFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Ok(DataType::Struct(Fields::from(vec![
            Field::new("start", ts.clone(), false),
            Field::new("end", ts, false),
        ])))
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!(
            "{}() only works as a GROUP BY window of a streaming pipeline",
            self.name
        )
    }
}

pub(crate) fn window_udfs() -> Vec<ScalarUDF> {
    [("tumble", 1), ("hop", 2), ("session", 1)]
        .into_iter()
        .map(|(name, n)| {
            ScalarUDF::new_from_impl(WindowFn {
                name,
                signature: Signature::any(n, Volatility::Immutable),
            })
        })
        .collect()
}

/// A DataFusion context that knows the pipeline's functions and the window functions.
fn planning_context(functions: &PlanningFunctions) -> SessionContext {
    let ctx = SessionContext::new();
    for f in functions {
        ctx.register_udf(f.as_ref().clone());
    }
    for f in window_udfs() {
        ctx.register_udf(f);
    }
    ctx
}

/// Validates `p` against the connectors and plans every query with DataFusion.
pub async fn check(
    p: &Pipeline,
    connectors: &[ConnectorSpec],
    functions: &PlanningFunctions,
) -> Result<(), SqlError> {
    let ctx = planning_context(functions);
    for t in &p.tables {
        let spec = connectors
            .iter()
            .find(|s| s.name == t.connector)
            .ok_or_else(|| {
                let at = t.option("connector").map_or(t.loc, |o| o.loc);
                p.err(
                    at,
                    format!(
                        "unknown connector '{}'{}; available: {}",
                        t.connector,
                        did_you_mean(&t.connector, connectors.iter().map(|c| c.name)),
                        connectors
                            .iter()
                            .map(|c| c.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        let role = role_of(p, t, spec)?;
        check_options(p, t, spec)?;
        check_metadata(p, t, spec, role)?;
        check_ddl(p, t, spec, role)?;
        if role == Role::Source && t.watermark.is_none() {
            return Err(p.err(
                t.loc,
                format!(
                    "source {} needs event time: add WATERMARK FOR <a TIMESTAMP column> AS \
                     <that column> - INTERVAL '5' SECOND",
                    t.name
                ),
            ));
        }
        if role == Role::Sink && p.inserts.iter().all(|i| i.table != t.name) {
            return Err(p.err(
                t.loc,
                format!("sink {} is never written by an INSERT INTO", t.name),
            ));
        }
        let table =
            MemTable::try_new(t.schema(), vec![vec![]]).map_err(|e| p.err(t.loc, e.to_string()))?;
        ctx.register_table(t.name.as_str(), Arc::new(table))
            .map_err(|e| p.err(t.loc, e.to_string()))?;
    }
    if let Some(t) = p.table(crate::stream::DEAD_LETTERS) {
        return Err(p.err(
            t.loc,
            format!(
                "{} is the built-in stream of rejected events; name the table otherwise",
                t.name
            ),
        ));
    }
    let dead = MemTable::try_new(crate::event::dead_letter_schema(), vec![vec![]])
        .map_err(|e| p.err(super::Loc::default(), e.to_string()))?;
    ctx.register_table(crate::stream::DEAD_LETTERS, Arc::new(dead))
        .map_err(|e| p.err(super::Loc::default(), e.to_string()))?;
    for v in &p.views {
        ctx.sql(&v.sql).await.map_err(|e| {
            let m = stable_hint(&ctx, strip(e));
            p.err(v.loc, format!("view {}: {m}", v.name))
        })?;
    }
    for i in &p.inserts {
        let Some(sink) = p.table(&i.table) else {
            return Err(p.err(i.loc, format!("INSERT INTO {}: no such table", i.table)));
        };
        let spec = connectors.iter().find(|s| s.name == sink.connector);
        if let Some(spec) = spec
            && role_of(p, sink, spec)? != Role::Sink
        {
            return Err(p.err(
                i.loc,
                format!("INSERT INTO {}: it is a source, not a sink", i.table),
            ));
        }
        let df = ctx.sql(&i.query).await.map_err(|e| {
            let m = stable_hint(&ctx, strip(e));
            p.err(i.loc, format!("INSERT INTO {}: {m}", i.table))
        })?;
        let got = df.schema().as_arrow();
        if sink.columns.is_empty() {
            return Err(p.err(
                sink.loc,
                format!(
                    "sink {} declares no columns and its INSERT's columns cannot all be \
                     stored ({}): declare them, e.g. CREATE TABLE {} (col TYPE, …) WITH (…)",
                    i.table,
                    crate::decode::column_list(got),
                    i.table
                ),
            ));
        }
        if got.fields().len() != sink.columns.len() {
            return Err(p.err(
                i.loc,
                format!(
                    "INSERT INTO {}: the query gives {} columns, the table has {} ({})",
                    i.table,
                    got.fields().len(),
                    sink.columns.len(),
                    sink.columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        for (n, (f, c)) in got.fields().iter().zip(&sink.columns).enumerate() {
            if !assignable(f.data_type(), &c.data_type) {
                return Err(p.err(
                    i.loc,
                    format!(
                        "INSERT INTO {}: column {} ({}) is {} but the query gives {} ({})",
                        i.table,
                        n + 1,
                        c.name,
                        c.data_type,
                        f.data_type(),
                        f.name()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Fills the columns of every sink declared without any (`CREATE TABLE out WITH (…)`, as
/// Arroyo allows) from its INSERT's query: names and types as planned (integers as BIGINT,
/// floats as DOUBLE or REAL, text, booleans, timestamps, structs), nullable. A query that does
/// not plan, or a type no sink stores, leaves the columns empty for [`check`] to report.
pub async fn infer_sink_columns(p: &mut Pipeline, functions: &PlanningFunctions) {
    let todo: Vec<String> = p
        .tables
        .iter()
        .filter(|t| t.columns.is_empty() && p.inserts.iter().any(|i| i.table == t.name))
        .map(|t| t.name.clone())
        .collect();
    if todo.is_empty() {
        return;
    }
    let ctx = planning_context(functions);
    for t in &p.tables {
        if let Ok(table) = MemTable::try_new(t.schema(), vec![vec![]]) {
            let _ = ctx.register_table(t.name.as_str(), Arc::new(table));
        }
    }
    if let Ok(dead) = MemTable::try_new(crate::event::dead_letter_schema(), vec![vec![]]) {
        let _ = ctx.register_table(crate::stream::DEAD_LETTERS, Arc::new(dead));
    }
    for v in &p.views {
        let _ = ctx.sql(&v.sql).await;
    }
    for name in todo {
        let Some(insert) = p.inserts.iter().find(|i| i.table == name) else {
            continue;
        };
        let Ok(df) = ctx.sql(&insert.query).await else {
            continue;
        };
        let columns: Option<Vec<Column>> = df
            .schema()
            .as_arrow()
            .fields()
            .iter()
            .map(|f| {
                Some(Column {
                    name: f.name().clone(),
                    data_type: storable(f.data_type())?,
                    nullable: true,
                    metadata: None,
                    loc: insert.loc,
                })
            })
            .collect();
        if let (Some(columns), Some(t)) = (columns, p.tables.iter_mut().find(|t| t.name == name)) {
            t.columns = columns;
        }
    }
}

/// The declared type that holds a planned column's values, if any does.
fn storable(t: &DataType) -> Option<DataType> {
    use DataType as D;
    Some(match t {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 => D::Int64,
        D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => D::UInt64,
        D::Float16 | D::Float64 | D::Decimal128(..) | D::Decimal256(..) => D::Float64,
        D::Float32 => D::Float32,
        D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Null => D::Utf8,
        D::Boolean => D::Boolean,
        D::Timestamp(..) | D::Date32 | D::Date64 => {
            D::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        D::Struct(fields) => D::Struct(
            fields
                .iter()
                .map(|f| {
                    Some(Arc::new(Field::new(
                        f.name(),
                        storable(f.data_type())?,
                        true,
                    )))
                })
                .collect::<Option<Vec<_>>>()?
                .into(),
        ),
        _ => return None,
    })
}

/// Whether a query column of type `from` may be written to a sink column of type `to`:
/// the same type, number to number, timestamp to timestamp, NULL, or anything that has a
/// text form into text (as Arroyo casts to the sink's type: a BIGINT into a TEXT column).
fn assignable(from: &DataType, to: &DataType) -> bool {
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    from == to
        || matches!(from, DataType::Null)
        || (from.is_numeric() && to.is_numeric())
        || (text(to)
            && (text(from)
                || from.is_numeric()
                || matches!(from, DataType::Boolean | DataType::Timestamp(..))))
        || (matches!(from, DataType::Timestamp(..)) && matches!(to, DataType::Timestamp(..)))
}

/// DataFusion's "Invalid function 'x'.\nDid you mean 'y'?" names whichever of the equally
/// close candidates its hash map yields first, so it changed from run to run: the hint is made
/// again here over every function the session knows, nearest first, ties by name.
fn stable_hint(ctx: &SessionContext, message: String) -> String {
    let Some(rest) = message.strip_prefix("Invalid function '") else {
        return message;
    };
    let Some((name, _)) = rest.split_once("'.") else {
        return message;
    };
    let state = ctx.state();
    let lower = name.to_lowercase();
    let best = state
        .scalar_functions()
        .keys()
        .chain(state.aggregate_functions().keys())
        .chain(state.window_functions().keys())
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c.as_str()))
        .min();
    match best {
        Some((_, c)) => format!("unknown function {name} (did you mean {c}?)"),
        None => format!("unknown function {name}"),
    }
}

/// DataFusion's message without its error-kind prefix.
pub fn strip(e: datafusion::error::DataFusionError) -> String {
    let s = e.to_string();
    // A UDF's own planning message, wrapped by the coercion error: keep just the message.
    if let Some(i) = s.find("coercion failed with: Error during planning: ") {
        let inner = &s[i + "coercion failed with: Error during planning: ".len()..];
        let end = inner.find(". No function matches").unwrap_or(inner.len());
        return inner[..end].to_string();
    }
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "Execution error: ",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    s
}
