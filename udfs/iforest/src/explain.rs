//! Why a row scored as it did: exact path-dependent TreeSHAP (Lundberg, Erion & Lee 2018,
//! "Consistent individualized feature attribution for tree ensembles", Algorithm 2) over the
//! forest's mean path length, the way the `shap` package's `TreeExplainer` explains a
//! scikit-learn `IsolationForest`:
//!
//! * a leaf is worth its depth plus c(its samples) (scikit-learn's path length), each tree
//!   counts `1 / n_estimators`, so the explained quantity is the mean path length `E[h(x)]`;
//! * a node's cover is its training sample count (`weighted_n_node_samples` where the model
//!   file has it — bootstrap draws counted with repetition, as shap reads them — else
//!   `n_node_samples`);
//! * a row's feature values are cast to f32 before they meet a threshold, as in scoring.
//!
//! The contributions of a row sum to its mean path length minus the forest's expected one
//! (shap's `expected_value`). A **negative** contribution shortens the row's paths, i.e.
//! pushes it towards an anomaly: the score is `2^(-E[h(x)] / c(max_samples))`, monotone
//! decreasing in the path length.
//!
//! Cost: `O(trees · leaves · depth²)` per row, independent of the data seen so far; pipelines
//! explain the flagged rows only (see `docs/benchmarks.md`).

use crate::tree::Tree;

/// What [`crate::Forest::explain_row`] says about one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The forest's expected mean path length over its training samples (shap's
    /// `expected_value`).
    pub expected: f64,
    /// This row's mean path length over the trees.
    pub path_length: f64,
    /// One contribution per feature, in the model's feature order, in path-length units;
    /// they sum to `path_length - expected` (up to rounding).
    pub contributions: Vec<f64>,
}

/// One tree in the explainer's form: children as indices, leaf values pre-scaled by
/// `1 / n_estimators`, covers as f64.
#[derive(Debug, Clone)]
struct ExplainTree {
    left: Vec<u32>,
    right: Vec<u32>,
    feature: Vec<u32>,
    threshold: Vec<f64>,
    cover: Vec<f64>,
    /// Scaled leaf value (0 for inner nodes).
    value: Vec<f64>,
    max_depth: usize,
}

/// The forest prepared for explanations (built once per model, on first use).
#[derive(Debug, Clone)]
pub(crate) struct Explainer {
    trees: Vec<ExplainTree>,
    expected: f64,
    n_features: usize,
    /// Path buffer length for the deepest tree.
    buffer: usize,
}

/// Feature index of the path's root element (no feature).
const NO_FEATURE: u32 = u32::MAX;

/// One element of the path of unique features from the root to a node (Algorithm 2's `m`).
#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: u32,
    /// Fraction of the cover that flows down this path when the feature is unknown.
    zero: f64,
    /// 1 when the row's value follows this path, else 0.
    one: f64,
    /// Permutation weight.
    weight: f64,
}

impl Explainer {
    pub(crate) fn new(trees: &[Tree], n_features: usize) -> Self {
        let scaling = 1.0 / trees.len() as f64;
        let mut expected = 0.0;
        let trees: Vec<ExplainTree> = trees
            .iter()
            .map(|t| {
                let x = ExplainTree::new(t, scaling);
                expected += x.expectation();
                x
            })
            .collect();
        let deepest = trees.iter().map(|t| t.max_depth).max().unwrap_or(0);
        Explainer {
            trees,
            expected,
            n_features,
            buffer: (deepest + 2) * (deepest + 3) / 2 + 1,
        }
    }

    /// Explains one row of f32-cast feature values (in the model's feature order; finite).
    pub(crate) fn explain(&self, x: &[f32]) -> Explanation {
        let mut phi = vec![0.0; self.n_features];
        let mut path = vec![PathElement::default(); self.buffer];
        let mut path_length = 0.0;
        for t in &self.trees {
            path_length += t.value[t.leaf_of(x)];
            recurse(t, x, &mut phi, &mut path, 0, 0, 0, 1.0, 1.0, NO_FEATURE);
        }
        Explanation {
            expected: self.expected,
            path_length,
            contributions: phi,
        }
    }
}

