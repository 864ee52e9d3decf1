//! Serving against closed forms: M/D/1 queueing (Pollaczek–Khinchine), the unloaded engine against the
//! strategy's own prefill and decode steps, KV-cache capacity and preemption, determinism, conservation.

use super::config::{Arrival, EngineConfig, Policy};
use super::instance::{self, InstanceRun};
use super::step_cost::{self, Batch};
use super::*;
use crate::runner::{RunOptions, simulate_scenario, synthetic_routing};
use crate::scenario::parse_scenario;
use moesim_traces::requests::TraceRequest;

/// A serving scenario on `gpus` H100s of one node (OLMoE, two layers, no compute noise), `serving` lines
/// appended to `[workload.serving]`, `engine` to `[serving]`.
fn serving(gpus: usize, serving: &str, engine: &str) -> Scenario {
    let text = format!(
        "name = \"serve\"\nseed = 7\n[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\n\
         [cluster]\npreset = \"dgx-h100\"\ngpus_per_node = {gpus}\ncompute_noise_cv = 0.0\n\
         [workload]\nmode = \"serving\"\n[workload.serving]\n{serving}\n\
         [serving]\n{engine}\n[[strategy]]\nname = \"ep\"\nkind = \"ep\"\n"
    );
    parse_scenario("serve.toml", &text, &[]).unwrap()
}

/// The same model and cluster running one `mode` step of `micro_batch` sequences of `seq_len` tokens per
/// rank, as `moesim simulate` lowers it.
pub(super) fn step_ms(gpus: usize, mode: &str, seq_len: u64) -> f64 {
    let text = format!(
        "name = \"step\"\nseed = 7\n[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\nseq_len = {seq_len}\n\
         micro_batch = 1\n[cluster]\npreset = \"dgx-h100\"\ngpus_per_node = {gpus}\ncompute_noise_cv = 0.0\n\
         [workload]\nmode = \"{mode}\"\niterations = 1\n[[strategy]]\nname = \"ep\"\nkind = \"ep\"\n"
    );
    let s = parse_scenario("step.toml", &text, &[]).unwrap();
    let r = simulate_scenario(&s, &synthetic_routing(&s), None, RunOptions::default());
    r.results[0].step_time_ms.mean
}

#[test]
fn without_load_ttft_is_the_prefill_step_and_tpot_the_decode_step() {
    // One request per GPU, all at t = 0: each rank's share of the batch is one 512-token prompt, then one
    // sequence decoding at context 513 — exactly the prefill and decode steps of the step-level modes.
    for gpus in [1usize, 2] {
        let s = serving(
            gpus,
            "arrival = \"trace\"\ntrace = \"t.csv\"",
            "max_batch_tokens = 4096\nshape_bits = 0",
        );
        let trace: Vec<TraceRequest> = (0..gpus)
            .map(|_| TraceRequest {
                arrival_s: 0.0,
                prompt_tokens: 512,
                output_tokens: 2,
            })
            .collect();
        let r = simulate_serving(&s, Some(&trace), None).unwrap();
        let m = &r.results[0].metrics;
        let prefill = step_ms(gpus, "prefill", 512);
        let decode = step_ms(gpus, "decode", 513);
        eprintln!(
            "{gpus} GPU(s): TTFT {} ms vs prefill step {prefill} ms; TPOT {} ms vs decode step {decode} ms",
            m.ttft_ms.mean, m.tpot_ms.mean
        );
        assert_eq!(m.completed, gpus);
        // Equal up to the engine's whole picoseconds (the serving step adds its attention to a lowering
        // of its tokens: see step_cost).
        assert!((m.ttft_ms.max - prefill).abs() <= 1e-8 * prefill, "{gpus}");
        assert!((m.ttft_ms.p50 - prefill).abs() <= 1e-8 * prefill, "{gpus}");
        assert!((m.tpot_ms.max - decode).abs() <= 1e-8 * decode, "{gpus}");
        assert_eq!(m.queue_ms.max, 0.0);
        assert!(
            prefill > 2.0 * decode,
            "a 512-token prefill costs more than one decode"
        );
    }
}

