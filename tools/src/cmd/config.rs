//! `fjord config describe|set` for topics and brokers.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Ctx;
use crate::client::admin::{self, RESOURCE_BROKER, RESOURCE_TOPIC, describe_what};
use crate::cmd::topic::{config_ops, report_ops};
use crate::exit::{CliError, Result};
use crate::output::{print_json, print_table, table};

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Resource {
    /// A topic's configs.
    #[arg(long)]
    pub topic: Option<String>,
    /// A broker's configs (its node id).
    #[arg(long)]
    pub broker: Option<i32>,
    /// Cluster-wide dynamic broker defaults.
    #[arg(long)]
    pub broker_defaults: bool,
}

impl Resource {
    fn key(&self) -> (i8, String) {
        match (&self.topic, self.broker) {
            (Some(t), _) => (RESOURCE_TOPIC, t.clone()),
            (None, Some(b)) => (RESOURCE_BROKER, b.to_string()),
            (None, None) => (RESOURCE_BROKER, String::new()),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Show configs: those not at their default, or all with --all.
    Describe {
        #[command(flatten)]
        resource: Resource,
        /// Include configs at their default value.
        #[arg(short, long)]
        all: bool,
    },
    /// Set (`key=value`) or remove (`--delete key`) configs.
    Set {
        #[command(flatten)]
        resource: Resource,
        /// `key=value` pairs to set.
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Config to remove (back to its default); may be repeated.
        #[arg(short, long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Ask the broker to validate the change without applying it.
        #[arg(long)]
        validate_only: bool,
    },
}

pub async fn run(ctx: &Ctx, cmd: ConfigCmd) -> Result<()> {
    match cmd {
        ConfigCmd::Describe { resource, all } => {
            let (kind, name) = resource.key();
            if kind == RESOURCE_TOPIC {
                ctx.client.topics(Some(std::slice::from_ref(&name))).await?;
            }
            if resource.broker_defaults {
                return Err(CliError::Usage(
                    "describe a broker's configs with --broker ID (they include the cluster defaults)".into(),
                ));
            }
            let entries = admin::describe_configs(&ctx.client, kind, &name).await?;
            let shown: Vec<_> = entries.iter().filter(|e| all || !e.is_default()).collect();
            if ctx.json() {
                print_json(&json!({
                    "resource": describe_what(kind, &name),
                    "configs": shown.iter().map(|e| json!({
                        "name": e.name,
                        "value": if e.sensitive { Value::Null } else { json!(e.value) },
                        "source": e.source,
                        "read_only": e.read_only,
                        "sensitive": e.sensitive,
                    })).collect::<Vec<_>>(),
                }));
            } else {
                let mut t = table(["name", "value", "source", "read-only"]);
                for e in shown {
                    t.add_row(vec![
                        e.name.clone(),
                        if e.sensitive {
                            "(sensitive)".into()
                        } else {
                            e.value.clone().unwrap_or_else(|| "null".into())
                        },
                        e.source.to_string(),
                        e.read_only.to_string(),
                    ]);
                }
                print_table(&t);
            }
            Ok(())
        }
        ConfigCmd::Set {
            resource,
            pairs,
            delete,
            validate_only,
        } => {
            let (kind, name) = resource.key();
            let ops = config_ops(&pairs, &delete)?;
            if kind == RESOURCE_TOPIC {
                ctx.client.topics(Some(std::slice::from_ref(&name))).await?;
            }
            admin::alter_configs(&ctx.client, kind, &name, &ops, validate_only).await?;
            let what = describe_what(kind, &name);
            if validate_only {
                if ctx.json() {
                    print_json(&json!({"resource": what, "valid": true}));
                } else {
                    println!("{what}: the change is valid (nothing applied)");
                }
                return Ok(());
            }
            report_ops(ctx, &what, &ops);
            Ok(())
        }
    }
}
