//! Limits that keep a scenario's run finite: hard bounds on sizes and floats (past them the simulator's
//! integers overflow or its samplers spin), and a work and memory estimate checked before anything runs.
//!
//! The estimate is deliberately rough (within a small factor): its job is to refuse a run of hours or one
//! that would exhaust memory *before* it starts, with a message that says what was asked, what it would
//! cost and how to override the limit (`--set limits.max_work=…`, `--set limits.max_memory_gib=…`).

use super::Scenario;
use super::file::LimitsSection;

/// Largest GPU count: the topology keeps a route per GPU pair, so memory grows with its square.
pub const MAX_GPUS: usize = 1 << 16;
/// Largest expert count per layer (expert ids are `u32`; per-expert tables are dense).
pub const MAX_EXPERTS: usize = moesim_traces::limits::MAX_EXPERTS;
/// Largest layer count.
pub const MAX_LAYERS: usize = moesim_traces::limits::MAX_LAYERS;
/// Largest iteration count and micro-batch count (each is a loop and a table dimension).
pub const MAX_ITERATIONS: usize = 1 << 32;
pub const MAX_MICRO_BATCHES: usize = 1 << 16;
/// Largest tokens per rank per micro-batch (`micro_batch × seq_len`).
pub const MAX_TOKENS_PER_RANK: u64 = 1 << 40;
/// Largest model dimension (`d_model`, `expert_d_ff`, …): products of three stay far below `u64::MAX`.
pub const MAX_DIM: u64 = 1 << 20;
/// Largest latency or launch overhead, in µs (one second: far beyond any real link or kernel launch).
pub const MAX_LATENCY_US: f64 = 1e6;
/// Largest per-rank compute noise (coefficient of variation).
pub const MAX_NOISE_CV: f64 = 10.0;
/// Largest bytes per parameter of optimizer state or gradients.
pub const MAX_BYTES_PER_PARAM: f64 = 1024.0;

/// Default work limit: simulated (iteration × micro-batch × layer × rank) steps over every strategy, about
/// an hour on one core. The bundled scenarios need at most a few million.
pub const DEFAULT_MAX_WORK: f64 = 2e8;
/// Default memory limit of a run's estimated peak, GiB.
pub const DEFAULT_MAX_MEMORY_GIB: f64 = 8.0;

/// What a run would cost, estimated before it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Simulated (iteration × micro-batch × layer × rank) steps over every strategy.
    pub work: f64,
    /// Peak memory, bytes.
    pub memory_bytes: f64,
}

/// Estimates a validated scenario's work and peak memory (floats: the products may exceed `u64`).
pub fn estimate(s: &Scenario) -> Cost {
    let gpus = s.cluster.gpus() as f64;
    let layers = s.model.layers as f64;
    let experts = s.model.experts as f64;
    let iterations = s.workload.iterations as f64;
    let micro_batches = s.workload.micro_batches as f64;
    // Ranks one layer's cells span: every GPU, or with tensor or pipeline parallelism the simulated unit
    // of one stage (see `strategy/ep/pipelined.rs`).
    let layer_ranks = |st: &crate::scenario::Strategy| -> f64 {
        if st.parallel.is_single() {
            gpus
        } else {
            st.parallel.unit(st.ep_size) as f64
        }
    };
    let work: f64 = s
        .strategies
        .iter()
        .map(|st| {
            iterations * micro_batches * layers * layer_ranks(st) * st.overlap_micro_batches as f64
        })
        .sum();
    // Routes: an offset, a latency and about three links per GPU pair.
    let routes = 24.0 * gpus * gpus;
    // Per iteration in flight: a byte matrix per layer and micro-batch, and per-rank expert counts.
    let threads = rayon::current_num_threads().max(1) as f64;
    let per_iteration = s
        .strategies
        .iter()
        .map(|st| {
            let r = layer_ranks(st);
            micro_batches * layers * (8.0 * r * r + 4.0 * r * experts)
        })
        .fold(0.0, f64::max);
    // Summaries kept per iteration and strategy, and synthetic popularity over time.
    let kept = iterations * s.strategies.len() as f64 * 256.0;
    let over_time = if s.workload.dynamics.varies_over_time() {
        8.0 * iterations * layers * experts
    } else {
        0.0
    };
    Cost {
        work,
        memory_bytes: routes + threads * per_iteration + kept + over_time,
    }
}

/// Refuses a run whose estimate exceeds the scenario's limits; the message names the cost, the limit and
/// the override.
pub fn check(s: &Scenario, limits: &LimitsSection) -> Result<(), (&'static str, String, String)> {
    let cost = estimate(s);
    let max_work = limits.max_work.unwrap_or(DEFAULT_MAX_WORK);
    let max_gib = limits.max_memory_gib.unwrap_or(DEFAULT_MAX_MEMORY_GIB);
    let strategies = s.strategies.len();
    if cost.work > max_work {
        return Err((
            "limits.max_work",
            format!(
                "{} iterations × {} micro-batches × {} layers × {} GPUs × {strategies} strategies is about {:.3e} \
                 simulated steps (about {} on one core), over the limit of {max_work:.3e}",
                s.workload.iterations,
                s.workload.micro_batches,
                s.model.layers,
                s.cluster.gpus(),
                cost.work,
                duration(cost.work / STEPS_PER_SECOND),
            ),
            format!(
                "lower workload.iterations, micro_batches, model.layers or cluster.nodes, or raise the limit \
                 with --set limits.max_work={:.0e}",
                cost.work.max(1.0)
            ),
        ));
    }
    let gib = cost.memory_bytes / (1u64 << 30) as f64;
    if gib > max_gib {
        return Err((
            "limits.max_memory_gib",
            format!(
                "{} GPUs, {} layers × {} experts, {} micro-batches, {} iterations would need about {gib:.1} GiB \
                 of memory, over the limit of {max_gib} GiB",
                s.cluster.gpus(),
                s.model.layers,
                s.model.experts,
                s.workload.micro_batches,
                s.workload.iterations,
            ),
            format!(
                "make the cluster, model or run smaller, or raise the limit with --set limits.max_memory_gib={}",
                gib.ceil()
            ),
        ));
    }
    Ok(())
}

/// Rough simulated steps per second on one core (quickstart: 4 strategies × 30 × 16 × 16 in about a second).
const STEPS_PER_SECOND: f64 = 3e4;

fn duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.0} h", seconds / 3600.0)
    }
}