#[test]
fn batch_size_one_with_a_fixed_service_time_is_m_d_1() {
    // max_seqs = 1 and one output token: every request is served by one prefill step of the same length D
    // (the strategy's lowering), so the queue is M/D/1 with ρ = λD. Pollaczek–Khinchine: the mean wait is
    // Wq = ρ·D / (2(1 − ρ)).
    let mut s = serving(
        1,
        "rate_per_s = 1.0\nmax_requests = 100000\nprompt = { dist = \"fixed\", tokens = 1024 }\n\
         output = { dist = \"fixed\", tokens = 1 }",
        "max_seqs = 1\nmax_batch_tokens = 1024",
    );
    let topo = crate::topology::Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let mut b = Batch::default();
    b.add_prefill(0, 1024);
    let bits = s.serving.as_ref().unwrap().engine.shape_bits;
    let d = step_cost::StepCost::new(&s, &s.strategies[0], &topo, &cost, bits).seconds(&b);
    let rho = 0.7;
    s.serving.as_mut().unwrap().requests.arrival = Arrival::Poisson {
        rate_per_s: rho / d,
    };
    let r = simulate_serving(&s, None, None).unwrap();
    let res = &r.results[0];
    assert_eq!(res.step_shapes, 1, "one service time");
    let waits: Vec<f64> = res.records.iter().map(|x| x.queue_ms.unwrap()).collect();
    let n = waits.len();
    assert_eq!(n, 100_000);
    let mean = waits.iter().sum::<f64>() / n as f64;
    // Waits are autocorrelated: the standard error comes from 20 batch means of 5000 consecutive requests.
    let batches: Vec<f64> = waits
        .chunks(n / 20)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let bm = batches.iter().sum::<f64>() / 20.0;
    let se = (batches.iter().map(|x| (x - bm).powi(2)).sum::<f64>() / 19.0).sqrt() / 20f64.sqrt();
    let pk = rho * d * 1e3 / (2.0 * (1.0 - rho));
    eprintln!(
        "M/D/1 ρ = {rho}, D = {} ms: simulated mean wait {mean} ms, Pollaczek–Khinchine {pk} ms, \
         standard error {se} ms ({:.2} SE apart)",
        d * 1e3,
        (mean - pk).abs() / se
    );
    assert!(se < 0.05 * pk, "the run is long enough to test anything");
    assert!((mean - pk).abs() < 4.0 * se, "{mean} vs {pk} ± {se}");
    // TTFT is the wait plus the service time.
    let ttft = res.metrics.ttft_ms.mean;
    assert!((ttft - mean - d * 1e3).abs() < 1e-6 * ttft, "{ttft}");
    // The server is busy a share ρ of the time (within the run's own arrival-rate noise).
    assert!(
        (res.metrics.busy_fraction - rho).abs() < 0.02,
        "{}",
        res.metrics.busy_fraction
    );
}

fn engine(kv_block: u64, max_seqs: usize) -> EngineConfig {
    EngineConfig {
        max_batch_tokens: 1 << 20,
        max_seqs,
        block_size: kv_block,
        kv_blocks: None,
        gpu_memory_utilization: 0.9,
        policy: Policy::DecodeFirst,
        shape_bits: 0,
    }
}

fn at_zero(n: usize, prompt: u64, output: u64) -> Vec<arrivals::Request> {
    (0..n)
        .map(|id| arrivals::Request {
            id,
            arrival_s: 0.0,
            prompt_tokens: prompt,
            output_tokens: output,
        })
        .collect()
}

/// Runs with a constant step time of 1 s; returns the run and the tokens every step computed.
fn run_unit(reqs: &[arrivals::Request], cfg: &EngineConfig, blocks: u64) -> (InstanceRun, u64) {
    let mut computed = 0;
    let run = instance::run(reqs, cfg, blocks, |b| {
        computed += b.tokens();
        1.0
    })
    .unwrap();
    (run, computed)
}

