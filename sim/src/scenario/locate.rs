//! Finds where a dotted field path (`model.top_k`, `strategy[1].ep_size`) is written in a scenario's text,
//! so that semantic errors can point at the line as syntax errors do.
//!
//! Written by hand because the TOML parser's spans are lost once presets and overrides are merged; this
//! scanner understands the subset scenario files use (`[table]`, `[[array]]`, `key = value` lines).

use std::ops::Range;

/// A step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Parses `strategy[1].ep_size` into segments.
pub fn parse_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        if let Some((key, rest)) = part.split_once('[') {
            out.push(Seg::Key(key));
            if let Ok(i) = rest.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        } else {
            out.push(Seg::Key(part));
        }
    }
    out
}

/// The byte range of the value of `path`, if written in `text`; else of its table's `preset` key; else of
/// the table header; else `None`.
pub fn locate(text: &str, path: &str) -> Option<Range<usize>> {
    let segs = parse_path(path);
    let (table, key) = match segs.split_last() {
        Some((Seg::Key(k), t)) => (t, Some(*k)),
        _ => (&segs[..], None),
    };
    let table_name = table
        .iter()
        .filter_map(|s| if let Seg::Key(k) = s { Some(*k) } else { None })
        .collect::<Vec<_>>()
        .join(".");
    let index = table.iter().find_map(|s| {
        if let Seg::Index(i) = s {
            Some(*i)
        } else {
            None
        }
    });

    let mut current = String::new();
    let mut array_seen: std::collections::HashMap<String, usize> = Default::default();
    let mut current_index: Option<usize> = None;
    let mut header: Option<Range<usize>> = None;
    let mut preset: Option<Range<usize>> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
        {
            let name = name.trim().to_string();
            let n = array_seen.entry(name.clone()).or_insert(0);
            current_index = Some(*n);
            *n += 1;
            current = name;
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_string();
            current_index = None;
        } else if current == table_name && (index.is_none() || index == current_index) {
            if let Some((k, _)) = trimmed.split_once('=') {
                let k = k.trim().trim_matches('"');
                let lead = line.len() - line.trim_start().len();
                let value_start = start + line.find('=').map_or(lead, |p| p + 1);
                let value_start = value_start
                    + (text[value_start..].len() - text[value_start..].trim_start().len());
                let value_end = start + line.trim_end().len();
                let span = value_start..value_end.max(value_start);
                if Some(k) == key {
                    return Some(span);
                }
                if k == "preset" {
                    preset = Some(span);
                }
            }
            continue;
        } else {
            continue;
        }
        if current == table_name && (index.is_none() || index == current_index) && header.is_none()
        {
            header =
                Some(start + (line.len() - line.trim_start().len())..start + line.trim_end().len());
        }
    }
    preset.or(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name = \"x\"\n[model]\npreset = \"mixtral-8x7b\"\ntop_k = 9\n\n[[strategy]]\nname = \"a\"\n[[strategy]]\nname = \"b\"\nep_size = 3\n";

    #[test]
    fn finds_keys_tables_and_array_entries() {
        let at = |p| locate(TEXT, p).map(|r| &TEXT[r]);
        assert_eq!(at("model.top_k"), Some("9"));
        assert_eq!(at("name"), Some("\"x\""));
        assert_eq!(at("strategy[1].ep_size"), Some("3"));
        assert_eq!(at("strategy[0].name"), Some("\"a\""));
        // Not written: falls back to the preset that supplied it.
        assert_eq!(at("model.experts"), Some("\"mixtral-8x7b\""));
        // No preset: the table header.
        assert_eq!(at("strategy[0].ep_size"), Some("[[strategy]]"));
        assert_eq!(at("cluster.nodes"), None);
    }
}
