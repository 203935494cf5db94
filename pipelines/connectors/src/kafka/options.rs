//! The `kafka` connector's `WITH (...)` options (Arroyo's names), declared once as the
//! [`super::SPEC`] lists them and read back through the same constants into [`KafkaOptions`].

use rdkafka::ClientConfig;
use txguard_engine::sql::{OptionError, OptionKind, OptionSpec, TableDef};

pub const BOOTSTRAP_SERVERS: OptionSpec = OptionSpec::required(
    "bootstrap_servers",
    OptionKind::Text,
    "comma-separated host:port of the brokers",
);
pub const TOPIC: OptionSpec = OptionSpec::required("topic", OptionKind::Text, "the topic");
pub const BAD_DATA: OptionSpec = OptionSpec::optional(
    "bad_data",
    OptionKind::OneOf(&["dead_letter", "drop", "fail"]),
    "a message that cannot be used: dead_letter (default) and drop (Arroyo's name; txguard \
     never drops silently) send it to the dead letters with the reason; fail stops the \
     pipeline at it, uncommitted",
);
pub const OFFSET: OptionSpec = OptionSpec::optional(
    "source.offset",
    OptionKind::OneOf(&["earliest", "latest", "group"]),
    "where to start when the group has no committed offset: earliest (default; `group` is \
     the same) or latest",
);
pub const GROUP_ID: OptionSpec = OptionSpec::optional(
    "source.group_id",
    OptionKind::Text,
    "consumer group (default txguard-<table>); offsets are committed to it at checkpoints",
);
pub const READ_MODE: OptionSpec = OptionSpec::optional(
    "source.read_mode",
    OptionKind::OneOf(&["read_committed", "read_uncommitted"]),
    "read_committed (default) skips aborted transactional messages",
);
pub const PARTITIONS: OptionSpec = OptionSpec::optional(
    "source.partitions",
    OptionKind::OneOf(&["group", "all"]),
    "group (default): a consumer-group member, partitions shared by rebalancing; all: this \
     process reads every partition by direct assignment (no rebalance, no wait for a killed \
     member's session after a restart; offsets still committed to source.group_id)",
);
pub const STOP_AT_END: OptionSpec = OptionSpec::optional(
    "source.stop_at_end",
    OptionKind::Bool,
    "end the source when every assigned partition is read to its end (backfills, tests)",
);
pub const KEY_FIELD: OptionSpec = OptionSpec::optional(
    "sink.key_field",
    OptionKind::Text,
    "column whose value keys each message (default: no key)",
);
pub const COMMIT_MODE: OptionSpec = OptionSpec::optional(
    "sink.commit_mode",
    OptionKind::OneOf(&["exactly_once", "at_least_once"]),
    "exactly_once (default in a run with checkpoints): each checkpoint epoch's messages in one \
     Kafka transaction, committed once the checkpoint is durable, so read_committed consumers \
     see each once (the broker must support transactions); at_least_once: messages are sent \
     as they come and a replay after a restart sends them again",
);
pub const REGISTRY_ENDPOINT: OptionSpec = OptionSpec::optional(
    "schema_registry.endpoint",
    OptionKind::Text,
    "the schema registry's URL, for format = 'avro' with avro.confluent_schema_registry",
);
pub const REGISTRY_API_KEY: OptionSpec = OptionSpec::optional(
    "schema_registry.api_key",
    OptionKind::Text,
    "user for the schema registry's basic auth",
);
pub const REGISTRY_API_SECRET: OptionSpec = OptionSpec::optional(
    "schema_registry.api_secret",
    OptionKind::Text,
    "password for the schema registry's basic auth",
);
pub const CLIENT_CONFIGS: OptionSpec = OptionSpec::optional(
    "client_configs",
    OptionKind::Text,
    "extra librdkafka settings, 'key=value' separated by commas or semicolons (e.g. \
     'security.protocol=SASL_SSL;sasl.mechanism=PLAIN')",
);

/// Every option, as [`super::SPEC`] declares them.
pub const OPTIONS: &[OptionSpec] = &[
    BOOTSTRAP_SERVERS,
    TOPIC,
    BAD_DATA,
    OFFSET,
    GROUP_ID,
    READ_MODE,
    PARTITIONS,
    STOP_AT_END,
    KEY_FIELD,
    COMMIT_MODE,
    REGISTRY_ENDPOINT,
    REGISTRY_API_KEY,
    REGISTRY_API_SECRET,
    CLIENT_CONFIGS,
];

/// A schema registry's address and basic-auth credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryOptions {
    pub endpoint: String,
    pub auth: Option<(String, String)>,
}

/// A kafka table's options, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaOptions {
    pub bootstrap_servers: String,
    pub topic: String,
    /// `bad_data = 'fail'`: stop at a message that cannot be used instead of dead-lettering it.
    pub fail_on_bad: bool,
    /// `auto.offset.reset`: `earliest` or `latest`.
    pub offset_reset: &'static str,
    pub group_id: String,
    /// `isolation.level`: `read_committed` or `read_uncommitted`.
    pub isolation: &'static str,
    pub stop_at_end: bool,
    /// `source.partitions = 'all'`: assign every partition instead of joining the group.
    pub all_partitions: bool,
    pub key_field: Option<String>,
    /// `sink.commit_mode = 'at_least_once'`: no transactions even with checkpoints.
    pub at_least_once: bool,
    pub registry: Option<RegistryOptions>,
    pub client_configs: Vec<(String, String)>,
}

impl KafkaOptions {
    pub fn from_table(t: &TableDef) -> Result<Self, OptionError> {
        let registry = t.text(&REGISTRY_ENDPOINT).map(|endpoint| RegistryOptions {
            endpoint,
            auth: t
                .text(&REGISTRY_API_KEY)
                .map(|u| (u, t.text(&REGISTRY_API_SECRET).unwrap_or_default())),
        });
        if registry.is_none() && t.option(REGISTRY_API_KEY.key).is_some() {
            return Err(t.option_error(
                &REGISTRY_API_KEY,
                "is for schema_registry.endpoint, which is not given",
            ));
        }
        Ok(KafkaOptions {
            bootstrap_servers: t.required_text(&BOOTSTRAP_SERVERS)?,
            topic: t.required_text(&TOPIC)?,
            fail_on_bad: t.choice(&BAD_DATA)? == Some("fail"),
            offset_reset: match t.choice(&OFFSET)? {
                Some("latest") => "latest",
                _ => "earliest",
            },
            group_id: t
                .text(&GROUP_ID)
                .unwrap_or_else(|| format!("txguard-{}", t.name)),
            isolation: t.choice(&READ_MODE)?.unwrap_or("read_committed"),
            stop_at_end: t.flag(&STOP_AT_END)?.unwrap_or(false),
            all_partitions: t.choice(&PARTITIONS)? == Some("all"),
            key_field: t.text(&KEY_FIELD).filter(|k| !k.is_empty()),
            at_least_once: t.choice(&COMMIT_MODE)? == Some("at_least_once"),
            registry,
            client_configs: t.key_values(&CLIENT_CONFIGS)?,
        })
    }

    /// librdkafka settings: the brokers and everything in `client_configs`.
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.client_configs {
            cfg.set(k, v);
        }
        cfg
    }
}
