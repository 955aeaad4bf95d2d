//! The catalog of topic configs Fjord knows: names, types, defaults and broker-level synonyms, as
//! Apache Kafka 4.1 defines them (`TopicConfig`, `ServerLogConfigs`). The controller validates
//! every config change against it, and DescribeConfigs reports from it.

use crate::error::ControllerError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    Int,
    Long,
    Double,
    String,
    List,
}

impl ConfigType {
    /// Kafka's `DescribeConfigsResponse` config type ids.
    pub fn id(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
        }
    }
}

/// One topic config.
#[derive(Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// Kafka's default when neither the topic nor the broker overrides it.
    pub default: &'static str,
    /// The broker config that sets the default for all topics, if any.
    pub broker_synonym: Option<&'static str>,
    /// Smallest accepted value for numeric configs.
    pub min: Option<f64>,
    /// Accepted values (for lists: each element) when the set is closed.
    pub one_of: &'static [&'static str],
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    ty: ConfigType,
    default: &'static str,
    broker_synonym: Option<&'static str>,
    min: Option<f64>,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        ty,
        default,
        broker_synonym,
        min,
        one_of: &[],
        doc,
    }
}

use ConfigType::*;

const LONG_MAX: &str = "9223372036854775807";

pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        one_of: &["delete", "compact"],
        ..def(
            "cleanup.policy",
            List,
            "delete",
            Some("log.cleanup.policy"),
            None,
            "delete old segments, compact by key, or both",
        )
    },
    TopicConfigDef {
        one_of: &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        ..def(
            "compression.type",
            String,
            "producer",
            Some("compression.type"),
            None,
            "codec batches are stored with; producer keeps them as sent",
        )
    },
    def(
        "compression.gzip.level",
        Int,
        "-1",
        Some("compression.gzip.level"),
        Some(-1.0),
        "gzip level when compression.type is gzip",
    ),
    def(
        "compression.lz4.level",
        Int,
        "9",
        Some("compression.lz4.level"),
        Some(1.0),
        "lz4 level when compression.type is lz4",
    ),
    def(
        "compression.zstd.level",
        Int,
        "3",
        Some("compression.zstd.level"),
        Some(-131072.0),
        "zstd level when compression.type is zstd",
    ),
    def(
        "delete.retention.ms",
        Long,
        "86400000",
        Some("log.cleaner.delete.retention.ms"),
        Some(0.0),
        "how long tombstones are kept after compaction",
    ),
    def(
        "file.delete.delay.ms",
        Long,
        "60000",
        Some("log.segment.delete.delay.ms"),
        Some(0.0),
        "delay before a deleted segment file is removed",
    ),
    def(
        "flush.messages",
        Long,
        LONG_MAX,
        Some("log.flush.interval.messages"),
        Some(1.0),
        "fsync after this many messages",
    ),
    def(
        "flush.ms",
        Long,
        LONG_MAX,
        Some("log.flush.interval.ms"),
        Some(0.0),
        "fsync data older than this",
    ),
    def(
        "index.interval.bytes",
        Int,
        "4096",
        Some("log.index.interval.bytes"),
        Some(0.0),
        "bytes between offset index entries",
    ),
    def(
        "max.compaction.lag.ms",
        Long,
        LONG_MAX,
        Some("log.cleaner.max.compaction.lag.ms"),
        Some(1.0),
        "longest a record stays uncompacted",
    ),
    def(
        "max.message.bytes",
        Int,
        "1048588",
        Some("message.max.bytes"),
        Some(0.0),
        "largest record batch accepted",
    ),
    def(
        "message.timestamp.after.max.ms",
        Long,
        "3600000",
        Some("log.message.timestamp.after.max.ms"),
        Some(0.0),
        "how far in the future a CreateTime timestamp may be",
    ),
    def(
        "message.timestamp.before.max.ms",
        Long,
        LONG_MAX,
        Some("log.message.timestamp.before.max.ms"),
        Some(0.0),
        "how far in the past a CreateTime timestamp may be",
    ),
    TopicConfigDef {
        one_of: &["CreateTime", "LogAppendTime"],
        ..def(
            "message.timestamp.type",
            String,
            "CreateTime",
            Some("log.message.timestamp.type"),
            None,
            "whose clock stamps records",
        )
    },
    def(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        Some("log.cleaner.min.cleanable.ratio"),
        Some(0.0),
        "dirty share of the log that triggers compaction",
    ),
    def(
        "min.compaction.lag.ms",
        Long,
        "0",
        Some("log.cleaner.min.compaction.lag.ms"),
        Some(0.0),
        "shortest time a record stays uncompacted",
    ),
    def(
        "min.insync.replicas",
        Int,
        "1",
        Some("min.insync.replicas"),
        Some(1.0),
        "replicas that must acknowledge an acks=all write",
    ),
    def(
        "preallocate",
        Boolean,
        "false",
        Some("log.preallocate"),
        None,
        "preallocate segment files",
    ),
    def(
        "retention.bytes",
        Long,
        "-1",
        Some("log.retention.bytes"),
        Some(-1.0),
        "largest size of a partition before old segments are deleted",
    ),
    def(
        "retention.ms",
        Long,
        "604800000",
        Some("log.retention.ms"),
        Some(-1.0),
        "age after which segments are deleted",
    ),
    def(
        "segment.bytes",
        Int,
        "1073741824",
        Some("log.segment.bytes"),
        Some(14.0),
        "segment file size",
    ),
    def(
        "segment.index.bytes",
        Int,
        "10485760",
        Some("log.index.size.max.bytes"),
        Some(4.0),
        "index file size",
    ),
    def(
        "segment.jitter.ms",
        Long,
        "0",
        Some("log.roll.jitter.ms"),
        Some(0.0),
        "random jitter subtracted from segment.ms",
    ),
    def(
        "segment.ms",
        Long,
        "604800000",
        Some("log.roll.ms"),
        Some(1.0),
        "age after which a segment rolls",
    ),
    def(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        Some("unclean.leader.election.enable"),
        None,
        "allow out-of-sync replicas to become leader",
    ),
    def(
        "leader.replication.throttled.replicas",
        List,
        "",
        None,
        None,
        "replicas (partition:broker, or *) whose leader side is replication-throttled",
    ),
    def(
        "follower.replication.throttled.replicas",
        List,
        "",
        None,
        None,
        "replicas (partition:broker, or *) whose follower side is replication-throttled",
    ),
];

