//! Sweeps: a grid of scenario variants, split into shards that run anywhere (Slurm array tasks, Kubernetes
//! Indexed Job pods), then merged into one result set.
//!
//! A sweep file names scenarios and a grid of `--set` overrides:
//!
//! ```toml
//! name = "nodes-and-skew"
//! scenarios = ["../scenarios/quickstart.toml"]   # relative to the sweep file
//! seed_per_point = false                          # true: point i gets seed derive(seed, i)
//! [grid]
//! "cluster.nodes" = [1, 2, 4]
//! "workload.skew.s" = [0.6, 0.9]
//! ```
//!
//! Points are numbered deterministically: scenarios in order, then the grid's keys sorted by name with the
//! last key varying fastest. Shard `i` of `n` runs the points whose number is `i` modulo `n` (round-robin,
//! so expensive corners of the grid spread over shards). Every point is a pure function of its scenario
//! text and overrides, so a merged set equals the unsharded run exactly.

use crate::inputs::{InputError, Inputs};
use moesim_sim::plan::choose;
use moesim_sim::result::SimulationReport;
use moesim_sim::runner::RunOptions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A parsed sweep file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    #[serde(default = "default_name")]
    pub name: String,
    pub scenarios: Vec<String>,
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    pub seed_per_point: bool,
    /// Base of the per-point seeds.
    #[serde(default)]
    pub seed: u64,
}

fn default_name() -> String {
    "sweep".into()
}

/// One point of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointSpec {
    pub index: usize,
    /// The scenario path as written in the sweep file.
    pub scenario: String,
    pub overrides: Vec<String>,
}

/// A simulated point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPoint {
    pub index: usize,
    pub scenario: String,
    pub overrides: Vec<String>,
    pub report: SimulationReport,
}

/// What one shard writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepShard {
    pub sweep: String,
    pub total_points: usize,
    pub shard_index: usize,
    pub shard_count: usize,
    pub points: Vec<SweepPoint>,
}

/// Every point of a sweep, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepResult {
    pub sweep: String,
    pub total_points: usize,
    pub shard_count: usize,
    pub points: Vec<SweepPoint>,
}

/// Parses a sweep file's text (`file` names it in errors).
pub fn parse_sweep(file: &str, text: &str) -> Result<SweepSpec, String> {
    let spec: SweepSpec = toml::from_str(text)
        .map_err(|e| format!("{file}: invalid sweep: {}", e.message().trim()))?;
    if spec.scenarios.is_empty() {
        return Err(format!("{file}: invalid sweep: `scenarios` is empty"));
    }
    if let Some((k, _)) = spec.grid.iter().find(|(_, v)| v.is_empty()) {
        return Err(format!("{file}: invalid sweep: grid.\"{k}\" has no values"));
    }
    Ok(spec)
}

impl SweepSpec {
    /// Every point, numbered.
    pub fn points(&self) -> Vec<PointSpec> {
        let keys: Vec<(&String, &Vec<toml::Value>)> = self.grid.iter().collect();
        let combos: usize = keys.iter().map(|(_, v)| v.len()).product();
        let mut out = Vec::new();
        for scenario in &self.scenarios {
            for c in 0..combos {
                // Mixed-radix digits of c, last key fastest.
                let mut rest = c;
                let mut overrides = vec![String::new(); keys.len()];
                for (k, (key, values)) in keys.iter().enumerate().rev() {
                    overrides[k] = format!("{key}={}", values[rest % values.len()]);
                    rest /= values.len();
                }
                let index = out.len();
                if self.seed_per_point {
                    let seed = moesim_traces::rng::derive_seed(self.seed, &[index as u64]) >> 1;
                    overrides.push(format!("seed={seed}"));
                }
                out.push(PointSpec {
                    index,
                    scenario: scenario.clone(),
                    overrides,
                });
            }
        }
        out
    }
}

/// The points shard `index` of `count` runs.
pub fn shard(points: &[PointSpec], index: usize, count: usize) -> Vec<PointSpec> {
    points
        .iter()
        .filter(|p| count > 0 && p.index % count == index)
        .cloned()
        .collect()
}

/// Simulates one point through the input pipeline: `file` is its scenario file (the sweep's `scenario`
/// path resolved against the sweep file's folder; traces and profiles are relative to it) and `text` its
/// text, so a point replays the scenario's trace and uses its cost profile as `moesim plan` does.
pub fn run_point(
    point: &PointSpec,
    file: &Path,
    text: &str,
    progress: Option<&(dyn Fn() + Sync)>,
) -> Result<SweepPoint, InputError> {
    let inputs = Inputs::resolve(file, text.to_string(), point.overrides.clone(), None)?;
    let mut report = inputs.simulate(RunOptions {
        timing: false,
        progress,
    })?;
    report.chosen = choose(&report, &inputs.scenario).map(|i| report.results[i].strategy.clone());
    Ok(SweepPoint {
        index: point.index,
        scenario: point.scenario.clone(),
        overrides: point.overrides.clone(),
        report,
    })
}

