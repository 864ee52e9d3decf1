//! The JSON readers: plan, profile, fit and sweep shard; the first byte picks one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    match pick % 4 {
        0 => {
            let _ = serde_json::from_str::<moesim_sim::plan::Plan>(text);
        }
        1 => {
            let _ = moesim_calibrate::profile::Profile::from_json("fuzz.json", text)
                .map(|p| moesim_calibrate::measured::MeasuredCost::from_profile(&p));
        }
        2 => {
            if let Ok(f) = serde_json::from_str::<moesim_traces::fit::Fit>(text) {
                let _ = f.model.validate();
            }
        }
        _ => {
            if let Ok(s) = serde_json::from_str::<moesim_reports::sweep::SweepShard>(text) {
                let _ = moesim_reports::sweep::merge(vec![s]);
            }
        }
    }
});
