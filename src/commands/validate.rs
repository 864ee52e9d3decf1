//! `moesim validate PLAN.json`: run the plan's per-rank expert work on this host's GPU and compare it with
//! the prediction.

use crate::commands::calibrate::no_gpu;
use crate::output;
use miette::{IntoDiagnostic, WrapErr, miette};
use moesim_calibrate::CostModel;
use moesim_calibrate::device;
use moesim_calibrate::validate::{AllToAllWork, RankWork, ValidationInput, run as validate};
use moesim_sim::collective::{AllToAllScratch, all_to_all};
use moesim_sim::plan::Plan;
use moesim_sim::scenario::file::Mode;
use moesim_sim::topology::Topology;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The plan written by `moesim plan` (out/plan.json).
    pub plan: PathBuf,
    /// Where to write the comparison (JSON; default: validation.json beside the plan).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Predict with this profile (shipped name or path) instead of the plan's cluster.profile or roofline.
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Fewer repeats.
    #[arg(long)]
    pub quick: bool,
}

/// Lowers a plan into per-rank expert work for one MoE layer and micro-batch.
pub fn lower(plan: &Plan) -> miette::Result<ValidationInput> {
    let s = &plan.resolved_scenario;
    // A plan file is input too: its cluster must still be one the topology can be built for.
    let c = &s.cluster;
    if c.nodes == 0
        || c.gpus_per_node == 0
        || c.nodes.saturating_mul(c.gpus_per_node) > moesim_sim::scenario::limits::MAX_GPUS
    {
        return Err(miette!(
            "plan: resolved_scenario.cluster has {} nodes × {} GPUs per node; expected 1..={} GPUs in all",
            c.nodes,
            c.gpus_per_node,
            moesim_sim::scenario::limits::MAX_GPUS
        ));
    }
    let m = &s.model;
    let layers = m.moe_layers().max(1);
    let mbs = s.workload.micro_batches.max(1);
    let ep = plan.placement.ep_size.max(1);
    if plan.placement.gpu_experts.len() < ep {
        return Err(miette!(
            "plan placement lists {} ranks for ep_size {ep}",
            plan.placement.gpu_experts.len()
        ));
    }
    let mut ranks = Vec::new();
    for (rank, &tokens) in plan.predicted.tokens_received_per_rank.iter().enumerate() {
        let experts = plan.placement.gpu_experts[rank % ep].clone();
        let per_cell = (tokens / (layers * mbs) as f64).round().max(0.0) as u64;
        let n = experts.len().max(1) as u64;
        let tokens_per_expert = (0..experts.len() as u64)
            .map(|i| (per_cell / n + u64::from(i < per_cell % n)) as u32)
            .collect();
        ranks.push(RankWork {
            rank,
            experts,
            tokens_per_expert,
        });
    }
    if ranks.is_empty() {
        return Err(miette!(
            "the plan has no per-rank token counts (predicted.tokens_received_per_rank)"
        ));
    }
    let training = s.workload.mode == Mode::Training;
    let all_to_all = (ep >= 2 && ranks.len() >= ep).then(|| {
        // EP group 0's dispatch: each rank's tokens arrive evenly from the group's ranks.
        let token_bytes = m.d_model * m.dtype_bytes as u64;
        let mut bytes = vec![0u64; ep * ep];
        for (j, w) in ranks[..ep].iter().enumerate() {
            let received: u64 = w.tokens_per_expert.iter().map(|&t| t as u64).sum();
            for i in 0..ep {
                bytes[i * ep + j] = received * token_bytes / ep as u64;
            }
        }
        let topo = Topology::build(&s.cluster);
        let group: Vec<usize> = (0..ep).collect();
        let as_f64: Vec<f64> = bytes.iter().map(|&b| b as f64).collect();
        let outcome = all_to_all(&topo, &group, &as_f64, &mut AllToAllScratch::default());
        let predicted_s = outcome
            .per_rank
            .iter()
            .map(|r| r.time_s)
            .fold(0.0, f64::max);
        AllToAllWork {
            ranks: ep,
            bytes,
            predicted_s,
            // Dispatch and combine per MoE layer and micro-batch, again in backward.
            per_step: (layers * mbs) as f64 * if training { 4.0 } else { 2.0 },
        }
    });
    Ok(ValidationInput {
        scenario: plan.scenario.clone(),
        strategy: plan.chosen.clone(),
        d_model: m.d_model,
        expert_d_ff: m.expert_d_ff,
        expert_matrices: m.expert_matrices,
        dtype_bytes: m.dtype_bytes,
        moe_layers: layers,
        micro_batches: mbs,
        passes: if training { 3.0 } else { 1.0 },
        ranks,
        simulated_expert_compute_ms: plan.predicted.breakdown_ms.get("expert_compute").copied(),
        notes: vec![format!(
            "tokens per rank are the plan's mean per iteration ÷ ({layers} MoE layers × {mbs} micro-batches), \
             split evenly over the rank's experts (the plan records no per-expert counts); the all-to-all \
             is EP group 0's dispatch with each rank's tokens coming evenly from the group's ranks"
        )],
        all_to_all,
    })
}

/// The cost model predictions use: `--profile`, else the plan's cluster.profile, else its cluster roofline.
fn cost_model(args: &ValidateArgs, plan: &Plan) -> miette::Result<Box<dyn CostModel>> {
    let base = args.plan.parent().unwrap_or(Path::new("."));
    let name = args
        .profile
        .clone()
        .or_else(|| plan.resolved_scenario.cluster.profile.clone());
    match name {
        Some(n) => {
            let p =
                moesim_reports::inputs::resolve_profile(&n, base).map_err(|e| miette!("{e}"))?;
            Ok(Box::new(moesim_calibrate::MeasuredCost::from_profile(&p)))
        }
        None => Ok(Box::new(plan.resolved_scenario.cluster.roofline())),
    }
}

