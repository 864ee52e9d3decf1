//! `moesim sweep SWEEP.toml --shard-index I --shard-count N --out DIR` runs one shard of a sweep;
//! `moesim sweep merge DIR` combines the shards into `DIR/merged.json`, which `moesim report` renders.

use crate::output;
use miette::{IntoDiagnostic, WrapErr, miette};
use moesim_reports::sweep::{SweepShard, merge, parse_sweep, run_point, shard};
use moesim_sim::scenario::parse_scenario;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Flags of `moesim sweep`.
#[derive(clap::Args, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    /// The sweep file (TOML): scenarios and a grid of overrides.
    #[arg(required = true)]
    pub sweep: Option<PathBuf>,
    /// This shard's number, from 0 (default: $SLURM_ARRAY_TASK_ID − $SLURM_ARRAY_TASK_MIN, else
    /// $JOB_COMPLETION_INDEX, else 0).
    #[arg(long)]
    pub shard_index: Option<usize>,
    /// How many shards the sweep is split into (default: $SLURM_ARRAY_TASK_COUNT, else 1).
    #[arg(long)]
    pub shard_count: Option<usize>,
    /// Folder for the shard files.
    #[arg(long, default_value = "out/sweep")]
    pub out: PathBuf,
}

#[derive(clap::Subcommand, Clone)]
pub enum SweepCommand {
    /// Combine the shard files in DIR into DIR/merged.json.
    Merge {
        /// The folder the shards wrote to.
        dir: PathBuf,
    },
}

fn env_number(name: &str) -> miette::Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| miette!("${name} = {v:?} is not a shard number")),
        Err(_) => Ok(None),
    }
}

/// The shard this process runs: flags first, then the array-job environment.
fn shard_of(a: &SweepArgs) -> miette::Result<(usize, usize)> {
    let index = match a.shard_index {
        Some(i) => i,
        None => match env_number("SLURM_ARRAY_TASK_ID")? {
            Some(id) => id - env_number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0).min(id),
            None => env_number("JOB_COMPLETION_INDEX")?.unwrap_or(0),
        },
    };
    let count = match a.shard_count {
        Some(c) => c,
        None => env_number("SLURM_ARRAY_TASK_COUNT")?.unwrap_or(1),
    };
    if count == 0 || index >= count {
        return Err(miette!(
            "shard index {index} is not below the shard count {count}; pass --shard-count (a Kubernetes \
             Indexed Job sets only the index)"
        ));
    }
    Ok((index, count))
}

pub fn run(a: &SweepArgs, quiet: bool) -> miette::Result<ExitCode> {
    if let Some(SweepCommand::Merge { dir }) = &a.command {
        return run_merge(dir);
    }
    let path = a
        .sweep
        .as_ref()
        .ok_or_else(|| miette!("name a sweep file"))?;
    let text = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read sweep {}", path.display()))?;
    let spec = parse_sweep(&path.display().to_string(), &text).map_err(|e| miette!("{e}"))?;
    let (index, count) = shard_of(a)?;
    let all = spec.points();
    let mine = shard(&all, index, count);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    let mut total = 0u64;
    for p in &mine {
        if !texts.contains_key(&p.scenario) {
            let file = base.join(&p.scenario);
            let t = std::fs::read_to_string(&file)
                .into_diagnostic()
                .wrap_err_with(|| {
                    format!(
                        "{}: cannot read scenario {}",
                        path.display(),
                        file.display()
                    )
                })?;
            texts.insert(p.scenario.clone(), t);
        }
        let s = parse_scenario(
            &base.join(&p.scenario).display().to_string(),
            &texts[&p.scenario],
            &p.overrides,
        )?;
        total += (s.workload.iterations * s.strategies.len()) as u64;
    }
    let bar = output::progress(total, quiet);
    bar.set_message(format!("{} shard {index}/{count}", spec.name));
    let tick = || bar.inc(1);
    let points = mine
        .iter()
        .map(|p| run_point(p, &base.join(&p.scenario), &texts[&p.scenario], Some(&tick)))
        .collect::<Result<Vec<_>, _>>()?;
    bar.finish_and_clear();
    let out = SweepShard {
        sweep: spec.name.clone(),
        total_points: all.len(),
        shard_index: index,
        shard_count: count,
        points,
    };
    let file = a.out.join(format!("shard-{index:04}-of-{count:04}.json"));
    output::write_atomic(
        &file,
        serde_json::to_string_pretty(&out)
            .expect("serialisable")
            .as_bytes(),
    )?;
    println!(
        "{}: {} of {} points written to {}",
        spec.name,
        mine.len(),
        all.len(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_merge(dir: &Path) -> miette::Result<ExitCode> {
    let mut shards = Vec::new();
    let entries = std::fs::read_dir(dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read sweep folder {}", dir.display()))?;
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".json"))
        })
        .collect();
    names.sort();
    for p in &names {
        let text = std::fs::read_to_string(p)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read {}", p.display()))?;
        let s: SweepShard = serde_json::from_str(&text)
            .into_diagnostic()
            .wrap_err_with(|| format!("{}: not a sweep shard file", p.display()))?;
        shards.push(s);
    }
    let merged = merge(shards).map_err(|e| miette!("{}: {e}", dir.display()))?;
    let file = dir.join("merged.json");
    output::write_atomic(
        &file,
        serde_json::to_string_pretty(&merged)
            .expect("serialisable")
            .as_bytes(),
    )?;
    println!(
        "{}: {} points from {} shards merged into {}",
        merged.sweep,
        merged.points.len(),
        merged.shard_count,
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}
