//! Chrome trace event format (the JSON that ui.perfetto.dev and chrome://tracing open): simulated
//! iterations as one track per GPU stream, and a checker for the format.
//!
//! Layout: one process per GPU (`pid` = rank, named "GPU r"), one thread per stream (`tid` = the stream's
//! index: compute, comm, comm-aux, h2d, d2h, host-cpu), one more process "iterations" with a span per
//! iteration, and under the flow network backend a process "links" with one thread per link and a span per
//! flow on it. Iterations are laid end to end: iteration i starts where iteration i−1's step ended. Times are
//! microseconds.

use moesim_sim::engine::SimTime;
use moesim_sim::iteration::Stream;
use moesim_sim::timeline::{IterationTimeline, stream_name};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Tracks per link: concurrent flows beyond this many share the last lane's track.
const LANES: usize = 4096;

fn us(t: SimTime) -> f64 {
    t as f64 * 1e-6
}

/// The trace of consecutive iterations of one strategy on `gpus` GPUs, as a JSON document.
pub fn chrome_trace(strategy: &str, gpus: usize, iterations: &[IterationTimeline]) -> Value {
    let mut events = Vec::new();
    let streams = Stream::ALL;
    for rank in 0..gpus {
        events.push(
            json!({"name": "process_name", "ph": "M", "pid": rank, "tid": 0,
            "args": {"name": format!("GPU {rank}")}}),
        );
        events.push(
            json!({"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0,
            "args": {"sort_index": rank}}),
        );
        for s in streams {
            events.push(
                json!({"name": "thread_name", "ph": "M", "pid": rank, "tid": s.index(),
                "args": {"name": stream_name(s)}}),
            );
        }
    }
    let marker = gpus;
    events.push(
        json!({"name": "process_name", "ph": "M", "pid": marker, "tid": 0,
        "args": {"name": "iterations"}}),
    );
    events.push(
        json!({"name": "process_sort_index", "ph": "M", "pid": marker, "tid": 0,
        "args": {"sort_index": gpus}}),
    );
    let links_pid = gpus + 1;
    let mut link_names: BTreeMap<usize, String> = BTreeMap::new();
    let mut offset: SimTime = 0;
    for it in iterations {
        events.push(
            json!({"name": format!("iteration {}", it.iteration), "cat": "iteration",
            "ph": "X", "pid": marker, "tid": 0, "ts": us(offset), "dur": us(it.step),
            "args": {"step_ms": it.step as f64 * 1e-9,
                     "straggler": it.straggler.map(|s| s.0),
                     "cause": it.straggler.map(|s| s.1.as_str())}}),
        );
        let mut ops = it.ops.clone();
        ops.sort_by_key(|o| (o.rank, o.stream, o.start, o.finish));
        for o in ops {
            events.push(
                json!({"name": o.phase.name(), "cat": stream_name(o.stream), "ph": "X",
                "pid": o.rank, "tid": o.stream.index(), "ts": us(offset + o.start),
                "dur": us(o.finish - o.start), "args": {"iteration": it.iteration}}),
            );
        }
        // Flows share a link at the same time: each goes to the first lane of its link that is free
        // (interval partitioning), one track per (link, lane).
        let mut uses: Vec<&moesim_sim::timeline::LinkUse> = it.links.iter().collect();
        uses.sort_by_key(|l| (l.link, l.start, l.finish));
        let mut lanes: BTreeMap<u32, Vec<SimTime>> = BTreeMap::new();
        for l in uses {
            let ends = lanes.entry(l.link).or_default();
            let lane = match ends.iter().position(|&end| end <= l.start) {
                Some(k) => k,
                None => {
                    ends.push(0);
                    ends.len() - 1
                }
            };
            ends[lane] = l.finish;
            let tid = l.link as usize * LANES + lane.min(LANES - 1);
            link_names
                .entry(tid)
                .or_insert_with(|| format!("{} #{lane}", l.name));
            events.push(
                json!({"name": format!("{}→{}", l.src, l.dst), "cat": "link", "ph": "X",
                "pid": links_pid, "tid": tid, "ts": us(offset + l.start),
                "dur": us(l.finish - l.start),
                "args": {"iteration": it.iteration, "bytes": l.bytes}}),
            );
        }
        offset += it.step;
    }
    if !link_names.is_empty() {
        events.push(
            json!({"name": "process_name", "ph": "M", "pid": links_pid, "tid": 0,
            "args": {"name": "links"}}),
        );
        for (id, name) in &link_names {
            events.push(
                json!({"name": "thread_name", "ph": "M", "pid": links_pid, "tid": id,
                "args": {"name": name}}),
            );
        }
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"strategy": strategy, "gpus": gpus, "generator": "moesim"},
    })
}

/// What a valid trace holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSummary {
    /// Complete ("X") events.
    pub spans: usize,
    /// Per (pid, tid): summed span durations, microseconds.
    pub busy_us: BTreeMap<(u64, u64), f64>,
    /// The latest span end, microseconds.
    pub end_us: f64,
}

