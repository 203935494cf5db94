//! Rank-coded batch scoring: the AVX-512 kernel for forests of shallow trees (at most
//! [`MAX_DEPTH`] levels — every forest fitted with `max_samples <= 256`, scikit-learn's
//! default) over at most [`MAX_FEATURES`] features.
//!
//! Each feature's distinct split thresholds are sorted once at load. A row's value `x` of
//! feature `f` becomes its *rank* `r(x)`, the number of those thresholds below `x`; a split
//! on threshold number `k` of `f` (0-based) sends `x` right exactly when `r(x) > k`
//! (`x > T_k` ⇔ `T_0..=T_k` are all below `x`). Ranks fit in 16 bits together with the
//! feature number in the top bits, so one 16-bit key per node carries both the split's feature
//! and threshold, and a 512-bit register walks 32 rows through a tree where the f32 kernel
//! walks 16: half the vector work per row. The comparisons are the same comparisons, so the
//! scores are bit-identical to the other kernels'.
//!
//! Ranks are found by a branchless binary search over each feature's thresholds (padded to a
//! power of two with `+inf`), 16 rows per gather, all features' searches interleaved.

use std::arch::x86_64::*;

use crate::score::{GROUP, Split, block_pos};

/// Deepest tree the rank kernel walks.
pub(crate) const MAX_DEPTH: u32 = 8;
/// Most features the rank kernel selects among (4 bits of the key).
pub(crate) const MAX_FEATURES: usize = 16;
/// Rows per register (16-bit lanes).
const LANES: usize = 32;
/// Rows converted and walked per call (as many as the f32 block holds).
const BLOCK: usize = crate::score::BLOCK_ROWS;

/// One tree in heap order, padded to the forest's depth: `keys[i]` is
/// `feature << shift | threshold rank` (all rank bits set for padding), with spare entries so
/// four registers of keys load from any level's start.
#[derive(Debug, Clone)]
struct RankTree {
    keys: Vec<u16>,
    leaves: Vec<f64>,
}

/// A forest compiled for the rank kernel.
#[derive(Debug, Clone)]
pub(crate) struct RankForest {
    depth: u32,
    nf: usize,
    /// Bits of the rank; the feature number sits above them.
    shift: u32,
    /// Entries per feature in `thresholds`: a power of two above every feature's count.
    span: usize,
    /// Feature `f`'s sorted distinct thresholds at `f * span..`, padded with `+inf`.
    thresholds: Vec<f32>,
    trees: Vec<RankTree>,
}

/// A tree of the complete layout, as [`RankForest::new`] takes it: heap-ordered
/// (threshold, feature) splits (`+inf` thresholds are padding) and bottom-level leaves.
pub(crate) struct CompleteTree<'a> {
    pub depth: u32,
    pub splits: &'a [Split],
    pub leaves: &'a [f64],
}

