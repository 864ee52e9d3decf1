//! The request stream: arrival times from a Poisson or Gamma process or a trace, lengths from their
//! distributions or the trace.
//!
//! Seeded and deterministic: arrivals, prompt lengths and output lengths are three streams keyed by
//! (scenario seed, stream) through [`moesim_traces::rng`], so changing the output distribution leaves the
//! arrival times and prompts unchanged. Generation is sequential (a renewal process is), and cheap.

use crate::scenario::serving::MAX_REQUESTS;
use crate::serving::config::{Arrival, Lengths, RequestStream};
use crate::serving::lengths::LengthSampler;
use moesim_traces::requests::TraceRequest;
use moesim_traces::rng::rng_for;
use rand_distr::{Distribution, Exp, Gamma};
use serde::{Deserialize, Serialize};

/// One request to serve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: usize,
    /// Seconds after the run starts.
    pub arrival_s: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
}

/// Inter-arrival times.
enum Gap {
    Exp(Exp<f64>),
    Gamma(Gamma<f64>),
    /// The trace's arrival times.
    Trace,
}

const ARRIVALS: u64 = 0x5345_5256_4152; // "SERVAR"
const PROMPTS: u64 = 0x5345_5256_5052; // "SERVPR"
const OUTPUTS: u64 = 0x5345_5256_4f55; // "SERVOU"

/// The requests of a run, in arrival order. `trace`: the request trace the stream names (read by the
/// caller); required when arrivals or lengths come from it.
pub fn requests(
    stream: &RequestStream,
    seed: u64,
    trace: Option<&[TraceRequest]>,
) -> Result<Vec<Request>, String> {
    let uses_trace = stream.arrival == Arrival::Trace
        || stream.prompt == Lengths::Trace
        || stream.output == Lengths::Trace;
    let trace = match trace {
        Some(t) if !t.is_empty() => t,
        Some(_) => return Err("the request trace holds no requests".into()),
        None if uses_trace => {
            return Err(
                "workload.serving: the stream takes arrivals or lengths from a trace, but no \
                        request trace was given"
                    .into(),
            );
        }
        None => &[],
    };
    let limit = stream.max_requests.unwrap_or(usize::MAX);
    if stream.arrival == Arrival::Trace
        && limit > MAX_REQUESTS
        && trace
            .iter()
            .take_while(|r| r.arrival_s <= stream.duration_s.unwrap_or(f64::INFINITY))
            .nth(MAX_REQUESTS)
            .is_some()
    {
        return Err(format!(
            "workload.serving.trace: the trace holds more than {MAX_REQUESTS} requests within the run; set \
             workload.serving.max_requests or duration_s"
        ));
    }
    let horizon = stream.duration_s.unwrap_or(f64::INFINITY);
    let mut arrival_rng = rng_for(seed, &[ARRIVALS]);
    let gap = match stream.arrival {
        Arrival::Poisson { rate_per_s } => {
            Gap::Exp(Exp::new(rate_per_s).map_err(|e| format!("rate_per_s: {e}"))?)
        }
        // Shape k = 1/cv², scale 1/(rate·k): mean 1/rate, CV cv.
        Arrival::Gamma { rate_per_s, cv } => {
            let k = 1.0 / (cv * cv);
            Gap::Gamma(Gamma::new(k, 1.0 / (rate_per_s * k)).map_err(|e| format!("cv: {e}"))?)
        }
        Arrival::Trace => Gap::Trace,
    };
    let prompt = LengthSampler::new(stream.prompt);
    let output = LengthSampler::new(stream.output);
    let mut prompt_rng = rng_for(seed, &[PROMPTS]);
    let mut output_rng = rng_for(seed, &[OUTPUTS]);
    let mut out = Vec::new();
    let mut t = 0.0;
    for id in 0..limit {
        // Lengths from a trace with synthetic arrivals cycle through the trace in its order.
        let row = (!trace.is_empty()).then(|| trace[id % trace.len()]);
        let arrival_s = match &gap {
            Gap::Exp(d) => {
                t += d.sample(&mut arrival_rng);
                t
            }
            Gap::Gamma(d) => {
                t += d.sample(&mut arrival_rng);
                t
            }
            Gap::Trace => {
                if id >= trace.len() {
                    break;
                }
                trace[id].arrival_s
            }
        };
        if arrival_s > horizon {
            break;
        }
        out.push(Request {
            id,
            arrival_s,
            prompt_tokens: prompt.sample(&mut prompt_rng, row.map_or(0, |r| r.prompt_tokens)),
            output_tokens: output.sample(&mut output_rng, row.map_or(0, |r| r.output_tokens)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(arrival: Arrival, duration: f64) -> RequestStream {
        RequestStream {
            arrival,
            duration_s: Some(duration),
            max_requests: None,
            trace: None,
            trace_format: None,
            prompt: Lengths::Fixed { tokens: 10 },
            output: Lengths::Fixed { tokens: 5 },
        }
    }

    /// Mean and CV of the inter-arrival gaps.
    fn gaps(r: &[Request]) -> (f64, f64) {
        let g: Vec<f64> = r
            .windows(2)
            .map(|w| w[1].arrival_s - w[0].arrival_s)
            .collect();
        let n = g.len() as f64;
        let mean = g.iter().sum::<f64>() / n;
        let sd = (g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        (mean, sd / mean)
    }

    #[test]
    fn poisson_and_gamma_gaps_have_their_mean_and_cv() {
        // 100 requests/s for 1000 s: 1e5 gaps; the mean's standard error is 1 % / √1e5·… ≈ 3e-5 s.
        let p = requests(
            &stream(Arrival::Poisson { rate_per_s: 100.0 }, 1000.0),
            3,
            None,
        )
        .unwrap();
        let (mean, cv) = gaps(&p);
        assert!((mean - 0.01).abs() < 2e-4, "{mean}");
        assert!((cv - 1.0).abs() < 0.02, "{cv}");
        let g = requests(
            &stream(
                Arrival::Gamma {
                    rate_per_s: 100.0,
                    cv: 3.0,
                },
                1000.0,
            ),
            3,
            None,
        )
        .unwrap();
        let (mean, cv) = gaps(&g);
        // Bursty gaps vary more: the mean's standard error is 3× Poisson's.
        assert!((mean - 0.01).abs() < 6e-4, "{mean}");
        assert!((cv - 3.0).abs() < 0.15, "{cv}");
        assert!(g.iter().all(|r| r.arrival_s <= 1000.0));
    }

    #[test]
    fn the_same_seed_gives_the_same_stream_and_traces_replay_in_order() {
        let s = stream(Arrival::Poisson { rate_per_s: 5.0 }, 100.0);
        assert_eq!(
            requests(&s, 9, None).unwrap(),
            requests(&s, 9, None).unwrap()
        );
        assert_ne!(
            requests(&s, 9, None).unwrap(),
            requests(&s, 10, None).unwrap()
        );
        let trace = [
            TraceRequest {
                arrival_s: 0.0,
                prompt_tokens: 3,
                output_tokens: 4,
            },
            TraceRequest {
                arrival_s: 0.5,
                prompt_tokens: 6,
                output_tokens: 7,
            },
        ];
        let mut t = stream(Arrival::Trace, 10.0);
        t.prompt = Lengths::Trace;
        t.output = Lengths::Trace;
        let r = requests(&t, 0, Some(&trace)).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[1].arrival_s, r[1].prompt_tokens, r[1].output_tokens),
            (0.5, 6, 7)
        );
        assert!(
            requests(&t, 0, None)
                .unwrap_err()
                .contains("no request trace")
        );
    }
}
