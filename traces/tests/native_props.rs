//! Property tests of the native format: any trace round-trips exactly; any truncation or corruption is an
//! error, never a panic or a silently shorter trace.

use moesim_traces::native::{read_native, write_native};
use moesim_traces::trace::{Provenance, meta};
use moesim_traces::{CountsTrace, Sequence, TokenTrace, Trace, TraceKind};
use proptest::prelude::*;

fn token_trace() -> impl Strategy<Value = Trace> {
    (1usize..4, 2usize..40, 1usize..4, any::<bool>(), 1usize..4).prop_flat_map(
        |(layers, experts, k, gates, nseq)| {
            let k = k.min(experts);
            let row = proptest::sample::subsequence((0..experts as u32).collect::<Vec<_>>(), 0..=k)
                .prop_shuffle();
            let seq = (0usize..12).prop_flat_map(move |tokens| {
                proptest::collection::vec(
                    (row.clone(), proptest::collection::vec(0.0f32..1.0, k)),
                    layers * tokens,
                )
                .prop_map(move |rows| (tokens, rows))
            });
            proptest::collection::vec(seq, nseq).prop_map(move |seqs| {
                let mut m = meta(
                    TraceKind::Tokens,
                    layers,
                    experts,
                    k,
                    1,
                    Provenance::default(),
                );
                m.has_gates = gates;
                m.model = "prop é \"quoted\"".into();
                let sequences = seqs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (tokens, rows))| {
                        let mut s = Sequence::with_capacity(format!("s{i}, ü"), tokens, layers, k);
                        if gates {
                            s.gates = Some(Vec::new());
                        }
                        for (ids, g) in rows {
                            s.push_row(&ids, gates.then(|| &g[..ids.len()]));
                        }
                        s
                    })
                    .collect();
                Trace::Tokens(TokenTrace { meta: m, sequences })
            })
        },
    )
}

fn counts_trace() -> impl Strategy<Value = Trace> {
    (1usize..3, 1usize..5, 1usize..3, 1usize..4).prop_flat_map(|(layers, experts, ranks, iters)| {
        proptest::collection::vec(any::<u64>(), layers * experts * ranks * iters).prop_map(
            move |counts| {
                let m = meta(
                    TraceKind::Counts,
                    layers,
                    experts,
                    // A header with top_k above the experts is refused (issue 18).
                    2.min(experts),
                    ranks,
                    Provenance::default(),
                );
                Trace::Counts(CountsTrace {
                    meta: m,
                    iterations: iters,
                    counts,
                })
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trips(t in prop_oneof![token_trace(), counts_trace()]) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.moetrace");
        write_native(&p, &t).unwrap();
        prop_assert_eq!(read_native(&p).unwrap(), t);
    }

    #[test]
    fn truncation_and_corruption_are_errors(t in token_trace(), cut in 0.0f64..1.0, flip in 0.0f64..1.0) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.moetrace");
        write_native(&p, &t).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let n = ((bytes.len() as f64) * cut) as usize;
        std::fs::write(&p, &bytes[..n.min(bytes.len() - 1)]).unwrap();
        prop_assert!(read_native(&p).is_err());
        let mut v = bytes.clone();
        let i = 16 + ((v.len() - 16) as f64 * flip) as usize;
        let i = i.min(v.len() - 1);
        v[i] ^= 0x5a;
        std::fs::write(&p, &v).unwrap();
        // header and records are checksummed: any flipped byte is detected
        prop_assert!(read_native(&p).is_err());
    }
}
