//! Disaggregated prefill/decode and the capacity search against closed forms: the unloaded request is one
//! prefill step, one α–β transfer and one decode step per later token; conservation over the pools;
//! determinism; the capacity bracket and the cost ranking.

use super::capacity;
use super::config::Layout;
use super::deployment;
use super::tests::step_ms;
use super::*;
use crate::scenario::parse_scenario;
use moesim_traces::requests::TraceRequest;

/// A disaggregated scenario (OLMoE, two layers, H100 nodes of `gpn` GPUs, no compute noise): `stream`
/// lines in `[workload.serving]`, `pools` the prefill and decode pool fields (`P` and `D` stand for the
/// pools' tables).
fn disaggregated(gpn: usize, stream: &str, prefill: &str, decode: &str) -> Scenario {
    let text = scenario_text(gpn, stream, "", prefill, decode);
    parse_scenario("pd.toml", &text, &[]).unwrap()
}

fn scenario_text(gpn: usize, stream: &str, extra: &str, prefill: &str, decode: &str) -> String {
    format!(
        "name = \"pd\"\nseed = 7\n[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\n\
         [cluster]\npreset = \"dgx-h100\"\ngpus_per_node = {gpn}\ncompute_noise_cv = 0.0\n\
         [workload]\nmode = \"serving\"\n[workload.serving]\n{stream}\n\
         [serving]\nmax_batch_tokens = 4096\nshape_bits = 0\ncolocated = false\n{extra}\n\
         [[serving.deployment]]\nname = \"pd\"\n\
         [serving.deployment.prefill]\n{prefill}\n\
         [serving.deployment.prefill.strategy]\nname = \"p\"\nkind = \"ep\"\n\
         [serving.deployment.decode]\n{decode}\n\
         [serving.deployment.decode.strategy]\nname = \"d\"\nkind = \"ep\"\n\
         [[strategy]]\nname = \"ep\"\nkind = \"ep\"\n"
    )
}

const ONE_AT_ZERO: &str = "arrival = \"trace\"\ntrace = \"t.csv\"";

fn one_request(prompt: u64, output: u64) -> Vec<TraceRequest> {
    vec![TraceRequest {
        arrival_s: 0.0,
        prompt_tokens: prompt,
        output_tokens: output,
    }]
}

#[test]
fn without_load_a_request_is_a_prefill_step_a_kv_transfer_and_decode_steps() {
    // One GPU per instance. With one GPU per node the instances are on two nodes (the KV cache crosses
    // the NICs); with eight, on one node (NVLink). Closed form of the transfer: α + bytes / β with α the
    // link's latency and β its datasheet bandwidth times its efficiency, bytes = prompt × layers × KV
    // bytes per token per layer.
    let prefill = step_ms(1, "prefill", 512);
    let decodes = [step_ms(1, "decode", 513), step_ms(1, "decode", 514)];
    for gpn in [1usize, 8] {
        let s = disaggregated(gpn, ONE_AT_ZERO, "gpus = 1", "gpus = 1");
        let c = &s.cluster;
        let bytes = 512.0 * s.model.layers as f64 * s.model.kv_bytes_per_token_per_layer as f64;
        let transfer_ms = 1e3
            * if gpn == 1 {
                c.nic_latency_us * 1e-6 + bytes / (c.nic_gbits_per_s * 1e9 / 8.0 * c.nic_efficiency)
            } else {
                c.nvlink_latency_us * 1e-6
                    + bytes / (c.nvlink_gbytes_per_s * 1e9 * c.nvlink_efficiency)
            };
        let r = simulate_serving(&s, Some(&one_request(512, 3)), None).unwrap();
        let res = &r.results[0];
        assert_eq!((res.kind.as_str(), res.gpus), ("disaggregated", 2));
        let rec = res.records[0];
        eprintln!(
            "{gpn} GPU(s) per node: TTFT {:?} ms vs prefill {prefill}; transfer {:?} ms vs {transfer_ms}; \
             latency {:?} ms",
            rec.ttft_ms, rec.kv_transfer_ms, rec.e2e_ms
        );
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-8 * b;
        assert!(close(rec.ttft_ms.unwrap(), prefill), "{rec:?}");
        assert!(close(rec.kv_transfer_ms.unwrap(), transfer_ms), "{rec:?}");
        let e2e = prefill + transfer_ms + decodes[0] + decodes[1];
        assert!(close(rec.e2e_ms.unwrap(), e2e), "{rec:?} vs {e2e}");
        // TPOT: the transfer and two decode steps over the two tokens after the first.
        let tpot = (transfer_ms + decodes[0] + decodes[1]) / 2.0;
        assert!(close(rec.tpot_ms.unwrap(), tpot), "{rec:?} vs {tpot}");
        assert_eq!((rec.instance, rec.decode_instance), (Some(0), Some(0)));
        assert_eq!(res.pools[0].queue_ms.max, 0.0);
        assert_eq!(
            res.pools[1].queue_ms.max, 0.0,
            "the decode instance was idle"
        );
        assert_eq!(
            res.pools
                .iter()
                .map(|p| p.role.as_str())
                .collect::<Vec<_>>(),
            ["prefill", "decode"]
        );
        // NVLink moves the cache faster than a NIC.
        if gpn == 8 {
            assert!(transfer_ms < 0.5 * bytes / (c.nic_gbits_per_s * 1e9 / 8.0) * 1e3);
        }
    }
}

