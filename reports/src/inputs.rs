//! The one input pipeline: a scenario file, its `--set` overrides, its routing workload (synthetic, or a
//! trace replayed), per-token routing for offloading strategies, and its cost model (`cluster.profile`, or
//! the cluster's datasheet roofline), resolved once into [`Inputs`].
//!
//! `moesim simulate`, `plan`, `report`, `sweep`, the capacity curve and the terminal explorer all start
//! from [`Inputs::resolve`] (or [`Inputs::read`]) and simulate with [`Inputs::simulate`], so one scenario
//! gives the same numbers everywhere. This is the only module of the crate that reads files: the scenario
//! (with `read`), the trace it names and the profile it names.
//!
//! ```
//! use moesim_reports::inputs::Inputs;
//! use moesim_sim::runner::RunOptions;
//! let text = "[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\nseq_len = 256\n[cluster]\npreset = \"dgx-h100\"\n\
//!             [workload]\niterations = 2\n[[strategy]]\nname = \"ep8\"\nkind = \"ep\"\n";
//! let inputs = Inputs::resolve("doc.toml".as_ref(), text.into(), vec!["cluster.nodes=2".into()], None).unwrap();
//! assert_eq!(inputs.scenario.cluster.gpus(), 16);
//! let report = inputs.simulate(RunOptions { timing: false, progress: None }).unwrap();
//! assert_eq!(report.results.len(), 1);
//! ```

use moesim_calibrate::profile::ProfileError;
use moesim_calibrate::{CostModel, MeasuredCost, Profile, profiles};
use moesim_sim::Scenario;
use moesim_sim::result::SimulationReport;
use moesim_sim::runner::{RunOptions, simulate_scenario_with_tokens, synthetic_routing};
use moesim_sim::scenario::file::StrategyKind;
use moesim_sim::scenario::locate::locate;
use moesim_sim::scenario::{ScenarioError, parse_scenario};
use moesim_sim::serving::{ServingReport, simulate_serving};
use moesim_sim::strategy::offload::tokens::TokenRouting;
use moesim_traces::import::{Format, ImportOptions, import};
use moesim_traces::native::read_native_prefix;
use moesim_traces::replay::tokens_used;
use moesim_traces::requests::{RequestTrace, read_requests};
use moesim_traces::{RoutingSource, Trace, TraceRouting};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a scenario's inputs could not be resolved. Every variant names the file and what to do.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum InputError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The scenario is invalid, or names a trace that is missing (pointing at `workload.trace`).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Scenario(#[from] ScenarioError),
    /// A trace exists but cannot be read, or does not fit the scenario.
    #[error("{0}")]
    Trace(String),
    #[error("{scenario}: cluster.profile: {source}")]
    Profile {
        scenario: String,
        source: ProfileError,
    },
    /// The simulation refused the inputs (per-token routing that does not fit the model).
    #[error("{0}")]
    Simulation(String),
}

/// A scenario with everything it needs, resolved once.
pub struct Inputs {
    /// The scenario file as named (errors and reports show it; traces and profiles are relative to it).
    pub file: PathBuf,
    /// The file's text.
    pub text: String,
    /// `--set KEY=VALUE` overrides applied to it.
    pub overrides: Vec<String>,
    /// The validated scenario (presets merged, overrides applied).
    pub scenario: Scenario,
    /// The trace replayed: `--trace`, else `workload.trace` relative to the scenario file.
    pub trace_path: Option<PathBuf>,
    /// That trace, read once: a native trace longer than the run keeps only the tokens (or iterations)
    /// the run replays, so memory follows the run, not the file (see [`Inputs::trace_complete`]).
    pub trace: Option<Arc<Trace>>,
    /// Whether [`Inputs::trace`] holds the whole file (`false`: its start, what the run replays).
    pub trace_complete: bool,
    /// The per-rank routing workload the simulation replays.
    pub routing: Arc<dyn RoutingSource>,
    /// Per-token routing for offloading strategies, from a per-token trace (`None`: the scenario's
    /// synthetic per-token routing).
    pub tokens: Option<Arc<TokenRouting>>,
    /// The measured (or shipped) cost model of `cluster.profile`; `None`: the cluster's datasheet roofline.
    pub cost: Option<Arc<MeasuredCost>>,
    /// One line: which cost model prices the operations.
    pub cost_label: String,
    /// Serving scenarios: the request trace `workload.serving.trace` names (relative to the scenario
    /// file), read once.
    pub requests: Option<Arc<RequestTrace>>,
}

