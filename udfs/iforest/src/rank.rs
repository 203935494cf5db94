//! Rank-coded batch scoring: the AVX-512 kernel for forests of shallow trees (at most
//! [`MAX_DEPTH`] levels — every forest fitted with `max_samples <= 256`, scikit-learn's
//! default) over at most [`MAX_FEATURES`] features.
//!
//! Each feature's distinct split thresholds are sorted once at load. A row's value `x` of
//! feature `f` becomes its *rank* `r(x)`, the number of those thresholds below `x`, found by a
//! branchless binary search (16 rows per gather, all features interleaved). A split on a
//! threshold `t` of `f` sends `x` right exactly when `x > t`, i.e. when more thresholds lie
//! below `x` than below `t`: the comparison of two ranks is the comparison of the values.
//!
//! Ranks are counted within a *tree group*: consecutive trees whose thresholds of any one
//! feature number at most 255 (about eight trees of 256 samples). A row's rank in a group is
//! looked up from its forest-wide rank (one table per group and feature, 16 rows per gather),
//! so it fits in a byte and one 512-bit register walks 64 rows through a tree, where the f32
//! kernel walks 16: a quarter of the vector work per row. A node is a byte key (its
//! threshold's rank in the group; 255 = padding, never passed) and a feature byte, both read by
//! byte permutes from the node number. The comparisons are the same comparisons, so every row
//! reaches the same leaves as with the other kernels.
//!
//! Leaves are not gathered: a tree's leaves hold few distinct path lengths (9 to 21 in a
//! forest of 256-sample trees), so a leaf number becomes a value number by byte permutes, and
//! the value's fixed-point path length (48 bits, [`crate::tree::PathScale`]) is added as four
//! 12-bit pieces, each looked up by a 16-bit permute and summed in 16-bit lanes for up to 16
//! trees before the pieces are carried into the rows' 64-bit sums. Integer sums make this
//! exact: the same bits as the other kernels.
//!
//! The module also holds what the 16-bit form for CPUs without VBMI (`rank16`) shares: the
//! threshold table and search, the [`Lanes`] operations, the top-level blends, the feature
//! select and the interleaved walk loop.

use std::arch::x86_64::*;

use crate::score::{GROUP, Split, block_pos};

/// Deepest tree the rank kernel walks.
pub(crate) const MAX_DEPTH: u32 = 8;
/// Most features the rank kernel selects among.
pub(crate) const MAX_FEATURES: usize = 16;
/// Rows per register (8-bit lanes).
const LANES: usize = 64;
/// Rows converted and walked per call (as many as the f32 block holds).
const BLOCK: usize = crate::score::BLOCK_ROWS;
/// Most distinct thresholds of one feature in a tree group (ranks 0..=255 fit a byte, and
/// key 255 is never passed).
const GROUP_THRESHOLDS: usize = 255;
/// Largest forest-wide threshold table per feature (ranks are kept as 16 bits).
const MAX_SPAN: usize = 1 << 16;
/// Largest total size of the groups' rank tables, in bytes (else the f32 kernel is used).
const MAX_TABLE_BYTES: usize = 64 << 20;
/// Most distinct leaf values of a tree (a two-register 16-bit permute).
const MAX_VALUES: usize = 64;
/// Bits of a leaf value piece, and pieces per value (values below 2^48).
const PIECE_BITS: u32 = 12;
const PIECES: usize = 4;
/// Trees whose pieces 16-bit lanes can sum: 16 * (2^12 - 1) < 2^16.
const CARRY_EVERY: usize = 16;

/// One tree in heap order with 1-based node numbers, padded to the forest's depth.
#[derive(Debug, Clone)]
struct RankTree {
    /// `keys[n]`: node `n`'s threshold rank in its group (255 for padding).
    keys: Vec<u8>,
    /// `features[n]`: node `n`'s feature (0 for padding).
    features: Vec<u8>,
    /// `values[leaf]`: the number of the leaf's path length (2^MAX_DEPTH entries).
    values: Vec<u8>,
    /// `pieces[q][v]`: bits `12 q..12 q + 12` of path length number `v`, in fixed-point
    /// units.
    pieces: [[u16; MAX_VALUES]; PIECES],
}

/// Consecutive trees sharing one byte rank per feature.
#[derive(Debug, Clone)]
struct TreeGroup {
    /// `ranks[f * span + r]`: the group rank of forest-wide rank `r` of feature `f`, with
    /// spare bytes so a 4-byte gather reads inside the table.
    ranks: Vec<u8>,
    trees: Vec<RankTree>,
}

/// A forest compiled for the rank kernel.
#[derive(Debug, Clone)]
pub(crate) struct RankForest {
    depth: u32,
    nf: usize,
    /// Entries per feature in `thresholds`: a power of two above every feature's count.
    span: usize,
    /// Feature `f`'s sorted distinct thresholds at `f * span..`, padded with `+inf`.
    thresholds: Vec<f32>,
    groups: Vec<TreeGroup>,
}

