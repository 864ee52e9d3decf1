//! `--set KEY=VALUE`: overrides any scenario field by its dotted path before the scenario is resolved.
//!
//! Paths are the TOML keys joined by dots (`model.top_k`, `cluster.nodes`, `workload.skew.s`); entries of
//! `[[strategy]]` are addressed by index or by name (`strategy.0.capacity_factor`, `strategy.ep16.ep_size`).
//! A name may contain dots (`strategy.ep16-cf1.25.capacity_factor`): the longest name that matches wins.
//! Values are TOML (`4`, `1.5`, `true`, `"lognormal"`, `[1, 2]`); a bare word is taken as a string.

/// Applies one `KEY=VALUE` to a parsed scenario document.
pub fn apply_override(doc: &mut toml::Table, assignment: &str) -> Result<(), String> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        format!("--set {assignment}: expected KEY=VALUE, e.g. --set model.top_k=4")
    })?;
    let key = key.trim();
    let raw = raw.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key v"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(format!("--set {assignment}: empty key"));
    }
    let mut table = doc;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let next = parts[i + 1];
        let is_array = matches!(table.get(*part), Some(toml::Value::Array(_)));
        if is_array {
            let Some(toml::Value::Array(items)) = table.get_mut(*part) else {
                unreachable!()
            };
            if parts.len() < i + 3 {
                return Err(format!("--set {key}: name a field inside `{part}.{next}`"));
            }
            // An entry by index, else by name; names may contain dots (`ep16-cf1.25`), so the longest
            // run of parts that names an entry wins, leaving at least one part for the field.
            let (pos, used) = match next.parse::<usize>() {
                Ok(n) if n < items.len() => (n, 1),
                _ => (1..parts.len() - i - 1)
                    .rev()
                    .find_map(|len| {
                        let name = parts[i + 1..i + 1 + len].join(".");
                        items
                            .iter()
                            .position(|it| it.get("name").and_then(|n| n.as_str()) == Some(&name))
                            .map(|p| (p, len))
                    })
                    .ok_or_else(|| {
                        let names: Vec<&str> = items
                            .iter()
                            .filter_map(|it| it.get("name").and_then(|n| n.as_str()))
                            .collect();
                        format!(
                            "--set {key}: no entry `{next}` in `{part}` (use an index or a name: {})",
                            names.join(", ")
                        )
                    })?,
            };
            let rest = parts[i + 1 + used..].join(".");
            let item = items[pos]
                .as_table_mut()
                .ok_or_else(|| format!("--set {key}: `{part}` entries are not tables"))?;
            return apply_override(item, &format!("{rest}={raw}"));
        }
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("--set {key}: `{part}` is a value, not a table"))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_nested_values_and_strategy_entries() {
        let mut doc: toml::Table =
            toml::from_str("[model]\ntop_k = 2\n[[strategy]]\nname = \"ep\"\nkind = \"ep\"\n")
                .unwrap();
        apply_override(&mut doc, "model.top_k=4").unwrap();
        apply_override(&mut doc, "strategy.ep.capacity_factor=1.5").unwrap();
        apply_override(&mut doc, "strategy.0.ep_size=8").unwrap();
        apply_override(&mut doc, "workload.skew.distribution=zipf").unwrap();
        assert_eq!(doc["model"]["top_k"].as_integer(), Some(4));
        assert_eq!(doc["strategy"][0]["capacity_factor"].as_float(), Some(1.5));
        assert_eq!(doc["strategy"][0]["ep_size"].as_integer(), Some(8));
        assert_eq!(
            doc["workload"]["skew"]["distribution"].as_str(),
            Some("zipf")
        );
        assert!(apply_override(&mut doc, "strategy.nope.x=1").is_err());
        assert!(
            apply_override(&mut doc, "strategy.ep=1").is_err(),
            "no field named"
        );
        assert!(apply_override(&mut doc, "model.top_k").is_err());
    }

    #[test]
    fn strategy_names_may_contain_dots() {
        let mut doc: toml::Table = toml::from_str(
            "[[strategy]]\nname = \"ep16\"\nkind = \"ep\"\n[[strategy]]\nname = \"ep16-cf1.25\"\nkind = \"ep\"\n",
        )
        .unwrap();
        apply_override(&mut doc, "strategy.ep16-cf1.25.capacity_factor=1.5").unwrap();
        assert_eq!(doc["strategy"][1]["capacity_factor"].as_float(), Some(1.5));
        assert!(doc["strategy"][0].get("capacity_factor").is_none());
        apply_override(&mut doc, "strategy.ep16.ep_size=8").unwrap();
        assert_eq!(doc["strategy"][0]["ep_size"].as_integer(), Some(8));
        let e = apply_override(&mut doc, "strategy.ep16-cf1.5.ep_size=8").unwrap_err();
        assert!(e.contains("ep16, ep16-cf1.25"), "{e}");
    }
}