/// Dynamic broker configs that are not defaults of a topic config (Kafka's
/// `DynamicConfig.Broker`): the replication throttle rates, in bytes per second, that apply
/// to the replicas the topics' `*.replication.throttled.replicas` name.
pub static BROKER_DYNAMIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "leader.replication.throttled.rate",
        Long,
        LONG_MAX,
        Some("leader.replication.throttled.rate"),
        Some(0.0),
        "bytes/s a leader sends to throttled follower replicas",
    ),
    def(
        "follower.replication.throttled.rate",
        Long,
        LONG_MAX,
        Some("follower.replication.throttled.rate"),
        Some(0.0),
        "bytes/s a follower fetches for throttled replicas",
    ),
];

/// Kafka's `ThrottledReplicaListValidator`: `*`, or `partition:broker` pairs.
fn valid_throttled_replicas(value: &str) -> bool {
    let v = value.trim();
    v.is_empty()
        || v == "*"
        || v.split(',').all(|pair| {
            pair.trim().split_once(':').is_some_and(|(p, b)| {
                p.trim().parse::<i32>().is_ok() && b.trim().parse::<i32>().is_ok()
            })
        })
}

pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config whose broker-level synonym is `broker_key`.
pub fn topic_config_for_broker_key(broker_key: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_synonym == Some(broker_key))
}

fn invalid(name: &str, value: &str, why: &str) -> ControllerError {
    ControllerError::InvalidConfig(format!("invalid value '{value}' for '{name}': {why}"))
}

