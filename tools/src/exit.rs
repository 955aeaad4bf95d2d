//! Exit codes scripts can rely on, and the error type every command returns.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error: the broker refused the request, or something else failed |
//! | 2 | usage: bad arguments, bad profile file, bad input |
//! | 3 | unreachable: no broker answered, or a request timed out |
//! | 4 | not found: unknown topic, partition, group or broker |
//! | 5 | conflict: the resource exists already, or a group still has active members |
//! | 6 | unhealthy: `fjord cluster health` found offline or under-replicated partitions |

use kafka_protocol::error::ResponseError;

use crate::client::ClientError;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const USAGE: u8 = 2;
pub const UNREACHABLE: u8 = 3;
pub const NOT_FOUND: u8 = 4;
pub const CONFLICT: u8 = 5;
pub const UNHEALTHY: u8 = 6;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unhealthy(String),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn code(&self) -> u8 {
        match self {
            CliError::Client(e) if e.is_unreachable() => UNREACHABLE,
            CliError::Client(e) => match e.kafka_error() {
                Some(
                    ResponseError::UnknownTopicOrPartition
                    | ResponseError::UnknownTopicId
                    | ResponseError::GroupIdNotFound,
                ) => NOT_FOUND,
                Some(
                    ResponseError::TopicAlreadyExists
                    | ResponseError::NonEmptyGroup
                    | ResponseError::RebalanceInProgress,
                ) => CONFLICT,
                _ => ERROR,
            },
            CliError::Usage(_) => USAGE,
            CliError::NotFound(_) => NOT_FOUND,
            CliError::Conflict(_) => CONFLICT,
            CliError::Unhealthy(_) => UNHEALTHY,
            CliError::Other(_) => ERROR,
        }
    }

    /// One line telling the operator what to try next, where there is something useful to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self.code() {
            UNREACHABLE => Some(
                "check the address (-b/--brokers, FJORD_BROKERS or the profile), that the broker runs, and that its advertised listener is reachable from here",
            ),
            NOT_FOUND => Some("list what exists with `fjord topic list` or `fjord group list`"),
            _ => None,
        }
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
