//! Errors of the client layer. Every variant names the broker it concerns so that the CLI can
//! tell the operator where to look.

use std::time::Duration;

use kafka_protocol::error::ResponseError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {broker}: {source}")]
    Connect {
        broker: String,
        source: std::io::Error,
    },
    #[error(
        "no broker reachable (tried {tried}); check --brokers / FJORD_BROKERS and that the cluster is up"
    )]
    NoBrokers { tried: String },
    #[error("{api} to {broker} timed out after {after:?}")]
    Timeout {
        broker: String,
        api: &'static str,
        after: Duration,
    },
    #[error("connection to {broker} failed: {source}")]
    Io {
        broker: String,
        source: std::io::Error,
    },
    #[error("connection to {broker} is closed ({reason})")]
    Closed { broker: String, reason: String },
    #[error("bad frame from {broker}: {message}")]
    Frame { broker: String, message: String },
    #[error("cannot encode {api} v{version}: {message}")]
    Encode {
        api: &'static str,
        version: i16,
        message: String,
    },
    #[error("cannot decode {api} v{version} from {broker}: {message}")]
    Decode {
        broker: String,
        api: &'static str,
        version: i16,
        message: String,
    },
    #[error(
        "{broker} does not support {api} in a version this tool speaks (broker {broker_range}, ours {ours})"
    )]
    Unsupported {
        broker: String,
        api: &'static str,
        broker_range: String,
        ours: String,
    },
    /// An error code in a response; `what` names the request and resource.
    #[error("{what}: {}{}", kafka_name(*.error), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        what: String,
        error: ResponseError,
        message: Option<String>,
    },
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// True when no broker could be reached at all (as opposed to a broker that answered badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::NoBrokers { .. }
                | ClientError::Timeout { .. }
                | ClientError::Closed { .. }
                | ClientError::Io { .. }
        )
    }

    /// The Kafka error in a response, if this is one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Builds a [`ClientError::Kafka`] from a response's error code, or `None` for 0.
    pub fn from_code(
        what: impl FnOnce() -> String,
        code: i16,
        message: Option<&str>,
    ) -> Option<Self> {
        ResponseError::try_from_code(code).map(|error| ClientError::Kafka {
            what: what(),
            error,
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        })
    }
}

/// Kafka's own spelling of an error (`UNKNOWN_TOPIC_OR_PARTITION`), which operators search for.
pub fn kafka_name(error: ResponseError) -> String {
    match error {
        ResponseError::Unknown(code) => format!("UNKNOWN_ERROR_CODE({code})"),
        other => {
            let camel = format!("{other:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

/// Returns `Err` for a non-zero error code.
pub fn check(
    code: i16,
    message: Option<&str>,
    what: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    match ClientError::from_code(what, code, message) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