impl ExplainTree {
    fn new(t: &Tree, scaling: f64) -> Self {
        let cover: Vec<f64> = match &t.weighted_n_node_samples {
            Some(w) => w.clone(),
            None => t.n_node_samples.iter().map(|&c| c as f64).collect(),
        };
        // The leaf values scikit-learn sums (depth + c(samples)); inner nodes hold 0.
        let value = t.leaf_values().into_iter().map(|v| v * scaling).collect();
        let max_depth = t.max_depth() as usize;
        let child = |c: &Vec<i64>| {
            c.iter()
                .map(|&i| if i < 0 { 0 } else { i as u32 })
                .collect()
        };
        ExplainTree {
            left: child(&t.children_left),
            right: child(&t.children_right),
            feature: t
                .feature
                .iter()
                .map(|&f| if f < 0 { NO_FEATURE } else { f as u32 })
                .collect(),
            threshold: t.threshold.clone(),
            cover,
            value,
            max_depth,
        }
    }

    fn is_leaf(&self, node: usize) -> bool {
        self.left[node] == 0
    }

    /// Which child the row goes to (scikit-learn's `x <= threshold` on the f32 value).
    fn hot(&self, node: usize, x: &[f32]) -> (usize, usize) {
        let (l, r) = (self.left[node] as usize, self.right[node] as usize);
        if f64::from(x[self.feature[node] as usize]) <= self.threshold[node] {
            (l, r)
        } else {
            (r, l)
        }
    }

    fn leaf_of(&self, x: &[f32]) -> usize {
        let mut node = 0;
        while !self.is_leaf(node) {
            node = self.hot(node, x).0;
        }
        node
    }

    /// The cover-weighted mean leaf value (this tree's share of the expected value).
    fn expectation(&self) -> f64 {
        let root = self.cover[0];
        if root == 0.0 {
            return 0.0;
        }
        let mut sum = 0.0;
        for node in 0..self.value.len() {
            if self.is_leaf(node) {
                sum += self.value[node] * self.cover[node];
            }
        }
        sum / root
    }
}

/// Algorithm 2's RECURSE: `path[parent..]` holds the parent's unique path of `depth`
/// elements; this node's copy goes right after it.
#[allow(clippy::too_many_arguments)]
fn recurse(
    t: &ExplainTree,
    x: &[f32],
    phi: &mut [f64],
    buf: &mut [PathElement],
    node: usize,
    parent: usize,
    depth: usize,
    zero: f64,
    one: f64,
    feature: u32,
) {
    let at = parent + depth + 1;
    buf.copy_within(parent..parent + depth + 1, at);
    let path = &mut buf[at..];
    extend(path, depth, zero, one, feature);
    if t.is_leaf(node) {
        for i in 1..=depth {
            let w = unwound_sum(path, depth, i);
            let e = path[i];
            phi[e.feature as usize] += w * (e.one - e.zero) * t.value[node];
        }
        return;
    }
    let split = t.feature[node];
    let (hot, cold) = t.hot(node, x);
    let w = t.cover[node];
    let (hot_zero, cold_zero) = (t.cover[hot] / w, t.cover[cold] / w);
    let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
    let mut depth = depth;
    // A feature split on before is undone here and redone below with both fractions.
    if let Some(k) = (0..=depth).find(|&k| path[k].feature == split) {
        incoming_zero = path[k].zero;
        incoming_one = path[k].one;
        unwind(path, depth, k);
        depth -= 1;
    }
    recurse(
        t,
        x,
        phi,
        buf,
        hot,
        at,
        depth + 1,
        hot_zero * incoming_zero,
        incoming_one,
        split,
    );
    recurse(
        t,
        x,
        phi,
        buf,
        cold,
        at,
        depth + 1,
        cold_zero * incoming_zero,
        0.0,
        split,
    );
}

/// Algorithm 2's EXTEND: grows the path by one feature (the operation order is shap's, so
/// the sums round alike).
fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: u32) {
    path[depth] = PathElement {
        feature,
        zero,
        one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let d1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / d1;
        path[i].weight = zero * path[i].weight * (depth - i) as f64 / d1;
    }
}

