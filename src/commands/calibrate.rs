//! `moesim calibrate`: measure this host's GPU and write a profile.

use crate::output;
use miette::miette;
use moesim_calibrate::calibrate::{Options, run as calibrate};
use moesim_calibrate::device::{self, WITHOUT_A_GPU};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code of `calibrate` and `validate` on a machine without a usable GPU.
pub const NO_GPU_EXIT: u8 = 3;

#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// Where to write the profile (JSON; default: out/<device>-measured-<date>.json).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Fewer token counts, sizes and repeats, bf16 only: well under a minute on an H100.
    #[arg(long)]
    pub quick: bool,
    /// Use at most this many GPUs for peer copies and NCCL collectives (default: all).
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
    /// Re-fit the model of an existing measured profile from its samples (no GPU needed) and write it to
    /// --out (default: in place).
    #[arg(long, value_name = "PROFILE", conflicts_with_all = ["quick", "gpus"])]
    pub refit: Option<PathBuf>,
}

fn refit(path: &std::path::Path, out: Option<&std::path::Path>) -> miette::Result<ExitCode> {
    let mut p = moesim_calibrate::Profile::load(path).map_err(|e| miette!("{e}"))?;
    moesim_calibrate::calibrate::refit(&mut p)
        .map_err(|e| miette!("{}: cannot re-fit: {e}", path.display()))?;
    let out = out.unwrap_or(path);
    output::write_atomic(out, p.to_json().as_bytes())?;
    print_summary(&p, out);
    Ok(ExitCode::SUCCESS)
}

/// Prints the no-GPU message for `command` and returns its exit code.
pub fn no_gpu(command: &str, why: &dyn std::fmt::Display) -> ExitCode {
    eprintln!(
        "moesim {command}: {why}.\n  `moesim {command}` runs real work on an NVIDIA GPU and needs its driver (libcuda) \
         and cuBLAS.\n  Without one: {WITHOUT_A_GPU}."
    );
    ExitCode::from(NO_GPU_EXIT)
}

pub fn run(args: &CalibrateArgs, quiet: bool) -> miette::Result<ExitCode> {
    if let Some(path) = &args.refit {
        return refit(path, args.out.as_deref());
    }
    if let Err(e) = device::gpu_count() {
        return Ok(no_gpu("calibrate", &e));
    }
    let mut progress = |msg: &str| {
        if !quiet {
            eprintln!("  {msg}");
        }
    };
    let profile = match calibrate(
        Options {
            quick: args.quick,
            max_gpus: args.gpus,
        },
        &mut progress,
    ) {
        Ok(p) => p,
        Err(e) if e.is_no_gpu() => return Ok(no_gpu("calibrate", &e)),
        Err(e) => return Err(miette!("moesim calibrate: {e}")),
    };
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(format!("{}.json", profile.name)));
    output::write_atomic(&path, profile.to_json().as_bytes())?;
    print_summary(&profile, &path);
    Ok(ExitCode::SUCCESS)
}

/// What a profile holds and how well it fits.
fn print_summary(profile: &moesim_calibrate::Profile, path: &std::path::Path) {
    let e = &profile.model.fit_error;
    println!(
        "{} ({} GPU(s), compute capability {}): {} GEMM, {} grouped, {} copy, {} collective samples",
        profile.device.name,
        profile.device.gpus,
        profile.device.compute_capability.as_deref().unwrap_or("?"),
        profile.samples.gemm.len(),
        profile.samples.grouped_gemm.len(),
        profile.samples.copy.len(),
        profile.samples.collective.len()
    );
    println!(
        "launch overhead {:.2} µs; memory-bound {:.0} GB/s; roofline {}",
        profile.model.launch_overhead_us,
        profile.model.memory_gbytes_per_s,
        profile
            .model
            .roofline
            .iter()
            .map(|r| format!(
                "{} {:.0} TFLOP/s / {:.0} GB/s",
                r.dtype.name(),
                r.tflops,
                r.gbytes_per_s
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in &profile.model.copy {
        println!(
            "  {:<13} {:>7.2} µs + bytes / {:>7.1} GB/s (fit error ≤ {:.1}%)",
            c.kind.name(),
            c.latency_us,
            c.gbytes_per_s,
            c.max_error_pct
        );
    }
    println!(
        "fit error: GEMM interpolation median {:.2}% max {:.2}% (leave-one-out); roofline for unmeasured shapes \
         median {:.1}% max {:.1}%; copies ≤ {:.1}%; collectives ≤ {:.1}%",
        e.gemm_interpolation_median_pct,
        e.gemm_interpolation_max_pct,
        e.gemm_roofline_median_pct,
        e.gemm_roofline_max_pct,
        e.copy_max_pct,
        e.collective_max_pct
    );
    for s in &profile.samples.skipped {
        println!("not measured: {s}");
    }
    println!(
        "profile written to {} — use it with cluster.profile = \"<path relative to the scenario>\"",
        path.display()
    );
}
