//! Serving sections of the scenario file, as written, and their validation into
//! [`crate::serving::config::ServingConfig`].
//!
//! ```toml
//! [workload]
//! mode = "serving"
//! [workload.serving]          # the request stream
//! arrival = "poisson"         # poisson | gamma | trace
//! rate_per_s = 10.0
//! duration_s = 600.0
//! prompt = { dist = "lognormal", mean = 1024, cv = 1.0 }
//! output = { dist = "fixed", tokens = 128 }
//! [serving]                   # the engine instance
//! max_batch_tokens = 8192
//! max_seqs = 256
//! [slo]
//! ttft_ms = 2000.0
//! tpot_ms = 100.0
//! [[serving.deployment]]      # a disaggregated candidate beside the co-located [[strategy]] entries
//! name = "pd"
//! [serving.deployment.prefill]
//! nodes = 1                   # per instance (or gpus = N); instances = 1 by default
//! [serving.deployment.prefill.strategy]
//! name = "prefill-ep8"
//! kind = "ep"
//! [serving.deployment.decode]
//! instances = 2
//! gpus = 4
//! [serving.deployment.decode.strategy]
//! name = "decode-ep4"
//! kind = "ep"
//! ```
//!
//! A pool's strategy is validated against the pool's instance (its GPUs, not the cluster's); its errors
//! are re-located at the pool's table by [`locate_deployment`], since the generic locator does not index
//! tables below an array of tables.

use super::file::{Mode, ScenarioFile, StrategyKind};
use super::{Resolver, ScenarioError};
use crate::serving::config::{
    Arrival, Deployment, EngineConfig, Layout, Lengths, Policy, Pool, RequestStream, ServingConfig,
    Slo,
};
use moesim_traces::requests::{MAX_REQUEST_TOKENS, RequestFormat};
use serde::{Deserialize, Serialize};

/// `[workload.serving]`: the request stream.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsSection {
    /// `poisson` (default), `gamma` or `trace`.
    pub arrival: Option<String>,
    pub rate_per_s: Option<f64>,
    /// Gamma arrivals: coefficient of variation of the inter-arrival times.
    pub cv: Option<f64>,
    pub duration_s: Option<f64>,
    pub max_requests: Option<usize>,
    pub trace: Option<String>,
    pub trace_format: Option<RequestFormat>,
    pub prompt: Option<LengthSection>,
    pub output: Option<LengthSection>,
}

/// A length distribution as written: `{ dist = "fixed", tokens = 512 }`, `{ dist = "uniform", min, max }`,
/// `{ dist = "lognormal", mean, cv, max }` or `{ dist = "trace" }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LengthSection {
    pub dist: String,
    pub tokens: Option<u64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub mean: Option<f64>,
    pub cv: Option<f64>,
}

/// `[serving]`: the engine instance.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServingSection {
    pub max_batch_tokens: Option<u64>,
    pub max_seqs: Option<usize>,
    pub block_size: Option<u64>,
    pub kv_blocks: Option<u64>,
    pub gpu_memory_utilization: Option<f64>,
    pub policy: Option<Policy>,
    pub shape_bits: Option<u32>,
    /// Whether each `[[strategy]]` is a co-located deployment on the whole cluster (default true).
    pub colocated: Option<bool>,
    /// `moesim plan`: relative tolerance of the rate search (default 0.02).
    pub capacity_tolerance: Option<f64>,
    /// Price of one GPU-hour for the capacity ranking, used when `cluster.price_per_gpu_hour` is unset.
    pub price_per_gpu_hour: Option<f64>,
    /// `[[serving.deployment]]`: disaggregated deployments.
    #[serde(default, rename = "deployment")]
    pub deployments: Vec<DeploymentSection>,
}

/// `[[serving.deployment]]`: a prefill pool and a decode pool, or one pool of co-located instances.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSection {
    pub name: String,
    pub prefill: Option<PoolSection>,
    pub decode: Option<PoolSection>,
    pub colocated: Option<PoolSection>,
}

/// `[serving.deployment.prefill]` or `.decode`: identical instances, each `nodes` whole nodes or `gpus`
/// GPUs (of one node, or whole nodes), with their strategy (`[serving.deployment.prefill.strategy]`, the
/// fields of a `[[strategy]]`) and their own engine settings where they differ from `[serving]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    pub instances: Option<usize>,
    pub nodes: Option<usize>,
    pub gpus: Option<usize>,
    pub strategy: super::file::StrategySection,
    pub max_batch_tokens: Option<u64>,
    pub max_seqs: Option<usize>,
    pub kv_blocks: Option<u64>,
    pub policy: Option<Policy>,
}

