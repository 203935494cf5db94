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
//! Three exact algorithms compute the same values; [`Explainer::explain`] runs the first the
//! forest allows:
//!
//! * **Fast TreeSHAP v2**, after Yang, "Fast TreeSHAP: Accelerating SHAP Value Computation for
//!   Trees" (2021), the one used for forests like the default: a leaf with `u` unique path
//!   features, path-dependent factors `z_j` (the product of its cover fractions on feature
//!   `j`) and value `v` contributes, for the set `A` of those features the row agrees with at
//!   every split on them, `r_i · H[A \ {i}]` to each `i ∈ A` and `−H[A]` to each `i ∉ A`, where
//!   `r_i = (1 − z_i) / z_i` and `H[A] = v · Σ_{S ⊆ A} w(|S|, u) · Π_{j ∉ S} z_j`,
//!   `w(k, u) = k!(u−1−k)!/u!`. `H` depends on the model only: it is tabulated once per leaf
//!   (`2^u` entries, by a subset-sum transform), so a row costs one pass over each tree's
//!   nodes (which features each leaf's path agrees with, as bit masks) and `u + 1` look-ups
//!   per leaf. Built when every path has at most 16 unique features, no edge has zero cover
//!   and the tables fit in 32 MiB (the default model: 8 features at most, 2.2 MB).
//! * **Linear TreeSHAP**, after Yu, Xu, Bifet & Read, "Linear TreeShap" (NeurIPS 2022), for
//!   bigger forests: a leaf's path-dependent value function is a product over its unique path
//!   features of `z + (o − z)·t`, the Shapley weight `|S|!(d−|S|−1)!/d!` is
//!   `∫₀¹ t^|S| (1−t)^(d−|S|−1) dt`, so a feature's contribution from the leaves below an edge
//!   is one integral of their summed product polynomials divided by that edge's factor.
//!   Polynomials are held as their values at `K` Gauss–Legendre points on `[0, 1]` (exact for
//!   degree `2K − 1`), summed bottom-up in one walk of each tree: `O(trees · nodes · K)` per
//!   row, `K = ⌈depth / 2⌉`.
//! * **Algorithm 2** of Lundberg et al. (`O(trees · leaves · depth²)`), shap's own, kept as the
//!   reference the tests hold the others to and for trees deeper than 32 levels.
//!
//! Both are independent of the data seen so far; pipelines explain the flagged rows only
//! (see `docs/benchmarks.md`).

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
    /// The node's cover over its parent's (the root's is 1): the `z` of the edge into it.
    share: Vec<f64>,
    max_depth: usize,
}

/// The forest prepared for explanations (built once per model, on first use).
#[derive(Debug, Clone)]
pub(crate) struct Explainer {
    trees: Vec<ExplainTree>,
    expected: f64,
    n_features: usize,
    /// Path buffer length for the deepest tree (Algorithm 2).
    buffer: usize,
    /// Gauss–Legendre points and weights on `[0, 1]` for Linear TreeSHAP; `None` when the
    /// trees are too deep for the largest rule kept (then Algorithm 2 runs).
    quadrature: Option<Quadrature>,
    /// Fast TreeSHAP v2 tables; `None` when the forest is too deep or too big for them
    /// (then Linear TreeSHAP runs).
    tables: Option<Tables>,
}

/// Point counts Linear TreeSHAP is compiled for (each exact up to degree `2K − 1`).
const POINT_COUNTS: [usize; 3] = [4, 8, 16];

/// A Gauss–Legendre rule on `[0, 1]`.
#[derive(Debug, Clone)]
struct Quadrature {
    points: Vec<f64>,
    weights: Vec<f64>,
}

impl Quadrature {
    /// The `k`-point rule: Newton's method on the Legendre polynomial from the usual
    /// Chebyshev-like first guesses, then mapped from `[−1, 1]` to `[0, 1]`.
    fn gauss_legendre(k: usize) -> Self {
        let mut points = vec![0.0; k];
        let mut weights = vec![0.0; k];
        for i in 0..k {
            let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (k as f64 + 0.5)).cos();
            let mut dp = 1.0;
            for _ in 0..100 {
                // P_k(x) and its derivative by the three-term recurrence.
                let (mut p0, mut p1) = (1.0, x);
                for j in 2..=k {
                    let p2 = ((2 * j - 1) as f64 * x * p1 - (j - 1) as f64 * p0) / j as f64;
                    p0 = p1;
                    p1 = p2;
                }
                dp = k as f64 * (x * p1 - p0) / (x * x - 1.0);
                let step = p1 / dp;
                x -= step;
                if step.abs() < 1e-16 {
                    break;
                }
            }
            points[i] = (1.0 - x) / 2.0;
            weights[i] = 1.0 / ((1.0 - x * x) * dp * dp);
        }
        Quadrature { points, weights }
    }
}

