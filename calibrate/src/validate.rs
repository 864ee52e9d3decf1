//! `moesim validate`: run a plan's per-rank expert work on a real GPU and compare it with the prediction.
//!
//! The plan is lowered (by the CLI, which knows the plan format) into a [`ValidationInput`]: for every rank, its
//! local experts and the tokens each receives in one MoE layer and micro-batch. Each rank's forward expert work
//! — `matrices − 1` grouped up/gate projections d→f and one grouped down projection f→d, exactly what the
//! simulator prices — is run on one GPU, rank after rank, and timed with CUDA events. The report gives, per
//! rank and operation class and for the step's expert compute (critical rank × MoE layers × micro-batches ×
//! passes), the predicted time, the measured time and the error. With at least one GPU per EP rank, one EP
//! group's dispatch all-to-all(v) runs too, through NCCL grouped send/recv, against the simulator's prediction.

use crate::CostModel;
use crate::bench_gemm::{GroupedGemm, random_buffer, random_pool};
use crate::bench_launch::Kernels;
use crate::device::{DeviceError, Gpu, cuda};
use crate::profile::{DeviceInfo, Timing};
use crate::timer::{Repeats, time_gpu};
use cudarc::cublas::CudaBlas;
use half::bf16;
use serde::{Deserialize, Serialize};

/// One rank's expert work in one MoE layer and micro-batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankWork {
    pub rank: usize,
    /// Global ids of the rank's experts.
    pub experts: Vec<usize>,
    /// Tokens each of those experts receives.
    pub tokens_per_expert: Vec<u32>,
}

/// A plan, lowered to what can run on a GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationInput {
    pub scenario: String,
    pub strategy: String,
    pub d_model: u64,
    pub expert_d_ff: u64,
    /// 3 for SwiGLU (gate, up, down), 2 for a GELU FFN.
    pub expert_matrices: u64,
    pub dtype_bytes: u32,
    pub moe_layers: usize,
    pub micro_batches: usize,
    /// Expert passes per step: 3 for training (backward ≈ 2 × forward), 1 for inference.
    pub passes: f64,
    pub ranks: Vec<RankWork>,
    /// The simulator's expert-compute time on the critical path per step, from the plan (for reference).
    pub simulated_expert_compute_ms: Option<f64>,
    /// How the lowering approximated the plan (shown in the report).
    pub notes: Vec<String>,
    /// One EP group's dispatch all-to-all, when the plan has more than one EP rank.
    #[serde(default)]
    pub all_to_all: Option<AllToAllWork>,
}

/// One all-to-all(v) among the ranks of an EP group, with its predicted time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllToAllWork {
    /// Ranks (= GPUs needed).
    pub ranks: usize,
    /// `bytes[i * ranks + j]`: bytes rank i sends to rank j.
    pub bytes: Vec<u64>,
    /// The simulator's time for it (its slowest rank), in seconds.
    pub predicted_s: f64,
    /// All-to-alls of this size per step (dispatch and combine, per MoE layer and micro-batch, forward and
    /// backward in training).
    pub per_step: f64,
}

/// Predicted and measured time of one operation class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub class: String,
    pub predicted_ms: f64,
    pub measured_ms: f64,
    /// (predicted − measured) / measured, in percent: positive when the model is pessimistic.
    pub error_pct: f64,
    /// (p90 − p10) / median of the measurement, in percent.
    pub measured_spread_pct: f64,
}

impl Comparison {
    pub fn new(class: impl Into<String>, predicted_ms: f64, measured_ms: f64, spread: f64) -> Self {
        Comparison {
            class: class.into(),
            predicted_ms,
            measured_ms,
            error_pct: if measured_ms > 0.0 {
                100.0 * (predicted_ms - measured_ms) / measured_ms
            } else {
                0.0
            },
            measured_spread_pct: spread,
        }
    }
}

/// One rank's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankResult {
    pub rank: usize,
    pub experts: usize,
    pub tokens: u64,
    pub classes: Vec<Comparison>,
}

/// What `moesim validate` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub scenario: String,
    pub strategy: String,
    pub device: DeviceInfo,
    /// The cost model the prediction used.
    pub cost_model: String,
    pub ranks: Vec<RankResult>,
    /// Per class, summed over ranks.
    pub classes: Vec<Comparison>,
    /// Expert compute of one step: the slowest rank per MoE layer × layers × micro-batches × passes.
    pub step: Comparison,
    /// All-to-all time of one step (one EP group's all-to-all × all-to-alls per step), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_all_to_all: Option<Comparison>,
    pub simulated_expert_compute_ms: Option<f64>,
    pub notes: Vec<String>,
    /// Parts of the plan not run, with why.
    pub skipped: Vec<String>,
}

