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
//! [`Engine`] is the instance advanced one step at a time, so that the instances of a deployment run side by
//! side in time order (see [`crate::serving::deployment`]); [`run`] drives one instance alone. A request
//! enters an instance with its prompt to compute ([`Entry::Prompt`]: co-located and prefill instances) or
//! with its prompt's KV cache transferred from a prefill instance ([`Entry::Transferred`]: decode
//! instances, which admit it as a decoding sequence holding `prompt + 1` tokens of cache).
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
    /// Tokens generated when the sequence leaves this instance (its output; 1 on a prefill instance).
    target: u64,
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

/// How a request enters an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Its prompt is computed here, then `outputs` tokens are generated (the request's output on a
    /// co-located instance, 1 on a prefill instance: the first token).
    Prompt { outputs: u64 },
    /// Prefilled elsewhere: the prompt's KV cache and the first token arrive with it; the remaining
    /// tokens are generated here (a decode instance).
    Transferred,
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
    let mut served = unserved(requests);
    let mut e = Engine::new(*cfg, kv_blocks);
    let mut next = 0;
    loop {
        // Arrivals first: a step starting at t holds every request that arrived by t.
        match (next < requests.len(), e.next_step_s()) {
            (true, Some(t)) if requests[next].arrival_s > t => {}
            (true, _) => {
                let r = &requests[next];
                e.arrive(
                    next,
                    r,
                    Entry::Prompt {
                        outputs: r.output_tokens,
                    },
                    r.arrival_s,
                    &mut served,
                );
                next += 1;
                continue;
            }
            (false, None) => break,
            (false, Some(_)) => {}
        }
        e.step(&mut served, &mut step_time)?;
    }
    if e.load() > 0 {
        return Err(Stalled {
            at_s: e.now,
            waiting: e.waiting.len(),
            running: e.running.len(),
        });
    }
    Ok(e.finish(served))
}

/// Every request not yet served.
pub fn unserved(requests: &[Request]) -> Vec<Served> {
    requests
        .iter()
        .map(|&request| Served {
            request,
            first_scheduled_s: None,
            first_token_s: None,
            finish_s: None,
            preemptions: 0,
            rejected: false,
        })
        .collect()
}

/// One engine instance, advanced one step at a time by its caller (one instance alone in [`run`]; the
/// instances of a deployment in time order in [`crate::serving::deployment`]). Its clock is the end of
/// its last step; requests handed to it join its queue and are considered from its next step on.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: EngineConfig,
    kv: PagedKv,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    /// End of the last step (or when it last went idle).
    now: f64,
    /// Nothing fits until another request arrives (a guard; see [`Engine::step`]).
    blocked: bool,
    stats: InstanceRun,
    kv_area: f64,
}

impl Engine {
    pub fn new(cfg: EngineConfig, kv_blocks: u64) -> Self {
        Engine {
            cfg,
            kv: PagedKv::new(cfg.block_size, kv_blocks),
            waiting: VecDeque::new(),
            running: Vec::new(),
            now: 0.0,
            blocked: false,
            stats: InstanceRun {
                kv_capacity_blocks: kv_blocks,
                ..Default::default()
            },
            kv_area: 0.0,
        }
    }

    /// When its next step starts: now, if it has work; `None` when idle.
    pub fn next_step_s(&self) -> Option<f64> {
        let idle = self.blocked || (self.waiting.is_empty() && self.running.is_empty());
        (!idle).then_some(self.now)
    }

    /// Requests waiting or running here.
    pub fn load(&self) -> usize {
        self.waiting.len() + self.running.len()
    }

