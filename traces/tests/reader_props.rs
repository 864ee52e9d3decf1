//! Issue 18, property tests: every importer, the native reader and the fit reader return a trace or an
//! error on any input, never panic or allocate from a size they did not check; what they accept is within
//! `moesim_traces::limits`.

use moesim_traces::import::{Format, ImportOptions, Incomplete, import};
use moesim_traces::native::read_native;
use proptest::prelude::*;

fn import_text(format: Format, name: &str, bytes: &[u8], opts: &ImportOptions) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    if let Ok(t) = import(format, &p, opts) {
        t.meta()
            .check()
            .expect("an imported trace is within the limits");
    }
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..16).prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        Just("1e308".to_string()),
        Just("null".to_string()),
        Just("\"7\"".to_string()),
    ]
}

fn jsonl_line() -> impl Strategy<Value = String> {
    (
        number(),
        number(),
        number(),
        prop::collection::vec(number(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(seq, tok, layer, experts, gates)| {
            let g = if gates {
                ",\"gating_probs\":[0.5,\"x\"]"
            } else {
                ""
            };
            format!(
                "{{\"sequence\":{seq},\"token_idx\":{tok},\"layer\":{layer},\"experts\":[{}]{g}}}",
                experts.join(",")
            )
        })
}

fn options() -> impl Strategy<Value = ImportOptions> {
    (
        prop::option::of(prop_oneof![
            Just(0usize),
            1usize..64,
            Just(usize::MAX),
            Just(1 << 32)
        ]),
        prop::option::of(prop_oneof![Just(0usize), 1usize..8, Just(usize::MAX)]),
        any::<bool>(),
        prop::sample::select(vec![Incomplete::Drop, Incomplete::Keep, Incomplete::Error]),
        prop::option::of(prop::sample::select(vec!["nope", "layer", "experts"])),
    )
        .prop_map(
            |(experts, top_k, variable_k, incomplete, key)| ImportOptions {
                experts,
                top_k,
                variable_k,
                incomplete,
                experts_key: key.map(String::from),
                ..ImportOptions::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn jsonl_tokens_never_panics(lines in prop::collection::vec(jsonl_line(), 0..8), opts in options()) {
        import_text(Format::JsonlTokens, "a.jsonl", lines.join("\n").as_bytes(), &opts);
    }

    #[test]
    fn csv_tokens_never_panics(rows in prop::collection::vec((number(), number(), prop::collection::vec(number(), 0..4)), 0..8), opts in options()) {
        let mut text = String::from("Layer ID,token_pos,Activated Expert IDs\n");
        for (l, t, e) in rows {
            text.push_str(&format!("{l},{t},\"[{}]\"\n", e.join(", ")));
        }
        import_text(Format::CsvTokens, "a.csv", text.as_bytes(), &opts);
    }

    #[test]
    fn csv_counts_never_panics(rows in prop::collection::vec(prop::collection::vec(number(), 5), 0..8), opts in options()) {
        let mut text = String::from("iteration,layer,rank,expert,tokens\n");
        for r in rows {
            text.push_str(&r.join(","));
            text.push('\n');
        }
        import_text(Format::CsvCounts, "a.csv", text.as_bytes(), &opts);
    }

    #[test]
    fn load_matrix_never_panics(rows in prop::collection::vec(prop::collection::vec(number(), 0..6), 0..5), opts in options()) {
        let body: Vec<String> = rows.iter().map(|r| format!("[{}]", r.join(","))).collect();
        let text = format!("[{}]", body.join(","));
        import_text(Format::LoadMatrix, "a.json", text.as_bytes(), &opts);
    }

    #[test]
    fn npy_never_panics(shape in prop::collection::vec(prop_oneof![0usize..5, Just(1usize << 31), Just(1usize << 62), Just(usize::MAX)], 0..4),
                        descr in prop::sample::select(vec!["<i8", "<i4", ">i2", "|u1", "<f4", "x"]),
                        data in prop::collection::vec(any::<u8>(), 0..256),
                        opts in options()) {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}\n", dims.join(", "));
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&data);
        import_text(Format::Npy, "a.npy", &b, &opts);
    }

    #[test]
    fn native_headers_with_valid_checksums_never_panic(layers in number(), experts in number(), top_k in number(), ranks in number(), kind in prop::sample::select(vec!["tokens", "counts"]), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let meta = format!(
            "{{\"version\":1,\"kind\":\"{kind}\",\"model\":\"\",\"layers\":{layers},\"layer_ids\":[0],\"experts\":{experts},\
             \"top_k\":{top_k},\"ranks\":{ranks},\"has_gates\":false,\"provenance\":{{\"format\":\"x\",\"source\":\"x\",\"tool\":\"x\"}}}}"
        );
        let mut h: u32 = 0x811c9dc5;
        for &x in meta.as_bytes() {
            h ^= x as u32;
            h = h.wrapping_mul(0x01000193);
        }
        let mut bytes = b"MOETRACE".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        bytes.extend_from_slice(meta.as_bytes());
        bytes.extend_from_slice(&h.to_le_bytes());
        bytes.extend_from_slice(&body);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.moetrace");
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(t) = read_native(&p) {
            t.meta().check().expect("an accepted header is within the limits");
        }
    }

    #[test]
    fn fit_json_never_panics(text in "\\PC{0,120}") {
        let _ = serde_json::from_str::<moesim_traces::fit::Fit>(&text).map(|f| f.model.validate());
    }
}