/// Largest number of unique features on one root-to-leaf path the tables are built for
/// (a leaf's table has `2^u` entries).
const MAX_TABLE_PATH: usize = 16;

/// Largest number of table entries (f64) over the whole forest: 32 MiB. The default
/// model needs ~280 k (2.2 MB); bigger forests explain by Linear TreeSHAP.
const MAX_TABLE_ENTRIES: usize = 1 << 22;

/// Fast TreeSHAP v2 tables (see the module doc) for every tree.
#[derive(Debug, Clone)]
struct Tables {
    trees: Vec<TreeTables>,
    /// Per leaf path, its unique features in first-split order.
    features: Vec<u32>,
    /// Per leaf, for every subset `A` of its path's positions (the features the row agrees
    /// with), the `u` contributions of the path's features: `(1 − z_j) / z_j · H[A \ {j}]`
    /// for `j ∈ A`, `−H[A]` for the others, where
    /// `H[A] = v · Σ_{S ⊆ A} w(|S|, u) · Π_{j ∉ S} z_j`.
    values: Vec<f64>,
    /// Nodes of the largest tree (the row's mask buffer).
    max_nodes: usize,
}

/// One tree's part: its inner nodes in index order (parents before children) and its
/// leaves, sorted by path length so the per-leaf loop's trip count is predictable.
#[derive(Debug, Clone)]
struct TreeTables {
    inner: Vec<InnerNode>,
    leaves: Vec<LeafTable>,
}

#[derive(Debug, Clone, Copy)]
struct InnerNode {
    threshold: f64,
    feature: u32,
    /// The bit of the node's feature's position on the paths through it: a row that goes
    /// the other way loses it in the leaves below.
    bit: u32,
    node: u32,
    left: u32,
    right: u32,
}

impl LeafTable {
    /// Where the leaf's contributions for the row walked into `mask` start in `values`.
    #[inline]
    fn row(&self, mask: &[u32]) -> usize {
        let agree = (mask[self.node as usize] & ((1u32 << self.u) - 1)) as usize;
        self.table as usize + agree * self.u as usize
    }
}

#[derive(Debug, Clone, Copy)]
struct LeafTable {
    /// Scaled leaf value (the row's path length when it reaches this leaf).
    value: f64,
    node: u32,
    /// Unique features on the path.
    u: u32,
    /// Offset of the path's entries in `features`.
    path: u32,
    /// Offset of the leaf's `2^u · u` entries in `values`.
    table: u32,
}