/// `[slo]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SloSection {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    /// Share of requests (in %) that must meet the targets; default 90.
    pub percentile: Option<f64>,
}

/// Largest request count of a run (about 4 million: an hour at 1000 requests/s), checked before anything
/// is drawn or read: every request keeps a record of about a hundred bytes.
pub const MAX_REQUESTS: usize = 1 << 22;

impl Resolver<'_> {
    fn positive(&self, path: &str, v: f64, what: &str) -> Result<f64, ScenarioError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.error(path, format!("must be positive and finite, got {v}"), what))
        }
    }

    fn tokens(&self, path: &str, v: u64) -> Result<u64, ScenarioError> {
        if v == 0 || v > MAX_REQUEST_TOKENS {
            return Err(self.error(
                path,
                format!("must be between 1 and {MAX_REQUEST_TOKENS} tokens, got {v}"),
                "expected a token count",
            ));
        }
        Ok(v)
    }

    fn lengths(
        &self,
        path: &str,
        l: Option<&LengthSection>,
        trace: bool,
    ) -> Result<Lengths, ScenarioError> {
        let Some(l) = l else {
            return if trace {
                Ok(Lengths::Trace)
            } else {
                Err(self
                    .error(
                        path,
                        "missing: synthetic arrivals need a length distribution",
                        "add a distribution",
                    )
                    .help(format!(
                        "e.g. {path} = {{ dist = \"fixed\", tokens = 512 }}"
                    )))
            };
        };
        let need = |f: &str, v: Option<u64>| {
            v.ok_or_else(|| {
                self.error(
                    &format!("{path}.{f}"),
                    format!("missing: dist = \"{}\" needs `{f}`", l.dist),
                    "add it",
                )
            })
        };
        let unused = |fields: &[(&str, bool)]| -> Result<(), ScenarioError> {
            if let Some((f, _)) = fields.iter().find(|(_, set)| *set) {
                return Err(self.error(
                    &format!("{path}.{f}"),
                    format!("`{f}` is not a parameter of dist = \"{}\"", l.dist),
                    "remove it",
                ));
            }
            Ok(())
        };
        match l.dist.as_str() {
            "fixed" => {
                unused(&[
                    ("min", l.min.is_some()),
                    ("max", l.max.is_some()),
                    ("mean", l.mean.is_some()),
                    ("cv", l.cv.is_some()),
                ])?;
                let t = self.tokens(&format!("{path}.tokens"), need("tokens", l.tokens)?)?;
                Ok(Lengths::Fixed { tokens: t })
            }
            "uniform" => {
                unused(&[
                    ("tokens", l.tokens.is_some()),
                    ("mean", l.mean.is_some()),
                    ("cv", l.cv.is_some()),
                ])?;
                let min = self.tokens(&format!("{path}.min"), need("min", l.min)?)?;
                let max = self.tokens(&format!("{path}.max"), need("max", l.max)?)?;
                if max < min {
                    return Err(self.error(
                        &format!("{path}.max"),
                        format!("max = {max} is below min = {min}"),
                        "expected max ≥ min",
                    ));
                }
                Ok(Lengths::Uniform { min, max })
            }
            "lognormal" => {
                unused(&[("tokens", l.tokens.is_some()), ("min", l.min.is_some())])?;
                let mean = l.mean.ok_or_else(|| {
                    self.error(
                        &format!("{path}.mean"),
                        "missing: dist = \"lognormal\" needs `mean`",
                        "add it",
                    )
                })?;
                let mean = self.positive(&format!("{path}.mean"), mean, "expected tokens")?;
                if mean > MAX_REQUEST_TOKENS as f64 {
                    return Err(self.error(
                        &format!("{path}.mean"),
                        format!("{mean} is beyond the largest length ({MAX_REQUEST_TOKENS})"),
                        "expected fewer tokens",
                    ));
                }
                let cv = l.cv.ok_or_else(|| {
                    self.error(
                        &format!("{path}.cv"),
                        "missing: dist = \"lognormal\" needs `cv`",
                        "add it",
                    )
                })?;
                if !(cv.is_finite() && (0.0..=100.0).contains(&cv)) {
                    return Err(self.error(
                        &format!("{path}.cv"),
                        format!("must be in 0..=100, got {cv}"),
                        "expected a coefficient of variation",
                    ));
                }
                let max =
                    self.tokens(&format!("{path}.max"), l.max.unwrap_or(MAX_REQUEST_TOKENS))?;
                Ok(Lengths::Lognormal { mean, cv, max })
            }
            "trace" => {
                unused(&[
                    ("tokens", l.tokens.is_some()),
                    ("min", l.min.is_some()),
                    ("max", l.max.is_some()),
                    ("mean", l.mean.is_some()),
                    ("cv", l.cv.is_some()),
                ])?;
                if !trace {
                    return Err(self.error(
                        &format!("{path}.dist"),
                        "dist = \"trace\" needs workload.serving.trace",
                        "no trace to take lengths from",
                    ));
                }
                Ok(Lengths::Trace)
            }
            other => Err(self.error(
                &format!("{path}.dist"),
                format!("unknown length distribution `{other}`"),
                "expected fixed, uniform, lognormal or trace",
            )),
        }
    }

    /// The serving settings of a `mode = "serving"` scenario (`None` for other modes, which must not set
    /// them).
    pub(super) fn serving(
        &self,
        raw: &ScenarioFile,
    ) -> Result<Option<ServingConfig>, ScenarioError> {
        let serving_mode = raw.workload.mode == Mode::Serving;
        if !serving_mode {
            for (path, set) in [
                ("workload.serving", raw.workload.serving.is_some()),
                ("serving", raw.serving.is_some()),
                ("slo", raw.slo.is_some()),
            ] {
                if set {
                    return Err(self.error(
                        path,
                        format!("`{path}` applies only to workload.mode = \"serving\""),
                        "not used in this mode",
                    ));
                }
            }
            return Ok(None);
        }
        for (i, st) in raw.strategies.iter().enumerate() {
            if !matches!(st.kind, StrategyKind::Ep | StrategyKind::EpReplicated) {
                return Err(self.error(
                    &format!("strategy[{i}].kind"),
                    "serving simulates kinds \"ep\" and \"ep-replicated\" (other kinds are not lowered for \
                     mixed prefill/decode batches yet)",
                    "not supported in serving mode",
                ));
            }
        }
        let r = raw.workload.serving.clone().unwrap_or_default();
        let p = |f: &str| format!("workload.serving.{f}");
        let arrival = match r.arrival.as_deref().unwrap_or("poisson") {
            "poisson" => {
                if r.cv.is_some() {
                    return Err(self.error(
                        &p("cv"),
                        "`cv` applies only to arrival = \"gamma\"",
                        "remove it",
                    ));
                }
                let rate = r.rate_per_s.ok_or_else(|| {
                    self.error(
                        &p("rate_per_s"),
                        "missing: Poisson arrivals need a rate",
                        "add it",
                    )
                })?;
                Arrival::Poisson {
                    rate_per_s: self.positive(
                        &p("rate_per_s"),
                        rate,
                        "expected requests per second",
                    )?,
                }
            }
            "gamma" => {
                let rate = r.rate_per_s.ok_or_else(|| {
                    self.error(
                        &p("rate_per_s"),
                        "missing: Gamma arrivals need a rate",
                        "add it",
                    )
                })?;
                let cv = r.cv.ok_or_else(|| {
                    self.error(
                        &p("cv"),
                        "missing: Gamma arrivals need the inter-arrival CV",
                        "add it",
                    )
                })?;
                if !(cv.is_finite() && (0.01..=100.0).contains(&cv)) {
                    return Err(self.error(
                        &p("cv"),
                        format!("must be in 0.01..=100, got {cv}"),
                        "expected a CV",
                    ));
                }
                Arrival::Gamma {
                    rate_per_s: self.positive(
                        &p("rate_per_s"),
                        rate,
                        "expected requests per second",
                    )?,
                    cv,
                }
            }
            "trace" => {
                if r.trace.is_none() {
                    return Err(self.error(
                        &p("arrival"),
                        "arrival = \"trace\" needs workload.serving.trace",
                        "no trace",
                    ));
                }
                for (f, set) in [
                    ("rate_per_s", r.rate_per_s.is_some()),
                    ("cv", r.cv.is_some()),
                ] {
                    if set {
                        return Err(self.error(
                            &p(f),
                            format!("`{f}` does not apply to trace arrivals"),
                            "remove it",
                        ));
                    }
                }
                Arrival::Trace
            }
            other => {
                return Err(self.error(
                    &p("arrival"),
                    format!("unknown arrival process `{other}`"),
                    "expected poisson, gamma or trace",
                ));
            }
        };
        if let Some(d) = r.duration_s {
            self.positive(&p("duration_s"), d, "expected seconds")?;
        }
        if let Some(n) = r.max_requests {
            self.count(&p("max_requests"), n, MAX_REQUESTS)?;
        }
        if arrival != Arrival::Trace {
            let rate = match arrival {
                Arrival::Poisson { rate_per_s } | Arrival::Gamma { rate_per_s, .. } => rate_per_s,
                Arrival::Trace => 0.0,
            };
            let Some(d) = r.duration_s.or(r.max_requests.map(|_| f64::INFINITY)) else {
                return Err(self.error(
                    &p("duration_s"),
                    "missing: synthetic arrivals need duration_s or max_requests",
                    "add one",
                ));
            };
            let expected = (rate * d).min(r.max_requests.map_or(f64::INFINITY, |n| n as f64));
            if expected > MAX_REQUESTS as f64 {
                return Err(self.error(
                    &p("duration_s"),
                    format!(
                        "{rate} requests/s for {d} s is about {expected:.3e} requests, over the largest run \
                         ({MAX_REQUESTS})"
                    ),
                    "expected a shorter run",
                )
                .help("lower rate_per_s or duration_s, or set max_requests"));
            }
        }
        let has_trace = r.trace.is_some();
        let prompt = self.lengths(&p("prompt"), r.prompt.as_ref(), has_trace)?;
        let output = self.lengths(&p("output"), r.output.as_ref(), has_trace)?;
        let requests = RequestStream {
            arrival,
            duration_s: r.duration_s,
            max_requests: r.max_requests,
            trace: r.trace.clone(),
            trace_format: r.trace_format,
            prompt,
            output,
        };

        let e = raw.serving.clone().unwrap_or_default();
        let q = |f: &str| format!("serving.{f}");
        let max_batch_tokens = e.max_batch_tokens.unwrap_or(8192);
        if max_batch_tokens == 0 || max_batch_tokens > 1 << 24 {
            return Err(self.error(
                &q("max_batch_tokens"),
                format!(
                    "must be between 1 and {}, got {max_batch_tokens}",
                    1u64 << 24
                ),
                "expected tokens",
            ));
        }
        let max_seqs = e.max_seqs.unwrap_or(256);
        self.count(&q("max_seqs"), max_seqs, 1 << 20)?;
        let block_size = e.block_size.unwrap_or(16);
        if block_size == 0 || block_size > 1 << 16 {
            return Err(self.error(
                &q("block_size"),
                format!("must be between 1 and 65536 tokens, got {block_size}"),
                "expected tokens per block",
            ));
        }
        if let Some(b) = e.kv_blocks
            && (b == 0 || b > 1 << 40)
        {
            return Err(self.error(
                &q("kv_blocks"),
                format!("must be between 1 and 2^40, got {b}"),
                "expected blocks",
            ));
        }
        let util = e.gpu_memory_utilization.unwrap_or(0.9);
        if !(util > 0.0 && util <= 1.0) {
            return Err(self.error(
                &q("gpu_memory_utilization"),
                format!("must be in (0, 1], got {util}"),
                "expected a fraction",
            ));
        }
        let shape_bits = e.shape_bits.unwrap_or(6);
        if shape_bits > 32 {
            return Err(self.error(
                &q("shape_bits"),
                format!("must be 0 (exact) to 32, got {shape_bits}"),
                "expected significant bits",
            ));
        }
        let engine = EngineConfig {
            max_batch_tokens,
            max_seqs,
            block_size,
            kv_blocks: e.kv_blocks,
            gpu_memory_utilization: util,
            policy: e.policy.unwrap_or_default(),
            shape_bits,
        };

        let slo = match &raw.slo {
            None => None,
            Some(s) => {
                if s.ttft_ms.is_none() && s.tpot_ms.is_none() {
                    return Err(self.error(
                        "slo",
                        "an SLO needs ttft_ms, tpot_ms or both",
                        "add a target",
                    ));
                }
                for (f, v) in [("ttft_ms", s.ttft_ms), ("tpot_ms", s.tpot_ms)] {
                    if let Some(v) = v {
                        self.positive(&format!("slo.{f}"), v, "expected milliseconds")?;
                    }
                }
                let pct = s.percentile.unwrap_or(90.0);
                if !(pct > 0.0 && pct <= 100.0) {
                    return Err(self.error(
                        "slo.percentile",
                        format!("must be in (0, 100], got {pct}"),
                        "expected a percentage",
                    ));
                }
                Some(Slo {
                    ttft_ms: s.ttft_ms,
                    tpot_ms: s.tpot_ms,
                    percentile: pct,
                })
            }
        };
        let colocated = e.colocated.unwrap_or(true);
        if !colocated && e.deployments.is_empty() {
            return Err(self.error(
                &q("colocated"),
                "colocated = false leaves no deployment to serve",
                "add a [[serving.deployment]] or remove this",
            ));
        }
        let tolerance = e.capacity_tolerance.unwrap_or(0.02);
        if !(tolerance > 0.0 && tolerance < 1.0) {
            return Err(self.error(
                &q("capacity_tolerance"),
                format!("must be in (0, 1), got {tolerance}"),
                "expected a relative tolerance",
            ));
        }
        if let Some(p) = e.price_per_gpu_hour {
            self.positive(&q("price_per_gpu_hour"), p, "expected a price per GPU-hour")?;
        }
        let deployments = self.deployments(raw, &e.deployments, &engine, &strategy_names(raw))?;
        Ok(Some(ServingConfig {
            requests,
            engine,
            slo,
            colocated,
            deployments,
            capacity_tolerance: tolerance,
            price_per_gpu_hour: e.price_per_gpu_hour,
            routing_trace: None,
        }))
    }

    /// An error at a field of `[[serving.deployment]]` number `i` (`sub`: the tables below it, `key` the
    /// field), located by [`locate_deployment`].
    fn deployment_error(
        &self,
        i: usize,
        sub: &[&str],
        key: Option<&str>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> ScenarioError {
        let mut path = format!("serving.deployment[{i}]");
        for s in sub.iter().copied().chain(key) {
            path.push('.');
            path.push_str(s);
        }
        ScenarioError::new(
            self.file,
            self.text,
            format!("invalid scenario: {path}: {}", message.into()),
        )
        .at(locate_deployment(self.text, i, sub, key), label)
    }

    /// The disaggregated deployments, each pool validated against its own instance.
    fn deployments(
        &self,
        raw: &ScenarioFile,
        sections: &[DeploymentSection],
        engine: &EngineConfig,
        strategy_names: &[String],
    ) -> Result<Vec<Deployment>, ScenarioError> {
        if sections.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.model(raw)?;
        let cluster = self.cluster(raw)?;
        let mut out: Vec<Deployment> = Vec::new();
        for (i, d) in sections.iter().enumerate() {
            if d.name.trim().is_empty() {
                return Err(self.deployment_error(
                    i,
                    &[],
                    Some("name"),
                    "must not be empty",
                    "expected a name",
                ));
            }
            if out.iter().any(|o| o.name == d.name) || strategy_names.contains(&d.name) {
                return Err(self.deployment_error(
                    i,
                    &[],
                    Some("name"),
                    format!(
                        "duplicate name `{}` (deployments and strategies share names)",
                        d.name
                    ),
                    "already used",
                ));
            }
            let layout = match (&d.prefill, &d.decode, &d.colocated) {
                (Some(p), Some(q), None) => Layout::Disaggregated {
                    prefill: self.pool(raw, i, "prefill", p, engine, &model, &cluster)?,
                    decode: self.pool(raw, i, "decode", q, engine, &model, &cluster)?,
                },
                (None, None, Some(c)) => Layout::Colocated {
                    pool: self.pool(raw, i, "colocated", c, engine, &model, &cluster)?,
                },
                _ => {
                    return Err(self
                        .deployment_error(
                            i,
                            &[],
                            None,
                            "a deployment has a prefill and a decode pool, or one colocated pool",
                            "expected [serving.deployment.prefill] and .decode, or .colocated",
                        )
                        .help("e.g. [serving.deployment.prefill] nodes = 1 … [serving.deployment.decode] nodes = 1 …"));
                }
            };
            // Every GPU of the deployment is placed on one topology (the KV transfers' routes).
            let gpus = layout.pools().iter().fold(0usize, |a, p| {
                a.saturating_add(p.instances.saturating_mul(p.gpus_per_instance()))
            });
            if gpus > super::limits::MAX_GPUS {
                return Err(self.deployment_error(
                    i,
                    &[],
                    None,
                    format!(
                        "{gpus} GPUs over its pools, more than a cluster may have ({})",
                        super::limits::MAX_GPUS
                    ),
                    "too many GPUs",
                ));
            }
            out.push(Deployment {
                name: d.name.clone(),
                layout,
            });
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn pool(
        &self,
        raw: &ScenarioFile,
        i: usize,
        role: &str,
        p: &PoolSection,
        engine: &EngineConfig,
        model: &super::model::Model,
        cluster: &super::cluster::Cluster,
    ) -> Result<Pool, ScenarioError> {
        let err = |key: &str, msg: String, label: &str| {
            self.deployment_error(i, &[role], Some(key), msg, label)
        };
        let instances = p.instances.unwrap_or(1);
        if instances == 0 || instances > MAX_INSTANCES {
            return Err(err(
                "instances",
                format!("must be between 1 and {MAX_INSTANCES}, got {instances}"),
                "expected an instance count",
            ));
        }
        let gpn = cluster.gpus_per_node;
        let (nodes, gpus_per_node) = match (p.nodes, p.gpus) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "gpus",
                    "give nodes or gpus per instance, not both".into(),
                    "remove one",
                ));
            }
            (None, None) => {
                return Err(self
                    .deployment_error(
                        i,
                        &[role],
                        None,
                        "missing: an instance's size, `nodes` (whole nodes) or `gpus`",
                        "add nodes or gpus",
                    )
                    .help(format!(
                        "e.g. nodes = 4 ({} GPUs of the cluster's nodes)",
                        4 * gpn
                    )));
            }
            (Some(n), None) => {
                if n == 0 || n > MAX_INSTANCE_NODES {
                    return Err(err(
                        "nodes",
                        format!("must be between 1 and {MAX_INSTANCE_NODES}, got {n}"),
                        "expected nodes per instance",
                    ));
                }
                (n, gpn)
            }
            (None, Some(g)) => {
                if g == 0 || (g > gpn && !g.is_multiple_of(gpn)) || g > MAX_INSTANCE_NODES * gpn {
                    return Err(err(
                        "gpus",
                        format!(
                            "{g} GPUs is not part of one node or whole nodes of {gpn} GPUs (at most {} nodes)",
                            MAX_INSTANCE_NODES
                        ),
                        "expected up to a node's GPUs or a multiple of them",
                    ));
                }
                if g <= gpn { (1, g) } else { (g / gpn, gpn) }
            }
        };
        let mut pool_cluster = cluster.clone();
        pool_cluster.nodes = nodes;
        pool_cluster.gpus_per_node = gpus_per_node;
        let kind = p.strategy.kind;
        if !matches!(kind, StrategyKind::Ep | StrategyKind::EpReplicated) {
            return Err(self.deployment_error(
                i,
                &[role, "strategy"],
                Some("kind"),
                "serving simulates kinds \"ep\" and \"ep-replicated\"",
                "not supported in serving mode",
            ));
        }
        let mut one = raw.clone();
        one.strategies = vec![p.strategy.clone()];
        let strategy = match self.strategies(&one, model, &pool_cluster) {
            Ok(mut v) => v.remove(0),
            Err(e) => {
                // Re-located at this pool's strategy: the check ran on a one-strategy copy of the file.
                let msg = e.message.trim_start_matches("invalid scenario: ");
                let (field, what) = match msg
                    .strip_prefix("strategy[0].")
                    .and_then(|m| m.split_once(": "))
                {
                    Some((f, w)) => (Some(f), w),
                    None => (None, msg),
                };
                return Err(self
                    .deployment_error(i, &[role, "strategy"], field, what, "invalid for this pool")
                    .help(format!(
                        "an instance of this pool has {} GPUs ({nodes} × {gpus_per_node})",
                        nodes * gpus_per_node
                    )));
            }
        };
        let mut e = *engine;
        if let Some(v) = p.max_batch_tokens {
            if v == 0 || v > 1 << 24 {
                return Err(err(
                    "max_batch_tokens",
                    format!("must be between 1 and {}, got {v}", 1u64 << 24),
                    "expected tokens",
                ));
            }
            e.max_batch_tokens = v;
        }
        if let Some(v) = p.max_seqs {
            if v == 0 || v > 1 << 20 {
                return Err(err(
                    "max_seqs",
                    format!("must be between 1 and {}, got {v}", 1 << 20),
                    "expected sequences",
                ));
            }
            e.max_seqs = v;
        }
        if let Some(b) = p.kv_blocks {
            if b == 0 || b > 1 << 40 {
                return Err(err(
                    "kv_blocks",
                    format!("must be between 1 and 2^40, got {b}"),
                    "expected blocks",
                ));
            }
            e.kv_blocks = Some(b);
        }
        if let Some(v) = p.policy {
            e.policy = v;
        }
        Ok(Pool {
            instances,
            nodes,
            gpus_per_node,
            strategy,
            engine: e,
        })
    }
}

