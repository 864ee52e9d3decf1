//! Pipeline schedules: per pipeline rank, the order in which it runs the forward and backward passes of
//! every micro-batch on the model stages it holds.
//!
//! A schedule is plain data ([`Schedule::per_rank`]); it says nothing about time. Each builder follows
//! its source's own loop structure so the orders are the real ones, not a re-derivation:
//! GPipe and 1F1B as Megatron-LM runs them (`forward_backward_pipelining_without_interleaving`),
//! interleaved 1F1B as `forward_backward_pipelining_with_interleaving`, DualPipe as the eight steps of
//! `DualPipe.step` in deepseek-ai/DualPipe.

use serde::{Deserialize, Serialize};

/// Which pipeline schedule a strategy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// All forwards, then all backwards: simple, activations of every micro-batch held at once.
    Gpipe,
    /// One forward one backward: GPipe's bubble with at most p micro-batches in flight.
    #[default]
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// Megatron's interleaved 1F1B: v model chunks per rank divide the bubble by v.
    Interleaved,
    /// DeepSeek's bidirectional schedule with overlapped forward/backward chunks (`dual-pipe`, or
    /// `dualpipe` as its repository spells it).
    #[serde(alias = "dualpipe")]
    DualPipe,
}

impl ScheduleKind {
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Gpipe => "gpipe",
            ScheduleKind::OneFOneB => "1f1b",
            ScheduleKind::Interleaved => "interleaved",
            ScheduleKind::DualPipe => "dual-pipe",
        }
    }
}

/// Which pass of a model stage a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pass {
    Forward,
    /// whole backward (input and weight gradients)
    Backward,
    /// DualPipe / zero-bubble split: input gradient only (what the previous stage waits for)
    BackwardInput,
    /// the weight gradient, deferred (no communication with other stages)
    BackwardWeight,
}

impl Pass {
    /// Whether this pass produces the input gradient the previous stage waits for (and so frees the
    /// stage's activations for that micro-batch).
    pub fn is_input_backward(self) -> bool {
        matches!(self, Pass::Backward | Pass::BackwardInput)
    }
}

/// One pass of one micro-batch on one model stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Task {
    pub mb: usize,
    /// model stage = block of consecutive layers, 0..schedule.model_stages
    pub model_stage: usize,
    pub pass: Pass,
}

impl Task {
    pub fn new(mb: usize, model_stage: usize, pass: Pass) -> Self {
        Task {
            mb,
            model_stage,
            pass,
        }
    }
}

/// What a pipeline rank does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Single(Task),
    /// DualPipe: a forward chunk and a backward chunk of other micro-batches run overlapped
    Overlapped {
        forward: Task,
        backward: Task,
    },
}

impl Slot {
    /// The slot's tasks, the forward first.
    pub fn tasks(&self) -> impl Iterator<Item = Task> {
        let (a, b) = match *self {
            Slot::Single(t) => (t, None),
            Slot::Overlapped { forward, backward } => (forward, Some(backward)),
        };
        std::iter::once(a).chain(b)
    }
}

/// A schedule that cannot be built: what was asked for and what the schedule needs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "a pipeline needs at least one rank and one micro-batch, got {ranks} ranks and {micro_batches} micro-batches"
    )]
    Empty { ranks: usize, micro_batches: usize },
    #[error(
        "{kind} holds one model stage per rank: virtual_stages must be 1, got {virtual_stages}"
    )]
    VirtualStages {
        kind: &'static str,
        virtual_stages: usize,
    },
    #[error(
        "interleaved 1F1B needs at least 2 virtual stages (model chunks) per rank, got {virtual_stages} (1 is plain 1f1b)"
    )]
    TooFewChunks { virtual_stages: usize },
    #[error(
        "interleaved 1F1B needs the micro-batches to be a multiple of the pipeline ranks (Megatron-LM runs them in groups of p per model chunk): {micro_batches} micro-batches on {ranks} ranks"
    )]
    Indivisible { ranks: usize, micro_batches: usize },
    #[error(
        "DualPipe needs an even number of pipeline ranks (rank i pairs with rank p-1-i), got {ranks}"
    )]
    OddRanks { ranks: usize },
    #[error(
        "DualPipe needs an even number of micro-batches, at least twice the pipeline ranks ({min} for {ranks} ranks), got {micro_batches}"
    )]
    DualPipeMicroBatches {
        ranks: usize,
        micro_batches: usize,
        min: usize,
    },
}

