//! Broker configuration: a TOML file whose keys are Kafka's property names, plus `--set
//! key=value` overrides.
//!
//! TOML reads `node.id = 1` as a table `node` holding `id`; the file is flattened back into
//! dotted names, so both `node.id = 1` and `"node.id" = 1` work. Every key must be one Fjord
//! knows: a misspelt property is an error that names it rather than a silently ignored line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fjord_raft::configs::{TOPIC_CONFIGS, topic_config_for_broker_key};
use fjord_storage::LogConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("unknown config key '{0}'")]
    UnknownKey(String),
    #[error("config key '{key}': {reason}")]
    Invalid { key: String, reason: String },
    #[error("missing required config '{0}'")]
    Missing(&'static str),
    #[error("--set expects key=value, got '{0}'")]
    BadOverride(String),
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Broker properties Fjord reads besides the broker-level synonyms of topic configs (those come
/// from the topic-config catalog, e.g. `log.retention.ms`).
const BROKER_KEYS: &[&str] = &[
    "node.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "controller.listener.names",
    "inter.broker.listener.name",
    "controller.quorum.voters",
    "log.dirs",
    "log.dir",
    "metadata.log.dir",
    "cluster.id",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "socket.request.max.bytes",
    "broker.rack",
    "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms",
    "log.flush.scheduler.interval.ms",
    "log.retention.check.interval.ms",
    "log.flush.offset.checkpoint.interval.ms",
    "log.cleaner.enable",
    "log.cleaner.backoff.ms",
    "num.recovery.threads.per.data.dir",
    "producer.id.expiration.ms",
    "producer.id.expiration.check.interval.ms",
    "max.incremental.fetch.session.cache.slots",
    "auto.leader.rebalance.enable",
    "leader.imbalance.check.interval.seconds",
    "leader.imbalance.per.broker.percentage",
    // Consumer fetches from followers (KIP-392; crate::handlers::fetch).
    "replica.selector.class",
    // Replication (crate::replication).
    "replica.lag.time.max.ms",
    "replica.fetch.wait.max.ms",
    "replica.fetch.max.bytes",
    "replica.fetch.response.max.bytes",
    "replica.fetch.backoff.ms",
    // The group coordinator (crate::group).
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.topic.segment.bytes",
    "offsets.commit.timeout.ms",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "offset.metadata.max.bytes",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "group.consumer.session.timeout.ms",
    "group.consumer.heartbeat.interval.ms",
    "group.consumer.max.size",
    // The HTTP listener for /metrics and the control API (crate::observe).
    "http.listener",
];

/// A broker role (`process.roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Broker,
    Controller,
}

/// One `NAME://host:port` listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    /// `host:port`, bracketing IPv6 literals.
    pub fn addr_string(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        let text = if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        };
        text.parse().map_err(|_| {
            invalid(
                "listeners",
                format!(
                    "listener {} must bind an IP address, not '{}'",
                    self.name, self.host
                ),
            )
        })
    }
}

fn parse_listeners(key: &str, value: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut out: Vec<Listener> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, rest) = part
            .split_once("://")
            .ok_or_else(|| invalid(key, format!("'{part}' is not NAME://host:port")))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, format!("'{part}' has no port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(key, format!("'{port}' is not a port")))?;
        let name = name.to_ascii_uppercase();
        if out.iter().any(|l| l.name == name) {
            return Err(invalid(key, format!("listener {name} appears twice")));
        }
        out.push(Listener {
            name,
            host: host.to_string(),
            port,
        });
    }
    Ok(out)
}

/// `http.listener`: `host:port` with an IP address (brackets for IPv6), or the same with an
/// `http://` prefix.
fn parse_http_listener(value: &str) -> Result<SocketAddr, ConfigError> {
    let text = value.strip_prefix("http://").unwrap_or(value);
    text.parse().map_err(|_| {
        invalid(
            "http.listener",
            format!("'{value}' is not IP:port (e.g. 127.0.0.1:9644)"),
        )
    })
}