/// A tree of the complete layout, as [`RankForest::new`] takes it: heap-ordered
/// (threshold, feature) splits (`+inf` thresholds are padding) and bottom-level leaves.
pub(crate) struct CompleteTree<'a> {
    pub depth: u32,
    pub splits: &'a [Split],
    /// Fixed-point path lengths.
    pub leaves: &'a [i64],
}

/// What both rank kernels build first: the depth they walk and each feature's sorted
/// distinct finite thresholds, also as one flat table.
pub(crate) struct ThresholdTable {
    /// The deepest tree's depth; shallower trees are padded to it.
    pub depth: u32,
    /// Feature `f`'s sorted distinct finite thresholds.
    pub sorted: Vec<Vec<f32>>,
    /// Entries per feature of `flat`: a power of two above every feature's count.
    pub span: usize,
    /// Feature `f`'s thresholds at `f * span..`, padded with `+inf`.
    pub flat: Vec<f32>,
}

impl ThresholdTable {
    /// The table of a forest a rank kernel can walk, or `None` (a tree deeper than
    /// [`MAX_DEPTH`], shallower than 3 levels overall, no or more than [`MAX_FEATURES`]
    /// features).
    pub(crate) fn new(trees: &[CompleteTree<'_>], nf: usize) -> Option<Self> {
        let depth = trees.iter().map(|t| t.depth).max()?;
        if !(3..=MAX_DEPTH).contains(&depth) || nf == 0 || nf > MAX_FEATURES {
            return None;
        }
        let mut sorted: Vec<Vec<f32>> = vec![Vec::new(); nf];
        for t in trees {
            for s in t.splits {
                if s.threshold.is_finite() {
                    sorted[s.feature as usize].push(s.threshold);
                }
            }
        }
        for th in &mut sorted {
            th.sort_by(f32::total_cmp);
            th.dedup();
        }
        let span = sorted
            .iter()
            .map(|t| t.len() + 1)
            .max()
            .unwrap_or(1)
            .next_power_of_two();
        let mut flat = vec![f32::INFINITY; nf * span];
        for (f, th) in sorted.iter().enumerate() {
            flat[f * span..f * span + th.len()].copy_from_slice(th);
        }
        Some(ThresholdTable {
            depth,
            sorted,
            span,
            flat,
        })
    }

    /// A tree's real splits as (split index, feature, number of the threshold among the
    /// feature's).
    pub(crate) fn numbered<'a>(
        &'a self,
        t: &'a CompleteTree<'_>,
    ) -> impl Iterator<Item = (usize, usize, usize)> + 'a {
        t.splits.iter().enumerate().filter_map(|(i, s)| {
            let f = s.feature as usize;
            s.threshold
                .is_finite()
                .then(|| (i, f, self.sorted[f].partition_point(|&x| x < s.threshold)))
        })
    }

    /// A tree's leaves with their positions on the bottom level of the forest's depth.
    pub(crate) fn bottom_leaves<'a>(
        &self,
        t: &'a CompleteTree<'_>,
    ) -> impl Iterator<Item = (usize, i64)> + 'a {
        let step = self.depth - t.depth;
        t.leaves
            .iter()
            .enumerate()
            .map(move |(p, &v)| (p << step, v))
    }
}

/// Each feature's sorted distinct thresholds, `span` entries apart, padded with `+inf`.
pub(crate) struct Thresholds<'a> {
    pub values: &'a [f32],
    pub span: usize,
    pub nf: usize,
}

impl Thresholds<'_> {
    /// Calls `emit(g, j, rank)` with the ranks (thresholds below the value) of feature `j` of
    /// the 16 rows of group `g`, for the block's `rows` rows (a multiple of 16): a branchless
    /// binary search per feature and 16 rows, one gather per step, all features interleaved.
    ///
    /// # Safety
    /// avx512f; `block` holds `rows * nf` values laid out by [`block_pos`], `values` holds
    /// `nf * span` entries, `span` a power of two; `emit` is called within those bounds.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn search(
        &self,
        block: &[f32],
        rows: usize,
        mut emit: impl FnMut(usize, usize, __m512i),
    ) {
        let nf = self.nf;
        debug_assert!(block.len() >= rows * nf && self.values.len() >= nf * self.span);
        let table = self.values.as_ptr();
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
                emit(
                    g,
                    j,
                    _mm512_sub_epi32(*a, _mm512_set1_epi32((j * self.span) as i32)),
                );
            }
        }
    }
}