pub fn run(args: &ValidateArgs, quiet: bool) -> miette::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.plan)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read plan {}", args.plan.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .map_err(|e| miette!("{}: not a moesim plan: {e}", args.plan.display()))?;
    let input = lower(&plan).wrap_err_with(|| args.plan.display().to_string())?;
    let cost = cost_model(args, &plan)?;
    if let Err(e) = device::gpu_count() {
        return Ok(no_gpu("validate", &e));
    }
    let mut progress = |msg: &str| {
        if !quiet {
            eprintln!("  {msg}");
        }
    };
    let report = match validate(&input, cost.as_ref(), args.quick, &mut progress) {
        Ok(r) => r,
        Err(e) if e.is_no_gpu() => return Ok(no_gpu("validate", &e)),
        Err(e) => return Err(miette!("moesim validate: {e}")),
    };
    let path = args.out.clone().unwrap_or_else(|| {
        args.plan
            .parent()
            .unwrap_or(Path::new("."))
            .join("validation.json")
    });
    output::write_atomic(
        &path,
        serde_json::to_string_pretty(&report)
            .expect("serialisable")
            .as_bytes(),
    )?;
    println!(
        "{} / {} on {} — predicted with {}",
        report.scenario, report.strategy, report.device.name, report.cost_model
    );
    println!(
        "{:<22} {:>14} {:>14} {:>9}",
        "class", "predicted ms", "measured ms", "error"
    );
    let steps = std::iter::once(&report.step).chain(report.step_all_to_all.as_ref());
    for c in report.classes.iter().chain(steps) {
        println!(
            "{:<22} {:>14.4} {:>14.4} {:>8.1}%",
            c.class, c.predicted_ms, c.measured_ms, c.error_pct
        );
    }
    if let Some(sim) = report.simulated_expert_compute_ms {
        println!("simulated expert compute on the critical path: {sim:.4} ms per step");
    }
    for s in &report.skipped {
        println!("not run: {s}");
    }
    println!("written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_sim::plan::{choose, make_plan};
    use moesim_sim::runner::{RunOptions, simulate_scenario, synthetic_routing};
    use moesim_sim::scenario::parse_scenario;

    fn quickstart_plan() -> Plan {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quickstart.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let s = parse_scenario(path, &text, &["workload.iterations=2".to_string()]).unwrap();
        let routing = synthetic_routing(&s);
        let report = simulate_scenario(
            &s,
            &routing,
            None,
            RunOptions {
                timing: false,
                progress: None,
            },
        );
        make_plan(&s, &report, choose(&report, &s).unwrap())
    }

    #[test]
    fn lowering_keeps_each_ranks_experts_and_tokens() {
        let plan = quickstart_plan();
        let input = lower(&plan).unwrap();
        let s = &plan.resolved_scenario;
        assert_eq!(input.ranks.len(), s.cluster.gpus());
        assert_eq!(input.passes, 3.0, "quickstart trains");
        let cells = (s.model.moe_layers() * s.workload.micro_batches) as f64;
        let ep = plan.placement.ep_size;
        for (r, w) in input.ranks.iter().enumerate() {
            assert_eq!(w.experts, plan.placement.gpu_experts[r % ep]);
            assert_eq!(w.tokens_per_expert.len(), w.experts.len());
            let sum: u64 = w.tokens_per_expert.iter().map(|&t| t as u64).sum();
            let want = plan.predicted.tokens_received_per_rank[r] / cells;
            assert!(
                (sum as f64 - want).abs() <= 0.5,
                "rank {r}: {sum} vs {want}"
            );
            let (lo, hi) = (
                w.tokens_per_expert.iter().min().unwrap(),
                w.tokens_per_expert.iter().max().unwrap(),
            );
            assert!(hi - lo <= 1, "even split");
        }
        // The busiest rank (the straggler of a Zipf workload) is predicted slowest.
        let cost = plan.resolved_scenario.cluster.roofline();
        let pred: Vec<f64> = input
            .ranks
            .iter()
            .map(|r| moesim_calibrate::validate::predict_rank(&input, r, &cost)[2])
            .collect();
        let busiest = (0..input.ranks.len())
            .max_by(|&a, &b| {
                plan.predicted.tokens_received_per_rank[a]
                    .total_cmp(&plan.predicted.tokens_received_per_rank[b])
            })
            .unwrap();
        let slowest = (0..pred.len())
            .max_by(|&a, &b| pred[a].total_cmp(&pred[b]))
            .unwrap();
        assert_eq!(pred[busiest], pred[slowest]);
        // The all-to-all: EP group 0, each column the tokens its rank receives.
        let a = input
            .all_to_all
            .as_ref()
            .expect("quickstart's plan has EP ranks");
        assert_eq!(a.ranks, ep);
        assert_eq!(a.per_step, cells * 4.0);
        assert!(a.predicted_s > 0.0);
        let token_bytes = s.model.d_model * s.model.dtype_bytes as u64;
        for j in 0..ep {
            let received: u64 = input.ranks[j]
                .tokens_per_expert
                .iter()
                .map(|&t| t as u64)
                .sum();
            let col: u64 = (0..ep).map(|i| a.bytes[i * ep + j]).sum();
            assert!(
                col.abs_diff(received * token_bytes) <= ep as u64,
                "rank {j}"
            );
        }
    }
}
