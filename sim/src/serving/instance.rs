//! One engine instance as serving frameworks run it: continuous batching with chunked prefill over a
//! paged KV cache, preemption by recomputation, FCFS with prefill-first or decode-first steps.
//!
//! The loop runs one step at a time. Before a step, requests that have arrived join the waiting queue
//! (FCFS; preempted requests go back to its front). The step's token budget (`max_batch_tokens`) and
//! sequence limit (`max_seqs`) are filled in policy order:
//!
//! - decode-first: every running sequence that is decoding gets its one token, then running sequences
//!   still prefilling get chunks, then waiting requests are admitted with chunks of their prompts;
//! - prefill-first: running prefills and admissions first, decodes with what is left.
//!
//! A sequence takes KV blocks as its tokens are computed. When a running sequence needs a block and none is
//! free, the most recently admitted running sequence is preempted (its blocks freed, itself back to the
//! front of the queue; when it is admitted again it recomputes its prompt and the tokens it had generated
//! as one prefill, as vLLM's recompute preemption does); if that is the sequence itself, it waits. Admission
//! never preempts: a waiting request is admitted only when its first chunk's blocks are free. A request
//! whose prompt and output cannot fit in the whole cache is rejected on arrival.
//!
//! A step's time comes from `step_time` (the strategy's lowering in a run; any function in tests); tokens
//! are produced at the end of the step that computes the last pending token of a sequence.

use crate::serving::arrivals::Request;
use crate::serving::config::{EngineConfig, Policy};
use crate::serving::kv::PagedKv;
use crate::serving::step_cost::Batch;
use std::collections::VecDeque;

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    pub request: Request,
    /// Start of the first step that computed any of its tokens.
    pub first_scheduled_s: Option<f64>,
    pub first_token_s: Option<f64>,
    pub finish_s: Option<f64>,
    pub preemptions: u32,
    /// Refused on arrival: its prompt and output need more KV blocks than the cache has (or it has no
    /// prompt or no output token).
    pub rejected: bool,
}

/// The instance's run: per request, and over its steps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceRun {
    /// In request order.
    pub served: Vec<Served>,
    pub steps: u64,
    /// Seconds the instance computed (sum of step times).
    pub busy_s: f64,
    /// End of the last step.
    pub end_s: f64,
    pub preemptions: u64,
    pub kv_capacity_blocks: u64,
    /// Most KV blocks held at the end of any step.
    pub kv_peak_blocks: u64,
    /// Time-weighted mean of the held share of the KV cache over the busy time.
    pub kv_mean_utilization: f64,
    /// Most sequences in one step.
    pub peak_batch_seqs: u64,
    /// Most tokens in one step.
    pub peak_batch_tokens: u64,
    /// Most sequences holding KV blocks at once.
    pub peak_resident_seqs: u64,
}

/// A request in the engine.
#[derive(Debug, Clone, Copy)]
struct Seq {
    req: usize,
    /// Tokens whose KV is in the cache.
    computed: u64,
    /// Prompt plus generated tokens: the tokens the next produced token attends to, less itself.
    context: u64,
    generated: u64,
    blocks: u64,
    /// Tokens scheduled in the step being built.
    sched: u64,
}

impl Seq {
    fn decoding(&self) -> bool {
        self.generated > 0 && self.context - self.computed == 1
    }
    fn pending(&self) -> u64 {
        self.context - self.computed
    }
}

/// Why a run could not go on (a bug guard: a correct schedule always progresses).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "serving engine made no progress at t = {at_s} s with {waiting} waiting and {running} running"
)]
pub struct Stalled {
    pub at_s: f64,
    pub waiting: usize,
    pub running: usize,
}

