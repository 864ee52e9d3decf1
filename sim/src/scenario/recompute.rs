//! Selective activation recomputation (`training.recompute_modules`, Megatron-Core's
//! `--recompute-granularity selective --recompute-modules`): which parts of a layer are not kept for the
//! backward but computed again from what is kept. What each saves and costs is in `crate::activations`.

use serde::{Deserialize, Serialize};

/// One recomputable module, named as Megatron-Core names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecomputeModule {
    /// The RMSNorms' outputs (the inputs of the attention projections, the MLP or router, and MLA's latent
    /// up-projections): recomputed from the norms' inputs, which are kept anyway.
    Layernorm,
    /// MLA's up-projections: the per-head queries, keys and values, recomputed from the latents.
    MlaUpProj,
    /// The routed experts' activation function (SwiGLU's product): recomputed from its inputs.
    MoeAct,
    /// Core attention (the fused score/softmax/value kernel), checkpointed: its inputs are kept, its
    /// forward runs again in backward. With fused attention it saves only the per-head log-sum-exp.
    CoreAttn,
    /// The dense MLP of dense layers (DeepSeek-V3's first layers), checkpointed: its input is kept, its
    /// forward (GEMMs and activation) runs again.
    Mlp,
    /// The whole MoE block (router, dispatch, routed and shared experts, combine), checkpointed: its input
    /// is kept, its forward — all-to-alls included — runs again before its backward.
    Moe,
}

/// The set of modules recomputed in backward (empty: keep everything, or full recomputation when
/// `activation_checkpointing` is on). Written as a list in the scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<RecomputeModule>", into = "Vec<RecomputeModule>")]
pub struct RecomputeModules {
    pub layernorm: bool,
    pub mla_up_proj: bool,
    pub moe_act: bool,
    pub core_attn: bool,
    pub mlp: bool,
    pub moe: bool,
}

impl RecomputeModules {
    pub const NONE: RecomputeModules = RecomputeModules {
        layernorm: false,
        mla_up_proj: false,
        moe_act: false,
        core_attn: false,
        mlp: false,
        moe: false,
    };

    pub fn is_empty(&self) -> bool {
        *self == Self::NONE
    }

    /// Whether the routed experts' activation is computed again on its own: `moe_act` without `moe`
    /// (which reruns the whole block, activation included).
    pub fn experts_activation_only(&self) -> bool {
        self.moe_act && !self.moe
    }
}

impl From<Vec<RecomputeModule>> for RecomputeModules {
    fn from(list: Vec<RecomputeModule>) -> Self {
        let mut out = RecomputeModules::NONE;
        for m in list {
            match m {
                RecomputeModule::Layernorm => out.layernorm = true,
                RecomputeModule::MlaUpProj => out.mla_up_proj = true,
                RecomputeModule::MoeAct => out.moe_act = true,
                RecomputeModule::CoreAttn => out.core_attn = true,
                RecomputeModule::Mlp => out.mlp = true,
                RecomputeModule::Moe => out.moe = true,
            }
        }
        out
    }
}

impl From<RecomputeModules> for Vec<RecomputeModule> {
    fn from(m: RecomputeModules) -> Self {
        [
            (m.layernorm, RecomputeModule::Layernorm),
            (m.mla_up_proj, RecomputeModule::MlaUpProj),
            (m.moe_act, RecomputeModule::MoeAct),
            (m.core_attn, RecomputeModule::CoreAttn),
            (m.mlp, RecomputeModule::Mlp),
            (m.moe, RecomputeModule::Moe),
        ]
        .into_iter()
        .filter_map(|(on, module)| on.then_some(module))
        .collect()
    }
}
