//! Human tables (the default) and JSON (`--output json`).

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document (or JSON lines for `consume`) for scripts.
    Json,
}

/// A borderless table with upper-case headings.
pub fn table<I, S>(headings: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headings.into_iter().map(|h| h.as_ref().to_uppercase()));
    t
}

/// Prints a table, trimming the padding comfy-table leaves at line ends.
pub fn print_table(t: &Table) {
    let text = t.to_string();
    let mut out = std::io::stdout().lock();
    for line in text.lines() {
        // The preset pads every cell by one space; drop the one before the first column.
        let line = line.strip_prefix(' ').unwrap_or(line);
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

pub fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

/// Joins broker ids as `1,2,3`.
pub fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}