/// Runs `requests` (in arrival order) through one instance with `kv_blocks` blocks of KV cache.
pub fn run(
    requests: &[Request],
    cfg: &EngineConfig,
    kv_blocks: u64,
    mut step_time: impl FnMut(&Batch) -> f64,
) -> Result<InstanceRun, Stalled> {
    let mut kv = PagedKv::new(cfg.block_size, kv_blocks);
    let mut out = InstanceRun {
        served: requests
            .iter()
            .map(|&request| Served {
                request,
                first_scheduled_s: None,
                first_token_s: None,
                finish_s: None,
                preemptions: 0,
                rejected: false,
            })
            .collect(),
        kv_capacity_blocks: kv_blocks,
        ..Default::default()
    };
    let mut waiting: VecDeque<Seq> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut next = 0;
    let mut now = 0.0f64;
    let mut kv_area = 0.0;
    loop {
        while next < requests.len() && requests[next].arrival_s <= now {
            let r = &requests[next];
            // The last token is produced, never stored: a request holds at most prompt + output − 1. A
            // request without a prompt or an output cannot be served.
            let need = (r.prompt_tokens + r.output_tokens).saturating_sub(1);
            if r.prompt_tokens == 0 || r.output_tokens == 0 || kv.blocks_for(need) > kv.capacity {
                out.served[next].rejected = true;
            } else {
                waiting.push_back(Seq {
                    req: next,
                    computed: 0,
                    context: r.prompt_tokens,
                    generated: 0,
                    blocks: 0,
                    sched: 0,
                });
            }
            next += 1;
        }
        if running.is_empty() && waiting.is_empty() {
            if next == requests.len() {
                break;
            }
            now = now.max(requests[next].arrival_s);
            continue;
        }

        let mut budget = cfg.max_batch_tokens;
        let order: [Work; 3] = match cfg.policy {
            Policy::DecodeFirst => [Work::Decode, Work::Prefill, Work::Admit],
            Policy::PrefillFirst => [Work::Prefill, Work::Admit, Work::Decode],
        };
        for work in order {
            match work {
                Work::Decode | Work::Prefill => {
                    let mut i = 0;
                    while i < running.len() && budget > 0 {
                        let s = running[i];
                        if s.sched > 0 || s.decoding() != (work == Work::Decode) {
                            i += 1;
                            continue;
                        }
                        let n = s.pending().min(budget);
                        if grow(&mut kv, &mut running, &mut waiting, &mut out, i, n) {
                            running[i].sched = n;
                            budget -= n;
                            i += 1;
                        }
                        // Else running[i] itself was preempted: the next sequence is now at i (or none).
                    }
                }
                Work::Admit => {
                    while budget > 0 && running.len() < cfg.max_seqs {
                        let Some(mut s) = waiting.front().copied() else {
                            break;
                        };
                        let n = s.pending().min(budget);
                        if !kv.grow(&mut s.blocks, s.computed + n) {
                            break;
                        }
                        waiting.pop_front();
                        s.sched = n;
                        budget -= n;
                        running.push(s);
                    }
                }
            }
        }

        let mut batch = Batch::default();
        let mut seqs = 0;
        for s in &running {
            if s.sched == 0 {
                continue;
            }
            seqs += 1;
            if s.decoding() {
                batch.add_decode(s.context);
            } else {
                batch.add_prefill(s.computed, s.sched);
            }
        }
        if seqs == 0 {
            // Nothing fits now (every candidate waits for blocks held by no running sequence): only new
            // arrivals can change that, and with an empty engine the first waiting request always fits.
            if running.is_empty() && next < requests.len() {
                now = now.max(requests[next].arrival_s);
                continue;
            }
            return Err(Stalled {
                at_s: now,
                waiting: waiting.len(),
                running: running.len(),
            });
        }
        let dt = step_time(&batch);
        let start = now;
        now += dt;
        out.steps += 1;
        out.busy_s += dt;
        out.peak_batch_seqs = out.peak_batch_seqs.max(seqs);
        out.peak_batch_tokens = out.peak_batch_tokens.max(batch.tokens());
        out.peak_resident_seqs = out.peak_resident_seqs.max(running.len() as u64);
        kv_area += dt * kv.used as f64;
        out.kv_peak_blocks = out.kv_peak_blocks.max(kv.used);

        let mut i = 0;
        while i < running.len() {
            let s = &mut running[i];
            if s.sched == 0 {
                i += 1;
                continue;
            }
            let served = &mut out.served[s.req];
            served.first_scheduled_s.get_or_insert(start);
            s.computed += s.sched;
            s.sched = 0;
            if s.computed == s.context {
                s.generated += 1;
                s.context += 1;
                served.first_token_s.get_or_insert(now);
                if s.generated == served.request.output_tokens {
                    served.finish_s = Some(now);
                    kv.release(&mut s.blocks);
                    running.remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }
    out.end_s = now;
    out.kv_mean_utilization = if out.busy_s > 0.0 && kv_blocks > 0 {
        kv_area / out.busy_s / kv_blocks as f64
    } else {
        0.0
    };
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Decode,
    Prefill,
    Admit,
}

/// Grows `running[i]` by `n` tokens, preempting the most recently admitted running sequences while the
/// cache lacks blocks. False when `running[i]` itself had to be preempted.
fn grow(
    kv: &mut PagedKv,
    running: &mut Vec<Seq>,
    waiting: &mut VecDeque<Seq>,
    out: &mut InstanceRun,
    i: usize,
    n: u64,
) -> bool {
    loop {
        let s = &mut running[i];
        let tokens = s.computed + n;
        if kv.grow(&mut s.blocks, tokens) {
            return true;
        }
        let mut victim = running.pop().expect("running[i] exists");
        kv.release(&mut victim.blocks);
        // Recomputation: everything it had computed is recomputed as a prompt when it is admitted again.
        victim.computed = 0;
        victim.sched = 0;
        out.served[victim.req].preemptions += 1;
        out.preemptions += 1;
        waiting.push_front(victim);
        if running.len() == i {
            return false;
        }
    }
}
