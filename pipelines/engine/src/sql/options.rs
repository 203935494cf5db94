//! Typed reads of a table's `WITH (...)` options. Each connector declares its options once, as
//! `const` [`OptionSpec`]s listed in its [`super::ConnectorSpec`], and reads them back through
//! the same constants — so a key cannot be spelt one way where it is checked and another where
//! it is read — into its own options struct, parsed once at open. Every failure is an
//! [`OptionError`] naming the table, the option and where it is written.

use std::str::FromStr;
use std::time::Duration;

use super::{Loc, OptionKind, OptionSpec, TableDef, TableOption};

/// An option whose value cannot be used: which table, which option, where, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("option {key} (line {}, column {}): {message}", loc.line, loc.column)]
pub struct OptionError {
    pub table: String,
    pub key: String,
    pub loc: Loc,
    pub message: String,
}

impl OptionError {
    /// `option key: why`, without the position (for messages that give it themselves).
    pub fn reason(&self) -> String {
        format!("option {}: {}", self.key, self.message)
    }

    /// As a connector's DDL check reports it: where, and why.
    pub fn located(self) -> (Loc, String) {
        (self.loc, self.reason())
    }
}

impl TableDef {
    fn get(&self, spec: &OptionSpec) -> Option<&TableOption> {
        self.option(spec.key)
    }

    /// Where `spec` is written (the table, when it is absent).
    pub fn option_loc(&self, spec: &OptionSpec) -> Loc {
        self.get(spec).map_or(self.loc, |o| o.loc)
    }

    /// An error about `spec`'s value (at the option, or at the table when it is absent).
    pub fn option_error(&self, spec: &OptionSpec, message: impl Into<String>) -> OptionError {
        OptionError {
            table: self.name.clone(),
            key: spec.key.to_string(),
            loc: self.option_loc(spec),
            message: message.into(),
        }
    }

    /// A text option as written (a number or bool as its text).
    pub fn text(&self, spec: &OptionSpec) -> Option<String> {
        self.get(spec).map(|o| o.value.as_text())
    }

    /// A text option that must be given.
    pub fn required_text(&self, spec: &OptionSpec) -> Result<String, OptionError> {
        self.text(spec)
            .ok_or_else(|| self.option_error(spec, format!("is required ({})", spec.help)))
    }

    /// A whole-number option, as any integer type (a value out of its range is an error).
    pub fn int<T: FromStr>(&self, spec: &OptionSpec) -> Result<Option<T>, OptionError> {
        self.parsed(spec, "a whole number in range", |s| s.parse().ok())
    }

    /// A whole-number option that must be above zero (counts, sizes).
    pub fn positive<T: FromStr + PartialOrd + Default>(
        &self,
        spec: &OptionSpec,
    ) -> Result<Option<T>, OptionError> {
        self.parsed(spec, "a positive whole number", |s| {
            s.parse().ok().filter(|n| *n > T::default())
        })
    }

    /// A finite number.
    pub fn number(&self, spec: &OptionSpec) -> Result<Option<f64>, OptionError> {
        self.parsed(spec, "a finite number", |s| {
            s.parse::<f64>().ok().filter(|n| n.is_finite())
        })
    }

    /// `true` or `false`.
    pub fn flag(&self, spec: &OptionSpec) -> Result<Option<bool>, OptionError> {
        self.parsed(spec, "true or false", |s| match s {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }

    /// One of the values a [`OptionKind::OneOf`] option allows.
    pub fn choice(&self, spec: &OptionSpec) -> Result<Option<&'static str>, OptionError> {
        let OptionKind::OneOf(allowed) = spec.kind else {
            return Err(self.option_error(spec, "is not a choice (a connector bug)"));
        };
        let want = format!("one of {}", allowed.join(", "));
        self.parsed(spec, &want, |s| allowed.iter().copied().find(|a| *a == s))
    }

    /// A length of time such as `500ms`, `2s` or `1m`.
    pub fn duration(&self, spec: &OptionSpec) -> Result<Option<Duration>, OptionError> {
        let Some(v) = self.text(spec) else {
            return Ok(None);
        };
        humantime::parse_duration(&v)
            .map(Some)
            .map_err(|e| self.option_error(spec, format!("'{v}': {e} (e.g. '500ms', '2s')")))
    }

    /// `key=value` pairs separated by commas or semicolons (Kafka's `client_configs`,
    /// Delta's `storage_options`); none when the option is absent.
    pub fn key_values(&self, spec: &OptionSpec) -> Result<Vec<(String, String)>, OptionError> {
        let Some(text) = self.text(spec) else {
            return Ok(Vec::new());
        };
        text.split([',', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| self.option_error(spec, format!("{pair:?} is not key=value")))?;
                Ok((k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    }

    fn parsed<T>(
        &self,
        spec: &OptionSpec,
        want: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, OptionError> {
        let Some(v) = self.text(spec) else {
            return Ok(None);
        };
        parse(v.trim())
            .map(Some)
            .ok_or_else(|| self.option_error(spec, format!("{v:?} is not {want}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::OptionValue;

    const ROWS: OptionSpec = OptionSpec {
        key: "batch_rows",
        kind: OptionKind::Integer,
        required: false,
        help: "rows per batch",
    };
    const MODE: OptionSpec = OptionSpec {
        key: "mode",
        kind: OptionKind::OneOf(&["a", "b"]),
        required: false,
        help: "a or b",
    };
    const PAIRS: OptionSpec = OptionSpec {
        key: "pairs",
        kind: OptionKind::Text,
        required: false,
        help: "k=v",
    };

    fn table(options: &[(&str, &str)]) -> TableDef {
        TableDef {
            name: "t".into(),
            columns: Vec::new(),
            watermark: None,
            checks: Vec::new(),
            connector: "x".into(),
            options: options
                .iter()
                .enumerate()
                .map(|(i, (k, v))| TableOption {
                    key: k.to_string(),
                    value: OptionValue::Text(v.to_string()),
                    loc: Loc {
                        line: 3 + i as u64,
                        column: 5,
                    },
                })
                .collect(),
            loc: Loc { line: 1, column: 1 },
        }
    }

    #[test]
    fn typed_reads_and_positioned_errors() {
        let t = table(&[("batch_rows", "0"), ("mode", "c"), ("pairs", "a=1; b = 2")]);
        assert_eq!(t.int::<u64>(&ROWS), Ok(Some(0)));
        let e = t.positive::<usize>(&ROWS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "option batch_rows (line 3, column 5): \"0\" is not a positive whole number"
        );
        let e = t.choice(&MODE).unwrap_err();
        assert_eq!(
            (e.loc.line, e.message.as_str()),
            (4, "\"c\" is not one of a, b")
        );
        assert_eq!(
            t.key_values(&PAIRS).unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        let none = table(&[]);
        assert_eq!(none.int::<u64>(&ROWS), Ok(None));
        assert_eq!(none.required_text(&PAIRS).unwrap_err().loc.line, 1);
        assert_eq!(
            table(&[("batch_rows", "-1")])
                .int::<u64>(&ROWS)
                .unwrap_err()
                .key,
            "batch_rows"
        );
    }
}
