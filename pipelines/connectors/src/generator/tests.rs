//! Generator tests: determinism, the event contract, every fraud pattern, bounded disorder.

use std::collections::HashSet;

use super::*;
use txguard_engine::decode::Decoder;

fn take(cfg: GeneratorConfig, n: usize) -> Vec<Generated> {
    Generator::new(cfg).expect("config").take(n).collect()
}

#[test]
fn deterministic_for_a_seed() {
    let cfg = GeneratorConfig {
        users: 500,
        ..Default::default()
    };
    let a = take(cfg.clone(), 5000);
    let b = take(cfg.clone(), 5000);
    assert_eq!(a, b);
    let c = take(GeneratorConfig { seed: 7, ..cfg }, 5000);
    assert_ne!(a, c);
}

#[test]
fn count_bounds_the_stream() {
    let g = Generator::new(GeneratorConfig {
        count: Some(1234),
        users: 50,
        ..Default::default()
    })
    .expect("config");
    assert_eq!(g.count(), 1234);
}

#[test]
fn events_follow_the_contract_and_decode() {
    let events = take(
        GeneratorConfig {
            users: 300,
            ..Default::default()
        },
        20_000,
    );
    let mut d = Decoder::new(super::transaction_schema(), &Default::default()).expect("decoder");
    let mut ids = HashSet::new();
    for e in &events {
        let json = serde_json::to_vec(&e.transaction).expect("json");
        assert!(
            d.push(&json, "generator", &e.transaction.transaction_id),
            "{e:?}"
        );
        assert!(
            ids.insert(e.transaction.transaction_id.clone()),
            "ids are unique"
        );
        assert!(e.transaction.amount > 0.0);
        assert_eq!(e.transaction.is_fraud, Some(e.pattern.is_some()));
        assert_eq!(
            e.transaction.fraud_pattern.as_deref(),
            e.pattern.map(FraudPattern::name)
        );
    }
    let (rows, dead) = d.flush().expect("flush");
    assert_eq!((rows.num_rows(), dead.num_rows()), (events.len(), 0));
    // The pattern column of the decoded rows equals the label's pattern, row by row.
    let patterns = rows
        .column_by_name("fraud_pattern")
        .expect("fraud_pattern")
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .expect("text")
        .clone();
    let mut names = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        let got = (!arrow::array::Array::is_null(&patterns, i)).then(|| patterns.value(i));
        assert_eq!(got, e.pattern.map(FraudPattern::name));
        names.extend(got);
    }
    assert_eq!(names.len(), 5, "every pattern is named: {names:?}");
}

#[test]
fn every_fraud_pattern_appears_and_looks_like_itself() {
    let events = take(
        GeneratorConfig {
            users: 2000,
            fraud_rate: 0.01,
            events_per_second: 5.0,
            ..Default::default()
        },
        200_000,
    );
    let mut seen = HashSet::new();
    let fraud = events.iter().filter(|e| e.pattern.is_some()).count();
    assert!(
        (2_000..40_000).contains(&fraud),
        "{fraud} fraud events in 200k at fraud_rate 0.01"
    );
    for e in &events {
        let t = &e.transaction;
        match e.pattern {
            Some(FraudPattern::CardTesting) => {
                assert!(t.amount < 3.01, "card testing uses tiny amounts: {t:?}");
                assert_eq!(t.channel.as_deref(), Some("online"));
            }
            Some(FraudPattern::OddHourCategory) => {
                let hour = e.ts_micros.rem_euclid(86_400_000_000) / 3_600_000_000;
                assert!((1..5).contains(&hour), "odd hour: {hour}");
                let c = t.category.as_deref().unwrap_or_default();
                assert!(["electronics", "jewelry", "gift_cards", "crypto"].contains(&c));
            }
            _ => {}
        }
        if let Some(p) = e.pattern {
            seen.insert(p);
        }
    }
    assert_eq!(seen.len(), 5, "all five patterns: {seen:?}");
    // Impossible travel: the far-away purchase comes minutes after one at home, >= 3000 km away.
    let travel = events
        .iter()
        .find(|e| e.pattern == Some(FraudPattern::ImpossibleTravel))
        .expect("a travel event");
    let prev = events
        .iter()
        .filter(|e| {
            e.transaction.user_id == travel.transaction.user_id && e.ts_micros < travel.ts_micros
        })
        .max_by_key(|e| e.ts_micros)
        .expect("a previous purchase");
    let km = haversine_km(
        prev.transaction.lat.unwrap_or_default(),
        prev.transaction.lon.unwrap_or_default(),
        travel.transaction.lat.unwrap_or_default(),
        travel.transaction.lon.unwrap_or_default(),
    );
    let hours = (travel.ts_micros - prev.ts_micros) as f64 / 3.6e9;
    assert!(km >= 2900.0 && hours <= 0.6, "{km} km in {hours} h");
}

#[test]
fn disorder_is_bounded_and_about_the_configured_share() {
    let cfg = GeneratorConfig {
        users: 1000,
        out_of_order: 0.05,
        max_delay_ms: 2000,
        events_per_second: 500.0,
        ..Default::default()
    };
    let events = take(cfg, 50_000);
    let mut max_ts = events[0].ts_micros;
    let mut late = 0;
    for e in &events {
        assert!(
            e.ts_micros >= max_ts - 2_000_000,
            "an event is later than the bound"
        );
        if e.ts_micros < max_ts {
            late += 1;
        }
        max_ts = max_ts.max(e.ts_micros);
    }
    // Roughly the delayed share (a delayed event is out of order only if others passed it).
    assert!(
        (500..=3_000).contains(&late),
        "{late} out-of-order events of 50k"
    );
    let in_order = take(
        GeneratorConfig {
            users: 100,
            out_of_order: 0.0,
            ..Default::default()
        },
        10_000,
    );
    assert!(
        in_order
            .windows(2)
            .all(|w| w[0].ts_micros <= w[1].ts_micros)
    );
}

#[test]
fn bad_options_are_named() {
    let e = Generator::new(GeneratorConfig {
        fraud_rate: 2.0,
        ..Default::default()
    })
    .err()
    .expect("invalid");
    assert_eq!(
        e.to_string(),
        "generator option fraud_rate: 2 is not between 0 and 1"
    );
    let e = Generator::new(GeneratorConfig {
        users: 0,
        ..Default::default()
    })
    .err()
    .expect("invalid");
    assert!(e.to_string().contains("users"));
}

/// The Arrow batches the source makes carry the same labels and patterns as the events.
#[test]
fn batches_name_each_frauds_pattern() {
    let cfg = GeneratorConfig {
        users: 300,
        ..Default::default()
    };
    let events = take(cfg.clone(), 20_000);
    let mut g = Generator::new(cfg).expect("config");
    let batch = g.next_batch(20_000).expect("a batch").expect("arrow");
    let col = |name: &str| batch.column_by_name(name).expect(name).clone();
    let fraud = col("is_fraud");
    let fraud = fraud
        .as_any()
        .downcast_ref::<arrow::array::BooleanArray>()
        .expect("bool");
    let patterns = col("fraud_pattern");
    let patterns = patterns
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .expect("text");
    assert_eq!(batch.num_rows(), events.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(fraud.value(i), e.pattern.is_some());
        let got = (!arrow::array::Array::is_null(patterns, i)).then(|| patterns.value(i));
        assert_eq!(got, e.pattern.map(FraudPattern::name), "row {i}");
    }
}
