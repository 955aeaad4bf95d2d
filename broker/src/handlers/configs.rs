//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and brokers.
//!
//! Describe reports every topic config of the catalog (`fjord_raft::configs`) with the value in
//! force and where it comes from, most specific first: topic override, this broker's dynamic
//! config, the cluster-wide dynamic default, the static broker config file, Kafka's default.
//! Alterations go to the controller, which validates them against the same catalog.

use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use fjord_protocol::kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
    alter_configs_response, incremental_alter_configs_response,
};
use fjord_protocol::kafka_protocol::protocol::StrBytes;
use fjord_raft::MetadataImage;
use fjord_raft::configs::{BROKER_DYNAMIC_CONFIGS, TOPIC_CONFIGS, TopicConfigDef};
use fjord_raft::controller::requests::{
    AlterConfigOp, ApiError, ConfigChange, ConfigResource, ControllerRequest, ControllerResponse,
};
use fjord_raft::records::ConfigResourceType;

use crate::broker::Broker;
use crate::codes::{self, config_source as src};
use crate::dispatch::{Reply, RequestContext};
use crate::util::str_bytes;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// How long an alteration waits to see its change applied here before answering.
const APPLY_WAIT: Duration = Duration::from_secs(5);

pub fn handle_describe_configs(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: DescribeConfigsRequest,
) -> Reply {
    let image = broker.image();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let keys: Option<Vec<&str>> = r
                .configuration_keys
                .as_ref()
                .map(|k| k.iter().map(|s| s.as_str()).collect());
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let described = match r.resource_type {
                TOPIC => describe_topic(broker, &image, r.resource_name.as_str(), &req, &ctx),
                BROKER => describe_broker(broker, &image, r.resource_name.as_str(), &req, &ctx),
                other => Err((
                    codes::INVALID_REQUEST,
                    format!("resource type {other} is not supported"),
                )),
            };
            match described {
                Ok(configs) => base.with_configs(
                    configs
                        .into_iter()
                        .filter(|c| keys.as_ref().is_none_or(|k| k.contains(&c.name.as_str())))
                        .collect(),
                ),
                Err((code, message)) => base
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    Reply::now(ResponseKind::DescribeConfigs(
        DescribeConfigsResponse::default().with_results(results),
    ))
}

struct Layer {
    name: String,
    value: String,
    source: i8,
}

/// Where `def`'s value can come from, most specific first, for a topic (`topic` given) or for
/// the broker-level synonym.
fn layers(
    broker: &Broker,
    image: &MetadataImage,
    def: &TopicConfigDef,
    topic: Option<&str>,
) -> Vec<Layer> {
    let mut out = Vec::new();
    if let Some(t) = topic
        && let Some(v) = image
            .config_overrides(ConfigResourceType::Topic, t)
            .and_then(|o| o.get(def.name))
    {
        out.push(Layer {
            name: def.name.to_string(),
            value: v.clone(),
            source: src::TOPIC_CONFIG,
        });
    }
    if let Some(key) = def.broker_synonym {
        for (resource, source) in [
            (broker.node_id.to_string(), src::DYNAMIC_BROKER_CONFIG),
            (String::new(), src::DYNAMIC_DEFAULT_BROKER_CONFIG),
        ] {
            if let Some(v) = image
                .config_overrides(ConfigResourceType::Broker, &resource)
                .and_then(|o| o.get(key))
            {
                out.push(Layer {
                    name: key.to_string(),
                    value: v.clone(),
                    source,
                });
            }
        }
        if let Some(v) = broker.config.static_topic_default(def.name) {
            out.push(Layer {
                name: key.to_string(),
                value: v.to_string(),
                source: src::STATIC_BROKER_CONFIG,
            });
        }
    }
    out.push(Layer {
        name: def.broker_synonym.unwrap_or(def.name).to_string(),
        value: def.default.to_string(),
        source: src::DEFAULT_CONFIG,
    });
    out
}

fn entry(
    name: &str,
    def: &TopicConfigDef,
    layers: Vec<Layer>,
    req: &DescribeConfigsRequest,
    ctx: &RequestContext,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    let top = &layers[0];
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(&top.value)))
        .with_read_only(read_only)
        .with_config_source(top.source);
    if req.include_synonyms {
        e = e.with_synonyms(
            layers
                .iter()
                .map(|l| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(&l.name))
                        .with_value(Some(str_bytes(&l.value)))
                        .with_source(l.source)
                })
                .collect(),
        );
    }
    if ctx.version() >= 3 {
        e = e.with_config_type(def.ty.id());
        if req.include_documentation {
            e = e.with_documentation(Some(str_bytes(def.doc)));
        }
    }
    e
}