impl TopicConfigDef {
    /// Check that `value` is acceptable for this config.
    pub fn validate(&self, value: &str) -> Result<(), ControllerError> {
        let v = value.trim();
        let number = match self.ty {
            Boolean => {
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                    return Err(invalid(self.name, value, "expected true or false"));
                }
                None
            }
            Int => Some(
                v.parse::<i32>()
                    .map_err(|_| invalid(self.name, value, "expected a 32-bit integer"))?
                    as f64,
            ),
            Long => Some(
                v.parse::<i64>()
                    .map_err(|_| invalid(self.name, value, "expected a 64-bit integer"))?
                    as f64,
            ),
            Double => Some(
                v.parse::<f64>()
                    .map_err(|_| invalid(self.name, value, "expected a number"))?,
            ),
            String => {
                if !self.one_of.is_empty() && !self.one_of.contains(&v) {
                    return Err(invalid(
                        self.name,
                        value,
                        &format!("expected one of {}", self.one_of.join(", ")),
                    ));
                }
                None
            }
            List => {
                for part in v.split(',').map(str::trim) {
                    if !self.one_of.is_empty() && !self.one_of.contains(&part) {
                        return Err(invalid(
                            self.name,
                            value,
                            &format!("each element must be one of {}", self.one_of.join(", ")),
                        ));
                    }
                }
                None
            }
        };
        if let (Some(n), Some(min)) = (number, self.min)
            && n < min
        {
            return Err(invalid(
                self.name,
                value,
                &format!("must be at least {min}"),
            ));
        }
        if self.name.ends_with(".replication.throttled.replicas") && !valid_throttled_replicas(v) {
            return Err(invalid(
                self.name,
                value,
                "expected * or a list of partition:broker pairs",
            ));
        }
        if self.name == "min.cleanable.dirty.ratio" && number.is_some_and(|n| n > 1.0) {
            return Err(invalid(self.name, value, "must be at most 1"));
        }
        // Storage-level configs must also be acceptable to the log itself.
        let mut probe = fjord_storage::LogConfig::default();
        probe
            .set(self.name, v)
            .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        Ok(())
    }
}

/// Validate one topic config override.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ControllerError> {
    topic_config(name)
        .ok_or_else(|| ControllerError::InvalidConfig(format!("unknown topic config '{name}'")))?
        .validate(value)
}

/// Validate one dynamic broker config (cluster default or per-broker): the broker-level synonyms
/// of topic configs, which set defaults for every topic.
pub fn validate_broker_config(name: &str, value: &str) -> Result<(), ControllerError> {
    let def = topic_config_for_broker_key(name)
        .or_else(|| BROKER_DYNAMIC_CONFIGS.iter().find(|d| d.name == name))
        .ok_or_else(|| {
            ControllerError::InvalidConfig(format!("'{name}' is not a dynamic broker config"))
        })?;
    def.validate(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        for d in TOPIC_CONFIGS {
            d.validate(d.default)
                .unwrap_or_else(|e| panic!("{}: {e}", d.name));
        }
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "compact,bogus").is_err());
        assert!(validate_topic_config("no.such.config", "1").is_err());
        assert!(validate_topic_config("min.insync.replicas", "0").is_err());
        assert!(validate_broker_config("log.retention.ms", "1000").is_ok());
        assert!(validate_broker_config("retention.ms", "1000").is_err());
        assert!(validate_broker_config("leader.replication.throttled.rate", "1048576").is_ok());
        assert!(validate_broker_config("follower.replication.throttled.rate", "-1").is_err());
        for ok in ["", "*", "0:1", "0:1, 3:2"] {
            assert!(validate_topic_config("leader.replication.throttled.replicas", ok).is_ok());
        }
        for bad in ["1", "a:b", "0:1,*"] {
            assert!(validate_topic_config("follower.replication.throttled.replicas", bad).is_err());
        }
    }
}
