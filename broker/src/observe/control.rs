//! The control API: topics and consumer groups over HTTP/JSON, for operators and scripts that
//! do not speak the Kafka protocol. Every change goes the way the Kafka API's does (topic
//! creation through the controller, as CreateTopics; group changes through the group's
//! coordinator), so the two cannot disagree.
//!
//! Errors are `{"error": "<what happened>", "code": "<machine-readable name>"}` (plus
//! `kafka_error_code` when the error is a Kafka one) with a status that says what kind of
//! failure it is: 400 bad input, 404 no such thing, 409 conflict with the current state, 421
//! another broker coordinates the group, 503 not available right now.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fjord_raft::MetadataImage;
use fjord_raft::controller::requests::CreatableTopic;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::broker::Broker;
use crate::group::OFFSETS_TOPIC;
use crate::group::force::{Forced, Refused};
use crate::observe::http::Observe;
use crate::observe::metrics::error_name;
use crate::util::is_internal_topic;

/// The Kafka error codes this API answers with or maps to a status.
mod codes {
    pub use crate::codes::{
        INVALID_REQUEST, INVALID_TOPIC_EXCEPTION, LEADER_NOT_AVAILABLE, NOT_ENOUGH_REPLICAS,
        POLICY_VIOLATION, REQUEST_TIMED_OUT, UNKNOWN_SERVER_ERROR, UNKNOWN_TOPIC_OR_PARTITION,
    };
    pub use crate::group::codes::{
        COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, GROUP_ID_NOT_FOUND,
        INVALID_GROUP_ID, NON_EMPTY_GROUP, NOT_COORDINATOR,
    };
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const NOT_CONTROLLER: i16 = 41;
}

/// How long topic creation waits for the controller and for this broker's metadata.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    kafka_error_code: Option<i16>,
    extra: serde_json::Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            kafka_error_code: None,
            extra: serde_json::Map::new(),
        }
    }

    /// A Kafka error code, with the status that fits it.
    pub fn kafka(code: i16, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_of(code),
            code: error_name(code),
            message: message.into(),
            kafka_error_code: Some(code),
            extra: serde_json::Map::new(),
        }
    }

    fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), Value::String(self.message));
        body.insert("code".into(), Value::String(self.code));
        if let Some(k) = self.kafka_error_code {
            body.insert("kafka_error_code".into(), json!(k));
        }
        body.extend(self.extra);
        json(self.status, Value::Object(body))
    }
}

/// A JSON answer.
pub fn json(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// The HTTP status of a Kafka error code.
pub fn status_of(code: i16) -> StatusCode {
    match code {
        codes::TOPIC_ALREADY_EXISTS | codes::NON_EMPTY_GROUP => StatusCode::CONFLICT,
        codes::INVALID_TOPIC_EXCEPTION
        | codes::INVALID_PARTITIONS
        | codes::INVALID_REPLICATION_FACTOR
        | codes::INVALID_REPLICA_ASSIGNMENT
        | codes::INVALID_CONFIG
        | codes::INVALID_REQUEST
        | codes::POLICY_VIOLATION
        | codes::INVALID_GROUP_ID => StatusCode::BAD_REQUEST,
        codes::UNKNOWN_TOPIC_OR_PARTITION | codes::GROUP_ID_NOT_FOUND => StatusCode::NOT_FOUND,
        codes::NOT_COORDINATOR => StatusCode::MISDIRECTED_REQUEST,
        codes::COORDINATOR_LOAD_IN_PROGRESS
        | codes::COORDINATOR_NOT_AVAILABLE
        | codes::REQUEST_TIMED_OUT
        | codes::NOT_CONTROLLER
        | codes::LEADER_NOT_AVAILABLE
        | codes::NOT_ENOUGH_REPLICAS => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn bad_json(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BadJson",
        format!("the request body is not valid JSON for this endpoint: {e}"),
    )
}

/// `POST /v1/topics` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    /// Default: the broker's `num.partitions`.
    #[serde(default)]
    partitions: Option<i32>,
    /// Default: the broker's `default.replication.factor`.
    #[serde(default)]
    replication_factor: Option<i16>,
    /// Topic configs; values may be strings, numbers or booleans.
    #[serde(default)]
    configs: BTreeMap<String, Value>,
}

fn config_value(key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidConfig",
            format!("config {key}: the value must be a string, number or boolean"),
        )),
    }
}

