//! `--set section.key=value` overrides, applied to the experiment's TOML table before parsing.

use anyhow::{bail, Context, Result};

/// Parses the right-hand side of `--set key=value` as TOML (number, bool, string, array, inline
/// table), falling back to a plain string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Applies `section.key=value` overrides to a TOML table.
pub fn apply_overrides(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .with_context(|| format!("--set '{set}': expected section.key=value"))?;
        let path: Vec<&str> = key.trim().split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            bail!("--set '{set}': empty key segment");
        }
        let mut cur = &mut *table;
        for seg in &path[..path.len() - 1] {
            let entry = cur
                .entry(seg.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            cur = entry
                .as_table_mut()
                .with_context(|| format!("--set '{set}': '{seg}' is not a section"))?;
        }
        cur.insert(path[path.len() - 1].to_string(), parse_value(raw.trim()));
    }
    Ok(())
}