impl RankForest {
    /// Compiles a forest of complete trees, or `None` when it does not fit the kernel (a tree
    /// deeper than [`MAX_DEPTH`], shallower than 3 levels overall, more than [`MAX_FEATURES`]
    /// features, or more distinct thresholds of a feature than its rank bits hold).
    pub(crate) fn new(trees: &[CompleteTree<'_>], nf: usize) -> Option<Self> {
        let depth = trees.iter().map(|t| t.depth).max()?;
        if !(3..=MAX_DEPTH).contains(&depth) || nf == 0 || nf > MAX_FEATURES {
            return None;
        }
        let feature_bits = usize::BITS - (nf - 1).leading_zeros();
        let shift = 16 - feature_bits;
        let always_left = (1u32 << shift) - 1;
        let mut thresholds: Vec<Vec<f32>> = vec![Vec::new(); nf];
        for t in trees {
            for s in t.splits {
                if s.threshold.is_finite() {
                    thresholds[s.feature as usize].push(s.threshold);
                }
            }
        }
        for th in &mut thresholds {
            th.sort_by(f32::total_cmp);
            th.dedup();
            // A rank reaches th.len(), which must stay below the padding key.
            if th.len() + 1 >= always_left as usize {
                return None;
            }
        }
        // Node j (1-based) at keys[j]; room for four whole registers from any level's start.
        let key_len = (1usize << MAX_DEPTH) + 4 * LANES;
        let trees = trees
            .iter()
            .map(|t| {
                let mut keys = vec![always_left as u16; key_len];
                for (i, s) in t.splits.iter().enumerate() {
                    if s.threshold.is_finite() {
                        let k =
                            thresholds[s.feature as usize].partition_point(|&x| x < s.threshold);
                        keys[i + 1] = (s.feature << shift | k as u32) as u16;
                    }
                }
                let step = depth - t.depth;
                let mut leaves = vec![0.0; 1usize << depth];
                for (p, &v) in t.leaves.iter().enumerate() {
                    leaves[p << step] = v;
                }
                RankTree { keys, leaves }
            })
            .collect();
        let span = thresholds
            .iter()
            .map(|t| t.len() + 1)
            .max()
            .unwrap_or(1)
            .next_power_of_two();
        let mut flat = vec![f32::INFINITY; nf * span];
        for (f, th) in thresholds.iter().enumerate() {
            flat[f * span..f * span + th.len()].copy_from_slice(th);
        }
        Some(RankForest {
            depth,
            nf,
            shift,
            span,
            thresholds: flat,
            trees,
        })
    }

    /// Adds each tree's path length, in tree order, to `acc[r]` for the rows of an f32 block
    /// laid out by [`block_pos`] (`acc.len()` a multiple of [`GROUP`], at most the block size).
    ///
    /// # Safety
    /// The CPU supports avx512f and avx512bw.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn path_sum_block(&self, block: &[f32], acc: &mut [f64]) {
        let nf = self.nf;
        let rows = acc.len();
        assert!(rows <= BLOCK && rows.is_multiple_of(GROUP) && block.len() >= rows * nf);
        let padded = rows.next_multiple_of(LANES);
        // Keys of the block: groups of 32 rows, a feature's 32 keys contiguous.
        let mut keys = [0u16; BLOCK * MAX_FEATURES];
        // SAFETY: avx512f and avx512bw are present; keys holds the block's rows.
        unsafe { self.keys_of(block, rows, &mut keys) };
        let mut sums = [0f64; BLOCK];
        sums[..rows].copy_from_slice(acc);
        for tree in &self.trees {
            // SAFETY: keys holds padded / 32 groups of nf columns; sums holds padded rows;
            // the tree's arrays have the lengths `walk` documents.
            unsafe { walk(self, tree, keys.as_ptr(), padded / LANES, sums.as_mut_ptr()) };
        }
        acc.copy_from_slice(&sums[..rows]);
    }

    /// Writes the keys of the block's `rows` rows (a multiple of 16) into `keys`, 32-row
    /// groups: a binary search per feature and 16 rows, one gather per step.
    ///
    /// # Safety
    /// avx512f and avx512bw; `block` holds `rows * nf` values laid out by [`block_pos`].
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn keys_of(&self, block: &[f32], rows: usize, keys: &mut [u16; BLOCK * MAX_FEATURES]) {
        let nf = self.nf;
        debug_assert!(block.len() >= rows * nf && rows <= BLOCK);
        let table = self.thresholds.as_ptr();
        for g in 0..rows / GROUP {
            let mut x = [_mm512_setzero_ps(); MAX_FEATURES];
            let mut at = [_mm512_setzero_si512(); MAX_FEATURES];
            for j in 0..nf {
                // SAFETY: feature j of group g: 16 values at block_pos(16 g, j, nf).
                x[j] = unsafe { _mm512_loadu_ps(block.as_ptr().add(block_pos(g * GROUP, j, nf))) };
                at[j] = _mm512_set1_epi32((j * self.span) as i32);
            }
            // Invariant: thresholds before `at` are below x, the one at `at + 2 step - 1` not.
            let mut step = self.span / 2;
            while step >= 1 {
                let add = _mm512_set1_epi32(step as i32);
                let probe = _mm512_set1_epi32(step as i32 - 1);
                for j in 0..nf {
                    // SAFETY: at + step - 1 < (j + 1) * span: inside feature j's thresholds.
                    let t =
                        unsafe { _mm512_i32gather_ps::<4>(_mm512_add_epi32(at[j], probe), table) };
                    let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(t, x[j]);
                    at[j] = _mm512_mask_add_epi32(at[j], below, at[j], add);
                }
                step /= 2;
            }
            for (j, a) in at.iter().enumerate().take(nf) {
                // key = rank | j << shift, rank = at - j * span
                let bias = (j * self.span) as i32 - ((j as i32) << self.shift);
                let key = _mm512_cvtepi32_epi16(_mm512_sub_epi32(*a, _mm512_set1_epi32(bias)));
                let pos = (g / 2) * LANES * nf + j * LANES + (g % 2) * GROUP;
                // SAFETY: pos + 16 <= the keys of rows..rows.next_multiple_of(32).
                unsafe { _mm256_storeu_si256(keys.as_mut_ptr().add(pos).cast(), key) };
            }
        }
    }
}