/// Algorithm 2's UNWIND: removes element `k` from the path.
fn unwind(path: &mut [PathElement], depth: usize, k: usize) {
    let (one, zero) = (path[k].one, path[k].zero);
    let d1 = (depth + 1) as f64;
    let mut next = path[depth].weight;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next * d1 / ((i + 1) as f64 * one);
            next = tmp - path[i].weight * zero * (depth - i) as f64 / d1;
        } else {
            path[i].weight = (path[i].weight * d1) / (zero * (depth - i) as f64);
        }
    }
    for i in k..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

/// The total permutation weight the path would have with element `k` removed.
fn unwound_sum(path: &[PathElement], depth: usize, k: usize) -> f64 {
    let (one, zero) = (path[k].one, path[k].zero);
    let mut next = path[depth].weight;
    let mut total = 0.0;
    if one != 0.0 {
        for i in (0..depth).rev() {
            let tmp = next / ((i + 1) as f64 * one);
            total += tmp;
            next = path[i].weight - tmp * zero * (depth - i) as f64;
        }
    } else {
        for i in (0..depth).rev() {
            total += path[i].weight / (zero * (depth - i) as f64);
        }
    }
    total * (depth + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force Shapley values of one tree's path-dependent value function: for a set S
    /// of known features, the expectation over the tree where unknown splits follow both
    /// children weighted by cover.
    fn brute(t: &ExplainTree, x: &[f32], nf: usize) -> Vec<f64> {
        fn value(t: &ExplainTree, x: &[f32], node: usize, known: u32) -> f64 {
            if t.is_leaf(node) {
                return t.value[node];
            }
            let f = t.feature[node];
            if known & (1 << f) != 0 {
                value(t, x, t.hot(node, x).0, known)
            } else {
                let (l, r) = (t.left[node] as usize, t.right[node] as usize);
                (t.cover[l] * value(t, x, l, known) + t.cover[r] * value(t, x, r, known))
                    / t.cover[node]
            }
        }
        let fact = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
        let mut phi = vec![0.0; nf];
        for (i, p) in phi.iter_mut().enumerate() {
            for s in 0u32..(1 << nf) {
                if s & (1 << i) != 0 {
                    continue;
                }
                let k = s.count_ones() as usize;
                let w = fact(k) * fact(nf - k - 1) / fact(nf);
                *p += w * (value(t, x, 0, s | (1 << i)) - value(t, x, 0, s));
            }
        }
        phi
    }

    fn tree() -> Tree {
        // Splits on f0, then f1 / f0 again, then f2: repeated features exercise UNWIND.
        Tree {
            children_left: vec![1, 2, -1, -1, 5, 7, -1, -1, -1],
            children_right: vec![4, 3, -1, -1, 6, 8, -1, -1, -1],
            feature: vec![0, 1, -2, -2, 0, 2, -2, -2, -2],
            threshold: vec![0.5, 1.5, -2.0, -2.0, 2.5, 0.0, -2.0, -2.0, -2.0],
            n_node_samples: vec![100, 40, 25, 15, 60, 45, 15, 30, 15],
            weighted_n_node_samples: None,
        }
    }

    #[test]
    fn tree_shap_equals_brute_force_shapley_values_and_sums_to_the_path_length() {
        let t = tree();
        t.validate(0, 3).expect("valid");
        let e = Explainer::new(std::slice::from_ref(&t), 3);
        let xt = &e.trees[0];
        for x in [
            [0.0f32, 1.0, 0.0],
            [0.0, 2.0, 5.0],
            [1.0, 0.0, -1.0],
            [3.0, 0.0, 1.0],
            [0.5, 1.5, 0.0],
            [2.5, 9.0, 0.1],
        ] {
            let got = e.explain(&x);
            let want = brute(xt, &x, 3);
            for (g, w) in got.contributions.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-12,
                    "{x:?}: {got:?} vs brute force {want:?}"
                );
            }
            let sum: f64 = got.contributions.iter().sum();
            assert!(
                (sum - (got.path_length - got.expected)).abs() < 1e-12,
                "{x:?}: contributions sum to {sum}, path length {} − expected {}",
                got.path_length,
                got.expected
            );
        }
    }

    #[test]
    fn a_feature_no_tree_splits_on_gets_nothing() {
        let t = tree();
        let e = Explainer::new(&[t.clone(), t], 4);
        let got = e.explain(&[3.0, 0.0, 1.0, 1e30]);
        assert_eq!(got.contributions[3], 0.0);
    }
}
