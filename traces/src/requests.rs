//! Request traces for serving simulations: when each request arrived and how many prompt and output
//! tokens it had, read from the public formats people publish.
//!
//! | format | file | columns / keys |
//! | --- | --- | --- |
//! | `azure` | CSV (Azure LLM inference traces 2023/2024) | `TIMESTAMP` (date-time or seconds), `ContextTokens`, `GeneratedTokens` |
//! | `burstgpt` | CSV (BurstGPT) | `Timestamp` (seconds), `Request tokens`, `Response tokens` (others ignored) |
//! | `mooncake` | JSONL (Mooncake traces) | `timestamp` (milliseconds), `input_length`, `output_length` |
//!
//! Arrival times are made relative to the earliest request and sorted (stable: equal times keep file
//! order), so a trace replays from t = 0. Requests with no prompt or no output tokens (BurstGPT logs failed
//! requests with 0 response tokens) cannot be served and are skipped and counted, not silently kept.
//! Every error names the file, the line and the field.

use crate::error::{TraceError, TraceResult};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;

/// One request of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Seconds after the trace's first request.
    pub arrival_s: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
}

/// A request trace as read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestTrace {
    /// Requests in arrival order.
    pub requests: Vec<TraceRequest>,
    /// Rows skipped because they had no prompt or no output tokens.
    pub skipped: usize,
}

/// Request-trace formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestFormat {
    Azure,
    Burstgpt,
    Mooncake,
}

impl RequestFormat {
    pub const ALL: [RequestFormat; 3] = [
        RequestFormat::Azure,
        RequestFormat::Burstgpt,
        RequestFormat::Mooncake,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RequestFormat::Azure => "azure",
            RequestFormat::Burstgpt => "burstgpt",
            RequestFormat::Mooncake => "mooncake",
        }
    }
}

impl std::str::FromStr for RequestFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RequestFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown request-trace format `{s}` (expected azure, burstgpt or mooncake)")
            })
    }
}

/// Largest accepted prompt or output length (tokens): far beyond any model's context, small enough that
/// sums over an hour of requests stay exact in `u64` and `f64`.
pub const MAX_REQUEST_TOKENS: u64 = 1 << 24;

/// Reads a request trace. `format`: as given, else `.jsonl` is Mooncake and a `.csv` file is told apart
/// by its header (`ContextTokens` → Azure, `Request tokens` → BurstGPT).
pub fn read_requests(path: &Path, format: Option<RequestFormat>) -> TraceResult<RequestTrace> {
    let file = std::fs::File::open(path).map_err(|e| TraceError::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let format = match format {
        Some(f) => f,
        None => detect(path, &mut reader)?,
    };
    let mut trace = match format {
        RequestFormat::Mooncake => read_mooncake(path, reader)?,
        RequestFormat::Azure => read_csv(
            path,
            reader,
            ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
        )?,
        RequestFormat::Burstgpt => read_csv(
            path,
            reader,
            ["Timestamp", "Request tokens", "Response tokens"],
        )?,
    };
    if trace.requests.is_empty() {
        return Err(TraceError::file(
            path,
            format!(
                "no servable request ({} rows skipped for zero prompt or output tokens)",
                trace.skipped
            ),
        ));
    }
    let t0 = trace
        .requests
        .iter()
        .map(|r| r.arrival_s)
        .fold(f64::INFINITY, f64::min);
    for r in &mut trace.requests {
        r.arrival_s -= t0;
    }
    trace
        .requests
        .sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    Ok(trace)
}

fn detect(path: &Path, reader: &mut impl BufRead) -> TraceResult<RequestFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => return Ok(RequestFormat::Mooncake),
        Some("csv") => {}
        _ => {
            return Err(TraceError::file(
                path,
                "cannot tell the request-trace format from the extension (expected .csv or .jsonl); \
                 set workload.serving.trace_format to azure, burstgpt or mooncake",
            ));
        }
    }
    let head = reader.fill_buf().map_err(|e| TraceError::io(path, e))?;
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    if first.contains("ContextTokens") {
        Ok(RequestFormat::Azure)
    } else if first.contains("Request tokens") {
        Ok(RequestFormat::Burstgpt)
    } else {
        Err(TraceError::at(
            path,
            "line 1",
            "header names neither Azure's `ContextTokens` nor BurstGPT's `Request tokens`; set \
             workload.serving.trace_format",
        ))
    }
}