#[test]
fn a_prefill_instance_sends_one_cache_per_gpu_at_a_time() {
    // Two prompts prefilled in one step of a one-GPU prefill instance: the second transfer waits for the
    // first (the GPU's NIC is busy), so it ends one transfer time later.
    let s = disaggregated(1, ONE_AT_ZERO, "gpus = 1", "gpus = 1\nmax_seqs = 8");
    let two = vec![one_request(512, 2)[0]; 2];
    let r = simulate_serving(&s, Some(&two), None).unwrap();
    let recs = &r.results[0].records;
    let (a, b) = (
        recs[0].kv_transfer_ms.unwrap(),
        recs[1].kv_transfer_ms.unwrap(),
    );
    assert_eq!(recs[0].ttft_ms, recs[1].ttft_ms, "one prefill step");
    assert!((b - 2.0 * a).abs() <= 1e-9 * b, "{a} then {b}");
}

fn busy_stream() -> &'static str {
    "rate_per_s = 40.0\nduration_s = 4.0\n\
     prompt = { dist = \"lognormal\", mean = 400, cv = 1.0, max = 3000 }\n\
     output = { dist = \"uniform\", min = 1, max = 60 }"
}

#[test]
fn every_request_is_prefilled_once_and_decoded_on_exactly_one_decode_instance() {
    let s = disaggregated(
        8,
        "rate_per_s = 400.0\nduration_s = 1.0\n\
         prompt = { dist = \"lognormal\", mean = 300, cv = 1.0, max = 1200 }\n\
         output = { dist = \"uniform\", min = 1, max = 400 }",
        "instances = 2\ngpus = 2\nmax_seqs = 8",
        "instances = 3\ngpus = 1\nmax_seqs = 64\nkv_blocks = 100",
    );
    let cfg = s.serving.clone().unwrap();
    let requests = arrivals::requests(&cfg.requests, s.seed, None).unwrap();
    let d = &cfg.deployments[0];
    let run = deployment::run(&s, &d.layout, &requests, &s.cluster.roofline()).unwrap();
    let (pre, dec) = (&run.pools[0], &run.pools[1]);
    let mut decoded = [0usize; 3];
    let mut prefilled = [0usize; 2];
    for (i, r) in requests.iter().enumerate() {
        let (m, at) = (&run.served[i], &run.placement[i]);
        assert!(!m.rejected && m.finish_s.is_some(), "{r:?}");
        // Prefilled once: one instance, its first token there.
        let p = at.instance.unwrap();
        prefilled[p] += 1;
        assert_eq!(pre.served[i].first_token_s, m.first_token_s);
        assert_eq!(
            pre.served[i].finish_s, m.first_token_s,
            "leaves after the first token"
        );
        if r.output_tokens == 1 {
            assert!(at.decode_instance.is_none() && dec.served[i].first_scheduled_s.is_none());
            assert_eq!(m.finish_s, m.first_token_s);
            continue;
        }
        let k = at.decode_instance.unwrap();
        decoded[k] += 1;
        let (sent, arrived) = (at.transfer_start_s.unwrap(), at.transfer_end_s.unwrap());
        assert_eq!(sent, m.first_token_s.unwrap());
        assert!(arrived > sent && dec.served[i].first_scheduled_s.unwrap() >= arrived);
        assert_eq!(dec.served[i].finish_s, m.finish_s);
    }
    let multi = requests.iter().filter(|r| r.output_tokens > 1).count();
    assert_eq!(decoded.iter().sum::<usize>(), multi);
    assert_eq!(prefilled.iter().sum::<usize>(), requests.len());
    // Least-loaded routing uses every instance.
    assert!(decoded.iter().all(|&n| n > 0) && prefilled.iter().all(|&n| n > 0));
    // The small decode caches preempt and recompute; nothing is lost and the tokens add up.
    let r = simulate_serving(&s, None, None).unwrap();
    let m = &r.results[0].metrics;
    assert_eq!(
        (m.requests, m.completed, m.rejected),
        (requests.len(), requests.len(), 0)
    );
    assert_eq!(
        m.output_tokens,
        requests.iter().map(|r| r.output_tokens).sum::<u64>()
    );
    let pools = &r.results[0].pools;
    assert_eq!(
        (pools[0].requests, pools[1].requests),
        (requests.len(), multi)
    );
    assert!(
        pools[1].preemptions > 0,
        "100 blocks per decode instance preempt"
    );
    assert!(
        pools
            .iter()
            .all(|p| p.busy_fraction > 0.0 && p.busy_fraction <= 1.0)
    );
}

