//! The operators of a dataflow: stateless projections and filters (DataFusion physical
//! expressions on Arrow batches) and the two stateful ones, per-event OVER windows
//! ([`crate::over`]) and windowed GROUP BY ([`crate::window`]), with the glue that evaluates
//! their arguments and lays their output out as the logical plan declared it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, RecordBatchOptions, StructArray};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::physical_expr::PhysicalExpr;

use super::StreamError;
use crate::over::OverWindows;
use crate::window::WindowAggregate;

/// What one node of the dataflow does to the batches of its input.
pub(crate) enum Op {
    /// Where a source's (or the dead-letter stream's) batches enter.
    Source,
    Project(Vec<Arc<dyn PhysicalExpr>>),
    Filter(Arc<dyn PhysicalExpr>),
    Over(Box<OverOp>),
    Window(Box<WindowOp>),
    /// The last step before a sink: the insert's columns laid out as the sink table declares
    /// them. Rows with NULL in a NOT NULL column are split off as dead letters.
    Sink {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        table: String,
    },
}

/// Splits rows that break the NOT NULL columns of `schema` off `cols`: returns the rows that
/// fit (laid out as `schema`) and, for the others, dead letters with the reason.
fn split_not_null(
    table: &str,
    schema: &SchemaRef,
    cols: Vec<ArrayRef>,
    rows: usize,
) -> Result<(Option<RecordBatch>, Option<RecordBatch>), StreamError> {
    let mut bad: Vec<Vec<&str>> = vec![Vec::new(); rows];
    let mut any = false;
    for (c, f) in cols.iter().zip(schema.fields()) {
        if !f.is_nullable() && c.null_count() > 0 {
            for (r, b) in bad.iter_mut().enumerate() {
                if c.is_null(r) {
                    b.push(f.name());
                    any = true;
                }
            }
        }
    }
    if !any {
        return Ok((Some(conform(schema, cols, rows)?), None));
    }
    let keep: arrow::array::BooleanArray = bad.iter().map(|b| Some(b.is_empty())).collect();
    let drop = arrow::compute::not(&keep)?;
    let kept = cols
        .iter()
        .map(|c| arrow::compute::filter(c, &keep))
        .collect::<Result<Vec<_>, _>>()?;
    let n_kept = keep.true_count();
    let good = (n_kept > 0)
        .then(|| conform(schema, kept, n_kept))
        .transpose()?;
    let nullable = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let dropped = cols
        .iter()
        .map(|c| arrow::compute::filter(c, &drop))
        .collect::<Result<Vec<_>, _>>()?;
    let n_bad = rows - n_kept;
    let rejected = conform(&nullable, dropped, n_bad)?;
    let reasons: Vec<String> = bad
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| {
            format!(
                "sink {table}: NULL in NOT NULL column {}; make the query give a value \
                 (e.g. COALESCE) or declare the column without NOT NULL",
                b.join(", ")
            )
        })
        .collect();
    let dead =
        crate::event::rows_as_dead_letters(&format!("sink {table}"), &rejected, &reasons, "")?;
    Ok((good, Some(dead)))
}

