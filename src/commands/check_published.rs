//! `moesim check-published`: moesim against measurements of real systems that others published.
//!
//! `validation/*.toml` holds one file per source: what the source is, and its cases. A case names the
//! published value with its unit, how that value becomes a moesim figure (`conversion`), and the setup
//! moesim computes the figure from: a GEMM on a cluster preset's GPU (priced by the cost model), an
//! all-to-all of a benchmark's routing on a cluster preset's topology (priced by the collectives every
//! strategy uses), one engine step of a serving scenario's pool (priced as the serving simulation prices
//! it), or a whole scenario file under `validation/scenarios/` (simulated as `simulate` does).
//! The command prints every case with its error, the median |error| over all cases and per source.

use miette::{IntoDiagnostic, WrapErr, miette};
use moesim_calibrate::CostModel;
use moesim_reports::inputs::Inputs;
use moesim_sim::collective::{AllToAllScratch, Collectives};
use moesim_sim::engine::Stream;
use moesim_sim::network::NetworkKind;
use moesim_sim::runner::RunOptions;
use moesim_sim::scenario::cluster::{Cluster, cluster_preset};
use moesim_sim::topology::Topology;
use rayon::prelude::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckPublishedArgs {
    /// The validation directory (one TOML file per source).
    #[arg(default_value = "validation")]
    pub dir: PathBuf,
    /// Print the table as Markdown (what the README's Accuracy section shows).
    #[arg(long)]
    pub markdown: bool,
}

