//! One isolation tree in scikit-learn's array form, its validation, the per-leaf path lengths
//! and the fixed-point units they are summed in.

use serde::{Deserialize, Serialize};

use crate::error::{ForestError, Result};

/// Euler–Mascheroni constant as numpy defines it (`np.euler_gamma`).
pub const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Marker scikit-learn stores in `children_left`/`children_right` of a leaf.
pub const TREE_LEAF: i64 = -1;

/// Average path length of an unsuccessful BST search among `n` points: c(n) in the
/// isolation forest paper, computed exactly as scikit-learn's `_average_path_length`.
pub fn average_path_length(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n == 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
    }
}

/// Most fraction bits of a fixed-point path length: a leaf of a tree of at most 8 levels
/// (path length below 32) then fits in 48 bits, four 12-bit pieces for the rank kernel.
pub const MAX_FRACTION_BITS: u32 = 43;

/// The fixed-point unit path lengths are summed in: `2^-bits`. Every kernel adds the same
/// integers, so the sum is exact and independent of order, and every kernel gives the same
/// bits. Each leaf is rounded by at most `2^-(bits + 1)` (`1.1e-13` at 43 bits), far inside
/// the 1e-12 by which scores may differ from scikit-learn's f64 sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathScale {
    bits: u32,
}

impl PathScale {
    /// The finest unit in which any one-leaf-per-tree sum of `trees` stays below `2^62`.
    pub fn for_trees(trees: &[Tree]) -> Self {
        Self::for_largest_sum(
            trees
                .iter()
                .map(|t| t.leaf_values().into_iter().fold(0.0, f64::max))
                .sum(),
        )
    }

    /// The finest unit in which sums up to `largest` stay below `2^62`.
    fn for_largest_sum(largest: f64) -> Self {
        let room = 62 - (largest + 1.0).log2().ceil() as i64;
        PathScale {
            bits: room.clamp(0, i64::from(MAX_FRACTION_BITS)) as u32,
        }
    }

    pub fn fraction_bits(self) -> u32 {
        self.bits
    }

    /// A path length in units (rounded to nearest).
    pub fn fixed(self, v: f64) -> i64 {
        (v * self.unit().recip()).round() as i64
    }

    /// The value of one unit, `2^-bits` (exact).
    pub fn unit(self) -> f64 {
        f64::from_bits(u64::from(1023 - self.bits) << 52)
    }

    /// A sum of units as a path length.
    pub fn to_f64(self, sum: i64) -> f64 {
        sum as f64 * self.unit()
    }
}

/// A fitted isolation tree: the arrays of scikit-learn's `tree_` object, with feature indices
/// referring to the forest's feature list (not to a per-tree subset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub children_left: Vec<i64>,
    pub children_right: Vec<i64>,
    pub feature: Vec<i64>,
    pub threshold: Vec<f64>,
    pub n_node_samples: Vec<u64>,
    /// Training draws per node counted with repetition (scikit-learn's
    /// `weighted_n_node_samples`), when they differ from `n_node_samples` (bootstrap
    /// sampling). Scores never read it; explanations use it as the nodes' cover, as shap does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_n_node_samples: Option<Vec<f64>>,
}

impl Tree {
    pub fn n_nodes(&self) -> usize {
        self.children_left.len()
    }

    pub fn is_leaf(&self, node: usize) -> bool {
        self.children_left[node] == TREE_LEAF
    }

    /// Checks the arrays describe a proper binary tree rooted at node 0 over `n_features`
    /// features. `tree` is the tree's position, used in messages.
    pub fn validate(&self, tree: usize, n_features: usize) -> Result<()> {
        let n = self.children_left.len();
        let bad = |what: String| ForestError::invalid(format!("tree {tree}: {what}"));
        if n == 0 {
            return Err(bad("has no nodes".into()));
        }
        for (name, len) in [
            ("children_right", self.children_right.len()),
            ("feature", self.feature.len()),
            ("threshold", self.threshold.len()),
            ("n_node_samples", self.n_node_samples.len()),
            (
                "weighted_n_node_samples",
                self.weighted_n_node_samples.as_ref().map_or(n, Vec::len),
            ),
        ] {
            if len != n {
                return Err(bad(format!(
                    "{name} has {len} entries but children_left has {n}"
                )));
            }
        }
        let mut parents = vec![0u32; n];
        for i in 0..n {
            let (l, r) = (self.children_left[i], self.children_right[i]);
            if l == TREE_LEAF || r == TREE_LEAF {
                if l != r {
                    return Err(bad(format!(
                        "node {i} has one child only (left {l}, right {r})"
                    )));
                }
                continue;
            }
            for c in [l, r] {
                if c <= i as i64 || c >= n as i64 {
                    return Err(bad(format!(
                        "node {i} points to child {c}, which is not a later node (tree has {n} nodes)"
                    )));
                }
                parents[c as usize] += 1;
            }
            let f = self.feature[i];
            if f < 0 || f as usize >= n_features {
                return Err(bad(format!(
                    "node {i} splits on feature {f}, but the model has {n_features} features"
                )));
            }
            if self.threshold[i].is_nan() {
                return Err(bad(format!("node {i} has a NaN threshold")));
            }
            let (ns, nl, nr) = (
                self.n_node_samples[i],
                self.n_node_samples[l as usize],
                self.n_node_samples[r as usize],
            );
            if nl + nr != ns {
                return Err(bad(format!(
                    "node {i} has {ns} samples but its children have {nl} + {nr}"
                )));
            }
        }
        if let Some(i) = (1..n).find(|&i| parents[i] != 1) {
            return Err(bad(format!(
                "node {i} has {} parents (expected exactly one)",
                parents[i]
            )));
        }
        if let Some(i) = (0..n).find(|&i| self.n_node_samples[i] == 0) {
            return Err(bad(format!("node {i} has 0 samples")));
        }
        if let Some(w) = &self.weighted_n_node_samples
            && let Some(i) = (0..n).find(|&i| !(w[i].is_finite() && w[i] > 0.0))
        {
            return Err(bad(format!(
                "node {i} has weighted_n_node_samples {}, expected a positive number",
                w[i]
            )));
        }
        Ok(())
    }

