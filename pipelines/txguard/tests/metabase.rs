//! `txguard dashboards metabase` against a local HTTP server that plays Metabase's documented
//! REST API (session login, databases, collections, collection items, cards, dashboards with
//! `dashcards`) and rejects calls or payloads the real API would not accept. No live
//! Metabase runs here; this checks the exact calls, their payloads, and that a second run
//! updates in place instead of duplicating.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{repo, txguard_with};
use serde_json::{Value, json};

const SESSION: &str = "3f1d7c4e-session";
const SETUP_TOKEN: &str = "0c1e-setup-token";

#[derive(Default)]
struct Fake {
    calls: Vec<String>,
    /// email → password; empty until `POST /api/setup`.
    users: BTreeMap<String, String>,
    databases: BTreeMap<i64, Value>,
    collections: BTreeMap<i64, Value>,
    cards: BTreeMap<i64, Value>,
    dashboards: BTreeMap<i64, Value>,
    next_id: i64,
}

impl Fake {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

type Shared = Arc<Mutex<Fake>>;

fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "message": msg.into() })),
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    Json(v).into_response()
}

fn check_card(f: &Fake, b: &Value) -> Result<(), String> {
    for k in ["name", "display"] {
        if !b[k].is_string() {
            return Err(format!("card needs {k}"));
        }
    }
    if !b["visualization_settings"].is_object() {
        return Err("card needs visualization_settings (an object)".into());
    }
    let q = &b["dataset_query"];
    if q["type"] != "native" || q["native"]["query"].as_str().is_none_or(|s| s.is_empty()) {
        return Err(format!("dataset_query must be native with a query: {q}"));
    }
    if !q["database"]
        .as_i64()
        .is_some_and(|d| f.databases.contains_key(&d))
    {
        return Err(format!(
            "dataset_query.database {} does not exist",
            q["database"]
        ));
    }
    if !b["collection_id"]
        .as_i64()
        .is_some_and(|c| f.collections.contains_key(&c))
    {
        return Err("collection_id does not exist".into());
    }
    Ok(())
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut f = state.lock().expect("lock");
    let path = uri.path().to_string();
    f.calls.push(format!("{method} {path}"));
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return bad(format!("body is not JSON: {e}")),
        }
    };
    if path == "/api/session/properties" && method == Method::GET {
        return ok(json!({ "setup-token": SETUP_TOKEN, "has-user-setup": !f.users.is_empty() }));
    }
    if path == "/api/setup" && method == Method::POST {
        let u = &body["user"];
        if !f.users.is_empty() || body["token"] != SETUP_TOKEN {
            return (
                StatusCode::FORBIDDEN,
                "The /api/setup route can only be used to create the first user",
            )
                .into_response();
        }
        for k in ["first_name", "last_name", "email", "password"] {
            if !u[k].is_string() {
                return bad(format!("setup: user.{k} is required"));
            }
        }
        if !body["prefs"]["site_name"].is_string() {
            return bad("setup: prefs.site_name is required");
        }
        let (email, pw) = (
            u["email"].as_str().unwrap_or(""),
            u["password"].as_str().unwrap_or(""),
        );
        f.users.insert(email.to_string(), pw.to_string());
        return ok(json!({ "id": SESSION }));
    }
    if path == "/api/session" && method == Method::POST {
        let known = body["username"]
            .as_str()
            .and_then(|u| f.users.get(u))
            .is_some_and(|p| body["password"] == p.as_str());
        return if known {
            ok(json!({ "id": SESSION }))
        } else {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"errors": {"password": "did not match stored password"}})),
            )
                .into_response()
        };
    }
    if headers
        .get("x-metabase-session")
        .and_then(|v| v.to_str().ok())
        != Some(SESSION)
    {
        return (StatusCode::UNAUTHORIZED, "Unauthenticated").into_response();
    }
    let parts: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    let id = |i: usize| parts.get(i).and_then(|s| s.parse::<i64>().ok());
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["database"]) => {
            let data: Vec<Value> = f.databases.values().cloned().collect();
            ok(json!({ "data": data, "total": data.len() }))
        }
        ("POST", ["database"]) => {
            let d = &body["details"];
            if body["engine"] != "postgres" || !body["name"].is_string() {
                return bad("database needs engine and name");
            }
            if !(d["host"].is_string()
                && d["port"].is_u64()
                && d["dbname"].is_string()
                && d["user"].is_string())
            {
                return bad(format!("details need host, port, dbname, user: {d}"));
            }
            let id = f.id();
            let mut v = body.clone();
            v["id"] = json!(id);
            f.databases.insert(id, v.clone());
            ok(v)
        }
        ("PUT", ["database", _]) => match id(1).filter(|i| f.databases.contains_key(i)) {
            Some(i) => {
                if !body["details"].is_object() {
                    return bad("details missing");
                }
                let v = f.databases.get_mut(&i).expect("db");
                v["details"] = body["details"].clone();
                ok(v.clone())
            }
            None => (StatusCode::NOT_FOUND, "Not found.").into_response(),
        },
        ("POST", ["database", _, "sync_schema"]) => {
            match id(1).filter(|i| f.databases.contains_key(i)) {
                Some(_) => ok(json!({ "status": "ok" })),
                None => (StatusCode::NOT_FOUND, "Not found.").into_response(),
            }
        }
        ("GET", ["collection"]) => ok(Value::Array(f.collections.values().cloned().collect())),
        ("POST", ["collection"]) => {
            if !body["name"].is_string() {
                return bad("collection needs a name");
            }
            let id = f.id();
            let v = json!({ "id": id, "name": body["name"], "personal_owner_id": null, "archived": false });
            f.collections.insert(id, v.clone());
            ok(v)
        }
        ("GET", ["collection", _, "items"]) => {
            let Some(c) = id(1).filter(|i| f.collections.contains_key(i)) else {
                return (StatusCode::NOT_FOUND, "Not found.").into_response();
            };
            let q = uri.query().unwrap_or("");
            if !(q.contains("models=card") && q.contains("models=dashboard")) {
                return bad(format!("expected models=card&models=dashboard, got {q}"));
            }
            let mut data = Vec::new();
            for (model, map) in [("card", &f.cards), ("dashboard", &f.dashboards)] {
                for v in map.values().filter(|v| v["collection_id"] == json!(c)) {
                    data.push(json!({ "id": v["id"], "name": v["name"], "model": model, "archived": v["archived"] }));
                }
            }
            ok(json!({ "data": data, "total": data.len() }))
        }
        ("POST", ["card"]) => {
            if let Err(e) = check_card(&f, &body) {
                return bad(e);
            }
            let id = f.id();
            let mut v = body.clone();
            v["id"] = json!(id);
            v["archived"] = json!(false);
            f.cards.insert(id, v.clone());
            ok(v)
        }
        ("PUT", ["card", _]) => {
            let Some(i) = id(1).filter(|i| f.cards.contains_key(i)) else {
                return (StatusCode::NOT_FOUND, "Not found.").into_response();
            };
            if let Err(e) = check_card(&f, &body) {
                return bad(e);
            }
            let mut v = body.clone();
            v["id"] = json!(i);
            v["archived"] = json!(false);
            f.cards.insert(i, v.clone());
            ok(v)
        }
        ("POST", ["dashboard"]) => {
            if !body["name"].is_string()
                || !body["collection_id"]
                    .as_i64()
                    .is_some_and(|c| f.collections.contains_key(&c))
            {
                return bad("dashboard needs a name and an existing collection_id");
            }
            let id = f.id();
            let v = json!({ "id": id, "name": body["name"], "collection_id": body["collection_id"],
                            "archived": false, "dashcards": [] });
            f.dashboards.insert(id, v.clone());
            ok(v)
        }
        ("GET", ["dashboard", _]) => match id(1).and_then(|i| f.dashboards.get(&i)) {
            Some(v) => ok(v.clone()),
            None => (StatusCode::NOT_FOUND, "Not found.").into_response(),
        },
        ("PUT", ["dashboard", _]) => {
            let Some(i) = id(1).filter(|i| f.dashboards.contains_key(i)) else {
                return (StatusCode::NOT_FOUND, "Not found.").into_response();
            };
            let Some(cards) = body["dashcards"].as_array() else {
                return bad("dashcards must be an array");
            };
            let existing: Vec<i64> = f.dashboards[&i]["dashcards"]
                .as_array()
                .expect("dashcards")
                .iter()
                .filter_map(|d| d["id"].as_i64())
                .collect();
            let mut out = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for d in cards {
                let Some(dc_id) = d["id"].as_i64() else {
                    return bad("every dashcard needs an id (negative for new ones)");
                };
                if !seen.insert(dc_id) || (dc_id > 0 && !existing.contains(&dc_id)) {
                    return bad(format!(
                        "dashcard id {dc_id} is not on this dashboard or repeats"
                    ));
                }
                if !d["card_id"]
                    .as_i64()
                    .is_some_and(|c| f.cards.contains_key(&c))
                {
                    return bad(format!("card_id {} does not exist", d["card_id"]));
                }
                for k in ["row", "col", "size_x", "size_y"] {
                    if !d[k].is_u64() {
                        return bad(format!("dashcard needs {k}"));
                    }
                }
                let mut v = d.clone();
                if dc_id < 0 {
                    v["id"] = json!(f.id());
                }
                out.push(v);
            }
            let dash = f.dashboards.get_mut(&i).expect("dashboard");
            dash["dashcards"] = Value::Array(out);
            dash["name"] = body["name"].clone();
            ok(dash.clone())
        }
        _ => (StatusCode::NOT_FOUND, format!("no route {method} {path}")).into_response(),
    }
}