/// Operation classes, in report order.
pub const CLASSES: [&str; 3] = ["expert_up_gate", "expert_down", "expert_forward"];

/// Predicted seconds per class for one rank: [up/gate, down, forward].
pub fn predict_rank(input: &ValidationInput, r: &RankWork, cost: &dyn CostModel) -> [f64; 3] {
    let (d, f, dt) = (input.d_model, input.expert_d_ff, input.dtype_bytes);
    let up =
        (input.expert_matrices - 1) as f64 * cost.grouped_gemm_s(&r.tokens_per_expert, f, d, dt);
    let down = cost.grouped_gemm_s(&r.tokens_per_expert, d, f, dt);
    [up, down, up + down]
}

/// Measured timings per class for one rank: [up/gate, down, forward].
pub type RankTimings = [Timing; 3];

/// Builds the report from predictions (by `cost`) and measurements (seconds, one per rank and class).
pub fn report(
    input: &ValidationInput,
    cost: &dyn CostModel,
    device: DeviceInfo,
    measured: &[RankTimings],
    skipped: Vec<String>,
) -> ValidationReport {
    assert_eq!(measured.len(), input.ranks.len());
    let mut ranks = Vec::new();
    let mut pred_sum = [0.0; 3];
    let mut meas_sum = [0.0; 3];
    let (mut pred_max, mut meas_max, mut spread_at_max) = (0.0f64, 0.0f64, 0.0);
    for (r, m) in input.ranks.iter().zip(measured) {
        let p = predict_rank(input, r, cost);
        let classes = (0..3)
            .map(|c| {
                pred_sum[c] += p[c];
                meas_sum[c] += m[c].median_s();
                Comparison::new(
                    CLASSES[c],
                    p[c] * 1e3,
                    m[c].median_s() * 1e3,
                    m[c].spread_pct(),
                )
            })
            .collect();
        pred_max = pred_max.max(p[2]);
        if m[2].median_s() > meas_max {
            meas_max = m[2].median_s();
            spread_at_max = m[2].spread_pct();
        }
        ranks.push(RankResult {
            rank: r.rank,
            experts: r.experts.len(),
            tokens: r.tokens_per_expert.iter().map(|&t| t as u64).sum(),
            classes,
        });
    }
    let per_step = input.moe_layers as f64 * input.micro_batches as f64 * input.passes;
    ValidationReport {
        scenario: input.scenario.clone(),
        strategy: input.strategy.clone(),
        device,
        cost_model: cost.describe(),
        ranks,
        classes: (0..3)
            .map(|c| Comparison::new(CLASSES[c], pred_sum[c] * 1e3, meas_sum[c] * 1e3, 0.0))
            .collect(),
        step: Comparison::new(
            "step_expert_compute",
            pred_max * per_step * 1e3,
            meas_max * per_step * 1e3,
            spread_at_max,
        ),
        step_all_to_all: None,
        simulated_expert_compute_ms: input.simulated_expert_compute_ms,
        notes: input.notes.clone(),
        skipped,
    }
}

/// Bytes of GPU memory the largest rank needs (weights of every matrix, activations, outputs).
pub fn bytes_needed(input: &ValidationInput) -> u64 {
    let (d, f, b) = (input.d_model, input.expert_d_ff, input.dtype_bytes as u64);
    input
        .ranks
        .iter()
        .map(|r| {
            let e = r.experts.len() as u64;
            let t: u64 = r.tokens_per_expert.iter().map(|&x| x as u64).sum();
            (input.expert_matrices * e * d * f + t * d * 2 + t * f) * b
        })
        .max()
        .unwrap_or(0)
}

