//! Scenarios: what to simulate, parsed from TOML text, with presets resolved and every field validated.
//!
//! Life cycle: text → [`file::ScenarioFile`] (syntax and types, with spans) → `--set` overrides →
//! presets merged → [`Scenario`] (validated, every field concrete). This module does no I/O: the caller
//! reads the file and passes its name and text.

// A scenario error carries the file's text so it can be rendered with the offending line; errors are rare
// and returned once, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod cluster;
pub mod error;
pub mod file;
pub mod knobs;
pub mod limits;
pub mod locate;
pub mod model;
pub mod overrides;
pub mod parallel;
pub mod recompute;
pub mod serving;

use cluster::{Cluster, Fabric, cluster_preset};
pub use error::ScenarioError;
use file::{Metric, Mode, ObjectiveSection, ScenarioFile, StrategyKind, TrainingSection};
use model::{Model, model_preset};
use moesim_traces::Skew;
use serde::{Deserialize, Serialize};

/// A validated scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub model: Model,
    pub cluster: Cluster,
    pub workload: Workload,
    pub training: TrainingSection,
    pub strategies: Vec<Strategy>,
    pub objective: Objective,
    /// Set for `workload.mode = "serving"`: the request stream, the engine instance and the SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<crate::serving::config::ServingConfig>,
}

/// The routing workload and run length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub mode: Mode,
    pub iterations: usize,
    pub micro_batches: usize,
    pub skew: Skew,
    pub shuffle_per_layer: bool,
    /// Trace path as written in the scenario (relative to the scenario file).
    pub trace: Option<String>,
    /// Synthetic popularity dynamics.
    #[serde(default)]
    pub dynamics: moesim_traces::Dynamics,
    /// Straggler prediction: forecast the iterations from here on from those before.
    pub plan_until: Option<usize>,
    /// Independent routing draws per iteration for the pipelined lowerings (strategies with tensor or
    /// pipeline parallelism); micro-batch `m` routes like draw `m mod routing_samples`. `None`: one draw per
    /// micro-batch. Fewer draws price fewer MoE cells, and simulate the same schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_samples: Option<usize>,
    /// Serving: the batch one step lowers (set by [`crate::serving::step_cost`] on a per-step copy of the
    /// scenario; `None` in a scenario as parsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<crate::serving::step_cost::StepShape>,
}

/// One strategy to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    pub name: String,
    pub kind: StrategyKind,
    pub ep_size: usize,
    pub capacity_factor: Option<f64>,
    /// Parts each micro-batch is split into so that one part's communication overlaps another's compute.
    #[serde(default = "one_part")]
    pub overlap_micro_batches: usize,
    /// How the EP all-to-alls move tokens.
    #[serde(default)]
    pub a2a: crate::collective::A2aAlgorithm,
    /// Set for kind "fssdp".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fssdp: Option<knobs::FssdpKnobs>,
    /// Set for kind "offload".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<knobs::OffloadKnobs>,
    /// Replication settings (kind `ep-replicated` only).
    pub replication: Option<Replication>,
    /// Tensor and pipeline parallelism (kind `ep` only; tp = pp = 1 elsewhere).
    #[serde(default, skip_serializing_if = "parallel::Parallel::is_single")]
    pub parallel: parallel::Parallel,
}

fn one_part() -> usize {
    1
}

/// A strategy's kind with its own settings, typed: what the simulator dispatches on. (The scenario file and
/// the plan JSON keep the flat `kind` + knobs form.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StrategyParams<'a> {
    Ep,
    EpReplicated(&'a Replication),
    Fssdp(&'a knobs::FssdpKnobs),
    Offload(&'a knobs::OffloadKnobs),
}

impl Strategy {
    /// Tokens the whole cluster processes per iteration under this strategy: every data-parallel replica
    /// (`GPUs / (tp · pp)` of them) runs the iteration's micro-batches.
    pub fn tokens_per_iteration(&self, s: &Scenario) -> u64 {
        let p = &self.parallel;
        s.tokens_per_iteration() / (p.tp * p.pp).max(1) as u64
    }

    /// The kind with its settings. Validation guarantees every kind carries its own settings.
    pub fn params(&self) -> StrategyParams<'_> {
        let missing = |what: &str| -> ! {
            panic!(
                "strategy `{}` of kind {:?} has no {what} settings (not a validated scenario)",
                self.name, self.kind
            )
        };
        match self.kind {
            StrategyKind::Ep => StrategyParams::Ep,
            StrategyKind::EpReplicated => StrategyParams::EpReplicated(
                self.replication
                    .as_ref()
                    .unwrap_or_else(|| missing("replication")),
            ),
            StrategyKind::Fssdp => {
                StrategyParams::Fssdp(self.fssdp.as_ref().unwrap_or_else(|| missing("FSSDP")))
            }
            StrategyKind::Offload => StrategyParams::Offload(
                self.offload
                    .as_ref()
                    .unwrap_or_else(|| missing("offloading")),
            ),
        }
    }
}

/// How `ep-replicated` places and re-plans copies of experts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Replication {
    pub slots_per_gpu: usize,
    pub replan_interval: usize,
    /// Iterations the forecast averages (`None`: every iteration seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast_window: Option<usize>,
    pub method: file::PlacementMethod,
    pub token_split: file::TokenSplit,
    #[serde(default)]
    pub replan_gain: file::ReplanGain,
}