/// A pipeline schedule: what every pipeline rank runs, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// pipeline ranks p
    pub ranks: usize,
    /// model stages: p (GPipe, 1F1B, DualPipe), p·v (interleaved)
    pub model_stages: usize,
    pub micro_batches: usize,
    pub virtual_stages: usize,
    /// per pipeline rank, its slots in issue order
    pub per_rank: Vec<Vec<Slot>>,
}

impl Schedule {
    /// Builds the schedule of `kind` on `ranks` pipeline ranks for `micro_batches` micro-batches;
    /// `virtual_stages` is the model chunks per rank (v ≥ 2 for interleaved, 1 otherwise).
    pub fn build(
        kind: ScheduleKind,
        ranks: usize,
        virtual_stages: usize,
        micro_batches: usize,
    ) -> Result<Schedule, ScheduleError> {
        let (p, v, m) = (ranks, virtual_stages, micro_batches);
        if p == 0 || m == 0 {
            return Err(ScheduleError::Empty {
                ranks: p,
                micro_batches: m,
            });
        }
        if kind != ScheduleKind::Interleaved && v != 1 {
            return Err(ScheduleError::VirtualStages {
                kind: kind.name(),
                virtual_stages: v,
            });
        }
        let per_rank = match kind {
            ScheduleKind::Gpipe => (0..p).map(|r| gpipe(r, m)).collect(),
            ScheduleKind::OneFOneB => (0..p).map(|r| one_f_one_b(p, r, m)).collect(),
            ScheduleKind::Interleaved => {
                if v < 2 {
                    return Err(ScheduleError::TooFewChunks { virtual_stages: v });
                }
                if !m.is_multiple_of(p) {
                    return Err(ScheduleError::Indivisible {
                        ranks: p,
                        micro_batches: m,
                    });
                }
                (0..p).map(|r| interleaved(p, v, r, m)).collect()
            }
            ScheduleKind::DualPipe => {
                if !p.is_multiple_of(2) {
                    return Err(ScheduleError::OddRanks { ranks: p });
                }
                if !m.is_multiple_of(2) || m < 2 * p {
                    return Err(ScheduleError::DualPipeMicroBatches {
                        ranks: p,
                        micro_batches: m,
                        min: 2 * p,
                    });
                }
                (0..p).map(|r| dual_pipe(p, r, m)).collect()
            }
        };
        Ok(Schedule {
            kind,
            ranks: p,
            model_stages: p * v,
            micro_batches: m,
            virtual_stages: v,
            per_rank,
        })
    }

    /// The same schedule without its backward passes: what inference runs (each rank's forwards in the
    /// schedule's order; GPipe's and 1F1B's are both micro-batch order, the plain forward pipeline).
    pub fn forward_only(mut self) -> Schedule {
        for slots in &mut self.per_rank {
            *slots = slots
                .iter()
                .filter_map(|slot| {
                    slot.tasks()
                        .find(|t| t.pass == Pass::Forward)
                        .map(Slot::Single)
                })
                .collect();
        }
        self
    }

    /// The pipeline rank that runs `model_stage` for micro-batch `mb` (DualPipe: rank i holds model stages
    /// i and p−1−i; the first half of micro-batches flows 0→p−1, the second half p−1→0; interleaved:
    /// model stage k on rank k % p).
    pub fn rank_of(&self, model_stage: usize, mb: usize) -> usize {
        match self.kind {
            ScheduleKind::DualPipe if mb >= self.micro_batches / 2 => self.ranks - 1 - model_stage,
            _ => model_stage % self.ranks,
        }
    }

    /// Model stages whose parameters rank `rank` holds (DualPipe: two, interleaved: v).
    pub fn stages_on(&self, rank: usize) -> Vec<usize> {
        match self.kind {
            ScheduleKind::DualPipe => vec![rank, self.ranks - 1 - rank],
            _ => (0..self.virtual_stages)
                .map(|c| c * self.ranks + rank)
                .collect(),
        }
    }