impl Inputs {
    /// Reads the scenario file at `file` and resolves it (see [`Inputs::resolve`]).
    pub fn read(
        file: &Path,
        overrides: Vec<String>,
        trace: Option<&Path>,
    ) -> Result<Inputs, InputError> {
        let text = std::fs::read_to_string(file).map_err(|source| InputError::Read {
            path: file.display().to_string(),
            source,
        })?;
        Inputs::resolve(file, text, overrides, trace)
    }

    /// Parses `text` (the scenario file `file`) with `overrides`, reads the trace (`trace`, else the
    /// scenario's `workload.trace`, relative to `file`) and the cost profile it names, and builds the
    /// routing. Reads no file when the scenario names neither a trace nor a profile file.
    pub fn resolve(
        file: &Path,
        text: String,
        overrides: Vec<String>,
        trace: Option<&Path>,
    ) -> Result<Inputs, InputError> {
        let name = file.display().to_string();
        let scenario = parse_scenario(&name, &text, &overrides)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let trace_path = match trace {
            Some(t) => {
                if !t.exists() {
                    return Err(InputError::Trace(format!(
                        "--trace {}: no such file or folder; give the path of a trace (`moesim trace import` \
                         makes one)",
                        t.display()
                    )));
                }
                Some(t.to_path_buf())
            }
            None => match &scenario.workload.trace {
                Some(t) => {
                    let p = base.join(t);
                    if !p.exists() {
                        return Err(missing_trace(&name, &text, t, &p).into());
                    }
                    Some(p)
                }
                None => None,
            },
        };
        let (trace, trace_complete) = match trace_path.as_deref() {
            Some(p) => {
                let (t, complete) = read_trace_for(p, &scenario)?;
                (Some(Arc::new(t)), complete)
            }
            None => (None, true),
        };
        let tokens = match (trace.as_deref(), &trace_path) {
            (Some(t), Some(p)) if has_offload(&scenario) => match t {
                Trace::Tokens(tt) => Some(Arc::new(TokenRouting::from_trace(tt))),
                Trace::Counts(_) => {
                    return Err(InputError::Trace(format!(
                        "{}: offloading replays tokens in order, but this trace holds aggregated counts; \
                         give a per-token trace",
                        p.display()
                    )));
                }
            },
            _ => None,
        };
        // A per-token trace that does not fit the model is the trace's error: name the trace file.
        if let (Some(t), Some(p)) = (&tokens, &trace_path) {
            t.check(scenario.model.moe_layers(), scenario.model.experts)
                .map_err(|e| {
                    InputError::Trace(format!(
                        "{}: the trace does not fit the model of {}: {e}",
                        p.display(),
                        file.display()
                    ))
                })?;
        }
        let (cost, cost_label) = match scenario.cluster.profile.as_deref() {
            Some(profile) => {
                let p = resolve_profile(profile, base).map_err(|source| InputError::Profile {
                    scenario: name.clone(),
                    source,
                })?;
                let label = format!(
                    "profile {} ({}, {})",
                    p.name,
                    match p.source {
                        moesim_calibrate::profile::Source::Datasheet => "datasheet",
                        moesim_calibrate::profile::Source::Measured => "measured",
                    },
                    p.device.name
                );
                (Some(Arc::new(MeasuredCost::from_profile(&p))), label)
            }
            None => (None, roofline_label(&scenario)),
        };
        let requests = match scenario
            .serving
            .as_ref()
            .and_then(|c| c.requests.trace.as_ref())
        {
            Some(t) => {
                let p = base.join(t);
                if !p.exists() {
                    return Err(ScenarioError::new(
                        &name,
                        &text,
                        format!(
                            "workload.serving.trace: request trace {} not found (`{t}` is relative to the \
                             scenario file)",
                            p.display()
                        ),
                    )
                    .at(locate(&text, "workload.serving.trace"), "no trace at this path")
                    .into());
                }
                let format = scenario
                    .serving
                    .as_ref()
                    .and_then(|c| c.requests.trace_format);
                Some(Arc::new(
                    read_requests(&p, format).map_err(|e| InputError::Trace(e.to_string()))?,
                ))
            }
            None => None,
        };
        let mut inputs = Inputs {
            requests,
            file: file.to_path_buf(),
            text,
            overrides,
            routing: Arc::new(synthetic_routing(&scenario)),
            scenario,
            trace_path,
            trace,
            trace_complete,
            tokens,
            cost,
            cost_label,
        };
        inputs.routing = inputs.routing_for(&inputs.scenario)?;
        // A serving scenario's steps replay the routing trace (checked against the model just above).
        if let (Some(c), Some(t)) = (inputs.scenario.serving.as_mut(), &inputs.trace) {
            c.routing_trace = Some(Arc::clone(t));
        }
        Ok(inputs)
    }