/// What `plan` optimises, under which memory limit and quality constraint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub metric: Metric,
    pub memory_limit_gib: f64,
    /// A strategy that drops a larger fraction of its (token, expert) assignments is not chosen: tokens/s
    /// counts every token of the batch, dropped assignments included, so dropping would otherwise win.
    #[serde(default = "default_max_dropped_fraction")]
    pub max_dropped_fraction: f64,
}

/// The default quality constraint: at most 1 % of assignments dropped.
pub const DEFAULT_MAX_DROPPED_FRACTION: f64 = 0.01;

fn default_max_dropped_fraction() -> f64 {
    DEFAULT_MAX_DROPPED_FRACTION
}

impl Scenario {
    /// Tokens processed per rank per micro-batch in this mode.
    pub fn tokens_per_rank(&self) -> u64 {
        match self.workload.mode {
            Mode::Training | Mode::Prefill => self.model.micro_batch * self.model.seq_len,
            Mode::Decode => self.model.micro_batch,
            // A serving step's own batch, else the largest batch a step may hold (split over the ranks).
            Mode::Serving => match (&self.workload.step, &self.serving) {
                (Some(step), _) => step.tokens,
                (None, Some(c)) => c
                    .engine
                    .max_batch_tokens
                    .div_ceil(self.cluster.gpus() as u64),
                (None, None) => self.model.micro_batch,
            }
            .max(1),
        }
    }

    /// Tokens the whole cluster processes per iteration.
    pub fn tokens_per_iteration(&self) -> u64 {
        self.tokens_per_rank() * self.workload.micro_batches as u64 * self.cluster.gpus() as u64
    }
}

/// Parses and validates a scenario. `file` names it in errors; `overrides` are `KEY=VALUE` strings.
pub fn parse_scenario(
    file: &str,
    text: &str,
    overrides: &[String],
) -> Result<Scenario, ScenarioError> {
    let err = |msg: String| ScenarioError::new(file, text, msg);
    let raw: ScenarioFile = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        err(format!("invalid scenario: {msg}")).at(e.span(), msg)
    })?;
    let raw = if overrides.is_empty() {
        raw
    } else {
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| err(format!("invalid scenario: {e}")))?;
        let mut parsed = raw;
        // One at a time, so that an error names the `--set` that caused it.
        for o in overrides {
            overrides::apply_override(&mut doc, o).map_err(&err)?;
            parsed = ScenarioFile::deserialize(doc.clone()).map_err(|e| {
                err(format!(
                    "invalid scenario after --set {o}: {}",
                    e.message().trim()
                ))
                .help("check the key path and the value's type")
            })?;
        }
        parsed
    };
    let resolver = Resolver { file, text };
    let scenario = resolver.resolve(&raw)?;
    resolver.limits(&scenario, &raw.limits)?;
    Ok(scenario)
}

struct Resolver<'a> {
    file: &'a str,
    text: &'a str,
}