impl RankForest {
    /// Compiles a forest of complete trees, or `None` when it does not fit the kernel (a tree
    /// deeper than [`MAX_DEPTH`], shallower than 3 levels overall, more than [`MAX_FEATURES`]
    /// features, rank tables too large, a tree with more than 64 distinct path lengths or
    /// one outside 48 bits).
    pub(crate) fn new(trees: &[CompleteTree<'_>], nf: usize) -> Option<Self> {
        let table = ThresholdTable::new(trees, nf)?;
        let span = table.span;
        if span > MAX_SPAN {
            return None;
        }

        // Groups of consecutive trees, each feature's thresholds in a group at most 255.
        let mut groups = Vec::new();
        let mut start = 0;
        while start < trees.len() {
            let mut member = vec![false; nf * span];
            let mut count = vec![0usize; nf];
            let mut end = start;
            while end < trees.len() {
                let mut added = count.clone();
                let mut fresh = Vec::new();
                for (_, f, k) in table.numbered(&trees[end]) {
                    if !member[f * span + k] && !fresh.contains(&(f * span + k)) {
                        fresh.push(f * span + k);
                        added[f] += 1;
                    }
                }
                if added.iter().any(|&c| c > GROUP_THRESHOLDS) {
                    break;
                }
                for m in fresh {
                    member[m] = true;
                }
                count = added;
                end += 1;
            }
            // A tree alone always fits: it has at most 2^MAX_DEPTH - 1 = 255 splits.
            debug_assert!(end > start);
            let mut ranks = vec![0u8; nf * span + 4];
            for f in 0..nf {
                let mut below = 0u8;
                for r in 0..span {
                    ranks[f * span + r] = below;
                    below += u8::from(member[f * span + r]);
                }
            }
            let group_trees = trees[start..end]
                .iter()
                .map(|t| -> Option<RankTree> {
                    let nodes = 1usize << MAX_DEPTH;
                    let mut keys = vec![u8::MAX; nodes];
                    let mut features = vec![0u8; nodes];
                    for (i, f, k) in table.numbered(t) {
                        keys[i + 1] = ranks[f * span + k];
                        features[i + 1] = f as u8;
                    }
                    let mut distinct: Vec<i64> = Vec::new();
                    let mut values = vec![0u8; nodes];
                    for (p, v) in table.bottom_leaves(t) {
                        if !(0..1 << (PIECE_BITS * PIECES as u32)).contains(&v) {
                            return None;
                        }
                        let n = distinct.iter().position(|&d| d == v).unwrap_or_else(|| {
                            distinct.push(v);
                            distinct.len() - 1
                        });
                        values[p] = u8::try_from(n).ok()?;
                    }
                    if distinct.len() > MAX_VALUES {
                        return None;
                    }
                    let mut pieces = [[0u16; MAX_VALUES]; PIECES];
                    for (q, piece) in pieces.iter_mut().enumerate() {
                        for (slot, &v) in piece.iter_mut().zip(&distinct) {
                            *slot = ((v >> (PIECE_BITS * q as u32)) & 0xfff) as u16;
                        }
                    }
                    Some(RankTree {
                        keys,
                        features,
                        values,
                        pieces,
                    })
                })
                .collect::<Option<_>>()?;
            groups.push(TreeGroup {
                ranks,
                trees: group_trees,
            });
            if groups.len() * (nf * span + 4) > MAX_TABLE_BYTES {
                return None;
            }
            start = end;
        }
        Some(RankForest {
            depth: table.depth,
            nf,
            span,
            thresholds: table.flat,
            groups,
        })
    }

    /// Adds each tree's path length, in fixed-point units, to `acc[r]` for the rows of an f32
    /// block laid out by [`block_pos`] (`acc.len()` a multiple of [`GROUP`], at most the block
    /// size).
    ///
    /// # Safety
    /// The CPU supports avx512f, avx512bw and avx512vbmi.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(crate) unsafe fn path_sum_block(&self, block: &[f32], acc: &mut [i64]) {
        let nf = self.nf;
        let rows = acc.len();
        assert!(rows <= BLOCK && rows.is_multiple_of(GROUP) && block.len() >= rows * nf);
        let padded = rows.next_multiple_of(LANES);
        // Forest-wide ranks, feature-major (BLOCK per feature); padding rows rank 0.
        let mut ranks = [0u16; BLOCK * MAX_FEATURES];
        // SAFETY: avx512f is present; `ranks` holds BLOCK rows of every feature.
        unsafe { self.ranks_of(block, rows, &mut ranks) };
        let mut sums = [0i64; BLOCK];
        sums[..rows].copy_from_slice(acc);
        // Path length pieces of up to CARRY_EVERY trees, 16-bit lanes.
        let mut pieces = [_mm512_setzero_si512(); BLOCK * PIECES / 32];
        let mut since_carry = 0;
        // Group ranks of the block: 64-row groups, a feature's 64 bytes contiguous.
        let mut keys = [0u8; BLOCK * MAX_FEATURES];
        for group in &self.groups {
            // SAFETY: as above; `padded` rows of `ranks` are written or zero.
            unsafe { self.group_keys(group, &ranks, padded, &mut keys) };
            for tree in &group.trees {
                // SAFETY: keys holds padded / 64 groups of nf columns; pieces holds 8
                // registers per 64 rows; the tree's arrays have the lengths `walk` documents.
                unsafe {
                    walk(
                        self,
                        tree,
                        keys.as_ptr(),
                        padded / LANES,
                        pieces.as_mut_ptr(),
                    )
                };
                since_carry += 1;
                if since_carry == CARRY_EVERY {
                    // SAFETY: avx512f and avx512bw are present.
                    unsafe { carry(&mut pieces, &mut sums, padded) };
                    since_carry = 0;
                }
            }
        }
        if since_carry > 0 {
            // SAFETY: as above.
            unsafe { carry(&mut pieces, &mut sums, padded) };
        }
        acc.copy_from_slice(&sums[..rows]);
    }

