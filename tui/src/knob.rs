//! Knobs: the scenario parameters the Knobs view edits, each bound to the `--set` key that changes it.

use moesim_sim::Scenario;
use moesim_sim::scenario::file::StrategyKind;

/// Cache policies in the order `+`/`-` cycles them.
pub const POLICIES: [&str; 4] = ["lru", "lfu", "lrfu", "belady"];

/// One editable parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Knob {
    pub label: &'static str,
    /// The override key, e.g. `strategy.3.slots_per_gpu`.
    pub key: String,
    pub value: String,
}

impl Knob {
    /// The `KEY=VALUE` override setting this knob to `value` (`--set` reads bare words as strings).
    pub fn assignment(&self, value: &str) -> String {
        format!("{}={}", self.key, value.trim())
    }

    /// The value one step up (`up`) or down: integers by one (never below 1), policies cycled.
    pub fn step(&self, up: bool) -> Option<String> {
        if let Some(i) = POLICIES.iter().position(|p| *p == self.value) {
            let n = POLICIES.len();
            return Some(POLICIES[if up { (i + 1) % n } else { (i + n - 1) % n }].to_string());
        }
        if let Ok(v) = self.value.parse::<u64>() {
            return Some(
                if up {
                    v + 1
                } else {
                    v.saturating_sub(1).max(1)
                }
                .to_string(),
            );
        }
        let v = self.value.parse::<f64>().ok()?;
        let next = if up { v + 0.25 } else { (v - 0.25).max(0.25) };
        Some(format!("{next}"))
    }
}

/// The knobs of strategy `i` of `s`, then the cluster's.
pub fn knobs(s: &Scenario, i: usize) -> Vec<Knob> {
    let mut out = Vec::new();
    let mut add = |label, field: &str, value: String| {
        out.push(Knob {
            label,
            key: format!("strategy.{i}.{field}"),
            value,
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
            add("cache policy", "cache_policy", policy_name(&o.policy));
        }
    }
    out.push(Knob {
        label: "nodes",
        key: "cluster.nodes".into(),
        value: s.cluster.nodes.to_string(),
    });
    out
}

/// The policy as the scenario file spells it.
fn policy_name(p: &moesim_traces::CachePolicy) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{p:?}").to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knob(value: &str) -> Knob {
        Knob {
            label: "x",
            key: "strategy.0.x".into(),
            value: value.into(),
        }
    }

    #[test]
    fn steps_integers_policies_and_factors() {
        assert_eq!(knob("8").step(true).as_deref(), Some("9"));
        assert_eq!(knob("1").step(false).as_deref(), Some("1"));
        assert_eq!(knob("lru").step(true).as_deref(), Some("lfu"));
        assert_eq!(knob("lru").step(false).as_deref(), Some("belady"));
        assert_eq!(knob("1.25").step(true).as_deref(), Some("1.5"));
    }

    #[test]
    fn assignments_name_the_key() {
        assert_eq!(knob("8").assignment(" 9 "), "strategy.0.x=9");
    }
}
