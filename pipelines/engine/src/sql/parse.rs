//! Reading a pipeline file: statements split at top-level `;`, `CREATE TABLE` taken apart at
//! token level (the `WATERMARK FOR` clause and the `WITH (…)` options are Arroyo/Flink syntax
//! no stock SQL parser reads), columns parsed by sqlparser, views and inserts kept as text for
//! DataFusion.

use std::path::PathBuf;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    ColumnOption, DataType as SqlType, Statement, StructField, TableConstraint,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::{
    CheckDef, Column, InsertDef, Loc, OptionValue, Pipeline, SqlError, TableDef, TableOption,
    ViewDef, Watermark,
};

fn loc(t: &TokenWithSpan) -> Loc {
    Loc {
        line: t.span.start.line,
        column: t.span.start.column,
    }
}

fn is_space(t: &TokenWithSpan) -> bool {
    matches!(t.token, Token::Whitespace(_))
}

/// An unquoted word's upper-case text, for keyword matching.
fn word(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// An identifier: unquoted words fold to lower case (as DataFusion does), quoted ones keep
/// their case.
fn ident(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_lowercase()),
        Token::Word(w) => Some(w.value.clone()),
        _ => None,
    }
}

fn text(tokens: &[TokenWithSpan]) -> String {
    tokens.iter().map(|t| t.token.to_string()).collect()
}

/// Microseconds of an interval written `'5' SECOND`, `'5 seconds'`, `'1' HOUR`, `'250 ms'`….
pub fn parse_interval_micros(value: &str, unit: Option<&str>) -> Result<i64, String> {
    let v = value.trim();
    let (num, unit) = match unit {
        Some(u) => (v, u.to_string()),
        None => {
            let split = v
                .find(|c: char| c.is_ascii_alphabetic())
                .ok_or_else(|| format!("interval '{v}' has no unit (e.g. '5 seconds')"))?;
            (v[..split].trim(), v[split..].trim().to_string())
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("interval value '{num}' is not a number"))?;
    let per = match unit.to_ascii_lowercase().trim_end_matches('s') {
        "microsecond" | "u" | "us" => 1.0,
        "millisecond" | "m" | "milli" => 1e3,
        "second" | "sec" | "" => 1e6,
        "minute" | "min" => 60e6,
        "hour" | "h" | "hr" => 3600e6,
        "day" | "d" => 86_400e6,
        other => return Err(format!("unknown interval unit '{other}'")),
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("interval '{value}' must be a non-negative number"));
    }
    Ok((n * per).round() as i64)
}

/// The Arrow type of a declared SQL type; `None` for one txguard does not support.
fn arrow_type(t: &SqlType) -> Option<DataType> {
    if let SqlType::Struct(fields, _) = t {
        return struct_type(fields);
    }
    let s = t.to_string().to_ascii_uppercase();
    let base = s.split('(').next().unwrap_or("").trim();
    Some(match base {
        "TEXT" | "VARCHAR" | "STRING" | "CHAR" | "CHARACTER VARYING" | "JSON" => DataType::Utf8,
        "BIGINT UNSIGNED" | "UNSIGNED BIGINT" | "INT8 UNSIGNED" | "INT UNSIGNED"
        | "INTEGER UNSIGNED" | "UNSIGNED INT" | "UNSIGNED INTEGER" => DataType::UInt64,
        "BIGINT" | "INT8" | "INTEGER" | "INT" | "INT4" | "SMALLINT" | "INT2" => DataType::Int64,
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT8" | "FLOAT64" | "DECIMAL" | "NUMERIC" => {
            DataType::Float64
        }
        "REAL" | "FLOAT4" | "FLOAT32" => DataType::Float32,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        _ if base.starts_with("TIMESTAMP") => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        _ => return None,
    })
}

