//! docker-compose.yml without Docker (no engine runs here): the file validates against the
//! Compose Specification's schema, start order and health checks are as intended, and every
//! txguard command it runs is accepted by this build (the pipeline one validates with the
//! same overrides). What those commands do is tested in postgres_pipeline.rs and
//! metabase.rs.

mod common;

use std::process::Command;

use common::{repo, txguard, txguard_with};

fn services() -> serde_json::Value {
    let py = std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(py)
        .arg(repo().join("pipelines/txguard/tests/compose/services.py"))
        .arg(repo().join("docker-compose.yml"))
        .output()
        .expect("python3 (run scripts/setup.sh for check-jsonschema)");
    assert!(
        out.status.success(),
        "docker-compose.yml does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `${VAR:-default}` resolved as compose does with VAR unset.
fn interpolate(arg: &str) -> String {
    match arg.split_once("${") {
        Some((head, rest)) => {
            let (var, tail) = rest.split_once('}').expect("closing brace");
            let default = var.split_once(":-").expect("a default").1;
            format!("{head}{default}{tail}")
        }
        None => arg.to_string(),
    }
}

fn command(svc: &serde_json::Value) -> Vec<String> {
    svc["command"]
        .as_array()
        .expect("command is a list")
        .iter()
        .map(|a| interpolate(a.as_str().expect("string")))
        .collect()
}

#[test]
fn compose_file_is_valid_and_runs_commands_this_build_accepts() {
    let s = services();
    for name in [
        "postgres",
        "db-init",
        "pipeline",
        "metabase",
        "dashboards",
        "arroyo",
        "prometheus",
        "grafana",
    ] {
        assert!(s.get(name).is_some(), "service {name} is missing");
    }
    assert_eq!(
        s["prometheus"]["depends_on"],
        serde_json::json!(["pipeline"])
    );
    assert_eq!(
        s["grafana"]["depends_on"],
        serde_json::json!(["prometheus"])
    );
    // Every folder or file bind-mounted from the repository exists.
    for (name, svc) in s.as_object().expect("services") {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().expect("short volume syntax");
            if let Some(path) = v.strip_prefix("./") {
                let path = path.split(':').next().expect("source");
                assert!(
                    repo().join(path).exists(),
                    "{name} mounts ./{path}, which is missing"
                );
            }
        }
    }
    assert!(s["postgres"]["healthcheck"].as_bool().expect("bool"));
    assert!(s["metabase"]["healthcheck"].as_bool().expect("bool"));
    assert!(s["redpanda"]["healthcheck"].as_bool().expect("bool"));
    assert_eq!(s["topics"]["depends_on"], serde_json::json!(["redpanda"]));
    assert_eq!(s["producer"]["depends_on"], serde_json::json!(["topics"]));
    assert_eq!(s["db-init"]["depends_on"], serde_json::json!(["postgres"]));
    assert_eq!(
        s["pipeline"]["depends_on"],
        serde_json::json!(["db-init", "topics"])
    );
    assert_eq!(
        s["dashboards"]["depends_on"],
        serde_json::json!(["db-init", "metabase"])
    );
    assert_eq!(s["arroyo"]["profiles"], serde_json::json!(["arroyo"]));

    let dir = tempfile::tempdir().expect("tempdir");
    let root = repo();
    for (name, svc) in s.as_object().expect("services") {
        if svc["image"] != "txguard:latest" {
            continue;
        }
        assert_eq!(svc["build"], ".", "{name} builds the repo's Dockerfile");
        let args = command(svc);
        if args[0] == "run" {
            // The same pipeline and overrides, planned without running.
            let mut v = vec!["validate".to_string()];
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--set" => {
                        let val = it.next().expect("--set value");
                        v.extend(["--set".to_string(), val.clone()]);
                    }
                    "--ui" => {
                        it.next();
                    }
                    "--quiet" => {}
                    other if other.ends_with(".sql") => {
                        v.push(root.join(other).to_str().expect("utf8").to_string())
                    }
                    other => panic!("{name}: unexpected run argument {other}"),
                }
            }
            v.extend([
                "--model".to_string(),
                root.join("models/default.json")
                    .to_str()
                    .expect("utf8")
                    .to_string(),
            ]);
            let v: Vec<&str> = v.iter().map(String::as_str).collect();
            let (ok, _, err) = txguard(dir.path(), &v);
            assert!(ok, "{name}: {v:?}\n{err}");
        } else {
            // The subcommand exists with these options (`--help` stops after parsing the
            // command path; an unknown option still fails before it).
            let mut v: Vec<&str> = args.iter().map(String::as_str).collect();
            v.push("--help");
            let (ok, _, err) = txguard_with(dir.path(), &v, &[]);
            assert!(ok, "{name}: txguard {v:?}\n{err}");
        }
    }
}
