//! Where the brokers are: `-b/--brokers`, then `FJORD_BROKERS`, then a profile from the config
//! file (`--profile` or `FJORD_PROFILE`, else the file's `default_profile`), then
//! `127.0.0.1:9092`.
//!
//! The file is `$FJORD_CONFIG`, else `$XDG_CONFIG_HOME/fjord/config.toml`, else
//! `~/.config/fjord/config.toml`:
//!
//! ```toml
//! default_profile = "local"
//!
//! [profiles.local]
//! brokers = "127.0.0.1:9092"
//!
//! [profiles.prod]
//! brokers = ["kafka-1:9092", "kafka-2:9092"]
//! request_timeout_ms = 10000
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::exit::CliError;

pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Profile {
    brokers: Brokers,
    request_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum Brokers {
    List(Vec<String>),
    One(String),
}

/// The resolved connection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub brokers: Vec<String>,
    pub request_timeout_ms: Option<u64>,
    /// Where the broker list came from, for error messages.
    pub source: String,
}

pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FJORD_CONFIG") {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("fjord/config.toml"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/fjord/config.toml"))
}

/// Splits `a:1,b:2` into addresses, rejecting ones without a port.
pub fn split_brokers(list: &str, source: &str) -> Result<Vec<String>, CliError> {
    let out: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.strip_prefix("PLAINTEXT://").unwrap_or(s).to_string())
        .collect();
    if out.is_empty() {
        return Err(CliError::Usage(format!("{source}: empty broker list")));
    }
    for a in &out {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => {
                return Err(CliError::Usage(format!("{source}: '{a}' is not host:port")));
            }
        }
    }
    Ok(out)
}

pub fn resolve(flag: Option<&str>, profile: Option<&str>) -> Result<Target, CliError> {
    resolve_with(
        flag,
        std::env::var("FJORD_BROKERS").ok().as_deref(),
        profile
            .map(str::to_string)
            .or_else(|| std::env::var("FJORD_PROFILE").ok())
            .as_deref(),
        config_path(),
    )
}

fn resolve_with(
    flag: Option<&str>,
    env: Option<&str>,
    profile: Option<&str>,
    path: Option<PathBuf>,
) -> Result<Target, CliError> {
    let file = load(path.as_ref(), profile.is_some())?;
    let timeout_of = |name: &str| file.profiles.get(name).and_then(|p| p.request_timeout_ms);
    if let Some(list) = flag {
        return Ok(Target {
            brokers: split_brokers(list, "--brokers")?,
            request_timeout_ms: profile.and_then(timeout_of),
            source: "--brokers".into(),
        });
    }
    if let Some(list) = env.filter(|e| !e.trim().is_empty()) {
        return Ok(Target {
            brokers: split_brokers(list, "FJORD_BROKERS")?,
            request_timeout_ms: profile.and_then(timeout_of),
            source: "FJORD_BROKERS".into(),
        });
    }
    let name = profile.map(str::to_string).or(file.default_profile.clone());
    if let Some(name) = name {
        let shown = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let Some(p) = file.profiles.get(&name) else {
            return Err(CliError::Usage(format!(
                "profile '{name}' is not defined in {shown} (defined: {})",
                file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let source = format!("profile '{name}' in {shown}");
        let brokers = match &p.brokers {
            Brokers::One(s) => split_brokers(s, &source)?,
            Brokers::List(v) => split_brokers(&v.join(","), &source)?,
        };
        return Ok(Target {
            brokers,
            request_timeout_ms: p.request_timeout_ms,
            source,
        });
    }
    Ok(Target {
        brokers: vec![DEFAULT_BROKERS.to_string()],
        request_timeout_ms: None,
        source: "the default address".into(),
    })
}

/// Reads the profile file; a missing file is an empty one unless a profile was asked for.
fn load(path: Option<&PathBuf>, required: bool) -> Result<File, CliError> {
    let Some(path) = path else {
        return Ok(File::default());
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(File::default()),
        Err(e) => Err(CliError::Usage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    const TEXT: &str = "default_profile = \"a\"\n[profiles.a]\nbrokers = \"h1:1,h2:2\"\n\
                        [profiles.b]\nbrokers = [\"h3:3\"]\nrequest_timeout_ms = 500\n";

    #[test]
    fn precedence_flag_env_profile_default() {
        let (_d, p) = file(TEXT);
        let t = resolve_with(Some("x:9"), Some("y:9"), Some("b"), Some(p.clone())).unwrap();
        assert_eq!(t.brokers, vec!["x:9"]);
        let t = resolve_with(None, Some("y:9"), None, Some(p.clone())).unwrap();
        assert_eq!(t.brokers, vec!["y:9"]);
        let t = resolve_with(None, None, Some("b"), Some(p.clone())).unwrap();
        assert_eq!(
            (t.brokers, t.request_timeout_ms),
            (vec!["h3:3".into()], Some(500))
        );
        let t = resolve_with(None, None, None, Some(p)).unwrap();
        assert_eq!(t.brokers, vec!["h1:1", "h2:2"]);
        let t = resolve_with(None, None, None, None).unwrap();
        assert_eq!(t.brokers, vec![DEFAULT_BROKERS]);
    }

    #[test]
    fn bad_inputs_are_usage_errors() {
        let (_d, p) = file(TEXT);
        assert!(matches!(
            resolve_with(None, None, Some("nope"), Some(p)),
            Err(CliError::Usage(_))
        ));
        assert!(split_brokers("host-without-port", "x").is_err());
        let (_d2, bad) = file("profiles = 3");
        assert!(resolve_with(None, None, None, Some(bad)).is_err());
        assert!(matches!(
            resolve_with(
                None,
                None,
                Some("a"),
                Some(PathBuf::from("/nonexistent/x.toml"))
            ),
            Err(CliError::Usage(_))
        ));
    }
}