    /// The routing workload of `s`, a variant of this scenario (another cluster size, say): the trace
    /// replayed onto `s`'s shape, or `s`'s synthetic workload. Offloading-only scenarios replay their
    /// per-token trace through [`Inputs::tokens`] and get the synthetic per-rank workload here.
    pub fn routing_for(&self, s: &Scenario) -> Result<Arc<dyn RoutingSource>, InputError> {
        let synthetic = synthetic_routing(s);
        let offload_only = s
            .strategies
            .iter()
            .all(|st| st.kind == StrategyKind::Offload);
        match (&self.trace, &self.trace_path) {
            (Some(t), Some(p)) if !offload_only => {
                let (shape, iterations) = (synthetic.shape(), synthetic.iterations());
                let tokens = tokens_used(shape, iterations);
                // A variant that replays more than was kept (a larger cluster) reads its own start.
                let (t, complete) = if self.trace_complete || holds(t, tokens, iterations) {
                    (Arc::clone(t), self.trace_complete)
                } else {
                    let longer = read_native_prefix(p, tokens, iterations as u64)
                        .map_err(|e| InputError::Trace(e.to_string()))?;
                    (Arc::new(longer.trace), longer.complete)
                };
                let replay = TraceRouting::shared(t, p, shape, iterations)
                    .map_err(|e| InputError::Trace(e.to_string()))?;
                Ok(Arc::new(if complete { replay } else { replay.partial() }))
            }
            _ => Ok(Arc::new(synthetic)),
        }
    }

    /// The cost model to price operations with (`None`: the scenario's datasheet roofline).
    pub fn cost(&self) -> Option<&dyn CostModel> {
        self.cost.as_deref().map(|c| c as &dyn CostModel)
    }

    /// Simulates every strategy of [`Inputs::scenario`] on these inputs. A serving scenario has no
    /// step-level iterations to simulate: it is refused here (serve it with [`Inputs::simulate_serving`]).
    pub fn simulate(&self, opts: RunOptions) -> Result<SimulationReport, InputError> {
        if self.scenario.serving.is_some() {
            return Err(InputError::Simulation(format!(
                "{}: a serving scenario (workload.mode = \"serving\") is simulated by `moesim simulate`, \
                 `moesim plan` searches its capacity, `moesim report` draws its latency curves and the TUI \
                 shows it in its Serving view; sweep does not serve requests yet",
                self.file.display()
            )));
        }
        simulate_scenario_with_tokens(
            &self.scenario,
            self.routing.as_ref(),
            self.tokens.as_deref(),
            self.cost(),
            opts,
        )
        .map_err(|e| InputError::Simulation(format!("{}: {e}", self.file.display())))
    }

    /// Serves a `mode = "serving"` scenario's request stream with every strategy (see
    /// [`moesim_sim::serving`]).
    pub fn simulate_serving(&self) -> Result<ServingReport, InputError> {
        simulate_serving(
            &self.scenario,
            self.requests.as_deref().map(|t| t.requests.as_slice()),
            self.cost(),
        )
        .map_err(|e| InputError::Simulation(format!("{}: {e}", self.file.display())))
    }

    /// One line about the routing workload: the trace file, or the synthetic generator.
    pub fn workload(&self) -> String {
        self.routing.describe()
    }
}

fn has_offload(s: &Scenario) -> bool {
    s.strategies
        .iter()
        .any(|st| st.kind == StrategyKind::Offload)
}

