//! `moesim trace`: import, export, inspect, fit, rescale and generate routing traces.

use clap::{Args, Subcommand};
use miette::miette;
use moesim_traces::Skew;
use moesim_traces::Trace;
use moesim_traces::fit::{Fit, FitOptions, RescaleSpec, fit, fit_native, rescale};
use moesim_traces::import::{Format, ImportOptions, Incomplete, import};
use moesim_traces::native::{NativeWriter, is_native, read_native, write_native};
use moesim_traces::stats::{StatsOptions, trace_stats};
use moesim_traces::tokengen::{Drift, TokenModel};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TraceCommand {
    /// Convert a trace from a framework's dump into the native format.
    Import {
        /// Input format: jsonl-tokens, csv-tokens, csv-counts, load-matrix, npy.
        #[arg(long)]
        from: Format,
        /// Input file, or a directory of one-sequence files (natural name order).
        input: PathBuf,
        /// Output native trace (.moetrace).
        output: PathBuf,
        #[command(flatten)]
        opts: ImportArgs,
    },
    /// Write a trace in an interchange format (jsonl-tokens, csv-tokens, csv-counts, load-matrix, npy).
    Export {
        #[arg(long)]
        to: Format,
        /// Native trace (or any importable file with --from).
        input: PathBuf,
        output: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Statistics: skew, rank imbalance, drift, locality, cache hit rates.
    Stats {
        input: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Cache capacities (experts per layer) for LRU/Belady hit rates, e.g. 8,16.
        #[arg(long, value_delimiter = ',')]
        cache_sizes: Vec<usize>,
        /// Ranks for the contiguous-EP imbalance.
        #[arg(long, default_value_t = 8)]
        ep_ranks: usize,
        /// Empty the caches at the start of every sequence (default: one cache across sequences).
        #[arg(long)]
        cache_per_sequence: bool,
        /// Tokens per window for drift.
        #[arg(long, default_value_t = 256)]
        drift_window: usize,
        /// Stream a native per-token trace from the file in bounded memory (automatic above 256 MiB);
        /// Belady hit rates are then per sequence only (with --cache-per-sequence).
        #[arg(long)]
        stream: bool,
        #[command(flatten)]
        source: SourceArgs,
    },

    /// Estimate synthetic parameters (skew, locality, drift, experts per token) that reproduce a trace.
    Fit {
        input: PathBuf,
        /// Print one JSON object (the fitted model, the target and achieved statistics).
        #[arg(long)]
        json: bool,
        /// Tokens per drift window.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Seed of the fitted model.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the fit (JSON) here; `trace gen --fit` and `trace rescale --fit` read it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// A workload for another number of ranks and iterations with the trace's statistics.
    Rescale {
        input: PathBuf,
        /// Source ranks of the new workload.
        #[arg(long)]
        ranks: usize,
        /// Iterations of the new workload.
        #[arg(long)]
        iterations: usize,
        /// Output native trace.
        output: PathBuf,
        /// Tokens each rank holds per iteration.
        #[arg(long, default_value_t = 1024)]
        tokens_per_rank: u64,
        /// Write a per-token trace (keeps locality; ranks × iterations × tokens_per_rank tokens) instead of counts.
        #[arg(long)]
        per_token: bool,
        /// Use this fit (from `trace fit --out`) instead of fitting the input.
        #[arg(long = "fit", value_name = "FIT_JSON")]
        fit_file: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Refuse to generate more tokens than this (ranks × iterations × tokens per rank).
        #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
        max_tokens: u64,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Generate a synthetic per-token trace.
    Gen {
        /// Output native trace.
        output: PathBuf,
        /// Parameters from a file: a fit (`trace fit --out`) or a token-model JSON; flags below override.
        #[arg(long = "fit", value_name = "FIT_JSON")]
        fit_file: Option<PathBuf>,
        /// MoE layers (required without --fit).
        #[arg(long)]
        layers: Option<usize>,
        /// Routed experts per layer (required without --fit).
        #[arg(long)]
        experts: Option<usize>,
        /// Experts each token picks per layer (required without --fit).
        #[arg(long)]
        top_k: Option<usize>,
        /// Popularity: uniform, zipf:S, lognormal:SIGMA or dirichlet:ALPHA.
        #[arg(long)]
        skew: Option<String>,
        /// Probability that each of the previous token's experts is reused.
        #[arg(long)]
        locality: Option<f64>,
        /// Probability that a slot follows the previous layer's choice.
        #[arg(long)]
        layer_correlation: Option<f64>,
        /// Probability that a chosen expert is a null (zero-computation) expert.
        #[arg(long)]
        null_prob: Option<f64>,
        /// Drift: stationary σ of the log-popularity random walk.
        #[arg(long)]
        drift_sigma: Option<f64>,
        /// Drift: block-to-block correlation of the walk.
        #[arg(long)]
        drift_persistence: Option<f64>,
        /// Drift: tokens per block.
        #[arg(long)]
        block_tokens: Option<usize>,
        /// Drift: rotate the hot spots by one expert every N blocks.
        #[arg(long)]
        rotate_every: Option<usize>,
        /// Drift: probability per block and layer of a burst.
        #[arg(long)]
        burst_prob: Option<f64>,
        /// Drift: weight multiplier of a burst.
        #[arg(long)]
        burst_factor: Option<f64>,
        /// Sequences to generate.
        #[arg(long, default_value_t = 16)]
        sequences: usize,
        /// Tokens in each sequence.
        #[arg(long, default_value_t = 256)]
        tokens_per_sequence: usize,
        /// Refuse to generate more tokens than this (sequences × tokens per sequence).
        #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
        max_tokens: u64,
        /// Seed of the generator (default: the fit's, else 1); the same seed gives the same trace.
        #[arg(long)]
        seed: Option<u64>,
    },
}

/// Reading a non-native input.
#[derive(Args, Clone, Default)]
pub struct SourceArgs {
    /// Read the input with this importer instead of as a native trace.
    #[arg(long = "from")]
    from: Option<Format>,
    #[command(flatten)]
    import: ImportArgs,
}

/// Importer options.
#[derive(Args, Clone, Default)]
pub struct ImportArgs {
    /// Key(s) naming the sequence (comma-separated, joined). Default: dataset+problem_id, else sequence.
    #[arg(long, value_delimiter = ',')]
    sequence_key: Option<Vec<String>>,
    /// Key of the token position. Default: token_idx or token_pos.
    #[arg(long)]
    token_key: Option<String>,
    /// Key of the layer. Default: layer (CSV: "Layer ID").
    #[arg(long)]
    layer_key: Option<String>,
    /// Key of the expert list. Default: experts (CSV: "Activated Expert IDs").
    #[arg(long)]
    experts_key: Option<String>,
    /// Key of the gate weights. Default: gating_probs.
    #[arg(long)]
    gates_key: Option<String>,
    /// Routed experts per layer (ids must be below it). Default: largest id + 1.
    #[arg(long)]
    experts: Option<usize>,
    /// Experts per token (rows with another count are errors).
    #[arg(long)]
    top_k: Option<usize>,
    /// Allow fewer experts than top-k in a row (null experts, top-p routing).
    #[arg(long)]
    variable_k: bool,
    /// Tokens lacking some layers: drop, keep or error.
    #[arg(long, default_value = "drop")]
    incomplete: Incomplete,
    /// Model name to record in the trace.
    #[arg(long)]
    model: Option<String>,
}

impl ImportArgs {
    fn options(&self) -> ImportOptions {
        ImportOptions {
            sequence_keys: self.sequence_key.clone(),
            token_key: self.token_key.clone(),
            layer_key: self.layer_key.clone(),
            experts_key: self.experts_key.clone(),
            gates_key: self.gates_key.clone(),
            experts: self.experts,
            top_k: self.top_k,
            variable_k: self.variable_k,
            incomplete: self.incomplete,
            model: self.model.clone(),
        }
    }
}

/// Reads a native trace, or imports `path` when `--from` is given.
pub fn read_trace(path: &Path, source: &SourceArgs) -> miette::Result<Trace> {
    match source.from {
        Some(f) => import(f, path, &source.import.options()).map_err(diag),
        None if path.is_file() && is_native(path) => read_native(path).map_err(diag),
        None => Err(miette!(
            "{}: not a moesim native trace; pass --from FORMAT (jsonl-tokens, csv-tokens, csv-counts, load-matrix, npy) to read it directly",
            path.display()
        )),
    }
}

/// Native per-token traces above this size are streamed by `trace stats` (memory bounded by the window,
/// not the file).
const STREAM_ABOVE_BYTES: u64 = 256 << 20;

/// A reader to stream `path` from, when it is a native per-token trace and streaming is asked for or the
/// file is large.
fn streamed(
    path: &Path,
    source: &SourceArgs,
    force: bool,
) -> miette::Result<Option<moesim_traces::native::NativeReader<std::io::BufReader<std::fs::File>>>>
{
    if source.from.is_some() || !path.is_file() || !is_native(path) {
        return Ok(None);
    }
    let big = std::fs::metadata(path).is_ok_and(|m| m.len() > STREAM_ABOVE_BYTES);
    if !(force || big) {
        return Ok(None);
    }
    let reader = moesim_traces::native::NativeReader::open(path).map_err(diag)?;
    Ok((reader.meta().kind == moesim_traces::TraceKind::Tokens).then_some(reader))
}

/// Fits `input`: a native trace is streamed record by record (memory bounded by the trace's shape and its
/// largest sequence, not the file; the same fit as reading it whole), any other format is imported whole.
fn fit_input(input: &Path, source: &SourceArgs, opts: &FitOptions) -> miette::Result<Fit> {
    if source.from.is_none() && input.is_file() && is_native(input) {
        let mut r = moesim_traces::native::NativeReader::open(input).map_err(diag)?;
        return fit_native(&mut r, opts).map_err(diag);
    }
    let t = read_trace(input, source)?;
    fit(&t, opts).map_err(|e| miette!("{}: {e}", input.display()))
}

/// A trace error as a report (its text already names file, place and expectation).
pub fn diag(e: moesim_traces::TraceError) -> miette::Report {
    miette!("{e}")
}

fn summary(t: &Trace) -> String {
    let m = t.meta();
    let body = match t {
        Trace::Tokens(tt) => format!(
            "{} sequences, {} tokens, {} token-layer rows",
            tt.sequences.len(),
            tt.tokens(),
            tt.rows()
        ),
        Trace::Counts(c) => format!("{} iterations × {} ranks", c.iterations, m.ranks),
    };
    format!(
        "{:?} trace: {} layers, {} experts, top-{}; {body}",
        m.kind, m.layers, m.experts, m.top_k
    )
}

pub fn run(cmd: TraceCommand, quiet: bool) -> miette::Result<ExitCode> {
    match cmd {
        TraceCommand::Import {
            from,
            input,
            output,
            opts,
        } => {
            crate::output::refuse_same_file(&input, &output)?;
            let t = import(from, &input, &opts.options()).map_err(diag)?;
            write_native(&output, &t).map_err(diag)?;
            if !quiet {
                eprintln!("{}: {}", output.display(), summary(&t));
                for n in &t.meta().provenance.notes {
                    eprintln!("note: {n}");
                }
            }
        }
        TraceCommand::Export {
            to,
            input,
            output,
            source,
        } => {
            crate::output::refuse_same_file(&input, &output)?;
            check_extension(to, &output)?;
            let t = read_trace(&input, &source)?;
            moesim_traces::export::export(&t, to, &output).map_err(diag)?;
        }
        TraceCommand::Stats {
            input,
            json,
            cache_sizes,
            ep_ranks,
            cache_per_sequence,
            drift_window,
            stream,
            source,
        } => {
            if drift_window == 0 || drift_window > moesim_traces::fit::MAX_WINDOW {
                return Err(miette!(
                    "--drift-window {drift_window}: expected 1..={}",
                    moesim_traces::fit::MAX_WINDOW
                ));
            }
            let opts = StatsOptions {
                cache_sizes,
                ep_ranks,
                drift_window,
                cache_per_sequence,
                ..StatsOptions::default()
            };
            let (st, head) = match streamed(&input, &source, stream)? {
                Some(mut reader) => {
                    let st = moesim_traces::stats_stream::stream_stats(&mut reader, &opts)
                        .map_err(|e| miette!("{}: {e}", input.display()))?;
                    let m = reader.meta();
                    let head = format!(
                        "Tokens trace: {} layers, {} experts, top-{}; {} sequences, {} tokens (streamed)",
                        m.layers, m.experts, m.top_k, st.sequences, st.overall.tokens
                    );
                    (st, head)
                }
                None => {
                    let t = read_trace(&input, &source)?;
                    let st =
                        trace_stats(&t, &opts).map_err(|e| miette!("{}: {e}", input.display()))?;
                    (st, summary(&t))
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&st).expect("serialisable")
                );
            } else {
                print_stats(&head, &st);
            }
        }
        TraceCommand::Fit {
            input,
            json,
            window,
            seed,
            out,
            source,
        } => {
            let opts = FitOptions {
                window,
                seed,
                ..FitOptions::default()
            };
            let f = fit_input(&input, &source, &opts)?;
            let text = serde_json::to_string_pretty(&f).expect("serialisable");
            if let Some(o) = &out {
                crate::output::write_atomic(o, format!("{text}\n").as_bytes())?;
            }
            if json {
                println!("{text}");
            } else {
                print_fit(&f);
            }
        }
        TraceCommand::Rescale {
            input,
            ranks,
            iterations,
            output,
            tokens_per_rank,
            per_token,
            fit_file,
            seed,
            max_tokens,
            source,
        } => {
            let f = match &fit_file {
                Some(p) => read_fit(p)?,
                None => fit_input(
                    &input,
                    &source,
                    &FitOptions {
                        seed,
                        ..FitOptions::default()
                    },
                )?,
            };
            if ranks == 0 || iterations == 0 || tokens_per_rank == 0 {
                return Err(miette!(
                    "--ranks, --iterations and --tokens-per-rank must be at least 1"
                ));
            }
            crate::output::refuse_same_file(&input, &output)?;
            let total = (ranks as u64)
                .saturating_mul(iterations as u64)
                .saturating_mul(tokens_per_rank);
            check_tokens("trace rescale", total, f.model.layers, max_tokens)?;
            let mut m = f.model;
            m.seed = seed;
            if per_token {
                let total = ranks as u64 * iterations as u64 * tokens_per_rank;
                let tps = f.tokens_per_sequence.max(1);
                let n_seq = total.div_ceil(tps as u64) as usize;
                let mut meta = m.meta();
                meta.provenance.format = "rescale".into();
                meta.provenance.source = input.display().to_string();
                let mut w = NativeWriter::create(&output, &meta).map_err(diag)?;
                let mut left = total;
                let mut err = None;
                let bar = crate::output::progress_items(n_seq as u64, "sequences", quiet);
                m.generate_with(n_seq, tps, |mut s| {
                    bar.inc(1);
                    if err.is_some() || left == 0 {
                        return;
                    }
                    if (s.tokens as u64) > left {
                        s = truncate(&s, left as usize, m.layers);
                    }
                    left -= s.tokens as u64;
                    if let Err(e) = w.write_sequence(&s) {
                        err = Some(e);
                    }
                })
                .map_err(|e| miette!("{e}"))?;
                if let Some(e) = err {
                    return Err(diag(e));
                }
                w.finish().map_err(diag)?;
            } else {
                let mut meta = m.meta();
                meta.kind = moesim_traces::TraceKind::Counts;
                meta.ranks = ranks;
                meta.provenance.format = "rescale".into();
                meta.provenance.source = input.display().to_string();
                let mut w = NativeWriter::create(&output, &meta).map_err(diag)?;
                let spec = RescaleSpec {
                    ranks,
                    iterations,
                    tokens_per_rank,
                    tokens_per_sequence: f.tokens_per_sequence,
                };
                let mut err = None;
                let bar = crate::output::progress_items(iterations as u64, "iterations", quiet);
                rescale(&m, &spec, |it| {
                    bar.inc(1);
                    if err.is_none()
                        && let Err(e) = w.write_iteration(it)
                    {
                        err = Some(e);
                    }
                })
                .map_err(|e| miette!("{e}"))?;
                if let Some(e) = err {
                    return Err(diag(e));
                }
                w.finish().map_err(diag)?;
            }
            if !quiet {
                eprintln!(
                    "{}: {ranks} ranks × {iterations} iterations × {tokens_per_rank} tokens per rank from {:?}",
                    output.display(),
                    m.skew
                );
            }
        }
        TraceCommand::Gen {
            output,
            fit_file,
            layers,
            experts,
            top_k,
            skew,
            locality,
            layer_correlation,
            null_prob,
            drift_sigma,
            drift_persistence,
            block_tokens,
            rotate_every,
            burst_prob,
            burst_factor,
            sequences,
            tokens_per_sequence,
            max_tokens,
            seed,
        } => {
            let mut m = match &fit_file {
                Some(p) => read_fit(p)?.model,
                None => TokenModel {
                    layers: 0,
                    experts: 0,
                    top_k: 0,
                    skew: Skew::Uniform,
                    shuffle_per_layer: true,
                    locality: 0.0,
                    layer_correlation: 0.0,
                    null_expert_prob: 0.0,
                    drift: Drift::default(),
                    seed: 1,
                },
            };
            macro_rules! set {
                ($flag:expr, $field:expr) => {
                    if let Some(v) = $flag {
                        $field = v;
                    }
                };
            }
            set!(layers, m.layers);
            set!(experts, m.experts);
            set!(top_k, m.top_k);
            set!(locality, m.locality);
            set!(layer_correlation, m.layer_correlation);
            set!(null_prob, m.null_expert_prob);
            set!(drift_sigma, m.drift.sigma);
            set!(drift_persistence, m.drift.persistence);
            set!(block_tokens, m.drift.block_tokens);
            set!(rotate_every, m.drift.rotate_every_blocks);
            set!(burst_prob, m.drift.burst_prob);
            set!(burst_factor, m.drift.burst_factor);
            set!(seed, m.seed);
            if let Some(s) = &skew {
                m.skew = parse_skew(s)?;
            }
            if m.layers == 0 || m.experts == 0 || m.top_k == 0 {
                return Err(miette!(
                    "trace gen: give --layers, --experts and --top-k (or --fit FILE)"
                ));
            }
            m.validate().map_err(|e| miette!("trace gen: {e}"))?;
            let total = (sequences as u64).saturating_mul(tokens_per_sequence as u64);
            check_tokens("trace gen", total, m.layers, max_tokens)?;
            let mut w = NativeWriter::create(&output, &m.meta()).map_err(diag)?;
            let mut err = None;
            let bar = crate::output::progress_items(sequences as u64, "sequences", quiet);
            m.generate_with(sequences, tokens_per_sequence, |s| {
                bar.inc(1);
                if err.is_none()
                    && let Err(e) = w.write_sequence(&s)
                {
                    err = Some(e);
                }
            })
            .map_err(|e| miette!("trace gen: {e}"))?;
            bar.finish_and_clear();
            if let Some(e) = err {
                return Err(diag(e));
            }
            w.finish().map_err(diag)?;
            if !quiet {
                println!(
                    "{}: {sequences} sequences × {tokens_per_sequence} tokens, {} layers × {} experts, top-{}, {} (seed {})",
                    output.display(),
                    m.layers,
                    m.experts,
                    m.top_k,
                    skew.as_deref()
                        .map_or_else(|| format!("{:?}", m.skew), str::to_string),
                    m.seed
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Default of `--max-tokens`: about 4 GB of native trace at 8 layers, top-8, and minutes of generation.
const DEFAULT_MAX_TOKENS: u64 = 100_000_000;

/// Refuses to generate more than `max` tokens (absurd work), naming the flag that raises the limit.
fn check_tokens(cmd: &str, total: u64, layers: usize, max: u64) -> miette::Result<()> {
    if total > max {
        return Err(miette!(
            help = format!("pass --max-tokens {total} to generate it anyway"),
            "{cmd}: {total} tokens × {layers} layers asked for, over the limit of {max} tokens \
             (about {:.1} GB of trace)",
            total as f64 * layers as f64 * 9.0 / 1e9
        ));
    }
    Ok(())
}

/// Refuses an output whose extension names another format (`--to load-matrix lm.csv` would write JSON
/// into a `.csv`).
fn check_extension(to: Format, out: &Path) -> miette::Result<()> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let expected: &[&str] = match to {
        Format::JsonlTokens => &["jsonl", "json", "ndjson"],
        Format::CsvTokens | Format::CsvCounts => &["csv"],
        Format::LoadMatrix => &["json"],
        Format::Npy => &[],
    };
    match ext.as_deref() {
        Some(e) if !expected.is_empty() && !expected.contains(&e) => Err(miette!(
            help = format!(
                "name the output with .{} (or choose the format that writes .{e})",
                expected[0]
            ),
            "{}: --to {} writes {}, not .{e}",
            out.display(),
            to.name(),
            expected[0]
        )),
        _ => Ok(()),
    }
}

/// The first `tokens` tokens of a sequence.
fn truncate(s: &moesim_traces::Sequence, tokens: usize, layers: usize) -> moesim_traces::Sequence {
    let mut out = moesim_traces::Sequence::with_capacity(s.name.clone(), tokens, layers, 0);
    for l in 0..layers {
        for t in 0..tokens {
            out.push_row(s.row(l, t), None);
        }
    }
    out
}

/// A fit (`trace fit --out`) or a bare TokenModel JSON.
fn read_fit(path: &Path) -> miette::Result<Fit> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| miette!("{}: cannot read: {e}", path.display()))?;
    let bad = |what: &str, e: serde_json::Error| {
        miette!(
            "{}: line {}, column {}: not a valid {what}: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    };
    let invalid = |e: String| miette!("{}: invalid model: {e}", path.display());
    // A fit has a `model` object; a bare token model has `layers` at the top. Each is reported by its
    // own parser, so a defect in a fit is not hidden behind the fallback's "unknown field".
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad("JSON file", e))?;
    if value.get("model").is_some() {
        let f: Fit = serde_json::from_str(&text)
            .map_err(|e| bad("fit (from `moesim trace fit --out`)", e))?;
        f.model.validate().map_err(invalid)?;
        return Ok(f);
    }
    let model: TokenModel =
        serde_json::from_str(&text).map_err(|e| bad("token model (or fit)", e))?;
    model.validate().map_err(invalid)?;
    let target = moesim_traces::fit::Measured {
        gini: 0.0,
        load_max_over_mean: 0.0,
        locality: 0.0,
        drift_tv: 0.0,
        drift_tv_lag4: 0.0,
        mean_experts_per_token: model.top_k as f64,
    };
    Ok(Fit {
        model,
        tokens_per_sequence: 256,
        sequences: 1,
        target,
        achieved: target,
    })
}

/// `uniform`, `zipf:S`, `lognormal:SIGMA`, `dirichlet:ALPHA`.
fn parse_skew(s: &str) -> miette::Result<Skew> {
    let (name, val) = s.split_once(':').unwrap_or((s, ""));
    let num = || {
        val.parse::<f64>().map_err(|_| {
            miette!("--skew {s}: expected uniform, zipf:S, lognormal:SIGMA or dirichlet:ALPHA with a number")
        })
    };
    Ok(match name {
        "uniform" => Skew::Uniform,
        "zipf" => Skew::Zipf { s: num()? },
        "lognormal" => Skew::LogNormal { sigma: num()? },
        "dirichlet" => Skew::Dirichlet { alpha: num()? },
        _ => {
            return Err(miette!(
                "--skew {s}: expected uniform, zipf:S, lognormal:SIGMA or dirichlet:ALPHA"
            ));
        }
    })
}

fn print_fit(f: &Fit) {
    let m = &f.model;
    println!(
        "fitted model: {} layers, {} experts, top-{}",
        m.layers, m.experts, m.top_k
    );
    println!("  skew              {:?}", m.skew);
    println!("  locality          {:.4}", m.locality);
    println!("  null expert prob  {:.4}", m.null_expert_prob);
    println!(
        "  drift             sigma {:.4}, persistence {:.2} per {} tokens",
        m.drift.sigma, m.drift.persistence, m.drift.block_tokens
    );
    println!("{:>22} {:>10} {:>10}", "statistic", "trace", "generated");
    let (t, a) = (&f.target, &f.achieved);
    for (n, x, y) in [
        ("gini", t.gini, a.gini),
        ("load max/mean", t.load_max_over_mean, a.load_max_over_mean),
        ("locality", t.locality, a.locality),
        ("drift TV lag 1", t.drift_tv, a.drift_tv),
        ("drift TV lag 4", t.drift_tv_lag4, a.drift_tv_lag4),
        (
            "experts per token",
            t.mean_experts_per_token,
            a.mean_experts_per_token,
        ),
    ] {
        println!("{n:>22} {x:>10.4} {y:>10.4}");
    }
}

fn print_stats(head: &str, st: &moesim_traces::stats::TraceStats) {
    println!("{head}");
    for n in &st.notes {
        println!("note: {n}");
    }
    let sizes: Vec<String> = st.cache_sizes.iter().map(|c| c.to_string()).collect();
    print!(
        "{:>6} {:>9} {:>8} {:>6} {:>6} {:>5} {:>8} {:>8}",
        "layer", "tokens", "max/mean", "gini", "cv", "zero", "rank-imb", "locality"
    );
    for s in &sizes {
        print!(" {:>9}", format!("lru@{s}"));
        print!(" {:>9}", format!("opt@{s}"));
    }
    println!();
    for l in st.layers.iter().chain(std::iter::once(&st.overall)) {
        let name = if l.layer < 0 {
            "all".to_string()
        } else {
            l.layer.to_string()
        };
        print!(
            "{:>6} {:>9} {:>8.3} {:>6.3} {:>6.3} {:>5.1} {:>8.3} {:>8}",
            name,
            l.tokens,
            l.load_max_over_mean,
            l.gini,
            l.cv,
            l.zero_load_experts,
            l.rank_max_over_mean,
            l.locality.map_or("-".to_string(), |x| format!("{x:.3}"))
        );
        for s in &sizes {
            let f = |m: &std::collections::BTreeMap<String, f64>| {
                m.get(s).map_or("-".into(), |x| format!("{x:.4}"))
            };
            print!(" {:>9} {:>9}", f(&l.lru_hit_rate), f(&l.belady_hit_rate));
        }
        println!();
    }
}
