//! The rank kernel for AVX-512 CPUs without VBMI (Skylake-SP, Cascade Lake, Cooper Lake):
//! 16-bit keys, for forests the byte kernel (`rank.rs`) takes — trees of at most
//! [`MAX_DEPTH`] levels over at most [`MAX_FEATURES`] features.
//!
//! A row's value becomes its forest-wide rank among each feature's sorted thresholds (the
//! search of `rank.rs`); the rank fits in 16 bits together with the feature number in the top
//! bits, so one 16-bit key per node carries both the split's feature and threshold
//! (`x > t` ⇔ `rank(x) > rank(t)`), and a 512-bit register walks 32 rows through a tree
//! with word permutes and blends (AVX-512 BW). Leaves hold fixed-point path lengths, gathered
//! as 64-bit integers: the same sums, bit for bit, as every other kernel.

use std::arch::x86_64::*;

use crate::rank::{
    CompleteTree, Lanes, MAX_DEPTH, MAX_FEATURES, ThresholdTable, Thresholds, select, top_levels,
    walk_tree,
};
use crate::score::GROUP;

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
    /// Fixed-point path lengths.
    leaves: Vec<i64>,
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

impl RankForest {
    /// Compiles a forest of complete trees, or `None` when it does not fit the kernel (a tree
    /// deeper than [`MAX_DEPTH`], shallower than 3 levels overall, more than [`MAX_FEATURES`]
    /// features, or more distinct thresholds of a feature than its rank bits hold).
    pub(crate) fn new(trees: &[CompleteTree<'_>], nf: usize) -> Option<Self> {
        let table = ThresholdTable::new(trees, nf)?;
        let feature_bits = usize::BITS - (nf - 1).leading_zeros();
        let shift = 16 - feature_bits;
        let always_left = (1u32 << shift) - 1;
        // A rank reaches th.len(), which must stay below the padding key.
        if table
            .sorted
            .iter()
            .any(|th| th.len() + 1 >= always_left as usize)
        {
            return None;
        }
        // Node j (1-based) at keys[j]; room for four whole registers from any level's start.
        let key_len = (1usize << MAX_DEPTH) + 4 * LANES;
        let trees = trees
            .iter()
            .map(|t| {
                let mut keys = vec![always_left as u16; key_len];
                for (i, f, k) in table.numbered(t) {
                    keys[i + 1] = ((f as u32) << shift | k as u32) as u16;
                }
                let mut leaves = vec![0; 1usize << table.depth];
                for (p, v) in table.bottom_leaves(t) {
                    leaves[p] = v;
                }
                RankTree { keys, leaves }
            })
            .collect();
        Some(RankForest {
            depth: table.depth,
            nf,
            shift,
            span: table.span,
            thresholds: table.flat,
            trees,
        })
    }

    /// Adds each tree's path length, in fixed-point units, to `acc[r]` for the rows of an f32
    /// block laid out by [`crate::score::block_pos`] (`acc.len()` a multiple of [`GROUP`], at
    /// most the block size).
    ///
    /// # Safety
    /// The CPU supports avx512f and avx512bw.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn path_sum_block(&self, block: &[f32], acc: &mut [i64]) {
        let nf = self.nf;
        let rows = acc.len();
        assert!(rows <= BLOCK && rows.is_multiple_of(GROUP) && block.len() >= rows * nf);
        let padded = rows.next_multiple_of(LANES);
        // Keys of the block: groups of 32 rows, a feature's 32 keys contiguous.
        let mut keys = [0u16; BLOCK * MAX_FEATURES];
        // SAFETY: avx512f and avx512bw are present; keys holds the block's rows.
        unsafe { self.keys_of(block, rows, &mut keys) };
        let mut sums = [0i64; BLOCK];
        sums[..rows].copy_from_slice(acc);
        for tree in &self.trees {
            // SAFETY: keys holds padded / 32 groups of nf columns; sums holds padded rows;
            // the tree's arrays have the lengths `walk` documents.
            unsafe { walk(self, tree, keys.as_ptr(), padded / LANES, sums.as_mut_ptr()) };
        }
        acc.copy_from_slice(&sums[..rows]);
    }