/// `STRUCT<name TYPE, …>`: a nested record, its fields nullable (a nested `NOT NULL` is not
/// SQL); `None` if a field's type is unsupported or unnamed.
fn struct_type(fields: &[StructField]) -> Option<DataType> {
    let fields = fields
        .iter()
        .map(|f| {
            let name = f.field_name.as_ref()?;
            let name = if name.quote_style.is_some() {
                name.value.clone()
            } else {
                name.value.to_ascii_lowercase()
            };
            Some(arrow::datatypes::Field::new(
                name,
                arrow_type(&f.field_type)?,
                true,
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(DataType::Struct(fields.into()))
}

struct Ctx {
    file: PathBuf,
}

impl Ctx {
    fn err(&self, at: Loc, message: impl Into<String>) -> SqlError {
        SqlError {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            message: message.into(),
        }
    }
}

/// Splits `tokens` (no whitespace) at top-level commas.
fn split_commas(tokens: &[&TokenWithSpan]) -> Vec<Vec<TokenWithSpan>> {
    let mut out = vec![Vec::new()];
    let mut depth = 0i32;
    for t in tokens {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                out.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = out.last_mut() {
            last.push((*t).clone());
        }
    }
    out.retain(|v| !v.is_empty());
    out
}

/// Index of the `)` matching the `(` at `open`.
fn matching_paren(sig: &[&TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, t) in sig.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses a pipeline file's text; `file` is used in error messages.
pub fn parse(file: impl Into<PathBuf>, sql: &str) -> Result<Pipeline, SqlError> {
    let cx = Ctx { file: file.into() };
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| {
            cx.err(
                Loc {
                    line: e.location.line,
                    column: e.location.column,
                },
                e.message,
            )
        })?;
    let mut statements: Vec<Vec<TokenWithSpan>> = vec![Vec::new()];
    let mut depth = 0i32;
    for t in tokens {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::SemiColon if depth == 0 => {
                statements.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(s) = statements.last_mut() {
            s.push(t);
        }
    }
    let mut p = Pipeline {
        file: cx.file.clone(),
        tables: Vec::new(),
        views: Vec::new(),
        inserts: Vec::new(),
    };
    for stmt in statements {
        let sig: Vec<&TokenWithSpan> = stmt.iter().filter(|t| !is_space(t)).collect();
        let Some(first) = sig.first() else { continue };
        let at = loc(first);
        let w = |i: usize| sig.get(i).and_then(|t| word(t)).unwrap_or_default();
        match (w(0).as_str(), w(1).as_str()) {
            ("CREATE", "TABLE") => p.tables.push(parse_table(&cx, &sig, at)?),
            ("CREATE", "VIEW") | ("CREATE", "OR") => {
                let v = sig
                    .iter()
                    .position(|t| word(t).as_deref() == Some("VIEW"))
                    .and_then(|i| sig.get(i + 1))
                    .and_then(|t| ident(t))
                    .ok_or_else(|| cx.err(at, "CREATE VIEW needs a name"))?;
                p.views.push(ViewDef {
                    name: v,
                    sql: text(&stmt).trim().to_string(),
                    loc: at,
                });
            }
            ("INSERT", "INTO") => {
                let name_tok = sig
                    .get(2)
                    .ok_or_else(|| cx.err(at, "INSERT INTO needs a table"))?;
                let table = ident(name_tok)
                    .ok_or_else(|| cx.err(loc(name_tok), "INSERT INTO needs a table name"))?;
                let after = stmt
                    .iter()
                    .position(|t| std::ptr::eq(t, *name_tok))
                    .map_or(stmt.len(), |i| i + 1);
                let query = text(&stmt[after..]).trim().to_string();
                if query.is_empty() {
                    return Err(cx.err(at, format!("INSERT INTO {table} has no query")));
                }
                p.inserts.push(InsertDef {
                    table,
                    query,
                    loc: at,
                });
            }
            _ => {
                return Err(cx.err(
                    at,
                    format!(
                        "a pipeline holds CREATE TABLE, CREATE VIEW and INSERT INTO statements; found `{}`",
                        text(&stmt).split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                    ),
                ));
            }
        }
    }
    for (i, t) in p.tables.iter().enumerate() {
        if p.tables[..i].iter().any(|o| o.name == t.name)
            || p.views.iter().any(|v| v.name == t.name)
        {
            return Err(p.err(t.loc, format!("{} is defined twice", t.name)));
        }
    }
    Ok(p)
}

fn parse_table(cx: &Ctx, sig: &[&TokenWithSpan], at: Loc) -> Result<TableDef, SqlError> {
    let name_tok = sig
        .get(2)
        .ok_or_else(|| cx.err(at, "CREATE TABLE needs a name"))?;
    let name = ident(name_tok).ok_or_else(|| cx.err(loc(name_tok), "expected a table name"))?;
    // `CREATE TABLE out WITH (…)`: a sink whose columns are its INSERT's (Arroyo's form),
    // filled in by `infer_sink_columns`.
    let no_columns = sig
        .get(3)
        .is_some_and(|t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::WITH));
    if !no_columns && !matches!(sig.get(3).map(|t| &t.token), Some(Token::LParen)) {
        return Err(cx.err(
            loc(name_tok),
            format!("expected `(` and the columns of {name}, or WITH (…) for a sink"),
        ));
    }
    let close = if no_columns {
        2
    } else {
        matching_paren(sig, 3).ok_or_else(|| cx.err(at, "unbalanced parentheses"))?
    };
    let column_tokens: &[&TokenWithSpan] = if no_columns { &[] } else { &sig[4..close] };
    let mut columns_sql = Vec::new();
    let mut watermark = None;
    // `col TYPE METADATA FROM 'key' [VIRTUAL]` (Arroyo's and Flink's form): taken out here,
    // sqlparser does not read it.
    let mut metadata_from: Vec<(String, String)> = Vec::new();
    let mut constraint_locs = Vec::new();
    for mut item in split_commas(column_tokens) {
        if matches!(
            word(&item[0]).as_deref(),
            Some("CHECK" | "CONSTRAINT" | "PRIMARY" | "UNIQUE" | "FOREIGN")
        ) {
            constraint_locs.push(loc(&item[0]));
        }
        if word(&item[0]).as_deref() == Some("WATERMARK") {
            watermark = Some(parse_watermark(cx, &item)?);
            continue;
        }
        if let Some(i) = (2..item.len()).find(|&i| {
            word(&item[i]).as_deref() == Some("METADATA")
                && !matches!(item.get(i + 1).map(|t| &t.token), Some(Token::LParen))
        }) {
            let col = ident(&item[0]).unwrap_or_default();
            let mut end = i + 1;
            let key = if word(item.get(end).unwrap_or(&item[i])).as_deref() == Some("FROM") {
                match item.get(end + 1).map(|t| &t.token) {
                    Some(Token::SingleQuotedString(k)) if !k.is_empty() => {
                        end += 2;
                        k.clone()
                    }
                    _ => {
                        return Err(cx.err(
                            loc(&item[i]),
                            format!("column {name}.{col}: write METADATA FROM 'key', e.g. METADATA FROM 'offset_id'"),
                        ));
                    }
                }
            } else {
                col.clone()
            };
            if item.get(end).and_then(word).as_deref() == Some("VIRTUAL") {
                end += 1;
            }
            item.drain(i..end);
            metadata_from.push((col, key));
        }
        columns_sql.push(
            item.iter()
                .map(|t| t.token.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    let ddl = format!("CREATE TABLE t ({})", columns_sql.join(", "));
    let parsed = Parser::parse_sql(&GenericDialect {}, &ddl)
        .map_err(|e| cx.err(loc(sig[3]), format!("columns of {name}: {e}")))?;
    let Some(Statement::CreateTable(ct)) = parsed.into_iter().next() else {
        return Err(cx.err(at, format!("columns of {name} do not parse")));
    };
    let mut columns = Vec::new();
    let mut checks = Vec::new();
    for c in &ct.columns {
        let col_at = column_loc(column_tokens, &c.name.value).unwrap_or(at);
        let data_type = arrow_type(&c.data_type).ok_or_else(|| {
            cx.err(
                col_at,
                format!(
                    "column {}.{}: type {} is not supported; use TEXT, BIGINT, BIGINT UNSIGNED, \
                     DOUBLE, REAL, BOOLEAN, TIMESTAMP or STRUCT<field TYPE, …>",
                    name, c.name, c.data_type
                ),
            )
        })?;
        let nullable = !c
            .options
            .iter()
            .any(|o| matches!(o.option, ColumnOption::NotNull));
        let col_name = if c.name.quote_style.is_some() {
            c.name.value.clone()
        } else {
            c.name.value.to_ascii_lowercase()
        };
        let mut metadata = metadata_from
            .iter()
            .find(|(n, _)| *n == col_name)
            .map(|(_, k)| k.clone());
        for o in &c.options {
            if let ColumnOption::Check(check) = &o.option {
                let expr = &check.expr;
                checks.push(CheckDef {
                    name: o
                        .name
                        .as_ref()
                        .or(check.name.as_ref())
                        .map(|n| n.value.clone())
                        .unwrap_or_else(|| format!("{name}_{col_name}_check")),
                    expr: expr.to_string(),
                    loc: col_at,
                });
            }
            if let ColumnOption::Generated {
                generation_expr, ..
            } = &o.option
            {
                let expr = generation_expr
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let key = metadata_key(&expr).ok_or_else(|| {
                    cx.err(
                        col_at,
                        format!(
                            "column {name}.{col_name}: GENERATED ALWAYS AS ({expr}) is not supported; \
                             only metadata('key') columns are, e.g. \
                             offset BIGINT GENERATED ALWAYS AS (metadata('offset_id')) STORED"
                        ),
                    )
                })?;
                metadata = Some(key);
            }
        }
        if columns.iter().any(|c: &Column| c.name == col_name) {
            return Err(cx.err(
                col_at,
                format!("column {name}.{col_name} is declared twice"),
            ));
        }
        columns.push(Column {
            name: col_name,
            data_type,
            nullable,
            metadata,
            loc: col_at,
        });
    }
    let mut unnamed = 0;
    for (i, c) in ct.constraints.iter().enumerate() {
        let check_at = constraint_locs.get(i).copied().unwrap_or(at);
        let TableConstraint::Check(check) = c else {
            return Err(cx.err(
                check_at,
                format!(
                    "table {name}: constraint `{c}` is not supported; a table takes CHECK constraints"
                ),
            ));
        };
        let (cname, expr) = (&check.name, &check.expr);
        let cname = match cname {
            Some(n) => n.value.clone(),
            None => {
                unnamed += 1;
                if unnamed == 1 {
                    format!("{name}_check")
                } else {
                    format!("{name}_check{}", unnamed - 1)
                }
            }
        };
        checks.push(CheckDef {
            name: cname,
            expr: expr.to_string(),
            loc: check_at,
        });
    }
    if let Some(w) = &watermark {
        match columns.iter().find(|c| c.name == w.column) {
            None => {
                return Err(cx.err(
                    w.loc,
                    format!("WATERMARK FOR {}: {name} has no such column", w.column),
                ));
            }
            Some(c) if !matches!(c.data_type, DataType::Timestamp(..)) => {
                return Err(cx.err(
                    w.loc,
                    format!(
                        "WATERMARK FOR {}: the event time must be a TIMESTAMP column, not {}",
                        w.column, c.data_type
                    ),
                ));
            }
            Some(_) => {}
        }
    }

    // WITH ( key = value, ... )
    let rest = &sig[close + 1..];
    let mut options = Vec::new();
    if !rest.is_empty() {
        let with_ok = rest
            .first()
            .is_some_and(|t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::WITH))
            && matches!(rest.get(1).map(|t| &t.token), Some(Token::LParen));
        if !with_ok {
            return Err(cx.err(
                loc(rest[0]),
                format!("expected WITH (...) after the columns of {name}"),
            ));
        }
        let end = matching_paren(rest, 1)
            .ok_or_else(|| cx.err(loc(rest[1]), "unbalanced parentheses in WITH"))?;
        if let Some(extra) = rest.get(end + 1) {
            return Err(cx.err(loc(extra), "unexpected text after WITH (...)"));
        }
        for item in split_commas(&rest[2..end]) {
            let at = loc(&item[0]);
            let key = match &item[0].token {
                Token::Word(w) => w.value.clone(),
                Token::SingleQuotedString(s) => s.clone(),
                _ => return Err(cx.err(at, "expected an option name")),
            };
            if !matches!(item.get(1).map(|t| &t.token), Some(Token::Eq)) || item.len() != 3 {
                return Err(cx.err(at, format!("option {key}: write {key} = 'value'")));
            }
            let value = match &item[2].token {
                Token::SingleQuotedString(s) => OptionValue::Text(s.clone()),
                Token::Number(n, _) => OptionValue::Number(n.clone()),
                Token::Word(w) if w.value.eq_ignore_ascii_case("true") => OptionValue::Bool(true),
                Token::Word(w) if w.value.eq_ignore_ascii_case("false") => OptionValue::Bool(false),
                other => {
                    return Err(cx.err(
                        loc(&item[2]),
                        format!(
                            "option {key}: value {other} must be a 'string', a number or true/false"
                        ),
                    ));
                }
            };
            if options.iter().any(|o: &TableOption| o.key == key) {
                return Err(cx.err(at, format!("option {key} is given twice")));
            }
            options.push(TableOption {
                key,
                value,
                loc: at,
            });
        }
    }
    let connector = options
        .iter()
        .find(|o| o.key == "connector")
        .map(|o| o.value.as_text())
        .ok_or_else(|| {
            cx.err(
                at,
                format!("table {name} has no connector: add WITH (connector = '…', …)"),
            )
        })?;
    Ok(TableDef {
        name,
        columns,
        watermark,
        checks,
        connector,
        options,
        loc: at,
    })
}

/// The key of a `metadata('key')` expression, as sqlparser prints it.
fn metadata_key(expr: &str) -> Option<String> {
    let e = expr.trim();
    let open = e.find('(')?;
    if !e[..open].trim().eq_ignore_ascii_case("metadata") {
        return None;
    }
    let inner = e[open + 1..].strip_suffix(')')?.trim();
    let key = inner.strip_prefix('\'')?.strip_suffix('\'')?;
    (!key.is_empty() && !key.contains('\'')).then(|| key.to_string())
}

/// Where the column named `name` is declared (its first word token), for error positions.
fn column_loc(sig: &[&TokenWithSpan], name: &str) -> Option<Loc> {
    sig.iter()
        .find(|t| matches!(&t.token, Token::Word(w) if w.value == name))
        .map(|t| loc(t))
}

/// The lateness `WATERMARK FOR col` allows without an `AS` expression: one second, Arroyo's
/// default.
pub const DEFAULT_WATERMARK_DELAY_MICROS: i64 = 1_000_000;

/// `WATERMARK FOR col AS col - INTERVAL '5' SECOND` (or `AS (col - INTERVAL '5 seconds')`,
/// `AS col` for no delay, or no `AS` for Arroyo's default of one second).
fn parse_watermark(cx: &Ctx, item: &[TokenWithSpan]) -> Result<Watermark, SqlError> {
    let at = loc(&item[0]);
    let bad = || {
        cx.err(
            at,
            "write WATERMARK FOR ts AS ts - INTERVAL '5' SECOND (or AS ts for no delay)",
        )
    };
    if word(item.get(1).ok_or_else(bad)?).as_deref() != Some("FOR") {
        return Err(bad());
    }
    let column = ident(item.get(2).ok_or_else(bad)?).ok_or_else(bad)?;
    if item.len() == 3 {
        return Ok(Watermark {
            column,
            delay_micros: DEFAULT_WATERMARK_DELAY_MICROS,
            loc: at,
        });
    }
    if word(item.get(3).ok_or_else(bad)?).as_deref() != Some("AS") {
        return Err(bad());
    }
    // Arroyo writes the expression in parentheses too: `AS (ts - INTERVAL '1 minute')`.
    let mut expr = &item[4..];
    if let (Some(first), Some(last)) = (expr.first(), expr.last())
        && matches!(first.token, Token::LParen)
        && matches!(last.token, Token::RParen)
        && expr.len() > 2
    {
        expr = &expr[1..expr.len() - 1];
    }
    let expr_col = ident(expr.first().ok_or_else(bad)?).ok_or_else(bad)?;
    if expr_col != column {
        return Err(cx.err(
            loc(&expr[0]),
            format!("the watermark must be computed from {column}, not {expr_col}"),
        ));
    }
    let delay_micros = match expr.len() {
        1 => 0,
        4 | 5
            if matches!(expr[1].token, Token::Minus)
                && word(&expr[2]).as_deref() == Some("INTERVAL") =>
        {
            let Token::SingleQuotedString(value) = &expr[3].token else {
                return Err(bad());
            };
            let unit = expr.get(4).and_then(word);
            parse_interval_micros(value, unit.as_deref()).map_err(|m| cx.err(loc(&expr[2]), m))?
        }
        _ => return Err(bad()),
    };
    Ok(Watermark {
        column,
        delay_micros,
        loc: at,
    })
}