type Described = Result<Vec<DescribeConfigsResourceResult>, (i16, String)>;

fn describe_topic(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    req: &DescribeConfigsRequest,
    ctx: &RequestContext,
) -> Described {
    if image.topic(topic).is_none() {
        return Err((
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic '{topic}' does not exist"),
        ));
    }
    Ok(TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let l = layers(broker, image, def, Some(topic));
            entry(def.name, def, l, req, ctx, false)
        })
        .collect())
}

fn describe_broker(
    broker: &Broker,
    image: &MetadataImage,
    name: &str,
    req: &DescribeConfigsRequest,
    ctx: &RequestContext,
) -> Described {
    if !name.is_empty() && name != broker.node_id.to_string() {
        return Err((
            codes::INVALID_REQUEST,
            format!("this is broker {}, not '{name}'", broker.node_id),
        ));
    }
    let mut out: Vec<DescribeConfigsResourceResult> = TOPIC_CONFIGS
        .iter()
        .chain(BROKER_DYNAMIC_CONFIGS)
        .filter_map(|def| {
            let key = def.broker_synonym?;
            let l = layers(broker, image, def, None);
            Some(entry(key, def, l, req, ctx, false))
        })
        .collect();
    // The rest of the static file: read-only here.
    for (k, v) in &broker.config.raw {
        if out.iter().any(|e| e.name.as_str() == k) {
            continue;
        }
        out.push(
            DescribeConfigsResourceResult::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(v)))
                .with_read_only(true)
                .with_config_source(src::STATIC_BROKER_CONFIG),
        );
    }
    Ok(out)
}

fn resource(resource_type: i8, name: &StrBytes) -> Result<ConfigResource, ApiError> {
    match resource_type {
        TOPIC => Ok(ConfigResource::Topic(name.as_str().to_string())),
        BROKER => Ok(ConfigResource::Broker(name.as_str().to_string())),
        other => Err(ApiError {
            code: codes::INVALID_REQUEST,
            message: format!("resource type {other} is not supported"),
        }),
    }
}

/// Sends the valid changes to the controller and returns one result per input, in order.
async fn alter(
    broker: &Broker,
    changes: Vec<Result<ConfigChange, ApiError>>,
    validate_only: bool,
) -> Vec<Result<(), ApiError>> {
    let valid: Vec<ConfigChange> = changes
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let mut answers: std::collections::VecDeque<Result<(), ApiError>> = if valid.is_empty() {
        Default::default()
    } else {
        match broker
            .controller
            .call(
                ControllerRequest::AlterConfigs {
                    changes: valid.clone(),
                    validate_only,
                },
                APPLY_WAIT * 2,
            )
            .await
        {
            Ok(ControllerResponse::AlterConfigs(results)) => {
                results.into_iter().map(|(_, r)| r).collect()
            }
            Ok(_) => valid
                .iter()
                .map(|_| {
                    Err(ApiError {
                        code: codes::UNKNOWN_SERVER_ERROR,
                        message: "unexpected controller answer".into(),
                    })
                })
                .collect(),
            Err(e) => {
                let e = ApiError::from(e);
                valid.iter().map(|_| Err(e.clone())).collect()
            }
        }
    };
    let applied: Vec<ConfigChange> = valid
        .iter()
        .zip(answers.iter())
        .filter(|(_, r)| r.is_ok())
        .map(|(c, _)| c.clone())
        .collect();
    if !validate_only && !applied.is_empty() {
        broker
            .wait_for_image(APPLY_WAIT, |img| applied.iter().all(|c| visible(img, c)))
            .await;
    }
    changes
        .into_iter()
        .map(|c| match c {
            Err(e) => Err(e),
            Ok(_) => answers.pop_front().unwrap_or(Err(ApiError {
                code: codes::UNKNOWN_SERVER_ERROR,
                message: "missing controller answer".into(),
            })),
        })
        .collect()
}