/// Evaluates `e` on `batch` as an array of the batch's length.
pub(crate) fn eval(
    e: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<ArrayRef, StreamError> {
    Ok(e.evaluate(batch)?.into_array(batch.num_rows())?)
}

/// Lays `columns` out as `schema`: casts where the computed type differs from the declared one.
pub(crate) fn conform(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch, StreamError> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| cast_to(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// `a` as type `t`: itself when it already is, else cast.
pub(crate) fn cast_to(a: ArrayRef, t: &DataType) -> Result<ArrayRef, arrow::error::ArrowError> {
    if a.data_type() == t {
        Ok(a)
    } else {
        cast(&a, t)
    }
}

/// An argument of a stateful operator, evaluated to DOUBLE.
pub(crate) enum Arg {
    Expr(Arc<dyn PhysicalExpr>),
    /// 1.0 where the expression is not NULL, else 0.0 (`COUNT(x)` as a sum).
    NotNull(Arc<dyn PhysicalExpr>),
}

impl Arg {
    fn eval(&self, batch: &RecordBatch) -> Result<ArrayRef, StreamError> {
        match self {
            Arg::Expr(e) => Ok(cast_to(eval(e, batch)?, &DataType::Float64)?),
            Arg::NotNull(e) => {
                let a = eval(e, batch)?;
                let v: Float64Array = (0..a.len())
                    .map(|i| Some(if a.is_null(i) { 0.0 } else { 1.0 }))
                    .collect();
                Ok(Arc::new(v))
            }
        }
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The batch a stateful operator works on: `[key, ts, args…]`.
fn state_input(
    schema: &SchemaRef,
    batch: &RecordBatch,
    key: Option<&Arc<dyn PhysicalExpr>>,
    ts: usize,
    args: &[Arg],
) -> Result<RecordBatch, StreamError> {
    let n = batch.num_rows();
    let key = match key {
        Some(k) => cast_to(eval(k, batch)?, &DataType::Utf8)?,
        None => Arc::new(arrow::array::StringArray::from(vec![""; n])),
    };
    let ts = cast_to(batch.column(ts).clone(), &ts_type())?;
    let mut cols = vec![key, ts];
    for a in args {
        cols.push(a.eval(batch)?);
    }
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// Schema of `[key, ts, args…]`.
pub(crate) fn state_schema(args: usize) -> SchemaRef {
    let mut fields = vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("ts", ts_type(), false),
    ];
    fields.extend((0..args).map(|i| Field::new(format!("arg{i}"), DataType::Float64, true)));
    Arc::new(Schema::new(fields))
}

/// `batch` with the window columns `windows` computes from its `[key, ts, args…]` appended,
/// laid out as `schema` (what [`OverOp::step`] and [`OverOp::probe`] share).
fn with_windows(
    state_schema: &SchemaRef,
    key: &Arc<dyn PhysicalExpr>,
    ts: usize,
    args: &[Arg],
    schema: &SchemaRef,
    batch: &RecordBatch,
    windows: impl FnOnce(&RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError>,
) -> Result<RecordBatch, StreamError> {
    let st = state_input(state_schema, batch, Some(key), ts, args)?;
    let res = windows(&st)?;
    let mut cols = batch.columns().to_vec();
    cols.extend_from_slice(&res.columns()[st.num_columns()..]);
    conform(schema, cols, batch.num_rows())
}

/// Per-event OVER windows: the input's columns plus one column per window function.
pub(crate) struct OverOp {
    pub key: Arc<dyn PhysicalExpr>,
    pub ts: usize,
    pub args: Vec<Arg>,
    pub state_schema: SchemaRef,
    pub windows: OverWindows,
    pub schema: SchemaRef,
    /// Idle keys are evicted each time the watermark moves this far (a quarter of the widest
    /// frame: state stays within 1.25 frames of history, and the key scan stays rare).
    pub evict_every: i64,
    pub last_evict: Option<i64>,
}

impl OverOp {
    fn step(
        &mut self,
        input: Option<&RecordBatch>,
        watermark: Option<i64>,
    ) -> Result<Option<RecordBatch>, StreamError> {
        let out = match input {
            Some(batch) if batch.num_rows() > 0 => {
                let windows = &mut self.windows;
                Some(with_windows(
                    &self.state_schema,
                    &self.key,
                    self.ts,
                    &self.args,
                    &self.schema,
                    batch,
                    |st| windows.process(st),
                )?)
            }
            _ => None,
        };
        if let Some(w) = watermark {
            let due = self
                .last_evict
                .is_none_or(|l| w.saturating_sub(l) >= self.evict_every.max(1));
            if due {
                self.windows.evict_idle(w);
                self.last_evict = Some(w);
            }
        }
        Ok(out)
    }
}

impl OverOp {
    /// What [`OverOp::step`] would give for `batch` (each row as its key's next), changing
    /// nothing ([`OverWindows::probe`]).
    fn probe(&self, batch: &RecordBatch) -> Result<RecordBatch, StreamError> {
        with_windows(
            &self.state_schema,
            &self.key,
            self.ts,
            &self.args,
            &self.schema,
            batch,
            |st| self.windows.probe(st),
        )
    }
}

/// Where an output column of a windowed aggregation comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OutCol {
    /// The `tumble(…)` / `hop(…)` / `session(…)` column: `STRUCT<start, end>`.
    Window,
    Key,
    Agg(usize),
}

/// Windowed GROUP BY: one row per key and window once the watermark passes its end.
pub(crate) struct WindowOp {
    pub key: Option<Arc<dyn PhysicalExpr>>,
    pub ts: usize,
    pub args: Vec<Arg>,
    pub state_schema: SchemaRef,
    pub agg: WindowAggregate,
    pub layout: Vec<OutCol>,
    pub schema: SchemaRef,
}

impl WindowOp {
    fn step(
        &mut self,
        input: Option<&RecordBatch>,
        watermark: Option<i64>,
        end: bool,
    ) -> Result<Option<RecordBatch>, StreamError> {
        if let Some(batch) = input
            && batch.num_rows() > 0
        {
            let st = state_input(
                &self.state_schema,
                batch,
                self.key.as_ref(),
                self.ts,
                &self.args,
            )?;
            self.agg.process(&st)?;
        }
        let done = if end {
            self.agg.flush()?
        } else {
            match watermark {
                Some(w) => self.agg.advance(w)?,
                None => None,
            }
        };
        done.map(|b| self.layout(&b)).transpose()
    }

    /// `[key, window_start, window_end, aggs…]` in the plan's column order.
    fn layout(&self, b: &RecordBatch) -> Result<RecordBatch, StreamError> {
        let mut cols = Vec::with_capacity(self.layout.len());
        for (c, f) in self.layout.iter().zip(self.schema.fields()) {
            cols.push(match c {
                OutCol::Key => b.column(0).clone(),
                OutCol::Agg(i) => b.column(3 + i).clone(),
                OutCol::Window => {
                    let DataType::Struct(fields) = f.data_type() else {
                        return Err(StreamError::Plan(format!(
                            "window column {} is not a STRUCT",
                            f.name()
                        )));
                    };
                    let parts: Vec<ArrayRef> = fields
                        .iter()
                        .zip([b.column(1), b.column(2)])
                        .map(|(sf, c)| cast(c, sf.data_type()))
                        .collect::<Result<_, _>>()?;
                    let fields: Fields = fields.clone();
                    Arc::new(StructArray::try_new(fields, parts, None)?) as ArrayRef
                }
            });
        }
        conform(&self.schema, cols, b.num_rows())
    }
}

impl Op {
    /// The operator's state, if it keeps any.
    pub(crate) fn stateful(&self) -> Option<&dyn crate::state::Stateful> {
        match self {
            Op::Over(o) => Some(&o.windows),
            Op::Window(w) => Some(&w.agg),
            _ => None,
        }
    }

    pub(crate) fn stateful_mut(&mut self) -> Option<&mut dyn crate::state::Stateful> {
        match self {
            Op::Over(o) => Some(&mut o.windows),
            Op::Window(w) => Some(&mut w.agg),
            _ => None,
        }
    }

    /// What the operator gives for `batch` without changing any state, for rows probed
    /// through the dataflow (the online scoring API); `None` for an operator whose output is
    /// not per row (a windowed aggregation emits when windows close) or a sink.
    pub(crate) fn probe(
        &self,
        schema: &SchemaRef,
        batch: &RecordBatch,
    ) -> Result<Option<RecordBatch>, StreamError> {
        match self {
            Op::Source => Ok(Some(batch.clone())),
            Op::Project(exprs) => {
                let cols = exprs
                    .iter()
                    .map(|e| eval(e, batch))
                    .collect::<Result<Vec<_>, _>>()?;
                conform(schema, cols, batch.num_rows()).map(Some)
            }
            Op::Filter(pred) => {
                let mask = eval(pred, batch)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<arrow::array::BooleanArray>()
                    .ok_or_else(|| StreamError::Plan("WHERE does not give a boolean".into()))?;
                Ok(Some(filter_record_batch(batch, mask)?))
            }
            Op::Over(o) => o.probe(batch).map(Some),
            Op::Window(_) | Op::Sink { .. } => Ok(None),
        }
    }

    /// The operator's kind, as the console's graph names it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Op::Source => "source",
            Op::Project(_) => "project",
            Op::Filter(_) => "filter",
            Op::Over(_) => "over",
            Op::Window(_) => "window",
            Op::Sink { .. } => "sink",
        }
    }

    /// Whether [`Op::probe`] gives this operator's rows.
    pub(crate) fn per_row(&self) -> bool {
        !matches!(self, Op::Window(_) | Op::Sink { .. })
    }

    /// Runs one step: the input's batch of this step (if any) and the current watermark;
    /// `end` at the end of input (windows still open are emitted). Rows a sink refuses are
    /// added to `rejected` as dead letters.
    pub(crate) fn step(
        &mut self,
        schema: &SchemaRef,
        input: Option<&RecordBatch>,
        watermark: Option<i64>,
        end: bool,
        rejected: &mut Vec<RecordBatch>,
    ) -> Result<Option<RecordBatch>, StreamError> {
        match self {
            Op::Source => Ok(input.cloned()),
            Op::Sink { exprs, table } => {
                let Some(batch) = input else { return Ok(None) };
                let cols = exprs
                    .iter()
                    .map(|e| eval(e, batch))
                    .collect::<Result<Vec<_>, _>>()?;
                let (good, dead) = split_not_null(table, schema, cols, batch.num_rows())?;
                rejected.extend(dead);
                Ok(good)
            }
            Op::Project(exprs) => {
                let Some(batch) = input else { return Ok(None) };
                let cols = exprs
                    .iter()
                    .map(|e| eval(e, batch))
                    .collect::<Result<Vec<_>, _>>()?;
                conform(schema, cols, batch.num_rows()).map(Some)
            }
            Op::Filter(pred) => {
                let Some(batch) = input else { return Ok(None) };
                let mask = eval(pred, batch)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<arrow::array::BooleanArray>()
                    .ok_or_else(|| StreamError::Plan("WHERE does not give a boolean".into()))?;
                let out = filter_record_batch(batch, mask)?;
                Ok((out.num_rows() > 0).then_some(out))
            }
            Op::Over(o) => o.step(input, watermark),
            Op::Window(w) => w.step(input, watermark, end),
        }
    }
}
