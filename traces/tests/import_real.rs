//! Importers on the real shared traces and on small hand-written inputs with known answers; native format
//! round trips and bad-input errors.

use crate::common;

use moesim_traces::import::{Format, ImportOptions, Incomplete, import, write_npy};
use moesim_traces::native::{read_native, write_native};
use moesim_traces::{Trace, TraceKind};
use std::io::Write;
use std::path::Path;

fn opts() -> ImportOptions {
    ImportOptions::default()
}

fn tokens(t: &Trace) -> &moesim_traces::TokenTrace {
    match t {
        Trace::Tokens(t) => t,
        Trace::Counts(_) => panic!("expected a token trace"),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn deepseek_csv_directory() {
    let dir = common::shared_traces("deepseek-v2-lite");
    let t = import(Format::CsvTokens, &dir, &opts()).unwrap();
    let t = tokens(&t);
    assert_eq!(t.meta.layers, 26);
    assert_eq!(t.meta.layer_ids, (1..=26).collect::<Vec<u32>>());
    assert_eq!(t.meta.experts, 64);
    assert_eq!(t.meta.top_k, 6);
    assert_eq!(t.sequences.len(), 100);
    assert_eq!(t.tokens(), 6610);
    // natural order: prompt_1, prompt_2, …, and the first token of prompt 1 layer 1 is the first data row
    assert_eq!(t.sequences[0].name, "prompt_1_data");
    assert_eq!(t.sequences[1].name, "prompt_2_data");
    assert_eq!(t.sequences[0].row(0, 0), &[8, 26, 56, 57, 60, 43]);
    assert_eq!(t.sequences[0].row(0, 1), &[8, 22, 43, 46, 63, 7]);
    // every row has 6 distinct experts
    for s in &t.sequences {
        for l in 0..26 {
            for k in 0..s.tokens {
                assert_eq!(s.row(l, k).len(), 6);
            }
        }
    }
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn mixtral_jsonl_files() {
    let dir = common::shared_traces("mixtral-8x7b");
    let f = dir.join("mixtral_gsm8k_2_routing.jsonl");
    let t = import(Format::JsonlTokens, &f, &opts()).unwrap();
    let tt = tokens(&t);
    assert_eq!((tt.meta.layers, tt.meta.experts, tt.meta.top_k), (32, 8, 2));
    assert!(tt.meta.has_gates);
    assert_eq!(tt.sequences.len(), 2);
    assert_eq!(tt.sequences[0].name, "gsm8k/0");
    // 168 and 79 tokens recorded; 2 and 1 of them lack some layers and are dropped by default
    assert_eq!(tt.sequences[0].tokens, 166);
    assert_eq!(tt.sequences[1].tokens, 78);
    assert_eq!(tt.sequences[0].row(0, 0), &[7, 0]);
    let g = tt.sequences[0].row_gates(0, 0).unwrap();
    assert!((g[0] - 0.800_380_1).abs() < 1e-6);
    assert!(
        tt.meta
            .provenance
            .notes
            .iter()
            .any(|n| n.contains("3 tokens"))
    );
    // keep: all tokens, with empty rows in missing layers
    let keep = import(
        Format::JsonlTokens,
        &f,
        &ImportOptions {
            incomplete: Incomplete::Keep,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(tokens(&keep).sequences[0].tokens, 168);
    let err = import(
        Format::JsonlTokens,
        &f,
        &ImportOptions {
            incomplete: Incomplete::Error,
            ..opts()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("mixtral_gsm8k_2_routing.jsonl") && err.contains("of 32 layers"),
        "{err}"
    );
    // the raw file names the position token_pos
    let raw = import(
        Format::JsonlTokens,
        &dir.join("mixtral_routing_raw.jsonl"),
        &opts(),
    )
    .unwrap();
    // … and after a prefill restarts at position 0 for every decode step: those continue the sequence
    let rt = tokens(&raw);
    assert_eq!(rt.sequences.len(), 1);
    assert!(rt.sequences[0].tokens > 59, "{}", rt.sequences[0].tokens);
    // a directory: files in natural order, sequences scoped by file
    let all = import(Format::JsonlTokens, &dir, &opts()).unwrap();
    let names: Vec<&str> = tokens(&all)
        .sequences
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec![
            "mixtral_gsm8k_2_routing:gsm8k/0",
            "mixtral_gsm8k_2_routing:gsm8k/1",
            "mixtral_humaneval_2_routing:humaneval/0",
            "mixtral_humaneval_2_routing:humaneval/1",
            "mixtral_routing_raw:humaneval/0"
        ]
    );
}

/// OLMoE's counts ship with moesim (Apache-2.0, `scenarios/data/olmoe/`), so this runs on a plain clone.
#[test]
fn olmoe_load_matrix_json() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/data/olmoe");
    let t = import(
        Format::LoadMatrix,
        &dir.join("olmoe_expert_counts_c4.json"),
        &opts(),
    )
    .unwrap();
    let Trace::Counts(c) = &t else { panic!() };
    assert_eq!(c.meta.experts, 64);
    assert_eq!(c.meta.layer_ids, vec![0, 7, 15]);
    assert_eq!(c.meta.model, "OLMoE-1B-7B");
    assert_eq!(c.counts[0], 15352);
    let loads = t.expert_loads();
    // README: OLMoE's top 8 of 64 experts take 20–51% of assignments
    for l in &loads {
        let mut v = l.clone();
        v.sort_unstable_by(|a, b| b.cmp(a));
        let share = v[..8].iter().sum::<u64>() as f64 / v.iter().sum::<u64>() as f64;
        assert!((0.19..=0.52).contains(&share), "{share}");
    }
    // The figures scenarios/data/olmoe/README.md quotes: per layer, max/mean load and Gini.
    let figures = |file: &str| -> Vec<(String, String)> {
        import(Format::LoadMatrix, &dir.join(file), &opts())
            .unwrap()
            .expert_loads()
            .iter()
            .map(|l| {
                let (mom, gini, _, _) = moesim_traces::stats::skew(l);
                (format!("{mom:.2}"), format!("{gini:.3}"))
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        figures("olmoe_expert_counts_c4.json"),
        pairs(&[("3.02", "0.137"), ("2.66", "0.212"), ("2.50", "0.288")])
    );
    assert_eq!(
        figures("mistral_expert_counts_c4.json"),
        pairs(&[("1.12", "0.053"), ("1.08", "0.023"), ("1.12", "0.073")])
    );
}

#[test]
fn jsonl_known_answer_and_key_options() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "t.jsonl",
        r#"{"seq": "a", "pos": 1, "L": 3, "ids": [2, 0]}
{"seq": "a", "pos": 0, "L": 3, "ids": [1, 2]}
{"seq": "a", "pos": 0, "L": 5, "ids": [0, 3]}
{"seq": "a", "pos": 1, "L": 5, "ids": [3, 1]}
{"seq": "b", "pos": 0, "L": 5, "ids": [1, 0]}
{"seq": "b", "pos": 0, "L": 3, "ids": [0, 1]}
"#,
    );
    let o = ImportOptions {
        sequence_keys: Some(vec!["seq".into()]),
        token_key: Some("pos".into()),
        layer_key: Some("L".into()),
        experts_key: Some("ids".into()),
        ..opts()
    };
    let t = import(Format::JsonlTokens, &f, &o).unwrap();
    let t = tokens(&t);
    assert_eq!(t.meta.layer_ids, vec![3, 5]);
    assert_eq!((t.meta.experts, t.meta.top_k), (4, 2));
    assert_eq!(t.sequences[0].row(0, 0), &[1, 2]);
    assert_eq!(t.sequences[0].row(0, 1), &[2, 0]);
    assert_eq!(t.sequences[0].row(1, 1), &[3, 1]);
    assert_eq!(t.sequences[1].row(1, 0), &[1, 0]);
}

fn err_of(format: Format, name: &str, text: &str, o: ImportOptions) -> String {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), name, text);
    import(format, &f, &o).unwrap_err().to_string()
}

#[test]
fn bad_inputs_name_file_line_and_expectation() {
    let e = err_of(
        Format::JsonlTokens,
        "x.jsonl",
        "{\"layer\": 0, \"token_idx\": 0, \"experts\": [1, 2]}\n{\"layer\": 0, \"token_idx\": 1, \"experts\": [1, 2, 3]}\n",
        opts(),
    );
    assert!(
        e.contains("x.jsonl, line 2") && e.contains("expected 2"),
        "{e}"
    );
    let e = err_of(
        Format::JsonlTokens,
        "x.jsonl",
        "{\"layer\": 0, \"token_idx\": 0, \"experts\": [1, 9]}\n",
        ImportOptions {
            experts: Some(8),
            ..opts()
        },
    );
    assert!(
        e.contains("line 1") && e.contains("out of range (expected 0..8)"),
        "{e}"
    );
    let e = err_of(
        Format::JsonlTokens,
        "x.jsonl",
        "{\"layer\": 0, \"experts\": [1]}\n",
        opts(),
    );
    assert!(e.contains("line 1") && e.contains("token_idx"), "{e}");
    let e = err_of(
        Format::JsonlTokens,
        "x.jsonl",
        "{\"layer\": 0, \"token_idx\": 0, \"experts\": [-1]}\n",
        opts(),
    );
    assert!(e.contains("non-negative"), "{e}");
    let e = err_of(
        Format::CsvTokens,
        "x.csv",
        "Layer ID,Token,Activated Expert IDs\n1,a,\"[1, 2]\"\n1,b\n",
        opts(),
    );
    assert!(e.contains("x.csv") && e.contains("line 3"), "{e}");
    let e = err_of(Format::CsvTokens, "x.csv", "Layer,Token\n1,a\n", opts());
    assert!(e.contains("missing expert list column"), "{e}");
    let e = err_of(
        Format::CsvCounts,
        "c.csv",
        "iteration,layer,expert,tokens\n0,0,1,5\n0,0,2,-3\n",
        opts(),
    );
    assert!(
        e.contains("c.csv, line 3") && e.contains("non-negative integer") && e.contains("-3"),
        "{e}"
    );
    let e = err_of(
        Format::CsvCounts,
        "c.csv",
        "iteration,layer,expert,tokens\n0,0,1,2.5\n",
        opts(),
    );
    assert!(e.contains("2.5"), "{e}");
    let e = err_of(
        Format::CsvCounts,
        "c.csv",
        "iteration,layer,tokens\n0,0,1\n",
        opts(),
    );
    assert!(e.contains("missing column `expert`"), "{e}");
    let e = err_of(Format::LoadMatrix, "m.csv", "1,2,3\n4,5\n", opts());
    assert!(
        e.contains("m.csv") && e.contains("line 2") && e.contains("expected 3"),
        "{e}"
    );
    let e = err_of(Format::LoadMatrix, "m.json", "[[1, 2], [3, -1]]", opts());
    assert!(e.contains("layers[1][1]"), "{e}");
}

#[test]
fn csv_counts_known_answer() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "c.csv",
        "iteration,layer,rank,expert,tokens\n0,0,0,0,5\n0,0,1,3,2\n1,2,0,1,7\n1,2,0,1,1\n",
    );
    let t = import(
        Format::CsvCounts,
        &f,
        &ImportOptions {
            top_k: Some(2),
            ..opts()
        },
    )
    .unwrap();
    let Trace::Counts(c) = &t else { panic!() };
    assert_eq!(
        (c.iterations, c.meta.layers, c.meta.ranks, c.meta.experts),
        (2, 2, 2, 4)
    );
    assert_eq!(c.meta.layer_ids, vec![0, 2]);
    assert_eq!(c.counts[c.index(0, 0, 1, 3)], 2);
    assert_eq!(c.counts[c.index(1, 1, 0, 1)], 8);
    assert_eq!(c.counts.iter().sum::<u64>(), 15);
    // without a rank column: one source
    let f2 = write(
        d.path(),
        "c2.csv",
        "iteration,layer,expert,tokens\n0,0,1,4\n",
    );
    let Trace::Counts(c2) = import(Format::CsvCounts, &f2, &opts()).unwrap() else {
        panic!()
    };
    assert_eq!(c2.meta.ranks, 1);
}

