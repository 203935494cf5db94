//! `txguard dashboards metabase`: provisions Metabase from `dashboards/metabase/` through its
//! REST API: the first admin user on a fresh instance, the Postgres connection, a collection, one native-SQL question per
//! `questions/*.sql` file and the dashboard of `dashboard.json`. Idempotent: objects are
//! found by name (the database among all, the rest inside the collection) and updated in
//! place; the dashboard's cards are replaced as a whole set, reusing the ids of cards that
//! are already on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use txguard_connectors::postgres;

#[derive(Debug, Args)]
pub struct MetabaseArgs {
    /// Metabase's address, e.g. http://localhost:3000.
    #[arg(
        long,
        env = "TXGUARD_METABASE_URL",
        default_value = "http://localhost:3000"
    )]
    pub url: String,
    /// A Metabase admin's email.
    #[arg(long, env = "TXGUARD_METABASE_USER")]
    pub user: String,
    /// Their password.
    #[arg(long, env = "TXGUARD_METABASE_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// The Postgres database as Metabase reaches it (from its own network: in docker
    /// compose, host=postgres), as a postgres:// URL or libpq keywords.
    #[arg(long, env = postgres::CONNECTION_ENV, default_value = postgres::DEFAULT_CONNECTION)]
    pub connection: String,
    /// The folder with dashboard.json and questions/*.sql.
    #[arg(long, default_value = "dashboards/metabase")]
    pub dir: PathBuf,
}

/// `dashboard.json`.
#[derive(Debug, Deserialize)]
struct DashboardFile {
    name: String,
    #[serde(default)]
    description: String,
    collection: String,
    database: String,
    cards: Vec<Placement>,
}

#[derive(Debug, Deserialize)]
struct Placement {
    question: String,
    row: u32,
    col: u32,
    size_x: u32,
    size_y: u32,
}

/// One `questions/<file>.sql`: `-- key: value` header lines, then the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub file: String,
    pub name: String,
    pub description: String,
    pub display: String,
    pub visualization_settings: Value,
    pub sql: String,
}

const DISPLAYS: &[&str] = &[
    "table", "line", "bar", "area", "row", "pie", "scalar", "combo", "scatter", "map",
];

/// Parses a question file, naming the file and line of what is wrong.
pub fn parse_question(file: &str, text: &str) -> Result<Question> {
    let mut meta = BTreeMap::new();
    let mut sql = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let header = sql.is_empty().then(|| line.strip_prefix("-- ")).flatten();
        match header.and_then(|h| h.split_once(": ")) {
            Some((k, v)) => {
                meta.insert(k.trim().to_string(), (v.trim().to_string(), i + 1));
            }
            None if sql.is_empty() && line.trim().is_empty() => {}
            None => sql.push(line),
        }
    }
    let get = |k: &str| meta.get(k).map(|(v, _)| v.clone());
    let name = get("name").ok_or_else(|| anyhow!("{file}: needs a `-- name: …` line"))?;
    let display = get("display").unwrap_or_else(|| "table".into());
    if !DISPLAYS.contains(&display.as_str()) {
        bail!(
            "{file}:{}: display {display:?} is not one of {}",
            meta["display"].1,
            DISPLAYS.join(", ")
        );
    }
    let visualization_settings = match meta.get("visualization_settings") {
        Some((v, line)) => serde_json::from_str(v)
            .with_context(|| format!("{file}:{line}: visualization_settings is not JSON"))?,
        None => json!({}),
    };
    let sql = sql.join("\n").trim().to_string();
    if sql.is_empty() {
        bail!("{file}: has no query after its header");
    }
    Ok(Question {
        file: file.to_string(),
        name,
        description: get("description").unwrap_or_default(),
        display,
        visualization_settings,
        sql,
    })
}

/// The questions of `dir/questions`, by file stem.
pub fn load_questions(dir: &Path) -> Result<BTreeMap<String, Question>> {
    let qdir = dir.join("questions");
    let mut out = BTreeMap::new();
    let entries =
        std::fs::read_dir(&qdir).with_context(|| format!("reading {}", qdir.display()))?;
    for e in entries {
        let path = e?.path();
        if path.extension().and_then(|x| x.to_str()) != Some("sql") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| anyhow!("{}: not a UTF-8 file name", path.display()))?
            .to_string();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        out.insert(stem, parse_question(&path.display().to_string(), &text)?);
    }
    if out.is_empty() {
        bail!("{}: no *.sql questions", qdir.display());
    }
    Ok(out)
}