#[test]
fn a_disaggregated_run_is_the_same_on_any_thread_count_and_seed_dependent() {
    let s = disaggregated(
        8,
        busy_stream(),
        "instances = 2\ngpus = 2",
        "instances = 2\ngpus = 2",
    );
    let on = |s: &Scenario, threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| simulate_serving(s, None, None).unwrap())
    };
    let one = on(&s, 1);
    assert_eq!(one, on(&s, 3));
    assert_eq!(one.results[0].records, on(&s, 3).results[0].records);
    let mut other = s.clone();
    other.seed = 8;
    assert_ne!(one.results[0].records, on(&other, 1).results[0].records);
}

#[test]
fn a_one_instance_colocated_deployment_is_the_engine_alone() {
    // The deployment event loop with one co-located instance reproduces `instance::run` exactly.
    let text = scenario_text(2, busy_stream(), "", "gpus = 1", "gpus = 1")
        .replace("colocated = false\n", "");
    let s = parse_scenario("pd.toml", &text, &[]).unwrap();
    let cfg = s.serving.clone().unwrap();
    let requests = arrivals::requests(&cfg.requests, s.seed, None).unwrap();
    let ds = deployments(&s);
    assert_eq!(
        ds.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["ep", "pd"]
    );
    let Layout::Colocated { pool } = &ds[0].layout else {
        panic!("co-located first")
    };
    let topo = crate::topology::Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let mut steps = step_cost::StepCost::new(&s, &pool.strategy, &topo, &cost, 0);
    let blocks = kv::capacity_blocks(&s, &pool.strategy, 16, 0.9).unwrap();
    let alone = instance::run(&requests, &cfg.engine, blocks, |b| steps.seconds(b)).unwrap();
    let run = deployment::run(&s, &ds[0].layout, &requests, &cost).unwrap();
    assert_eq!(run.served, alone.served);
    assert_eq!(run.pools[0].instances[0].steps, alone.steps);
}

