//! The knobs of the FSSDP and offloading strategies: their resolved form, defaults and validation.
//!
//! Each `[[strategy]]` entry may only set the knobs of its own kind, so a knob that would be silently
//! ignored (an FSSDP `memory_cap_experts` on an EP entry) is an error that points at its line.

use super::cluster::Cluster;
use super::file::{ExpertBits, Mode, StrategyKind, StrategySection};
use super::model::Model;
use super::{Resolver, ScenarioError};
use moesim_traces::CachePolicy;
use serde::{Deserialize, Serialize};

/// FSSDP (Hecate) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FssdpKnobs {
    /// Iterations averaged by the load forecast.
    pub forecast_window: usize,
    /// m: experts a rank may materialize per layer beyond its own.
    pub memory_cap_experts: usize,
    /// t: experts one spAG hides behind the dense compute; `None` derives it from the hardware.
    pub overlap_degree: Option<usize>,
    pub rematerialize: bool,
    pub calibrate: bool,
    /// Iterations between heterogeneous re-shardings (0: homogeneous sharding, never re-sharded).
    pub reshard_interval: usize,
}

/// Whether the expert cache is per layer or one pool for all layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheScope {
    PerLayer,
    Shared,
}

/// How the next layer's experts are fetched ahead of need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prefetch {
    None,
    /// Next-layer pre-gating: layer l+1's gate applied to layer l's hidden state, right `accuracy` of the time.
    Pregate,
    /// The trace's own next-layer experts (an upper bound for predictors).
    Oracle,
}

/// What a cache miss costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissAction {
    /// Copy the expert over PCIe, then compute on the GPU.
    Fetch,
    /// Compute the expert on the host CPU where its weights live.
    Cpu,
    /// Per missed expert, whichever is predicted faster.
    Auto,
}

/// Host buffers the copies come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostMemory {
    Pinned,
    /// Staged through a pinned bounce buffer: about half the pinned bandwidth.
    Pageable,
}

/// How low-bit experts become GEMM operands (see `strategy/offload.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dequant {
    /// Dequantised in registers inside the GEMM (Marlin-style kernels): only the packed bits are read.
    #[default]
    Fused,
    /// Dequantised into a full bf16 copy in HBM that a bf16 GEMM then reads (HQQ's PyTorch backend).
    Materialize,
}

/// What happens to the expert a fetch replaces on the GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eviction {
    /// The host keeps the master copy; the GPU copy is simply overwritten.
    #[default]
    Discard,
    /// The replaced expert is copied back to host memory first, on the same copy stream (mixtral-offloading's
    /// `ExpertCache._swap` exchanges a device buffer with a pinned host buffer): each fetch moves an
    /// expert's bytes both ways, one after the other.
    WriteBack,
}

/// Which GPU stream expert copies queue on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyStream {
    /// A copy stream of their own: copies overlap compute (the copy engine runs beside the SMs).
    #[default]
    Dedicated,
    /// The compute stream: copies and kernels run one after the other in issue order, as PyTorch's
    /// `tensor.copy_(src, non_blocking=True)` does on the current stream (mixtral-offloading).
    Compute,
}

/// Host time of an eager framework (PyTorch without CUDA graphs) at small batch: every operator costs the
/// CPU about `us_per_op` to dispatch and launch, and the GPU cannot run ahead of that. A layer's dense
/// work and each expert's work then take the longer of their GPU time and their host time; with host
/// syncs between them (reading the routing to pick experts) nothing overlaps across the sync.
/// Zero operators (the default) is a compiled or graph-captured engine whose host work hides behind the GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HostDispatch {
    /// Host time per framework operator, microseconds.
    pub us_per_op: f64,
    /// Operators of one layer outside its experts (norms, attention, router, combine).
    pub ops_per_layer: u32,
    /// Operators of one expert run (its linears, activation, gather and scatter).
    pub ops_per_expert: u32,
}

