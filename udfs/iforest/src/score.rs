//! Compiled scoring layouts and the batch traversal kernel.
//!
//! Each tree is compiled once at load time. Trees up to [`MAX_COMPLETE_DEPTH`] split levels
//! (every forest trained with `max_samples <= 4096`) become a *complete* binary tree in heap
//! order: leaves above the bottom level are padded with splits that always go left
//! (threshold `+inf`), so every row takes exactly `depth` steps of
//! `idx = 2 * idx + 1 + (x[feature] > threshold)` — no child pointers, no data-dependent
//! branches. Rows are walked [`LANES`] at a time so the independent dependency chains overlap
//! in the CPU. Deeper trees use a pointer layout.
//!
//! Thresholds are stored as f32: scikit-learn compares the f32-cast input, widened to f64,
//! against an f64 threshold `t`; for every f32 `x`, `x <= t` iff `x <= t'` where `t'` is the
//! largest f32 not above `t`. The comparison is therefore exact, not approximate.

use crate::tree::{TREE_LEAF, Tree};

/// Deepest tree compiled into the complete (pointer-free) layout.
pub const MAX_COMPLETE_DEPTH: u32 = 12;
/// Rows walked together through one tree.
pub const LANES: usize = 8;
/// Rows gathered into one row-major block before the trees are walked.
pub const BLOCK_ROWS: usize = 512;

/// One split in a compiled tree: 8 bytes so one load fetches both halves.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Split {
    threshold: f32,
    feature: u32,
}

#[derive(Debug, Clone)]
enum Layout {
    /// Heap-ordered complete tree: `nodes.len() == 2^depth - 1`, `leaves.len() == 2^depth`.
    Complete {
        depth: u32,
        nodes: Vec<Split>,
        leaves: Vec<f64>,
    },
    /// Pointer layout for trees deeper than [`MAX_COMPLETE_DEPTH`].
    Sparse {
        nodes: Vec<Split>,
        /// `children[i] = (left, right)`; a leaf has `left == u32::MAX`.
        children: Vec<(u32, u32)>,
        values: Vec<f64>,
    },
}

/// Largest f32 that is `<= t` (exact replacement of an f64 threshold for f32 inputs).
fn threshold_to_f32(t: f64) -> f32 {
    let f = t as f32;
    if f as f64 > t { f.next_down() } else { f }
}

/// All trees of a forest, compiled for scoring.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    trees: Vec<Layout>,
}

impl Compiled {
    /// Compiles validated trees.
    pub(crate) fn new(trees: &[Tree]) -> Self {
        Compiled {
            trees: trees
                .iter()
                .map(|t| compile(t, MAX_COMPLETE_DEPTH))
                .collect(),
        }
    }

    /// Sum over trees (in order) of the path length of one f32 row.
    #[inline]
    pub(crate) fn path_sum_row(&self, row: &[f32]) -> f64 {
        let mut acc = 0.0;
        for t in &self.trees {
            acc += match t {
                Layout::Complete {
                    depth,
                    nodes,
                    leaves,
                } => {
                    let mut idx = 0usize;
                    for _ in 0..*depth {
                        let s = nodes[idx];
                        idx = 2 * idx + 1 + (row[s.feature as usize] > s.threshold) as usize;
                    }
                    leaves[idx - nodes.len()]
                }
                Layout::Sparse {
                    nodes,
                    children,
                    values,
                } => values[walk_sparse(nodes, children, row)],
            };
        }
        acc
    }

    /// Adds each tree's path length, in tree order, to `acc[r]` for the `acc.len()` rows of a
    /// row-major f32 block with `nf` columns.
    pub(crate) fn path_sum_block(&self, block: &[f32], nf: usize, acc: &mut [f64]) {
        for t in &self.trees {
            match t {
                Layout::Complete {
                    depth,
                    nodes,
                    leaves,
                } => walk_complete(*depth, nodes, leaves, block, nf, acc),
                Layout::Sparse {
                    nodes,
                    children,
                    values,
                } => {
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a += values[walk_sparse(nodes, children, &block[r * nf..(r + 1) * nf])];
                    }
                }
            }
        }
    }
}

#[inline]
fn walk_sparse(nodes: &[Split], children: &[(u32, u32)], row: &[f32]) -> usize {
    let mut i = 0usize;
    loop {
        let (l, r) = children[i];
        if l == u32::MAX {
            return i;
        }
        let s = nodes[i];
        i = if row[s.feature as usize] > s.threshold {
            r as usize
        } else {
            l as usize
        };
    }
}

