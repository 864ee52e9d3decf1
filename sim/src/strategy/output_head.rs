//! The output head of one micro-batch: the vocabulary projection (a GEMM) and, in training, the loss.
//!
//! The loss is a softmax cross-entropy over the vocabulary, and it is memory-bound: every one of the
//! micro-batch's `t × vocab / tp` logits (the vocabulary split over the tensor-parallel group, as
//! Megatron's vocab-parallel cross-entropy splits it) is read and written several times in FP32, once per
//! elementwise pass. For a small model with a large vocabulary this is a visible share of the step:
//! GPT-MoE-S (d 768, vocabulary 50,257, 16,384 tokens per GPU) has 0.82 G logits per micro-batch, more
//! bytes than all its layers' norms and residuals together. The passes are counted from Megatron-Core's
//! code (`megatron/core/tensor_parallel/cross_entropy.py` and `megatron/core/fusions/fused_cross_entropy.py`),
//! per logit, bytes read plus written:
//!
//! - **fused** (`--cross-entropy-loss-fusion`, native implementation; the flag Megatron's MoE guide lists
//!   among its performance flags): forward, three fused kernels — cast the BF16 logits to FP32 and take the
//!   row maximum (2 + 4), subtract it, exponentiate and sum (4 + 4), divide by the sum to keep the softmax
//!   for backward (4 + 4); backward, one kernel — subtract the one-hot target, scale by the loss gradient
//!   and cast to BF16 (4 + 2). 28 bytes.
//! - **unfused** (Megatron's default): forward, six kernels — cast (2 + 4), maximum (4), subtract (4 + 4),
//!   exponentiate (4 + 4), sum (4), divide (4 + 4); backward, the scaling (4 + 4) and autograd's cast back
//!   to BF16 (4 + 2). 52 bytes.
//!
//! The gather of each token's target logit, the one-hot update and the tensor-parallel all-reduces of
//! per-token maxima and sums touch `t` values, not `t × vocab`, and are left out. Outside training there is
//! no loss: the head is its GEMM.

use crate::scenario::Scenario;
use crate::scenario::file::{CrossEntropy, Mode};
use moesim_calibrate::CostModel;

/// Bytes read plus written per logit by each kernel of the loss's forward and backward.
struct LossKernels {
    forward: &'static [f64],
    backward: &'static [f64],
}

const FUSED: LossKernels = LossKernels {
    forward: &[2.0 + 4.0, 4.0 + 4.0, 4.0 + 4.0],
    backward: &[4.0 + 2.0],
};

const UNFUSED: LossKernels = LossKernels {
    forward: &[2.0 + 4.0, 4.0, 4.0 + 4.0, 4.0 + 4.0, 4.0, 4.0 + 4.0],
    backward: &[4.0 + 4.0, 4.0 + 2.0],
};

fn kernels(ce: CrossEntropy) -> &'static LossKernels {
    match ce {
        CrossEntropy::Fused => &FUSED,
        CrossEntropy::Unfused => &UNFUSED,
    }
}

/// Seconds of one micro-batch's output head on one rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputHead {
    /// The vocabulary projection's forward GEMM (`t × vocab/tp × d_model`).
    pub gemm_s: f64,
    /// The loss's forward kernels (0 outside training).
    pub loss_forward_s: f64,
    /// The loss's backward kernels, which produce the logits' gradient (0 outside training).
    pub loss_backward_s: f64,
}

impl OutputHead {
    /// The head of `t` tokens on one of `tp` tensor-parallel ranks.
    pub fn new(s: &Scenario, cost: &dyn CostModel, t: u64, tp: u64) -> Self {
        let m = &s.model;
        let shard = m.vocab.div_ceil(tp.max(1));
        let gemm_s = cost.gemm_s(t, shard, m.d_model, m.dtype_bytes);
        let (mut loss_forward_s, mut loss_backward_s) = (0.0, 0.0);
        if s.workload.mode == Mode::Training && t > 0 {
            let logits = t as f64 * shard as f64;
            let k = kernels(s.training.cross_entropy);
            let price = |bytes: &[f64]| -> f64 {
                bytes.iter().map(|b| cost.memory_bound_s(b * logits)).sum()
            };
            loss_forward_s = price(k.forward);
            loss_backward_s = price(k.backward);
        }
        OutputHead {
            gemm_s,
            loss_forward_s,
            loss_backward_s,
        }
    }

    /// Projection and loss, forward.
    pub fn forward_s(&self) -> f64 {
        self.gemm_s + self.loss_forward_s
    }

    /// The whole backward: the loss's gradient, then the projection's input and weight gradients.
    pub fn backward_s(&self) -> f64 {
        self.loss_backward_s + 2.0 * self.gemm_s
    }

    /// The input-gradient half of the backward (schedules that split it, such as zero-bubble and
    /// DualPipe): the loss's gradient and the projection's input gradient.
    pub fn backward_input_s(&self) -> f64 {
        self.loss_backward_s + self.gemm_s
    }

    /// The weight-gradient half: the projection's weight gradient.
    pub fn backward_weight_s(&self) -> f64 {
        self.gemm_s
    }
}

