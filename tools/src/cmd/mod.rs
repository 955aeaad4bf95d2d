//! One module per top-level command.

pub mod cluster;
pub mod config;
pub mod consume;
pub mod group;
pub mod perf;
pub mod produce;
pub mod reassign;
pub mod topic;

use crate::exit::CliError;

/// Parses `key=value`.
pub fn key_value(s: &str, what: &str) -> Result<(String, String), CliError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(CliError::Usage(format!("{what} '{s}' is not key=value"))),
    }
}

/// Parses `topic` or `topic:0,1,2` (the partitions of a `--topic` argument).
pub fn topic_partitions(s: &str) -> Result<(String, Option<Vec<i32>>), CliError> {
    match s.rsplit_once(':') {
        None => Ok((s.to_string(), None)),
        Some((t, ps)) if !t.is_empty() => {
            let parts = ps
                .split(',')
                .map(|p| p.trim().parse::<i32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    CliError::Usage(format!(
                        "'{s}': expected topic or topic:partition,partition,..."
                    ))
                })?;
            if parts.iter().any(|&p| p < 0) {
                return Err(CliError::Usage(format!("'{s}': negative partition")));
            }
            Ok((t.to_string(), Some(parts)))
        }
        _ => Err(CliError::Usage(format!("'{s}': empty topic name"))),
    }
}

/// Milliseconds since the epoch from an RFC 3339 date-time (`2024-05-01T12:00:00Z`, with or
/// without fraction or offset; without an offset it is UTC), a date (`2024-05-01`, midnight UTC),
/// or a plain number of milliseconds.
pub fn parse_time(s: &str) -> Result<i64, CliError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc().timestamp_millis());
    }
    Err(CliError::Usage(format!(
        "'{s}' is not a time: use RFC 3339 (2024-05-01T12:00:00Z), a date (2024-05-01) or epoch milliseconds"
    )))
}

/// RFC 3339 in UTC with milliseconds, for display.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_time("1970-01-01T01:00:01+01:00").unwrap(), 1000);
        assert_eq!(parse_time("1970-01-01T00:00:01.5").unwrap(), 1500);
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400_000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_time(1500), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn topic_partition_args() {
        assert_eq!(topic_partitions("t").unwrap(), ("t".into(), None));
        assert_eq!(
            topic_partitions("t:0,2").unwrap(),
            ("t".into(), Some(vec![0, 2]))
        );
        assert!(topic_partitions("t:x").is_err());
        assert!(topic_partitions(":1").is_err());
    }
}