#[test]
fn load_matrix_csv_with_header_and_layer_column() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "m.csv", "layer,e0,e1,e2\n4,1,2,3\n9,0,0,6\n");
    let t = import(Format::LoadMatrix, &f, &opts()).unwrap();
    assert_eq!(t.meta().layer_ids, vec![4, 9]);
    assert_eq!(t.expert_loads(), vec![vec![1, 2, 3], vec![0, 0, 6]]);
}

#[test]
fn npy_known_answer_dtypes_and_errors() {
    let d = tempfile::tempdir().unwrap();
    // [layers=2, tokens=3, k=2] int32
    let data: Vec<i32> = vec![0, 1, 2, 3, 1, 2, /* layer 1 */ 3, 0, 0, 2, 1, 3];
    let p = d.path().join("s_10.npy");
    let mut f = std::fs::File::create(&p).unwrap();
    write_npy(&mut f, &[2, 3, 2], &data).unwrap();
    drop(f);
    // a second sequence as a hand-built big-endian int16 [tokens, k] array (one layer)
    let mut b = Vec::new();
    let mut h = "{'descr': '>i2', 'fortran_order': False, 'shape': (2, 2), }".to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    b.extend_from_slice(b"\x93NUMPY\x01\x00");
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    for v in [1i16, 3, 2, 0] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    let one = d.path().join("single.npy");
    std::fs::write(&one, &b).unwrap();
    let t = import(Format::Npy, &one, &opts()).unwrap();
    assert_eq!(tokens(&t).sequences[0].row(0, 1), &[2, 0]);
    let t = import(Format::Npy, &p, &opts()).unwrap();
    let tt = tokens(&t);
    assert_eq!((tt.meta.layers, tt.meta.experts, tt.meta.top_k), (2, 4, 2));
    assert_eq!(tt.sequences[0].row(1, 2), &[1, 3]);
    // truncated data
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() - 3);
    let bad = d.path().join("bad.npy");
    std::fs::write(&bad, &bytes).unwrap();
    let e = import(Format::Npy, &bad, &opts()).unwrap_err().to_string();
    assert!(e.contains("bad.npy") && e.contains("truncated"), "{e}");
    std::fs::write(&bad, "not numpy").unwrap();
    assert!(
        import(Format::Npy, &bad, &opts())
            .unwrap_err()
            .to_string()
            .contains("magic")
    );
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn native_round_trip_and_export_reimport_on_real_data() {
    let dir = common::shared_traces("mixtral-8x7b");
    let t = import(
        Format::JsonlTokens,
        &dir.join("mixtral_humaneval_2_routing.jsonl"),
        &opts(),
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let nat = d.path().join("t.moetrace");
    write_native(&nat, &t).unwrap();
    let back = read_native(&nat).unwrap();
    assert_eq!(back, t);
    // export → import gives the same routing (gates within f32)
    for (fmt, name) in [
        (Format::JsonlTokens, "x.jsonl"),
        (Format::CsvTokens, "x.csv"),
        (Format::Npy, "npydir"),
    ] {
        let out = d.path().join(name);
        moesim_traces::export::export(&back, fmt, &out).unwrap();
        let re = import(fmt, &out, &opts()).unwrap();
        let (a, b) = (tokens(&t), tokens(&re));
        assert_eq!(a.sequences.len(), b.sequences.len(), "{name}");
        for (x, y) in a.sequences.iter().zip(&b.sequences) {
            assert_eq!(x.experts, y.experts, "{name}");
            assert_eq!(x.offsets, y.offsets, "{name}");
        }
        assert_eq!(a.meta.layer_ids, b.meta.layer_ids);
    }
    // counts export → import
    let out = d.path().join("c.csv");
    moesim_traces::export::export(&back, Format::CsvCounts, &out).unwrap();
    let re = import(
        Format::CsvCounts,
        &out,
        &ImportOptions {
            experts: Some(8),
            top_k: Some(2),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(re.expert_loads(), t.expert_loads());
    assert_eq!(re.meta().kind, TraceKind::Counts);
}

#[test]
fn native_rejects_truncation_unknown_version_and_corruption() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "t.jsonl",
        &(0..50)
            .flat_map(|t| {
                (0..3).map(move |l| {
                    format!(
                        "{{\"layer\": {l}, \"token_idx\": {t}, \"experts\": [{}, {}]}}\n",
                        t % 4,
                        4 + l
                    )
                })
            })
            .collect::<String>(),
    );
    let t = import(Format::JsonlTokens, &f, &opts()).unwrap();
    let nat = d.path().join("t.moetrace");
    write_native(&nat, &t).unwrap();
    let bytes = std::fs::read(&nat).unwrap();
    let cut = d.path().join("cut.moetrace");
    for n in [5, 20, bytes.len() - 30, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..n]).unwrap();
        let e = read_native(&cut).unwrap_err().to_string();
        assert!(
            e.contains("cut.moetrace") && e.contains("truncated"),
            "{n}: {e}"
        );
    }
    let mut v = bytes.clone();
    v[8] = 9;
    std::fs::write(&cut, &v).unwrap();
    let e = read_native(&cut).unwrap_err().to_string();
    assert!(e.contains("unknown format version 9"), "{e}");
    let mut v = bytes.clone();
    let n = v.len();
    v[n - 40] ^= 0xff;
    std::fs::write(&cut, &v).unwrap();
    assert!(read_native(&cut).is_err());
    // no temporary files left behind
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().contains("partial")),
        "{left:?}"
    );
}

#[test]
fn directory_of_csv_files_in_natural_order() {
    let d = tempfile::tempdir().unwrap();
    for (name, e) in [("p_10.csv", 3), ("p_2.csv", 2), ("p_1.csv", 1)] {
        let mut f = std::fs::File::create(d.path().join(name)).unwrap();
        writeln!(f, "Layer ID,Batch Number,Token,Activated Expert IDs").unwrap();
        writeln!(f, "0,0,\"tok, with comma \"\"q\"\" é\",\"[{e}, 0]\"").unwrap();
        writeln!(f, "1,0,x,\"[0, {e}]\"").unwrap();
    }
    let t = import(Format::CsvTokens, d.path(), &opts()).unwrap();
    let names: Vec<&str> = tokens(&t)
        .sequences
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, vec!["p_1", "p_2", "p_10"]);
    assert_eq!(tokens(&t).sequences[2].row(0, 0), &[3, 0]);
}