/// Groups walked together (independent dependency chains overlap in the CPU).
const INTERLEAVE: usize = 8;

/// Walks `groups` groups of 32 rows through one tree, adding leaf values to `sums`.
///
/// # Safety
/// avx512f and avx512bw; `keys` holds `groups * 32 * nf` row keys, `sums` `groups * 32`
/// values; the tree has `2^MAX_DEPTH + 128` keys and `2^depth` leaves.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn walk(f: &RankForest, tree: &RankTree, keys: *const u16, groups: usize, sums: *mut f64) {
    let np = f.nf.div_ceil(2);
    let mut g = 0;
    // SAFETY (all calls): forwarded; groups g.. are inside keys and sums.
    unsafe {
        while g + INTERLEAVE <= groups {
            walk_np::<INTERLEAVE>(f, tree, keys, g, sums, np);
            g += INTERLEAVE;
        }
        while g < groups {
            walk_np::<1>(f, tree, keys, g, sums, np);
            g += 1;
        }
    }
}

/// Dispatches [`walk_groups`] on the number of feature pairs.
///
/// # Safety
/// As [`walk_groups`].
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn walk_np<const N: usize>(
    f: &RankForest,
    tree: &RankTree,
    keys: *const u16,
    g: usize,
    sums: *mut f64,
    np: usize,
) {
    let x = keys.wrapping_add(g * LANES * f.nf);
    let s = sums.wrapping_add(g * LANES);
    // SAFETY: forwarded.
    unsafe {
        match np {
            1 => walk_groups::<N, 1>(f, tree, x, s),
            2 => walk_groups::<N, 2>(f, tree, x, s),
            3 => walk_groups::<N, 3>(f, tree, x, s),
            4 => walk_groups::<N, 4>(f, tree, x, s),
            5 => walk_groups::<N, 5>(f, tree, x, s),
            6 => walk_groups::<N, 6>(f, tree, x, s),
            7 => walk_groups::<N, 7>(f, tree, x, s),
            _ => walk_groups::<N, 8>(f, tree, x, s),
        }
    }
}

/// Per lane, the key of the feature named by `node` (a node key) from a group's columns:
/// blends on the feature's bits, lowest first.
///
/// # Safety
/// `xg` points at the group's `32 * nf` keys, `nf <= 2 * NP`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn select<const NP: usize>(
    xg: *const u16,
    nf: usize,
    node: __m512i,
    rank_bits: u32,
) -> __m512i {
    let mut p = [_mm512_setzero_si512(); MAX_FEATURES];
    for (j, slot) in p.iter_mut().enumerate().take(2 * NP) {
        // SAFETY: column j < nf (others stand in column 0, never selected).
        *slot = unsafe { _mm512_loadu_si512(xg.add(if j < nf { j * LANES } else { 0 }).cast()) };
    }
    let mut n = 2 * NP;
    let mut bit = 1u32 << rank_bits;
    while n > 1 {
        let m = _mm512_test_epi16_mask(node, _mm512_set1_epi16(bit as u16 as i16));
        for q in 0..n / 2 {
            p[q] = _mm512_mask_blend_epi16(m, p[2 * q], p[2 * q + 1]);
        }
        if n % 2 == 1 {
            p[n / 2] = p[n - 1];
        }
        n = n.div_ceil(2);
        bit <<= 1;
    }
    p[0]
}

