//! AlterConfigs (replace all overrides) and IncrementalAlterConfigs (per-key operations) for
//! topics, single brokers and the cluster-wide broker default.

use std::collections::BTreeMap;

use super::{Batch, ControllerLogic};
use crate::configs::{
    ConfigType, topic_config, topic_config_for_broker_key, validate_broker_config,
    validate_topic_config,
};
use crate::controller::requests::*;
use crate::error::ControllerError;
use crate::records::*;

fn list_type(resource: &ConfigResource, key: &str) -> bool {
    let def = match resource {
        ConfigResource::Topic(_) => topic_config(key),
        ConfigResource::Broker(_) => topic_config_for_broker_key(key),
    };
    def.is_some_and(|d| d.ty == ConfigType::List)
}

impl ControllerLogic {
    pub(crate) fn alter_configs(
        &mut self,
        batch: &mut Batch<'_>,
        change: &ConfigChange,
    ) -> Result<(), ControllerError> {
        let (ty, name) = match &change.resource {
            ConfigResource::Topic(t) => {
                if batch.image.topic(t).is_none() {
                    return Err(ControllerError::UnknownTopicOrPartition(t.clone()));
                }
                (ConfigResourceType::Topic, t.clone())
            }
            ConfigResource::Broker(b) => {
                if !b.is_empty() && b.parse::<i32>().is_err() {
                    return Err(ControllerError::InvalidRequest(format!(
                        "broker resource name '{b}' is not a broker id"
                    )));
                }
                (ConfigResourceType::Broker, b.clone())
            }
        };
        let current: BTreeMap<String, String> = batch
            .image
            .config_overrides(ty, &name)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut wanted = if change.incremental {
            current.clone()
        } else {
            BTreeMap::new()
        };
        for (key, op, value) in &change.ops {
            match (op, value) {
                (AlterConfigOp::Set, Some(v)) => {
                    wanted.insert(key.clone(), v.clone());
                }
                (AlterConfigOp::Set, None) if !change.incremental => {}
                (AlterConfigOp::Set, None) => {
                    return Err(ControllerError::InvalidRequest(format!(
                        "SET of '{key}' needs a value"
                    )));
                }
                (AlterConfigOp::Delete, _) => {
                    wanted.remove(key);
                }
                (AlterConfigOp::Append | AlterConfigOp::Subtract, value) => {
                    if !list_type(&change.resource, key) {
                        return Err(ControllerError::InvalidConfig(format!(
                            "'{key}' is not a list config; APPEND and SUBTRACT need one"
                        )));
                    }
                    let given: Vec<String> = value
                        .as_deref()
                        .unwrap_or("")
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    let mut items: Vec<String> = wanted
                        .get(key)
                        .map(|v| {
                            v.split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect()
                        })
                        .unwrap_or_default();
                    if *op == AlterConfigOp::Append {
                        for g in given {
                            if !items.contains(&g) {
                                items.push(g);
                            }
                        }
                    } else {
                        items.retain(|i| !given.contains(i));
                    }
                    if items.is_empty() {
                        wanted.remove(key);
                    } else {
                        wanted.insert(key.clone(), items.join(","));
                    }
                }
            }
        }
        for (k, v) in &wanted {
            if current.get(k) == Some(v) {
                continue;
            }
            match ty {
                ConfigResourceType::Topic => validate_topic_config(k, v)?,
                ConfigResourceType::Broker => validate_broker_config(k, v)?,
            }
        }
        for k in current.keys() {
            if !wanted.contains_key(k) {
                batch.emit(MetadataRecord::Config(ConfigRecord {
                    resource_type: ty,
                    resource_name: name.clone(),
                    name: k.clone(),
                    value: None,
                }))?;
            }
        }
        for (k, v) in wanted {
            if current.get(&k) != Some(&v) {
                batch.emit(MetadataRecord::Config(ConfigRecord {
                    resource_type: ty,
                    resource_name: name.clone(),
                    name: k,
                    value: Some(v),
                }))?;
            }
        }
        Ok(())
    }
}
