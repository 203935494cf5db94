//! Loading model files: round trip, and the message a user sees for each kind of bad file.

use ndarray::Array2;
use txguard_iforest::{FitParams, Forest, TrainingSet, fit};

fn small_model() -> Forest {
    let x = Array2::from_shape_fn((300, 2), |(i, j)| ((i * 31 + j * 17) % 101) as f64);
    let names = vec!["amount".to_string(), "hour".into()];
    fit(
        TrainingSet {
            x: x.view(),
            features: &names,
            labels: None,
            source: Some("unit test"),
        },
        &FitParams {
            n_estimators: 5,
            ..Default::default()
        },
    )
    .expect("fit")
}

fn load_text(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("m.json");
    std::fs::write(&p, text).expect("write");
    Forest::load(&p).expect_err("must fail").to_string()
}

fn mutate(f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&small_model().to_json()).expect("json");
    f(&mut v);
    load_text(&v.to_string())
}

#[test]
fn round_trip_keeps_scores_and_card() {
    let m = small_model();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("m.json");
    m.save(&p).expect("save");
    let back = Forest::load(&p).expect("load");
    assert_eq!(back.version(), m.version());
    assert_eq!(back.card(), m.card());
    assert_eq!(back.card().data_source.as_deref(), Some("unit test"));
    assert_eq!(back.card().training_rows, Some(300));
    for row in [[1.0, 2.0], [50.0, 50.0], [1e6, -3.0]] {
        assert_eq!(back.score_row(&row), m.score_row(&row));
    }
}

#[test]
fn truncated_file() {
    let text = small_model().to_json();
    let e = load_text(&text[..text.len() / 2]);
    assert!(
        e.contains("not a txguard forest model: the file ends early (truncated?)"),
        "{e}"
    );
    assert!(e.contains("m.json"), "names the file: {e}");
}

#[test]
fn not_json_and_wrong_shape() {
    let e = load_text("hello");
    assert!(e.contains("malformed JSON"), "{e}");
    let e = load_text("{\"format\": \"txguard-iforest\"}");
    assert!(e.contains("missing field"), "{e}");
    let e = mutate(|v| v["trees"][0]["threshold"][0] = "x".into());
    assert!(e.contains("invalid type: string"), "{e}");
}

#[test]
fn inconsistent_content() {
    let e = mutate(|v| v["format"] = "pickle".into());
    assert!(
        e.contains("format is \"pickle\", expected \"txguard-iforest\""),
        "{e}"
    );
    let e = mutate(|v| v["format_version"] = 99.into());
    assert!(e.contains("format_version 99 is not supported"), "{e}");
    let e = mutate(|v| v["features"] = serde_json::json!(["a", "a"]));
    assert!(e.contains("feature \"a\" is listed twice"), "{e}");
    let e = mutate(|v| v["features"] = serde_json::json!(["only_one"]));
    assert!(
        e.contains("splits on feature 1, but the model has 1 features"),
        "{e}"
    );
    let e = mutate(|v| v["trees"] = serde_json::json!([]));
    assert!(e.contains("the model has no trees"), "{e}");
    let e = mutate(|v| {
        let n = v["trees"][2]["children_left"]
            .as_array()
            .map_or(0, Vec::len) as i64;
        v["trees"][2]["children_left"][0] = (n + 5).into();
    });
    assert!(e.contains("tree 2: node 0 points to child"), "{e}");
    let e = mutate(|v| {
        v["trees"][1]["n_node_samples"]
            .as_array_mut()
            .expect("array")
            .pop();
    });
    assert!(e.contains("tree 1: n_node_samples has"), "{e}");
    let e = mutate(|v| v["max_samples"] = 0.into());
    assert!(e.contains("max_samples is 0"), "{e}");
    let e = mutate(|v| v["surprise"] = 1.into());
    assert!(e.contains("unknown field `surprise`"), "{e}");
}

#[test]
fn missing_file() {
    let e = Forest::load("/nonexistent/model.json")
        .expect_err("must fail")
        .to_string();
    assert_eq!(
        e,
        "model file /nonexistent/model.json: No such file or directory (os error 2)"
    );
}

#[test]
fn nan_policy_rows_without_a_score() {
    let m = small_model();
    assert!(m.score_row(&[f64::NAN, 1.0]).is_none());
    assert!(m.score_row(&[f64::INFINITY, 1.0]).is_none());
    assert!(m.score_row(&[1e300, 1.0]).is_none(), "outside f32 range");
    assert!(m.score_row(&[1.0]).is_none(), "wrong arity");
    assert!(m.score_row(&[1.0, 2.0]).is_some());
    let x = [1.0, 2.0, f64::NAN, 2.0, 3.0, 4.0];
    let mut out = [0.0; 3];
    m.score_samples_rows(&x, &mut out).expect("score");
    assert!(!out[0].is_nan() && out[1].is_nan() && !out[2].is_nan());
    let e = m.score_samples_rows(&x[..5], &mut out).expect_err("shape");
    assert!(
        e.to_string()
            .contains("5 values do not form 3 rows of 2 features"),
        "{e}"
    );
    // a validity mask (Arrow nulls) also yields no score
    let a = [1.0, 3.0, 5.0];
    let b = [2.0, 4.0, 6.0];
    let cols = [
        txguard_iforest::FeatureColumn::F64(&a),
        txguard_iforest::FeatureColumn::F64(&b),
    ];
    m.score_samples_columns(&cols, Some(&[true, false, true]), &mut out)
        .expect("score");
    assert!(!out[0].is_nan() && out[1].is_nan() && !out[2].is_nan());
    let e = m
        .score_samples_columns(&cols[..1], None, &mut out)
        .expect_err("arity");
    assert!(
        e.to_string()
            .contains("1 feature columns given, the model expects 2 (amount, hour)"),
        "{e}"
    );
}