/// `POST /v1/topics`: creates a topic through the controller (as CreateTopics does) and
/// answers once this broker's metadata has it. 201, 400 (bad JSON or a value the controller
/// refuses), 409 (exists), 503 (no controller).
pub async fn create_topic(State(state): State<Arc<Observe>>, body: Bytes) -> Response {
    match create(&state, &body).await {
        Ok(v) => json(StatusCode::CREATED, v),
        Err(e) => e.into_response(),
    }
}

async fn create(state: &Observe, body: &[u8]) -> Result<Value, ApiError> {
    let broker = state.broker()?;
    let req: NewTopic = serde_json::from_slice(body).map_err(bad_json)?;
    if req.name.is_empty() {
        return Err(ApiError::kafka(
            codes::INVALID_TOPIC_EXCEPTION,
            "the topic name is empty",
        ));
    }
    let configs = req
        .configs
        .iter()
        .map(|(k, v)| Ok((k.clone(), Some(config_value(k, v)?))))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let topic = CreatableTopic {
        name: req.name.clone(),
        num_partitions: req.partitions.unwrap_or(-1),
        replication_factor: req.replication_factor.unwrap_or(-1),
        assignments: Vec::new(),
        configs,
    };
    let mut results =
        crate::handlers::topics::create_via_controller(broker, vec![topic], false, CREATE_TIMEOUT)
            .await;
    let created = match results.pop() {
        Some((_, Ok(c))) => c,
        Some((_, Err(e))) => return Err(ApiError::kafka(e.code, e.message)),
        None => {
            return Err(ApiError::kafka(
                codes::UNKNOWN_SERVER_ERROR,
                "the controller gave no answer for the topic",
            ));
        }
    };
    let (_, visible) = broker
        .wait_for_image(CREATE_TIMEOUT, |img| {
            img.topic(&req.name).is_some_and(|t| {
                t.id == created.topic_id && t.partitions.len() == created.num_partitions as usize
            })
        })
        .await;
    if !visible {
        tracing::warn!(topic = %req.name, "the created topic did not reach this broker's metadata in time");
    }
    Ok(json!({
        "name": req.name,
        "id": created.topic_id.to_string(),
        "partitions": created.num_partitions,
        "replication_factor": created.replication_factor,
    }))
}

/// `GET /v1/topics`: every topic in this broker's metadata, with its partitions.
pub async fn list_topics(State(state): State<Arc<Observe>>) -> Response {
    match state.broker() {
        Ok(b) => json(StatusCode::OK, topics_json(&b.image())),
        Err(e) => e.into_response(),
    }
}

fn topics_json(image: &MetadataImage) -> Value {
    let topics: Vec<Value> = image
        .topic_names
        .iter()
        .filter_map(|(name, id)| image.topics.get(id).map(|t| (name, t)))
        .map(|(name, t)| {
            let partitions: Vec<Value> = t
                .partitions
                .iter()
                .map(|(p, r)| {
                    json!({
                        "partition": p,
                        "leader": r.leader,
                        "leader_epoch": r.leader_epoch,
                        "replicas": r.replicas,
                        "isr": r.isr,
                    })
                })
                .collect();
            json!({
                "name": name,
                "id": t.id.to_string(),
                "internal": is_internal_topic(name),
                "partitions": partitions,
            })
        })
        .collect();
    json!({ "topics": topics })
}

/// Turns a group coordinator error into an answer: NOT_COORDINATOR means "no such group"
/// when no group can exist yet (no offsets topic), "loading" when this broker is about to
/// coordinate it, and otherwise names the broker that does.
fn group_error(broker: &Broker, image: &MetadataImage, group: &str, code: i16) -> ApiError {
    if code == codes::GROUP_ID_NOT_FOUND {
        return ApiError::kafka(code, format!("group {group} does not exist"));
    }
    if code != codes::NOT_COORDINATOR {
        return ApiError::kafka(code, format!("group {group}: {}", error_name(code)));
    }
    if image.topic(OFFSETS_TOPIC).is_none() {
        return ApiError::kafka(
            codes::GROUP_ID_NOT_FOUND,
            format!("group {group} does not exist (no group has been created yet)"),
        );
    }
    let p = broker.groups.partition_for(group, image);
    match image.partition(OFFSETS_TOPIC, p).map(|r| r.leader) {
        Some(leader) if leader == broker.node_id => ApiError::kafka(
            codes::COORDINATOR_LOAD_IN_PROGRESS,
            format!("this broker is loading the coordinator state of group {group}; retry"),
        ),
        Some(leader) if leader >= 0 => ApiError::kafka(
            codes::NOT_COORDINATOR,
            format!("broker {leader} coordinates group {group}; ask its HTTP listener"),
        )
        .with("coordinator", json!(leader)),
        _ => ApiError::kafka(
            codes::COORDINATOR_NOT_AVAILABLE,
            format!("group {group} has no coordinator right now"),
        ),
    }
}