#[test]
fn a_cache_sized_for_n_sequences_never_holds_more_than_n() {
    // 64-token prompts fill 4 blocks of 16 and produce their one token: a 12-block cache holds 3 at once.
    let n = 3;
    let reqs = at_zero(10, 64, 1);
    let (run, computed) = run_unit(&reqs, &engine(16, 100), 4 * n);
    assert_eq!(run.peak_resident_seqs, n);
    assert_eq!(run.peak_batch_seqs, n);
    assert_eq!(run.kv_peak_blocks, 4 * n);
    assert_eq!(run.preemptions, 0);
    assert_eq!(run.steps, 4, "10 requests, 3 at a time");
    assert_eq!(computed, 10 * 64);
    assert!(run.served.iter().all(|s| s.finish_s.is_some()));
}

#[test]
fn a_full_cache_preempts_the_latest_admitted_and_it_recomputes() {
    // Two requests of prompt 4 and 3 output tokens, blocks of 4 tokens, 2 blocks: both prompts fit (a
    // block each) and produce their first token; A's second decode needs a second block, so B (admitted
    // last) is preempted. A finishes at step 3; B is admitted again at step 4, recomputes its prompt and
    // its first token (5 tokens) and produces its second, then its third at step 5.
    let reqs = at_zero(2, 4, 3);
    let (run, computed) = run_unit(&reqs, &engine(4, 8), 2);
    let [a, b] = [run.served[0], run.served[1]];
    assert_eq!((a.preemptions, b.preemptions, run.preemptions), (0, 1, 1));
    assert_eq!((a.first_token_s, a.finish_s), (Some(1.0), Some(3.0)));
    assert_eq!((b.first_token_s, b.finish_s), (Some(1.0), Some(5.0)));
    assert_eq!(run.steps, 5);
    // 8 prompt tokens, A's two decodes, B's 5 recomputed tokens and its last decode.
    assert_eq!(computed, 8 + 2 + 5 + 1);
    assert_eq!(run.kv_peak_blocks, 2);
    // A request that cannot fit the whole cache is rejected, not stalled on.
    let (run, _) = run_unit(&at_zero(1, 9, 1), &engine(4, 8), 2);
    assert!(run.served[0].rejected && run.served[0].finish_s.is_none());
}

#[test]
fn growth_past_the_cache_preempts_and_every_request_still_completes() {
    // Prompts of one block that grow to four: a cache for 3 full sequences admits 12 prompts and must
    // preempt as they grow. Without the limit the same stream needs no preemption and computes exactly
    // prompt + output − 1 tokens per request.
    let reqs = at_zero(12, 16, 49);
    let exact: u64 = reqs
        .iter()
        .map(|r| r.prompt_tokens + r.output_tokens - 1)
        .sum();
    let (run, computed) = run_unit(&reqs, &engine(16, 100), 12);
    assert!(run.preemptions > 0);
    assert!(run.kv_peak_blocks <= 12);
    assert!(
        run.served
            .iter()
            .all(|s| s.finish_s.is_some() && !s.rejected)
    );
    assert!(computed > exact, "recomputation costs tokens");
    let (free, computed) = run_unit(&reqs, &engine(16, 100), 48);
    assert_eq!(free.preemptions, 0);
    assert_eq!(computed, exact);
    assert_eq!(
        free.steps, 49,
        "one prefill step, then 48 decode steps for all"
    );
}