    /// Most forward chunks whose backward has not yet run that rank `rank` holds at once (activation
    /// memory in chunk units), counted from per_rank.
    ///
    /// A chunk is one model stage of one micro-batch (1/v of a rank's layers when interleaved). Its
    /// activations are held from its forward until its [`Pass::Backward`] or [`Pass::BackwardInput`]; an
    /// overlapped slot counts its forward before its backward (both are live while they run).
    pub fn peak_in_flight(&self, rank: usize) -> usize {
        self.peak_live(rank, |_| true)
    }

    /// [`Schedule::peak_in_flight`] counting only `model_stage`'s chunks: most micro-batches whose forward
    /// of that stage has run on `rank` and whose backward of it has not.
    pub fn peak_in_flight_of(&self, rank: usize, model_stage: usize) -> usize {
        self.peak_live(rank, |t| t.model_stage == model_stage)
    }

    /// Most chunks among those `counted` that are live at once on `rank`, in its task order.
    fn peak_live(&self, rank: usize, counted: impl Fn(&Task) -> bool) -> usize {
        let (mut live, mut peak) = (0usize, 0usize);
        let tasks = self.per_rank[rank].iter().flat_map(|s| s.tasks());
        for task in tasks.filter(|t| counted(t)) {
            match task.pass {
                Pass::Forward => {
                    live += 1;
                    peak = peak.max(live);
                }
                Pass::Backward | Pass::BackwardInput => live = live.saturating_sub(1),
                Pass::BackwardWeight => {}
            }
        }
        peak
    }

    /// Closed-form bubble of the schedule's own paper, as a fraction of ideal time, for uniform F, B (and
    /// W for DualPipe): used by tests.
    ///
    /// `f`, `b` and `w` are one rank's forward, full backward and weight-gradient time for one
    /// micro-batch of one model stage (interleaved: of all v chunks together). Ideal time is every
    /// rank's work back to back, m·(F+B). GPipe and 1F1B: (p−1)/m. Interleaved: (p−1)/(v·m) (Narayanan
    /// et al. 2021). DualPipe: (p/2−1)(F&B+B−3W)/(m(F+B)) (its README), taking F&B = F+B: this
    /// simulator runs an overlapped pair's compute back to back and hides only communication.
    pub fn closed_form_bubble(&self, f: f64, b: f64, w: f64) -> f64 {
        let (p, m, v) = (
            self.ranks as f64,
            self.micro_batches as f64,
            self.virtual_stages as f64,
        );
        match self.kind {
            ScheduleKind::Gpipe | ScheduleKind::OneFOneB => (p - 1.0) / m,
            ScheduleKind::Interleaved => (p - 1.0) / (v * m),
            ScheduleKind::DualPipe => (p / 2.0 - 1.0) * (f + b + b - 3.0 * w) / (m * (f + b)),
        }
    }

    /// Every task of the schedule with the pipeline rank that runs it and its slot index there.
    pub fn tasks(&self) -> impl Iterator<Item = (usize, usize, Task)> + '_ {
        self.per_rank.iter().enumerate().flat_map(|(r, slots)| {
            slots
                .iter()
                .enumerate()
                .flat_map(move |(i, s)| s.tasks().map(move |t| (r, i, t)))
        })
    }
}

fn single(mb: usize, model_stage: usize, pass: Pass) -> Slot {
    Slot::Single(Task::new(mb, model_stage, pass))
}

/// GPipe: every forward, then every backward, in micro-batch order.
fn gpipe(rank: usize, m: usize) -> Vec<Slot> {
    (0..m)
        .map(|mb| single(mb, rank, Pass::Forward))
        .chain((0..m).map(|mb| single(mb, rank, Pass::Backward)))
        .collect()
}

/// 1F1B (PipeDream-Flush): p−rank−1 warm-up forwards so that the last rank starts backward at once, then
/// alternate, then drain the backwards.
fn one_f_one_b(p: usize, rank: usize, m: usize) -> Vec<Slot> {
    let warmup = (p - rank - 1).min(m);
    let mut out = Vec::with_capacity(2 * m);
    out.extend((0..warmup).map(|mb| single(mb, rank, Pass::Forward)));
    for i in 0..m - warmup {
        out.push(single(warmup + i, rank, Pass::Forward));
        out.push(single(i, rank, Pass::Backward));
    }
    out.extend((m - warmup..m).map(|mb| single(mb, rank, Pass::Backward)));
    out
}

