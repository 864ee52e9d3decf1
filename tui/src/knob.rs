//! Knobs: the scenario parameters the Knobs view edits, each bound to the `--set` key that changes it.

use moesim_sim::Scenario;
use moesim_sim::pipeline::schedule::ScheduleKind;
use moesim_sim::scenario::file::{Mode, StrategyKind};
use moesim_sim::scenario::parallel::RankOrder;
use moesim_sim::serving::config::{Arrival, Policy};
use moesim_traces::CachePolicy;

/// One editable parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Knob {
    pub label: &'static str,
    /// The override key, e.g. `strategy.3.slots_per_gpu`.
    pub key: String,
    pub value: String,
    /// The value must divide this (EP size divides the GPU count), so steps go from divisor to divisor.
    pub divides: Option<usize>,
    /// An integer that steps by doubling and halving (token and sequence budgets).
    pub doubles: bool,
}

impl Knob {
    /// The `KEY=VALUE` override setting this knob to `value` (`--set` reads bare words as strings).
    pub fn assignment(&self, value: &str) -> String {
        format!("{}={}", self.key, value.trim())
    }

    /// The value one step up (`up`) or down: integers by one (never below 1), to the next divisor or by
    /// doubling, factors by a quarter, cache policies, pipeline schedules and serving policies cycled.
    pub fn step(&self, up: bool) -> Option<String> {
        let cycle = |names: &[&'static str]| {
            let i = names.iter().position(|p| *p == self.value)?;
            let n = names.len();
            let next = if up { (i + 1) % n } else { (i + n - 1) % n };
            Some(names[next].to_string())
        };
        let policies: Vec<&'static str> = CachePolicy::ALL.iter().map(|p| p.name()).collect();
        if let Some(next) = cycle(&policies)
            .or_else(|| cycle(&schedules()))
            .or_else(|| cycle(&rank_orders()))
            .or_else(|| cycle(&serving_policies()))
        {
            return Some(next);
        }
        if let Ok(v) = self.value.parse::<usize>() {
            let next = match self.divides {
                Some(n) if up => (v + 1..=n).find(|d| n % d == 0).unwrap_or(v),
                Some(n) => (1..v).rev().find(|d| n % d == 0).unwrap_or(v),
                None if self.doubles && up => v.saturating_mul(2),
                None if self.doubles => (v / 2).max(1),
                None if up => v + 1,
                None => v.saturating_sub(1).max(1),
            };
            return Some(next.to_string());
        }
        let v = self.value.parse::<f64>().ok()?;
        let next = if up { v + 0.25 } else { (v - 0.25).max(0.25) };
        Some(format!("{next}"))
    }
}

/// The pipeline schedules, as a scenario names them.
fn schedules() -> [&'static str; 4] {
    [
        ScheduleKind::Gpipe,
        ScheduleKind::OneFOneB,
        ScheduleKind::Interleaved,
        ScheduleKind::DualPipe,
    ]
    .map(ScheduleKind::name)
}

/// The rank orders, as a scenario names them.
fn rank_orders() -> [&'static str; 2] {
    [RankOrder::PipelineOutermost, RankOrder::DataOutermost].map(RankOrder::name)
}

/// A serving engine's scheduling policies, as a scenario names them.
fn serving_policies() -> [&'static str; 2] {
    [Policy::DecodeFirst, Policy::PrefillFirst].map(policy_name)
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::DecodeFirst => "decode-first",
        Policy::PrefillFirst => "prefill-first",
    }
}

/// A serving scenario's own knobs: the arrival rate (Poisson or Gamma arrivals; a trace has its own) and
/// the engine's token and sequence budgets and policy.
fn serving_knobs(s: &Scenario) -> Vec<Knob> {
    let Some(cfg) = &s.serving else {
        return Vec::new();
    };
    let knob = |label, key: &str, value: String, doubles| Knob {
        label,
        key: key.into(),
        value,
        divides: None,
        doubles,
    };
    let mut out = Vec::new();
    if let Arrival::Poisson { rate_per_s } | Arrival::Gamma { rate_per_s, .. } =
        cfg.requests.arrival
    {
        out.push(knob(
            "arrival rate (requests/s)",
            "workload.serving.rate_per_s",
            format!("{rate_per_s}"),
            false,
        ));
    }
    let e = &cfg.engine;
    out.push(knob(
        "max batch tokens (per step)",
        "serving.max_batch_tokens",
        e.max_batch_tokens.to_string(),
        true,
    ));
    out.push(knob(
        "max sequences (per step)",
        "serving.max_seqs",
        e.max_seqs.to_string(),
        true,
    ));
    out.push(knob(
        "scheduling policy",
        "serving.policy",
        policy_name(e.policy).into(),
        false,
    ));
    out
}

