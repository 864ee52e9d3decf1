//! The scenario parser with overrides: the input is TOML, then optional `--set KEY=VALUE` lines after a
//! line `#--set`. Accepted scenarios must be within the limits checked before a run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moesim_sim::scenario::{limits, parse_scenario};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, sets) = text.split_once("\n#--set\n").unwrap_or((text, ""));
    let sets: Vec<String> = sets.lines().map(String::from).collect();
    if let Ok(s) = parse_scenario("fuzz.toml", toml, &sets) {
        let cost = limits::estimate(&s);
        assert!(cost.work.is_finite() && cost.memory_bytes.is_finite());
        assert!(s.cluster.gpus() <= limits::MAX_GPUS);
    }
});