impl HostDispatch {
    /// Host time of one layer's dense work.
    pub fn layer_s(&self) -> f64 {
        self.ops_per_layer as f64 * self.us_per_op * 1e-6
    }

    /// Host time of one expert run.
    pub fn expert_s(&self) -> f64 {
        self.ops_per_expert as f64 * self.us_per_op * 1e-6
    }
}

/// Where the offloaded experts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpertTier {
    Dram,
    Ssd,
}

/// Offloading settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffloadKnobs {
    pub policy: CachePolicy,
    pub cache_experts_per_layer: usize,
    pub cache_scope: CacheScope,
    pub prefetch: Prefetch,
    pub prefetch_accuracy: f64,
    pub miss_action: MissAction,
    pub host_memory: HostMemory,
    pub expert_tier: ExpertTier,
    /// Bits per weight of each expert of a layer.
    pub expert_bits: Vec<f64>,
    #[serde(default)]
    pub dequant: Dequant,
    #[serde(default)]
    pub eviction: Eviction,
    #[serde(default)]
    pub copy_stream: CopyStream,
    #[serde(default)]
    pub host: HostDispatch,
}

impl OffloadKnobs {
    /// Bytes of expert `e` at its bit-width.
    pub fn expert_bytes(&self, m: &Model, e: usize) -> f64 {
        m.expert_params() as f64 * self.expert_bits[e] / 8.0
    }
}

fn parse_named<T: serde::de::DeserializeOwned>(v: &str) -> Option<T> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v)).ok()
}