    /// Writes the forest-wide ranks of the block's `rows` rows (a multiple of 16) into
    /// `ranks[f * BLOCK + r]`.
    ///
    /// # Safety
    /// avx512f; `block` holds `rows * nf` values laid out by [`block_pos`].
    #[target_feature(enable = "avx512f")]
    unsafe fn ranks_of(&self, block: &[f32], rows: usize, ranks: &mut [u16; BLOCK * MAX_FEATURES]) {
        let table = Thresholds {
            values: &self.thresholds,
            span: self.span,
            nf: self.nf,
        };
        // SAFETY: forwarded; j * BLOCK + 16 g + 16 <= ranks.len() for g < rows / 16.
        unsafe {
            table.search(block, rows, |g, j, rank| {
                _mm256_storeu_si256(
                    ranks.as_mut_ptr().add(j * BLOCK + g * GROUP).cast(),
                    _mm512_cvtepi32_epi16(rank),
                )
            })
        };
    }

    /// Writes the group ranks of `padded` rows (a multiple of 64) into `keys`: 64-row groups,
    /// a feature's 64 bytes contiguous; one table gather per 16 rows.
    ///
    /// # Safety
    /// avx512f; `padded <= BLOCK`.
    #[target_feature(enable = "avx512f")]
    unsafe fn group_keys(
        &self,
        group: &TreeGroup,
        ranks: &[u16; BLOCK * MAX_FEATURES],
        padded: usize,
        keys: &mut [u8; BLOCK * MAX_FEATURES],
    ) {
        let nf = self.nf;
        debug_assert!(padded <= BLOCK && group.ranks.len() >= nf * self.span + 3);
        for j in 0..nf {
            let table = group
                .ranks
                .as_ptr()
                .wrapping_add(j * self.span)
                .cast::<i32>();
            for c in (0..padded).step_by(GROUP) {
                // SAFETY: ranks are below span, so the 4 bytes read at table + rank lie in
                // the group's table (3 spare bytes after the last feature); c + 16 <= BLOCK,
                // and the key position + 16 stays in `keys`.
                unsafe {
                    let r = _mm256_loadu_si256(ranks.as_ptr().add(j * BLOCK + c).cast());
                    let v = _mm512_i32gather_epi32::<1>(_mm512_cvtepu16_epi32(r), table);
                    let pos = (c / LANES) * LANES * nf + j * LANES + c % LANES;
                    _mm_storeu_si128(keys.as_mut_ptr().add(pos).cast(), _mm512_cvtepi32_epi8(v));
                }
            }
        }
    }
}

/// Adds the pieces summed in 16-bit lanes to the rows' 64-bit sums and clears them. Register
/// `8 i + 4 h + q` holds piece `q` of rows `64 i + 32 h..`, one per 16-bit lane.
///
/// # Safety
/// avx512f and avx512bw; `padded` is a multiple of 64, at most the block size.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn carry(
    pieces: &mut [__m512i; BLOCK * PIECES / 32],
    sums: &mut [i64; BLOCK],
    padded: usize,
) {
    for (i, regs) in pieces
        .chunks_exact_mut(2 * PIECES)
        .take(padded / LANES)
        .enumerate()
    {
        for (h, p) in regs.chunks_exact_mut(PIECES).enumerate() {
            let halves: [[__m512i; PIECES]; 2] = [
                std::array::from_fn(|q| _mm512_cvtepu16_epi32(_mm512_castsi512_si256(p[q]))),
                std::array::from_fn(|q| {
                    _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(p[q]))
                }),
            ];
            for (c, w) in halves.iter().enumerate() {
                // Pieces 0 + 1 and 2 + 3 as 24-bit values (the sums stay below 2^28).
                let lo = _mm512_add_epi32(w[0], _mm512_slli_epi32::<12>(w[1]));
                let hi = _mm512_add_epi32(w[2], _mm512_slli_epi32::<12>(w[3]));
                let parts = [
                    (_mm512_castsi512_si256(lo), _mm512_castsi512_si256(hi)),
                    (
                        _mm512_extracti64x4_epi64::<1>(lo),
                        _mm512_extracti64x4_epi64::<1>(hi),
                    ),
                ];
                for (e, (l, h8)) in parts.into_iter().enumerate() {
                    let v = _mm512_add_epi64(
                        _mm512_cvtepu32_epi64(l),
                        _mm512_slli_epi64::<24>(_mm512_cvtepu32_epi64(h8)),
                    );
                    let at = i * LANES + h * 32 + c * 16 + e * 8;
                    // SAFETY: at + 8 <= padded <= BLOCK.
                    unsafe {
                        let s = sums.as_mut_ptr().add(at);
                        _mm512_storeu_epi64(s, _mm512_add_epi64(_mm512_loadu_epi64(s), v));
                    }
                }
            }
            p.fill(_mm512_setzero_si512());
        }
    }
}

