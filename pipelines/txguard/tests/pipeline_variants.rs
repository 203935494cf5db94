//! The default pipeline's variants (`pipeline_postgres.sql`, `pipeline_kafka.sql`) compute
//! exactly what `pipeline.sql` does: the same views and the same queries into the same
//! tables with the same columns; only connectors (and the Kafka variant's extra alerts sink)
//! differ.

use std::path::Path;

use txguard_engine::sql::{Pipeline, parse};

fn load(name: &str) -> Pipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sql")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("read");
    parse(&path, &text).expect("parse")
}

#[test]
fn variants_share_the_default_pipelines_views_queries_and_columns() {
    let base = load("pipeline.sql");
    for name in ["pipeline_postgres.sql", "pipeline_kafka.sql"] {
        let v = load(name);
        let views = |p: &Pipeline| {
            p.views
                .iter()
                .map(|v| (v.name.clone(), v.sql.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            views(&v),
            views(&base),
            "{name}: views differ from pipeline.sql"
        );
        for ins in &base.inserts {
            let other = v
                .inserts
                .iter()
                .find(|i| i.table == ins.table)
                .unwrap_or_else(|| panic!("{name}: no INSERT INTO {}", ins.table));
            assert_eq!(other.query, ins.query, "{name}: INSERT INTO {}", ins.table);
        }
        for t in &base.tables {
            let other = v
                .table(&t.name)
                .unwrap_or_else(|| panic!("{name}: no table {}", t.name));
            assert_eq!(other.columns, t.columns, "{name}: columns of {}", t.name);
            let wm = |t: &txguard_engine::sql::TableDef| {
                t.watermark
                    .as_ref()
                    .map(|w| (w.column.clone(), w.delay_micros))
            };
            assert_eq!(wm(other), wm(t), "{name}: watermark of {}", t.name);
        }
    }
}

/// The champion / challenger example computes the default pipeline's features: its
/// `history` and `features` views are the default pipeline's, word for word.
#[test]
fn the_champion_challenger_example_has_the_default_features() {
    let base = load("pipeline.sql");
    let example = load("examples/champion_challenger.sql");
    for name in ["history", "features"] {
        let view = |p: &Pipeline| {
            p.views
                .iter()
                .find(|v| v.name == name)
                .map(|v| v.sql.clone())
                .unwrap_or_else(|| panic!("no view {name}"))
        };
        assert_eq!(view(&example), view(&base), "view {name}");
    }
    let columns = |p: &Pipeline| p.table("transactions").map(|t| t.columns.clone());
    assert_eq!(columns(&example), columns(&base), "table transactions");
}