/// The knobs of strategy `i` of `s`, then the cluster's (a serving scenario's own knobs first; `i` out of
/// range: no strategy knobs). An `ep`, `ep-replicated` or `fssdp` strategy outside serving also has its
/// tensor-, expert-tensor- (EP kinds) and pipeline-parallel degrees, its schedule and rank order (with PP
/// above 1: the scenario refuses them without); `ep` and `fssdp` the micro-batches per iteration. A value
/// the scenario refuses is the error the view shows.
pub fn knobs(s: &Scenario, i: usize) -> Vec<Knob> {
    let mut out = serving_knobs(s);
    let gpus = s.cluster.gpus();
    let per_node = s.cluster.gpus_per_node;
    let mut add = |label, field: &str, value: String| {
        out.push(Knob {
            label,
            key: format!("strategy.{i}.{field}"),
            divides: match field {
                "ep_size" | "pp" => Some(gpus),
                // Tensor and expert tensor parallelism stay inside a node.
                "tp" | "etp" => Some(per_node),
                _ => None,
            },
            value,
            doubles: false,
        })
    };
    if let Some(st) = s.strategies.get(i) {
        match st.kind {
            StrategyKind::Ep | StrategyKind::EpReplicated => {
                add("EP size", "ep_size", st.ep_size.to_string());
                if let Some(cf) = st.capacity_factor {
                    add("capacity factor", "capacity_factor", format!("{cf}"));
                }
            }
            _ => {}
        }
        // FSSDP splits its dense layers over TP groups or its layers over pipeline stages (not yet both).
        let parallel = matches!(
            st.kind,
            StrategyKind::Ep | StrategyKind::EpReplicated | StrategyKind::Fssdp
        ) && s.workload.mode != Mode::Serving;
        if parallel {
            let p = &st.parallel;
            add("TP (tensor parallel)", "tp", p.tp.to_string());
            if matches!(st.kind, StrategyKind::Ep | StrategyKind::EpReplicated) {
                add("ETP (expert tensor parallel)", "etp", p.etp.to_string());
            }
            add("PP (pipeline stages)", "pp", p.pp.to_string());
            if p.pp > 1 {
                add(
                    "pipeline schedule",
                    "pipeline_schedule",
                    p.schedule.name().into(),
                );
                add("rank order", "rank_order", p.rank_order.name().into());
            }
            // Only interleaving takes more than one virtual stage per rank.
            if p.schedule == ScheduleKind::Interleaved {
                add(
                    "virtual stages",
                    "virtual_stages",
                    p.virtual_stages.to_string(),
                );
            }
        }
        if let Some(r) = st.replication {
            add(
                "slots per GPU",
                "slots_per_gpu",
                r.slots_per_gpu.to_string(),
            );
            add(
                "re-plan interval",
                "replan_interval",
                r.replan_interval.to_string(),
            );
        }
        if let Some(f) = &st.fssdp {
            add(
                "FSSDP memory cap (copies/layer)",
                "memory_cap_experts",
                f.memory_cap_experts.to_string(),
            );
        }
        if let Some(o) = &st.offload {
            add(
                "cache size (experts/layer)",
                "cache_experts_per_layer",
                o.cache_experts_per_layer.to_string(),
            );
            add("cache policy", "cache_policy", o.policy.name().to_string());
        }
    }
    if s.strategies.get(i).is_some_and(|st| {
        matches!(st.kind, StrategyKind::Ep | StrategyKind::Fssdp)
            && s.workload.mode != Mode::Serving
    }) {
        out.push(Knob {
            label: "micro-batches",
            key: "workload.micro_batches".into(),
            value: s.workload.micro_batches.to_string(),
            divides: None,
            doubles: false,
        });
    }
    out.push(Knob {
        label: "nodes",
        key: "cluster.nodes".into(),
        value: s.cluster.nodes.to_string(),
        divides: None,
        doubles: false,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knob(value: &str) -> Knob {
        Knob {
            label: "x",
            key: "strategy.0.x".into(),
            value: value.into(),
            divides: None,
            doubles: false,
        }
    }

    #[test]
    fn steps_integers_policies_and_factors() {
        assert_eq!(knob("8").step(true).as_deref(), Some("9"));
        assert_eq!(knob("1").step(false).as_deref(), Some("1"));
        assert_eq!(knob("lru").step(true).as_deref(), Some("lfu"));
        assert_eq!(knob("lru").step(false).as_deref(), Some("belady"));
        assert_eq!(knob("1.25").step(true).as_deref(), Some("1.5"));
        let ep = Knob {
            divides: Some(16),
            ..knob("4")
        };
        assert_eq!(ep.step(true).as_deref(), Some("8"));
        assert_eq!(ep.step(false).as_deref(), Some("2"));
        let full = Knob {
            divides: Some(16),
            ..knob("16")
        };
        assert_eq!(full.step(true).as_deref(), Some("16"));
    }

    const TRAINING: &str = r#"
[model]
preset = "olmoe-1b-7b"
layers = 2
[cluster]
preset = "dgx-h100"
[workload]
iterations = 2
[[strategy]]
name = "rep"
kind = "ep-replicated"
ep_size = 4
slots_per_gpu = 17
replan_interval = 5
[[strategy]]
name = "fssdp"
kind = "fssdp"
"#;

    const DECODE: &str = r#"
[model]
preset = "olmoe-1b-7b"
layers = 2
[cluster]
preset = "dgx-h100"
[workload]
mode = "decode"
iterations = 2
[[strategy]]
name = "off"
kind = "offload"
cache_policy = "lru"
cache_experts_per_layer = 16
"#;

    /// Every knob of every kind, stepped up, is an override the scenario accepts and that changes the knob.
    #[test]
    fn every_knob_is_a_working_override() {
        use moesim_sim::scenario::parse_scenario;
        let cases: [(&str, usize, &[&str]); 3] = [
            (
                TRAINING,
                0,
                &[
                    "EP size",
                    "TP (tensor parallel)",
                    "ETP (expert tensor parallel)",
                    "PP (pipeline stages)",
                    "slots per GPU",
                    "re-plan interval",
                    "nodes",
                ],
            ),
            (
                TRAINING,
                1,
                &[
                    "TP (tensor parallel)",
                    "PP (pipeline stages)",
                    "FSSDP memory cap (copies/layer)",
                    "micro-batches",
                    "nodes",
                ],
            ),
            (
                DECODE,
                0,
                &["cache size (experts/layer)", "cache policy", "nodes"],
            ),
        ];
        for (text, i, labels) in cases {
            let s = parse_scenario("k.toml", text, &[]).unwrap();
            let ks = knobs(&s, i);
            assert_eq!(ks.iter().map(|k| k.label).collect::<Vec<_>>(), labels);
            for k in ks {
                let v = k.step(true).unwrap();
                let changed = parse_scenario("k.toml", text, &[k.assignment(&v)])
                    .unwrap_or_else(|e| panic!("{}: {e}", k.key));
                let after = knobs(&changed, i)
                    .into_iter()
                    .find(|n| n.key == k.key)
                    .unwrap();
                assert_eq!(after.value, v, "{}", k.key);
            }
        }
    }

    const PIPELINED: &str = r#"
[model]
preset = "olmoe-1b-7b"
layers = 4
seq_len = 256
[cluster]
preset = "dgx-h100"
[workload]
iterations = 1
micro_batches = 4
[[strategy]]
name = "pp2"
kind = "ep"
ep_size = 2
pp = 2
[[strategy]]
name = "flat"
kind = "ep"
ep_size = 8
"#;

    /// TP, PP, the schedule and the micro-batches of an `ep` training strategy step to values the scenario
    /// accepts and resolves; a schedule it refuses is an error naming the field to fix.
    #[test]
    fn parallel_knobs_change_the_layout() {
        use moesim_sim::scenario::parse_scenario;
        let s = parse_scenario("p.toml", PIPELINED, &[]).unwrap();
        let labels = |i| knobs(&s, i).iter().map(|k| k.label).collect::<Vec<_>>();
        assert_eq!(
            labels(0),
            [
                "EP size",
                "TP (tensor parallel)",
                "ETP (expert tensor parallel)",
                "PP (pipeline stages)",
                "pipeline schedule",
                "rank order",
                "micro-batches",
                "nodes"
            ]
        );
        // Without pipeline parallelism the scenario refuses a schedule: no schedule knob.
        assert!(!labels(1).contains(&"pipeline schedule"));
        let ks = knobs(&s, 0);
        let get = |label: &str| ks.iter().find(|k| k.label == label).unwrap();
        let apply = |k: &Knob, v: &str| parse_scenario("p.toml", PIPELINED, &[k.assignment(v)]);
        let tp = get("TP (tensor parallel)");
        assert_eq!(tp.step(true).as_deref(), Some("2"));
        let changed = apply(tp, "2").unwrap();
        assert_eq!(changed.strategies[0].parallel.tp, 2);
        // Expert tensor parallelism slices pp2's two-GPU EP groups' experts over pairs of GPUs.
        let etp = get("ETP (expert tensor parallel)");
        assert_eq!(etp.step(true).as_deref(), Some("2"));
        assert_eq!(apply(etp, "2").unwrap().strategies[0].parallel.etp, 2);
        let pp = get("PP (pipeline stages)");
        assert_eq!(pp.step(true).as_deref(), Some("4"));
        assert_eq!(apply(pp, "4").unwrap().strategies[0].parallel.pp, 4);
        let sched = get("pipeline schedule");
        assert_eq!(sched.value, "1f1b");
        assert_eq!(sched.step(false).as_deref(), Some("gpipe"));
        assert_eq!(
            apply(sched, "gpipe").unwrap().strategies[0]
                .parallel
                .schedule,
            ScheduleKind::Gpipe
        );
        // The rank order cycles through Megatron's two and resolves.
        let order = get("rank order");
        assert_eq!(order.value, "tp-ep-dp-pp");
        assert_eq!(order.step(true).as_deref(), Some("tp-ep-pp-dp"));
        assert_eq!(
            apply(order, "tp-ep-pp-dp").unwrap().strategies[0]
                .parallel
                .rank_order,
            RankOrder::DataOutermost
        );
        // Interleaving needs virtual stages: refused, naming the field.
        assert_eq!(sched.step(true).as_deref(), Some("interleaved"));
        let err = apply(sched, "interleaved").unwrap_err().to_string();
        assert!(err.contains("virtual_stages"), "{err}");
        let mb = get("micro-batches");
        assert_eq!(mb.key, "workload.micro_batches");
        assert_eq!(
            apply(mb, &mb.step(true).unwrap())
                .unwrap()
                .workload
                .micro_batches,
            5
        );
        // A TP degree that does not divide the node is not a step.
        let eight = Knob {
            value: "8".into(),
            ..tp.clone()
        };
        assert_eq!(eight.step(true).as_deref(), Some("8"));
        // An interleaved schedule shows its virtual stages, which step and resolve like the others.
        let overrides = [
            "strategy.pp2.pipeline_schedule=\"interleaved\"".to_string(),
            "strategy.pp2.virtual_stages=2".to_string(),
        ];
        let s = parse_scenario("p.toml", PIPELINED, &overrides).unwrap();
        let ks = knobs(&s, 0);
        let vs = ks.iter().find(|k| k.label == "virtual stages").unwrap();
        assert_eq!(
            (vs.key.as_str(), vs.value.as_str()),
            ("strategy.0.virtual_stages", "2")
        );
        assert!(!labels(0).contains(&"virtual stages"));
        let mut with = overrides.to_vec();
        with.push(vs.assignment("1"));
        // One virtual stage is not interleaving: refused, naming the field.
        let err = parse_scenario("p.toml", PIPELINED, &with)
            .unwrap_err()
            .to_string();
        assert!(err.contains("virtual_stages"), "{err}");
    }

    const SERVING: &str = r#"
[model]
preset = "mixtral-8x7b"
[cluster]
preset = "dgx-h100"
[workload]
mode = "serving"
[workload.serving]
rate_per_s = 2.5
duration_s = 5.0
prompt = { dist = "fixed", tokens = 512 }
output = { dist = "fixed", tokens = 64 }
[serving]
max_batch_tokens = 4096
max_seqs = 64
[[strategy]]
name = "ep8"
kind = "ep"
"#;

    /// A serving scenario's knobs come first: the arrival rate, the batch budgets (doubled and halved) and
    /// the policy (cycled); each step is an override the scenario accepts; out of range, no strategy knobs.
    #[test]
    fn serving_knobs_step_and_resolve() {
        use moesim_sim::scenario::parse_scenario;
        let s = parse_scenario("s.toml", SERVING, &[]).unwrap();
        let ks = knobs(&s, 0);
        assert_eq!(
            ks.iter().map(|k| k.label).collect::<Vec<_>>(),
            [
                "arrival rate (requests/s)",
                "max batch tokens (per step)",
                "max sequences (per step)",
                "scheduling policy",
                "EP size",
                "nodes"
            ]
        );
        let steps: Vec<_> = ks.iter().map(|k| k.step(true).unwrap()).collect();
        assert_eq!(steps[..4], ["2.75", "8192", "128", "prefill-first"]);
        assert_eq!(ks[1].step(false).as_deref(), Some("2048"));
        for (k, v) in ks.iter().zip(&steps).take(4) {
            let changed = parse_scenario("s.toml", SERVING, &[k.assignment(v)])
                .unwrap_or_else(|e| panic!("{}: {e}", k.key));
            let after = knobs(&changed, 0)
                .into_iter()
                .find(|n| n.key == k.key)
                .unwrap();
            assert_eq!(&after.value, v, "{}", k.key);
        }
        let none: Vec<_> = knobs(&s, usize::MAX).iter().map(|k| k.label).collect();
        assert!(
            !none.contains(&"EP size") && none.contains(&"nodes"),
            "{none:?}"
        );
    }

    #[test]
    fn assignments_name_the_key() {
        assert_eq!(knob("8").assignment(" 9 "), "strategy.0.x=9");
    }
}