impl Resolver<'_> {
    fn error(
        &self,
        path: &str,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError::new(
            self.file,
            self.text,
            format!("invalid scenario: {}: {}", path, message.into()),
        )
        .at(locate::locate(self.text, path), label)
    }

    /// Refuses a run whose estimated work or memory exceeds `[limits]` (see [`limits`]).
    fn limits(&self, s: &Scenario, l: &file::LimitsSection) -> Result<(), ScenarioError> {
        for (f, v) in [
            ("max_work", l.max_work),
            ("max_memory_gib", l.max_memory_gib),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(self.error(
                    &format!("limits.{f}"),
                    format!("must be positive and finite, got {v}"),
                    "expected a positive number",
                ));
            }
        }
        limits::check(s, l).map_err(|(path, msg, help)| {
            ScenarioError::new(
                self.file,
                self.text,
                format!("run refused before it starts: {msg}"),
            )
            .at(locate::locate(self.text, path), "limit")
            .help(help)
        })
    }

    /// A count that must lie in `1..=max`.
    fn count(&self, path: &str, v: usize, max: usize) -> Result<(), ScenarioError> {
        if v == 0 || v > max {
            return Err(self.error(
                path,
                format!("must be between 1 and {max}, got {v}"),
                format!("expected 1..={max}"),
            ));
        }
        Ok(())
    }

    fn resolve(&self, raw: &ScenarioFile) -> Result<Scenario, ScenarioError> {
        let model = self.model(raw)?;
        let cluster = self.cluster(raw)?;
        let w = &raw.workload;
        self.count("workload.iterations", w.iterations, limits::MAX_ITERATIONS)?;
        self.count(
            "workload.micro_batches",
            w.micro_batches,
            limits::MAX_MICRO_BATCHES,
        )?;
        let bad_skew = moesim_traces::limits::check_skew(&w.skew).err();
        if let Some(msg) = bad_skew {
            return Err(self.error("workload.skew", msg.clone(), msg));
        }
        let workload = Workload {
            mode: w.mode,
            iterations: w.iterations,
            micro_batches: w.micro_batches,
            skew: w.skew,
            shuffle_per_layer: w.shuffle_per_layer,
            trace: w.trace.clone(),
            dynamics: w.dynamics,
            plan_until: w.plan_until,
            routing_samples: w.routing_samples,
            step: None,
        };
        if let Some(n) = w.routing_samples {
            if n == 0 || n > w.micro_batches {
                return Err(self.error(
                    "workload.routing_samples",
                    format!(
                        "must be between 1 and workload.micro_batches ({}), got {n}",
                        w.micro_batches
                    ),
                    format!("expected 1..={}", w.micro_batches),
                ));
            }
            if w.trace.is_some() {
                return Err(self.error(
                    "workload.routing_samples",
                    "routing_samples draws synthetic routing; a trace replays its own".to_string(),
                    "no routing_samples with workload.trace".to_string(),
                ));
            }
        }
        if let Err((field, msg)) = w.dynamics.validate() {
            return Err(self.error(&format!("workload.dynamics.{field}"), msg.clone(), msg));
        }
        if let Some(u) = w.plan_until
            && (u == 0 || u >= w.iterations)
        {
            return Err(self.error(
                "workload.plan_until",
                format!(
                    "{u} leaves no history or no window to predict ({} iterations)",
                    w.iterations
                ),
                format!("expected 1..{}", w.iterations),
            ));
        }
        let training = self.training(&raw.training, &model)?;
        let strategies = self.strategies(raw, &model, &cluster)?;
        if training.recompute_modules.moe_act
            && let Some(i) = raw
                .strategies
                .iter()
                .position(|st| st.kind == StrategyKind::Fssdp)
        {
            return Err(self.error(
                "training.recompute_modules",
                format!(
                    "`moe_act` is not modelled for FSSDP (strategy[{i}] `{}`): its expert copies price their activation once",
                    raw.strategies[i].name
                ),
                "expected layernorm and mla_up_proj only with an fssdp strategy",
            ));
        }
        let objective = self.objective(&raw.objective, &cluster)?;
        let serving = self.serving(raw)?;
        Ok(Scenario {
            name: raw.name.clone().unwrap_or_else(|| {
                std::path::Path::new(self.file)
                    .file_stem()
                    .map_or("scenario".into(), |s| s.to_string_lossy().into())
            }),
            description: raw.description.clone().unwrap_or_default(),
            seed: raw.seed.unwrap_or(0),
            model,
            cluster,
            workload,
            training,
            strategies,
            objective,
            serving,
        })
    }

    fn model(&self, raw: &ScenarioFile) -> Result<Model, ScenarioError> {
        let s = &raw.model;
        let mut m = match &s.preset {
            Some(p) => model_preset(p).ok_or_else(|| {
                self.error(
                    "model.preset",
                    format!("unknown model preset `{p}`"),
                    "unknown preset",
                )
                .help(format!(
                    "known presets: {}",
                    model::MODEL_PRESETS.join(", ")
                ))
            })?,
            None => {
                let required = [
                    ("layers", s.layers.is_some()),
                    ("d_model", s.d_model.is_some()),
                    ("expert_d_ff", s.expert_d_ff.is_some()),
                    ("experts", s.experts.is_some()),
                    ("top_k", s.top_k.is_some()),
                ];
                if let Some((field, _)) = required.iter().find(|(_, set)| !set) {
                    return Err(self
                        .error(
                            &format!("model.{field}"),
                            "missing (no preset given)",
                            "this table needs it",
                        )
                        .help(format!(
                            "set model.preset to one of {} or give every shape field",
                            model::MODEL_PRESETS.join(", ")
                        )));
                }
                let d = s.d_model.unwrap_or(0);
                Model {
                    name: "custom".into(),
                    layers: 0,
                    first_dense_layers: 0,
                    d_model: d,
                    expert_d_ff: 0,
                    dense_d_ff: 4 * d,
                    experts: 0,
                    top_k: 0,
                    shared_experts: 0,
                    expert_matrices: 3,
                    attn_params_per_layer: 4 * d * d,
                    kv_bytes_per_token_per_layer: 4 * d,
                    kv_heads: 0,
                    vocab: 32000,
                    dtype_bytes: 2,
                    seq_len: 4096,
                    micro_batch: 1,
                    attention: model::Attention::mha(d, 128),
                    expert_dtype: model::Dtype::Bf16,
                    dense_dtype: model::Dtype::Bf16,
                    routing: model::RouterGroups::NONE,
                    mtp_depth: 0,
                    q_lora_rank: 0,
                    kv_lora_rank: 0,
                }
            }
        };
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = s.$f.clone() { m.$f = v; } )* };
        }
        take!(
            name,
            layers,
            first_dense_layers,
            d_model,
            expert_d_ff,
            dense_d_ff,
            experts,
            top_k,
            shared_experts,
            expert_matrices,
            attn_params_per_layer,
            kv_bytes_per_token_per_layer,
            kv_heads,
            vocab,
            dtype_bytes,
            seq_len,
            micro_batch,
            expert_dtype,
            dense_dtype,
            mtp_depth,
            q_lora_rank,
            kv_lora_rank
        );
        if let Some(h) = s.attn_heads {
            m.attention.heads = h;
        }
        if let Some(g) = s.routing_groups {
            // A new group count resets the per-token limit to no limit unless that is given too.
            m.routing = model::RouterGroups {
                groups: g,
                max_groups_per_token: g,
            };
        }
        if let Some(k) = s.max_groups_per_token {
            m.routing.max_groups_per_token = k;
        }
        if let Some(d) = s.attn_qk_head_dim {
            m.attention.qk_head_dim = d;
        }
        if let Some(d) = s.attn_v_head_dim {
            m.attention.v_head_dim = d;
        }
        self.count("model.layers", m.layers, limits::MAX_LAYERS)?;
        self.count("model.experts", m.experts, limits::MAX_EXPERTS)?;
        for (f, v) in [
            ("d_model", m.d_model),
            ("expert_d_ff", m.expert_d_ff),
            ("dense_d_ff", m.dense_d_ff),
            ("seq_len", m.seq_len),
            ("micro_batch", m.micro_batch),
            ("vocab", m.vocab),
        ] {
            if v > limits::MAX_DIM {
                return Err(self.error(
                    &format!("model.{f}"),
                    format!(
                        "{v} is beyond the largest supported size ({})",
                        limits::MAX_DIM
                    ),
                    format!("expected at most {}", limits::MAX_DIM),
                ));
            }
        }
        for (f, v) in [
            ("attn_params_per_layer", m.attn_params_per_layer),
            (
                "kv_bytes_per_token_per_layer",
                m.kv_bytes_per_token_per_layer,
            ),
        ] {
            if v > limits::MAX_DIM * limits::MAX_DIM {
                return Err(self.error(
                    &format!("model.{f}"),
                    format!(
                        "{v} is beyond the largest supported size ({})",
                        limits::MAX_DIM * limits::MAX_DIM
                    ),
                    "expected a smaller number",
                ));
            }
        }
        if m.shared_experts > limits::MAX_EXPERTS {
            return Err(self.error(
                "model.shared_experts",
                format!(
                    "{} is beyond the largest supported count ({})",
                    m.shared_experts,
                    limits::MAX_EXPERTS
                ),
                "expected a smaller count",
            ));
        }
        if m.seq_len * m.micro_batch > limits::MAX_TOKENS_PER_RANK {
            return Err(self.error(
                "model.micro_batch",
                format!(
                    "micro_batch × seq_len = {} tokens per rank is beyond the largest supported ({})",
                    m.seq_len * m.micro_batch,
                    limits::MAX_TOKENS_PER_RANK
                ),
                "expected fewer tokens",
            ));
        }
        let positive: [(&str, u64); 10] = [
            ("attn_heads", m.attention.heads),
            ("attn_qk_head_dim", m.attention.qk_head_dim),
            ("attn_v_head_dim", m.attention.v_head_dim),
            ("layers", m.layers as u64),
            ("d_model", m.d_model),
            ("expert_d_ff", m.expert_d_ff),
            ("experts", m.experts as u64),
            ("top_k", m.top_k as u64),
            ("seq_len", m.seq_len),
            ("micro_batch", m.micro_batch),
        ];
        for (f, v) in positive {
            if v == 0 {
                return Err(self.error(
                    &format!("model.{f}"),
                    "must be at least 1",
                    "expected a positive number",
                ));
            }
        }
        if m.top_k > m.experts {
            return Err(self.error(
                "model.top_k",
                format!(
                    "top_k = {} exceeds the number of experts ({})",
                    m.top_k, m.experts
                ),
                format!("expected at most {}", m.experts),
            ));
        }
        let rg = m.routing;
        if rg.groups == 0 || !m.experts.is_multiple_of(rg.groups) {
            return Err(self.error(
                "model.routing_groups",
                format!(
                    "{} groups cannot split {} experts evenly",
                    rg.groups, m.experts
                ),
                "expected a positive divisor of model.experts",
            ));
        }
        if rg.max_groups_per_token == 0
            || rg.max_groups_per_token > rg.groups
            || rg.max_groups_per_token * (m.experts / rg.groups) < m.top_k
        {
            return Err(self.error(
                "model.max_groups_per_token",
                format!(
                    "{} groups per token (of {} groups of {} experts) cannot hold top_k = {} experts",
                    rg.max_groups_per_token,
                    rg.groups,
                    m.experts / rg.groups,
                    m.top_k
                ),
                format!(
                    "expected between {} and {}",
                    m.top_k.div_ceil(m.experts / rg.groups).max(1),
                    rg.groups
                ),
            ));
        }
        if m.layers * m.experts > moesim_traces::limits::MAX_LAYER_EXPERTS {
            return Err(self.error(
                "model.experts",
                format!(
                    "{} layers × {} experts is beyond the largest supported model ({} layer-expert pairs)",
                    m.layers,
                    m.experts,
                    moesim_traces::limits::MAX_LAYER_EXPERTS
                ),
                "expected fewer experts or layers",
            ));
        }
        if m.first_dense_layers >= m.layers {
            return Err(self.error(
                "model.first_dense_layers",
                format!(
                    "{} dense layers leave no MoE layer out of {}",
                    m.first_dense_layers, m.layers
                ),
                format!("expected less than {}", m.layers),
            ));
        }
        if !(2..=3).contains(&m.expert_matrices) {
            return Err(self.error(
                "model.expert_matrices",
                "must be 2 (GELU FFN) or 3 (SwiGLU)",
                "expected 2 or 3",
            ));
        }
        if ![1, 2, 4].contains(&m.dtype_bytes) {
            return Err(self.error(
                "model.dtype_bytes",
                "must be 1, 2 or 4",
                "expected 1, 2 or 4",
            ));
        }
        Ok(m)
    }

    fn cluster(&self, raw: &ScenarioFile) -> Result<Cluster, ScenarioError> {
        let s = &raw.cluster;
        let preset = s.preset.clone().unwrap_or_else(|| "ideal".into());
        let mut c = cluster_preset(&preset).ok_or_else(|| {
            self.error(
                "cluster.preset",
                format!("unknown cluster preset `{preset}`"),
                "unknown preset",
            )
            .help(format!(
                "known presets: {}",
                cluster::CLUSTER_PRESETS.join(", ")
            ))
        })?;
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = s.$f.clone() { c.$f = v; } )* };
        }
        take!(
            name,
            fabric,
            nodes,
            gpus_per_node,
            gpu,
            peak_tflops,
            peak_fp8_tflops,
            hbm_gbytes_per_s,
            gpu_memory_gib,
            compute_efficiency,
            memory_efficiency,
            launch_overhead_us,
            nvlink_gbytes_per_s,
            nvlink_latency_us,
            nic_gbits_per_s,
            nic_latency_us,
            spine_oversubscription,
            pcie_gbytes_per_s,
            host_memory_gib,
            host_memory_gbytes_per_s,
            nvme_gib,
            nvme_gbytes_per_s,
            cpu_tflops,
            ideal_link_gbytes_per_s,
            ideal_latency_us,
            slow_ranks,
            compute_noise_cv,
            network,
            comm_sm_fraction,
            stream_priority,
            nvlink_efficiency,
            nic_efficiency
        );
        if s.profile.is_some() {
            c.profile = s.profile.clone();
        }
        if let Some(price) = s.price_per_gpu_hour {
            if !(price.is_finite() && price > 0.0) {
                return Err(self.error(
                    "cluster.price_per_gpu_hour",
                    format!("must be positive and finite, got {price}"),
                    "expected a price per GPU-hour",
                ));
            }
            c.price_per_gpu_hour = Some(price);
        }
        if c.nodes == 0 || c.gpus_per_node == 0 {
            let f = if c.nodes == 0 {
                "cluster.nodes"
            } else {
                "cluster.gpus_per_node"
            };
            return Err(self.error(f, "a cluster needs at least one GPU", "expected at least 1"));
        }
        if c.nodes
            .checked_mul(c.gpus_per_node)
            .is_none_or(|g| g > limits::MAX_GPUS)
        {
            let f = if c.nodes > c.gpus_per_node {
                "cluster.nodes"
            } else {
                "cluster.gpus_per_node"
            };
            return Err(self.error(
                f,
                format!(
                    "{} nodes × {} GPUs is beyond the largest supported cluster ({} GPUs)",
                    c.nodes,
                    c.gpus_per_node,
                    limits::MAX_GPUS
                ),
                "expected a smaller cluster",
            ));
        }
        let mut positive = vec![
            ("peak_tflops", c.peak_tflops),
            ("hbm_gbytes_per_s", c.hbm_gbytes_per_s),
            ("gpu_memory_gib", c.gpu_memory_gib),
            ("nvlink_gbytes_per_s", c.nvlink_gbytes_per_s),
            ("pcie_gbytes_per_s", c.pcie_gbytes_per_s),
            ("spine_oversubscription", c.spine_oversubscription),
        ];
        if c.nodes > 1 && c.fabric != Fabric::Ideal {
            positive.push(("nic_gbits_per_s", c.nic_gbits_per_s));
        }
        if c.fabric == Fabric::Ideal {
            positive.push(("ideal_link_gbytes_per_s", c.ideal_link_gbytes_per_s));
        }
        // +inf is allowed: an ideal part (the `ideal` preset's unbounded HBM); a ratio must be finite.
        for (f, v) in positive {
            if v.is_nan() || v <= 0.0 || (f == "spine_oversubscription" && v.is_infinite()) {
                return Err(self.error(
                    &format!("cluster.{f}"),
                    format!("must be positive, got {v}"),
                    "expected a positive number",
                ));
            }
        }
        for (f, v, max) in [
            (
                "nvlink_latency_us",
                c.nvlink_latency_us,
                limits::MAX_LATENCY_US,
            ),
            ("nic_latency_us", c.nic_latency_us, limits::MAX_LATENCY_US),
            (
                "launch_overhead_us",
                c.launch_overhead_us,
                limits::MAX_LATENCY_US,
            ),
            (
                "ideal_latency_us",
                c.ideal_latency_us,
                limits::MAX_LATENCY_US,
            ),
            ("compute_noise_cv", c.compute_noise_cv, limits::MAX_NOISE_CV),
        ] {
            if v > max {
                return Err(self.error(
                    &format!("cluster.{f}"),
                    format!("{v:?} is beyond the largest accepted value ({max})"),
                    format!("expected at most {max}"),
                ));
            }
        }
        let non_negative = [
            ("nvlink_latency_us", c.nvlink_latency_us),
            ("nic_latency_us", c.nic_latency_us),
            ("launch_overhead_us", c.launch_overhead_us),
            ("ideal_latency_us", c.ideal_latency_us),
            ("compute_noise_cv", c.compute_noise_cv),
            ("host_memory_gib", c.host_memory_gib),
            ("host_memory_gbytes_per_s", c.host_memory_gbytes_per_s),
            ("nvme_gib", c.nvme_gib),
            ("nvme_gbytes_per_s", c.nvme_gbytes_per_s),
            ("cpu_tflops", c.cpu_tflops),
            ("peak_fp8_tflops", c.peak_fp8_tflops),
        ];
        for (f, v) in non_negative {
            if v.is_nan() || v < 0.0 || v.is_infinite() {
                return Err(self.error(
                    &format!("cluster.{f}"),
                    format!("must be ≥ 0 and finite, got {v}"),
                    "expected a non-negative number",
                ));
            }
        }
        if !(0.0..0.95).contains(&c.comm_sm_fraction) {
            return Err(self.error(
                "cluster.comm_sm_fraction",
                format!("must be in [0, 0.95), got {}", c.comm_sm_fraction),
                "expected a share of the SMs, 0 ≤ f < 0.95",
            ));
        }
        for (f, v) in [
            ("compute_efficiency", c.compute_efficiency),
            ("memory_efficiency", c.memory_efficiency),
            ("nvlink_efficiency", c.nvlink_efficiency),
            ("nic_efficiency", c.nic_efficiency),
        ] {
            if v.is_nan() || v <= 0.0 || v > 1.0 {
                return Err(self.error(
                    &format!("cluster.{f}"),
                    format!("must be in (0, 1], got {v}"),
                    "expected a fraction",
                ));
            }
        }
        for (i, sr) in c.slow_ranks.iter().enumerate() {
            if sr.rank >= c.gpus() {
                return Err(self.error(
                    "cluster.slow_ranks",
                    format!(
                        "entry {i}: rank {} does not exist ({} GPUs)",
                        sr.rank,
                        c.gpus()
                    ),
                    format!("expected a rank below {}", c.gpus()),
                ));
            }
            if sr.speed.is_nan() || sr.speed <= 0.0 || sr.speed.is_infinite() {
                return Err(self.error(
                    "cluster.slow_ranks",
                    format!("entry {i}: speed must be positive"),
                    "expected a positive speed",
                ));
            }
        }
        Ok(c)
    }

    fn training(&self, t: &TrainingSection, m: &Model) -> Result<TrainingSection, ScenarioError> {
        let rc = t.recompute_modules;
        if t.activation_checkpointing && !rc.is_empty() {
            return Err(self.error(
                "training.recompute_modules",
                "full recomputation (activation_checkpointing = true) already recomputes every module of every layer",
                "expected either activation_checkpointing or recompute_modules",
            ));
        }
        if rc.mla_up_proj && !m.is_mla() {
            return Err(self.error(
                "training.recompute_modules",
                format!(
                    "`mla_up_proj` recomputes MLA's up-projections, and `{}` has no MLA latents (model.q_lora_rank and model.kv_lora_rank are 0)",
                    m.name
                ),
                "expected an MLA model, or the other modules (layernorm, moe_act, core_attn, mlp, moe)",
            ));
        }
        if rc.mlp && m.first_dense_layers == 0 {
            return Err(self.error(
                "training.recompute_modules",
                format!(
                    "`mlp` recomputes the MLP of dense layers, and every layer of `{}` is an MoE layer (model.first_dense_layers = 0); `moe` checkpoints MoE blocks",
                    m.name
                ),
                "expected a model with dense layers, or moe",
            ));
        }
        if t.zero_stage > 3 {
            return Err(self.error(
                "training.zero_stage",
                "must be 0, 1, 2 or 3",
                "expected 0..=3",
            ));
        }
        for (f, v) in [
            ("optimizer_bytes_per_param", t.optimizer_bytes_per_param),
            ("grad_bytes_per_param", t.grad_bytes_per_param),
        ] {
            if !(0.0..=limits::MAX_BYTES_PER_PARAM).contains(&v) {
                return Err(self.error(
                    &format!("training.{f}"),
                    format!(
                        "{v:?}: expected 0 ≤ bytes ≤ {}",
                        limits::MAX_BYTES_PER_PARAM
                    ),
                    "expected a non-negative number of bytes",
                ));
            }
        }
        Ok(*t)
    }

    fn strategies(
        &self,
        raw: &ScenarioFile,
        m: &Model,
        c: &Cluster,
    ) -> Result<Vec<Strategy>, ScenarioError> {
        if raw.strategies.is_empty() {
            return Err(ScenarioError::new(
                self.file,
                self.text,
                "invalid scenario: no [[strategy]] to simulate",
            )
            .help("add e.g.\n[[strategy]]\nname = \"ep\"\nkind = \"ep\""));
        }
        let mut out: Vec<Strategy> = Vec::new();
        for (i, s) in raw.strategies.iter().enumerate() {
            let p = |f: &str| format!("strategy[{i}].{f}");
            if s.name.trim().is_empty() {
                return Err(self.error(&p("name"), "must not be empty", "expected a name"));
            }
            if out.iter().any(|o| o.name == s.name) {
                return Err(self.error(
                    &p("name"),
                    format!("duplicate strategy name `{}`", s.name),
                    "already used",
                ));
            }
            let gpus = c.gpus();
            let (fssdp, offload) = self.strategy_knobs(i, s, m, c, raw.workload.mode)?;
            let replicated = s.kind == StrategyKind::EpReplicated;
            let parallel = self.parallel(i, s, m, gpus, c.gpus_per_node, &raw.workload)?;
            // EP is carved from one pipeline stage's GPUs.
            let stage_gpus = parallel.stage_gpus(gpus);
            let ep_size = match s.kind {
                StrategyKind::Ep | StrategyKind::EpReplicated => s
                    .ep_size
                    .unwrap_or_else(|| (stage_gpus / parallel.etp).min(m.experts)),
                // FSSDP shards over every rank of a stage; offloading keeps every expert reachable from
                // each GPU.
                StrategyKind::Fssdp => stage_gpus,
                StrategyKind::Offload => 1,
            };
            let ep_kind = matches!(s.kind, StrategyKind::Ep | StrategyKind::EpReplicated);
            // Copies let ep-replicated hold any expert count; plain EP splits experts evenly.
            let experts_ok = replicated || m.experts.is_multiple_of(ep_size.max(1));
            let block = ep_size * parallel.etp;
            if ep_kind && (ep_size == 0 || !stage_gpus.is_multiple_of(block) || !experts_ok) {
                return Err(self.error(
                    &p("ep_size"),
                    if parallel.etp > 1 {
                        format!(
                            "ep_size × etp = {ep_size} × {} must divide a pipeline stage's GPUs ({stage_gpus}), and ep_size the expert count ({})",
                            parallel.etp, m.experts
                        )
                    } else if !parallel.is_single() {
                        format!(
                            "ep_size = {ep_size} must divide a pipeline stage's GPUs ({stage_gpus}) and the expert count ({})",
                            m.experts
                        )
                    } else if replicated {
                        format!("ep_size = {ep_size} must divide the GPU count ({gpus})")
                    } else {
                        format!(
                            "ep_size = {ep_size} must divide both the GPU count ({gpus}) and the expert count ({})",
                            m.experts
                        )
                    },
                    "expected a common divisor",
                ));
            }
            if !parallel.is_single() && !stage_gpus.is_multiple_of(parallel.unit(ep_size)) {
                return Err(self.error(
                    &p("ep_size"),
                    format!(
                        "expert blocks of ep_size × etp = {block} GPUs and TP groups of {} do not tile a pipeline stage's {stage_gpus} GPUs",
                        parallel.tp
                    ),
                    "expected lcm(ep_size × etp, tp) to divide the GPUs of a stage",
                ));
            }
            let replication_knobs = [
                ("slots_per_gpu", s.slots_per_gpu.is_some()),
                ("replan_interval", s.replan_interval.is_some()),
                // forecast_window belongs to FSSDP too (checked with its knobs).
                (
                    "forecast_window",
                    s.forecast_window.is_some() && s.kind != StrategyKind::Fssdp,
                ),
                ("placement", s.placement.is_some()),
                ("token_split", s.token_split.is_some()),
                ("replan_gain", s.replan_gain.is_some()),
            ];
            if !replicated && let Some((knob, _)) = replication_knobs.iter().find(|(_, set)| *set) {
                return Err(self.error(
                    &p(knob),
                    format!("`{knob}` applies only to kind = \"ep-replicated\""),
                    "not a knob of this kind",
                ));
            }
            let replication = if replicated {
                let slots = s.slots_per_gpu.unwrap_or(m.experts.div_ceil(ep_size) + 1);
                if slots.saturating_mul(ep_size) < m.experts || slots > m.experts || slots == 0 {
                    return Err(self.error(
                        &p("slots_per_gpu"),
                        format!(
                            "{slots} slots on {ep_size} GPUs cannot hold {} experts once each without two copies on one GPU",
                            m.experts
                        ),
                        format!("expected {}..={}", m.experts.div_ceil(ep_size), m.experts),
                    ));
                }
                let interval = s.replan_interval.unwrap_or(10);
                if interval == 0 {
                    return Err(self.error(
                        &p("replan_interval"),
                        "must be at least 1",
                        "expected iterations",
                    ));
                }
                if s.forecast_window == Some(0) {
                    return Err(self.error(
                        &p("forecast_window"),
                        "must be at least 1",
                        "expected iterations",
                    ));
                }
                Some(Replication {
                    slots_per_gpu: slots,
                    replan_interval: interval,
                    forecast_window: s.forecast_window,
                    method: s.placement.unwrap_or_default(),
                    token_split: s.token_split.unwrap_or_default(),
                    replan_gain: s.replan_gain.unwrap_or_default(),
                })
            } else {
                None
            };
            if let Some(cf) = s.capacity_factor
                && !(cf.is_finite() && cf > 0.0)
            {
                return Err(self.error(
                    &p("capacity_factor"),
                    "must be positive",
                    "expected a positive factor",
                ));
            }
            let overlap = s.overlap_micro_batches.unwrap_or(1);
            if !ep_kind && (s.overlap_micro_batches.is_some() || s.a2a.is_some()) {
                let knob = if s.a2a.is_some() {
                    "a2a"
                } else {
                    "overlap_micro_batches"
                };
                return Err(self.error(
                    &p(knob),
                    format!("`{knob}` applies only to kinds \"ep\" and \"ep-replicated\""),
                    "not a knob of this kind",
                ));
            }
            let tokens = match raw.workload.mode {
                Mode::Decode => m.micro_batch,
                Mode::Training | Mode::Prefill => m.micro_batch * m.seq_len,
                // Serving steps vary; each step lowers at most its own tokens' parts.
                Mode::Serving => u64::MAX,
            };
            if overlap == 0 || overlap > 16 || overlap as u64 > tokens {
                return Err(self.error(
                    &p("overlap_micro_batches"),
                    format!(
                        "must be between 1 and 16 and at most the tokens per rank ({tokens}), got {overlap}"
                    ),
                    "expected a small part count",
                ));
            }
            out.push(Strategy {
                name: s.name.clone(),
                kind: s.kind,
                ep_size,
                capacity_factor: s.capacity_factor,
                overlap_micro_batches: overlap,
                a2a: s.a2a.unwrap_or_default(),
                fssdp,
                offload,
                replication,
                parallel,
            });
        }
        Ok(out)
    }

    fn objective(&self, o: &ObjectiveSection, c: &Cluster) -> Result<Objective, ScenarioError> {
        let limit = o.memory_limit_gib.unwrap_or(c.gpu_memory_gib);
        if !(limit.is_finite() && limit > 0.0) {
            return Err(self.error(
                "objective.memory_limit_gib",
                "must be positive",
                "expected GiB",
            ));
        }
        let max_dropped = o
            .max_dropped_fraction
            .unwrap_or(DEFAULT_MAX_DROPPED_FRACTION);
        if !(0.0..=1.0).contains(&max_dropped) {
            return Err(self.error(
                "objective.max_dropped_fraction",
                format!("{max_dropped} is not a fraction"),
                "expected a fraction in 0..=1 (0.01 = 1 %)",
            ));
        }
        Ok(Objective {
            metric: o.metric,
            memory_limit_gib: limit,
            max_dropped_fraction: max_dropped,
        })
    }
}
