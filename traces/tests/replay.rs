//! Trace replay onto a scenario's routing shape.

use moesim_traces::trace::{Provenance, meta};
use moesim_traces::{
    CountsTrace, RoutingShape, RoutingSource, Sequence, TokenTrace, Trace, TraceKind, TraceRouting,
};
use std::path::Path;

/// 2 layers, 4 experts, top-1; token t picks expert t % 4 in layer 0 and (t + 1) % 4 in layer 1.
fn small() -> Trace {
    let mut s = Sequence::with_capacity("s".into(), 6, 2, 1);
    for l in 0..2u32 {
        for t in 0..6u32 {
            s.push_row(&[(t + l) % 4], None);
        }
    }
    Trace::Tokens(TokenTrace {
        meta: meta(TraceKind::Tokens, 2, 4, 1, 1, Provenance::default()),
        sequences: vec![s],
    })
}

fn shape(ranks: usize, tokens: u64) -> RoutingShape {
    RoutingShape {
        moe_layers: 2,
        experts: 4,
        top_k: 1,
        ranks,
        micro_batches: 1,
        tokens_per_rank: tokens,
    }
}

#[test]
fn consecutive_tokens_fill_ranks_and_wrap() {
    let r = TraceRouting::new(small(), Path::new("small"), shape(2, 4), 3).unwrap();
    assert_eq!(r.iterations(), 3);
    let it0 = r.iteration(0);
    // rank 0 gets tokens 0..4 → layer 0 experts 0,1,2,3
    assert_eq!(it0.rank_counts(0, 0, 0), &[1, 1, 1, 1]);
    // rank 1 gets tokens 4,5,0,1 (wrapping) → layer 0 experts 0,1,0,1
    assert_eq!(it0.rank_counts(0, 0, 1), &[2, 2, 0, 0]);
    // layer 1 is shifted by one expert
    assert_eq!(it0.rank_counts(0, 1, 1), &[0, 2, 2, 0]);
    // iteration 1 starts at token 8 mod 6 = 2: tokens 2,3,4,5
    assert_eq!(r.iteration(1).rank_counts(0, 0, 0), &[1, 1, 1, 1]);
    // more tokens than the trace holds: whole passes plus a remainder
    let big = TraceRouting::new(small(), Path::new("small"), shape(1, 13), 1).unwrap();
    // two passes (experts 0,1,2,3,0,1 each) plus token 0 again
    assert_eq!(big.iteration(0).rank_counts(0, 0, 0), &[5, 4, 2, 2]);
    assert!(big.describe().contains("small"));
}

#[test]
fn shape_mismatch_names_the_file_and_values() {
    let mut s = shape(2, 4);
    s.experts = 8;
    let e = TraceRouting::new(small(), Path::new("t.moetrace"), s, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("t.moetrace") && e.contains("expected 8") && e.contains("found 4"),
        "{e}"
    );
    let mut s = shape(2, 4);
    s.moe_layers = 3;
    let e = TraceRouting::new(small(), Path::new("t.moetrace"), s, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layers") && e.contains("expected 3"), "{e}");
    let mut s = shape(2, 4);
    s.top_k = 2;
    assert!(TraceRouting::new(small(), Path::new("t"), s, 1).is_err());
}

#[test]
fn counts_replay_keeps_proportions_and_totals() {
    let mut m = meta(TraceKind::Counts, 2, 4, 2, 1, Provenance::default());
    m.ranks = 1;
    let c = CountsTrace {
        meta: m,
        iterations: 2,
        counts: vec![
            30, 10, 0, 0, /* l1 */ 5, 5, 5, 5, /* it1 */ 0, 0, 0, 40, 1, 1, 1, 1,
        ],
    };
    let r = TraceRouting::new(
        Trace::Counts(c),
        Path::new("c"),
        RoutingShape {
            top_k: 2,
            ..shape(3, 100)
        },
        4,
    )
    .unwrap();
    let it = r.iteration(0);
    for rank in 0..3 {
        // 100 tokens × top-2 = 200 assignments, at most 100 per expert: 30:10 would be 150:50, capped to 100:100
        assert_eq!(it.rank_counts(0, 0, rank), &[100, 100, 0, 0]);
        assert_eq!(it.rank_counts(0, 1, rank), &[50, 50, 50, 50]);
    }
    // iteration 3 replays trace iteration 1
    let it3 = r.iteration(3);
    assert_eq!(it3.rank_counts(0, 0, 0).iter().sum::<u32>(), 100); // one expert only, capped at 100 tokens
    assert_eq!(it3.rank_counts(0, 0, 0)[3], 100);
}

/// Sequences of 5, 0, 3, 0 and 7 tokens (15 in all; empty ones in between and none at the end), 2
/// layers of 4 experts, top-2: stream token g picks experts g % 4 and (g + 1 + layer) % 4.
fn several() -> Trace {
    let mut sequences = Vec::new();
    let mut g = 0u32;
    for (i, n) in [5u32, 0, 3, 0, 7].into_iter().enumerate() {
        let mut s = Sequence::with_capacity(format!("s{i}"), n as usize, 2, 2);
        for l in 0..2u32 {
            for t in 0..n {
                let x = g + t;
                s.push_row(&[x % 4, (x + 1 + l) % 4], None);
            }
        }
        g += n;
        sequences.push(s);
    }
    Trace::Tokens(TokenTrace {
        meta: meta(TraceKind::Tokens, 2, 4, 2, 1, Provenance::default()),
        sequences,
    })
}

#[test]
fn replay_across_sequences_counts_each_stream_token_once_wrapping() {
    let mut sh = shape(3, 4);
    sh.top_k = 2;
    sh.micro_batches = 2;
    let r = TraceRouting::new(several(), Path::new("several"), sh, 4).unwrap();
    for it in 0..4 {
        let got = r.iteration(it);
        for mb in 0..2 {
            for rank in 0..3 {
                let block = ((it * 2 + mb) * 3 + rank) as u32;
                for l in 0..2u32 {
                    let mut want = [0u32; 4];
                    for t in 0..4 {
                        let x = (block * 4 + t) % 15;
                        want[(x % 4) as usize] += 1;
                        want[((x + 1 + l) % 4) as usize] += 1;
                    }
                    assert_eq!(
                        got.rank_counts(mb, l as usize, rank),
                        &want,
                        "iteration {it}, micro-batch {mb}, rank {rank}, layer {l}"
                    );
                }
            }
        }
    }
    // 32 tokens per rank: two whole passes of the 15-token stream plus two tokens.
    let mut wide = sh;
    wide.tokens_per_rank = 32;
    wide.micro_batches = 1;
    let r = TraceRouting::new(several(), Path::new("several"), wide, 1).unwrap();
    let mut want = [0u32; 4];
    for g in 32..64 {
        let x = g % 15;
        want[(x % 4) as usize] += 1;
        want[((x + 1) % 4) as usize] += 1;
    }
    assert_eq!(r.iteration(0).rank_counts(0, 0, 1), &want);
}