/// Megatron-LM's interleaved 1F1B. Micro-step k (0..m·v) of a rank runs model chunk
/// ⌊(k mod p·v)/p⌋ (reversed for backward) of micro-batch ⌊k/(p·v)⌋·p + k mod p: p micro-batches go
/// through one chunk before the next chunk starts. Warm-up is (p−rank−1)·2 + (v−1)·p micro-steps, or all
/// of them when m = p (as Megatron does).
fn interleaved(p: usize, v: usize, rank: usize, m: usize) -> Vec<Slot> {
    let total = m * v;
    let chunk = |k: usize, forward: bool| {
        let c = (k % (p * v)) / p;
        if forward { c } else { v - 1 - c }
    };
    let mb_of = |k: usize| (k / (p * v)) * p + k % p;
    let fwd = |k: usize| single(mb_of(k), chunk(k, true) * p + rank, Pass::Forward);
    let bwd = |k: usize| single(mb_of(k), chunk(k, false) * p + rank, Pass::Backward);
    let warmup = if m == p {
        total
    } else {
        ((p - rank - 1) * 2 + (v - 1) * p).min(total)
    };
    let mut out = Vec::with_capacity(2 * total);
    out.extend((0..warmup).map(fwd));
    for i in 0..total - warmup {
        out.push(fwd(warmup + i));
        out.push(bwd(i));
    }
    out.extend((total - warmup..total).map(bwd));
    out
}