/// `GET /v1/groups/{group}/lag`: per partition, the committed offset, the log end (high
/// watermark: what consumers can read, and the log end offset) and the lag.
pub async fn group_lag(State(state): State<Arc<Observe>>, Path(group): Path<String>) -> Response {
    let broker = match state.broker() {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let lag = match broker.group_lag(&group) {
        Ok(l) => l,
        Err(code) => return group_error(broker, &broker.image(), &group, code).into_response(),
    };
    let partitions: Vec<Value> = lag
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "committed_offset": p.committed_offset,
                "high_watermark": p.high_watermark,
                "log_end_offset": p.log_end_offset,
                "lag": p.lag,
                "member_id": p.owner.as_ref().map(|o| &o.member_id),
                "client_id": p.owner.as_ref().map(|o| &o.client_id),
                "client_host": p.owner.as_ref().map(|o| &o.client_host),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        json!({
            "group": lag.group_id,
            "state": lag.state,
            "type": lag.group_type,
            "total_lag": lag.total_lag(),
            "partitions": partitions,
        }),
    )
}

/// `POST /v1/groups/{group}/rebalance`: forces a rebalance ([`crate::group::force`]). 202 once
/// the group is rebalancing (members learn it on their next heartbeat), 404 unknown group, 409
/// a group without members.
pub async fn rebalance(State(state): State<Arc<Observe>>, Path(group): Path<String>) -> Response {
    match force(&state, &group).await {
        Ok(v) => json(StatusCode::ACCEPTED, v),
        Err(e) => e.into_response(),
    }
}

async fn force(state: &Observe, group: &str) -> Result<Value, ApiError> {
    let broker = state.broker()?;
    let image = broker.image();
    let shard = broker
        .groups
        .shard_for(group, &image)
        .map_err(|c| group_error(broker, &image, group, c))?;
    let forced = shard
        .write(|st| st.force_rebalance(group))
        .map_err(|c| group_error(broker, &image, group, c))?;
    match forced {
        Ok(Forced::Classic { from, members }) => Ok(json!({
            "group": group,
            "type": crate::group::admin::CLASSIC_GROUP_TYPE,
            "previous_state": from,
            "state": "PreparingRebalance",
            "members": members,
        })),
        Ok(Forced::AlreadyRebalancing { members }) => Ok(json!({
            "group": group,
            "type": crate::group::admin::CLASSIC_GROUP_TYPE,
            "previous_state": "PreparingRebalance",
            "state": "PreparingRebalance",
            "members": members,
        })),
        Ok(Forced::Consumer {
            epoch,
            members,
            end,
        }) => {
            // The new epoch must survive a coordinator failover before it is reported.
            shard
                .committed(end)
                .await
                .map_err(|c| group_error(broker, &image, group, c))?;
            Ok(json!({
                "group": group,
                "type": crate::group::consumer::CONSUMER_GROUP_TYPE,
                "group_epoch": epoch,
                "members": members,
            }))
        }
        Err(Refused::NoMembers) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "GroupHasNoMembers",
            format!("group {group} has no members to rebalance"),
        )),
        Err(Refused::Code(c)) => Err(group_error(broker, &image, group, c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_map_to_statuses_that_mean_the_same() {
        assert_eq!(status_of(codes::TOPIC_ALREADY_EXISTS), StatusCode::CONFLICT);
        assert_eq!(
            status_of(codes::INVALID_PARTITIONS),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_of(codes::GROUP_ID_NOT_FOUND), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(codes::NOT_CONTROLLER),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(codes::UNKNOWN_SERVER_ERROR),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn topic_bodies_are_strict() {
        let t: NewTopic =
            serde_json::from_str(r#"{"name":"a","partitions":3,"configs":{"retention.ms":1000}}"#)
                .unwrap();
        assert_eq!(t.partitions, Some(3));
        assert_eq!(
            config_value("retention.ms", &t.configs["retention.ms"]).unwrap(),
            "1000"
        );
        assert!(serde_json::from_str::<NewTopic>(r#"{"name":"a","partitons":3}"#).is_err());
        assert!(serde_json::from_str::<NewTopic>(r#"{"partitions":3}"#).is_err());
        assert!(serde_json::from_str::<NewTopic>(r#"{"name":"a","partitions":"x"}"#).is_err());
        assert!(config_value("k", &json!([1])).is_err());
    }
}
