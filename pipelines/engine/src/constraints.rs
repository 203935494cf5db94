//! A source table's row constraints, applied to every row before it enters the dataflow: its
//! `NOT NULL` columns and its `CHECK (…)` expressions (planned once by DataFusion against the
//! table's columns). A row that breaks one goes to the dead letters naming the column or the
//! constraint; the rest go on. This is where the default pipelines' transaction contract
//! (finite non-negative amounts, coordinates in range, non-empty ids) is enforced — as SQL in
//! their DDL, not as code.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, not};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::sql::CheckDef;
use crate::stream::StreamError;

/// One compiled `CHECK`.
struct Check {
    name: String,
    text: String,
    expr: Arc<dyn PhysicalExpr>,
}

/// The constraints of one source table.
pub struct Constraints {
    /// The declared schema (with its `NOT NULL`s).
    declared: SchemaRef,
    /// The same columns, all nullable: the shape rows have before the checks.
    nullable: SchemaRef,
    not_null: Vec<usize>,
    checks: Vec<Check>,
}

/// A `CHECK` expression that does not plan against its table.
#[derive(Debug, thiserror::Error)]
#[error("CHECK constraint {name}: {message}")]
pub struct CheckError {
    pub name: String,
    pub message: String,
}

/// Plans `check` against `schema` (all columns nullable); it must give a boolean.
fn compile(
    ctx: &SessionContext,
    schema: &DFSchema,
    check: &CheckDef,
) -> Result<Arc<dyn PhysicalExpr>, CheckError> {
    let err = |message: String| CheckError {
        name: check.name.clone(),
        message,
    };
    let expr = ctx
        .parse_sql_expr(&check.expr, schema)
        .map_err(|e| err(crate::sql::strip(e)))?;
    let phys = ctx
        .create_physical_expr(expr, schema)
        .map_err(|e| err(crate::sql::strip(e)))?;
    let t = phys
        .data_type(schema.as_arrow())
        .map_err(|e| err(crate::sql::strip(e)))?;
    if t != arrow::datatypes::DataType::Boolean {
        return Err(err(format!("({}) gives {t}, not a boolean", check.expr)));
    }
    Ok(phys)
}

fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

fn nullable_df_schema(schema: &Schema) -> Result<DFSchema, datafusion::error::DataFusionError> {
    DFSchema::try_from(nullable(schema).as_ref().clone())
}

/// What [`Constraints::apply`] made of a batch.
pub struct Checked {
    /// The rows that hold every constraint, in the declared schema.
    pub rows: RecordBatch,
    /// The others, with one reason each.
    pub broken: Option<(RecordBatch, Vec<String>)>,
}

impl Constraints {
    /// The constraints of a table with columns `declared`; its event-time column (if any)
    /// counts as NOT NULL whatever the DDL says: a row without a time cannot be placed.
    pub fn new(
        declared: SchemaRef,
        checks: &[CheckDef],
        event_time: Option<usize>,
    ) -> Result<Self, CheckError> {
        let ctx = SessionContext::new();
        let df = nullable_df_schema(&declared).map_err(|e| CheckError {
            name: String::new(),
            message: e.to_string(),
        })?;
        let checks = checks
            .iter()
            .map(|c| {
                Ok(Check {
                    name: c.name.clone(),
                    text: c.expr.clone(),
                    expr: compile(&ctx, &df, c)?,
                })
            })
            .collect::<Result<Vec<_>, CheckError>>()?;
        let not_null = declared
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, f)| !f.is_nullable() || Some(*i) == event_time)
            .map(|(i, _)| i)
            .collect();
        Ok(Constraints {
            nullable: nullable(&declared),
            declared,
            not_null,
            checks,
        })
    }

    /// `batch` (which holds no NULL in a NOT NULL column) in the declared schema.
    fn declared_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, StreamError> {
        Ok(RecordBatch::try_new_with_options(
            self.declared.clone(),
            batch.columns().to_vec(),
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }

    /// `columns` (the declared columns, in order) as one batch of the nullable schema.
    fn nullable_batch(&self, columns: Vec<ArrayRef>) -> Result<RecordBatch, StreamError> {
        let n = columns.first().map_or(0, |c| c.len());
        Ok(RecordBatch::try_new_with_options(
            self.nullable.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// Gives each row of `batch` that breaks a constraint its reason (the first broken, in
    /// declaration order: NOT NULL columns, then CHECKs), unless it has one already;
    /// `reasons` is empty (no row has one) or one per row.
    fn mark(
        &self,
        batch: &RecordBatch,
        reasons: &mut Vec<Option<String>>,
    ) -> Result<(), StreamError> {
        let n = batch.num_rows();
        let mut mark = |i: usize, why: &dyn Fn() -> String| {
            if reasons.is_empty() {
                reasons.resize(n, None);
            }
            reasons[i].get_or_insert_with(why);
        };
        for &c in &self.not_null {
            let col = batch.column(c);
            if col.null_count() == 0 {
                continue;
            }
            let name = self.declared.field(c).name();
            for i in (0..n).filter(|&i| col.is_null(i)) {
                mark(i, &|| format!("column {name} is NOT NULL but null"));
            }
        }
        for check in &self.checks {
            let v = check.expr.evaluate(batch)?.into_array(n)?;
            let v: &BooleanArray = v.as_boolean();
            if v.false_count() == 0 {
                continue;
            }
            for i in (0..n).filter(|&i| v.is_valid(i) && !v.value(i)) {
                mark(i, &|| {
                    format!("CHECK constraint {} failed: {}", check.name, check.text)
                });
            }
        }
        Ok(())
    }

    /// Checks `columns` (the declared columns, in order) row by row: the rows that hold
    /// every constraint (in the declared schema, in order) and, per row, why it does not
    /// (`None`: it holds them).
    pub fn check_rows(
        &self,
        columns: Vec<ArrayRef>,
    ) -> Result<(RecordBatch, Vec<Option<String>>), StreamError> {
        let batch = self.nullable_batch(columns)?;
        let mut reasons = Vec::new();
        self.mark(&batch, &mut reasons)?;
        reasons.resize(batch.num_rows(), None);
        let bad: BooleanArray = reasons.iter().map(|r| Some(r.is_some())).collect();
        let good = self.declared_batch(&filter_record_batch(&batch, &not(&bad)?)?)?;
        Ok((good, reasons))
    }

    /// Splits `columns` (the declared columns, in order) into the rows that hold every
    /// constraint and those that break one (the first broken, in declaration order: NOT NULL
    /// columns, then CHECKs). `reasons` (empty, or one per row) marks rows already known to
    /// be bad, e.g. a value that did not cast to its column's type.
    pub fn apply(
        &self,
        columns: Vec<ArrayRef>,
        mut reasons: Vec<Option<String>>,
    ) -> Result<Checked, StreamError> {
        let batch = self.nullable_batch(columns)?;
        self.mark(&batch, &mut reasons)?;
        if !reasons.iter().any(Option::is_some) {
            return Ok(Checked {
                rows: self.declared_batch(&batch)?,
                broken: None,
            });
        }
        let bad: BooleanArray = reasons.iter().map(|r| Some(r.is_some())).collect();
        let good = self.declared_batch(&filter_record_batch(&batch, &not(&bad)?)?)?;
        let broken = filter_record_batch(&batch, &bad)?;
        Ok(Checked {
            rows: good,
            broken: Some((broken, reasons.into_iter().flatten().collect())),
        })
    }
}