/// Most instances in a pool.
pub const MAX_INSTANCES: usize = 1024;
/// Most nodes one instance spans.
pub const MAX_INSTANCE_NODES: usize = 1024;

fn strategy_names(raw: &ScenarioFile) -> Vec<String> {
    raw.strategies.iter().map(|s| s.name.clone()).collect()
}

/// Where a field of `[[serving.deployment]]` number `i` is written: the field's value in the table
/// `serving.deployment.<sub…>` of that entry (a `[serving.deployment.prefill]` header or an inline
/// `prefill = { … }` table), else that table's line, else the entry's header. ([`super::locate`]
/// indexes only arrays of tables whose own keys hold the field.)
pub fn locate_deployment(
    text: &str,
    i: usize,
    sub: &[&str],
    key: Option<&str>,
) -> Option<std::ops::Range<usize>> {
    let root = "serving.deployment";
    let mut seen = 0usize;
    let mut inside = false;
    let mut current: Vec<String> = Vec::new();
    let mut entry: Option<std::ops::Range<usize>> = None;
    let mut table: Option<std::ops::Range<usize>> = None;
    let mut offset = 0;
    let want: Vec<String> = sub.iter().map(|s| s.to_string()).collect();
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim();
        let lead = line.len() - line.trim_start().len();
        let whole = start + lead..start + line.trim_end().len();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
        {
            if name.trim() == root {
                inside = seen == i;
                seen += 1;
                current.clear();
                if inside {
                    entry = Some(whole);
                }
            } else {
                inside = false;
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
            let name = name.trim();
            match name.strip_prefix(root).and_then(|r| r.strip_prefix('.')) {
                Some(rest) if inside || seen == i + 1 => {
                    inside = seen == i + 1;
                    current = rest.split('.').map(|s| s.trim().to_string()).collect();
                    if inside && current == want && table.is_none() {
                        table = Some(whole.clone());
                    }
                }
                _ => inside = false,
            }
            continue;
        }
        if !inside {
            continue;
        }
        let Some((k, v)) = trimmed.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let mut path = current.clone();
        path.push(k.to_string());
        // `prefill = { … }` (or `strategy = { … }` inside `[serving.deployment.prefill]`): an inline table
        // holding the wanted table, or the wanted table itself.
        if v.trim_start().starts_with('{') && want.starts_with(&path) {
            if table.is_none() {
                table = Some(whole.clone());
            }
            if let Some(key) = key
                && want.len() == path.len()
                && let Some(at) = find_key(line, key)
            {
                return Some(start + at.start..start + at.end);
            }
            continue;
        }
        if current == want && Some(k) == key {
            let value = line.find('=').map_or(lead, |p| p + 1);
            let value = value + (line[value..].len() - line[value..].trim_start().len());
            return Some(start + value..start + line.trim_end().len().max(value));
        }
    }
    table.or(entry)
}

/// The span of `key = value` inside an inline table on `line` (up to the next `,` or `}`).
fn find_key(line: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut from = 0;
    while let Some(p) = line[from..].find(key) {
        let at = from + p;
        from = at + key.len();
        let before = line[..at].trim_end();
        if !(before.ends_with('{') || before.ends_with(',')) {
            continue;
        }
        let after = line[from..].trim_start();
        if !after.starts_with('=') {
            continue;
        }
        let end = line[from..]
            .find([',', '}'])
            .map_or(line.trim_end().len(), |e| from + e);
        return Some(at..end);
    }
    None
}