/// Groups walked together (independent dependency chains overlap in the CPU).
const INTERLEAVE: usize = 8;

/// `$call` with `$np` (feature pairs, 1..=8) as the constant `$NP`.
macro_rules! pairs_const {
    ($np:expr, $NP:ident => $call:expr) => {
        match $np {
            1 => {
                const $NP: usize = 1;
                $call
            }
            2 => {
                const $NP: usize = 2;
                $call
            }
            3 => {
                const $NP: usize = 3;
                $call
            }
            4 => {
                const $NP: usize = 4;
                $call
            }
            5 => {
                const $NP: usize = 5;
                $call
            }
            6 => {
                const $NP: usize = 6;
                $call
            }
            7 => {
                const $NP: usize = 7;
                $call
            }
            _ => {
                const $NP: usize = 8;
                $call
            }
        }
    };
}

/// A rank kernel's walk of one tree over `$groups` register groups: the module's
/// `$walk_groups::<N, NP>(f, tree, keys, sums)` on `INTERLEAVE` groups at a time (then one),
/// with the feature pairs `NP` a constant; `$keys(g)` and `$sums(g)` point at group `g`'s.
macro_rules! walk_tree {
    ($walk_groups:ident, $f:expr, $tree:expr, $groups:expr, $keys:expr, $sums:expr) => {{
        let (f, tree, groups) = ($f, $tree, $groups);
        let np = f.nf.div_ceil(2);
        let mut g = 0;
        while g < groups {
            let (x, s) = (($keys)(g), ($sums)(g));
            if g + INTERLEAVE <= groups {
                $crate::rank::pairs_const!(np, NP => $walk_groups::<INTERLEAVE, NP>(f, tree, x, s));
                g += INTERLEAVE;
            } else {
                $crate::rank::pairs_const!(np, NP => $walk_groups::<1, NP>(f, tree, x, s));
                g += 1;
            }
        }
    }};
}
pub(crate) use {pairs_const, walk_tree};

/// Walks `groups` groups of 64 rows through one tree, adding the leaves' path length pieces
/// to `pieces` (8 registers per group, as [`carry`] reads them).
///
/// # Safety
/// avx512f, avx512bw and avx512vbmi; `keys` holds `groups * 64 * nf` row keys, `pieces`
/// `groups * 8` registers; the tree has `2^MAX_DEPTH` keys, features and value numbers.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn walk(
    f: &RankForest,
    tree: &RankTree,
    keys: *const u8,
    groups: usize,
    sums: *mut __m512i,
) {
    // SAFETY: forwarded; groups g.. are inside keys and sums.
    unsafe {
        walk_tree!(
            walk_groups,
            f,
            tree,
            groups,
            |g| keys.wrapping_add(g * LANES * f.nf),
            |g| sums.wrapping_add(g * 2 * PIECES)
        )
    }
}

/// Lane operations of the rank kernels' walks, so their shared steps are written once: byte
/// lanes ([`Bytes`], 64 rows per register) and 16-bit lanes (`rank16::Words`, 32 rows).
pub(crate) trait Lanes {
    /// A row's key in one lane.
    type Key;
    /// One bit per lane.
    type Mask: Copy;
    /// Rows per register.
    const LANES: usize;
    /// Lanes where `a > b` (unsigned).
    unsafe fn gt(a: __m512i, b: __m512i) -> Self::Mask;
    /// `b` where the mask is set, else `a`.
    unsafe fn blend(m: Self::Mask, a: __m512i, b: __m512i) -> __m512i;
    /// Lanes of `a` with bit `bit` set.
    unsafe fn has_bit(a: __m512i, bit: u32) -> Self::Mask;
    unsafe fn splat(v: u16) -> __m512i;
    /// `a + v` where the mask is set, else `a`.
    unsafe fn add_where(a: __m512i, m: Self::Mask, v: __m512i) -> __m512i;
}

/// Byte lanes.
pub(crate) struct Bytes;