impl Tables {
    /// Row `x`'s way through one tree: per node, the bits of the path positions whose
    /// splits the row followed (`mask`, at least the tree's node count long). Then asks the
    /// memory for each leaf's row of contributions (scattered over the tables: a cache miss
    /// each), so that they have arrived when [`Self::add_tree`] reads them. Branch-free
    /// where the row decides: those branches are unpredictable.
    #[inline]
    fn walk_row(&self, tree: &TreeTables, x: &[f32], mask: &mut [u32]) {
        if tree.leaves.is_empty() {
            return;
        }
        mask[0] = u32::MAX;
        for n in &tree.inner {
            let m = mask[n.node as usize];
            let left = f64::from(x[n.feature as usize]) <= n.threshold;
            let gone = if left { 0 } else { n.bit };
            mask[n.left as usize] = m & !gone;
            mask[n.right as usize] = m & !(n.bit ^ gone);
        }
        #[cfg(target_arch = "x86_64")]
        for leaf in &tree.leaves {
            if let Some(v) = self.values.get(leaf.row(mask)) {
                // SAFETY: a prefetch is a hint: it reads nothing and cannot fault; the
                // pointer is into `values`.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        (v as *const f64).cast(),
                    )
                };
            }
        }
    }

    /// Adds the contributions of one tree, walked by [`Self::walk_row`] into `mask`, to
    /// `phi`; returns the row's path length in it.
    #[inline]
    fn add_tree(&self, tree: &TreeTables, mask: &[u32], phi: &mut [f64]) -> f64 {
        // The one leaf whose path the row follows at every split; +0.0 elsewhere.
        let mut reached = 0.0;
        for leaf in &tree.leaves {
            reached += if mask[leaf.node as usize] == u32::MAX {
                leaf.value
            } else {
                0.0
            };
            let u = leaf.u as usize;
            let g = &self.values[leaf.row(mask)..][..u];
            let features = &self.features[leaf.path as usize..][..u];
            for (&f, &c) in features.iter().zip(g) {
                phi[f as usize] += c;
            }
        }
        reached
    }

    /// The tables, or `None` when a path has more than [`MAX_TABLE_PATH`] unique features,
    /// an edge carries no cover (`z = 0` has no ratio), or the forest needs more than
    /// [`MAX_TABLE_ENTRIES`].
    fn new(trees: &[ExplainTree]) -> Option<Self> {
        let mut tables = Tables {
            trees: Vec::with_capacity(trees.len()),
            features: Vec::new(),
            values: Vec::new(),
            max_nodes: trees.iter().map(|t| t.left.len()).max().unwrap_or(0),
        };
        // w(k, u) = k! (u − 1 − k)! / u! for u ≤ MAX_TABLE_PATH, k < u.
        let fact: Vec<f64> = (0..=MAX_TABLE_PATH)
            .scan(1.0, |f, k| {
                if k > 0 {
                    *f *= k as f64;
                }
                Some(*f)
            })
            .collect();
        let mut path = Vec::with_capacity(MAX_TABLE_PATH);
        for t in trees {
            let mut tree = TreeTables {
                inner: Vec::new(),
                leaves: Vec::new(),
            };
            if !t.left.is_empty() {
                tables.walk(t, &mut tree, 0, &mut path, &fact)?;
            }
            tree.inner.sort_by_key(|n| n.node);
            tree.leaves.sort_by_key(|l| l.u);
            tables.trees.push(tree);
        }
        Some(tables)
    }

    /// Builds the tables of the leaves below `node`, whose path of unique features (with
    /// their combined cover fractions) is `path`.
    fn walk(
        &mut self,
        t: &ExplainTree,
        tree: &mut TreeTables,
        node: usize,
        path: &mut Vec<(u32, f64)>,
        fact: &[f64],
    ) -> Option<()> {
        if t.is_leaf(node) {
            return self.leaf(t.value[node], node, path, fact, tree);
        }
        let f = t.feature[node];
        let (position, before) = match path.iter().position(|&(g, _)| g == f) {
            Some(p) => (p, Some(path[p].1)),
            None if path.len() < MAX_TABLE_PATH => {
                path.push((f, 1.0));
                (path.len() - 1, None)
            }
            None => return None,
        };
        tree.inner.push(InnerNode {
            threshold: t.threshold[node],
            feature: f,
            bit: 1 << position,
            node: node as u32,
            left: t.left[node],
            right: t.right[node],
        });
        for child in [t.left[node] as usize, t.right[node] as usize] {
            path[position].1 = before.unwrap_or(1.0) * t.share[child];
            self.walk(t, tree, child, path, fact)?;
        }
        match before {
            Some(z) => path[position].1 = z,
            None => {
                path.pop();
            }
        }
        Some(())
    }

    fn leaf(
        &mut self,
        value: f64,
        node: usize,
        path: &[(u32, f64)],
        fact: &[f64],
        tree: &mut TreeTables,
    ) -> Option<()> {
        // (A one-leaf tree's leaf has u = 0: one entry, no contributions, its path length.)
        let u = path.len();
        if path.iter().any(|&(_, z)| z <= 0.0) {
            return None;
        }
        let full = (1usize << u) - 1;
        if self.values.len() + (full + 1) * u > MAX_TABLE_ENTRIES {
            return None;
        }
        tree.leaves.push(LeafTable {
            value,
            node: node as u32,
            u: u as u32,
            path: self.features.len() as u32,
            table: self.values.len() as u32,
        });
        self.features.extend(path.iter().map(|&(f, _)| f));
        // product[m] = Π_{j ∈ m} z_j, one multiplication per mask.
        let mut product = vec![1.0; full + 1];
        for m in 1..=full {
            product[m] = product[m & (m - 1)] * path[m.trailing_zeros() as usize].1;
        }
        // t(S) = v · w(|S|, u) · Π_{j ∉ S} z_j; t(U) is never read (a feature's own bit is
        // always out of the set looked up), so it stays 0.
        let mut h: Vec<f64> = (0..=full)
            .map(|s| {
                if s == full {
                    return 0.0;
                }
                let k = s.count_ones() as usize;
                value * fact[k] * fact[u - 1 - k] / fact[u] * product[full ^ s]
            })
            .collect();
        // Subset sums (the zeta transform): H[A] = Σ_{S ⊆ A} t(S).
        for j in 0..u {
            let bit = 1 << j;
            for m in 0..=full {
                if m & bit != 0 {
                    h[m] += h[m ^ bit];
                }
            }
        }
        // Per agreement set A, each path feature's contribution: r_j · H[A \ {j}] when the
        // row agrees on it, −H[A] when not.
        let ratios: Vec<f64> = path.iter().map(|&(_, z)| (1.0 - z) / z).collect();
        for a in 0..=full {
            self.values.extend((0..u).map(|j| {
                let bit = 1 << j;
                if a & bit != 0 {
                    ratios[j] * h[a ^ bit]
                } else {
                    -h[a]
                }
            }));
        }
        Some(())
    }
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
        // A leaf's product has one factor per unique feature on its path; the integrand (one
        // factor divided out) has degree one less.
        let degree = deepest.min(n_features).saturating_sub(1);
        let quadrature = POINT_COUNTS
            .into_iter()
            .find(|&k| 2 * k > degree) // 2k − 1 ≥ degree
            .map(Quadrature::gauss_legendre);
        let tables = Tables::new(&trees);
        Explainer {
            trees,
            expected,
            n_features,
            buffer: (deepest + 2) * (deepest + 3) / 2 + 1,
            quadrature,
            tables,
        }
    }

    /// Explains one row of f32-cast feature values (in the model's feature order; finite)
    /// by the fastest algorithm the forest allows.
    pub(crate) fn explain(&self, x: &[f32]) -> Explanation {
        match &self.tables {
            Some(tables) => self.explain_tables(tables, x),
            None => self.explain_linear_tree_shap(x),
        }
    }

    /// Which algorithm [`Self::explain`] runs.
    pub(crate) fn algorithm(&self) -> &'static str {
        match (&self.tables, &self.quadrature) {
            (Some(_), _) => "Fast TreeSHAP v2 tables",
            (None, Some(_)) => "Linear TreeSHAP",
            (None, None) => "TreeSHAP Algorithm 2",
        }
    }

    /// Fast TreeSHAP v2: one pass over each tree's nodes gives every leaf the set of its
    /// path's features the row agrees with, then a few table look-ups per leaf.
    fn explain_tables(&self, tables: &Tables, x: &[f32]) -> Explanation {
        let mut phi = vec![0.0; self.n_features];
        // (Walking the next tree before adding this one's, to give the prefetches longer,
        // measured slower.)
        let mut mask = vec![0u32; tables.max_nodes];
        let mut path_length = 0.0;
        for tree in &tables.trees {
            tables.walk_row(tree, x, &mut mask);
            path_length += tables.add_tree(tree, &mask, &mut phi);
        }
        Explanation {
            expected: self.expected,
            path_length,
            contributions: phi,
        }
    }

    /// Explains many rows (row-major f32 values, `n_features` each; finite): the same values
    /// as [`Self::explain`] row by row. With tables, the rows go through one tree at a time
    /// (its part of the tables, ~120 kB on the default model, stays in the core's cache).
    pub(crate) fn explain_many(&self, rows: &[f32]) -> Vec<Explanation> {
        let nf = self.n_features.max(1);
        let Some(tables) = &self.tables else {
            return rows.chunks_exact(nf).map(|x| self.explain(x)).collect();
        };
        let n = rows.len() / nf;
        let mut phi = vec![0.0; n * nf];
        let mut path_length = vec![0.0; n];
        let mut mask = vec![0u32; tables.max_nodes];
        for tree in &tables.trees {
            for ((x, p), l) in rows
                .chunks_exact(nf)
                .zip(phi.chunks_exact_mut(nf))
                .zip(&mut path_length)
            {
                tables.walk_row(tree, x, &mut mask);
                *l += tables.add_tree(tree, &mask, p);
            }
        }
        phi.chunks_exact(nf)
            .zip(path_length)
            .map(|(p, l)| Explanation {
                expected: self.expected,
                path_length: l,
                contributions: p[..self.n_features].to_vec(),
            })
            .collect()
    }

    /// Linear TreeSHAP where a quadrature rule applies, else Algorithm 2.
    pub(crate) fn explain_linear_tree_shap(&self, x: &[f32]) -> Explanation {
        match &self.quadrature {
            Some(q) if q.points.len() == 4 => self.explain_linear::<4>(q, x),
            Some(q) if q.points.len() == 8 => self.explain_linear::<8>(q, x),
            Some(q) if q.points.len() == 16 => self.explain_linear::<16>(q, x),
            _ => self.explain_algorithm2(x),
        }
    }

    /// Linear TreeSHAP with `q`, a `K`-point rule (see the module doc).
    fn explain_linear<const K: usize>(&self, q: &Quadrature, x: &[f32]) -> Explanation {
        let mut walk = LinearWalk::<K>::new(x, q, self.n_features);
        let mut path_length = 0.0;
        for t in &self.trees {
            path_length += t.value[t.leaf_of(x)];
            walk.node(t, 0, [1.0; K]);
        }
        Explanation {
            expected: self.expected,
            path_length,
            contributions: walk.phi,
        }
    }

    /// Algorithm 2 (shap's TreeSHAP).
    pub(crate) fn explain_algorithm2(&self, x: &[f32]) -> Explanation {
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
        let mut share = vec![1.0; cover.len()];
        for node in 0..cover.len() {
            if !t.is_leaf(node) {
                for c in [t.children_left[node], t.children_right[node]] {
                    share[c as usize] = cover[c as usize] / cover[node];
                }
            }
        }
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
            share,
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

/// One row's Linear TreeSHAP walk over the trees.
struct LinearWalk<'a, const K: usize> {
    x: &'a [f32],
    points: &'a [f64; K],
    weights: &'a [f64; K],
    phi: Vec<f64>,
    /// Per feature, the combined `(z, o)` of the splits on it along the current path.
    on_path: Vec<Option<(f64, f64)>>,
    /// Per feature, the summed leaf products below the deeper edges on that feature seen
    /// under the current edge on it: those leaves' factor for the feature is a deeper one.
    below: Vec<[f64; K]>,
}