    /// Writes the keys of the block's `rows` rows (a multiple of 16) into `keys`, 32-row
    /// groups.
    ///
    /// # Safety
    /// avx512f and avx512bw; `block` holds `rows * nf` values laid out by
    /// [`crate::score::block_pos`].
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn keys_of(&self, block: &[f32], rows: usize, keys: &mut [u16; BLOCK * MAX_FEATURES]) {
        let nf = self.nf;
        let table = Thresholds {
            values: &self.thresholds,
            span: self.span,
            nf,
        };
        // SAFETY: forwarded; the key position + 16 <= the keys of rows..rows.next_multiple_of(32).
        unsafe {
            table.search(block, rows, |g, j, rank| {
                // key = rank | j << shift
                let key = _mm512_cvtepi32_epi16(_mm512_or_si512(
                    rank,
                    _mm512_set1_epi32((j as i32) << self.shift),
                ));
                let pos = (g / 2) * LANES * nf + j * LANES + (g % 2) * GROUP;
                _mm256_storeu_si256(keys.as_mut_ptr().add(pos).cast(), key);
            })
        };
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
unsafe fn walk(f: &RankForest, tree: &RankTree, keys: *const u16, groups: usize, sums: *mut i64) {
    // SAFETY: forwarded; groups g.. are inside keys and sums.
    unsafe {
        walk_tree!(
            walk_groups,
            f,
            tree,
            groups,
            |g| keys.wrapping_add(g * LANES * f.nf),
            |g| sums.wrapping_add(g * LANES)
        )
    }
}

/// 16-bit lanes.
struct Words;

impl Lanes for Words {
    type Key = u16;
    type Mask = __mmask32;
    const LANES: usize = LANES;
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn gt(a: __m512i, b: __m512i) -> __mmask32 {
        _mm512_cmpgt_epu16_mask(a, b)
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn blend(m: __mmask32, a: __m512i, b: __m512i) -> __m512i {
        _mm512_mask_blend_epi16(m, a, b)
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn has_bit(a: __m512i, bit: u32) -> __mmask32 {
        _mm512_test_epi16_mask(a, _mm512_set1_epi16((1u32 << bit) as u16 as i16))
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn splat(v: u16) -> __m512i {
        _mm512_set1_epi16(v as i16)
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn add_where(a: __m512i, m: __mmask32, v: __m512i) -> __m512i {
        _mm512_mask_add_epi16(a, m, a, v)
    }
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
    sums: *mut i64,
) {
    let nf = f.nf;
    let k = tree.keys.as_ptr();
    let one = _mm512_set1_epi16(1);
    let col = |n: usize| (u32::from(tree.keys[n + 1]) >> f.shift) as usize * LANES;
    let top_col: [usize; 7] = std::array::from_fn(col);
    let top: [__m512i; 7] = std::array::from_fn(|n| _mm512_set1_epi16(tree.keys[n + 1] as i16));
    let mut idx = [_mm512_setzero_si512(); N];
    for (i, ix) in idx.iter_mut().enumerate() {
        // SAFETY: top_col[n] = feature * 32 with feature < nf: inside group i.
        *ix = unsafe { top_levels::<Words>(x.wrapping_add(i * LANES * nf), &top_col, &top) };
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
            let v =
                unsafe { select::<Words, NP>(x.wrapping_add(i * LANES * nf), nf, node, f.shift) };
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
                let a = _mm512_i32gather_epi64::<8>(_mm512_castsi512_si256(l16), leaves);
                let b = _mm512_i32gather_epi64::<8>(_mm512_extracti64x4_epi64::<1>(l16), leaves);
                let s = sums.add(i * LANES + h * 16);
                _mm512_storeu_epi64(s, _mm512_add_epi64(_mm512_loadu_epi64(s), a));
                _mm512_storeu_epi64(s.add(8), _mm512_add_epi64(_mm512_loadu_epi64(s.add(8)), b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{Split, block_pos};

    fn split(threshold: f32, feature: u32) -> Split {
        Split { threshold, feature }
    }

    #[test]
    fn keys_carry_the_feature_above_the_rank() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            return;
        }
        // Splits on features 0, 1 and 2; the forest's thresholds of feature j are `t` with
        // feature j, sorted.
        let splits: Vec<Split> = [(0.5, 0), (2.0, 1), (-1.0, 2), (0.25, 0), (3.0, 1), (1.0, 2)]
            .into_iter()
            .chain([(9.0, 0)])
            .map(|(t, f)| split(t, f))
            .collect();
        let f = RankForest::new(
            &[CompleteTree {
                depth: 3,
                splits: &splits,
                leaves: &[0; 8],
            }],
            3,
        )
        .expect("fits");
        let values = [-2.0f32, -1.0, 0.25, 0.3, 0.5, 1.0, 2.0, 2.5, 3.0, 9.0, 10.0];
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
                let below = splits
                    .iter()
                    .filter(|s| s.feature as usize == j && s.threshold < x)
                    .count();
                let key = keys[(r / LANES) * LANES * 3 + j * LANES + r % LANES];
                assert_eq!(key >> f.shift, j as u16, "row {r}");
                assert_eq!(usize::from(key & ((1 << f.shift) - 1)), below, "x={x}");
            }
        }
    }
}