/// A token count: a non-negative integer at most [`MAX_REQUEST_TOKENS`].
fn tokens(path: &Path, line: u64, field: &str, text: &str) -> TraceResult<u64> {
    let text = text.trim();
    let v: u64 = text
        .parse()
        .or_else(|_| {
            // Some dumps write counts as floats ("512.0"); accept whole ones.
            text.parse::<f64>()
                .ok()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_REQUEST_TOKENS as f64)
                .map(|f| f as u64)
                .ok_or(())
        })
        .map_err(|_| {
            TraceError::at(
                path,
                format!("line {line}, field `{field}`"),
                format!("`{text}` is not a token count (expected a non-negative integer)"),
            )
        })?;
    if v > MAX_REQUEST_TOKENS {
        return Err(TraceError::at(
            path,
            format!("line {line}, field `{field}`"),
            format!("{v} tokens is beyond the largest accepted length ({MAX_REQUEST_TOKENS})"),
        ));
    }
    Ok(v)
}

/// A time in seconds: a finite number, or (Azure) a date-time `YYYY-MM-DD HH:MM:SS[.fraction]`.
fn seconds(path: &Path, line: u64, field: &str, text: &str, scale: f64) -> TraceResult<f64> {
    let text = text.trim();
    let v = text
        .parse::<f64>()
        .ok()
        .map(|v| v * scale)
        .or_else(|| date_time_s(text));
    match v {
        Some(v) if v.is_finite() => Ok(v),
        _ => Err(TraceError::at(
            path,
            format!("line {line}, field `{field}`"),
            format!("`{text}` is not a time (expected seconds or YYYY-MM-DD HH:MM:SS[.fraction])"),
        )),
    }
}

/// Seconds since 1970-01-01 of a UTC date-time `YYYY-MM-DD HH:MM:SS[.fraction]` (a `T` may separate date
/// and time; a trailing `Z` or `+00:00` is accepted).
pub fn date_time_s(text: &str) -> Option<f64> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))
        .unwrap_or(text);
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let min: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next()?.parse().ok()?;
    if t.next().is_some() || !(0..24).contains(&h) || !(0..60).contains(&min) {
        return None;
    }
    if !(0.0..61.0).contains(&sec) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + (h * 3600 + min * 60) as f64 + sec)
}

fn push(trace: &mut RequestTrace, arrival_s: f64, prompt: u64, output: u64) {
    if prompt == 0 || output == 0 {
        trace.skipped += 1;
    } else {
        trace.requests.push(TraceRequest {
            arrival_s,
            prompt_tokens: prompt,
            output_tokens: output,
        });
    }
}

