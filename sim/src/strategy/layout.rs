//! Where every expert copy lives inside an EP group, per MoE layer, for one planning window; and how a
//! source rank's tokens for an expert are split over its copies.

use crate::placement::LayerPlacement;
use crate::scenario::file::TokenSplit;

/// One layer's copies: `slots[r]` experts on group rank r; `replicas[e]` group ranks holding e.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerLayout {
    pub slots: Vec<Vec<usize>>,
    pub replicas: Vec<Vec<usize>>,
}

impl LayerLayout {
    pub fn from_placement(p: &LayerPlacement, experts: usize) -> Self {
        LayerLayout {
            slots: p.gpu_experts.clone(),
            replicas: p.replicas(experts),
        }
    }

    /// Splits `count` tokens that group rank `src` routes to expert `e` over the copies, calling
    /// `send(target, tokens)` for each copy that gets tokens. Remainders go to copies in an order rotated
    /// by the source, so that no copy is favoured systematically.
    pub fn split(
        &self,
        src: usize,
        e: usize,
        count: u32,
        policy: TokenSplit,
        node_of: impl Fn(usize) -> usize,
        mut send: impl FnMut(usize, u32),
    ) {
        let all = &self.replicas[e];
        if count == 0 || all.is_empty() {
            return;
        }
        if let [only] = all[..] {
            // One copy (static EP): every token goes there.
            send(only, count);
            return;
        }
        let local_node = node_of(src);
        let local_count = match policy {
            TokenSplit::Even => 0,
            TokenSplit::LocalFirst => all.iter().filter(|&&t| node_of(t) == local_node).count(),
        };
        let pick_local = local_count > 0;
        let n = if pick_local { local_count } else { all.len() } as u32;
        let (base, rem) = (count / n, count % n);
        let mut k = 0u32;
        for &t in all {
            if pick_local && node_of(t) != local_node {
                continue;
            }
            let slot = (k + n - (src as u32 % n)) % n;
            let share = base + u32::from(slot < rem);
            if share > 0 {
                send(t, share);
            }
            k += 1;
        }
    }
}

/// All MoE layers of one planning window.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub layers: Vec<LayerLayout>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_evenly_and_locally() {
        let p = LayerPlacement {
            gpu_experts: vec![vec![0], vec![0], vec![0], vec![1]],
        };
        let l = LayerLayout::from_placement(&p, 2);
        let node = |r: usize| r / 2;
        let mut got = [0u32; 4];
        l.split(3, 0, 10, TokenSplit::Even, node, |t, c| got[t] += c);
        assert_eq!(got.iter().sum::<u32>(), 10);
        assert!(got[..3].iter().all(|&c| c == 3 || c == 4));
        let mut got = [0u32; 4];
        l.split(1, 0, 10, TokenSplit::LocalFirst, node, |t, c| got[t] += c);
        assert_eq!(got, [5, 5, 0, 0]);
        // Rank 3's node holds one copy (rank 2): it gets everything.
        let mut got = [0u32; 4];
        l.split(3, 0, 9, TokenSplit::LocalFirst, node, |t, c| got[t] += c);
        assert_eq!(got, [0, 0, 9, 0]);
        // No copy of expert 1 in rank 0's node: all copies (here rank 3) share.
        let mut got = [0u32; 4];
        l.split(0, 1, 9, TokenSplit::LocalFirst, node, |t, c| got[t] += c);
        assert_eq!(got, [0, 0, 0, 9]);
    }
}