/// Checks a trace against the Chrome trace event format as Perfetto reads it: a `traceEvents` array of
/// objects with `name`, `ph`, `pid`, `tid`; complete events with numeric `ts` and `dur ≥ 0`; per track,
/// spans in file order start no earlier than the previous one and do not overlap (a GPU stream runs one
/// operation at a time).
pub fn validate_chrome_trace(text: &str) -> Result<TraceSummary, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let events = doc
        .get("traceEvents")
        .and_then(Value::as_array)
        .ok_or("no `traceEvents` array")?;
    let mut summary = TraceSummary::default();
    let mut last: BTreeMap<(u64, u64), (f64, f64)> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let at = |what: &str| format!("event {i}: {what}");
        let obj = e.as_object().ok_or_else(|| at("not an object"))?;
        for f in ["name", "ph", "pid", "tid"] {
            if !obj.contains_key(f) {
                return Err(at(&format!("missing `{f}`")));
            }
        }
        let ph = obj["ph"]
            .as_str()
            .ok_or_else(|| at("`ph` is not a string"))?;
        let pid = obj["pid"]
            .as_u64()
            .ok_or_else(|| at("`pid` is not an id"))?;
        let tid = obj["tid"]
            .as_u64()
            .ok_or_else(|| at("`tid` is not an id"))?;
        match ph {
            "M" => {
                if !obj.get("args").is_some_and(Value::is_object) {
                    return Err(at("metadata without `args`"));
                }
            }
            "X" => {
                let ts = obj
                    .get("ts")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| at("no numeric `ts`"))?;
                let dur = obj
                    .get("dur")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| at("no numeric `dur`"))?;
                if !(ts.is_finite() && ts >= 0.0) {
                    return Err(at(&format!("bad timestamp {ts}")));
                }
                if !(dur.is_finite() && dur >= 0.0) {
                    return Err(at(&format!("negative or bad duration {dur}")));
                }
                if let Some(&(prev_ts, prev_end)) = last.get(&(pid, tid)) {
                    // Float µs of integer ps: allow rounding of one part in 1e9.
                    let eps = 1e-9 * prev_end.max(1.0);
                    if ts + eps < prev_ts {
                        return Err(at(&format!(
                            "timestamp {ts} before {prev_ts} on track {pid}/{tid}"
                        )));
                    }
                    if ts + eps < prev_end {
                        return Err(at(&format!(
                            "span at {ts} overlaps the previous one (ends {prev_end}) on track {pid}/{tid}"
                        )));
                    }
                }
                last.insert((pid, tid), (ts, ts + dur));
                *summary.busy_us.entry((pid, tid)).or_default() += dur;
                summary.spans += 1;
                summary.end_us = summary.end_us.max(ts + dur);
            }
            other => return Err(at(&format!("unexpected phase type `{other}`"))),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_sim::phase::Phase;
    use moesim_sim::timeline::TimedOp;

    fn op(rank: usize, stream: Stream, start: SimTime, finish: SimTime) -> TimedOp {
        TimedOp {
            rank,
            stream,
            phase: Phase::ExpertCompute,
            start,
            finish,
        }
    }

    fn iteration(i: usize, step: SimTime, ops: Vec<TimedOp>) -> IterationTimeline {
        IterationTimeline {
            iteration: i,
            step,
            ops,
            links: vec![],
            busy: vec![],
            tokens_received: vec![],
            peak_layer_tokens: vec![],
            activation_tokens: vec![],
            straggler: None,
        }
    }

    #[test]
    fn iterations_are_laid_end_to_end_and_validate() {
        let a = iteration(
            3,
            1_000_000,
            vec![
                op(0, Stream::Compute, 0, 400_000),
                op(1, Stream::Comm, 100_000, 1_000_000),
            ],
        );
        let b = iteration(
            4,
            2_000_000,
            vec![op(0, Stream::Compute, 500_000, 2_000_000)],
        );
        let text = chrome_trace("ep", 2, &[a, b]).to_string();
        let s = validate_chrome_trace(&text).unwrap();
        assert_eq!(s.spans, 5);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(s.busy_us[&(0, 0)], 0.4 + 1.5));
        assert!(close(s.busy_us[&(1, 1)], 0.9));
        assert!(close(s.end_us, 3.0));
        assert!(
            close(s.busy_us[&(2, 0)], 3.0),
            "the iteration track spans both steps"
        );
    }

    #[test]
    fn the_checker_rejects_what_perfetto_would_misread() {
        let check =
            |events: &str| validate_chrome_trace(&format!("{{\"traceEvents\": [{events}]}}"));
        assert!(check(r#"{"name":"a","ph":"X","pid":0,"tid":0,"ts":0,"dur":1}"#).is_ok());
        assert!(
            check(r#"{"name":"a","ph":"X","pid":0,"ts":0,"dur":1}"#)
                .unwrap_err()
                .contains("tid")
        );
        assert!(
            check(r#"{"name":"a","ph":"X","pid":0,"tid":0,"ts":0,"dur":-1}"#)
                .unwrap_err()
                .contains("duration")
        );
        assert!(
            check(r#"{"name":"a","ph":"X","pid":0,"tid":0,"dur":1}"#)
                .unwrap_err()
                .contains("ts")
        );
        let backwards = r#"{"name":"a","ph":"X","pid":0,"tid":0,"ts":5,"dur":1},{"name":"b","ph":"X","pid":0,"tid":0,"ts":2,"dur":1}"#;
        assert!(check(backwards).unwrap_err().contains("before"));
        let overlap = r#"{"name":"a","ph":"X","pid":0,"tid":0,"ts":0,"dur":3},{"name":"b","ph":"X","pid":0,"tid":0,"ts":2,"dur":1}"#;
        assert!(check(overlap).unwrap_err().contains("overlaps"));
        let other_track = r#"{"name":"a","ph":"X","pid":0,"tid":0,"ts":5,"dur":1},{"name":"b","ph":"X","pid":0,"tid":1,"ts":2,"dur":1}"#;
        assert!(check(other_track).is_ok());
        assert!(validate_chrome_trace("[]").is_err());
        assert!(validate_chrome_trace("{").is_err());
    }
}