#[test]
fn chunked_prefill_splits_a_long_prompt_and_decode_first_keeps_decodes_going() {
    // A 1000-token prompt under a 256-token budget takes 4 chunks; a request already decoding keeps one
    // token per step under decode-first, and is stalled under prefill-first.
    let reqs = vec![
        arrivals::Request {
            id: 0,
            arrival_s: 0.0,
            prompt_tokens: 10,
            output_tokens: 6,
        },
        arrivals::Request {
            id: 1,
            arrival_s: 0.5,
            prompt_tokens: 1000,
            output_tokens: 1,
        },
    ];
    let mut cfg = engine(16, 8);
    cfg.max_batch_tokens = 256;
    let (run, _) = run_unit(&reqs, &cfg, 1000);
    // Step 1 (t 0–1): A's prompt. Steps 2–5: B's chunks of 255, 255, 255, 235 beside A's decodes.
    assert_eq!(run.served[1].first_token_s, Some(5.0));
    assert_eq!(
        run.served[0].finish_s,
        Some(6.0),
        "five decodes in steps 2–6"
    );
    cfg.policy = Policy::PrefillFirst;
    let (run, _) = run_unit(&reqs, &cfg, 1000);
    // B's chunks take the whole budget in steps 2–4 (768 tokens): A's decodes wait until step 5, which has
    // B's last 232 tokens and A's first decode; A's five decodes end at step 9.
    assert_eq!(run.served[1].first_token_s, Some(5.0));
    assert_eq!(run.served[0].finish_s, Some(9.0));
}

#[test]
fn the_same_seed_gives_the_same_records_on_any_thread_count() {
    let s = serving(
        2,
        "arrival = \"gamma\"\nrate_per_s = 40.0\ncv = 2.0\nduration_s = 5.0\n\
         prompt = { dist = \"lognormal\", mean = 300, cv = 1.0, max = 4000 }\n\
         output = { dist = \"uniform\", min = 1, max = 64 }",
        "max_batch_tokens = 1024\nmax_seqs = 16\nkv_blocks = 200",
    );
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| simulate_serving(&s, None, None).unwrap())
    };
    let one = on(1);
    assert_eq!(one, on(3));
    assert!(one.results[0].records.len() > 100);
    let mut other = s.clone();
    other.seed = 8;
    assert_ne!(
        one.results[0].records,
        simulate_serving(&other, None, None).unwrap().results[0].records
    );
}

#[test]
fn every_request_arrives_and_completes_and_tokens_add_up() {
    let mut s = serving(
        2,
        "rate_per_s = 30.0\nduration_s = 10.0\n\
         prompt = { dist = \"lognormal\", mean = 500, cv = 1.5, max = 1500 }\n\
         output = { dist = \"lognormal\", mean = 40, cv = 1.0, max = 200 }",
        "max_batch_tokens = 2048\nmax_seqs = 32",
    );
    let cfg = s.serving.clone().unwrap();
    let reqs = arrivals::requests(&cfg.requests, s.seed, None).unwrap();
    let r = simulate_serving(&s, None, None).unwrap();
    let res = &r.results[0];
    let m = &res.metrics;
    assert_eq!(m.requests, reqs.len());
    assert_eq!((m.completed, m.rejected), (reqs.len(), 0));
    assert_eq!(
        m.input_tokens,
        reqs.iter().map(|r| r.prompt_tokens).sum::<u64>()
    );
    assert_eq!(
        m.output_tokens,
        reqs.iter().map(|r| r.output_tokens).sum::<u64>()
    );
    for (rec, req) in res.records.iter().zip(&reqs) {
        assert_eq!((rec.id, rec.arrival_s), (req.id, req.arrival_s));
        let (q, t, e) = (
            rec.queue_ms.unwrap(),
            rec.ttft_ms.unwrap(),
            rec.e2e_ms.unwrap(),
        );
        assert!(0.0 <= q && q < t && t <= e, "{rec:?}");
    }
    // Memory model: an H100 holds OLMoE's two layers with room for a large cache.
    assert!(m.kv_capacity_blocks > 10_000, "{}", m.kv_capacity_blocks);
    assert!(m.kv_peak_utilization > 0.0 && m.kv_peak_utilization <= 1.0);
    // A small cache preempts but loses nothing.
    s.serving.as_mut().unwrap().engine.kv_blocks = Some(150);
    let small = simulate_serving(&s, None, None).unwrap();
    let sm = &small.results[0].metrics;
    assert!(sm.preemptions > 0);
    assert_eq!(
        (sm.completed, sm.output_tokens),
        (m.completed, m.output_tokens)
    );
    assert!(sm.e2e_ms.mean > m.e2e_ms.mean);
}