/// The error for a `workload.trace` that names no file: where it was looked for and what to do.
fn missing_trace(file: &str, text: &str, written: &str, resolved: &Path) -> ScenarioError {
    ScenarioError::new(
        file,
        text,
        format!(
            "workload.trace: trace {} not found (`{written}` is relative to the scenario file)",
            resolved.display()
        ),
    )
    .at(locate(text, "workload.trace"), "no trace at this path")
    .help(
        "put the trace there, replay another with `--trace PATH` or `--set workload.trace=PATH`, or delete \
         `workload.trace` to use the scenario's synthetic workload",
    )
}

/// Whether `t` holds at least `tokens` tokens (a per-token trace) or `iterations` iterations (counts).
fn holds(t: &Trace, tokens: u64, iterations: usize) -> bool {
    match t {
        Trace::Tokens(tt) => tt.tokens() as u64 >= tokens,
        Trace::Counts(c) => c.iterations >= iterations,
    }
}

/// Reads the trace `s` replays: a native trace only as far as `s` replays it (the tokens of
/// `workload.iterations` iterations of every rank, and of every offloading step; counts: the first
/// `workload.iterations` iterations), the rest of the file checked but not kept; other formats whole.
/// Returns the trace and whether it is the whole file.
fn read_trace_for(path: &Path, s: &Scenario) -> Result<(Trace, bool), InputError> {
    if !moesim_traces::native::is_native(path) {
        return read_trace(path).map(|t| (t, true));
    }
    let synthetic = synthetic_routing(s);
    let mut tokens = tokens_used(synthetic.shape(), synthetic.iterations());
    if has_offload(s) {
        tokens = tokens.max(moesim_sim::strategy::offload::tokens::tokens_used(s));
    }
    let p = read_native_prefix(path, tokens, s.workload.iterations as u64)
        .map_err(|e| InputError::Trace(e.to_string()))?;
    Ok((p.trace, p.complete))
}

/// Reads a trace: a native `.moetrace`, or a per-token trace imported on the fly (`.jsonl` as
/// `jsonl-tokens`; `.csv` or a folder of CSV files as `csv-tokens`; `.json` as a `load-matrix` of counts),
/// with the importers' defaults.
pub fn read_trace(path: &Path) -> Result<Trace, InputError> {
    if moesim_traces::native::is_native(path) {
        return moesim_traces::native::read_native(path)
            .map_err(|e| InputError::Trace(e.to_string()));
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        _ if path.is_dir() => Format::CsvTokens,
        Some("jsonl") => Format::JsonlTokens,
        Some("csv") => Format::CsvTokens,
        Some("json") => Format::LoadMatrix,
        _ if !path.exists() => {
            return Err(InputError::Trace(format!(
                "{}: trace file not found",
                path.display()
            )));
        }
        _ => {
            return Err(InputError::Trace(format!(
                "{}: not a moesim native trace, nor a .jsonl/.csv per-token trace or a .json load matrix; \
                 convert it first with `moesim trace import --from FORMAT IN OUT`",
                path.display()
            )));
        }
    };
    import(format, path, &ImportOptions::default()).map_err(|e| InputError::Trace(e.to_string()))
}

/// Resolves a profile name: shipped profiles first, then a profile file relative to `base_dir`.
pub fn resolve_profile(name: &str, base_dir: &Path) -> Result<Profile, ProfileError> {
    if let Some(p) = profiles::shipped(name) {
        return Ok(p);
    }
    let path = base_dir.join(name);
    if path.is_file() {
        return Profile::load(&path);
    }
    Err(ProfileError::Unknown {
        name: name.to_string(),
        known: profiles::shipped_names().join(", "),
        path: path.display().to_string(),
    })
}