impl<'a, const K: usize> LinearWalk<'a, K> {
    fn new(x: &'a [f32], q: &'a Quadrature, n_features: usize) -> Self {
        let points: &[f64; K] = q.points.as_slice().try_into().expect("K points");
        let weights: &[f64; K] = q.weights.as_slice().try_into().expect("K weights");
        LinearWalk {
            x,
            points,
            weights,
            phi: vec![0.0; n_features],
            on_path: vec![None; n_features],
            below: vec![[0.0; K]; n_features],
        }
    }

    /// Walks the subtree at `node`, whose path product (at the points) is `product`; returns
    /// the sum over its leaves of value × leaf product, and adds the contributions of the
    /// splits inside it to `phi`. (Tried and measured slower on the default model: a
    /// branchy variant that skips divisions on the cold side, and an iterative two-pass one
    /// over per-edge arrays; the time is not in the divisions.)
    fn node(&mut self, t: &ExplainTree, node: usize, product: [f64; K]) -> [f64; K] {
        if t.is_leaf(node) {
            let v = t.value[node];
            return product.map(|p| p * v);
        }
        let f = t.feature[node] as usize;
        let (hot, cold) = t.hot(node, self.x);
        let before = self.on_path[f];
        let mut sum = [0.0; K];
        for (child, one) in [(hot, 1.0), (cold, 0.0)] {
            let (z, o) = match before {
                Some((z0, o0)) => (z0 * t.share[child], o0 * one),
                None => (t.share[child], one),
            };
            let factor: [f64; K] = std::array::from_fn(|k| z + (o - z) * self.points[k]);
            let next: [f64; K] = match before {
                Some((z0, o0)) => std::array::from_fn(|k| {
                    product[k] * factor[k] / (z0 + (o0 - z0) * self.points[k])
                }),
                None => std::array::from_fn(|k| product[k] * factor[k]),
            };
            self.on_path[f] = Some((z, o));
            let outer = std::mem::replace(&mut self.below[f], [0.0; K]);
            let leaves = self.node(t, child, next);
            let mut integral = 0.0;
            for k in 0..K {
                integral += self.weights[k] * (leaves[k] - self.below[f][k]) / factor[k];
            }
            self.phi[f] += (o - z) * integral;
            for k in 0..K {
                self.below[f][k] = outer[k] + leaves[k];
                sum[k] += leaves[k];
            }
        }
        self.on_path[f] = before;
        sum
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

    fn no_nodes() -> Tree {
        Tree {
            children_left: vec![],
            children_right: vec![],
            feature: vec![],
            threshold: vec![],
            n_node_samples: vec![],
            weighted_n_node_samples: None,
        }
    }

    /// A random tree in scikit-learn's layout (children after parents) with `samples` at the
    /// root, split until one sample or `max_depth`, over few features so splits repeat.
    fn random_tree(rng: &mut impl rand::Rng, samples: u64, max_depth: u32, nf: usize) -> Tree {
        let mut t = no_nodes();
        fn grow(t: &mut Tree, rng: &mut impl rand::Rng, n: u64, depth: u32, max: u32, nf: usize) {
            let at = t.children_left.len();
            t.children_left.push(-1);
            t.children_right.push(-1);
            t.feature.push(-2);
            t.threshold.push(-2.0);
            t.n_node_samples.push(n);
            if n < 2 || depth == max {
                return;
            }
            let left = rng.random_range(1..n);
            t.feature[at] = rng.random_range(0..nf as i64);
            t.threshold[at] = f64::from(rng.random_range(-4i32..4)) + 0.5;
            t.children_left[at] = t.children_left.len() as i64;
            grow(t, rng, left, depth + 1, max, nf);
            t.children_right[at] = t.children_left.len() as i64;
            grow(t, rng, n - left, depth + 1, max, nf);
        }
        grow(&mut t, rng, samples, 0, max_depth, nf);
        t
    }

    #[test]
    fn gauss_legendre_rules_integrate_their_degree_exactly() {
        for k in POINT_COUNTS {
            let q = Quadrature::gauss_legendre(k);
            assert!(q.points.iter().all(|&t| 0.0 < t && t < 1.0), "{k}: {q:?}");
            // ∫₀¹ t^d dt = 1 / (d + 1) for every degree up to 2k − 1.
            for d in 0..2 * k {
                let got: f64 = q
                    .points
                    .iter()
                    .zip(&q.weights)
                    .map(|(t, w)| w * t.powi(d as i32))
                    .sum();
                let want = 1.0 / (d + 1) as f64;
                assert!(
                    (got - want).abs() < 1e-14,
                    "{k} points, degree {d}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn tables_and_linear_tree_shap_equal_algorithm_2_on_random_deep_trees() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Small and deep trees; 3 to 6 features make repeated splits on a path the rule. The
        // last forest needs more table entries than the cap allows: no tables there.
        for (max_depth, nf, samples, tabled) in [
            (8, 3, 256, true),
            (8, 5, 256, true),
            (14, 5, 4000, true),
            (24, 6, 60000, false),
        ] {
            let trees: Vec<Tree> = (0..4)
                .map(|_| random_tree(&mut rng, samples, max_depth, nf))
                .collect();
            for (i, t) in trees.iter().enumerate() {
                t.validate(i, nf).expect("valid random tree");
            }
            let e = Explainer::new(&trees, nf);
            let k = e.quadrature.as_ref().map(|q| q.points.len());
            let deepest = e.trees.iter().map(|t| t.max_depth).max().unwrap_or(0);
            assert!(k.is_some(), "depth {deepest}: a rule must apply");
            let entries = e
                .trees
                .iter()
                .map(|t| (0..t.left.len()).filter(|&n| t.is_leaf(n)).count() << nf);
            assert_eq!(
                e.tables.is_some(),
                tabled,
                "up to {} table entries",
                entries.sum::<usize>()
            );
            for _ in 0..50 {
                let x: Vec<f32> = (0..nf).map(|_| rng.random_range(-5.0f32..5.0)).collect();
                let reference = e.explain_algorithm2(&x);
                let tables = e.tables.as_ref().map(|t| e.explain_tables(t, &x));
                for (name, got) in [
                    ("linear", Some(e.explain_linear_tree_shap(&x))),
                    ("tables", tables),
                    ("default", Some(e.explain(&x))),
                ]
                .into_iter()
                .filter_map(|(n, g)| Some((n, g?)))
                {
                    for (f, (a, b)) in got
                        .contributions
                        .iter()
                        .zip(&reference.contributions)
                        .enumerate()
                    {
                        assert!(
                            (a - b).abs() < 1e-12,
                            "depth {deepest}, {k:?} points, feature {f}: {name} {a} vs algorithm 2 {b}"
                        );
                    }
                    assert_eq!(got.path_length, reference.path_length, "{name}");
                }
            }
        }
    }

    /// A chain of `depth` splits on `depth` features, each cutting one sample off to a leaf.
    fn chain(depth: usize) -> Tree {
        let mut t = no_nodes();
        for d in 0..depth {
            let here = t.children_left.len() as i64;
            t.children_left.extend([here + 1, -1]);
            t.children_right.extend([here + 2, -1]);
            t.feature.extend([d as i64, -2]);
            t.threshold.extend([0.5, -2.0]);
            t.n_node_samples.extend([(depth - d + 1) as u64, 1]);
        }
        t.children_left.push(-1);
        t.children_right.push(-1);
        t.feature.push(-2);
        t.threshold.push(-2.0);
        t.n_node_samples.push(1);
        t.validate(0, depth).expect("valid chain");
        t
    }

    #[test]
    fn paths_with_more_than_16_features_explain_by_linear_tree_shap() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let depth = 20;
        let e = Explainer::new(&[chain(depth)], depth);
        assert!(e.tables.is_none(), "20 unique features on a path");
        assert_eq!(e.algorithm(), "Linear TreeSHAP");
        for _ in 0..20 {
            let x: Vec<f32> = (0..depth).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let (got, want) = (e.explain(&x), e.explain_algorithm2(&x));
            for (a, b) in got.contributions.iter().zip(&want.contributions) {
                assert!((a - b).abs() < 1e-12, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn a_tree_of_one_leaf_contributes_nothing_but_its_path_length() {
        let mut stump = no_nodes();
        stump.children_left.push(-1);
        stump.children_right.push(-1);
        stump.feature.push(-2);
        stump.threshold.push(-2.0);
        stump.n_node_samples.push(1);
        let e = Explainer::new(&[stump, tree()], 3);
        assert!(e.tables.is_some());
        let x = [0.0f32, 2.0, 5.0];
        let (got, want) = (e.explain(&x), e.explain_algorithm2(&x));
        for (a, b) in got.contributions.iter().zip(&want.contributions) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        assert_eq!(got.path_length, want.path_length);
        let sum: f64 = got.contributions.iter().sum();
        assert!((sum - (got.path_length - got.expected)).abs() < 1e-12);
    }

    #[test]
    fn trees_deeper_than_every_rule_fall_back_to_algorithm_2() {
        // The deepest leaf of a 40-split chain has a product of degree 40, more than 16
        // points integrate exactly, and 40 unique features, more than the tables take.
        let depth = 40usize;
        let t = chain(depth);
        let e = Explainer::new(std::slice::from_ref(&t), depth);
        assert_eq!(e.trees[0].max_depth, depth);
        assert!(
            e.quadrature.is_none() && e.tables.is_none(),
            "depth {depth} needs more than 16 points"
        );
        assert_eq!(e.algorithm(), "TreeSHAP Algorithm 2");
        // All zeros go left at every split: the first leaf, one sample of 41.
        let got = e.explain(&vec![0.0f32; depth]);
        let sum: f64 = got.contributions.iter().sum();
        assert!((sum - (got.path_length - got.expected)).abs() < 1e-12);
        assert!(got.contributions[0] < 0.0, "{:?}", got.contributions);
    }

    #[test]
    fn a_feature_no_tree_splits_on_gets_nothing() {
        let t = tree();
        let e = Explainer::new(&[t.clone(), t], 4);
        let got = e.explain(&[3.0, 0.0, 1.0, 1e30]);
        assert_eq!(got.contributions[3], 0.0);
    }
}