impl Lanes for Bytes {
    type Key = u8;
    type Mask = __mmask64;
    const LANES: usize = 64;
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn gt(a: __m512i, b: __m512i) -> __mmask64 {
        _mm512_cmpgt_epu8_mask(a, b)
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn blend(m: __mmask64, a: __m512i, b: __m512i) -> __m512i {
        _mm512_mask_blend_epi8(m, a, b)
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn has_bit(a: __m512i, bit: u32) -> __mmask64 {
        _mm512_test_epi8_mask(a, _mm512_set1_epi8((1u32 << bit) as u8 as i8))
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn splat(v: u16) -> __m512i {
        _mm512_set1_epi8(v as u8 as i8)
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn add_where(a: __m512i, m: __mmask64, v: __m512i) -> __m512i {
        _mm512_mask_add_epi8(a, m, a, v)
    }
}

/// Per lane, the key of the feature whose number is in `by`'s bits `first_bit..` from a
/// group's columns: blends on those bits, lowest first.
///
/// # Safety
/// avx512f and avx512bw; `xg` points at the group's `L::LANES * nf` keys, `nf <= 2 * NP`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(crate) unsafe fn select<L: Lanes, const NP: usize>(
    xg: *const L::Key,
    nf: usize,
    by: __m512i,
    first_bit: u32,
) -> __m512i {
    let mut p = [_mm512_setzero_si512(); MAX_FEATURES];
    for (j, slot) in p.iter_mut().enumerate().take(2 * NP) {
        // SAFETY: column j < nf (others stand in column 0, never selected).
        *slot = unsafe { _mm512_loadu_si512(xg.add(if j < nf { j * L::LANES } else { 0 }).cast()) };
    }
    let mut n = 2 * NP;
    let mut bit = first_bit;
    while n > 1 {
        // SAFETY: the features are present.
        let m = unsafe { L::has_bit(by, bit) };
        for q in 0..n / 2 {
            // SAFETY: as above.
            p[q] = unsafe { L::blend(m, p[2 * q], p[2 * q + 1]) };
        }
        if n % 2 == 1 {
            p[n / 2] = p[n - 1];
        }
        n = n.div_ceil(2);
        bit += 1;
    }
    p[0]
}

/// The first three levels of a tree for one group: the node of level `d` is one of `2^d`
/// known in advance, so each row's column (`cols[n]`: node `n + 1`'s feature times
/// `L::LANES`) and key (`top[n]`, broadcast) are chosen by blends on the comparisons already
/// made. Returns the 1-based node numbers reached at level 3.
///
/// # Safety
/// avx512f and avx512bw; `xg` points at the group's keys, every `cols[n]` inside them.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(crate) unsafe fn top_levels<L: Lanes>(
    xg: *const L::Key,
    cols: &[usize; 7],
    top: &[__m512i; 7],
) -> __m512i {
    // SAFETY: the features are present; the columns are inside the group.
    unsafe {
        let c: [__m512i; 7] = std::array::from_fn(|n| _mm512_loadu_si512(xg.add(cols[n]).cast()));
        let g0 = L::gt(c[0], top[0]);
        let v1 = L::blend(g0, c[1], c[2]);
        let t1 = L::blend(g0, top[1], top[2]);
        let g1 = L::gt(v1, t1);
        let v2 = L::blend(g0, L::blend(g1, c[3], c[4]), L::blend(g1, c[5], c[6]));
        let t2 = L::blend(
            g0,
            L::blend(g1, top[3], top[4]),
            L::blend(g1, top[5], top[6]),
        );
        let g2 = L::gt(v2, t2);
        // Node number (1-based heap order) at level 3: 8 + 4 g0 + 2 g1 + g2.
        let v = L::add_where(L::splat(8), g0, L::splat(4));
        let v = L::add_where(v, g1, L::splat(2));
        L::add_where(v, g2, L::splat(1))
    }
}

/// Walks `N` consecutive groups of 64 rows through one tree.
///
/// # Safety
/// As [`walk`]; `x` points at `N` groups' keys and `sums` at `N * 8` registers.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
#[inline]
unsafe fn walk_groups<const N: usize, const NP: usize>(
    f: &RankForest,
    tree: &RankTree,
    x: *const u8,
    sums: *mut __m512i,
) {
    let nf = f.nf;
    let one = _mm512_set1_epi8(1);
    let top_col: [usize; 7] = std::array::from_fn(|n| usize::from(tree.features[n + 1]) * LANES);
    let top: [__m512i; 7] = std::array::from_fn(|n| _mm512_set1_epi8(tree.keys[n + 1] as i8));
    let mut idx = [_mm512_setzero_si512(); N];
    for (i, ix) in idx.iter_mut().enumerate() {
        // SAFETY: top_col[n] = feature * 64 with feature < nf: inside group i.
        *ix = unsafe { top_levels::<Bytes>(x.wrapping_add(i * LANES * nf), &top_col, &top) };
    }
    let depth = f.depth as usize;
    let (k, ft) = (tree.keys.as_ptr(), tree.features.as_ptr());
    for d in 3..depth {
        // Level d's nodes are 2^d..2^(d+1); a permute reads only an index's low 6 (one
        // table) or 7 (two tables) bits, so the node number indexes tables loaded from the
        // multiple of 64 below them.
        let base = match d {
            0..=5 => 0,
            6 => 64,
            _ => 128,
        };
        // SAFETY: base + 128 <= 2^MAX_DEPTH = the tree's key and feature counts.
        let (ka, kb, fa, fb) = unsafe {
            (
                _mm512_loadu_si512(k.add(base).cast()),
                _mm512_loadu_si512(k.add(base + 64).cast()),
                _mm512_loadu_si512(ft.add(base).cast()),
                _mm512_loadu_si512(ft.add(base + 64).cast()),
            )
        };
        for (i, ix) in idx.iter_mut().enumerate() {
            let rel = *ix;
            let (node, feature) = if d < 7 {
                (
                    _mm512_permutexvar_epi8(rel, ka),
                    _mm512_permutexvar_epi8(rel, fa),
                )
            } else {
                (
                    _mm512_permutex2var_epi8(ka, rel, kb),
                    _mm512_permutex2var_epi8(fa, rel, fb),
                )
            };
            // SAFETY: group i is inside the block.
            let v = unsafe { select::<Bytes, NP>(x.wrapping_add(i * LANES * nf), nf, feature, 0) };
            let gt = _mm512_cmpgt_epu8_mask(v, node);
            // 2 n + (x > t); past level 7 this wraps to the leaf number.
            let next = _mm512_add_epi8(rel, rel);
            *ix = _mm512_mask_add_epi8(next, gt, next, one);
        }
    }
    // Leaf number = node number - 2^depth (mod 256: for depth 8 the wrap already did it).
    let first_leaf = _mm512_set1_epi8((1u32 << depth) as u8 as i8);
    let vp = tree.values.as_ptr();
    // SAFETY: values has 2^MAX_DEPTH = 256 entries; pieces 4 x 64 u16.
    let (values, pieces) = unsafe {
        (
            [0, 64, 128, 192].map(|o| _mm512_loadu_si512(vp.add(o).cast())),
            tree.pieces.map(|p| {
                [
                    _mm512_loadu_si512(p.as_ptr().cast()),
                    _mm512_loadu_si512(p.as_ptr().add(32).cast()),
                ]
            }),
        )
    };
    for (i, ix) in idx.iter().enumerate() {
        let leaf = _mm512_sub_epi8(*ix, first_leaf);
        // The value number: leaves 0..128 from the first two registers, 128.. the others.
        let number = _mm512_mask_blend_epi8(
            _mm512_movepi8_mask(leaf),
            _mm512_permutex2var_epi8(values[0], leaf, values[1]),
            _mm512_permutex2var_epi8(values[2], leaf, values[3]),
        );
        let halves = [
            _mm512_cvtepu8_epi16(_mm512_castsi512_si256(number)),
            _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64::<1>(number)),
        ];
        for (h, n) in halves.into_iter().enumerate() {
            for (q, [a, b]) in pieces.iter().enumerate() {
                // SAFETY: group i's 8 registers are inside `sums`.
                unsafe {
                    let s = sums.add(i * 2 * PIECES + h * PIECES + q);
                    *s = _mm512_add_epi16(*s, _mm512_permutex2var_epi16(*a, n, *b));
                }
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

    fn supported() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi")
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
                leaves: &[0; 8],
            }],
            nf,
        )
        .expect("fits");
        // Replace feature 0's thresholds by the full list (ranks only read the table).
        let mut sorted = thresholds.to_vec();
        sorted.sort_by(f32::total_cmp);
        sorted.dedup();
        f.span = (sorted.len() + 1).next_power_of_two();
        f.thresholds = vec![f32::INFINITY; nf * f.span];
        f.thresholds[..sorted.len()].copy_from_slice(&sorted);
        f
    }