fn load_dashboard(dir: &Path) -> Result<(DashboardFile, BTreeMap<String, Question>)> {
    let path = dir.join("dashboard.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let d: DashboardFile =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let questions = load_questions(dir)?;
    for c in &d.cards {
        if !questions.contains_key(&c.question) {
            bail!(
                "{}: card {:?} has no questions/{}.sql",
                path.display(),
                c.question,
                c.question
            );
        }
    }
    Ok((d, questions))
}

/// A logged-in Metabase API client.
struct Api {
    http: reqwest::Client,
    base: String,
    session: String,
}

impl Api {
    async fn login(base: &str, user: &str, password: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let base = base.trim_end_matches('/').to_string();
        // A fresh Metabase has no users: its first admin is created with the setup token.
        let props: Value = http
            .get(format!("{base}/api/session/properties"))
            .send()
            .await
            .with_context(|| format!("is Metabase running at {base}?"))?
            .json()
            .await
            .with_context(|| format!("{base}/api/session/properties: reply is not JSON"))?;
        let r = match (
            props["has-user-setup"].as_bool(),
            props["setup-token"].as_str(),
        ) {
            (Some(false), Some(token)) => {
                tracing::info!("{base} is not set up yet: creating its first admin user {user}");
                http.post(format!("{base}/api/setup"))
                    .json(&json!({
                        "token": token,
                        "user": {
                            "first_name": "txguard",
                            "last_name": "admin",
                            "email": user,
                            "password": password,
                            "site_name": "txguard",
                        },
                        "prefs": { "site_name": "txguard", "site_locale": "en", "allow_tracking": false },
                    }))
                    .send()
                    .await
                    .with_context(|| format!("setting up {base}"))?
            }
            _ => http
                .post(format!("{base}/api/session"))
                .json(&json!({ "username": user, "password": password }))
                .send()
                .await
                .with_context(|| format!("is Metabase running at {base}?"))?,
        };
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("logging in to {base} as {user}: HTTP {status}: {body}");
        }
        let session = body["id"]
            .as_str()
            .ok_or_else(|| anyhow!("logging in: no session id in {body}"))?
            .to_string();
        Ok(Api {
            http,
            base,
            session,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("X-Metabase-Session", &self.session);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {path}: HTTP {status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: reply is not JSON"))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
}

/// A list reply: a bare array, or `{"data": [...]}` (newer versions page some lists).
fn items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => other["data"].as_array().cloned().unwrap_or_default(),
    }
}

fn find_id(list: &[Value], pred: impl Fn(&Value) -> bool) -> Option<i64> {
    list.iter()
        .find(|x| pred(x) && !x["archived"].as_bool().unwrap_or(false))
        .and_then(|x| x["id"].as_i64())
}

fn id_of(v: &Value, what: &str) -> Result<i64> {
    v["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("creating {what}: no id in the reply {v}"))
}

/// What a run did, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    created: Vec<String>,
    updated: Vec<String>,
}

pub fn run(args: MetabaseArgs) -> Result<()> {
    crate::commands::block_on(provision(args))
}

async fn provision(args: MetabaseArgs) -> Result<()> {
    let (dash, questions) = load_dashboard(&args.dir)?;
    let cfg = postgres::config(&args.connection, None, "metabase")?;
    let host = match cfg.pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => bail!("--connection must name a TCP host Metabase can reach"),
    };
    let details = json!({
        "host": host,
        "port": cfg.pg.get_ports().first().copied().unwrap_or(5432),
        "dbname": cfg.pg.get_dbname().or(cfg.pg.get_user()).unwrap_or("postgres"),
        "user": cfg.pg.get_user().unwrap_or("postgres"),
        "password": cfg.pg.get_password().map(|p| String::from_utf8_lossy(p).into_owned()),
        // Metabase connects from its own machine: it gets the mode, not our root certificate.
        "ssl": cfg.tls.mode >= postgres::tls::SslMode::Require,
        "ssl-mode": cfg.tls.mode.as_str(),
    });
    let api = Api::login(&args.url, &args.user, &args.password).await?;
    let mut tally = Tally::default();

    // The database connection.
    let dbs = items(&api.get("/api/database").await?);
    let db_body = json!({ "engine": "postgres", "name": dash.database, "details": details });
    let db_id = match find_id(&dbs, |d| d["name"] == dash.database.as_str()) {
        Some(id) => {
            api.put(&format!("/api/database/{id}"), db_body).await?;
            tally.updated.push(format!("database {:?}", dash.database));
            id
        }
        None => {
            let mut body = db_body;
            body["is_full_sync"] = json!(true);
            let id = id_of(&api.post("/api/database", body).await?, "the database")?;
            tally.created.push(format!("database {:?}", dash.database));
            id
        }
    };
    // Let Metabase learn the views' columns (native questions work without it).
    api.post(&format!("/api/database/{db_id}/sync_schema"), json!({}))
        .await?;

    // The collection everything else lives in.
    let colls = items(&api.get("/api/collection").await?);
    let coll_id = match find_id(&colls, |c| {
        c["name"] == dash.collection.as_str() && c["personal_owner_id"].is_null()
    }) {
        Some(id) => id,
        None => {
            let id = id_of(
                &api.post(
                    "/api/collection",
                    json!({ "name": dash.collection, "description": "txguard's questions and dashboard" }),
                )
                .await?,
                "the collection",
            )?;
            tally
                .created
                .push(format!("collection {:?}", dash.collection));
            id
        }
    };
    let existing = items(
        &api.get(&format!(
            "/api/collection/{coll_id}/items?models=card&models=dashboard"
        ))
        .await?,
    );

    // One question per card on the dashboard.
    let mut card_ids = BTreeMap::new();
    for p in &dash.cards {
        if card_ids.contains_key(&p.question) {
            continue;
        }
        let q = &questions[&p.question];
        let body = json!({
            "name": q.name,
            "description": q.description,
            "display": q.display,
            "visualization_settings": q.visualization_settings,
            "collection_id": coll_id,
            "dataset_query": {
                "type": "native",
                "native": { "query": q.sql, "template-tags": {} },
                "database": db_id,
            },
        });
        let found = find_id(&existing, |x| {
            x["model"] == "card" && x["name"] == q.name.as_str()
        });
        let id = match found {
            Some(id) => {
                api.put(&format!("/api/card/{id}"), body).await?;
                tally.updated.push(format!("question {:?}", q.name));
                id
            }
            None => {
                let id = id_of(&api.post("/api/card", body).await?, &q.name)?;
                tally.created.push(format!("question {:?}", q.name));
                id
            }
        };
        card_ids.insert(p.question.clone(), id);
    }

    // The dashboard, its cards replaced as one set.
    let dash_id = match find_id(&existing, |x| {
        x["model"] == "dashboard" && x["name"] == dash.name.as_str()
    }) {
        Some(id) => {
            tally.updated.push(format!("dashboard {:?}", dash.name));
            id
        }
        None => {
            let id = id_of(
                &api.post(
                    "/api/dashboard",
                    json!({ "name": dash.name, "description": dash.description, "collection_id": coll_id }),
                )
                .await?,
                "the dashboard",
            )?;
            tally.created.push(format!("dashboard {:?}", dash.name));
            id
        }
    };
    let current = api.get(&format!("/api/dashboard/{dash_id}")).await?;
    let mut on_board: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let current_cards = current
        .get("dashcards")
        .or_else(|| current.get("ordered_cards"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for dc in &current_cards {
        if let (Some(card), Some(id)) = (dc["card_id"].as_i64(), dc["id"].as_i64()) {
            on_board.entry(card).or_default().push(id);
        }
    }
    let mut next_new = -1i64;
    let dashcards: Vec<Value> = dash
        .cards
        .iter()
        .map(|p| {
            let card_id = card_ids[&p.question];
            let id = match on_board.get_mut(&card_id).and_then(|ids| ids.pop()) {
                Some(id) => id,
                None => {
                    next_new -= 1;
                    next_new + 1
                }
            };
            json!({
                "id": id,
                "card_id": card_id,
                "row": p.row,
                "col": p.col,
                "size_x": p.size_x,
                "size_y": p.size_y,
                "parameter_mappings": [],
                "visualization_settings": {},
            })
        })
        .collect();
    api.put(
        &format!("/api/dashboard/{dash_id}"),
        json!({
            "name": dash.name,
            "description": dash.description,
            "collection_id": coll_id,
            "dashcards": dashcards,
        }),
    )
    .await?;
    outln!(
        "{}/dashboard/{dash_id}: {} created, {} updated{}",
        api.base,
        tally.created.len(),
        tally.updated.len(),
        if tally.created.is_empty() {
            String::new()
        } else {
            format!(" (new: {})", tally.created.join(", "))
        }
    );
    Ok(())
}
