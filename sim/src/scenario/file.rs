//! The scenario file as written: every field optional where a preset can supply it.
//!
//! Unknown keys are rejected (`deny_unknown_fields`) so a typo never silently falls back to a default.

use super::cluster::{Fabric, SlowRank};
use moesim_traces::Skew;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: Option<String>,
    pub description: Option<String>,
    pub seed: Option<u64>,
    pub model: ModelSection,
    pub cluster: ClusterSection,
    #[serde(default)]
    pub workload: WorkloadSection,
    #[serde(default)]
    pub training: TrainingSection,
    #[serde(default, rename = "strategy")]
    pub strategies: Vec<StrategySection>,
    #[serde(default)]
    pub objective: ObjectiveSection,
    /// Overrides of the work and memory limits checked before a run ([`super::limits`]).
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[serving]`: the engine instance of a serving scenario ([`super::serving`]).
    pub serving: Option<super::serving::ServingSection>,
    /// `[slo]`: a serving scenario's latency targets.
    pub slo: Option<super::serving::SloSection>,
}

/// `[limits]`: raise (or lower) the estimated work and memory a run may take before it is refused.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Simulated (iteration × micro-batch × layer × rank) steps over every strategy.
    pub max_work: Option<f64>,
    /// Estimated peak memory, GiB.
    pub max_memory_gib: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub preset: Option<String>,
    pub name: Option<String>,
    pub layers: Option<usize>,
    pub first_dense_layers: Option<usize>,
    pub d_model: Option<u64>,
    pub expert_d_ff: Option<u64>,
    pub dense_d_ff: Option<u64>,
    pub experts: Option<usize>,
    pub top_k: Option<usize>,
    pub shared_experts: Option<usize>,
    pub expert_matrices: Option<u64>,
    pub attn_params_per_layer: Option<u64>,
    pub kv_bytes_per_token_per_layer: Option<u64>,
    /// KV heads of the cache (GQA groups; 1 for MLA): how tensor parallelism splits it.
    pub kv_heads: Option<u64>,
    pub vocab: Option<u64>,
    pub dtype_bytes: Option<u32>,
    pub seq_len: Option<u64>,
    pub micro_batch: Option<u64>,
    pub attn_heads: Option<u64>,
    pub routing_groups: Option<usize>,
    pub max_groups_per_token: Option<usize>,
    pub attn_qk_head_dim: Option<u64>,
    pub attn_v_head_dim: Option<u64>,
    /// MLA's query latent width (0: not MLA).
    pub q_lora_rank: Option<u64>,
    /// MLA's key/value latent width (0: not MLA).
    pub kv_lora_rank: Option<u64>,
    pub expert_dtype: Option<crate::scenario::model::Dtype>,
    pub dense_dtype: Option<crate::scenario::model::Dtype>,
    /// Multi-token-prediction modules trained beside the model (DeepSeek-V3: 1).
    pub mtp_depth: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub preset: Option<String>,
    pub name: Option<String>,
    pub fabric: Option<Fabric>,
    pub nodes: Option<usize>,
    pub gpus_per_node: Option<usize>,
    pub gpu: Option<String>,
    pub profile: Option<String>,
    pub peak_tflops: Option<f64>,
    pub peak_fp8_tflops: Option<f64>,
    pub hbm_gbytes_per_s: Option<f64>,
    pub gpu_memory_gib: Option<f64>,
    pub compute_efficiency: Option<f64>,
    pub memory_efficiency: Option<f64>,
    pub launch_overhead_us: Option<f64>,
    pub nvlink_gbytes_per_s: Option<f64>,
    pub nvlink_latency_us: Option<f64>,
    pub nic_gbits_per_s: Option<f64>,
    pub nic_latency_us: Option<f64>,
    pub spine_oversubscription: Option<f64>,
    pub pcie_gbytes_per_s: Option<f64>,
    pub host_memory_gib: Option<f64>,
    pub host_memory_gbytes_per_s: Option<f64>,
    pub nvme_gib: Option<f64>,
    pub nvme_gbytes_per_s: Option<f64>,
    pub cpu_tflops: Option<f64>,
    pub ideal_link_gbytes_per_s: Option<f64>,
    pub ideal_latency_us: Option<f64>,
    pub slow_ranks: Option<Vec<SlowRank>>,
    pub compute_noise_cv: Option<f64>,
    pub network: Option<crate::network::NetworkKind>,
    pub comm_sm_fraction: Option<f64>,
    pub stream_priority: Option<crate::engine::StreamPriorities>,
    pub nvlink_efficiency: Option<f64>,
    pub nic_efficiency: Option<f64>,
    /// Price of one GPU-hour (any currency) for ranking serving deployments by cost per million tokens.
    pub price_per_gpu_hour: Option<f64>,
}

/// What is being run: a training step, an inference prefill or decode step, or serving a stream of
/// requests (continuous batching; see [`crate::serving`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Training,
    Prefill,
    Decode,
    Serving,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    #[serde(default = "one")]
    pub micro_batches: usize,
    /// Synthetic skew; ignored when `trace` is set.
    #[serde(default = "default_skew")]
    pub skew: Skew,
    #[serde(default = "yes")]
    pub shuffle_per_layer: bool,
    /// A routing trace to replay instead of synthetic routing.
    pub trace: Option<String>,
    /// How synthetic expert popularity changes over iterations and layers (drift, hot-spot rotation,
    /// bursts, layer correlation, null experts); all off by default.
    #[serde(default)]
    pub dynamics: moesim_traces::Dynamics,
    /// Predict the window after this iteration from the routing before it, and report the error against
    /// the simulated window (straggler prediction).
    pub plan_until: Option<usize>,
    /// Independent routing draws per iteration for strategies with tensor or pipeline parallelism:
    /// micro-batch `m` routes like draw `m mod routing_samples`. Default: one draw per micro-batch.
    pub routing_samples: Option<usize>,
    /// `[workload.serving]`: the request stream of `mode = "serving"`.
    pub serving: Option<super::serving::RequestsSection>,
}

impl Default for WorkloadSection {
    fn default() -> Self {
        WorkloadSection {
            mode: Mode::Training,
            iterations: default_iterations(),
            micro_batches: 1,
            skew: default_skew(),
            shuffle_per_layer: true,
            trace: None,
            dynamics: Default::default(),
            plan_until: None,
            routing_samples: None,
            serving: None,
        }
    }
}

fn default_iterations() -> usize {
    20
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_skew() -> Skew {
    Skew::Uniform
}

/// Memory and optimizer settings of a training run.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// ZeRO stage for data-parallel state: 0 replicated, 1 optimizer sharded, 2 + gradients, 3 + parameters.
    #[serde(default = "default_zero")]
    pub zero_stage: u8,
    /// Keep only layer inputs in forward and recompute each layer's whole forward in backward.
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Optimizer bytes per parameter (mixed-precision Adam: fp32 master, m and v = 12).
    #[serde(default = "default_optimizer_bytes")]
    pub optimizer_bytes_per_param: f64,
    /// Gradient bytes per parameter.
    #[serde(default = "default_grad_bytes")]
    pub grad_bytes_per_param: f64,
    /// Selective recomputation: modules whose outputs are recomputed in backward instead of kept
    /// (`layernorm`, `mla_up_proj`, `moe_act`, `core_attn`, `mlp`, `moe`; see `crate::activations`).
    #[serde(default)]
    pub recompute_modules: crate::scenario::recompute::RecomputeModules,
    /// How the loss's softmax cross-entropy over the vocabulary runs: `fused` (Megatron-Core's
    /// `--cross-entropy-loss-fusion`) or `unfused` (its default path); see `strategy::output_head`.
    #[serde(default)]
    pub cross_entropy: CrossEntropy,
}

/// Implementations of the training loss, which differ in how many times they pass over the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CrossEntropy {
    /// Megatron-Core's native fusion: three forward kernels and one backward, 28 bytes per logit.
    #[default]
    Fused,
    /// Megatron-Core without the fusion flag: six forward kernels and two backward, 52 bytes per logit.
    Unfused,
}

impl Default for TrainingSection {
    fn default() -> Self {
        TrainingSection {
            zero_stage: default_zero(),
            activation_checkpointing: false,
            optimizer_bytes_per_param: default_optimizer_bytes(),
            grad_bytes_per_param: default_grad_bytes(),
            recompute_modules: Default::default(),
            cross_entropy: CrossEntropy::default(),
        }
    }
}

fn default_zero() -> u8 {
    1
}
fn default_optimizer_bytes() -> f64 {
    12.0
}
fn default_grad_bytes() -> f64 {
    2.0
}

/// The strategy families moesim models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Static expert parallelism.
    Ep,
    /// Fully sharded sparse data parallelism (Hecate): experts sharded, sparsely materialized per iteration.
    Fssdp,
    /// Experts offloaded to host memory or SSD behind a per-layer GPU expert cache (inference).
    Offload,
    /// Expert parallelism with replicated hot experts, re-planned from a load forecast.
    EpReplicated,
}

/// Who builds an `ep-replicated` placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementMethod {
    /// moesim's planner (duplicate-free, node-spread, local search, stable re-plans).
    #[default]
    Moesim,
    /// DeepSeek's EPLB (the baseline production runtimes ship).
    Eplb,
}

/// How an expert's tokens are split over its copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenSplit {
    /// Evenly over all copies.
    #[default]
    Even,
    /// Evenly over the copies in the source's node if there are any, else over all copies.
    LocalFirst,
}

/// Over how many iterations an `ep-replicated` re-plan counts the seconds a move saves (moesim's planner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplanGain {
    /// Every iteration left in the run: takes the gain of adapting to the present to last as long as the
    /// plan does, which over-moves under drift.
    RestOfRun,
    /// As long as each layer's load pattern is expected to hold (its backtested half-life), at most the
    /// rest of the run: under drift, fewer moves and fewer seconds (docs/placement.md). The default.
    #[default]
    Persistence,
}

impl ReplanGain {
    /// The planner's decision window.
    pub fn window(self) -> crate::placement::priced::DecisionWindow {
        use crate::placement::priced::DecisionWindow;
        match self {
            ReplanGain::RestOfRun => DecisionWindow::RestOfRun,
            ReplanGain::Persistence => DecisionWindow::Persistence,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    pub name: String,
    pub kind: StrategyKind,
    /// EP degree: experts are split over groups of this many consecutive ranks (default: min(GPUs, experts)).
    pub ep_size: Option<usize>,
    /// Token dropping above `capacity_factor × mean tokens per expert` (none if unset).
    pub capacity_factor: Option<f64>,
    /// EP kinds: split each micro-batch into this many parts whose communication overlaps the others'
    /// compute (DeepSeek's two-micro-batch overlap with 2; default 1, no overlap).
    pub overlap_micro_batches: Option<usize>,
    /// EP kinds: `direct` (every token copy to its GPU; default) or `hierarchical` all-to-all.
    pub a2a: Option<crate::collective::A2aAlgorithm>,

    // Tensor and pipeline parallelism (kind = "ep"; see `scenario/parallel.rs`).
    /// Tensor-parallel degree (default 1).
    pub tp: Option<usize>,
    /// Pipeline-parallel degree (default 1).
    pub pp: Option<usize>,
    /// Expert tensor-parallel degree (default 1): each routed expert's FFN split over `etp` GPUs.
    pub etp: Option<usize>,
    /// `gpipe`, `1f1b` (default), `interleaved` or `dual-pipe`.
    pub pipeline_schedule: Option<crate::scenario::parallel::PipelineSchedule>,
    /// Model chunks per pipeline rank (interleaved schedule).
    pub virtual_stages: Option<usize>,
    /// Layers of each model stage (default: Megatron's even split counting the embedding and head as layers).
    pub stage_layers: Option<Vec<usize>>,
    /// `tp-ep-dp-pp` (default: pipeline stages outermost) or `tp-ep-pp-dp` (data-parallel replicas
    /// outermost, pipeline neighbours adjacent).
    pub rank_order: Option<crate::scenario::parallel::RankOrder>,

    // EP with replication (kind = "ep-replicated").
    /// Expert slots per GPU (default: experts / ep_size + 1).
    pub slots_per_gpu: Option<usize>,
    /// Iterations between re-plans (default 10; the first plan is made after the first interval).
    pub replan_interval: Option<usize>,
    pub placement: Option<PlacementMethod>,
    pub token_split: Option<TokenSplit>,
    /// Over how many iterations a re-plan counts what a move saves (default `persistence`).
    pub replan_gain: Option<ReplanGain>,

    /// Iterations in the moving-average load forecast (fssdp: default 5; ep-replicated: default all seen,
    /// and with `placement = "moesim"` the iterations its planner remembers).
    pub forecast_window: Option<usize>,

    // FSSDP knobs (kind = "fssdp").
    /// Memory cap m: experts a rank may materialize per layer beyond those it owns.
    pub memory_cap_experts: Option<usize>,
    /// Overlap degree t: experts one spAG can hide behind the dense compute (derived when unset).
    pub overlap_degree: Option<usize>,
    /// Free materialized copies after forward and re-gather them in backward.
    pub rematerialize: Option<bool>,
    /// Re-plan on the actual routing after the gate when a critical-path spAG pays for itself.
    pub calibrate: Option<bool>,
    /// Iterations between heterogeneous re-shardings of owners (0: never; default 100).
    pub reshard_interval: Option<usize>,

    // Offloading knobs (kind = "offload").
    /// Cache replacement policy: lru, lfu, belady or score.
    pub cache_policy: Option<String>,
    /// Experts of each layer the GPU cache holds (or in all layers together with `cache_scope = "shared"`).
    pub cache_experts_per_layer: Option<usize>,
    /// `per-layer` (default) or `shared` (one cache of `cache_experts_per_layer × layers` for all layers).
    pub cache_scope: Option<String>,
    /// `none`, `pregate` (next-layer pre-gating with `prefetch_accuracy`) or `oracle` (trace-driven).
    pub prefetch: Option<String>,
    /// Fraction of next-layer experts pre-gating predicts correctly (default 0.9).
    pub prefetch_accuracy: Option<f64>,
    /// What a missed expert costs: `fetch` over PCIe, `cpu` compute, or `auto` (the faster).
    pub miss_action: Option<String>,
    /// Host buffers: `pinned` (full PCIe bandwidth) or `pageable` (about half).
    pub host_memory: Option<String>,
    /// Where offloaded experts live: `dram` (default) or `ssd`.
    pub expert_tier: Option<String>,
    /// Bits per expert weight: one number for all experts, or one per expert (EdgeMoE, MC-MoE).
    pub expert_bits: Option<ExpertBits>,
    /// Low-bit experts: `fused` (dequantised in the GEMM) or `materialize` (a bf16 copy in HBM first).
    pub dequant: Option<String>,
    /// The expert a fetch replaces: `discard` (default) or `write-back` (copied back to host memory first).
    pub eviction: Option<String>,
    /// Stream the expert copies queue on: `dedicated` (default, overlapping compute) or `compute`.
    pub copy_stream: Option<String>,
    /// Host time per framework operator in microseconds (default: PyTorch eager, see the datasheet).
    pub host_us_per_op: Option<f64>,
    /// Framework operators per layer outside the experts (default 0: host work hidden behind the GPU).
    pub host_ops_per_layer: Option<u32>,
    /// Framework operators per expert run (default 0).
    pub host_ops_per_expert: Option<u32>,
}

/// Per-expert bit-width: one for all, or one per expert of a layer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ExpertBits {
    All(f64),
    PerExpert(Vec<f64>),
}

/// What `plan` optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    #[default]
    TokensPerS,
    StepTimeMean,
    StepTimeP50,
    StepTimeP99,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSection {
    #[serde(default)]
    pub metric: Metric,
    /// Memory a rank may use; defaults to the GPU's capacity.
    pub memory_limit_gib: Option<f64>,
    /// Quality constraint: the largest fraction of (token, expert) assignments a strategy may drop (with a
    /// capacity factor) and still be chosen; defaults to 0.01.
    pub max_dropped_fraction: Option<f64>,
}