#[test]
fn deployment_fields_are_validated_with_file_line_and_field() {
    let stream = "rate_per_s = 1.0\nmax_requests = 5\nprompt = { dist = \"fixed\", tokens = 8 }\n\
                  output = { dist = \"fixed\", tokens = 2 }";
    let err = |text: String| parse_scenario("pd.toml", &text, &[]).unwrap_err();
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    // ep_size must divide the pool's instance (3 GPUs), not the cluster.
    let text = scenario_text(8, stream, "", "gpus = 2", "gpus = 4").replace(
        "name = \"d\"\nkind = \"ep\"",
        "name = \"d\"\nkind = \"ep\"\nep_size = 3",
    );
    let e = err(text.clone());
    let msg = e.to_string();
    assert!(
        msg.contains("pd.toml")
            && msg.contains("serving.deployment[0].decode.strategy.ep_size")
            && msg.contains("ep_size = 3"),
        "{msg}"
    );
    assert_eq!(
        e.line_col().map(|l| l.0),
        Some(line_of(&text, "ep_size = 3"))
    );
    // An instance needs a size.
    let text = scenario_text(8, stream, "", "instances = 2", "gpus = 1");
    let e = err(text.clone());
    assert!(
        e.to_string().contains("serving.deployment[0].prefill"),
        "{e}"
    );
    assert_eq!(
        e.line_col().map(|l| l.0),
        Some(line_of(&text, "[serving.deployment.prefill]"))
    );
    // Part of a node or whole nodes.
    let text = scenario_text(8, stream, "", "gpus = 12", "gpus = 1");
    let e = err(text.clone());
    assert!(
        e.to_string().contains("serving.deployment[0].prefill.gpus"),
        "{e}"
    );
    assert_eq!(e.line_col().map(|l| l.0), Some(line_of(&text, "gpus = 12")));
    // Inline tables are located too.
    let text = scenario_text(8, stream, "", "gpus = 1", "gpus = 1")
        .replace(
            "[serving.deployment.decode]\ngpus = 1\n[serving.deployment.decode.strategy]\nname = \"d\"\nkind = \"ep\"\n",
            "",
        )
        .replace(
            "name = \"pd\"\n[serving.deployment.prefill]",
            "name = \"pd\"\ndecode = { instances = 0, gpus = 1, strategy = { name = \"d\", kind = \"ep\" } }\n\
             [serving.deployment.prefill]",
        );
    let e = err(text.clone());
    assert!(
        e.to_string()
            .contains("serving.deployment[0].decode.instances"),
        "{e}"
    );
    assert_eq!(
        e.line_col().map(|l| l.0),
        Some(line_of(&text, "instances = 0"))
    );
    // Kinds that serving does not lower are refused at the pool.
    let text = scenario_text(8, stream, "", "gpus = 1", "gpus = 1").replace(
        "name = \"p\"\nkind = \"ep\"",
        "name = \"p\"\nkind = \"fssdp\"",
    );
    assert!(
        err(text)
            .to_string()
            .contains("serving.deployment[0].prefill.strategy.kind"),
        "fssdp"
    );
    // Names are unique over deployments and strategies; colocated = false needs a deployment.
    let text = scenario_text(8, stream, "", "gpus = 1", "gpus = 1")
        .replace("name = \"pd\"\n[serving.dep", "name = \"ep\"\n[serving.dep");
    assert!(err(text).to_string().contains("duplicate name `ep`"));
    let text = scenario_text(8, stream, "", "gpus = 1", "gpus = 1");
    let cut = text.find("[[serving.deployment]]").unwrap();
    let end = text.find("[[strategy]]").unwrap();
    let none = format!("{}{}", &text[..cut], &text[end..]);
    assert!(err(none).to_string().contains("serving.colocated"));
    // A valid file: the pools as written.
    let s = parse_scenario(
        "pd.toml",
        &scenario_text(
            8,
            stream,
            "",
            "instances = 2\nnodes = 1",
            "gpus = 4\nmax_seqs = 7",
        ),
        &[],
    )
    .unwrap();
    let Layout::Disaggregated { prefill, decode } = &s.serving.unwrap().deployments[0].layout
    else {
        panic!("disaggregated")
    };
    assert_eq!((prefill.instances, prefill.gpus_per_instance()), (2, 8));
    assert_eq!((decode.instances, decode.gpus_per_instance()), (1, 4));
    assert_eq!((decode.engine.max_seqs, prefill.engine.max_seqs), (7, 256));
    assert_eq!(decode.strategy.ep_size, 4, "default: the instance's GPUs");
    // One co-located pool instead; a deployment with one of prefill and decode is refused.
    let text = scenario_text(8, stream, "", "gpus = 1", "instances = 2\ngpus = 4")
        .replace("[serving.deployment.prefill]\ngpus = 1\n[serving.deployment.prefill.strategy]\nname = \"p\"\nkind = \"ep\"\n", "")
        .replace("deployment.decode", "deployment.colocated");
    let s = parse_scenario("pd.toml", &text, &[]).unwrap();
    let Layout::Colocated { pool } = &s.serving.unwrap().deployments[0].layout else {
        panic!("co-located")
    };
    assert_eq!((pool.instances, pool.gpus_per_instance()), (2, 4));
    let text = text.replace("deployment.colocated", "deployment.decode");
    assert!(
        err(text)
            .to_string()
            .contains("a prefill and a decode pool, or one colocated pool")
    );
}

