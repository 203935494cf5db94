//! The console's SQL workbench: checking an editor's text with the same parser, checks and
//! planner as `txguard validate` (errors at `line:column`), and previewing a `SELECT` over the
//! live stream — the query runs in DataFusion over copies of the batches the running
//! pipeline's sources and views put out while the preview lasts (taps), bounded in time, rows
//! and memory, and never touches the pipeline's sinks or state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use txguard_engine::sql::{ConnectorSpec, PlanningFunctions};
use txguard_engine::stream::{Graph, Watch};

/// Most rows a preview answers with.
pub const MAX_PREVIEW_ROWS: usize = 1000;
/// Longest a preview may watch the stream.
pub const MAX_PREVIEW_SECONDS: f64 = 30.0;
/// Most bytes of input batches a preview holds.
pub const MAX_PREVIEW_INPUT_BYTES: usize = 64 << 20;
/// Memory DataFusion may use to run a preview's query.
const PREVIEW_QUERY_MEMORY: usize = 256 << 20;
/// Longest the query itself may run once the input is in.
const PREVIEW_QUERY_TIME: Duration = Duration::from_secs(10);
/// Longest editor text the checker takes.
pub const MAX_SQL_BYTES: usize = 256 << 10;

/// What the workbench needs of the run: the connectors and functions the pipeline was planned
/// with.
#[derive(Clone)]
pub struct Workbench {
    pub specs: Vec<ConnectorSpec>,
    pub functions: PlanningFunctions,
}

impl std::fmt::Debug for Workbench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workbench")
            .field("functions", &self.functions.len())
            .finish()
    }
}

/// A problem in the editor's text, at its place (1-based; 0 when the planner gave none).
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// What checking the editor's text found.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// `pipeline` (a pipeline file) or `select` (a query to preview).
    pub kind: &'static str,
    pub ok: bool,
    pub errors: Vec<Diagnostic>,
    /// For a query: the columns it gives.
    pub columns: Vec<(String, String)>,
}

/// A request to preview a query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    pub sql: String,
    /// Rows to answer with at most (default 100, at most [`MAX_PREVIEW_ROWS`]).
    pub max_rows: Option<usize>,
    /// How long to watch the stream at most (default 5, at most [`MAX_PREVIEW_SECONDS`]).
    pub max_seconds: Option<f64>,
}

/// A preview's rows.
#[derive(Debug, Serialize)]
pub struct Preview {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Map<String, Value>>,
    /// The relations the query read, and how many of their rows went by.
    pub inputs: Vec<(String, u64)>,
    pub seconds: f64,
    /// Why it stopped watching: `rows` (enough rows), `time`, `memory` or `no input` (the
    /// query reads none of the pipeline's relations).
    pub stopped: &'static str,
}

/// Whether `text` is a query (`SELECT …`, `WITH …`, `VALUES …`) rather than a pipeline file.
pub fn is_query(text: &str) -> bool {
    let mut rest = text.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(word.as_str(), "select" | "with" | "values" | "explain")
}

