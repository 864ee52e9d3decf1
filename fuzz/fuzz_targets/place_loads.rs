//! `moesim place`'s load-history reader (long CSV, per-layer rows, or load-matrix JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("loads.csv");
    std::fs::write(&p, data).unwrap();
    if let Ok((h, ids)) = moesim_reports::place_loads::read_loads(&p) {
        assert_eq!(ids.len(), h.layers);
        assert!(h.iterations.iter().all(|it| it.len() == h.layers));
    }
});
