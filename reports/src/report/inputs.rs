//! Inputs: what is needed to reproduce the report.

use super::Section;
use super::format::heading;
use crate::collect::ScenarioData;
use crate::document::Block;

/// The report's inputs.
pub(super) fn section(sec: &mut Section, d: &ScenarioData) -> Result<(), String> {
    let s = &d.scenario;
    sec.push(heading(2, "Inputs"));
    let i = &d.inputs;
    sec.push(Block::Table {
        header: vec!["input".into(), "value".into()],
        rows: [
            ("scenario file", i.file.clone()),
            (
                "overrides",
                if i.overrides.is_empty() {
                    "none".into()
                } else {
                    i.overrides.join(" ")
                },
            ),
            ("seed", s.seed.to_string()),
            ("workload", i.workload.clone()),
            (
                "workload checksum (FNV-1a of routing counts)",
                i.workload_checksum.clone(),
            ),
            ("cost profile", i.cost_profile.clone()),
            ("moesim version", i.moesim_version.clone()),
        ]
        .into_iter()
        .map(|(k, v)| vec![k.to_string(), v])
        .collect(),
    });
    sec.push(Block::Code {
        lang: "toml".into(),
        text: i.text.clone(),
    });
    Ok(())
}