    /// Depth of every node, root = 0. Requires a validated tree (children after parents).
    pub fn node_depths(&self) -> Vec<u32> {
        let mut depth = vec![0u32; self.n_nodes()];
        for i in 0..self.n_nodes() {
            if !self.is_leaf(i) {
                depth[self.children_left[i] as usize] = depth[i] + 1;
                depth[self.children_right[i] as usize] = depth[i] + 1;
            }
        }
        depth
    }

    /// Number of split levels: the depth of the deepest leaf, root = 0.
    pub fn max_depth(&self) -> u32 {
        self.node_depths().into_iter().max().unwrap_or(0)
    }

    /// Path length a row ending in each node contributes, as scikit-learn sums it:
    /// `decision_path_length + c(n_node_samples) - 1`, with the root's path length 1.
    /// Internal nodes get 0 (never used).
    pub fn leaf_values(&self) -> Vec<f64> {
        let depth = self.node_depths();
        (0..self.n_nodes())
            .map(|i| {
                if self.is_leaf(i) {
                    (depth[i] as f64 + 1.0) + average_path_length(self.n_node_samples[i] as f64)
                        - 1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Index of the leaf a row reaches, walking the arrays (left iff `x[f] <= threshold`,
    /// with `x` already cast to f32 as scikit-learn does).
    #[inline]
    pub fn apply(&self, row: &[f32]) -> usize {
        let mut node = 0usize;
        while self.children_left[node] != TREE_LEAF {
            let x = row[self.feature[node] as usize] as f64;
            node = if x <= self.threshold[node] {
                self.children_left[node] as usize
            } else {
                self.children_right[node] as usize
            };
        }
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_path_length_matches_sklearn_values() {
        // Values from sklearn.ensemble._iforest._average_path_length.
        assert_eq!(average_path_length(0.0), 0.0);
        assert_eq!(average_path_length(1.0), 0.0);
        assert_eq!(average_path_length(2.0), 1.0);
        assert!((average_path_length(5.0) - 2.327_020_052_042_847).abs() < 1e-12);
        assert!((average_path_length(999.0) - 12.967_939_884_427_995).abs() < 1e-11);
    }

    fn stump() -> Tree {
        Tree {
            children_left: vec![1, -1, -1],
            children_right: vec![2, -1, -1],
            feature: vec![0, -2, -2],
            threshold: vec![0.5, -2.0, -2.0],
            n_node_samples: vec![3, 1, 2],
            weighted_n_node_samples: None,
        }
    }

    #[test]
    fn validate_accepts_a_stump_and_rejects_corruption() {
        stump().validate(0, 1).unwrap();
        let mut t = stump();
        t.children_right[0] = 0;
        let e = t.validate(3, 1).unwrap_err().to_string();
        assert!(e.contains("tree 3: node 0 points to child 0"), "{e}");
        let mut t = stump();
        t.feature[0] = 4;
        let e = t.validate(0, 2).unwrap_err().to_string();
        assert!(
            e.contains("splits on feature 4, but the model has 2 features"),
            "{e}"
        );
        let mut t = stump();
        t.n_node_samples.pop();
        let e = t.validate(0, 1).unwrap_err().to_string();
        assert!(e.contains("n_node_samples has 2 entries"), "{e}");
        let mut t = stump();
        t.n_node_samples[2] = 5;
        let e = t.validate(0, 1).unwrap_err().to_string();
        assert!(
            e.contains("has 3 samples but its children have 1 + 5"),
            "{e}"
        );
    }

    #[test]
    fn path_scale_is_exact_in_powers_of_two_and_bounds_the_sum() {
        let s = PathScale::for_trees(&[stump(), stump()]);
        assert_eq!(s.fraction_bits(), MAX_FRACTION_BITS);
        assert_eq!(s.unit(), 2f64.powi(-43));
        assert_eq!(s.fixed(1.5), 3 << 42);
        assert_eq!(s.to_f64(s.fixed(2.0)), 2.0);
        let third = 1.0 / 3.0;
        assert!((s.to_f64(s.fixed(third)) - third).abs() <= s.unit() / 2.0);
        // Many trees leave fewer fraction bits, so the sum of their largest leaves fits i64.
        for largest in [1e6, 3e7, 1e12, 1e18] {
            let m = PathScale::for_largest_sum(largest);
            assert!(m.fraction_bits() < MAX_FRACTION_BITS);
            assert!((largest * m.unit().recip()) < 2f64.powi(62), "{largest}");
        }
    }

    #[test]
    fn leaf_values_follow_sklearn() {
        let v = stump().leaf_values();
        assert_eq!(v[1], 2.0 + 0.0 - 1.0);
        assert_eq!(v[2], 2.0 + 1.0 - 1.0);
        assert_eq!(stump().apply(&[0.5]), 1);
        assert_eq!(stump().apply(&[0.6]), 2);
    }
}
