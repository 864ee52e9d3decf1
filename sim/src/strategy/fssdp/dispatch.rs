//! Topology-aware token dispatch under FSSDP: a token goes to the copy of its expert on its own rank if
//! there is one, else to copies on its own node, else to any copy; tokens are split evenly among the
//! eligible copies (remainders rotate with the source rank so no copy is always favoured).

use super::materialize::LayerPlacement;

/// Tokens per (rank, expert) after dispatch, and the bytes each source sends to each destination.
#[derive(Debug, Default, Clone)]
pub struct Dispatch {
    /// `tokens[r * experts + e]`: tokens rank r computes for expert e.
    pub tokens: Vec<u32>,
    /// `bytes[src * ranks + dst]`: token bytes sent (the diagonal stays local).
    pub bytes: Vec<f64>,
    sorted: Vec<u32>,
    offsets: Vec<usize>,
}

impl Dispatch {
    /// Dispatches `counts[src * experts + e]` tokens onto `placement`.
    pub fn run(
        &mut self,
        counts: &[u32],
        placement: &LayerPlacement,
        ranks: usize,
        gpus_per_node: usize,
        token_bytes: f64,
    ) {
        let experts = placement.experts();
        self.tokens.clear();
        self.tokens.resize(ranks * experts, 0);
        self.bytes.clear();
        self.bytes.resize(ranks * ranks, 0.0);
        // Holders of each expert sorted by rank, so a node's copies are one contiguous run.
        self.sorted.clear();
        self.offsets.clear();
        self.offsets.push(0);
        for e in 0..experts {
            let start = self.sorted.len();
            self.sorted.extend_from_slice(placement.holders(e));
            self.sorted[start..].sort_unstable();
            self.offsets.push(self.sorted.len());
        }
        for src in 0..ranks {
            let node = (src / gpus_per_node) as u32;
            let gpn = gpus_per_node as u32;
            for e in 0..experts {
                let c = counts[src * experts + e];
                if c == 0 {
                    continue;
                }
                if placement.holds(e, src) {
                    self.tokens[src * experts + e] += c;
                    continue;
                }
                let all = &self.sorted[self.offsets[e]..self.offsets[e + 1]];
                let lo = all.partition_point(|&h| h / gpn < node);
                let hi = all.partition_point(|&h| h / gpn <= node);
                let eligible = if lo < hi { &all[lo..hi] } else { all };
                let k = eligible.len() as u32;
                let (base, rem) = (c / k, c % k);
                for j in 0..k {
                    let h = eligible[((j as usize) + src) % k as usize] as usize;
                    let n = base + u32::from(j < rem);
                    if n == 0 {
                        continue;
                    }
                    self.tokens[h * experts + e] += n;
                    self.bytes[src * ranks + h] += n as f64 * token_bytes;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_then_same_node_then_remote() {
        // 4 ranks, 2 per node, 2 experts: expert 0 owned by rank 0 and copied to rank 1; expert 1 owned by rank 3.
        let mut p = LayerPlacement::owners_only(&[0, 3], 4);
        p.add(0, 1);
        p.add(0, 2);
        let counts = vec![
            4, 0, // rank 0
            4, 2, // rank 1
            4, 0, // rank 2
            4, 0, // rank 3
        ];
        let mut d = Dispatch::default();
        d.run(&counts, &p, 4, 2, 1.0);
        // Ranks 0, 1, 2 hold expert 0 and keep their tokens; rank 3 sends its 4 to rank 2 (same node).
        assert_eq!(d.tokens[2 * 2], 8);
        assert_eq!(d.bytes[3 * 4 + 2], 4.0);
        // Rank 1's expert-1 tokens go to rank 3 (the only copy).
        assert_eq!(d.tokens[3 * 2 + 1], 2);
        assert_eq!(d.bytes[4 + 3], 2.0);
        let moved: u32 = d.tokens.iter().sum();
        assert_eq!(moved, counts.iter().sum::<u32>());
    }
}