/// Runs every rank's expert work on GPU 0 (bf16), rank after rank, and returns the report.
pub fn run(
    input: &ValidationInput,
    cost: &dyn CostModel,
    quick: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<ValidationReport, DeviceError> {
    let count = crate::device::gpu_count()?;
    crate::device::require_cublas()?;
    let gpu = Gpu::open(0)?;
    let device = gpu.info(count);
    if input.dtype_bytes != 2 {
        return Err(DeviceError::Cuda {
            during: "lowering the plan".into(),
            message: format!(
                "the model's dtype_bytes is {}; validation runs bf16 (2-byte) experts only",
                input.dtype_bytes
            ),
        });
    }
    let need = bytes_needed(input);
    let (free, _) = gpu
        .ctx
        .mem_get_info()
        .map_err(cuda("querying free memory"))?;
    if need as f64 > 0.9 * free as f64 {
        return Err(DeviceError::Cuda {
            during: "planning GPU memory".into(),
            message: format!(
                "the busiest rank needs {:.1} GiB, the GPU has {:.1} GiB free",
                need as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64
            ),
        });
    }
    let kernels = Kernels::load(&gpu)?;
    let blas = CudaBlas::new(gpu.stream.clone()).map_err(cuda("creating a cuBLAS handle"))?;
    let pool = random_pool::<bf16>(&gpu, 0x7661_6c69)?;
    let r = if quick { Repeats::QUICK } else { Repeats::FULL };
    let (d, f) = (input.d_model, input.expert_d_ff);
    let ups = (input.expert_matrices - 1) as usize;
    let mut measured = Vec::new();
    for rank in &input.ranks {
        let e = rank.tokens_per_expert.len() as u64;
        let t: u64 = rank.tokens_per_expert.iter().map(|&x| x as u64).sum();
        let x = random_buffer(&gpu, &pool, (t * d) as usize)?;
        let w_up: Vec<_> = (0..ups)
            .map(|_| random_buffer(&gpu, &pool, (e * d * f) as usize))
            .collect::<Result<_, _>>()?;
        let w_down = random_buffer(&gpu, &pool, (e * f * d) as usize)?;
        // The up outputs feed the down projection (one intermediate buffer per up matrix, as SwiGLU has).
        let mut h: Vec<_> = (0..ups)
            .map(|_| random_buffer(&gpu, &pool, (t * f) as usize))
            .collect::<Result<_, _>>()?;
        let mut y = random_buffer(&gpu, &pool, (t * d) as usize)?;
        let up_launches: Vec<GroupedGemm> = w_up
            .iter()
            .zip(h.iter_mut())
            .map(|(w, out)| GroupedGemm::new(&gpu, &rank.tokens_per_expert, f, d, &x, w, out))
            .collect::<Result<_, _>>()?;
        let down = GroupedGemm::new(&gpu, &rank.tokens_per_expert, d, f, &h[0], &w_down, &mut y)?;
        let up_t = time_gpu(&gpu, &kernels, r, || {
            up_launches.iter().try_for_each(|g| g.launch(&gpu, &blas))
        })?;
        let down_t = time_gpu(&gpu, &kernels, r, || down.launch(&gpu, &blas))?;
        let fwd_t = time_gpu(&gpu, &kernels, r, || {
            up_launches.iter().try_for_each(|g| g.launch(&gpu, &blas))?;
            down.launch(&gpu, &blas)
        })?;
        progress(&format!(
            "rank {}: {} experts, {t} tokens: forward {:.3} ms measured, {:.3} ms predicted",
            rank.rank,
            e,
            fwd_t.median_s() * 1e3,
            predict_rank(input, rank, cost)[2] * 1e3
        ));
        measured.push([up_t, down_t, fwd_t]);
    }
    drop((kernels, blas, pool));
    let mut skipped = vec![
        "host→device expert copies: the plan records no offloading cache decisions".to_string(),
    ];
    let mut a2a = None;
    match &input.all_to_all {
        None => skipped.push("all-to-all: the plan has a single EP rank".into()),
        Some(w) if w.ranks > count => skipped.push(format!(
            "all-to-all: needs {} GPUs (one per EP rank), this host has {count}",
            w.ranks
        )),
        Some(w) => {
            let mut gpus = vec![gpu];
            for i in 1..w.ranks {
                gpus.push(Gpu::open(i)?);
            }
            let mut op = crate::bench_nccl::AllToAllV::new(&gpus, &w.bytes)?;
            let t = crate::bench_nccl::time_collective(&gpus, r, || op.issue())?;
            progress(&format!(
                "all-to-all over {} GPUs: {:.3} ms measured, {:.3} ms predicted",
                w.ranks,
                t.median_s() * 1e3,
                w.predicted_s * 1e3
            ));
            a2a = Some((w.clone(), t));
        }
    }
    let mut rep = report(input, cost, device, &measured, skipped);
    if let Some((w, t)) = a2a {
        add_all_to_all(&mut rep, &w, &t);
    }
    Ok(rep)
}

/// Adds the all-to-all's comparisons (one collective, and its total per step) to a report.
pub fn add_all_to_all(rep: &mut ValidationReport, w: &AllToAllWork, t: &Timing) {
    let (p, m) = (w.predicted_s * 1e3, t.median_s() * 1e3);
    rep.classes
        .push(Comparison::new("all_to_all", p, m, t.spread_pct()));
    rep.step_all_to_all = Some(Comparison::new(
        "step_all_to_all",
        p * w.per_step,
        m * w.per_step,
        t.spread_pct(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Roofline, datasheet};

    fn input() -> ValidationInput {
        ValidationInput {
            scenario: "t".into(),
            strategy: "ep2".into(),
            d_model: 2048,
            expert_d_ff: 1024,
            expert_matrices: 3,
            dtype_bytes: 2,
            moe_layers: 16,
            micro_batches: 2,
            passes: 3.0,
            ranks: vec![
                RankWork {
                    rank: 0,
                    experts: vec![0, 1],
                    tokens_per_expert: vec![100, 300],
                },
                RankWork {
                    rank: 1,
                    experts: vec![2, 3],
                    tokens_per_expert: vec![0, 50],
                },
            ],
            simulated_expert_compute_ms: Some(1.0),
            notes: vec![],
            all_to_all: None,
        }
    }

    fn timings(s: [f64; 3]) -> RankTimings {
        s.map(|x| Timing::from_seconds(&[x]).unwrap())
    }

    #[test]
    fn report_compares_per_rank_per_class_and_for_the_step() {
        let inp = input();
        let cost = Roofline::from_datasheet(&datasheet::H100_SXM);
        let p0 = predict_rank(&inp, &inp.ranks[0], &cost);
        let p1 = predict_rank(&inp, &inp.ranks[1], &cost);
        assert!(p0[2] > p1[2], "rank 0 has more tokens");
        assert!((p0[0] - 2.0 * cost.grouped_gemm_s(&[100, 300], 1024, 2048, 2)).abs() < 1e-15);
        // Measured: rank 0 exactly as predicted, rank 1 twice as slow.
        let m0 = timings(p0);
        let m1 = timings(p1.map(|x| 2.0 * x));
        let rep = report(
            &inp,
            &cost,
            crate::profiles::datasheet_profile("h100").unwrap().device,
            &[m0, m1],
            vec![],
        );
        assert!(
            rep.ranks[0]
                .classes
                .iter()
                .all(|c| c.error_pct.abs() < 1e-6)
        );
        assert!(
            rep.ranks[1]
                .classes
                .iter()
                .all(|c| (c.error_pct + 50.0).abs() < 1e-6)
        );
        assert_eq!(rep.ranks[1].tokens, 50);
        let per_step = 16.0 * 2.0 * 3.0;
        let slowest_measured = p0[2].max(2.0 * p1[2]);
        assert!((rep.step.predicted_ms - p0[2] * per_step * 1e3).abs() < 1e-9);
        assert!((rep.step.measured_ms - slowest_measured * per_step * 1e3).abs() < 1e-9);
        let fwd = &rep.classes[2];
        assert!((fwd.measured_ms - (p0[2] + 2.0 * p1[2]) * 1e3).abs() < 1e-9);
        assert_eq!(rep.classes.len(), 3);
        let json = serde_json::to_string(&rep).unwrap();
        assert!(json.contains("\"step_expert_compute\""));
        assert!(!json.contains("step_all_to_all"));
    }

    #[test]
    fn all_to_all_comparison_scales_to_the_step() {
        let inp = input();
        let cost = Roofline::from_datasheet(&datasheet::H100_SXM);
        let m = timings([1e-3, 1e-3, 2e-3]);
        let mut rep = report(
            &inp,
            &cost,
            crate::profiles::datasheet_profile("h100").unwrap().device,
            &[m.clone(), m],
            vec![],
        );
        let w = AllToAllWork {
            ranks: 2,
            bytes: vec![0, 100, 200, 0],
            predicted_s: 3e-4,
            per_step: 128.0,
        };
        add_all_to_all(&mut rep, &w, &Timing::from_seconds(&[2e-4]).unwrap());
        let c = rep.classes.last().unwrap();
        assert_eq!(c.class, "all_to_all");
        assert!((c.error_pct - 50.0).abs() < 1e-9);
        let s = rep.step_all_to_all.as_ref().unwrap();
        assert!(
            (s.measured_ms - 0.2 * 128.0).abs() < 1e-9
                && (s.predicted_ms - 0.3 * 128.0).abs() < 1e-9
        );
    }

    #[test]
    fn memory_need_counts_every_matrix_and_activation() {
        let inp = input();
        let rank0 = (3 * 2 * 2048 * 1024 + 400 * 2048 * 2 + 400 * 1024) * 2;
        assert_eq!(bytes_needed(&inp), rank0);
    }
}
