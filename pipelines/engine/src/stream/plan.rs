//! The streaming planner: each view and `INSERT INTO` of a pipeline is planned by DataFusion
//! into a logical plan, which is then walked into dataflow nodes. Projections and filters
//! become DataFusion physical expressions; `OVER (PARTITION BY k ORDER BY ts RANGE …)`
//! becomes an incremental [`OverOp`]; a GROUP BY on `tumble` / `hop` / `session` becomes a
//! [`WindowOp`]. A view is planned once and shared by every query that reads it.
//!
//! Stateful operators need their input in event-time order, so each node tracks which of its
//! columns (if any) still is the source's event time; OVER and windows must order or window
//! by that column, and anything the planner cannot run incrementally is refused here, before
//! anything runs, naming the file and line.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{
    DdlStatement, Expr, LogicalPlan, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use datafusion::optimizer::simplify_expressions::{ExprSimplifier, SimplifyContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use super::ops::{Arg, Op, OutCol, OverOp, WindowOp, state_schema};
use super::{DEAD_LETTERS, Dataflow, Node, StreamSink, StreamSource};
use crate::event::dead_letter_schema;
use crate::over::{OverAgg, OverFn, OverWindows};
use crate::sql::{Loc, Pipeline, PlanningFunctions, Role, SqlError, TableDef, window_udfs};
use crate::window::{GroupAgg, GroupFn, WindowAggregate, WindowKind};

/// An unqualified, all-nullable copy of a plan's schema: what the node's batches carry.
fn batch_schema(s: &DFSchema) -> SchemaRef {
    Arc::new(Schema::new(
        s.fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn table_schema(t: &TableDef) -> SchemaRef {
    Arc::new(Schema::new(
        t.columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

struct Planner<'a> {
    p: &'a Pipeline,
    state: SessionState,
    ctx: SessionContext,
    nodes: Vec<Node>,
    /// Table or view name → the node whose output it is.
    tables: HashMap<String, usize>,
    /// Where the statement being planned is, for errors.
    loc: Loc,
    what: String,
}

type PResult<T> = Result<T, SqlError>;

impl Planner<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> SqlError {
        self.p.err(self.loc, format!("{}: {msg}", self.what))
    }

    fn add(
        &mut self,
        op: Op,
        input: Option<usize>,
        schema: SchemaRef,
        et: Option<usize>,
        label: String,
    ) -> usize {
        let root = input.map_or(self.nodes.len(), |i| self.nodes[i].root);
        self.nodes.push(Node {
            op,
            input,
            root,
            schema,
            et,
            label,
        });
        self.nodes.len() - 1
    }

    /// `e` (over `schema`) as a physical expression, simplified first (COALESCE, for one,
    /// only runs once rewritten to CASE).
    fn phys(&self, e: &Expr, schema: &DFSchema) -> PResult<Arc<dyn PhysicalExpr>> {
        let fail = |err| self.err(format!("cannot evaluate {e}: {}", crate::sql::strip(err)));
        let ctx = SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .with_config_options(self.state.config_options().clone())
            .with_query_execution_start_time(
                self.state.execution_props().query_execution_start_time,
            )
            .build();
        let simple = ExprSimplifier::new(ctx).simplify(e.clone()).map_err(fail)?;
        self.state
            .create_physical_expr(simple, schema)
            .map_err(fail)
    }

    /// The event-time column index of `input` if `e` is exactly that column.
    fn is_event_time(&self, e: &Expr, input: usize, schema: &DFSchema) -> bool {
        let Some(et) = self.nodes[input].et else {
            return false;
        };
        match strip_alias(e) {
            Expr::Column(c) => schema.index_of_column(c).ok() == Some(et),
            _ => false,
        }
    }

    fn plan(&mut self, plan: &LogicalPlan) -> PResult<usize> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table().to_string();
                let Some(&base) = self.tables.get(&name) else {
                    return Err(self.err(format!("no table or view named {name}")));
                };
                let mut id = base;
                if let Some(proj) = &scan.projection {
                    let exprs = proj
                        .iter()
                        .map(|&i| {
                            Arc::new(datafusion::physical_expr::expressions::Column::new(
                                self.nodes[base].schema.field(i).name(),
                                i,
                            )) as Arc<dyn PhysicalExpr>
                        })
                        .collect();
                    let et = self.nodes[base]
                        .et
                        .and_then(|e| proj.iter().position(|&i| i == e));
                    id = self.add(
                        Op::Project(exprs),
                        Some(base),
                        batch_schema(&scan.projected_schema),
                        et,
                        format!("columns of {name}"),
                    );
                }
                for f in &scan.filters {
                    let pred = self.phys(f, &scan.projected_schema)?;
                    let schema = self.nodes[id].schema.clone();
                    let et = self.nodes[id].et;
                    id = self.add(Op::Filter(pred), Some(id), schema, et, format!("filter {f}"));
                }
                if scan.fetch.is_some() {
                    return Err(self.err("LIMIT has no meaning on an endless stream"));
                }
                Ok(id)
            }
            LogicalPlan::SubqueryAlias(a) => self.plan(&a.input),
            LogicalPlan::Projection(p) => {
                let input = self.plan(&p.input)?;
                let in_schema = p.input.schema();
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.phys(e, in_schema))
                    .collect::<PResult<Vec<_>>>()?;
                let et = p
                    .expr
                    .iter()
                    .position(|e| self.is_event_time(e, input, in_schema));
                let label = format!(
                    "project {}",
                    p.expr.iter().map(short_expr).collect::<Vec<_>>().join(", ")
                );
                Ok(self.add(Op::Project(exprs), Some(input), batch_schema(&p.schema), et, label))
            }
            LogicalPlan::Filter(f) => {
                let input = self.plan(&f.input)?;
                let pred = self.phys(&f.predicate, f.input.schema())?;
                let schema = self.nodes[input].schema.clone();
                let et = self.nodes[input].et;
                Ok(self.add(Op::Filter(pred), Some(input), schema, et, format!("filter {}", f.predicate)))
            }
            LogicalPlan::Window(w) => self.plan_over(w),
            LogicalPlan::Aggregate(a) => self.plan_window(a),
            LogicalPlan::Join(_) => Err(self.err(
                "joins are not supported by the streaming engine yet; compute per-user context with OVER windows",
            )),
            LogicalPlan::Limit(_) => Err(self.err("LIMIT has no meaning on an endless stream")),
            LogicalPlan::Sort(_) => Err(self.err(
                "ORDER BY on a stream is not supported: output follows event time",
            )),
            other => Err(self.err(format!(
                "{} is not supported by the streaming engine",
                other.display()
            ))),
        }
    }

    fn plan_over(&mut self, w: &datafusion::logical_expr::Window) -> PResult<usize> {
        let input = self.plan(&w.input)?;
        let in_schema = w.input.schema();
        let mut key: Option<Expr> = None;
        let mut aggs = Vec::new();
        let mut shorts = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        for e in &w.window_expr {
            let Expr::WindowFunction(wf) = strip_alias(e) else {
                return Err(self.err(format!("{e} is not a window function")));
            };
            let WindowFunction { fun, params } = wf.as_ref();
            let name = e.schema_name().to_string();
            if params.partition_by.len() != 1 {
                return Err(self.err(format!(
                    "{name}: OVER needs exactly one PARTITION BY column (e.g. PARTITION BY user_id)"
                )));
            }
            let k = params.partition_by[0].clone();
            match &key {
                None => key = Some(k),
                Some(prev) if *prev == k => {}
                Some(prev) => {
                    return Err(self.err(format!(
                        "{name}: all OVER windows of one SELECT must use the same PARTITION BY ({prev} vs {k})"
                    )));
                }
            }
            let ordered_by_time = params.order_by.len() == 1
                && params.order_by[0].asc
                && self.is_event_time(&params.order_by[0].expr, input, in_schema);
            if !ordered_by_time {
                let et = self.nodes[input]
                    .et
                    .map(|i| in_schema.field(i).name().clone())
                    .unwrap_or_else(|| "the source's WATERMARK column".into());
                return Err(self.err(format!(
                    "{name}: OVER windows must be ORDER BY {et} (ascending), the event time"
                )));
            }
            if params.filter.is_some() || params.distinct {
                return Err(self.err(format!(
                    "{name}: FILTER and DISTINCT are not supported in OVER"
                )));
            }
            let fname = match fun {
                WindowFunctionDefinition::AggregateUDF(f) => f.name().to_string(),
                WindowFunctionDefinition::WindowUDF(f) => f.name().to_string(),
            };
            let func = match fname.as_str() {
                "count" => {
                    if params.args.is_empty() || params.args.iter().all(is_non_null_literal) {
                        OverFn::CountRows
                    } else {
                        OverFn::Count
                    }
                }
                "sum" => OverFn::Sum,
                "avg" | "mean" => OverFn::Avg,
                "min" => OverFn::Min,
                "max" => OverFn::Max,
                "stddev" | "stddev_samp" => OverFn::Stddev,
                "lag" => OverFn::Lag,
                "lead" => {
                    return Err(self.err(format!(
                        "{name}: LEAD needs rows that have not arrived yet; use LAG, which streams"
                    )));
                }
                other => {
                    return Err(self.err(format!(
                        "{name}: {other} is not supported in OVER; use count, sum, avg, min, max, stddev or lag"
                    )));
                }
            };
            let range_micros = if func == OverFn::Lag {
                if params.args.len() > 1
                    && params.args[1] != Expr::Literal(ScalarValue::Int64(Some(1)), None)
                {
                    return Err(self.err(format!("{name}: only LAG(x) or LAG(x, 1) is supported")));
                }
                if params.args.len() > 2 {
                    return Err(self.err(format!(
                        "{name}: LAG with a default is not supported; use COALESCE"
                    )));
                }
                0
            } else {
                self.frame_micros(&name, &params.window_frame)?
            };
            let input_col = if func == OverFn::CountRows {
                0
            } else {
                let Some(a) = params.args.first() else {
                    return Err(self.err(format!("{name}: needs an argument")));
                };
                args.push(Arg::Expr(self.phys(a, in_schema)?));
                2 + args.len() - 1
            };
            let arg_text = if func == OverFn::CountRows {
                "*".to_string()
            } else {
                params.args.first().map(short_expr).unwrap_or_default()
            };
            shorts.push(if func == OverFn::Lag {
                format!("lag({arg_text})")
            } else {
                format!("{fname}({arg_text}) {}", duration(range_micros))
            });
            aggs.push(OverAgg {
                name,
                func,
                input: input_col,
                range_micros,
            });
        }
        let Some(key) = key else {
            return Err(self.err("a window without functions"));
        };
        // COUNT(*) reads no argument: point it at the timestamp column, never null.
        for a in &mut aggs {
            if a.func == OverFn::CountRows {
                a.input = 1;
            }
        }
        let st = state_schema(args.len());
        // OverWindows checks its inputs are DOUBLE; COUNT(*) reads column 1 only by index.
        let windows = OverWindows::new(&st, 0, 1, aggs.clone()).map_err(|e| self.err(e))?;
        let key_phys = self.phys(&key, in_schema)?;
        let ts = self.nodes[input].et.unwrap_or(0);
        let evict_every = aggs.iter().map(|a| a.range_micros).max().unwrap_or(0) / 4;
        let label = format!(
            "OVER (PARTITION BY {} ORDER BY {}): {}",
            short_expr(&key),
            in_schema.field(ts).name(),
            shorts.join(", ")
        );
        let et = self.nodes[input].et;
        Ok(self.add(
            Op::Over(Box::new(OverOp {
                key: key_phys,
                ts,
                args,
                state_schema: st,
                windows,
                schema: batch_schema(&w.schema),
                evict_every,
                last_evict: None,
            })),
            Some(input),
            batch_schema(&w.schema),
            et,
            label,
        ))
    }

    fn frame_micros(&self, name: &str, f: &datafusion::logical_expr::WindowFrame) -> PResult<i64> {
        let bounded = |b: &WindowFrameBound| match b {
            WindowFrameBound::Preceding(v) => interval_micros(v),
            _ => None,
        };
        if f.units != WindowFrameUnits::Range
            || f.end_bound != WindowFrameBound::CurrentRow
            || bounded(&f.start_bound).is_none()
        {
            return Err(self.err(format!(
                "{name}: the frame must be RANGE BETWEEN INTERVAL '…' PRECEDING AND CURRENT ROW \
                 (state stays bounded by the interval); got {f}"
            )));
        }
        bounded(&f.start_bound).ok_or_else(|| self.err("frame"))
    }

    fn plan_window(&mut self, a: &datafusion::logical_expr::Aggregate) -> PResult<usize> {
        let input = self.plan(&a.input)?;
        let in_schema = a.input.schema();
        let mut kind = None;
        let mut key = None;
        let mut layout = Vec::new();
        for g in &a.group_expr {
            if let Expr::ScalarFunction(f) = strip_alias(g)
                && matches!(f.func.name(), "tumble" | "hop" | "session")
            {
                if kind.is_some() {
                    return Err(self.err("GROUP BY has more than one window function"));
                }
                let iv: Vec<Option<i64>> = f.args.iter().map(literal_interval).collect();
                let bad = || {
                    self.err(format!(
                        "{g}: window sizes must be INTERVAL literals, e.g. tumble(INTERVAL '1' MINUTE)"
                    ))
                };
                let k = match (f.func.name(), iv.as_slice()) {
                    ("tumble", [Some(w)]) => WindowKind::Tumble { width: *w },
                    ("hop", [Some(s), Some(w)]) => WindowKind::Hop {
                        slide: *s,
                        width: *w,
                    },
                    ("session", [Some(gap)]) => WindowKind::Session { gap: *gap },
                    _ => return Err(bad()),
                };
                k.validate().map_err(|e| self.err(e))?;
                kind = Some(k);
                layout.push(OutCol::Window);
            } else {
                if key.is_some() {
                    return Err(self.err(
                        "a windowed GROUP BY takes the window and at most one key column (e.g. user_id)",
                    ));
                }
                key = Some(self.phys(g, in_schema)?);
                layout.push(OutCol::Key);
            }
        }
        let Some(kind) = kind else {
            return Err(self.err(
                "GROUP BY on a stream needs a window: add tumble(INTERVAL …), hop(…, …) or session(…)",
            ));
        };
        let ts = match self.nodes[input].et {
            Some(ts) => ts,
            None => {
                return Err(self.err(
                    "a windowed GROUP BY needs its input in event time (the source's WATERMARK column must reach it unchanged)",
                ));
            }
        };
        let mut args = Vec::new();
        let mut aggs = Vec::new();
        for (i, e) in a.aggr_expr.iter().enumerate() {
            let name = e.schema_name().to_string();
            let Expr::AggregateFunction(AggregateFunction { func, params }) = strip_alias(e) else {
                return Err(self.err(format!("{name} is not an aggregate")));
            };
            if params.distinct || params.filter.is_some() || !params.order_by.is_empty() {
                return Err(self.err(format!("{name}: DISTINCT, FILTER and ORDER BY are not supported in a windowed aggregate")));
            }
            let mut arg =
                |f: GroupFn, wrap: fn(Arc<dyn PhysicalExpr>) -> Arg| -> PResult<GroupAgg> {
                    let Some(x) = params.args.first() else {
                        return Err(self.err(format!("{name}: needs an argument")));
                    };
                    args.push(wrap(self.phys(x, in_schema)?));
                    Ok(GroupAgg {
                        name: name.clone(),
                        func: f,
                        input: 2 + args.len() - 1,
                    })
                };
            let g = match func.name() {
                "count"
                    if params.args.is_empty() || params.args.iter().all(is_non_null_literal) =>
                {
                    GroupAgg {
                        name: name.clone(),
                        func: GroupFn::CountRows,
                        input: 0,
                    }
                }
                "count" => arg(GroupFn::Sum, Arg::NotNull)?,
                "sum" => arg(GroupFn::Sum, Arg::Expr)?,
                "min" => arg(GroupFn::Min, Arg::Expr)?,
                "max" => arg(GroupFn::Max, Arg::Expr)?,
                "avg" | "mean" => arg(GroupFn::Avg, Arg::Expr)?,
                other => {
                    return Err(self.err(format!(
                        "{name}: {other} is not supported in a windowed aggregate; use count, sum, min, max or avg"
                    )));
                }
            };
            aggs.push(g);
            layout.push(OutCol::Agg(i));
        }
        let st = state_schema(args.len());
        let agg = WindowAggregate::new(&st, kind, 0, 1, aggs).map_err(|e| self.err(e))?;
        let what = match kind {
            WindowKind::Tumble { width } => format!("TUMBLE({})", duration(width)),
            WindowKind::Hop { slide, width } => {
                format!("HOP({}, {})", duration(slide), duration(width))
            }
            WindowKind::Session { gap } => format!("SESSION({})", duration(gap)),
        };
        let label = format!(
            "{what} GROUP BY {}: {}",
            a.group_expr
                .iter()
                .filter(|g| !matches!(strip_alias(g), Expr::ScalarFunction(_)))
                .map(short_expr)
                .collect::<Vec<_>>()
                .join(", "),
            a.aggr_expr
                .iter()
                .map(short_expr)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let schema = batch_schema(&a.schema);
        Ok(self.add(
            Op::Window(Box::new(WindowOp {
                key,
                ts,
                args,
                state_schema: st,
                agg,
                layout,
                schema: schema.clone(),
            })),
            Some(input),
            schema,
            None,
            label,
        ))
    }

    /// Plans `sql` (a query, or `CREATE VIEW … AS query`) into analysed logical form.
    async fn logical(&self, sql: &str) -> PResult<LogicalPlan> {
        let plan = self
            .state
            .create_logical_plan(sql)
            .await
            .map_err(|e| self.err(crate::sql::strip(e)))?;
        let plan = match plan {
            LogicalPlan::Ddl(DdlStatement::CreateView(v)) => v.input.as_ref().clone(),
            other => other,
        };
        self.state
            .analyzer()
            .execute_and_check(plan, self.state.config_options(), |_, _| {})
            .map_err(|e| self.err(crate::sql::strip(e)))
    }

    fn register(&self, name: &str, schema: SchemaRef) -> PResult<()> {
        let table = MemTable::try_new(schema, vec![vec![]]).map_err(|e| self.err(e))?;
        self.ctx
            .register_table(name, Arc::new(table))
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// An expression for the dataflow graph: its output name without table qualifiers.
fn short_expr(e: &Expr) -> String {
    let s = match e {
        Expr::Column(c) => c.name.clone(),
        Expr::Alias(a) => a.name.clone(),
        other => other.schema_name().to_string(),
    };
    s.replace("count(Int64(1))", "count(*)")
}

/// Microseconds as a short duration: 1h, 24h, 10m, 5s, 250ms.
fn duration(us: i64) -> String {
    for (unit, n) in [
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
    ] {
        if us >= n && us % n == 0 {
            return format!("{}{unit}", us / n);
        }
    }
    format!("{}ms", us / 1000)
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

fn is_non_null_literal(e: &Expr) -> bool {
    matches!(strip_alias(e), Expr::Literal(v, _) if !v.is_null())
}

fn interval_micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000_000 + i.nanoseconds / 1000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i64::from(i.days) * 86_400_000_000 + i64::from(i.milliseconds) * 1000)
        }
        ScalarValue::DurationMicrosecond(Some(m)) => Some(*m),
        ScalarValue::DurationMillisecond(Some(m)) => Some(m * 1000),
        ScalarValue::DurationSecond(Some(s)) => Some(s * 1_000_000),
        _ => None,
    }
}

fn literal_interval(e: &Expr) -> Option<i64> {
    match strip_alias(e) {
        Expr::Literal(v, _) => interval_micros(v),
        _ => None,
    }
}

/// Plans every view and insert of `p` into a dataflow. `p` should have passed
/// [`crate::sql::check`]; `roles` gives each table's role (from its connector).
pub async fn plan(
    p: &Pipeline,
    roles: &HashMap<String, Role>,
    functions: &PlanningFunctions,
) -> Result<Dataflow, SqlError> {
    let ctx = SessionContext::new();
    for f in functions {
        ctx.register_udf(f.as_ref().clone());
    }
    for f in window_udfs() {
        ctx.register_udf(f);
    }
    let state = ctx.state();
    let mut pl = Planner {
        p,
        state,
        ctx,
        nodes: Vec::new(),
        tables: HashMap::new(),
        loc: Loc::default(),
        what: String::new(),
    };
    let mut sources = Vec::new();
    for t in &p.tables {
        pl.loc = t.loc;
        pl.what = format!("table {}", t.name);
        if roles.get(&t.name) != Some(&Role::Source) {
            continue;
        }
        let schema = table_schema(t);
        pl.register(&t.name, schema.clone())?;
        let et = t
            .watermark
            .as_ref()
            .and_then(|w| t.columns.iter().position(|c| c.name == w.column));
        let id = pl.add(
            Op::Source,
            None,
            schema.clone(),
            et,
            format!("source {} ({})", t.name, t.connector),
        );
        pl.tables.insert(t.name.clone(), id);
        sources.push(StreamSource {
            name: t.name.clone(),
            node: id,
            schema,
            event_time: t
                .watermark
                .as_ref()
                .and_then(|w| et.map(|c| (c, w.delay_micros))),
            checks: t.checks.clone(),
        });
    }
    pl.what = format!("stream {DEAD_LETTERS}");
    pl.register(DEAD_LETTERS, dead_letter_schema())?;
    let dead = pl.add(
        Op::Source,
        None,
        dead_letter_schema(),
        None,
        format!("{DEAD_LETTERS} (rejected and late events)"),
    );
    pl.tables.insert(DEAD_LETTERS.into(), dead);
    sources.push(StreamSource {
        name: DEAD_LETTERS.into(),
        node: dead,
        schema: dead_letter_schema(),
        event_time: None,
        checks: Vec::new(),
    });
    let mut views = Vec::new();
    // Views register under their name with the schema they produce, so a query reading a
    // view reads its node: planned once, shared by all readers.
    for v in &p.views {
        pl.loc = v.loc;
        pl.what = format!("view {}", v.name);
        let plan = pl.logical(&v.sql).await?;
        let id = pl.plan(&plan)?;
        pl.register(&v.name, batch_schema(plan.schema()))?;
        pl.tables.insert(v.name.clone(), id);
        views.push((v.name.clone(), id));
    }
    let mut sinks = Vec::new();
    for i in &p.inserts {
        pl.loc = i.loc;
        pl.what = format!("INSERT INTO {}", i.table);
        let Some(t) = p.table(&i.table) else {
            return Err(pl.err("no such table"));
        };
        let plan = pl.logical(&i.query).await?;
        let id = pl.plan(&plan)?;
        let schema = table_schema(t);
        let from = batch_schema(plan.schema());
        if from.fields().len() != schema.fields().len() {
            return Err(pl.err(format!(
                "the query gives {} columns, the table has {}",
                from.fields().len(),
                schema.fields().len()
            )));
        }
        // Rename and cast to the table's columns.
        let exprs = from
            .fields()
            .iter()
            .enumerate()
            .map(|(n, f)| {
                Arc::new(datafusion::physical_expr::expressions::Column::new(
                    f.name(),
                    n,
                )) as Arc<dyn PhysicalExpr>
            })
            .collect();
        let et = pl.nodes[id].et;
        let node = pl.add(
            Op::Sink {
                exprs,
                table: t.name.clone(),
            },
            Some(id),
            schema.clone(),
            et,
            format!("sink {} ({})", t.name, t.connector),
        );
        sinks.push(StreamSink {
            table: t.name.clone(),
            node,
            schema,
        });
    }
    Ok(Dataflow::new(pl.nodes, sources, sinks, views))
}