/// The `Line: L, Column: C` DataFusion's SQL parser puts in its messages.
fn parser_place(message: &str) -> (u64, u64) {
    let num = |key: &str| {
        message.find(key).and_then(|i| {
            message[i + key.len()..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
    };
    match (num("Line:"), num("Column:")) {
        (Some(l), Some(c)) => (l, c),
        _ => (0, 0),
    }
}

/// An error of DataFusion as a diagnostic (at the place its parser gave, if any).
fn diagnostic(e: datafusion::error::DataFusionError) -> Diagnostic {
    let mut message = txguard_engine::sql::strip(e);
    // sqlparser's `ParserError("…")` debug form, as plain text.
    if let Some(inner) = message
        .strip_prefix("ParserError(\"")
        .and_then(|m| m.strip_suffix("\")"))
    {
        message = inner.replace("\\\"", "\"");
    }
    let (line, column) = parser_place(&message);
    Diagnostic {
        line,
        column,
        message,
    }
}

/// A diagnostic of `text` that the planner gave no place: running out of text is put at the
/// text's end; an unknown table or column at the first place the text names it (DataFusion
/// quotes it: `table 'datafusion.public.x' not found`, `No field named y`).
fn placed(text: &str, mut d: Diagnostic) -> Diagnostic {
    if d.line != 0 {
        return d;
    }
    if d.message.contains("found: EOF") {
        let trimmed = text.trim_end();
        d.line = trimmed.lines().count().max(1) as u64;
        d.column = trimmed.lines().last().map_or(0, |l| l.chars().count()) as u64 + 1;
        return d;
    }
    let named = d
        .message
        .split('\'')
        .nth(1)
        .or_else(|| {
            d.message
                .split("named ")
                .nth(1)
                .and_then(|r| r.split([' ', '.', ',']).next())
        })
        .map(|n| {
            n.rsplit('.')
                .next()
                .unwrap_or(n)
                .trim_matches('"')
                .to_ascii_lowercase()
        });
    if let Some(name) = named.filter(|n| !n.is_empty())
        && let Some((line, column)) = find_word(text, &name)
    {
        d.line = line;
        d.column = column;
    }
    d
}

/// The first place `word` stands alone in `text` (case-insensitively), 1-based.
fn find_word(text: &str, word: &str) -> Option<(u64, u64)> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    for (i, line) in text.lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        let mut from = 0;
        while let Some(at) = lower[from..].find(word).map(|a| a + from) {
            let before = lower[..at].chars().next_back();
            let after = lower[at + word.len()..].chars().next();
            if !before.is_some_and(ident) && !after.is_some_and(ident) {
                return Some((i as u64 + 1, lower[..at].chars().count() as u64 + 1));
            }
            from = at + word.len();
        }
    }
    None
}

/// Read-only: no DDL, no DML, no `SET`.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl Workbench {
    /// A session with the pipeline's functions, bounded in memory.
    fn context(&self) -> SessionContext {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(PREVIEW_QUERY_MEMORY, 1.0)
            .build_arc();
        let config = SessionConfig::new().with_batch_size(1024);
        let ctx = match runtime {
            Ok(rt) => SessionContext::new_with_config_rt(config, rt),
            Err(_) => SessionContext::new_with_config(config),
        };
        for f in &self.functions {
            ctx.register_udf(f.as_ref().clone());
        }
        ctx
    }

    /// Checks the editor's text: a query against the running pipeline's relations (`graph`),
    /// else a pipeline file with the same checks and planner as `txguard validate`.
    pub async fn check(&self, text: &str, graph: &Graph) -> Checked {
        if is_query(text) {
            return match self.plan_query(text, graph).await {
                Ok((schema, _)) => Checked {
                    kind: "select",
                    ok: true,
                    errors: Vec::new(),
                    columns: columns(&schema),
                },
                Err(d) => Checked {
                    kind: "select",
                    ok: false,
                    errors: vec![placed(text, d)],
                    columns: Vec::new(),
                },
            };
        }
        let errors = match self.check_pipeline(text).await {
            Ok(()) => Vec::new(),
            Err(e) => vec![Diagnostic {
                line: e.line,
                column: e.column,
                message: e.message,
            }],
        };
        Checked {
            kind: "pipeline",
            ok: errors.is_empty(),
            errors,
            columns: Vec::new(),
        }
    }

    async fn check_pipeline(&self, text: &str) -> Result<(), txguard_engine::sql::SqlError> {
        let mut p = txguard_engine::sql::parse("editor", text)?;
        txguard_engine::sql::infer_sink_columns(&mut p, &self.functions).await;
        txguard_engine::sql::check(&p, &self.specs, &self.functions).await?;
        let roles = txguard_engine::sql::roles(&p, &self.specs)?;
        txguard_engine::stream::plan(&p, &roles, &self.functions).await?;
        Ok(())
    }

    /// Plans a read-only query over the pipeline's relations (empty): its output schema and
    /// the relations it reads.
    async fn plan_query(
        &self,
        sql: &str,
        graph: &Graph,
    ) -> Result<(SchemaRef, Vec<String>), Diagnostic> {
        let ctx = self.context();
        for n in &graph.nodes {
            if let Some(r) = &n.relation {
                let table =
                    MemTable::try_new(n.schema.clone(), vec![vec![]]).map_err(diagnostic)?;
                ctx.register_table(r.as_str(), Arc::new(table))
                    .map_err(diagnostic)?;
            }
        }
        let df = ctx
            .sql_with_options(sql, read_only())
            .await
            .map_err(diagnostic)?;
        let plan = df.logical_plan();
        let mut read = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name = scan.table_name.table().to_string();
                if !read.contains(&name) {
                    read.push(name);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        Ok((Arc::new(plan.schema().as_arrow().clone()), read))
    }

    /// Runs a preview: watches the relations the query reads for up to `max_seconds` (or
    /// until the query would give `max_rows` rows, or the input holds
    /// [`MAX_PREVIEW_INPUT_BYTES`]), then runs it over what went by.
    pub async fn preview(
        &self,
        req: &PreviewRequest,
        graph: &Graph,
        watch: Option<&Arc<Watch>>,
    ) -> Result<Preview, Diagnostic> {
        let max_rows = req.max_rows.unwrap_or(100).clamp(1, MAX_PREVIEW_ROWS);
        let max_seconds = req
            .max_seconds
            .unwrap_or(5.0)
            .clamp(0.1, MAX_PREVIEW_SECONDS);
        let (schema, read) = self
            .plan_query(&req.sql, graph)
            .await
            .map_err(|d| placed(&req.sql, d))?;
        let started = Instant::now();
        let mut taps = Vec::new();
        // Scans of anything else (a table function) need no tap.
        for (r, node) in read.iter().filter_map(|r| Some((r, graph.relation(r)?))) {
            let watch = watch.ok_or_else(|| Diagnostic {
                line: 0,
                column: 0,
                message: "this run has no live dataflow to preview".into(),
            })?;
            let tap = watch.subscribe(node.id, 1024).ok_or_else(|| Diagnostic {
                line: 0,
                column: 0,
                message: format!("{r}: no such operator"),
            })?;
            taps.push((
                r.clone(),
                node.schema.clone(),
                tap,
                Vec::<RecordBatch>::new(),
            ));
        }
        let deadline = started + Duration::from_secs_f64(max_seconds);
        let mut stopped = if taps.is_empty() { "no input" } else { "time" };
        let mut bytes = 0usize;
        let mut next_try = started + Duration::from_millis(500);
        'watch: while !taps.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait = deadline.min(next_try) - now;
            // The first tap with a batch (polled in turn).
            let got = tokio::time::timeout(wait, async {
                loop {
                    for (i, (_, _, tap, _)) in taps.iter_mut().enumerate() {
                        if let Ok(Some(b)) =
                            tokio::time::timeout(Duration::from_millis(20), tap.recv()).await
                        {
                            return (i, b);
                        }
                    }
                }
            })
            .await;
            if let Ok((i, b)) = got {
                bytes += b.get_array_memory_size();
                taps[i].3.push(b);
                if bytes >= MAX_PREVIEW_INPUT_BYTES {
                    stopped = "memory";
                    break 'watch;
                }
            }
            if Instant::now() >= next_try {
                next_try = Instant::now() + Duration::from_millis(500);
                // Enough already? (A query over everything so far; cheap at these sizes.)
                let rows = self.run(&req.sql, &taps, max_rows).await?;
                if rows.iter().map(RecordBatch::num_rows).sum::<usize>() >= max_rows {
                    stopped = "rows";
                    break 'watch;
                }
            }
        }
        let batches = self.run(&req.sql, &taps, max_rows).await?;
        let mut rows = Vec::new();
        for b in &batches {
            rows.extend(crate::live::batch_rows(b));
        }
        rows.truncate(max_rows);
        Ok(Preview {
            columns: columns(&schema),
            rows,
            inputs: taps
                .iter()
                .map(|(r, _, _, bs)| (r.clone(), bs.iter().map(|b| b.num_rows() as u64).sum()))
                .collect(),
            seconds: started.elapsed().as_secs_f64(),
            stopped,
        })
    }

    /// The query over the batches gathered so far, at most `max_rows` rows.
    async fn run(
        &self,
        sql: &str,
        inputs: &[(
            String,
            SchemaRef,
            txguard_engine::stream::Tap,
            Vec<RecordBatch>,
        )],
        max_rows: usize,
    ) -> Result<Vec<RecordBatch>, Diagnostic> {
        let ctx = self.context();
        for (name, schema, _, batches) in inputs {
            let table =
                MemTable::try_new(schema.clone(), vec![batches.clone()]).map_err(diagnostic)?;
            ctx.register_table(name.as_str(), Arc::new(table))
                .map_err(diagnostic)?;
        }
        let query = async {
            ctx.sql_with_options(sql, read_only())
                .await?
                .limit(0, Some(max_rows))?
                .collect()
                .await
        };
        match tokio::time::timeout(PREVIEW_QUERY_TIME, query).await {
            Ok(r) => r.map_err(diagnostic),
            Err(_) => Err(Diagnostic {
                line: 0,
                column: 0,
                message: format!(
                    "the query ran longer than {} s over the preview's rows: stopped",
                    PREVIEW_QUERY_TIME.as_secs()
                ),
            }),
        }
    }
}

