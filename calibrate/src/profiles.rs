//! The profiles that ship with moesim (`calibrate/profiles/*.json`, compiled into the binary) and the code that
//! generates the datasheet ones from [`crate::datasheet`].
//!
//! A scenario names one with `cluster.profile = "h100-datasheet"`. Measured profiles, once recorded on real
//! GPUs, are added to [`SHIPPED`] beside the datasheet ones. The test `shipped_datasheet_profiles_match_datasheet_rs`
//! fails when a shipped file and `datasheet.rs` disagree; `MOESIM_BLESS_PROFILES=1 cargo test -p moesim-calibrate`
//! rewrites the files from the code.

use crate::cost_model::CopyKind;
use crate::datasheet::{self, GpuDatasheet};
use crate::fit::{CopyFit, FitError, FittedModel, RooflineFit};
use crate::profile::{DeviceInfo, Dtype, FORMAT_VERSION, Profile, Samples, Source};

/// Efficiencies the datasheet profiles assume (the same as [`crate::Roofline::from_datasheet`]).
pub const DATASHEET_COMPUTE_EFFICIENCY: f64 = 0.7;
pub const DATASHEET_MEMORY_EFFICIENCY: f64 = 0.8;

/// Shipped profiles: (name, JSON text).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "a100-datasheet",
        include_str!("../profiles/a100-datasheet.json"),
    ),
    (
        "h100-datasheet",
        include_str!("../profiles/h100-datasheet.json"),
    ),
    (
        "h200-datasheet",
        include_str!("../profiles/h200-datasheet.json"),
    ),
    (
        "b200-datasheet",
        include_str!("../profiles/b200-datasheet.json"),
    ),
    (
        "rtx6000-ada-datasheet",
        include_str!("../profiles/rtx6000-ada-datasheet.json"),
    ),
    (
        "h800-datasheet",
        include_str!("../profiles/h800-datasheet.json"),
    ),
    (
        "h20-datasheet",
        include_str!("../profiles/h20-datasheet.json"),
    ),
    (
        "l40s-datasheet",
        include_str!("../profiles/l40s-datasheet.json"),
    ),
    (
        "rtx4090-datasheet",
        include_str!("../profiles/rtx4090-datasheet.json"),
    ),
    (
        "a5000-datasheet",
        include_str!("../profiles/a5000-datasheet.json"),
    ),
    (
        "rtx3060-datasheet",
        include_str!("../profiles/rtx3060-datasheet.json"),
    ),
    (
        "t4-datasheet",
        include_str!("../profiles/t4-datasheet.json"),
    ),
];

/// Names of the shipped profiles.
pub fn shipped_names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

/// A shipped profile by name, parsed.
pub fn shipped(name: &str) -> Option<Profile> {
    SHIPPED.iter().find(|(n, _)| *n == name).map(|(n, text)| {
        Profile::from_json(&format!("shipped profile {n}"), text)
            .expect("shipped profiles parse (checked by the crate's tests)")
    })
}

/// The datasheet profile of GPU `key` (`a100`, `h100`, `h200`, `b200`, `rtx6000-ada`).
pub fn datasheet_profile(key: &str) -> Option<Profile> {
    let d = datasheet::by_name(key)?;
    Some(from_datasheet(key, &d))
}

/// A profile from datasheet numbers: a roofline at typical efficiencies, copies at the link rates.
pub fn from_datasheet(key: &str, d: &GpuDatasheet) -> Profile {
    let tflops = d.peak_bf16_tflops * DATASHEET_COMPUTE_EFFICIENCY;
    let hbm = d.hbm_gbytes_per_s * DATASHEET_MEMORY_EFFICIENCY;
    let roofline = [Dtype::Bf16, Dtype::Fp16]
        .into_iter()
        .map(|dtype| RooflineFit {
            dtype,
            tflops,
            gbytes_per_s: hbm,
        })
        .collect();
    let copy = |kind, latency_us, gbytes_per_s| CopyFit {
        kind,
        latency_us,
        gbytes_per_s,
        max_error_pct: 0.0,
    };
    let pcie = d.pcie_gbytes_per_s_each_way;
    let copies = vec![
        copy(CopyKind::H2dPinned, datasheet::PCIE_LATENCY_US, pcie),
        // Pageable memory is staged through a pinned bounce buffer by the driver: about half the rate.
        copy(
            CopyKind::H2dPageable,
            datasheet::PCIE_LATENCY_US,
            pcie / 2.0,
        ),
        copy(CopyKind::D2hPinned, datasheet::PCIE_LATENCY_US, pcie),
        copy(
            CopyKind::D2hPageable,
            datasheet::PCIE_LATENCY_US,
            pcie / 2.0,
        ),
        // A device copy reads and writes each byte: half the HBM rate, one kernel launch.
        copy(CopyKind::D2d, datasheet::KERNEL_LAUNCH_US, hbm / 2.0),
        copy(
            CopyKind::Peer,
            datasheet::NVLINK_LATENCY_US,
            d.nvlink_gbytes_per_s_each_way,
        ),
    ];
    Profile {
        format_version: FORMAT_VERSION,
        name: format!("{key}-datasheet"),
        source: Source::Datasheet,
        device: DeviceInfo {
            name: d.name.to_string(),
            compute_capability: None,
            driver_cuda_version: None,
            cublas_version: None,
            nccl_version: None,
            memory_gib: d.memory_gib,
            gpus: 1,
            date: None,
            host: None,
            moesim_version: "datasheet".into(),
        },
        samples: Samples::default(),
        model: FittedModel {
            launch_overhead_us: datasheet::KERNEL_LAUNCH_US,
            memory_gbytes_per_s: hbm,
            roofline,
            gemm_curves: Vec::new(),
            grouped_curves: Vec::new(),
            copy: copies,
            collectives: Vec::new(),
            fit_error: FitError::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn shipped_datasheet_profiles_match_datasheet_rs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let bless = std::env::var_os("MOESIM_BLESS_PROFILES").is_some();
        for (key, _) in datasheet::ALL {
            let generated = datasheet_profile(key).unwrap();
            let name = format!("{key}-datasheet");
            let path = dir.join(format!("{name}.json"));
            if bless {
                generated.save(&path).unwrap();
                continue;
            }
            let on_disk = Profile::load(&path).unwrap();
            assert_eq!(
                on_disk,
                generated,
                "{} disagrees with datasheet.rs; regenerate with MOESIM_BLESS_PROFILES=1",
                path.display()
            );
            assert_eq!(
                shipped(&name).as_ref(),
                Some(&generated),
                "{name} not in SHIPPED"
            );
        }
        assert_eq!(SHIPPED.len(), datasheet::ALL.len());
    }

    #[test]
    fn profile_round_trips_through_json_and_disk() {
        let mut p = datasheet_profile("b200").unwrap();
        // Give it samples and a fitted part so every field is exercised.
        p.samples.gemm.push(crate::profile::GemmSample {
            dtype: Dtype::Bf16,
            m: 64,
            n: 1536,
            k: 768,
            timing: crate::profile::Timing::from_seconds(&[1.25e-5, 1.5e-5, 1.0e-5]).unwrap(),
        });
        p.samples.skipped.push("collectives: one GPU".into());
        p.device.date = Some("2026-11-23".into());
        p.source = Source::Measured;
        let text = p.to_json();
        assert_eq!(Profile::from_json("mem", &text).unwrap(), p);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/p.json");
        p.save(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), p);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "only p.json, no temporary file");
        assert!(shipped("nonexistent").is_none());
    }
}