/// DualPipe's per-rank order, step by step as `DualPipe.step` runs it (deepseek-ai/DualPipe,
/// `dualpipe/dualpipe.py`). Micro-batches 0..m/2 flow 0→p−1 (direction 0, model stage i on rank i), the
/// rest p−1→0 (direction 1, model stage i on rank p−1−i). On ranks of the first half, local phase 0 is
/// direction 0; on the second half, direction 1. Backwards run with zero-bubble splitting
/// (`enable_zb=True`) become [`Pass::BackwardInput`], their weight gradients [`Pass::BackwardWeight`]
/// popped first-in first-out by `_weight_chunk`.
fn dual_pipe(p: usize, rank: usize, m: usize) -> Vec<Slot> {
    struct State {
        p: usize,
        rank: usize,
        half_m: usize,
        second_half: bool,
        next_f: [usize; 2],
        next_b: [usize; 2],
        weights: std::collections::VecDeque<Task>,
    }
    impl State {
        fn direction(&self, phase: usize) -> usize {
            phase ^ usize::from(self.second_half)
        }
        fn stage(&self, direction: usize) -> usize {
            if direction == 0 {
                self.rank
            } else {
                self.p - 1 - self.rank
            }
        }
        fn f(&mut self, phase: usize) -> Task {
            let d = self.direction(phase);
            let t = Task::new(
                d * self.half_m + self.next_f[d],
                self.stage(d),
                Pass::Forward,
            );
            self.next_f[d] += 1;
            t
        }
        fn b(&mut self, phase: usize, zero_bubble: bool) -> Task {
            let d = self.direction(phase);
            let (mb, stage) = (d * self.half_m + self.next_b[d], self.stage(d));
            self.next_b[d] += 1;
            if zero_bubble {
                self.weights
                    .push_back(Task::new(mb, stage, Pass::BackwardWeight));
                Task::new(mb, stage, Pass::BackwardInput)
            } else {
                Task::new(mb, stage, Pass::Backward)
            }
        }
        fn w(&mut self) -> Task {
            self.weights
                .pop_front()
                .expect("a deferred weight gradient")
        }
    }
    let half_ranks = p / 2;
    let half_rank = rank.min(p - 1 - rank);
    let middle = half_rank == half_ranks - 1;
    let mut s = State {
        p,
        rank,
        half_m: m / 2,
        second_half: rank >= half_ranks,
        next_f: [0; 2],
        next_b: [0; 2],
        weights: Default::default(),
    };
    let mut out = Vec::with_capacity(3 * m);
    let one = |t: Task| Slot::Single(t);
    // Step 1: nF0.
    for _ in 0..(half_ranks - half_rank - 1) * 2 {
        out.push(one(s.f(0)));
    }
    // Step 2: nF0F1.
    for _ in 0..half_rank + 1 {
        out.push(one(s.f(0)));
        out.push(one(s.f(1)));
    }
    // Step 3: nB1W1F1 (zero bubble).
    for _ in 0..half_ranks - half_rank - 1 {
        out.push(one(s.b(1, true)));
        out.push(one(s.w()));
        out.push(one(s.f(1)));
    }
    // Step 4 (main): nF0B1F1B0; the middle ranks do not overlap their first pair.
    for i in 0..m / 2 - p + half_rank + 1 {
        if i == 0 && middle {
            out.push(one(s.f(0)));
            out.push(one(s.b(1, false)));
        } else {
            let (forward, backward) = (s.f(0), s.b(1, false));
            out.push(Slot::Overlapped { forward, backward });
        }
        let (forward, backward) = (s.f(1), s.b(0, false));
        out.push(Slot::Overlapped { forward, backward });
    }
    // Step 5: nB1F1B0.
    for _ in 0..half_ranks - half_rank - 1 {
        out.push(one(s.b(1, false)));
        let (forward, backward) = (s.f(1), s.b(0, false));
        out.push(Slot::Overlapped { forward, backward });
    }
    // Step 6: nB1B0, the second half of them split (zero bubble).
    let steps = half_rank + 1;
    let mut zero_bubble = false;
    for i in 0..steps {
        if i == steps / 2 && !half_rank.is_multiple_of(2) {
            zero_bubble = true;
        }
        out.push(one(s.b(1, zero_bubble)));
        if i == steps / 2 && half_rank.is_multiple_of(2) {
            zero_bubble = true;
        }
        out.push(one(s.b(0, zero_bubble)));
    }
    // Step 7: nWB0 (zero bubble).
    for _ in 0..half_ranks - half_rank - 1 {
        out.push(one(s.w()));
        out.push(one(s.b(0, true)));
    }
    // Step 8: nW.
    for _ in 0..half_rank + 1 {
        out.push(one(s.w()));
    }
    debug_assert!(s.weights.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cases() -> Vec<Schedule> {
        let mut out = Vec::new();
        for (p, m) in [(1, 1), (1, 3), (2, 2), (4, 3), (4, 8), (5, 7), (8, 16)] {
            out.push(Schedule::build(ScheduleKind::Gpipe, p, 1, m).unwrap());
            out.push(Schedule::build(ScheduleKind::OneFOneB, p, 1, m).unwrap());
        }
        for (p, v, m) in [
            (1, 2, 3),
            (2, 2, 2),
            (4, 2, 4),
            (4, 2, 8),
            (4, 3, 12),
            (8, 2, 16),
        ] {
            out.push(Schedule::build(ScheduleKind::Interleaved, p, v, m).unwrap());
        }
        for (p, m) in [(2, 4), (2, 6), (4, 8), (4, 10), (6, 12), (8, 16), (8, 20)] {
            out.push(Schedule::build(ScheduleKind::DualPipe, p, 1, m).unwrap());
        }
        out
    }

    #[test]
    fn every_task_runs_once_on_its_rank_after_what_it_needs() {
        for s in cases() {
            let what = format!(
                "{:?} p={} v={} m={}",
                s.kind, s.ranks, s.virtual_stages, s.micro_batches
            );
            // (mb, stage) → forward, input-backward, weight-backward positions on their rank.
            let mut seen: HashMap<(usize, usize, Pass), (usize, usize)> = HashMap::new();
            for (rank, i, t) in s.tasks() {
                assert!(
                    t.mb < s.micro_batches && t.model_stage < s.model_stages,
                    "{what}: {t:?}"
                );
                assert_eq!(
                    rank,
                    s.rank_of(t.model_stage, t.mb),
                    "{what}: {t:?} on rank {rank}"
                );
                assert!(s.stages_on(rank).contains(&t.model_stage), "{what}: {t:?}");
                assert!(
                    seen.insert((t.mb, t.model_stage, t.pass), (rank, i))
                        .is_none(),
                    "{what}: {t:?} twice"
                );
            }
            for mb in 0..s.micro_batches {
                for k in 0..s.model_stages {
                    let f = seen[&(mb, k, Pass::Forward)];
                    let full = seen.get(&(mb, k, Pass::Backward));
                    let input = seen.get(&(mb, k, Pass::BackwardInput));
                    let weight = seen.get(&(mb, k, Pass::BackwardWeight));
                    let b = match (full, input) {
                        (Some(b), None) => {
                            assert!(
                                weight.is_none(),
                                "{what}: mb {mb} stage {k} W of a full backward"
                            );
                            *b
                        }
                        (None, Some(b)) => {
                            let w = weight.expect("a split backward has its weight gradient");
                            assert!(w.1 > b.1, "{what}: mb {mb} stage {k} W before its B");
                            *b
                        }
                        _ => panic!("{what}: mb {mb} stage {k}: one backward expected"),
                    };
                    assert!(
                        b.1 >= f.1,
                        "{what}: mb {mb} stage {k} backward before forward"
                    );
                }
            }
            let counted: usize = seen.len();
            let split = seen.keys().filter(|k| k.2 == Pass::BackwardWeight).count();
            assert_eq!(
                counted,
                2 * s.micro_batches * s.model_stages + split,
                "{what}"
            );
        }
    }

    #[test]
    fn rank_placement() {
        let d = Schedule::build(ScheduleKind::DualPipe, 4, 1, 8).unwrap();
        assert_eq!(
            (d.rank_of(0, 0), d.rank_of(0, 4), d.rank_of(3, 7)),
            (0, 3, 0)
        );
        assert_eq!(d.stages_on(1), vec![1, 2]);
        let i = Schedule::build(ScheduleKind::Interleaved, 4, 2, 8).unwrap();
        assert_eq!(i.model_stages, 8);
        assert_eq!((i.rank_of(5, 3), i.stages_on(1)), (1, vec![1, 5]));
    }

    #[test]
    fn peak_in_flight_matches_each_papers_memory() {
        // 1F1B: the first rank holds p micro-batches, rank r holds p − r; GPipe holds all m.
        for (p, m) in [(4, 8), (8, 16), (4, 3)] {
            let s = Schedule::build(ScheduleKind::OneFOneB, p, 1, m).unwrap();
            for r in 0..p {
                assert_eq!(s.peak_in_flight(r), (p - r).min(m));
            }
            let g = Schedule::build(ScheduleKind::Gpipe, p, 1, m).unwrap();
            assert_eq!(g.peak_in_flight(0), m);
        }
        // Interleaved: warm-up (p−r−1)·2 + (v−1)·p chunks, then one more before the first backward
        // (chunks are 1/v of a stage: p + (p−1)/v stages on the first rank); all of them when m = p.
        for (p, v, m) in [(4, 2, 8), (4, 3, 12), (8, 2, 16)] {
            let s = Schedule::build(ScheduleKind::Interleaved, p, v, m).unwrap();
            for r in 0..p {
                assert_eq!(s.peak_in_flight(r), (p - r - 1) * 2 + (v - 1) * p + 1);
            }
        }
        let all = Schedule::build(ScheduleKind::Interleaved, 4, 2, 4).unwrap();
        assert_eq!(all.peak_in_flight(0), 8);
        // DualPipe: PP+1 chunks (one model stage of one micro-batch each) on every rank, its README's
        // "Activation Per Device PP+1" against 1F1B's PP.
        for (p, m) in [(2, 4), (4, 8), (8, 16), (8, 20)] {
            let s = Schedule::build(ScheduleKind::DualPipe, p, 1, m).unwrap();
            for r in 0..p {
                assert_eq!(s.peak_in_flight(r), p + 1, "p={p} m={m} rank {r}");
            }
        }
    }

    #[test]
    fn the_last_stage_holds_one_micro_batch_in_one_f_one_b_and_all_of_them_in_gpipe() {
        // What the loss's softmax memory counts on the rank that ends the model.
        for (p, m) in [(4, 8), (8, 16)] {
            let s = Schedule::build(ScheduleKind::OneFOneB, p, 1, m).unwrap();
            assert_eq!(s.peak_in_flight_of(p - 1, p - 1), 1);
            let g = Schedule::build(ScheduleKind::Gpipe, p, 1, m).unwrap();
            assert_eq!(g.peak_in_flight_of(p - 1, p - 1), m);
            // A stage the rank does not run is never in flight there.
            assert_eq!(s.peak_in_flight_of(p - 1, 0), 0);
        }
        // Every stage a rank holds has a micro-batch in flight at some point, and none more than the rank
        // holds over all its stages (interleaved and DualPipe hold several).
        for s in cases() {
            for r in 0..s.ranks {
                for k in s.stages_on(r) {
                    let n = s.peak_in_flight_of(r, k);
                    assert!(
                        n >= 1 && n <= s.peak_in_flight(r),
                        "{:?} rank {r} stage {k}: {n}",
                        s.kind
                    );
                }
            }
        }
    }

    #[test]
    fn dual_pipe_follows_the_reference_steps() {
        // p=4, m=8, rank 0 (half_rank 0): direction 0 is stage 0 (mb 0..4), direction 1 stage 3 (mb 4..8).
        let s = Schedule::build(ScheduleKind::DualPipe, 4, 1, 8).unwrap();
        let (f, b, bi, w) = (
            Pass::Forward,
            Pass::Backward,
            Pass::BackwardInput,
            Pass::BackwardWeight,
        );
        let t = Task::new;
        let o = |forward, backward| Slot::Overlapped { forward, backward };
        let expected = vec![
            // Step 1: 2 F0; step 2: F0 F1.
            single(0, 0, f),
            single(1, 0, f),
            single(2, 0, f),
            single(4, 3, f),
            // Step 3: B1 (split), W, F1.
            single(4, 3, bi),
            single(4, 3, w),
            single(5, 3, f),
            // Step 4: F0&B1, F1&B0.
            o(t(3, 0, f), t(5, 3, b)),
            o(t(6, 3, f), t(0, 0, b)),
            // Step 5: B1, F1&B0.
            single(6, 3, b),
            o(t(7, 3, f), t(1, 0, b)),
            // Step 6: B1, then B0 split; step 7: W, B0 split; step 8: W.
            single(7, 3, b),
            single(2, 0, bi),
            single(2, 0, w),
            single(3, 0, bi),
            single(3, 0, w),
        ];
        assert_eq!(s.per_rank[0], expected);
        // The middle ranks run their first main-step pair apart.
        assert!(matches!(
            s.per_rank[1][4..6],
            [Slot::Single(_), Slot::Single(_)]
        ));
    }

    #[test]
    fn errors_say_what_is_needed() {
        let e = |k, p, v, m| Schedule::build(k, p, v, m).unwrap_err();
        assert_eq!(
            e(ScheduleKind::Interleaved, 4, 2, 6),
            ScheduleError::Indivisible {
                ranks: 4,
                micro_batches: 6
            }
        );
        assert_eq!(
            e(ScheduleKind::DualPipe, 3, 1, 6),
            ScheduleError::OddRanks { ranks: 3 }
        );
        let short = e(ScheduleKind::DualPipe, 4, 1, 6);
        assert!(short.to_string().contains("at least twice"), "{short}");
        assert!(matches!(
            e(ScheduleKind::DualPipe, 4, 1, 9),
            ScheduleError::DualPipeMicroBatches { .. }
        ));
        assert!(matches!(
            e(ScheduleKind::OneFOneB, 4, 2, 8),
            ScheduleError::VirtualStages { .. }
        ));
        assert!(matches!(
            e(ScheduleKind::Interleaved, 4, 1, 8),
            ScheduleError::TooFewChunks { .. }
        ));
        assert!(matches!(
            e(ScheduleKind::Gpipe, 0, 1, 8),
            ScheduleError::Empty { .. }
        ));
    }

    #[test]
    fn kind_names_round_trip_through_serde() {
        for k in [
            ScheduleKind::Gpipe,
            ScheduleKind::OneFOneB,
            ScheduleKind::Interleaved,
            ScheduleKind::DualPipe,
        ] {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<ScheduleKind>(&json).unwrap(), k);
        }
        assert_eq!(ScheduleKind::default(), ScheduleKind::OneFOneB);
        assert_eq!(
            serde_json::from_str::<ScheduleKind>("\"dualpipe\"").unwrap(),
            ScheduleKind::DualPipe
        );
    }
}