/// What the loss of `t` tokens on one of `tp` tensor-parallel ranks holds in memory, in bytes, under
/// either implementation: `(kept, transient)`. The FP32 buffer the logits are cast into is reused by the
/// in-place passes and kept as the softmax until the backward (4 per logit); beside it, for a moment, sit
/// the BF16 logits it was cast from in the forward and the BF16 gradient it becomes in the backward
/// (2 per logit). Zero outside training.
pub fn loss_memory_bytes(s: &Scenario, t: u64, tp: u64) -> (f64, f64) {
    if s.workload.mode != Mode::Training {
        return (0.0, 0.0);
    }
    let logits = t as f64 * s.model.vocab.div_ceil(tp.max(1)) as f64;
    (4.0 * logits, 2.0 * logits)
}

/// Bytes per logit the loss reads and writes under `ce`, forward and backward together.
pub fn loss_bytes_per_logit(ce: CrossEntropy) -> f64 {
    let k = kernels(ce);
    k.forward.iter().chain(k.backward).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_scenario;

    /// Prices a memory-bound kernel as 1 µs of launch plus its bytes at 1 TB/s, and a GEMM at 1 s per
    /// PFLOP: round figures a hand count can follow.
    struct Round;
    impl CostModel for Round {
        fn gemm_s(&self, m: u64, n: u64, k: u64, _: u32) -> f64 {
            2.0 * (m * n * k) as f64 / 1e15
        }
        fn memory_bound_s(&self, bytes: f64) -> f64 {
            1e-6 + bytes / 1e12
        }
        fn launch_overhead_s(&self) -> f64 {
            1e-6
        }
        fn describe(&self) -> String {
            "round".into()
        }
    }

    fn gpt_moe_s(mode: &str, extra: &str) -> Scenario {
        let text = format!(
            "name = \"t\"\n[model]\npreset = \"gpt-moe-s\"\n[cluster]\npreset = \"dgx-a100\"\n\
             [workload]\nmode = \"{mode}\"\niterations = 1\n{extra}\n\
             [[strategy]]\nname = \"ep\"\nkind = \"ep\"\n"
        );
        parse_scenario("t.toml", &text, &[]).unwrap()
    }

    #[test]
    fn fused_loss_is_its_hand_counted_passes_over_the_logits() {
        let s = gpt_moe_s("training", "");
        // 16,384 tokens on one of 2 TP ranks: 25,129 of the 50,257 words each.
        let head = OutputHead::new(&s, &Round, 16384, 2);
        let logits = 16384.0 * 25129.0;
        assert!((head.gemm_s - 2.0 * 16384.0 * 25129.0 * 768.0 / 1e15).abs() < 1e-15);
        // Three forward kernels of 6, 8 and 8 bytes per logit; one backward kernel of 6.
        let fwd = 3e-6 + 22.0 * logits / 1e12;
        let bwd = 1e-6 + 6.0 * logits / 1e12;
        assert!((head.loss_forward_s - fwd).abs() < 1e-12, "{head:?}");
        assert!((head.loss_backward_s - bwd).abs() < 1e-12, "{head:?}");
        assert!((head.forward_s() - head.gemm_s - fwd).abs() < 1e-12);
        assert!((head.backward_s() - 2.0 * head.gemm_s - bwd).abs() < 1e-12);
        // The split backward adds up to the whole.
        let split = head.backward_input_s() + head.backward_weight_s();
        assert!((split - head.backward_s()).abs() < 1e-15);
        assert_eq!(loss_bytes_per_logit(CrossEntropy::Fused), 28.0);
    }

    #[test]
    fn unfused_loss_makes_eight_passes_of_52_bytes() {
        let s = gpt_moe_s("training", "[training]\ncross_entropy = \"unfused\"");
        let head = OutputHead::new(&s, &Round, 1000, 1);
        let logits = 1000.0 * 50257.0;
        assert!((head.loss_forward_s - (6e-6 + 38.0 * logits / 1e12)).abs() < 1e-12);
        assert!((head.loss_backward_s - (2e-6 + 14.0 * logits / 1e12)).abs() < 1e-12);
        assert_eq!(loss_bytes_per_logit(CrossEntropy::Unfused), 52.0);
    }

    #[test]
    fn inference_has_no_loss() {
        for mode in ["prefill", "decode"] {
            let s = gpt_moe_s(mode, "");
            let head = OutputHead::new(&s, &Round, 4096, 1);
            assert_eq!((head.loss_forward_s, head.loss_backward_s), (0.0, 0.0));
            assert_eq!(head.forward_s(), head.gemm_s);
            assert_eq!(loss_memory_bytes(&s, 4096, 1), (0.0, 0.0));
        }
    }

    #[test]
    fn loss_memory_is_the_fp32_softmax_kept_and_a_bf16_copy_beside_it() {
        let s = gpt_moe_s("training", "");
        let (kept, transient) = loss_memory_bytes(&s, 16384, 1);
        assert_eq!(kept, 4.0 * 16384.0 * 50257.0);
        assert_eq!(transient, 2.0 * 16384.0 * 50257.0);
    }

    #[test]
    fn an_unknown_implementation_is_refused_by_name() {
        let text = "name = \"t\"\n[model]\npreset = \"gpt-moe-s\"\n[cluster]\npreset = \"dgx-a100\"\n\
                    [workload]\nmode = \"training\"\n[training]\ncross_entropy = \"liger\"\n\
                    [[strategy]]\nname = \"ep\"\nkind = \"ep\"\n";
        let e = format!("{:?}", parse_scenario("t.toml", text, &[]).unwrap_err());
        assert!(
            e.contains("liger") && e.contains("fused") && e.contains("unfused"),
            "{e}"
        );
    }
}
