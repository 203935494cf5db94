//! The schema registry client of the Kafka source: Confluent's REST API, the one call Avro
//! decoding needs (`GET {endpoint}/schemas/ids/{id}` → `{"schema": "…"}`), with basic auth
//! when `schema_registry.api_key` / `api_secret` are given. Looked-up schemas are cached by
//! the decoder, so each id is fetched once. The HTTP client is made at the first lookup, on
//! the source's reader thread: reqwest's blocking client may not be made or dropped on the
//! async runtime the source is opened from.

use std::time::Duration;

use txguard_engine::decode::{LookupError, SchemaLookup};

/// A schema registry at `endpoint`.
pub struct Registry {
    endpoint: String,
    auth: Option<(String, String)>,
    client: Option<reqwest::blocking::Client>,
}

impl Registry {
    pub fn new(endpoint: &str, auth: Option<(String, String)>) -> Result<Self, String> {
        let url = reqwest::Url::parse(endpoint)
            .map_err(|e| format!("schema_registry.endpoint {endpoint:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "schema_registry.endpoint {endpoint:?}: use an http:// or https:// URL"
            ));
        }
        Ok(Registry {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            auth,
            client: None,
        })
    }
}

impl SchemaLookup for Registry {
    fn schema(&mut self, id: u32) -> Result<String, LookupError> {
        use LookupError::{NotFound, Unavailable};
        let url = format!("{}/schemas/ids/{id}", self.endpoint);
        if self.client.is_none() {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| Unavailable(format!("schema registry client: {e}")))?;
            self.client = Some(client);
        }
        let Some(client) = &self.client else {
            return Err(Unavailable("schema registry client".into()));
        };
        let mut req = client.get(&url);
        if let Some((user, pass)) = &self.auth {
            req = req.basic_auth(user, Some(pass));
        }
        let resp = req.send().map_err(|e| {
            Unavailable(format!(
                "schema registry {} cannot be reached: {e}",
                self.endpoint
            ))
        })?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .map_err(|e| Unavailable(format!("schema registry {url}: not JSON ({e})")))?;
        let message = body.get("message").and_then(|m| m.as_str()).unwrap_or("");
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(NotFound(format!(
                "schema id {id} is not in the schema registry ({message})"
            )));
        }
        if !status.is_success() {
            return Err(Unavailable(format!(
                "schema registry {url}: {status}: {message}"
            )));
        }
        if let Some(t) = body.get("schemaType").and_then(|t| t.as_str())
            && t != "AVRO"
        {
            return Err(NotFound(format!("schema {id} is {t}, not AVRO")));
        }
        body.get("schema")
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| Unavailable(format!("schema registry {url}: no schema in the answer")))
    }
}