fn read_csv(path: &Path, reader: impl BufRead, columns: [&str; 3]) -> TraceResult<RequestTrace> {
    let mut rd = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(reader);
    let header = rd
        .headers()
        .map_err(|e| TraceError::at(path, "line 1", format!("cannot read the header: {e}")))?
        .clone();
    let index: Vec<usize> = columns
        .iter()
        .map(|c| {
            header.iter().position(|h| h.trim() == *c).ok_or_else(|| {
                TraceError::at(
                    path,
                    "line 1",
                    format!(
                        "no column `{c}` (the header has: {})",
                        header.iter().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        })
        .collect::<TraceResult<_>>()?;
    let mut trace = RequestTrace::default();
    for rec in rd.records() {
        let (rec, line) = crate::import::csv_record(path, rec)?;
        let field = |i: usize| rec.get(index[i]).unwrap_or_default();
        let t = seconds(path, line, columns[0], field(0), 1.0)?;
        let p = tokens(path, line, columns[1], field(1))?;
        let o = tokens(path, line, columns[2], field(2))?;
        push(&mut trace, t, p, o);
    }
    Ok(trace)
}

#[derive(Deserialize)]
struct MooncakeRow {
    timestamp: serde_json::Value,
    input_length: serde_json::Value,
    output_length: serde_json::Value,
}

fn read_mooncake(path: &Path, reader: impl BufRead) -> TraceResult<RequestTrace> {
    let mut trace = RequestTrace::default();
    for (n, line) in reader.lines().enumerate() {
        let line_no = n as u64 + 1;
        let line = line.map_err(|e| {
            TraceError::at(path, format!("line {line_no}"), format!("cannot read: {e}"))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let row: MooncakeRow = serde_json::from_str(&line).map_err(|e| {
            TraceError::at(
                path,
                format!("line {line_no}"),
                format!(
                    "not a Mooncake request (a JSON object with timestamp, input_length, output_length): {e}"
                ),
            )
        })?;
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let t = seconds(path, line_no, "timestamp", &text(&row.timestamp), 1e-3)?;
        let p = tokens(path, line_no, "input_length", &text(&row.input_length))?;
        let o = tokens(path, line_no, "output_length", &text(&row.output_length))?;
        push(&mut trace, t, p, o);
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn azure_date_times_become_seconds_after_the_first_request() {
        let (_d, p) = write(
            "azure.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:15:46.6805900,374,44\n\
             2023-11-16 18:15:50.9951690,396,109\n\
             2023-11-16 18:16:00.0000000,0,5\n",
        );
        let t = read_requests(&p, None).unwrap();
        assert_eq!(t.skipped, 1);
        assert_eq!(t.requests.len(), 2);
        assert_eq!(t.requests[0].arrival_s, 0.0);
        assert!((t.requests[1].arrival_s - 4.314579).abs() < 1e-6);
        assert_eq!(
            (t.requests[1].prompt_tokens, t.requests[1].output_tokens),
            (396, 109)
        );
        // The epoch conversion itself: a known instant.
        assert_eq!(date_time_s("2000-03-01 00:00:00"), Some(951_868_800.0));
    }

    #[test]
    fn burstgpt_and_mooncake_rows_are_read_and_sorted() {
        let (_d, p) = write(
            "b.csv",
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
             10.5,ChatGPT,472,18,490,Conversation log\n5,GPT-4,1000,0,1000,Conversation log\n\
             3,GPT-4,20,7,27,API log\n",
        );
        let t = read_requests(&p, None).unwrap();
        assert_eq!(t.skipped, 1);
        assert_eq!(t.requests[0].prompt_tokens, 20);
        assert_eq!(t.requests[1].arrival_s, 7.5);
        let (_d2, q) = write(
            "m.jsonl",
            "{\"timestamp\": 0, \"input_length\": 6955, \"output_length\": 52, \"hash_ids\": [1]}\n\n\
             {\"timestamp\": 1500, \"input_length\": 10, \"output_length\": 3}\n",
        );
        let t = read_requests(&q, None).unwrap();
        assert_eq!(t.requests.len(), 2);
        assert_eq!(t.requests[1].arrival_s, 1.5);
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let (_d, p) = write(
            "a.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3\n2,-4,3\n",
        );
        let e = read_requests(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("a.csv, line 3, field `ContextTokens`: `-4`"),
            "{e}"
        );
        let (_d, p) = write("m.jsonl", "{\"timestamp\": 0, \"input_length\": 5}\n");
        let e = read_requests(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("m.jsonl, line 1") && e.contains("output_length"),
            "{e}"
        );
        let (_d, p) = write("x.csv", "a,b\n1,2\n");
        let e = read_requests(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("x.csv, line 1") && e.contains("trace_format"),
            "{e}"
        );
        let (_d, p) = write("b.csv", "Timestamp,Model,Request tokens\n1,m,2\n");
        let e = read_requests(&p, Some(RequestFormat::Burstgpt))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column `Response tokens`"), "{e}");
        let (_d, p) = write(
            "t.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\nsoon,2,3\n",
        );
        let e = read_requests(&p, None).unwrap_err().to_string();
        assert!(e.contains("line 2, field `TIMESTAMP`"), "{e}");
    }
}