fn columns(schema: &SchemaRef) -> Vec<(String, String)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_told_from_pipeline_files() {
        assert!(is_query("SELECT 1"));
        assert!(is_query(
            "  -- a comment\n/* and another */ with x as (select 1) select * from x"
        ));
        assert!(!is_query(
            "CREATE TABLE t (a INT) WITH (connector = 'stdout')"
        ));
        assert!(!is_query("INSERT INTO t SELECT 1"));
        assert!(!is_query(""));
    }

    #[test]
    fn the_parser_place_is_read_from_its_message() {
        assert_eq!(
            parser_place("Expected: an expression, found: FROM at Line: 2, Column: 8"),
            (2, 8)
        );
        assert_eq!(parser_place("table 'x' not found"), (0, 0));
        let d = placed(
            "SELECT a FROM\n  t WHERE\n",
            Diagnostic {
                line: 0,
                column: 0,
                message: "Expected: an expression, found: EOF".into(),
            },
        );
        assert_eq!((d.line, d.column), (2, 10));
        let unknown = |message: &str| Diagnostic {
            line: 0,
            column: 0,
            message: message.into(),
        };
        let text = "SELECT user_id,\n  amount\nFROM transactionz";
        let d = placed(
            text,
            unknown("table 'datafusion.public.transactionz' not found"),
        );
        assert_eq!((d.line, d.column), (3, 6));
        let d = placed(
            "SELECT a_nope, nope FROM t",
            unknown("Schema error: No field named nope."),
        );
        assert_eq!((d.line, d.column), (1, 16));
        let d = placed("SELECT 1", unknown("something else"));
        assert_eq!((d.line, d.column), (0, 0));
    }
}