#[test]
fn quantised_shapes_price_within_their_resolution() {
    let s = serving(
        2,
        "rate_per_s = 1.0\nmax_requests = 1\nprompt = { dist = \"fixed\", tokens = 8 }\noutput = { dist = \"fixed\", tokens = 1 }",
        "",
    );
    let topo = crate::topology::Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let mut b = Batch::default();
    b.add_prefill(300, 1000);
    for _ in 0..37 {
        b.add_decode(777);
    }
    let exact = step_cost::lower(&s, &s.strategies[0], &topo, &cost, b.shape(2, 0));
    let rounded = step_cost::lower(&s, &s.strategies[0], &topo, &cost, b.shape(2, 6));
    assert_ne!(b.shape(2, 0), b.shape(2, 6));
    // Every figure rounds up by less than 1/32; the step grows by no more.
    assert!(
        rounded >= exact && rounded <= exact * (1.0 + 1.0 / 32.0),
        "{exact} {rounded}"
    );
}

#[test]
fn serving_fields_are_validated_with_file_field_and_line() {
    let base = "[model]\npreset = \"olmoe-1b-7b\"\n[cluster]\npreset = \"dgx-h100\"\n[workload]\nmode = \"serving\"\n\
                [workload.serving]\nrate_per_s = -2.0\nduration_s = 10.0\n\
                prompt = { dist = \"fixed\", tokens = 5 }\noutput = { dist = \"fixed\", tokens = 5 }\n\
                [[strategy]]\nname = \"ep\"\nkind = \"ep\"\n";
    let e = parse_scenario("s.toml", base, &[]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("workload.serving.rate_per_s") && msg.contains("-2"),
        "{msg}"
    );
    assert_eq!(e.line_col().map(|l| l.0), Some(8));
    let good = base.replace("-2.0", "2.0");
    let e = parse_scenario(
        "s.toml",
        &good.replace("tokens = 5 }\n[[", "tokens = 5, cv = 1.0 }\n[["),
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("workload.serving.output.cv"), "{e}");
    let e = parse_scenario("s.toml", &base.replace("\"serving\"", "\"decode\""), &[]).unwrap_err();
    assert!(
        e.to_string().contains("`workload.serving` applies only"),
        "{e}"
    );
    let e = parse_scenario(
        "s.toml",
        &base
            .replace("-2.0", "2.0")
            .replace("kind = \"ep\"", "kind = \"fssdp\""),
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("strategy[0].kind"), "{e}");
    let ok = parse_scenario("s.toml", &base.replace("-2.0", "2.0"), &[]).unwrap();
    assert_eq!(ok.serving.unwrap().engine.max_batch_tokens, 8192);
}

#[test]
fn attention_adds_layers_times_over_to_the_lowered_step() {
    // The identity the memo relies on (step_cost's module doc), against the full lowering: Mixtral on two
    // DGX H100 nodes (EP8 in two groups, NVLink and NIC all-to-alls) and OLMoE on 2 GPUs.
    let mixtral = {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scenarios/serving-mixtral.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut s = parse_scenario(path, &text, &["cluster.nodes=2".into()]).unwrap();
        s.strategies.truncate(1);
        s
    };
    for s in [
        mixtral,
        serving(
            2,
            "rate_per_s = 1.0\nmax_requests = 1\nprompt = { dist = \"fixed\", tokens = 8 }\noutput = { dist = \"fixed\", tokens = 1 }",
            "",
        ),
    ] {
        assert!(step_cost::separable(&s, &s.strategies[0]));
        let topo = crate::topology::Topology::build(&s.cluster);
        let cost = s.cluster.roofline();
        let g = s.cluster.gpus() as u64;
        let mut steps = step_cost::StepCost::new(&s, &s.strategies[0], &topo, &cost, 0);
        let mut batches = Vec::new();
        let mut b = Batch::default();
        b.add_prefill(0, 3000);
        batches.push(b);
        let mut b = Batch::default();
        for i in 0..40 {
            b.add_decode(500 + 37 * i);
        }
        batches.push(b);
        b.add_prefill(2000, 1500);
        batches.push(b);
        for b in &batches {
            let full = step_cost::lower(&s, &s.strategies[0], &topo, &cost, b.shape(g, 0));
            let split = steps.seconds(b);
            eprintln!("{}: full lowering {full} s, separated {split} s", s.name);
            assert!((full - split).abs() <= 1e-9 * full, "{full} vs {split}");
        }
    }
}