/// The label of the datasheet roofline a scenario without `cluster.profile` is priced by.
pub fn roofline_label(s: &Scenario) -> String {
    format!(
        "datasheet roofline: {} ({} TFLOP/s peak, {} GB/s HBM)",
        s.cluster.gpu, s.cluster.peak_tflops, s.cluster.hbm_gbytes_per_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\nseq_len = 256\n[cluster]\n\
                        preset = \"dgx-h100\"\n[workload]\niterations = 2\n[[strategy]]\nname = \"ep8\"\nkind = \"ep\"\n";

    #[test]
    fn a_missing_trace_names_its_path_the_field_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        let text = TEXT.replace(
            "iterations = 2\n",
            "iterations = 2\ntrace = \"../nowhere/t.moetrace\"\n",
        );
        std::fs::write(&file, &text).unwrap();
        let Err(InputError::Scenario(e)) = Inputs::read(&file, vec![], None) else {
            panic!("a scenario error")
        };
        let msg = e.to_string();
        assert!(msg.contains("s.toml"), "{msg}");
        assert!(msg.contains("workload.trace"), "{msg}");
        assert!(msg.contains("nowhere/t.moetrace"), "{msg}");
        assert_eq!(e.line_col(), Some((9, 9)));
        assert!(e.help.as_deref().unwrap().contains("--trace PATH"));
        let Err(InputError::Trace(m)) = Inputs::read(&file, vec![], Some(Path::new("no/such")))
        else {
            panic!("a trace error")
        };
        assert!(m.contains("--trace no/such"), "{m}");
    }

    #[test]
    fn a_profile_name_is_resolved_and_labelled() {
        let with = Inputs::resolve(
            Path::new("s.toml"),
            TEXT.into(),
            vec!["cluster.profile=h100-datasheet".into()],
            None,
        )
        .unwrap();
        assert!(with.cost.is_some());
        assert!(
            with.cost_label.starts_with("profile h100-datasheet"),
            "{}",
            with.cost_label
        );
        let without = Inputs::resolve(Path::new("s.toml"), TEXT.into(), vec![], None).unwrap();
        assert!(without.cost.is_none());
        assert!(without.cost_label.starts_with("datasheet roofline"));
        let Err(e) = Inputs::resolve(
            Path::new("s.toml"),
            TEXT.into(),
            vec!["cluster.profile=nope".into()],
            None,
        ) else {
            panic!()
        };
        assert!(
            e.to_string()
                .contains("s.toml: cluster.profile: unknown profile `nope`"),
            "{e}"
        );
    }

    #[test]
    fn a_native_trace_is_read_as_far_as_the_run_replays_and_replays_as_the_whole_file() {
        use moesim_traces::tokengen::{Drift, TokenModel};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        let plain = Inputs::resolve(&file, TEXT.into(), vec![], None).unwrap();
        let (shape, iterations) = (plain.routing.shape(), plain.routing.iterations());
        let used = tokens_used(shape, iterations) as usize;
        // A trace three runs long, in sequences of a tenth of a run.
        let m = TokenModel {
            layers: shape.moe_layers,
            experts: shape.experts,
            top_k: shape.top_k,
            skew: moesim_traces::Skew::Zipf { s: 1.0 },
            shuffle_per_layer: true,
            locality: 0.2,
            layer_correlation: 0.0,
            null_expert_prob: 0.0,
            drift: Drift::default(),
            seed: 4,
        };
        let trace = Trace::Tokens(m.generate(30, used / 10).unwrap());
        let path = dir.path().join("t.moetrace");
        moesim_traces::native::write_native(&path, &trace).unwrap();
        let inputs = Inputs::resolve(&file, TEXT.into(), vec![], Some(&path)).unwrap();
        assert!(!inputs.trace_complete);
        let Some(Trace::Tokens(kept)) = inputs.trace.as_deref() else {
            panic!("a per-token trace")
        };
        assert!(
            kept.tokens() >= used && kept.tokens() <= used + used / 10,
            "{}",
            kept.tokens()
        );
        assert!(inputs.workload().contains("the start of a longer file"));
        let whole = |s: &Scenario| {
            let syn = synthetic_routing(s);
            TraceRouting::new(trace.clone(), &path, syn.shape(), syn.iterations()).unwrap()
        };
        let reference = whole(&inputs.scenario);
        for it in 0..iterations {
            assert_eq!(
                inputs.routing.iteration(it),
                reference.iteration(it),
                "iteration {it}"
            );
        }
        // A four times larger cluster replays more tokens than were kept: it reads its own start.
        let bigger = parse_scenario("s.toml", TEXT, &["cluster.nodes=4".into()]).unwrap();
        let r = inputs.routing_for(&bigger).unwrap();
        let reference = whole(&bigger);
        assert!(tokens_used(r.shape(), r.iterations()) as usize > kept.tokens());
        for it in 0..iterations {
            assert_eq!(r.iteration(it), reference.iteration(it), "iteration {it}");
        }
    }
}