fn serve(rt: &tokio::runtime::Runtime, state: Shared) -> String {
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn provision(url: &str, password: &str) -> (bool, String, String) {
    let dir = repo().join("dashboards/metabase");
    txguard_with(
        &repo(),
        &[
            "dashboards",
            "metabase",
            "--url",
            url,
            "--user",
            "admin@example.com",
            "--password",
            password,
            "--connection",
            "host=postgres port=5432 user=txguard password=pw dbname=txguard",
            "--dir",
            dir.to_str().expect("utf8"),
        ],
        &[],
    )
}

#[test]
fn provisions_metabase_idempotently_with_the_documented_api_calls() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let state: Shared = Arc::default();
    // A same-named personal collection must not be taken for ours.
    state.lock().expect("lock").collections.insert(
        100,
        json!({ "id": 100, "name": "txguard", "personal_owner_id": 1, "archived": false }),
    );
    state.lock().expect("lock").next_id = 100;
    let url = serve(&rt, state.clone());

    // A fresh Metabase: the first run creates the admin user, then everything else.
    let (ok, out, err) = provision(&url, "s3cret");
    assert!(ok, "{err}");
    assert_eq!(
        state
            .lock()
            .expect("lock")
            .users
            .get("admin@example.com")
            .map(String::as_str),
        Some("s3cret")
    );
    let questions = std::fs::read_dir(repo().join("dashboards/metabase/questions"))
        .expect("questions")
        .count();
    let after_first = {
        let f = state.lock().expect("lock");
        assert_eq!(f.databases.len(), 1);
        let db = f.databases.values().next().expect("db");
        assert_eq!(db["details"]["host"], "postgres");
        assert_eq!(db["details"]["password"], "pw");
        assert_eq!(db["name"], "txguard");
        assert_eq!(f.collections.len(), 2);
        assert_eq!(f.cards.len(), questions);
        assert_eq!(f.dashboards.len(), 1);
        let dash = f.dashboards.values().next().expect("dashboard");
        assert_eq!(
            dash["dashcards"].as_array().expect("cards").len(),
            questions
        );
        assert!(out.contains(&format!("/dashboard/{}", dash["id"])), "{out}");
        dash["dashcards"].clone()
    };

    let (ok, _, err) = provision(&url, "wrong");
    assert!(
        !ok && err.contains("logging in") && err.contains("401"),
        "{err}"
    );

    state.lock().expect("lock").calls.clear();
    let (ok, out, err) = provision(&url, "s3cret");
    assert!(ok, "{err}");
    assert!(out.contains(" 0 created"), "{out}");
    let f = state.lock().expect("lock");
    let posts: Vec<&String> = f
        .calls
        .iter()
        .filter(|c| {
            c.starts_with("POST") && !c.ends_with("/api/session") && !c.ends_with("/sync_schema")
        })
        .collect();
    assert!(posts.is_empty(), "a second run creates nothing: {posts:?}");
    assert_eq!(
        f.calls
            .iter()
            .filter(|c| c.starts_with("PUT /api/card/"))
            .count(),
        questions
    );
    assert_eq!(f.databases.len(), 1);
    assert_eq!(f.cards.len(), questions);
    assert_eq!(f.dashboards.len(), 1);
    let dash = f.dashboards.values().next().expect("dashboard");
    assert_eq!(
        dash["dashcards"], after_first,
        "the dashboard's cards keep their ids"
    );
}