    /// Hands it request `req` (index into `served`) at time `at_s`: it joins the queue, or is rejected when
    /// its tokens cannot fit the whole cache (false).
    pub fn arrive(
        &mut self,
        req: usize,
        r: &Request,
        entry: Entry,
        at_s: f64,
        served: &mut [Served],
    ) -> bool {
        if self.next_step_s().is_none() {
            self.now = self.now.max(at_s);
        }
        self.blocked = false;
        let (seq, outputs) = match entry {
            Entry::Prompt { outputs } => (
                Seq {
                    req,
                    computed: 0,
                    context: r.prompt_tokens,
                    generated: 0,
                    target: outputs,
                    blocks: 0,
                    sched: 0,
                },
                outputs,
            ),
            Entry::Transferred => (
                Seq {
                    req,
                    computed: r.prompt_tokens,
                    context: r.prompt_tokens + 1,
                    generated: 1,
                    target: r.output_tokens,
                    blocks: 0,
                    sched: 0,
                },
                r.output_tokens,
            ),
        };
        // The last token is produced, never stored: a request holds at most prompt + outputs − 1. A
        // request without a prompt or an output cannot be served.
        let need = (r.prompt_tokens + outputs).saturating_sub(1);
        if r.prompt_tokens == 0 || outputs == 0 || self.kv.blocks_for(need) > self.kv.capacity {
            served[req].rejected = true;
            return false;
        }
        self.waiting.push_back(seq);
        true
    }

    /// Builds and runs one step at [`Engine::next_step_s`]; returns the requests (indices into `served`)
    /// that left this instance at its end (finished here, or prefilled on a prefill instance).
    pub fn step(
        &mut self,
        served: &mut [Served],
        step_time: &mut impl FnMut(&Batch) -> f64,
    ) -> Result<Vec<usize>, Stalled> {
        let (kv, running, waiting, out) = (
            &mut self.kv,
            &mut self.running,
            &mut self.waiting,
            &mut self.stats,
        );
        let mut budget = self.cfg.max_batch_tokens;
        let order: [Work; 3] = match self.cfg.policy {
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
                        if grow(kv, running, waiting, out, served, i, n) {
                            running[i].sched = n;
                            budget -= n;
                            i += 1;
                        }
                        // Else running[i] itself was preempted: the next sequence is now at i (or none).
                    }
                }
                Work::Admit => {
                    while budget > 0 && running.len() < self.cfg.max_seqs {
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
        for s in running.iter() {
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
            if running.is_empty() {
                self.blocked = true;
                return Ok(Vec::new());
            }
            return Err(Stalled {
                at_s: self.now,
                waiting: waiting.len(),
                running: running.len(),
            });
        }
        let dt = step_time(&batch);
        let start = self.now;
        self.now += dt;
        let now = self.now;
        out.steps += 1;
        out.busy_s += dt;
        out.peak_batch_seqs = out.peak_batch_seqs.max(seqs);
        out.peak_batch_tokens = out.peak_batch_tokens.max(batch.tokens());
        out.peak_resident_seqs = out.peak_resident_seqs.max(running.len() as u64);
        self.kv_area += dt * kv.used as f64;
        out.kv_peak_blocks = out.kv_peak_blocks.max(kv.used);

        let mut left = Vec::new();
        let mut i = 0;
        while i < running.len() {
            let s = &mut running[i];
            if s.sched == 0 {
                i += 1;
                continue;
            }
            let sv = &mut served[s.req];
            sv.first_scheduled_s.get_or_insert(start);
            s.computed += s.sched;
            s.sched = 0;
            if s.computed == s.context {
                s.generated += 1;
                s.context += 1;
                sv.first_token_s.get_or_insert(now);
                if s.generated == s.target {
                    sv.finish_s = Some(now);
                    kv.release(&mut s.blocks);
                    left.push(s.req);
                    running.remove(i);
                    continue;
                }
            }
            i += 1;
        }
        Ok(left)
    }

    /// The instance's figures, with `served` as its requests.
    pub fn finish(&self, served: Vec<Served>) -> InstanceRun {
        let mut out = self.stats.clone();
        out.served = served;
        out.end_s = self.now;
        let cap = self.stats.kv_capacity_blocks;
        out.kv_mean_utilization = if out.busy_s > 0.0 && cap > 0 {
            self.kv_area / out.busy_s / cap as f64
        } else {
            0.0
        };
        out
    }
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
    served: &mut [Served],
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
        served[victim.req].preemptions += 1;
        out.preemptions += 1;
        waiting.push_front(victim);
        if running.len() == i {
            return false;
        }
    }
}