/// Whether the image already shows the SET and DELETE operations of `c`.
fn visible(image: &MetadataImage, c: &ConfigChange) -> bool {
    let (ty, name) = match &c.resource {
        ConfigResource::Topic(t) => (ConfigResourceType::Topic, t.as_str()),
        ConfigResource::Broker(b) => (ConfigResourceType::Broker, b.as_str()),
    };
    let overrides = image.config_overrides(ty, name);
    c.ops.iter().all(|(k, op, v)| match op {
        AlterConfigOp::Set => overrides.and_then(|o| o.get(k)) == v.as_ref(),
        AlterConfigOp::Delete => overrides.is_none_or(|o| !o.contains_key(k)),
        AlterConfigOp::Append | AlterConfigOp::Subtract => true,
    })
}

pub fn handle_alter_configs(
    broker: &Arc<Broker>,
    _ctx: RequestContext,
    req: AlterConfigsRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move {
        let changes = req
            .resources
            .iter()
            .map(|r| {
                Ok(ConfigChange {
                    resource: resource(r.resource_type, &r.resource_name)?,
                    incremental: false,
                    ops: r
                        .configs
                        .iter()
                        .map(|c| {
                            (
                                c.name.as_str().to_string(),
                                AlterConfigOp::Set,
                                c.value.as_ref().map(|v| v.as_str().to_string()),
                            )
                        })
                        .collect(),
                })
            })
            .collect();
        let results = alter(&broker, changes, req.validate_only).await;
        let responses = req
            .resources
            .iter()
            .zip(results)
            .map(|(r, res)| {
                let base = alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                match res {
                    Ok(()) => base,
                    Err(e) => base
                        .with_error_code(e.code)
                        .with_error_message(Some(str_bytes(&e.message))),
                }
            })
            .collect();
        ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
    })
}

pub fn handle_incremental_alter_configs(
    broker: &Arc<Broker>,
    _ctx: RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move {
        let changes = req
            .resources
            .iter()
            .map(|r| {
                let mut ops = Vec::with_capacity(r.configs.len());
                for c in &r.configs {
                    let op =
                        AlterConfigOp::from_id(c.config_operation).ok_or_else(|| ApiError {
                            code: codes::INVALID_REQUEST,
                            message: format!("unknown config operation {}", c.config_operation),
                        })?;
                    ops.push((
                        c.name.as_str().to_string(),
                        op,
                        c.value.as_ref().map(|v| v.as_str().to_string()),
                    ));
                }
                Ok(ConfigChange {
                    resource: resource(r.resource_type, &r.resource_name)?,
                    incremental: true,
                    ops,
                })
            })
            .collect();
        let results = alter(&broker, changes, req.validate_only).await;
        let responses = req
            .resources
            .iter()
            .zip(results)
            .map(|(r, res)| {
                let base =
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name.clone());
                match res {
                    Ok(()) => base,
                    Err(e) => base
                        .with_error_code(e.code)
                        .with_error_message(Some(str_bytes(&e.message))),
                }
            })
            .collect();
        ResponseKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsResponse::default().with_responses(responses),
        )
    })
}