#[test]
fn co_located_instances_share_the_stream_and_each_takes_part_of_it() {
    // Two co-located instances of 1 GPU against one of 1 GPU: the same requests complete, spread over both,
    // sooner.
    let text = |instances: usize| {
        scenario_text(8, busy_stream(), "", "gpus = 1", &format!("instances = {instances}\ngpus = 1"))
            .replace("[serving.deployment.prefill]\ngpus = 1\n[serving.deployment.prefill.strategy]\nname = \"p\"\nkind = \"ep\"\n", "")
            .replace("deployment.decode", "deployment.colocated")
    };
    let run = |n: usize| {
        let s = parse_scenario("pd.toml", &text(n), &[]).unwrap();
        simulate_serving(&s, None, None).unwrap().results.remove(0)
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(two.kind, "ep co-located × 2");
    assert_eq!((one.gpus, two.gpus), (1, 2));
    assert_eq!(one.metrics.completed, two.metrics.completed);
    assert_eq!(one.metrics.output_tokens, two.metrics.output_tokens);
    for i in 0..2 {
        assert!(two.records.iter().any(|r| r.instance == Some(i)));
    }
    assert!(two.metrics.e2e_ms.mean < one.metrics.e2e_ms.mean);
    assert!(
        two.records
            .iter()
            .all(|r| r.decode_instance.is_none() && r.kv_transfer_ms.is_none())
    );
}

/// An M/D/1-like co-located scenario for the capacity search: one sequence at a time, one output token,
/// fixed prompts, TTFT SLO.
fn capacity_scenario(extra_engine: &str) -> Scenario {
    let text = format!(
        "name = \"cap\"\nseed = 3\n[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\n\
         [cluster]\npreset = \"dgx-h100\"\ngpus_per_node = 2\ncompute_noise_cv = 0.0\n\
         [workload]\nmode = \"serving\"\n[workload.serving]\nrate_per_s = 50.0\nmax_requests = 400\n\
         prompt = {{ dist = \"fixed\", tokens = 1024 }}\noutput = {{ dist = \"fixed\", tokens = 1 }}\n\
         [serving]\nmax_seqs = 1\nmax_batch_tokens = 2048\ncapacity_tolerance = 0.01\n{extra_engine}\n\
         [slo]\nttft_ms = 20.0\npercentile = 90.0\n\
         [[strategy]]\nname = \"ep2\"\nkind = \"ep\"\n\
         [[strategy]]\nname = \"ep1\"\nkind = \"ep\"\nep_size = 1\n"
    );
    parse_scenario("cap.toml", &text, &[]).unwrap()
}

#[test]
fn the_capacity_is_within_the_tolerance_of_the_rate_where_the_slo_breaks() {
    let s = capacity_scenario("");
    let report = capacity::capacity(&s, None, None).unwrap();
    assert_eq!(report.deployments.len(), 2);
    assert!(
        report.ranked_by.contains("per GPU"),
        "no price: {}",
        report.ranked_by
    );
    for c in &report.deployments {
        let (lo, hi) = (c.rate_per_s.unwrap(), c.breaks_at_per_s.unwrap());
        eprintln!(
            "{}: meets at {lo}/s, breaks at {hi}/s ({} probes)",
            c.deployment,
            c.probes.len()
        );
        assert!(lo < hi && hi - lo <= report.tolerance * hi, "{lo} {hi}");
        // Monotone: every rate tried at or below the capacity met the SLO, every one at or above the
        // break missed it.
        for p in &c.probes {
            assert_eq!(p.met, p.rate_per_s <= lo, "{p:?}");
        }
        // Independently: the stream at lo meets the SLO, at hi it does not.
        let d = deployments(&s)
            .into_iter()
            .find(|d| d.name == c.deployment)
            .unwrap();
        let at = |r: f64| {
            let sr = capacity::at_rate(&s, r);
            let req =
                arrivals::requests(&sr.serving.as_ref().unwrap().requests, s.seed, None).unwrap();
            serve(&sr, &d, &req, &s.cluster.roofline())
                .unwrap()
                .metrics
                .goodput
                .unwrap()
                .met
        };
        assert!(at(lo) && !at(hi));
        assert_eq!(c.at_capacity.metrics.throughput, {
            let sr = capacity::at_rate(&s, lo);
            let req =
                arrivals::requests(&sr.serving.as_ref().unwrap().requests, s.seed, None).unwrap();
            serve(&sr, &d, &req, &s.cluster.roofline())
                .unwrap()
                .metrics
                .throughput
        });
    }
    // Ranked by output tokens/s per GPU, best first.
    let per_gpu: Vec<f64> = report
        .deployments
        .iter()
        .map(|c| c.output_tokens_per_s_per_gpu)
        .collect();
    assert!(per_gpu.windows(2).all(|w| w[0] >= w[1]), "{per_gpu:?}");
}

#[test]
fn with_a_price_deployments_rank_by_cost_per_million_output_tokens() {
    let s = capacity_scenario("price_per_gpu_hour = 2.5");
    let report = capacity::capacity(&s, None, None).unwrap();
    assert_eq!(report.price_per_gpu_hour, Some(2.5));
    let costs: Vec<f64> = report
        .deployments
        .iter()
        .map(|c| {
            let expected = c.gpus as f64 * 2.5 / 3600.0 / c.output_tokens_per_s * 1e6;
            let got = c.cost_per_million_output_tokens.unwrap();
            assert!(
                (got - expected).abs() <= 1e-9 * expected,
                "{got} {expected}"
            );
            got
        })
        .collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]), "{costs:?}");
    // Without an SLO the search says what it needs.
    let mut no_slo = s.clone();
    no_slo.serving.as_mut().unwrap().slo = None;
    let e = capacity::capacity(&no_slo, None, None).unwrap_err();
    assert!(e.contains("[slo]") && e.contains("ttft_ms"), "{e}");
}