/// One source's file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    source: Source,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    /// Short name for the table.
    name: String,
    /// Repository + file (with commit) or paper + table.
    citation: String,
    /// The hardware the measurements were made on.
    hardware: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    published: f64,
    unit: String,
    /// How the published value was turned into the moesim figure it is compared with.
    conversion: String,
    /// Model constants this case's source also supplied (so the case is not an independent check of them).
    #[serde(default)]
    informs: Option<String>,
    /// Why the case is off, where it is.
    #[serde(default)]
    note: Option<String>,
    setup: Setup,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum Setup {
    /// `groups` GEMMs of `[m × k] · [k × n]` on the GPU of `cluster`: achieved TFLOP/s.
    Gemm {
        cluster: String,
        m: u64,
        n: u64,
        k: u64,
        #[serde(default = "one")]
        groups: u64,
        dtype_bytes: u32,
    },
    /// An expert-parallel all-to-all as a benchmark runs it: `tokens` per rank, each routed to `top_k` of
    /// `experts` experts (spread evenly over the ranks) drawn uniformly at random, optionally limited to
    /// `max_nodes` nodes per token (the nodes chosen uniformly first); `hidden` elements per token of
    /// `payload` (`fp8-scaled`: one byte each plus a 4-byte scale per 128 elements; `bf16`: two bytes).
    AllToAll {
        cluster: String,
        nodes: usize,
        tokens: usize,
        hidden: u64,
        top_k: usize,
        experts: usize,
        #[serde(default)]
        max_nodes: Option<usize>,
        payload: Payload,
        /// `direct`: every (token, expert) copy to its GPU (DeepEP's low-latency kernels);
        /// `hierarchical`: one copy per destination node over the NIC, forwarded over NVLink, deduplicated
        /// per GPU (DeepEP's normal kernels).
        algorithm: A2a,
        metric: A2aMetric,
    },
    /// One engine step of a serving deployment's pool (a serving scenario under `validation/scenarios/`),
    /// priced as the serving simulation prices it (`StepCost`): `decode_seqs_per_gpu` sequences on every
    /// GPU of one instance decode one token each, every one reading a `context`-token KV cache, and
    /// `prefill_tokens_per_gpu` prompt tokens (fresh prompts of `prompt` tokens) prefill beside them.
    ServingStep {
        file: PathBuf,
        deployment: String,
        pool: ServingPool,
        #[serde(default)]
        decode_seqs_per_gpu: u64,
        #[serde(default)]
        context: u64,
        #[serde(default)]
        prefill_tokens_per_gpu: u64,
        #[serde(default)]
        prompt: u64,
        metric: StepMetric,
    },
    /// A scenario under `validation/scenarios/`, simulated; `metric` of strategy `strategy`.
    Scenario {
        file: PathBuf,
        strategy: String,
        #[serde(default)]
        set: Vec<String>,
        metric: ScenarioMetric,
    },
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Payload {
    Fp8Scaled,
    Bf16,
}

impl Payload {
    fn token_bytes(self, hidden: u64) -> f64 {
        match self {
            Payload::Fp8Scaled => moesim_sim::scenario::model::fp8_scaled_bytes(hidden) as f64,
            Payload::Bf16 => 2.0 * hidden as f64,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum A2a {
    Direct,
    Hierarchical,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum A2aMetric {
    /// The collective's time (its slowest rank), microseconds.
    LatencyUs,
    /// DeepEP's "bottleneck bandwidth": per rank, the logical bytes it sends to other nodes' RDMA
    /// buffers (one copy per (token, destination node), its own node included) across nodes, or the bytes
    /// it receives over NVLink (one copy per (token, GPU)) inside one node, over the collective's time; GB/s.
    BottleneckGbytesPerS,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ServingPool {
    Prefill,
    Decode,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StepMetric {
    /// The step's time, milliseconds (a decode step: the time per output token).
    StepMs,
    /// Decoded tokens per second per node: sequences × GPUs per node / step.
    OutputTokensPerSPerNode,
    /// Prefilled tokens per second per node.
    InputTokensPerSPerNode,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ScenarioMetric {
    TokensPerS,
    TokensPerSPerGpu,
    /// The mean step (iteration) time in seconds, as training logs print it.
    StepS,
}

/// One evaluated case.
struct Row {
    source: String,
    case: String,
    unit: String,
    published: f64,
    predicted: f64,
    note: String,
}

impl Row {
    fn error(&self) -> f64 {
        (self.predicted - self.published) / self.published
    }
}

pub fn run(args: &CheckPublishedArgs) -> miette::Result<ExitCode> {
    let rows = evaluate(&args.dir)?;
    print!("{}", table(&rows, args.markdown));
    Ok(ExitCode::SUCCESS)
}

/// Every case of every source file in `dir`, evaluated, in file then case order.
fn evaluate(dir: &Path) -> miette::Result<Vec<Row>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read the validation directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read {}", file.display()))?;
        let parsed: SourceFile =
            toml::from_str(&text).map_err(|e| miette!("{}: {e}", file.display()))?;
        let figures: Vec<miette::Result<f64>> = parsed
            .cases
            .par_iter()
            .map(|case| {
                figure(dir, &case.setup)
                    .wrap_err_with(|| format!("{}: case `{}`", file.display(), case.name))
            })
            .collect();
        for (case, predicted) in parsed.cases.into_iter().zip(figures) {
            let predicted = predicted?;
            let mut note = case.note.clone().unwrap_or_default();
            if let Some(i) = &case.informs {
                if !note.is_empty() {
                    note.push(' ');
                }
                note.push_str(&format!("(informs {i})"));
            }
            let _ = (
                &case.conversion,
                &parsed.source.citation,
                &parsed.source.hardware,
            );
            rows.push(Row {
                source: parsed.source.name.clone(),
                case: case.name,
                unit: case.unit,
                published: case.published,
                predicted,
                note,
            });
        }
    }
    Ok(rows)
}

fn cluster(name: &str, nodes: usize) -> miette::Result<Cluster> {
    let mut c = cluster_preset(name).ok_or_else(|| miette!("unknown cluster preset `{name}`"))?;
    c.nodes = nodes;
    Ok(c)
}

/// The moesim figure of one setup.
fn figure(dir: &Path, setup: &Setup) -> miette::Result<f64> {
    match setup {
        Setup::Gemm {
            cluster: name,
            m,
            n,
            k,
            groups,
            dtype_bytes,
        } => {
            let c = cluster(name, 1)?;
            let cost = c.roofline();
            let tokens = vec![*m as u32; *groups as usize];
            let secs = cost.grouped_gemm_s(&tokens, *n, *k, *dtype_bytes);
            Ok(2.0 * (*groups * m * n * k) as f64 / secs / 1e12)
        }
        Setup::AllToAll {
            cluster: name,
            nodes,
            tokens,
            hidden,
            top_k,
            experts,
            max_nodes,
            payload,
            algorithm,
            metric,
        } => {
            let c = cluster(name, *nodes)?;
            let bench = A2aBench {
                cluster: &c,
                tokens: *tokens,
                top_k: *top_k,
                experts: *experts,
                max_nodes: max_nodes.unwrap_or(*nodes),
                token_bytes: payload.token_bytes(*hidden),
            };
            Ok(bench.figure(*algorithm, *metric))
        }
        Setup::ServingStep {
            file,
            deployment,
            pool,
            decode_seqs_per_gpu,
            context,
            prefill_tokens_per_gpu,
            prompt,
            metric,
        } => {
            let path = dir.join(file);
            let inputs = Inputs::read(&path, Vec::new(), None).map_err(|e| miette!("{e:?}"))?;
            let s = &inputs.scenario;
            let d = moesim_sim::serving::deployments(s)
                .into_iter()
                .find(|d| d.name == *deployment)
                .ok_or_else(|| miette!("{}: no deployment `{deployment}`", path.display()))?;
            let pools = d.layout.pools();
            let chosen = match (pool, pools.as_slice()) {
                (ServingPool::Prefill, [p, _]) | (ServingPool::Decode, [_, p]) => *p,
                _ => {
                    return Err(miette!(
                        "{}: deployment `{deployment}` is not disaggregated (no {pool:?} pool)",
                        path.display()
                    ));
                }
            };
            let ps = moesim_sim::serving::deployment::pool_scenario(s, chosen);
            let topo = Topology::build(&ps.cluster);
            let cost = ps.cluster.roofline();
            let gpus = ps.cluster.gpus() as u64;
            let mut batch = moesim_sim::serving::step_cost::Batch::default();
            for _ in 0..decode_seqs_per_gpu * gpus {
                batch.add_decode(*context);
            }
            let prompts = if *prompt > 0 {
                prefill_tokens_per_gpu * gpus / prompt
            } else {
                0
            };
            for _ in 0..prompts {
                batch.add_prefill(0, *prompt);
            }
            let mut step = moesim_sim::serving::step_cost::StepCost::new(
                &ps,
                &ps.strategies[0],
                &topo,
                &cost,
                0,
            );
            let secs = step.seconds(&batch);
            let per_node = ps.cluster.gpus_per_node as f64;
            Ok(match metric {
                StepMetric::StepMs => secs * 1e3,
                StepMetric::OutputTokensPerSPerNode => {
                    *decode_seqs_per_gpu as f64 * per_node / secs
                }
                StepMetric::InputTokensPerSPerNode => {
                    (prompts * prompt) as f64 / gpus as f64 * per_node / secs
                }
            })
        }
        Setup::Scenario {
            file,
            strategy,
            set,
            metric,
        } => {
            let path = dir.join(file);
            let inputs = Inputs::read(&path, set.clone(), None).map_err(|e| miette!("{e:?}"))?;
            let report = inputs
                .simulate(RunOptions {
                    timing: false,
                    progress: None,
                })
                .map_err(|e| miette!("{e:?}"))?;
            let r = report
                .results
                .iter()
                .find(|r| r.strategy == *strategy)
                .ok_or_else(|| miette!("{}: no strategy `{strategy}`", path.display()))?;
            Ok(match metric {
                ScenarioMetric::TokensPerS => r.tokens_per_s,
                ScenarioMetric::TokensPerSPerGpu => {
                    r.tokens_per_s / inputs.scenario.cluster.gpus() as f64
                }
                ScenarioMetric::StepS => r.step_time_ms.mean / 1e3,
            })
        }
    }
}

/// An all-to-all benchmark: every rank routes its tokens at random, as DeepEP's tests do.
struct A2aBench<'c> {
    cluster: &'c Cluster,
    tokens: usize,
    top_k: usize,
    experts: usize,
    max_nodes: usize,
    token_bytes: f64,
}

impl A2aBench<'_> {
    /// Per source rank: (token, expert) copies per destination GPU, distinct tokens per destination GPU,
    /// distinct tokens per destination node.
    fn routing(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let c = self.cluster;
        let g = c.gpus();
        let per_node = c.gpus_per_node;
        let nodes = c.nodes;
        let per_gpu = self.experts / g;
        let mut copies = vec![0.0; g * g];
        let mut to_gpu = vec![0.0; g * g];
        let mut to_node = vec![0.0; g * nodes];
        let mut rng = SplitMix(0x6d6f_6573_696d);
        let experts_per_node = per_gpu * per_node;
        let every: Vec<usize> = (0..nodes).collect();
        let (mut gpus, mut hit_nodes) = (Vec::new(), Vec::new());
        for src in 0..g {
            for _ in 0..self.tokens {
                // The nodes this token may use (all of them without a limit), then top-k experts among
                // those nodes' experts, uniformly without replacement.
                let allowed = if self.max_nodes >= nodes {
                    every.clone()
                } else {
                    rng.sample(nodes, self.max_nodes)
                };
                let candidates = allowed.len() * experts_per_node;
                gpus.clear();
                hit_nodes.clear();
                for p in rng.sample(candidates, self.top_k) {
                    let node = allowed[p / experts_per_node];
                    let gpu = node * per_node + (p % experts_per_node) / per_gpu;
                    copies[src * g + gpu] += 1.0;
                    if !gpus.contains(&gpu) {
                        gpus.push(gpu);
                    }
                    if !hit_nodes.contains(&node) {
                        hit_nodes.push(node);
                    }
                }
                for &j in &gpus {
                    to_gpu[src * g + j] += 1.0;
                }
                for &n in &hit_nodes {
                    to_node[src * nodes + n] += 1.0;
                }
            }
        }
        (copies, to_gpu, to_node)
    }

    fn figure(&self, algorithm: A2a, metric: A2aMetric) -> f64 {
        let c = self.cluster;
        let g = c.gpus();
        let topo = Topology::build(c);
        let comms = Collectives::new(&topo, NetworkKind::Analytic);
        let ranks: Vec<usize> = (0..g).collect();
        let (copies, to_gpu, to_node) = self.routing();
        let b = self.token_bytes;
        let mut scratch = AllToAllScratch::default();
        let outcome = match algorithm {
            A2a::Direct => {
                let bytes: Vec<f64> = copies.iter().map(|x| x * b).collect();
                comms
                    .all_to_all(&ranks, &bytes, Stream::Comm, &mut scratch)
                    .1
            }
            A2a::Hierarchical => {
                let gpu_bytes: Vec<f64> = to_gpu.iter().map(|x| x * b).collect();
                // The collective reads a node's entry at its first participant's column.
                let mut node_bytes = vec![0.0; g * g];
                for i in 0..g {
                    for j in 0..g {
                        node_bytes[i * g + j] = to_node[i * c.nodes + topo.node_of(j)] * b;
                    }
                }
                comms
                    .hierarchical_all_to_all(
                        &ranks,
                        &gpu_bytes,
                        &node_bytes,
                        Stream::Comm,
                        &mut scratch,
                    )
                    .1
            }
        };
        let time = outcome
            .per_rank
            .iter()
            .map(|t| t.time_s)
            .fold(0.0, f64::max);
        match metric {
            A2aMetric::LatencyUs => time * 1e6,
            A2aMetric::BottleneckGbytesPerS => {
                let logical = if c.nodes > 1 {
                    to_node.iter().sum::<f64>()
                } else {
                    to_gpu.iter().sum::<f64>()
                };
                logical * b / g as f64 / time / 1e9
            }
        }
    }
}

/// A small seeded generator (SplitMix64): the benchmark's random routing, the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `k` distinct values of `0..n`, uniformly (partial Fisher–Yates by rejection; k ≪ n or n small).
    fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::with_capacity(k);
        while out.len() < k {
            let v = (self.next() % n as u64) as usize;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn number(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The table, the median |error| and each source's median |error|.
fn table(rows: &[Row], markdown: bool) -> String {
    let mut out = String::new();
    let abs = |r: &Row| r.error().abs();
    if markdown {
        out.push_str("| source | case | published | moesim | unit | error | note |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        for r in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:+.0} % | {} |\n",
                r.source,
                r.case,
                number(r.published),
                number(r.predicted),
                r.unit,
                100.0 * r.error(),
                r.note
            ));
        }
        out.push('\n');
    } else {
        let width = |f: fn(&Row) -> &str, min: usize| {
            rows.iter()
                .map(|r| f(r).chars().count())
                .max()
                .unwrap_or(min)
                .max(min)
        };
        let w = width(|r| &r.case, 4);
        let sw = width(|r| &r.source, 6);
        out.push_str(&format!(
            "{:<sw$} {:<w$} {:>10} {:>10} {:<12} {:>7}\n",
            "source", "case", "published", "moesim", "unit", "error"
        ));
        for r in rows {
            out.push_str(&format!(
                "{:<sw$} {:<w$} {:>10} {:>10} {:<12} {:>+6.0}%\n",
                r.source,
                r.case,
                number(r.published),
                number(r.predicted),
                r.unit,
                100.0 * r.error()
            ));
        }
        out.push('\n');
    }
    let all = median(rows.iter().map(abs).collect());
    out.push_str(&format!(
        "median |error| over {} cases: {:.1} %\n",
        rows.len(),
        100.0 * all
    ));
    let mut sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    sources.dedup();
    for s in sources {
        let errs: Vec<f64> = rows.iter().filter(|r| r.source == s).map(abs).collect();
        let n = errs.len();
        out.push_str(&format!(
            "  {s}: median |error| {:.1} % over {n} cases\n",
            100.0 * median(errs)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_distinct_and_in_range() {
        let mut r = SplitMix(1);
        for _ in 0..100 {
            let s = r.sample(16, 8);
            assert_eq!(s.len(), 8);
            assert!(s.iter().all(|&v| v < 16));
            let mut d = s.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 8);
        }
    }

    #[test]
    fn a_direct_all_to_all_on_the_nic_takes_its_bytes_over_the_achievable_rate() {
        // 2 nodes of 8 GPUs, 1 expert per GPU on the other node only: every copy crosses a NIC.
        let c = cluster("hgx-h800", 2).unwrap();
        let bench = A2aBench {
            cluster: &c,
            tokens: 64,
            top_k: 1,
            experts: 16,
            max_nodes: 2,
            token_bytes: 7392.0,
        };
        let t = bench.figure(A2a::Direct, A2aMetric::LatencyUs);
        // The slowest NIC carries at most all 64 tokens' copies that leave its node; at least 1/2 of them
        // on average. Bounded by the achievable 40 GB/s plus the route latency.
        let nic = 50e9 * moesim_calibrate::datasheet::NIC_ACHIEVABLE_FRACTION;
        assert!(t * 1e-6 >= 32.0 * 7392.0 / nic);
        assert!(t * 1e-6 <= 64.0 * 7392.0 / nic + 20e-6);
    }
}