    #[test]
    fn ranks_count_the_thresholds_below() {
        if !supported() {
            return;
        }
        for m in [0usize, 1, 2, 15, 16, 17, 255, 256, 1000, 4000, 40000] {
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
            let mut ranks = [0u16; BLOCK * MAX_FEATURES];
            // SAFETY: checked above.
            unsafe { f.ranks_of(&block, rows, &mut ranks) };
            for r in 0..rows {
                for j in 0..3 {
                    let x = values[(r + j) % values.len()];
                    let want = if j == 0 {
                        sorted.partition_point(|&t| t < x)
                    } else {
                        0
                    };
                    assert_eq!(usize::from(ranks[j * BLOCK + r]), want, "m={m} x={x}");
                }
            }
        }
    }

    /// Complete trees of one depth from their splits and leaves.
    fn complete<'a>(
        depth: u32,
        splits: &'a [Vec<Split>],
        leaves: &'a [Vec<i64>],
    ) -> Vec<CompleteTree<'a>> {
        splits
            .iter()
            .zip(leaves)
            .map(|(splits, leaves)| CompleteTree {
                depth,
                splits,
                leaves,
            })
            .collect()
    }

    /// Trees over two features whose thresholds are `base + i` for their 255 splits.
    fn tree_splits(base: f32) -> Vec<Split> {
        (0..255)
            .map(|i| split(base + (i / 2) as f32, (i % 2) as u32))
            .collect()
    }

    #[test]
    fn groups_keep_tree_order_and_at_most_255_thresholds_per_feature() {
        // Each tree has 128 thresholds of feature 0 and 127 of feature 1; trees 0 and 1
        // share theirs, tree 2 has new ones, so the groups are {0, 1}, {2}, {3}.
        let splits = [
            tree_splits(0.0),
            tree_splits(0.0),
            tree_splits(1000.0),
            tree_splits(2000.0),
        ];
        let leaves: Vec<Vec<i64>> = (0..4).map(|t| vec![t; 256]).collect();
        let trees = complete(8, &splits, &leaves);
        let f = RankForest::new(&trees, 2).expect("fits");
        let sizes: Vec<usize> = f.groups.iter().map(|g| g.trees.len()).collect();
        assert_eq!(sizes, [2, 1, 1]);
        let order: Vec<u16> = f
            .groups
            .iter()
            .flat_map(|g| {
                g.trees
                    .iter()
                    .map(|t| t.pieces[0][usize::from(t.values[0])])
            })
            .collect();
        assert_eq!(order, [0, 1, 2, 3]);
        for g in &f.groups {
            for feat in 0..2 {
                let top = g.ranks[feat * f.span + f.span - 1];
                assert!(top <= 128, "group ranks of feature {feat} reach {top}");
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
        let leaves = [1, 2, 3, 4, 5, 6, 7, 8];
        let other = [split(0.25, 0), split(9.0, 1), split(0.75, 0)];
        let trees = [
            CompleteTree {
                depth: 3,
                splits: &splits,
                leaves: &leaves,
            },
            CompleteTree {
                depth: 2,
                splits: &other,
                leaves: &leaves[..4],
            },
        ];
        let f = RankForest::new(&trees, 2).expect("fits");
        assert_eq!(f.groups.len(), 1);
        let g = &f.groups[0];
        // A row's group rank: its forest-wide rank looked up in the group's table.
        let rank = |feat: usize, x: f32| {
            let r = f.thresholds[feat * f.span..(feat + 1) * f.span].partition_point(|&t| t < x);
            g.ranks[feat * f.span + r]
        };
        for (t, tree) in trees.iter().zip(&g.trees) {
            for (i, s) in t.splits.iter().enumerate() {
                let key = tree.keys[i + 1];
                if !s.threshold.is_finite() {
                    assert_eq!((key, tree.features[i + 1]), (u8::MAX, 0));
                    continue;
                }
                assert_eq!(usize::from(tree.features[i + 1]), s.feature as usize);
                for x in [
                    -2.0f32, -1.0, 0.25, 0.3, 0.5, 0.6, 0.75, 2.0, 7.0, 7.5, 9.0, 10.0,
                ] {
                    let r = rank(s.feature as usize, x);
                    assert_eq!(x > s.threshold, r > key, "x={x} thr={}", s.threshold);
                }
            }
        }
        assert!(RankForest::new(&[], 2).is_none());
    }

    #[test]
    fn leaf_pieces_carry_into_exact_sums() {
        if !supported() {
            return;
        }
        // 40 depth-3 trees on one feature (thresholds 1..7): two carries of 16 trees and a
        // last one of 8; leaf values near 2^48 set every piece's bits.
        let splits: Vec<Vec<Split>> = (0..40)
            .map(|t| {
                [4.0, 2.0, 6.0, 1.0, 3.0, 5.0, 7.0]
                    .map(|x| split(x + t as f32 * 0.01, 0))
                    .to_vec()
            })
            .collect();
        let leaves: Vec<Vec<i64>> = (0..40i64)
            .map(|t| {
                (0..8)
                    .map(|l| (1 << 48) - 1 - t * 977 - l * 65_537)
                    .collect()
            })
            .collect();
        let trees = complete(3, &splits, &leaves);
        let f = RankForest::new(&trees, 1).expect("fits");
        let rows = 80;
        let block: Vec<f32> = (0..rows)
            .map(|r| (r % 9) as f32 - 0.005 * r as f32)
            .collect();
        let mut acc: Vec<i64> = (0..rows as i64).map(|r| r * 3).collect();
        // SAFETY: checked above.
        unsafe { f.path_sum_block(&block, &mut acc) };
        for (r, &got) in acc.iter().enumerate() {
            let x = block[block_pos(r, 0, 1)];
            let want: i64 = trees
                .iter()
                .map(|t| {
                    let mut n = 0;
                    for _ in 0..3 {
                        n = 2 * n + 1 + usize::from(x > t.splits[n].threshold);
                    }
                    t.leaves[n - 7]
                })
                .sum::<i64>()
                + r as i64 * 3;
            assert_eq!(got, want, "row {r}");
        }
    }
}
