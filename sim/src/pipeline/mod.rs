//! Pipeline parallelism: which micro-batch each pipeline rank works on when ([`schedule`]), and how a
//! schedule becomes operations on the engine ([`emit`]).
//!
//! A strategy that splits the model into stages builds a [`Schedule`] and implements [`StageLowering`]
//! (what one task costs on the GPUs of one pipeline rank); [`emit`](emit::emit) then issues every slot in
//! an order that respects the cross-stage dependencies and connects the stages with point-to-point
//! sends, so the engine shows the schedule's bubble, its sends and their overlap with compute.
//!
//! The schedules, each as its paper or reference implementation orders it:
//! - **GPipe** — all forwards, then all backwards (Huang et al., "GPipe", NeurIPS 2019).
//! - **1F1B** — warm-up forwards, one forward one backward, cool-down (Narayanan et al., "PipeDream", SOSP
//!   2019; Megatron-LM's non-interleaved schedule). Bubble (p−1)(F+B), at most p micro-batches in flight.
//! - **Interleaved 1F1B** — each rank holds v model chunks; bubble fraction (1/v)·(p−1)/m (Narayanan et
//!   al., "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", SC 2021,
//!   §2.2.2; `forward_backward_pipelining_with_interleaving` in Megatron-LM).
//! - **DualPipe** — bidirectional: rank i holds model stages i and p−1−i, half of the micro-batches enter
//!   at each end, forward and backward chunks of different micro-batches overlap, and the weight gradient
//!   is split off to fill bubbles (DeepSeek-AI, "DeepSeek-V3 Technical Report", 2024, §3.2.1;
//!   github.com/deepseek-ai/DualPipe `dualpipe/dualpipe.py`). Bubble (PP/2−1)(F&B+B−3W), parameters 2×,
//!   activations PP+1 (its README).

pub mod emit;
pub mod schedule;

pub use emit::{StageLowering, emit};
pub use schedule::{Pass, Schedule, ScheduleError, ScheduleKind, Slot, Task};