/// Kafka's `replica.selector.class`: how a leader picks the replica a consumer should fetch
/// from (KIP-392).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplicaSelector {
    /// Unset or empty (Kafka's default): consumers read from the leader.
    #[default]
    LeaderOnly,
    /// `org.apache.kafka.common.replica.RackAwareReplicaSelector`: a consumer whose
    /// `client.rack` names a rack holding an in-sync follower (and not the leader) is sent there.
    RackAware,
}

/// The class name Kafka ships for rack-aware follower reads.
pub const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";

impl ReplicaSelector {
    fn parse(value: Option<&str>) -> Result<ReplicaSelector, ConfigError> {
        match value.map(str::trim) {
            None | Some("") => Ok(ReplicaSelector::LeaderOnly),
            Some(RACK_AWARE_REPLICA_SELECTOR) => Ok(ReplicaSelector::RackAware),
            // Kafka loads any class implementing ReplicaSelector; Fjord has only this one, and
            // a class it cannot honour is refused rather than silently served leader-only.
            Some(other) => Err(invalid(
                "replica.selector.class",
                format!(
                    "'{other}' is not supported (use {RACK_AWARE_REPLICA_SELECTOR} or leave it unset)"
                ),
            )),
        }
    }
}

/// The parsed broker configuration.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub roles: Vec<Role>,
    pub listeners: Vec<Listener>,
    /// Defaults to `listeners` (minus the controller listeners).
    pub advertised_listeners: Vec<Listener>,
    pub controller_listener_names: Vec<String>,
    pub controller_quorum_voters: String,
    pub log_dirs: Vec<PathBuf>,
    pub metadata_log_dir: PathBuf,
    pub cluster_id: Option<String>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub socket_request_max_bytes: usize,
    pub rack: Option<String>,
    /// `replica.selector.class`
    pub replica_selector: ReplicaSelector,
    pub session_timeout: Duration,
    /// `auto.leader.rebalance.enable`
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`
    pub leader_imbalance_check_interval: Duration,
    /// `leader.imbalance.per.broker.percentage`
    pub leader_imbalance_per_broker_pct: u32,
    pub heartbeat_interval: Duration,
    pub flush_check_interval: Duration,
    pub retention_check_interval: Duration,
    pub checkpoint_interval: Duration,
    pub cleaner_enabled: bool,
    pub cleaner_backoff: Duration,
    pub recovery_threads: usize,
    /// `producer.id.expiration.ms`
    pub producer_id_expiration_ms: i64,
    /// Follower fetch settings (`replica.fetch.*`, `inter.broker.listener.name`).
    pub replication: crate::replication::ReplicationConfig,
    /// `replica.lag.time.max.ms`: an ISR member not caught up for this long is dropped.
    pub replica_lag_time_max: Duration,
    /// `max.incremental.fetch.session.cache.slots`
    pub fetch_session_cache_slots: usize,
    /// `producer.id.expiration.check.interval.ms`
    pub producer_id_expiration_check_interval: Duration,
    /// The group coordinator's settings (`offsets.*`, `group.*`).
    pub group_coordinator: crate::group::GroupCoordinatorConfig,
    /// `http.listener` (`host:port`, an IP address; port 0 picks one): where `/metrics` and
    /// the control API are served. Off when unset.
    pub http_listener: Option<SocketAddr>,
    /// Broker-level defaults for topic configs, by *topic* config name (e.g. `retention.ms`
    /// from `log.retention.ms`), as the file set them.
    pub topic_defaults: BTreeMap<String, String>,
    /// Every key as given (for DescribeConfigs on the broker resource).
    pub raw: BTreeMap<String, String>,
}

impl BrokerConfig {
    /// Reads a TOML file and applies `overrides` (`key=value`) on top.
    pub fn load(path: &Path, overrides: &[String]) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut props = parse_toml(&text).map_err(|message| ConfigError::Toml {
            path: path.to_path_buf(),
            message,
        })?;
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
            props.insert(k.trim().to_string(), v.trim().to_string());
        }
        BrokerConfig::from_properties(props)
    }

    /// Builds the config from flat Kafka properties.
    pub fn from_properties(props: BTreeMap<String, String>) -> Result<BrokerConfig, ConfigError> {
        let mut topic_defaults = BTreeMap::new();
        for (k, v) in &props {
            if BROKER_KEYS.contains(&k.as_str()) {
                continue;
            }
            let def =
                topic_config_for_broker_key(k).ok_or_else(|| ConfigError::UnknownKey(k.clone()))?;
            def.validate(v).map_err(|e| invalid(k, e.to_string()))?;
            topic_defaults.insert(def.name.to_string(), v.clone());
        }
        let get = |k: &str| props.get(k).map(String::as_str);
        let int = |k: &str, default: i64, min: i64| -> Result<i64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => {
                    let n: i64 = v
                        .trim()
                        .parse()
                        .map_err(|_| invalid(k, format!("'{v}' is not an integer")))?;
                    if n < min {
                        return Err(invalid(k, format!("must be at least {min}")));
                    }
                    Ok(n)
                }
            }
        };
        let boolean = |k: &str, default: bool| -> Result<bool, ConfigError> {
            match get(k).map(str::trim) {
                None => Ok(default),
                Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
                Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
                Some(v) => Err(invalid(k, format!("'{v}' is not true or false"))),
            }
        };
        let ms = |k: &str, default: i64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(int(k, default, 1)? as u64))
        };

        let node_id = int("node.id", -1, 0)
            .and_then(|n| i32::try_from(n).map_err(|_| invalid("node.id", "out of range")))?;
        if !props.contains_key("node.id") {
            return Err(ConfigError::Missing("node.id"));
        }
        let mut roles = Vec::new();
        for r in get("process.roles")
            .unwrap_or("broker,controller")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            let role = match r {
                "broker" => Role::Broker,
                "controller" => Role::Controller,
                _ => return Err(invalid("process.roles", format!("unknown role '{r}'"))),
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err(invalid("process.roles", "no roles"));
        }
        let listeners = parse_listeners(
            "listeners",
            get("listeners").unwrap_or("PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"),
        )?;
        let controller_listener_names: Vec<String> = get("controller.listener.names")
            .unwrap_or("CONTROLLER")
            .split(',')
            .map(|s| s.trim().to_ascii_uppercase())
            .filter(|s| !s.is_empty())
            .collect();
        let advertised_listeners = match get("advertised.listeners") {
            Some(v) => parse_listeners("advertised.listeners", v)?,
            None => listeners
                .iter()
                .filter(|l| !controller_listener_names.contains(&l.name))
                .cloned()
                .collect(),
        };
        if let Some(bad) = listeners
            .iter()
            .map(|l| l.name.as_str())
            .find(|n| !matches!(*n, "PLAINTEXT" | "CONTROLLER") && !n.is_empty())
            .filter(|n| !controller_listener_names.iter().any(|c| c == n))
        {
            // TLS and SASL listeners arrive with the security issue; refuse rather than serve
            // them in plaintext.
            if !props
                .get("listener.security.protocol.map")
                .is_some_and(|m| m.contains(&format!("{bad}:PLAINTEXT")))
            {
                return Err(invalid(
                    "listeners",
                    format!(
                        "listener {bad} needs a PLAINTEXT mapping in listener.security.protocol.map (TLS and SASL are not supported yet)"
                    ),
                ));
            }
        }
        let controller_quorum_voters = get("controller.quorum.voters")
            .ok_or(ConfigError::Missing("controller.quorum.voters"))?
            .to_string();
        let log_dirs: Vec<PathBuf> = get("log.dirs")
            .or(get("log.dir"))
            .unwrap_or("./data/logs")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if log_dirs.is_empty() {
            return Err(invalid("log.dirs", "no directories"));
        }
        let metadata_log_dir = PathBuf::from(get("metadata.log.dir").unwrap_or("./data/metadata"));
        if log_dirs.iter().any(|d| d == &metadata_log_dir) {
            // The log manager treats every directory in a log dir as a partition.
            return Err(invalid("metadata.log.dir", "must not be one of log.dirs"));
        }
        let num_partitions = i32::try_from(int("num.partitions", 1, 1)?)
            .map_err(|_| invalid("num.partitions", "out of range"))?;
        let default_replication_factor = i16::try_from(int("default.replication.factor", 1, 1)?)
            .map_err(|_| invalid("default.replication.factor", "out of range"))?;
        let socket_request_max_bytes = int(
            "socket.request.max.bytes",
            fjord_protocol::DEFAULT_MAX_REQUEST_BYTES as i64,
            1024,
        )? as usize;
        let config = BrokerConfig {
            node_id,
            roles,
            listeners,
            advertised_listeners,
            controller_listener_names,
            controller_quorum_voters,
            log_dirs,
            metadata_log_dir,
            cluster_id: get("cluster.id").map(str::to_string),
            num_partitions,
            default_replication_factor,
            auto_create_topics_enable: boolean("auto.create.topics.enable", true)?,
            socket_request_max_bytes,
            rack: get("broker.rack").map(str::to_string),
            replica_selector: ReplicaSelector::parse(get("replica.selector.class"))?,
            // Tighter than Kafka's 9000 / 2000: a SIGKILLed leader's partitions move within
            // about 1.5 s (the brief's failover target is 3 s to producing again, and clients
            // need part of that to find the new leader). Heartbeats are a few bytes a second.
            session_timeout: ms("broker.session.timeout.ms", 1500)?,
            auto_leader_rebalance: boolean("auto.leader.rebalance.enable", true)?,
            leader_imbalance_check_interval: Duration::from_secs(int(
                "leader.imbalance.check.interval.seconds",
                300,
                1,
            )? as u64),
            leader_imbalance_per_broker_pct: int("leader.imbalance.per.broker.percentage", 10, 0)?
                .min(100) as u32,
            heartbeat_interval: ms("broker.heartbeat.interval.ms", 250)?,
            flush_check_interval: ms("log.flush.scheduler.interval.ms", 1000)?,
            retention_check_interval: ms("log.retention.check.interval.ms", 300_000)?,
            checkpoint_interval: ms("log.flush.offset.checkpoint.interval.ms", 60_000)?,
            cleaner_enabled: boolean("log.cleaner.enable", true)?,
            cleaner_backoff: ms("log.cleaner.backoff.ms", 15_000)?,
            recovery_threads: int("num.recovery.threads.per.data.dir", 2, 1)? as usize,
            producer_id_expiration_ms: int("producer.id.expiration.ms", 86_400_000, 1)?,
            replication: crate::replication::ReplicationConfig {
                listener: get("inter.broker.listener.name")
                    .unwrap_or("PLAINTEXT")
                    .to_string(),
                wait_max: ms("replica.fetch.wait.max.ms", 500)?,
                fetch_max_bytes: i32::try_from(int("replica.fetch.max.bytes", 1024 * 1024, 1)?)
                    .map_err(|_| invalid("replica.fetch.max.bytes", "out of range"))?,
                response_max_bytes: i32::try_from(int(
                    "replica.fetch.response.max.bytes",
                    10 * 1024 * 1024,
                    1,
                )?)
                .map_err(|_| invalid("replica.fetch.response.max.bytes", "out of range"))?,
                backoff: ms("replica.fetch.backoff.ms", 1000)?,
            },
            replica_lag_time_max: ms("replica.lag.time.max.ms", 30_000)?,
            fetch_session_cache_slots: int("max.incremental.fetch.session.cache.slots", 1000, 0)?
                as usize,
            producer_id_expiration_check_interval: ms(
                "producer.id.expiration.check.interval.ms",
                600_000,
            )?,
            group_coordinator: group_coordinator_config(&int)?,
            http_listener: get("http.listener")
                .map(|v| parse_http_listener(v.trim()))
                .transpose()?,
            topic_defaults,
            raw: props,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.is_controller() && self.controller_listener().is_none() {
            return Err(invalid(
                "listeners",
                "a controller needs a listener named in controller.listener.names",
            ));
        }
        if self.is_broker() && self.client_listeners().next().is_none() {
            return Err(invalid("listeners", "a broker needs a client listener"));
        }
        Ok(())
    }

    pub fn is_broker(&self) -> bool {
        self.roles.contains(&Role::Broker)
    }

    pub fn is_controller(&self) -> bool {
        self.roles.contains(&Role::Controller)
    }

    pub fn controller_listener(&self) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| self.controller_listener_names.contains(&l.name))
    }

    /// Listeners that serve Kafka clients (everything but the controller listeners).
    pub fn client_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners
            .iter()
            .filter(|l| !self.controller_listener_names.contains(&l.name))
    }

    /// The broker-wide default log config: Kafka's defaults with the `log.*` settings applied.
    pub fn default_log_config(&self) -> Result<LogConfig, ConfigError> {
        let mut c = LogConfig::default();
        for (k, v) in &self.topic_defaults {
            c.set(k, v).map_err(|e| invalid(k, e.to_string()))?;
        }
        Ok(c)
    }

    /// The static broker value of a topic config's broker synonym, if the file set it.
    pub fn static_topic_default(&self, topic_key: &str) -> Option<&str> {
        self.topic_defaults.get(topic_key).map(String::as_str)
    }
}

/// The `offsets.*` and `group.*` keys, with Kafka's defaults and lower bounds.
fn group_coordinator_config(
    int: &dyn Fn(&str, i64, i64) -> Result<i64, ConfigError>,
) -> Result<crate::group::GroupCoordinatorConfig, ConfigError> {
    let int32 = |k: &str, default: i64, min: i64| -> Result<i32, ConfigError> {
        i32::try_from(int(k, default, min)?).map_err(|_| invalid(k, "out of range"))
    };
    let ms = |k: &str, default: i64, min: i64| -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(int(k, default, min)? as u64))
    };
    let d = crate::group::GroupCoordinatorConfig::default();
    let config = crate::group::GroupCoordinatorConfig {
        offsets_topic_num_partitions: int32(
            "offsets.topic.num.partitions",
            i64::from(d.offsets_topic_num_partitions),
            1,
        )?,
        offsets_topic_replication_factor: i16::try_from(int(
            "offsets.topic.replication.factor",
            i64::from(d.offsets_topic_replication_factor),
            1,
        )?)
        .map_err(|_| invalid("offsets.topic.replication.factor", "out of range"))?,
        offsets_topic_segment_bytes: int32(
            "offsets.topic.segment.bytes",
            i64::from(d.offsets_topic_segment_bytes),
            1,
        )?,
        offsets_commit_timeout: ms(
            "offsets.commit.timeout.ms",
            d.offsets_commit_timeout.as_millis() as i64,
            1,
        )?,
        offsets_retention: Duration::from_secs(
            60 * int(
                "offsets.retention.minutes",
                d.offsets_retention.as_secs() as i64 / 60,
                1,
            )? as u64,
        ),
        offsets_retention_check_interval: ms(
            "offsets.retention.check.interval.ms",
            d.offsets_retention_check_interval.as_millis() as i64,
            1,
        )?,
        offset_metadata_max_bytes: int(
            "offset.metadata.max.bytes",
            d.offset_metadata_max_bytes as i64,
            0,
        )? as usize,
        initial_rebalance_delay_ms: int32(
            "group.initial.rebalance.delay.ms",
            i64::from(d.initial_rebalance_delay_ms),
            0,
        )?,
        min_session_timeout_ms: int32(
            "group.min.session.timeout.ms",
            i64::from(d.min_session_timeout_ms),
            0,
        )?,
        max_session_timeout_ms: int32(
            "group.max.session.timeout.ms",
            i64::from(d.max_session_timeout_ms),
            0,
        )?,
        max_size: int32("group.max.size", d.max_size as i64, 1)? as usize,
        consumer_session_timeout_ms: int32(
            "group.consumer.session.timeout.ms",
            i64::from(d.consumer_session_timeout_ms),
            1,
        )?,
        consumer_heartbeat_interval_ms: int32(
            "group.consumer.heartbeat.interval.ms",
            i64::from(d.consumer_heartbeat_interval_ms),
            1,
        )?,
        consumer_max_size: int32("group.consumer.max.size", d.consumer_max_size as i64, 1)?
            as usize,
        consumer_assignors: d.consumer_assignors.clone(),
    };
    if config.consumer_heartbeat_interval_ms >= config.consumer_session_timeout_ms {
        return Err(invalid(
            "group.consumer.heartbeat.interval.ms",
            "must be less than group.consumer.session.timeout.ms",
        ));
    }
    if config.min_session_timeout_ms > config.max_session_timeout_ms {
        return Err(invalid(
            "group.min.session.timeout.ms",
            "must not exceed group.max.session.timeout.ms",
        ));
    }
    Ok(config)
}

/// Every broker key Fjord accepts (for `--help` style listings and tests).
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    BROKER_KEYS.iter().copied().chain(
        TOPIC_CONFIGS
            .iter()
            .filter_map(|d| d.broker_synonym)
            .filter(|k| !BROKER_KEYS.contains(k)),
    )
}

/// Flattens a TOML document into dotted keys with string values.
pub fn parse_toml(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out)?;
    Ok(out)
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let text = match v {
            toml::Value::Table(t) => {
                flatten(&key, t, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                // Kafka lists are comma-separated strings; accept TOML arrays too.
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        toml::Value::String(s) => parts.push(s.clone()),
                        toml::Value::Integer(i) => parts.push(i.to_string()),
                        _ => return Err(format!("'{key}': list items must be strings")),
                    }
                }
                parts.join(",")
            }
            toml::Value::Datetime(_) => return Err(format!("'{key}': dates are not supported")),
        };
        if out.insert(key.clone(), text).is_some() {
            return Err(format!("'{key}' is set twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_properties(parse_toml(text).unwrap())
    }

    const BASE: &str = r#"
node.id = 1
process.roles = "broker,controller"
listeners = "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
controller.quorum.voters = "1@127.0.0.1:9093"
log.dirs = "./data/logs"
metadata.log.dir = "./data/metadata"
"#;

    #[test]
    fn dotted_and_quoted_keys_flatten_to_kafka_names() {
        let c = props(&format!(
            "{BASE}\nlog.retention.ms = 1000\n\"log.segment.bytes\" = 4096\nnum.partitions = 3\n"
        ))
        .unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.topic_defaults.get("retention.ms").unwrap(), "1000");
        assert_eq!(c.topic_defaults.get("segment.bytes").unwrap(), "4096");
        let log = c.default_log_config().unwrap();
        assert_eq!(log.retention_ms, 1000);
        assert_eq!(log.segment_bytes, 4096);
        assert_eq!(c.controller_listener().unwrap().port, 9093);
        assert_eq!(c.advertised_listeners.len(), 1);
        assert_eq!(c.advertised_listeners[0].name, "PLAINTEXT");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = props(&format!("{BASE}\nlog.retention.msec = 5\n")).unwrap_err();
        assert!(e.to_string().contains("log.retention.msec"), "{e}");
        let e = props(&format!("{BASE}\nnum.partitions = 0\n")).unwrap_err();
        assert!(e.to_string().contains("num.partitions"), "{e}");
        let e = props(&format!("{BASE}\nlog.retention.ms = \"soon\"\n")).unwrap_err();
        assert!(e.to_string().contains("log.retention.ms"), "{e}");
        let e = props("process.roles = \"broker\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Missing("node.id")), "{e}");
    }

    #[test]
    fn group_coordinator_keys_have_kafka_defaults_and_bounds() {
        let c = props(BASE).unwrap().group_coordinator;
        assert_eq!(c, crate::group::GroupCoordinatorConfig::default());
        assert_eq!(c.offsets_topic_num_partitions, 50);
        assert_eq!(c.offsets_topic_replication_factor, 3);
        assert_eq!(c.initial_rebalance_delay_ms, 3000);
        let c = props(&format!(
            "{BASE}\noffsets.topic.replication.factor = 1\noffsets.topic.num.partitions = 4\ngroup.initial.rebalance.delay.ms = 0\noffsets.retention.minutes = 2\n"
        ))
        .unwrap()
        .group_coordinator;
        assert_eq!(c.offsets_topic_replication_factor, 1);
        assert_eq!(c.offsets_topic_num_partitions, 4);
        assert_eq!(c.initial_rebalance_delay_ms, 0);
        assert_eq!(c.offsets_retention, Duration::from_secs(120));
        let e = props(&format!("{BASE}\noffsets.topic.num.partitions = 0\n")).unwrap_err();
        assert!(
            e.to_string().contains("offsets.topic.num.partitions"),
            "{e}"
        );
        let e = props(&format!(
            "{BASE}\ngroup.min.session.timeout.ms = 10\ngroup.max.session.timeout.ms = 5\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("group.min.session.timeout.ms"),
            "{e}"
        );
    }

    #[test]
    fn http_listener_is_off_unless_set() {
        assert_eq!(props(BASE).unwrap().http_listener, None);
        let c = props(&format!("{BASE}\nhttp.listener = \"127.0.0.1:9644\"\n")).unwrap();
        assert_eq!(c.http_listener, Some("127.0.0.1:9644".parse().unwrap()));
        let c = props(&format!("{BASE}\nhttp.listener = \"http://[::1]:0\"\n")).unwrap();
        assert_eq!(c.http_listener, Some("[::1]:0".parse().unwrap()));
        let e = props(&format!("{BASE}\nhttp.listener = \"localhost:9644\"\n")).unwrap_err();
        assert!(e.to_string().contains("http.listener"), "{e}");
    }

    #[test]
    fn replica_selector_is_leader_only_unless_rack_aware_is_named() {
        assert_eq!(
            props(BASE).unwrap().replica_selector,
            ReplicaSelector::LeaderOnly
        );
        let c = props(&format!("{BASE}\nreplica.selector.class = \"\"\n")).unwrap();
        assert_eq!(c.replica_selector, ReplicaSelector::LeaderOnly);
        let c = props(&format!(
            "{BASE}\nreplica.selector.class = \"{RACK_AWARE_REPLICA_SELECTOR}\"\n"
        ))
        .unwrap();
        assert_eq!(c.replica_selector, ReplicaSelector::RackAware);
        // DescribeConfigs reports the broker keys as given.
        assert_eq!(
            c.raw.get("replica.selector.class").map(String::as_str),
            Some(RACK_AWARE_REPLICA_SELECTOR)
        );
        let e = props(&format!(
            "{BASE}\nreplica.selector.class = \"com.example.Nearest\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("replica.selector.class"), "{e}");
    }

    #[test]
    fn metadata_dir_must_stay_out_of_log_dirs() {
        let e = props(&BASE.replace("./data/metadata", "./data/logs")).unwrap_err();
        assert!(e.to_string().contains("metadata.log.dir"), "{e}");
    }

    #[test]
    fn overrides_apply_on_top_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, BASE).unwrap();
        let c = BrokerConfig::load(
            &path,
            &[
                "num.partitions=4".into(),
                "log.flush.interval.messages=1".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.num_partitions, 4);
        assert_eq!(c.default_log_config().unwrap().flush_messages, 1);
        assert!(BrokerConfig::load(&path, &["nonsense".into()]).is_err());
    }
}