#[inline]
fn walk_complete(
    depth: u32,
    nodes: &[Split],
    leaves: &[f64],
    block: &[f32],
    nf: usize,
    acc: &mut [f64],
) {
    let first_leaf = nodes.len();
    let mut chunks = acc.chunks_exact_mut(LANES);
    let mut base = 0usize;
    for chunk in &mut chunks {
        let rows = &block[base * nf..(base + LANES) * nf];
        let mut idx = [0usize; LANES];
        for _ in 0..depth {
            for (j, ix) in idx.iter_mut().enumerate() {
                let s = nodes[*ix];
                let x = rows[j * nf + s.feature as usize];
                *ix = 2 * *ix + 1 + (x > s.threshold) as usize;
            }
        }
        for (a, ix) in chunk.iter_mut().zip(idx) {
            *a += leaves[ix - first_leaf];
        }
        base += LANES;
    }
    for (j, a) in chunks.into_remainder().iter_mut().enumerate() {
        let row = &block[(base + j) * nf..(base + j + 1) * nf];
        let mut ix = 0usize;
        for _ in 0..depth {
            let s = nodes[ix];
            ix = 2 * ix + 1 + (row[s.feature as usize] > s.threshold) as usize;
        }
        *a += leaves[ix - first_leaf];
    }
}

fn compile(tree: &Tree, max_complete_depth: u32) -> Layout {
    let values = tree.leaf_values();
    let depth = tree.max_depth();
    let split_of = |i: usize| Split {
        threshold: threshold_to_f32(tree.threshold[i]),
        feature: tree.feature[i] as u32,
    };
    if depth > max_complete_depth {
        let nodes = (0..tree.n_nodes())
            .map(|i| {
                if tree.is_leaf(i) {
                    Split {
                        threshold: f32::INFINITY,
                        feature: 0,
                    }
                } else {
                    split_of(i)
                }
            })
            .collect();
        let children = (0..tree.n_nodes())
            .map(|i| {
                if tree.children_left[i] == TREE_LEAF {
                    (u32::MAX, u32::MAX)
                } else {
                    (tree.children_left[i] as u32, tree.children_right[i] as u32)
                }
            })
            .collect();
        return Layout::Sparse {
            nodes,
            children,
            values,
        };
    }
    let n_internal = (1usize << depth) - 1;
    let always_left = Split {
        threshold: f32::INFINITY,
        feature: 0,
    };
    let mut nodes = vec![always_left; n_internal];
    let mut leaves = vec![0.0; 1usize << depth];
    // (original node, heap position, level)
    let mut stack = vec![(0usize, 0usize, 0u32)];
    while let Some((node, pos, level)) = stack.pop() {
        if tree.is_leaf(node) {
            // Follow the always-left padding down to the bottom level.
            let mut p = pos;
            for _ in level..depth {
                p = 2 * p + 1;
            }
            leaves[p - n_internal] = values[node];
        } else {
            nodes[pos] = split_of(node);
            stack.push((tree.children_left[node] as usize, 2 * pos + 1, level + 1));
            stack.push((tree.children_right[node] as usize, 2 * pos + 2, level + 1));
        }
    }
    Layout::Complete {
        depth,
        nodes,
        leaves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_threshold_is_exact_for_all_f32_inputs() {
        for t in [
            0.1f64,
            -0.1,
            1e-40,
            3.000_000_1,
            1e39,
            -1e39,
            0.0,
            16_777_217.0,
        ] {
            let t32 = threshold_to_f32(t);
            let x0 = t as f32;
            for x in [
                x0.next_down().next_down(),
                x0.next_down(),
                x0,
                x0.next_up(),
                x0.next_up().next_up(),
            ] {
                assert_eq!((x as f64) <= t, x <= t32, "x={x:e} t={t:e} t32={t32:e}");
            }
        }
    }

    fn lopsided() -> Tree {
        // root splits f0 at 0.5; left is a leaf; right splits f1 at 2.0 into two leaves.
        Tree {
            children_left: vec![1, -1, 3, -1, -1],
            children_right: vec![2, -1, 4, -1, -1],
            feature: vec![0, -2, 1, -2, -2],
            threshold: vec![0.5, -2.0, 2.0, -2.0, -2.0],
            n_node_samples: vec![10, 4, 6, 1, 5],
        }
    }

    #[test]
    fn complete_and_sparse_layouts_agree_with_the_arrays() {
        let t = lopsided();
        let vals = t.leaf_values();
        let c = Compiled::new(std::slice::from_ref(&t));
        let sparse = Compiled {
            trees: vec![compile(&t, 0)],
        };
        assert!(matches!(sparse.trees[0], Layout::Sparse { .. }));
        assert!(matches!(c.trees[0], Layout::Complete { depth: 2, .. }));
        let rows: Vec<[f32; 2]> = vec![
            [0.0, 0.0],
            [0.5, 9.0],
            [0.6, 2.0],
            [0.6, 2.1],
            [9.0, -1.0],
            [1.0, 3.0],
            [0.2, 0.2],
            [0.7, 7.0],
            [0.8, 1.0],
            [0.9, 2.5],
        ];
        let block: Vec<f32> = rows.iter().flatten().copied().collect();
        let mut acc = vec![0.0; rows.len()];
        c.path_sum_block(&block, 2, &mut acc);
        let mut acc_sparse = vec![0.0; rows.len()];
        sparse.path_sum_block(&block, 2, &mut acc_sparse);
        for (r, row) in rows.iter().enumerate() {
            let expect = vals[t.apply(row)];
            assert_eq!(acc[r], expect, "row {r}");
            assert_eq!(acc_sparse[r], expect, "row {r}");
            assert_eq!(c.path_sum_row(row), expect, "row {r}");
        }
    }
}
