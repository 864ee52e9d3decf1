//! A serving scenario's settings, resolved and validated ([`crate::scenario::serving`] parses them): the
//! request stream (`[workload.serving]`), the engine instance (`[serving]`) and the SLO (`[slo]`).

use moesim_traces::requests::RequestFormat;
use serde::{Deserialize, Serialize};

/// Everything a serving run needs beyond the model, cluster and strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingConfig {
    pub requests: RequestStream,
    pub engine: EngineConfig,
    pub slo: Option<Slo>,
    /// Whether each `[[strategy]]` is served co-located on the whole cluster (`[serving] colocated`).
    pub colocated: bool,
    /// Disaggregated deployments (`[[serving.deployment]]`).
    pub deployments: Vec<Deployment>,
    /// `moesim plan`: the rate search stops when its bracket is narrower than this share of its top.
    pub capacity_tolerance: f64,
    /// `[serving] price_per_gpu_hour`: the price the capacity ranking uses when the cluster has none.
    pub price_per_gpu_hour: Option<f64>,
    /// The routing trace (`workload.trace` or `--trace`), read and checked against the model by the caller
    /// (the core does no I/O): each step's routing replays the trace's first tokens instead of the
    /// synthetic generator's draw (see [`crate::serving::step_cost::lower`]). Not part of the file format.
    #[serde(skip)]
    pub routing_trace: Option<std::sync::Arc<moesim_traces::Trace>>,
}

/// Where requests come from and how long the run lasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestStream {
    pub arrival: Arrival,
    /// Requests arriving after this many seconds are not simulated (`None`: the whole trace, or until
    /// `max_requests`).
    pub duration_s: Option<f64>,
    /// At most this many requests.
    pub max_requests: Option<usize>,
    /// A request trace (relative to the scenario file), read by the caller.
    pub trace: Option<String>,
    pub trace_format: Option<RequestFormat>,
    pub prompt: Lengths,
    pub output: Lengths,
}

/// The arrival process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Arrival {
    /// Exponential inter-arrival times at `rate_per_s`.
    Poisson { rate_per_s: f64 },
    /// Gamma inter-arrival times at `rate_per_s` with coefficient of variation `cv` (> 1: bursty; 1 is
    /// Poisson).
    Gamma { rate_per_s: f64, cv: f64 },
    /// The trace's arrival times.
    Trace,
}

/// Prompt or output lengths, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase")]
pub enum Lengths {
    Fixed {
        tokens: u64,
    },
    /// Uniform integers in `min..=max`.
    Uniform {
        min: u64,
        max: u64,
    },
    /// Log-normal with this mean and coefficient of variation, rounded to whole tokens (at least 1), capped
    /// at `max` so that one draw cannot exceed every KV cache.
    Lognormal {
        mean: f64,
        cv: f64,
        max: u64,
    },
    /// The trace's lengths, in its order.
    Trace,
}

/// Which waiting work a step serves first when the token budget cannot hold everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Running decodes first, then prefill chunks fill the rest of the budget (Sarathi-Serve, vLLM's
    /// chunked prefill): steady inter-token latency.
    #[default]
    DecodeFirst,
    /// Prefill chunks first, decodes get what is left: lower time to first token, stalls decodes.
    PrefillFirst,
}

/// One engine instance: continuous batching with chunked prefill over a paged KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Tokens one step may process (prefill chunks plus one per decoding sequence).
    pub max_batch_tokens: u64,
    /// Sequences one step may hold.
    pub max_seqs: usize,
    /// Tokens per KV-cache block.
    pub block_size: u64,
    /// KV-cache capacity in blocks (`None`: from the memory model).
    pub kv_blocks: Option<u64>,
    /// Share of each GPU's memory the engine may use (weights, activations and KV cache), as vLLM's
    /// `gpu_memory_utilization`.
    pub gpu_memory_utilization: f64,
    pub policy: Policy,
    /// Step-cost memo: significant bits kept of each batch-shape figure (0: exact shapes). Six bits round
    /// a figure up by less than 1/32 of its value.
    pub shape_bits: u32,
}

/// Service-level objective: a request meets it when its TTFT and TPOT are within the targets; the
/// deployment meets it when at least `percentile` % of requests do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub percentile: f64,
}

/// A candidate deployment: how the request stream is served. The scenario's `[[strategy]]` entries are
/// each a co-located deployment on the whole `[cluster]` (one instance); `[[serving.deployment]]` entries
/// declare disaggregated ones (DistServe, Splitwise, Mooncake, DeepSeek-V3's inference system): a prefill
/// pool and a decode pool, the KV cache moved between them over the topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub name: String,
    pub layout: Layout,
}

/// The pools of a deployment. (A scenario holds a handful: their size does not matter, and unboxed pools
/// keep the patterns plain.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "layout", rename_all = "kebab-case")]
pub enum Layout {
    /// Prefill and decode on the same instances (continuous batching mixes them).
    Colocated { pool: Pool },
    /// Prompts on the prefill pool; their KV caches transferred to the decode pool, which generates the
    /// remaining tokens.
    Disaggregated { prefill: Pool, decode: Pool },
}

impl Layout {
    /// The pools, prefill (or co-located) first.
    pub fn pools(&self) -> Vec<&Pool> {
        match self {
            Layout::Colocated { pool } => vec![pool],
            Layout::Disaggregated { prefill, decode } => vec![prefill, decode],
        }
    }
}

/// Identical engine instances of one role, each `nodes × gpus_per_node` GPUs of the scenario's node type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub instances: usize,
    /// Nodes one instance spans (1 when it takes part of a node).
    pub nodes: usize,
    /// GPUs of each of those nodes the instance uses.
    pub gpus_per_node: usize,
    /// The instance's MoE strategy, validated against the instance's GPU count.
    pub strategy: crate::scenario::Strategy,
    /// `[serving]` with the pool's own overrides.
    pub engine: EngineConfig,
}

impl Pool {
    pub fn gpus_per_instance(&self) -> usize {
        self.nodes * self.gpus_per_node
    }
    pub fn gpus(&self) -> usize {
        self.instances * self.gpus_per_instance()
    }
}