#[test]
fn without_load_an_overlapped_prefill_is_the_prefill_step_through_the_full_lowering() {
    // Two overlapped parts: the step is not separable, so every figure of its shape is lowered.
    let overlap = |text: String| text + "overlap_micro_batches = 2\n";
    let text = overlap(
        "name = \"serve\"\nseed = 7\n[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\n\
         [cluster]\npreset = \"dgx-h100\"\ngpus_per_node = 2\ncompute_noise_cv = 0.0\n\
         [workload]\nmode = \"serving\"\n[workload.serving]\narrival = \"trace\"\ntrace = \"t.csv\"\n\
         [serving]\nmax_batch_tokens = 4096\nshape_bits = 0\n[[strategy]]\nname = \"ep\"\nkind = \"ep\"\n"
            .to_string(),
    );
    let s = parse_scenario("serve.toml", &text, &[]).unwrap();
    assert!(!step_cost::separable(&s, &s.strategies[0]));
    let trace = vec![
        TraceRequest {
            arrival_s: 0.0,
            prompt_tokens: 512,
            output_tokens: 1
        };
        2
    ];
    let r = simulate_serving(&s, Some(&trace), None).unwrap();
    let prefill = {
        let text = overlap(
            "name = \"step\"\nseed = 7\n[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\nseq_len = 512\n\
             micro_batch = 1\n[cluster]\npreset = \"dgx-h100\"\ngpus_per_node = 2\ncompute_noise_cv = 0.0\n\
             [workload]\nmode = \"prefill\"\niterations = 1\n[[strategy]]\nname = \"ep\"\nkind = \"ep\"\n"
                .to_string(),
        );
        let p = parse_scenario("step.toml", &text, &[]).unwrap();
        simulate_scenario(&p, &synthetic_routing(&p), None, RunOptions::default()).results[0]
            .step_time_ms
            .mean
    };
    let ttft = r.results[0].metrics.ttft_ms.max;
    eprintln!("overlapped: TTFT {ttft} ms vs prefill step {prefill} ms");
    assert!(
        (ttft - prefill).abs() <= 1e-9 * prefill,
        "{ttft} vs {prefill}"
    );
}

#[test]
fn weights_that_leave_no_room_for_a_kv_cache_are_an_error_not_a_panic() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/serving-mixtral.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let s = parse_scenario(path, &text, &["cluster.gpu_memory_gib=8".into()]).unwrap();
    let e = simulate_serving(&s, None, None).unwrap_err();
    assert!(
        e.contains("strategy `ep8`: no room for a KV cache") && e.contains("kv_blocks"),
        "{e}"
    );
    // With room, the capacity is the usable memory less weights and activations over a block's bytes.
    let s = parse_scenario(path, &text, &[]).unwrap();
    let cap = kv::capacity_blocks(&s, &s.strategies[0], 16, 0.9).unwrap();
    let kv_block = 16.0 * kv::kv_bytes_per_token(&s);
    let per_gpu = cap as f64 / 8.0 * kv_block / crate::memory::GIB;
    assert!(
        per_gpu > 40.0 && per_gpu < 0.9 * 80.0,
        "{per_gpu} GiB of KV per GPU"
    );
    // Requests with no prompt or output are rejected, not run.
    let (run, _) = run_unit(&at_zero(1, 5, 0), &engine(4, 8), 10);
    assert!(run.served[0].rejected);
}