/// Walks `N` consecutive groups of 32 rows through one tree.
///
/// # Safety
/// As [`walk`]; `x` points at `N` groups' keys and `sums` at `N * 32` values.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn walk_groups<const N: usize, const NP: usize>(
    f: &RankForest,
    tree: &RankTree,
    x: *const u16,
    sums: *mut f64,
) {
    let nf = f.nf;
    let k = tree.keys.as_ptr();
    let one = _mm512_set1_epi16(1);
    let col = |n: usize| (u32::from(tree.keys[n + 1]) >> f.shift) as usize * LANES;
    let top_col: [usize; 7] = std::array::from_fn(col);
    let top: [__m512i; 7] = std::array::from_fn(|n| _mm512_set1_epi16(tree.keys[n + 1] as i16));
    let mut idx = [_mm512_setzero_si512(); N];
    for (i, ix) in idx.iter_mut().enumerate() {
        let xg = x.wrapping_add(i * LANES * nf);
        // SAFETY: top_col[n] = feature * 32 with feature < nf: inside the group.
        let c: [__m512i; 7] =
            std::array::from_fn(|n| unsafe { _mm512_loadu_si512(xg.add(top_col[n]).cast()) });
        let g0 = _mm512_cmpgt_epu16_mask(c[0], top[0]);
        let v1 = _mm512_mask_blend_epi16(g0, c[1], c[2]);
        let t1 = _mm512_mask_blend_epi16(g0, top[1], top[2]);
        let g1 = _mm512_cmpgt_epu16_mask(v1, t1);
        let v2 = _mm512_mask_blend_epi16(
            g0,
            _mm512_mask_blend_epi16(g1, c[3], c[4]),
            _mm512_mask_blend_epi16(g1, c[5], c[6]),
        );
        let t2 = _mm512_mask_blend_epi16(
            g0,
            _mm512_mask_blend_epi16(g1, top[3], top[4]),
            _mm512_mask_blend_epi16(g1, top[5], top[6]),
        );
        let g2 = _mm512_cmpgt_epu16_mask(v2, t2);
        // Node number (1-based heap order) at level 3: 8 + 4 g0 + 2 g1 + g2.
        let v = _mm512_set1_epi16(8);
        let v = _mm512_mask_add_epi16(v, g0, v, _mm512_set1_epi16(4));
        let v = _mm512_mask_add_epi16(v, g1, v, _mm512_set1_epi16(2));
        *ix = _mm512_mask_add_epi16(v, g2, v, one);
    }
    let depth = f.depth as usize;
    for d in 3..depth {
        // Level d's nodes are 2^d..2^(d+1); a permute reads only an index's low bits, so
        // the node number indexes registers loaded from a multiple of 32 below them.
        let base = if d < 5 { 0 } else { 1usize << d };
        // SAFETY: keys has 2^MAX_DEPTH + 128 entries; base + 128 is within.
        let (a0, b0, a1, b1) = unsafe {
            (
                _mm512_loadu_si512(k.add(base).cast()),
                _mm512_loadu_si512(k.add(base + 32).cast()),
                _mm512_loadu_si512(k.add(base + 64).cast()),
                _mm512_loadu_si512(k.add(base + 96).cast()),
            )
        };
        for (i, ix) in idx.iter_mut().enumerate() {
            let rel = *ix;
            let node = match d {
                3..=5 => _mm512_permutexvar_epi16(rel, a0),
                6 => _mm512_permutex2var_epi16(a0, rel, b0),
                _ => {
                    let lo = _mm512_permutex2var_epi16(a0, rel, b0);
                    let hi = _mm512_permutex2var_epi16(a1, rel, b1);
                    let m = _mm512_test_epi16_mask(rel, _mm512_set1_epi16(64));
                    _mm512_mask_blend_epi16(m, lo, hi)
                }
            };
            // SAFETY: group i is inside the block.
            let v = unsafe { select::<NP>(x.wrapping_add(i * LANES * nf), nf, node, f.shift) };
            let gt = _mm512_cmpgt_epu16_mask(v, node);
            let next = _mm512_add_epi16(*ix, *ix);
            *ix = _mm512_mask_add_epi16(next, gt, next, one);
        }
    }
    let first_leaf = _mm512_set1_epi16((1usize << depth) as i16);
    let leaves = tree.leaves.as_ptr();
    for (i, ix) in idx.iter().enumerate() {
        let leaf = _mm512_sub_epi16(*ix, first_leaf);
        let lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(leaf));
        let hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(leaf));
        for (h, l16) in [lo, hi].into_iter().enumerate() {
            // SAFETY: leaf < 2^depth = leaves.len(); sums has 32 slots for group i.
            unsafe {
                let a = _mm512_i32gather_pd::<8>(_mm512_castsi512_si256(l16), leaves);
                let b = _mm512_i32gather_pd::<8>(_mm512_extracti64x4_epi64::<1>(l16), leaves);
                let s = sums.add(i * LANES + h * 16);
                _mm512_storeu_pd(s, _mm512_add_pd(_mm512_loadu_pd(s), a));
                _mm512_storeu_pd(s.add(8), _mm512_add_pd(_mm512_loadu_pd(s.add(8)), b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(threshold: f32, feature: u32) -> Split {
        Split { threshold, feature }
    }

    /// A forest of one depth-3 tree whose only splits are on feature 0 at `thresholds`
    /// (the first 7), over `nf` features.
    fn forest_with(thresholds: &[f32], nf: usize) -> RankForest {
        let splits: Vec<Split> = (0..7)
            .map(|i| split(thresholds.get(i).copied().unwrap_or(f32::INFINITY), 0))
            .collect();
        let mut f = RankForest::new(
            &[CompleteTree {
                depth: 3,
                splits: &splits,
                leaves: &[0.0; 8],
            }],
            nf,
        )
        .expect("fits");
        // Replace feature 0's thresholds by the full list (keys only read the table).
        let mut sorted = thresholds.to_vec();
        sorted.sort_by(f32::total_cmp);
        sorted.dedup();
        f.span = (sorted.len() + 1).next_power_of_two();
        f.thresholds = vec![f32::INFINITY; nf * f.span];
        f.thresholds[..sorted.len()].copy_from_slice(&sorted);
        f
    }

    #[test]
    fn keys_carry_the_feature_and_the_count_of_thresholds_below() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            return;
        }
        for m in [0usize, 1, 2, 15, 16, 17, 255, 256, 1000, 4000] {
            let sorted: Vec<f32> = (0..m).map(|i| i as f32 * 2.0).collect();
            let f = forest_with(&sorted, 3);
            let values = [-1.0f32, 0.0, 0.5, 1.0, 2.0, 3.0, 510.0, 511.0, 2000.0, 1e9];
            let rows = 48;
            let mut block = vec![0f32; rows * 3];
            for r in 0..rows {
                for j in 0..3 {
                    block[block_pos(r, j, 3)] = values[(r + j) % values.len()];
                }
            }
            let mut keys = [0u16; BLOCK * MAX_FEATURES];
            // SAFETY: checked above.
            unsafe { f.keys_of(&block, rows, &mut keys) };
            for r in 0..rows {
                for j in 0..3 {
                    let x = values[(r + j) % values.len()];
                    let want = if j == 0 {
                        sorted.partition_point(|&t| t < x)
                    } else {
                        0
                    };
                    let key = keys[(r / LANES) * LANES * 3 + j * LANES + r % LANES];
                    assert_eq!(key >> f.shift, j as u16, "m={m} row {r}");
                    assert_eq!(usize::from(key & ((1 << f.shift) - 1)), want, "m={m} x={x}");
                }
            }
        }
    }

    #[test]
    fn keys_order_like_the_thresholds() {
        let splits = [
            split(0.5, 0),
            split(2.0, 1),
            split(-1.0, 0),
            split(f32::INFINITY, 0),
            split(f32::INFINITY, 0),
            split(0.5, 1),
            split(7.0, 0),
        ];
        let leaves = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let tree = CompleteTree {
            depth: 3,
            splits: &splits,
            leaves: &leaves,
        };
        let f = RankForest::new(&[tree], 2).expect("fits");
        assert_eq!(f.shift, 15);
        let rank = |feat: usize, x: f32| {
            f.thresholds[feat * f.span..(feat + 1) * f.span].partition_point(|&t| t < x)
        };
        for (x, feat) in [(0.5f32, 0usize), (0.6, 0), (-1.0, 0), (7.5, 0), (0.4, 1)] {
            for (i, s) in splits.iter().enumerate() {
                let (thr, sf) = (s.threshold, s.feature as usize);
                if thr.is_finite() && sf == feat {
                    let k = usize::from(f.trees[0].keys[i + 1] & 0x7fff);
                    assert_eq!(x > thr, rank(feat, x) > k, "x={x} thr={thr}");
                }
            }
        }
        assert!(RankForest::new(&[], 2).is_none());
    }
}