impl Resolver<'_> {
    /// Rejects knobs that do not apply to the entry's kind; resolves those that do.
    pub(super) fn strategy_knobs(
        &self,
        i: usize,
        s: &StrategySection,
        m: &Model,
        c: &Cluster,
        mode: Mode,
    ) -> Result<(Option<FssdpKnobs>, Option<OffloadKnobs>), ScenarioError> {
        let p = |f: &str| format!("strategy[{i}].{f}");
        let fssdp_set = [
            ("forecast_window", s.forecast_window.is_some()),
            ("memory_cap_experts", s.memory_cap_experts.is_some()),
            ("overlap_degree", s.overlap_degree.is_some()),
            ("rematerialize", s.rematerialize.is_some()),
            ("calibrate", s.calibrate.is_some()),
            ("reshard_interval", s.reshard_interval.is_some()),
        ];
        let offload_set = [
            ("cache_policy", s.cache_policy.is_some()),
            (
                "cache_experts_per_layer",
                s.cache_experts_per_layer.is_some(),
            ),
            ("cache_scope", s.cache_scope.is_some()),
            ("prefetch", s.prefetch.is_some()),
            ("prefetch_accuracy", s.prefetch_accuracy.is_some()),
            ("miss_action", s.miss_action.is_some()),
            ("host_memory", s.host_memory.is_some()),
            ("expert_tier", s.expert_tier.is_some()),
            ("expert_bits", s.expert_bits.is_some()),
            ("dequant", s.dequant.is_some()),
            ("eviction", s.eviction.is_some()),
            ("copy_stream", s.copy_stream.is_some()),
            ("host_us_per_op", s.host_us_per_op.is_some()),
            ("host_ops_per_layer", s.host_ops_per_layer.is_some()),
            ("host_ops_per_expert", s.host_ops_per_expert.is_some()),
        ];
        let ep_set = [
            ("ep_size", s.ep_size.is_some()),
            ("capacity_factor", s.capacity_factor.is_some()),
        ];
        let kind_name = match s.kind {
            StrategyKind::Ep => "ep",
            StrategyKind::EpReplicated => "ep-replicated",
            StrategyKind::Fssdp => "fssdp",
            StrategyKind::Offload => "offload",
        };
        let reject = |set: &[(&str, bool)], owner: &str| -> Result<(), ScenarioError> {
            if let Some((f, _)) = set.iter().find(|(_, on)| *on) {
                return Err(self
                    .error(
                        &p(f),
                        format!(
                            "`{f}` is an {owner} knob and does not apply to kind \"{kind_name}\""
                        ),
                        format!("not a \"{kind_name}\" knob"),
                    )
                    .help(format!("remove it, or set kind = \"{owner}\"")));
            }
            Ok(())
        };
        match s.kind {
            StrategyKind::Ep => {
                reject(&fssdp_set, "fssdp")?;
                reject(&offload_set, "offload")?;
                Ok((None, None))
            }
            StrategyKind::EpReplicated => {
                // forecast_window is a knob of both; the rest of FSSDP's are not.
                reject(&fssdp_set[1..], "fssdp")?;
                reject(&offload_set, "offload")?;
                Ok((None, None))
            }
            StrategyKind::Fssdp => {
                reject(&ep_set, "ep")?;
                reject(&offload_set, "offload")?;
                if mode != Mode::Training {
                    return Err(self.error(
                        &p("kind"),
                        "FSSDP is a training strategy; workload.mode must be \"training\"",
                        "needs mode = \"training\"",
                    ));
                }
                let window = s.forecast_window.unwrap_or(5);
                if window == 0 {
                    return Err(self.error(
                        &p("forecast_window"),
                        "must be at least 1",
                        "expected a positive count",
                    ));
                }
                // A layer's experts are sharded over the GPUs of the pipeline stage that holds it.
                let stage_gpus = c.gpus() / s.pp.unwrap_or(1).max(1);
                let owned = m.experts.div_ceil(stage_gpus.max(1));
                let cap = s.memory_cap_experts.unwrap_or(2 * owned);
                if cap > m.experts {
                    return Err(self.error(
                        &p("memory_cap_experts"),
                        format!("{cap} exceeds the {} experts of a layer", m.experts),
                        format!("expected at most {}", m.experts),
                    ));
                }
                if s.overlap_degree.is_some_and(|t| t > m.experts) {
                    return Err(self.error(
                        &p("overlap_degree"),
                        format!("exceeds the {} experts of a layer", m.experts),
                        format!("expected at most {}", m.experts),
                    ));
                }
                Ok((
                    Some(FssdpKnobs {
                        forecast_window: window,
                        memory_cap_experts: cap,
                        overlap_degree: s.overlap_degree,
                        rematerialize: s.rematerialize.unwrap_or(false),
                        calibrate: s.calibrate.unwrap_or(false),
                        reshard_interval: s.reshard_interval.unwrap_or(100),
                    }),
                    None,
                ))
            }
            StrategyKind::Offload => {
                reject(&ep_set, "ep")?;
                reject(&fssdp_set, "fssdp")?;
                if mode == Mode::Training {
                    return Err(self.error(
                        &p("kind"),
                        "offloading is modelled for inference; set workload.mode to \"prefill\" or \"decode\"",
                        "needs an inference mode",
                    ));
                }
                let named = |field: &str, v: &Option<String>, expected: &str| {
                    self.error(
                        &p(field),
                        format!("unknown {field} `{}`", v.as_deref().unwrap_or_default()),
                        format!("expected {expected}"),
                    )
                };
                let policy = match &s.cache_policy {
                    None => CachePolicy::Lru,
                    Some(v) => v.parse::<CachePolicy>().map_err(|_| {
                        named("cache_policy", &s.cache_policy, "lru, lfu, lrfu or belady")
                    })?,
                };
                macro_rules! pick {
                    ($field:ident, $default:expr, $expected:literal) => {
                        match &s.$field {
                            None => $default,
                            Some(v) => parse_named(v)
                                .ok_or_else(|| named(stringify!($field), &s.$field, $expected))?,
                        }
                    };
                }
                let cache_scope = pick!(cache_scope, CacheScope::PerLayer, "per-layer or shared");
                let prefetch = pick!(prefetch, Prefetch::None, "none, pregate or oracle");
                let miss_action = pick!(miss_action, MissAction::Fetch, "fetch, cpu or auto");
                let host_memory = pick!(host_memory, HostMemory::Pinned, "pinned or pageable");
                let expert_tier = pick!(expert_tier, ExpertTier::Dram, "dram or ssd");
                let dequant = pick!(dequant, Dequant::Fused, "fused or materialize");
                let eviction = pick!(eviction, Eviction::Discard, "discard or write-back");
                let copy_stream = pick!(copy_stream, CopyStream::Dedicated, "dedicated or compute");
                let us_per_op = s
                    .host_us_per_op
                    .unwrap_or(moesim_calibrate::datasheet::PYTORCH_EAGER_HOST_US_PER_OP);
                if !(us_per_op.is_finite() && us_per_op >= 0.0) {
                    return Err(self.error(
                        &p("host_us_per_op"),
                        format!("must be a non-negative number of microseconds, got {us_per_op}"),
                        "expected microseconds >= 0",
                    ));
                }
                let host = HostDispatch {
                    us_per_op,
                    ops_per_layer: s.host_ops_per_layer.unwrap_or(0),
                    ops_per_expert: s.host_ops_per_expert.unwrap_or(0),
                };
                let cache = s
                    .cache_experts_per_layer
                    .unwrap_or((m.experts / 2).max(m.top_k));
                if cache > m.experts {
                    return Err(self.error(
                        &p("cache_experts_per_layer"),
                        format!(
                            "{cache} exceeds the experts of a layer ({}); 0 keeps none between steps",
                            m.experts
                        ),
                        format!("expected 0..={}", m.experts),
                    ));
                }
                let accuracy = s.prefetch_accuracy.unwrap_or(0.9);
                if !(0.0..=1.0).contains(&accuracy) {
                    return Err(self.error(
                        &p("prefetch_accuracy"),
                        format!("must be a fraction in [0, 1], got {accuracy}"),
                        "expected a fraction",
                    ));
                }
                let full = 8.0 * m.dtype_bytes as f64;
                let bits = match &s.expert_bits {
                    None => vec![full; m.experts],
                    Some(ExpertBits::All(b)) => vec![*b; m.experts],
                    Some(ExpertBits::PerExpert(v)) => {
                        if v.len() != m.experts {
                            return Err(self.error(
                                &p("expert_bits"),
                                format!("lists {} bit-widths for {} experts", v.len(), m.experts),
                                format!("expected one number or {} numbers", m.experts),
                            ));
                        }
                        v.clone()
                    }
                };
                if let Some(b) = bits.iter().find(|b| !(**b > 0.0 && **b <= 32.0)) {
                    return Err(self.error(
                        &p("expert_bits"),
                        format!("bit-width {b} is outside (0, 32]"),
                        "expected bits per weight",
                    ));
                }
                let (bw, field) = match expert_tier {
                    ExpertTier::Dram => (c.host_memory_gbytes_per_s, "host_memory_gbytes_per_s"),
                    ExpertTier::Ssd => (c.nvme_gbytes_per_s, "nvme_gbytes_per_s"),
                };
                if bw <= 0.0 {
                    return Err(self
                        .error(
                            &p("expert_tier"),
                            format!(
                                "the cluster's {field} is 0, so experts cannot be read from there"
                            ),
                            "tier without bandwidth",
                        )
                        .help(format!("set cluster.{field}")));
                }
                if miss_action != MissAction::Fetch && c.cpu_tflops <= 0.0 {
                    return Err(self
                        .error(
                            &p("miss_action"),
                            "computing missed experts on the CPU needs cluster.cpu_tflops > 0",
                            "no CPU compute in the cluster",
                        )
                        .help("set cluster.cpu_tflops, or miss_action = \"fetch\""));
                }
                Ok((
                    None,
                    Some(OffloadKnobs {
                        policy,
                        cache_experts_per_layer: cache,
                        cache_scope,
                        prefetch,
                        prefetch_accuracy: accuracy,
                        miss_action,
                        host_memory,
                        expert_tier,
                        expert_bits: bits,
                        dequant,
                        eviction,
                        copy_stream,
                        host,
                    }),
                ))
            }
        }
    }
}
