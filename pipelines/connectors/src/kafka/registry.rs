//! The schema registry client of the Kafka source: Confluent's REST API, the one call Avro
//! decoding needs (`GET {endpoint}/schemas/ids/{id}` → `{"schema": "…"}`), with basic auth
//! when `schema_registry.api_key` / `api_secret` are given. Looked-up schemas are cached by
//! the decoder, so each id is fetched once.

use std::time::Duration;

use txguard_engine::decode::{LookupError, SchemaLookup};

/// A schema registry at `endpoint`.
pub struct Registry {
    endpoint: String,
    auth: Option<(String, String)>,
    client: reqwest::blocking::Client,
}

impl Registry {
    pub fn new(endpoint: &str, auth: Option<(String, String)>) -> Result<Self, String> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("schema registry client: {e}"))?;
        Ok(Registry {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            auth,
            client,
        })
    }
}

impl SchemaLookup for Registry {
    fn schema(&mut self, id: u32) -> Result<String, LookupError> {
        use LookupError::{NotFound, Unavailable};
        let url = format!("{}/schemas/ids/{id}", self.endpoint);
        let mut req = self.client.get(&url);
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