/// Combines the shards of one sweep; every shard must be there once, and every point once.
pub fn merge(mut shards: Vec<SweepShard>) -> Result<SweepResult, String> {
    let first = shards.first().ok_or("no shard files to merge")?;
    let (sweep, total, count) = (first.sweep.clone(), first.total_points, first.shard_count);
    shards.sort_by_key(|s| s.shard_index);
    for s in &shards {
        if (s.sweep.as_str(), s.total_points, s.shard_count) != (sweep.as_str(), total, count) {
            return Err(format!(
                "shard {} belongs to sweep `{}` ({} points, {} shards), not `{sweep}` ({total} points, {count} shards)",
                s.shard_index, s.sweep, s.total_points, s.shard_count
            ));
        }
    }
    let have: Vec<usize> = shards.iter().map(|s| s.shard_index).collect();
    if have.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!(
            "duplicate shards: got shard indices {have:?} for {count} shards"
        ));
    }
    // At most ten named: the count comes from the files (`--shard-count` may have been absurd).
    let missing: Vec<String> = (0..count)
        .filter(|i| !have.contains(i))
        .take(10)
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() || have.len() != count {
        return Err(format!(
            "missing shards {} of {count} (got {have:?})",
            missing.join(", ")
        ));
    }
    let mut points: Vec<SweepPoint> = shards.into_iter().flat_map(|s| s.points).collect();
    points.sort_by_key(|p| p.index);
    if points.iter().map(|p| p.index).ne(0..total) {
        return Err(format!(
            "the shards hold {} points, not each of the sweep's {total} once",
            points.len()
        ));
    }
    Ok(SweepResult {
        sweep,
        total_points: total,
        shard_count: count,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
[model]
preset = "olmoe-1b-7b"
layers = 2
seq_len = 256
[cluster]
preset = "dgx-h100"
[workload]
iterations = 2
skew = { distribution = "zipf", s = 0.5 }
[[strategy]]
name = "ep8"
kind = "ep"
"#;

    const SWEEP: &str = r#"
name = "t"
scenarios = ["a.toml"]
[grid]
"workload.skew.s" = [0.5, 1.0]
"cluster.nodes" = [1, 2, 4]
"#;

    #[test]
    fn grid_expands_in_a_fixed_order() {
        let spec = parse_sweep("s.toml", SWEEP).unwrap();
        let p = spec.points();
        assert_eq!(p.len(), 6);
        assert_eq!(
            p[0].overrides,
            vec!["cluster.nodes=1", "workload.skew.s=0.5"]
        );
        assert_eq!(
            p[1].overrides,
            vec!["cluster.nodes=1", "workload.skew.s=1.0"]
        );
        assert_eq!(
            p[5].overrides,
            vec!["cluster.nodes=4", "workload.skew.s=1.0"]
        );
        assert!(p.iter().enumerate().all(|(i, x)| x.index == i));
        let shards: Vec<Vec<PointSpec>> = (0..4).map(|i| shard(&p, i, 4)).collect();
        assert_eq!(shards.iter().map(Vec::len).sum::<usize>(), 6);
        assert_eq!(
            shards[1].iter().map(|x| x.index).collect::<Vec<_>>(),
            vec![1, 5]
        );
    }

    #[test]
    fn per_point_seeds_differ_and_are_stable() {
        let spec = parse_sweep(
            "s.toml",
            &SWEEP.replace(
                "name = \"t\"",
                "name = \"t\"\nseed_per_point = true\nseed = 9",
            ),
        )
        .unwrap();
        let a = spec.points();
        assert_eq!(a, spec.points());
        let seeds: std::collections::BTreeSet<&String> =
            a.iter().map(|p| p.overrides.last().unwrap()).collect();
        assert_eq!(seeds.len(), 6);
        assert!(
            a.iter()
                .all(|p| p.overrides.last().unwrap().starts_with("seed="))
        );
    }

    #[test]
    fn merged_shards_equal_the_unsharded_run() {
        let spec = parse_sweep("s.toml", SWEEP).unwrap();
        let points = spec.points();
        let run = |index, count| SweepShard {
            sweep: spec.name.clone(),
            total_points: points.len(),
            shard_index: index,
            shard_count: count,
            points: shard(&points, index, count)
                .iter()
                .map(|p| run_point(p, Path::new(&p.scenario), SCENARIO, None).unwrap())
                .collect(),
        };
        let whole = merge(vec![run(0, 1)]).unwrap();
        let merged = merge(vec![run(2, 3), run(0, 3), run(1, 3)]).unwrap();
        assert_eq!(
            serde_json::to_string(&whole.points).unwrap(),
            serde_json::to_string(&merged.points).unwrap()
        );
        assert_eq!(merged.points.len(), 6);
        // Points really differ: more nodes, more tokens per iteration.
        assert!(
            merged.points[4].report.results[0].tokens_per_s
                > merged.points[0].report.results[0].tokens_per_s
        );
    }

    #[test]
    fn merge_refuses_incomplete_or_mixed_shards() {
        let mk = |sweep: &str, index, count, total| SweepShard {
            sweep: sweep.into(),
            total_points: total,
            shard_index: index,
            shard_count: count,
            points: vec![],
        };
        assert!(merge(vec![]).is_err());
        assert!(
            merge(vec![mk("a", 0, 2, 0)])
                .unwrap_err()
                .contains("missing shards 1")
        );
        assert!(
            merge(vec![mk("a", 0, 2, 0), mk("b", 1, 2, 0)])
                .unwrap_err()
                .contains("belongs")
        );
        assert!(
            merge(vec![mk("a", 0, 2, 0), mk("a", 0, 2, 0)])
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(
            merge(vec![mk("a", 0, 1, 3)])
                .unwrap_err()
                .contains("not each")
        );
        assert!(merge(vec![mk("a", 0, 1, 0)]).is_ok());
    }

    #[test]
    fn bad_sweep_files_are_named_in_errors() {
        assert!(
            parse_sweep("s.toml", "scenarios = []")
                .unwrap_err()
                .contains("s.toml")
        );
        assert!(
            parse_sweep("s.toml", "scenarios = [\"a\"]\n[grid]\nx = []")
                .unwrap_err()
                .contains("grid")
        );
        assert!(parse_sweep("s.toml", "scenario = [\"a\"]").is_err());
    }
}
