//! Compiled scoring layouts, the choice of batch kernel ([`ScoringKernel`]) and the f32
//! traversal kernels (the rank kernel lives in `rank.rs`).
//!
//! Each tree is compiled once at load time. Trees up to [`MAX_COMPLETE_DEPTH`] split levels
//! (every forest trained with `max_samples <= 4096`) become a *complete* binary tree in heap
//! order: leaves above the bottom level are padded with splits that always go left
//! (threshold `+inf`), so every row takes exactly `depth` steps of
//! `idx = 2 * idx + 1 + (x[feature] > threshold)` — no child pointers, no data-dependent
//! branches. Deeper trees use a pointer layout.
//!
//! Batches are laid out in groups of [`GROUP`] rows, column-major inside a group
//! (see [`block_pos`]). A group walks a tree together: with AVX-512 (detected at run time) the
//! 16 rows are the 16 lanes of one register — the first three levels by blends on the path
//! taken, the splits of deeper levels by permutes (or gathers), each row's feature value by
//! permutes or a gather ([`ScoringKernel::Avx512`]) — and elsewhere a scalar loop walks the
//! 16 independent rows level by level so their dependency chains overlap.
//!
//! Leaves hold their path lengths in the forest's fixed-point units ([`PathScale`]), so the
//! per-row sums are integers: exact, independent of the order trees are added in, and the
//! same bits from every kernel.
//!
//! Thresholds are stored as f32: scikit-learn compares the f32-cast input, widened to f64,
//! against an f64 threshold `t`; for every f32 `x`, `x <= t` iff `x <= t'` where `t'` is the
//! largest f32 not above `t`. The comparison is therefore exact, not approximate.

use crate::tree::{PathScale, TREE_LEAF, Tree};

/// Deepest tree compiled into the complete (pointer-free) layout.
pub const MAX_COMPLETE_DEPTH: u32 = 12;
/// Rows walked together through one tree (one AVX-512 register of f32 lanes).
pub const GROUP: usize = 16;
/// Rows gathered into one block before the trees are walked (a multiple of [`GROUP`]).
pub const BLOCK_ROWS: usize = 512;

/// Position of feature `f` of row `r` in a block with `nf` features: groups of [`GROUP`] rows,
/// column-major inside a group.
#[inline]
pub(crate) fn block_pos(r: usize, f: usize, nf: usize) -> usize {
    (r / GROUP) * GROUP * nf + f * GROUP + r % GROUP
}

/// One split in a compiled tree: 8 bytes so one load fetches both halves.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Split {
    pub(crate) threshold: f32,
    pub(crate) feature: u32,
}

#[derive(Debug, Clone)]
enum Layout {
    /// Heap-ordered complete tree: `nodes.len() == 2^depth - 1`, `leaves.len() == 2^depth`.
    /// `thr` and `feat16` hold the same splits for the batch kernels (`feat16` is
    /// `feature * GROUP`), padded with [`GROUP`] extra entries so a level's 16 splits can be
    /// loaded as one vector.
    Complete {
        depth: u32,
        nodes: Vec<Split>,
        thr: Vec<f32>,
        feat16: Vec<i32>,
        leaves: Vec<i64>,
    },
    /// Pointer layout for trees deeper than [`MAX_COMPLETE_DEPTH`].
    Sparse {
        nodes: Vec<Split>,
        /// `children[i] = (left, right)`; a leaf has `left == u32::MAX`.
        children: Vec<(u32, u32)>,
        values: Vec<i64>,
    },
}

/// Largest f32 that is `<= t` (exact replacement of an f64 threshold for f32 inputs).
fn threshold_to_f32(t: f64) -> f32 {
    let f = t as f32;
    if f as f64 > t { f.next_down() } else { f }
}

/// How a batch walks the complete trees. Every kernel gives bit-identical results; they
/// differ only in speed, which depends on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringKernel {
    /// A scalar loop over 16 interleaved rows; runs on any CPU.
    Portable,
    /// AVX-512: 16 rows per register. The first three levels of a tree select each row's
    /// feature column and split with blends on the path taken; deeper levels look values up
    /// with permutes or gathers as set here.
    Avx512 {
        /// A row's feature value at levels 3 and deeper is gathered from the block (else
        /// selected with two-register permutes: AMD's gathers are slow).
        gather_values: bool,
        /// The splits of levels 6 to 8 are gathered (else selected with permutes; levels 9
        /// and deeper are always gathered).
        gather_splits: bool,
    },
    /// AVX-512 (with BW and VBMI) on 8-bit threshold ranks, 64 rows per register (see the
    /// `rank` module); forests it does not fit (trees deeper than 8 levels, more than 16
    /// features) use the CPU's AVX-512 default instead.
    Avx512Ranks,
    /// The rank kernel for AVX-512 CPUs without VBMI (Skylake-SP, Cascade Lake): 16-bit keys,
    /// 32 rows per register (see the `rank16` module); the same forests and fallback.
    Avx512Ranks16,
}

/// The environment variable that overrides [`ScoringKernel::detect`].
pub const KERNEL_ENV: &str = "TXGUARD_FOREST_KERNEL";

impl ScoringKernel {
    /// Every kernel with its name as `TXGUARD_FOREST_KERNEL` takes it.
    pub const ALL: [(&'static str, ScoringKernel); 7] = [
        ("portable", ScoringKernel::Portable),
        ("avx512-ranks", ScoringKernel::Avx512Ranks),
        ("avx512-ranks16", ScoringKernel::Avx512Ranks16),
        (
            "avx512-permute",
            ScoringKernel::Avx512 {
                gather_values: false,
                gather_splits: false,
            },
        ),
        (
            "avx512-gather",
            ScoringKernel::Avx512 {
                gather_values: true,
                gather_splits: true,
            },
        ),
        (
            "avx512-gather-values",
            ScoringKernel::Avx512 {
                gather_values: true,
                gather_splits: false,
            },
        ),
        (
            "avx512-gather-splits",
            ScoringKernel::Avx512 {
                gather_values: false,
                gather_splits: true,
            },
        ),
    ];

    /// The kernel's name (as in [`ScoringKernel::ALL`]).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("portable", |(n, _)| n)
    }

    /// Whether this is one of the rank kernels (which fall back to an f32 kernel for forests
    /// they do not fit).
    fn is_rank(self) -> bool {
        matches!(
            self,
            ScoringKernel::Avx512Ranks | ScoringKernel::Avx512Ranks16
        )
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            ScoringKernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            ScoringKernel::Avx512 { .. } => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            ScoringKernel::Avx512Ranks => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vbmi")
            }
            #[cfg(target_arch = "x86_64")]
            ScoringKernel::Avx512Ranks16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            ScoringKernel::Avx512 { .. }
            | ScoringKernel::Avx512Ranks
            | ScoringKernel::Avx512Ranks16 => false,
        }
    }

    /// The fastest kernel measured for this CPU (docs/benchmarks.md): the rank kernel where
    /// the CPU has AVX-512 BW and VBMI (Intel since Ice Lake, AMD since Zen 4), its 16-bit
    /// variant with AVX-512 BW alone (Skylake-SP, Cascade Lake), else AVX-512 with permutes
    /// (gathers on Intel), the portable loop without AVX-512.
    pub fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        for k in [ScoringKernel::Avx512Ranks, ScoringKernel::Avx512Ranks16] {
            if k.is_supported() {
                return k;
            }
        }
        Self::f32_for_this_cpu()
    }

    /// The fastest kernel on f32 values for this CPU (for forests the rank kernel does not
    /// fit).
    fn f32_for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return ScoringKernel::Avx512 {
                gather_values: cpu_vendor() == *b"GenuineIntel",
                gather_splits: false,
            };
        }
        ScoringKernel::Portable
    }

    /// The kernel named by `TXGUARD_FOREST_KERNEL` (`auto` or unset: [`Self::for_this_cpu`]),
    /// read once per process. Fails for an unknown name or a kernel this CPU cannot run.
    pub fn detect() -> Result<Self, String> {
        static KERNEL: std::sync::OnceLock<Result<ScoringKernel, String>> =
            std::sync::OnceLock::new();
        KERNEL
            .get_or_init(|| match std::env::var(KERNEL_ENV) {
                Err(_) => Ok(Self::for_this_cpu()),
                Ok(v) if v.is_empty() || v == "auto" => Ok(Self::for_this_cpu()),
                Ok(v) => Self::parse(&v),
            })
            .clone()
    }

    /// Parses a kernel name; fails naming the choices, or when this CPU cannot run it.
    pub fn parse(name: &str) -> Result<Self, String> {
        let Some((_, k)) = Self::ALL.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "{KERNEL_ENV}={name:?} is not a scoring kernel; use auto or one of {}",
                names.join(", ")
            ));
        };
        if !k.is_supported() {
            return Err(format!(
                "{KERNEL_ENV}={name:?} needs AVX-512 (AVX-512 BW for avx512-ranks16, and VBMI for avx512-ranks), which this CPU does not have; use portable or auto"
            ));
        }
        Ok(*k)
    }
}

/// The complete trees of a forest compiled for `kernel` when it is a rank kernel; `None` for
/// the other kernels, when a tree is not complete, or when the forest does not fit.
#[cfg(target_arch = "x86_64")]
fn rank_forest(trees: &[Layout], nf: usize, kernel: ScoringKernel) -> Option<RankForest> {
    if !kernel.is_rank() {
        return None;
    }
    let complete: Vec<crate::rank::CompleteTree<'_>> = trees
        .iter()
        .map(|t| match t {
            Layout::Complete {
                depth,
                nodes,
                leaves,
                ..
            } => Some(crate::rank::CompleteTree {
                depth: *depth,
                splits: nodes,
                leaves,
            }),
            Layout::Sparse { .. } => None,
        })
        .collect::<Option<_>>()?;
    if kernel == ScoringKernel::Avx512Ranks {
        crate::rank::RankForest::new(&complete, nf).map(RankForest::Bytes)
    } else {
        crate::rank16::RankForest::new(&complete, nf).map(RankForest::Words)
    }
}

/// The CPU's vendor string (`GenuineIntel`, `AuthenticAMD`, ...).
#[cfg(target_arch = "x86_64")]
fn cpu_vendor() -> [u8; 12] {
    // Read once: `cpuid` traps to the hypervisor in a VM.
    static VENDOR: std::sync::OnceLock<[u8; 12]> = std::sync::OnceLock::new();
    *VENDOR.get_or_init(|| {
        let r = std::arch::x86_64::__cpuid(0);
        let mut v = [0u8; 12];
        v[..4].copy_from_slice(&r.ebx.to_le_bytes());
        v[4..8].copy_from_slice(&r.edx.to_le_bytes());
        v[8..].copy_from_slice(&r.ecx.to_le_bytes());
        v
    })
}

/// All trees of a forest, compiled for scoring.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    trees: Vec<Layout>,
    nf: usize,
    /// The fixed-point unit of the leaves' path lengths.
    scale: PathScale,
    /// The kernel chosen.
    kernel: ScoringKernel,
    /// The kernel the complete trees are walked with: `kernel`, or for a rank kernel the
    /// CPU's f32 kernel (for a forest it does not fit).
    f32_kernel: ScoringKernel,
    /// The forest for a rank kernel, when one is chosen and fits.
    #[cfg(target_arch = "x86_64")]
    ranks: Option<RankForest>,
}

/// A forest compiled for one of the rank kernels.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone)]
enum RankForest {
    Bytes(crate::rank::RankForest),
    Words(crate::rank16::RankForest),
}

impl Compiled {
    /// Compiles validated trees for a kernel this CPU supports.
    pub(crate) fn new(trees: &[Tree], nf: usize, kernel: ScoringKernel) -> Self {
        let scale = PathScale::for_trees(trees);
        let mut c = Compiled {
            trees: trees
                .iter()
                .map(|t| compile(t, MAX_COMPLETE_DEPTH, scale))
                .collect(),
            nf,
            scale,
            kernel,
            f32_kernel: kernel,
            #[cfg(target_arch = "x86_64")]
            ranks: None,
        };
        c.set_kernel(kernel);
        c
    }

    pub(crate) fn kernel(&self) -> ScoringKernel {
        self.kernel
    }

    pub(crate) fn kernel_in_use(&self) -> ScoringKernel {
        #[cfg(target_arch = "x86_64")]
        if self.ranks.is_some() {
            return self.kernel;
        }
        self.f32_kernel
    }

    /// Switches to another kernel (the caller checked that this CPU supports it); a rank
    /// kernel's forest is built here, only when it is chosen.
    pub(crate) fn set_kernel(&mut self, kernel: ScoringKernel) {
        self.kernel = kernel;
        self.f32_kernel = kernel;
        if kernel.is_rank() {
            self.f32_kernel = ScoringKernel::f32_for_this_cpu();
        }
        #[cfg(target_arch = "x86_64")]
        {
            self.ranks = rank_forest(&self.trees, self.nf, kernel);
        }
    }

    /// A sum of path lengths in the forest's fixed-point units, as a path length.
    #[inline]
    pub(crate) fn path_length(&self, sum: i64) -> f64 {
        self.scale.to_f64(sum)
    }

    /// Sum over trees of the path length of one f32 row, in fixed-point units.
    #[inline]
    pub(crate) fn path_sum_row(&self, row: &[f32]) -> i64 {
        let mut acc = 0;
        for t in &self.trees {
            acc += match t {
                Layout::Complete {
                    depth,
                    nodes,
                    leaves,
                    ..
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

    /// Adds each tree's path length, in fixed-point units, to `acc[r]` for the rows of a block
    /// laid out by [`block_pos`] with `nf` features. `acc.len()` must be a multiple of
    /// [`GROUP`].
    pub(crate) fn path_sum_block(&self, block: &[f32], nf: usize, acc: &mut [i64]) {
        assert!(acc.len().is_multiple_of(GROUP) && block.len() >= acc.len() * nf);
        #[cfg(target_arch = "x86_64")]
        match &self.ranks {
            // SAFETY: `ranks` exists only for a rank kernel, which the caller checked this CPU
            // supports (avx512f, avx512bw, and avx512vbmi for the byte kernel).
            Some(RankForest::Bytes(r)) => return unsafe { r.path_sum_block(block, acc) },
            // SAFETY: as above (avx512f and avx512bw).
            Some(RankForest::Words(r)) => return unsafe { r.path_sum_block(block, acc) },
            None => {}
        }
        let mut row = vec![0f32; nf];
        for t in &self.trees {
            match t {
                Layout::Complete {
                    depth,
                    thr,
                    nodes,
                    feat16,
                    leaves,
                    ..
                } => {
                    #[cfg(target_arch = "x86_64")]
                    if let ScoringKernel::Avx512 {
                        gather_values,
                        gather_splits,
                    } = self.f32_kernel
                    {
                        let tree = avx512::TreeRef {
                            depth: *depth,
                            thr,
                            feat16,
                            nodes,
                            leaves,
                        };
                        // SAFETY: the kernel was checked to be supported (avx512f present);
                        // the layout invariants documented on `avx512::walk_complete` hold for
                        // every compiled complete tree.
                        unsafe {
                            avx512::walk_complete(
                                &tree,
                                block,
                                nf,
                                acc,
                                gather_values,
                                gather_splits,
                            )
                        };
                        continue;
                    }
                    walk_complete(*depth, thr, feat16, leaves, block, nf, acc);
                }
                Layout::Sparse {
                    nodes,
                    children,
                    values,
                } => {
                    for (r, a) in acc.iter_mut().enumerate() {
                        for (f, v) in row.iter_mut().enumerate() {
                            *v = block[block_pos(r, f, nf)];
                        }
                        *a += values[walk_sparse(nodes, children, &row)];
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

/// Portable batch kernel: the 16 rows of a group walk the tree level by level.
fn walk_complete(
    depth: u32,
    thr: &[f32],
    feat16: &[i32],
    leaves: &[i64],
    block: &[f32],
    nf: usize,
    acc: &mut [i64],
) {
    let first_leaf = (1usize << depth) - 1;
    for (g, accs) in acc.chunks_exact_mut(GROUP).enumerate() {
        let x = &block[g * GROUP * nf..(g + 1) * GROUP * nf];
        let mut idx = [0usize; GROUP];
        for _ in 0..depth {
            for (lane, ix) in idx.iter_mut().enumerate() {
                let v = x[feat16[*ix] as usize + lane];
                *ix = 2 * *ix + 1 + (v > thr[*ix]) as usize;
            }
        }
        for (a, ix) in accs.iter_mut().zip(idx) {
            *a += leaves[ix - first_leaf];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::GROUP;

    /// Levels whose splits (at most 16) are fetched with a permute instead of a gather.
    const PERMUTE_LEVELS: u32 = 5;
    /// Levels walked by blends on the path taken ([`top_levels`]).
    const TOP_LEVELS: u32 = 3;
    /// Nodes of the top levels.
    const TOP_NODES: usize = (1 << TOP_LEVELS) - 1;

    /// One compiled complete tree, as [`super::Layout::Complete`] holds it.
    pub(super) struct TreeRef<'a> {
        pub depth: u32,
        pub thr: &'a [f32],
        pub feat16: &'a [i32],
        pub nodes: &'a [super::Split],
        pub leaves: &'a [i64],
    }

    /// AVX-512 batch kernel: one group of 16 rows per register. `gather_values` and
    /// `gather_splits` as on [`super::ScoringKernel::Avx512`].
    ///
    /// # Safety
    /// The CPU supports avx512f. `thr`/`feat16` have `2^depth - 1 + GROUP` entries, every
    /// `feat16` entry is `feature * GROUP` with `feature < nf`, `leaves` has `2^depth`
    /// entries, `acc.len()` is a multiple of 16 and `block` holds `acc.len() * nf` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn walk_complete(
        tree: &TreeRef<'_>,
        block: &[f32],
        nf: usize,
        acc: &mut [i64],
        gather_values: bool,
        gather_splits: bool,
    ) {
        let TreeRef {
            depth,
            thr,
            feat16,
            nodes,
            leaves,
        } = *tree;
        debug_assert!(thr.len() >= (1usize << depth) - 1 + GROUP);
        debug_assert!(feat16.len() == thr.len() && leaves.len() == 1usize << depth);
        let shallow = depth.min(PERMUTE_LEVELS);
        // The splits of each shallow level, one register each.
        let mut lvl_thr = [_mm512_setzero_ps(); PERMUTE_LEVELS as usize];
        let mut lvl_feat = [_mm512_setzero_si512(); PERMUTE_LEVELS as usize];
        for d in 0..shallow as usize {
            let base = (1usize << d) - 1;
            // SAFETY: base + 16 <= thr.len() by the padding.
            unsafe {
                lvl_thr[d] = _mm512_loadu_ps(thr.as_ptr().add(base));
                lvl_feat[d] = _mm512_loadu_si512(feat16.as_ptr().add(base).cast());
            }
        }
        let mut top_thr = [_mm512_setzero_ps(); TOP_NODES];
        let mut top_col = [0usize; TOP_NODES];
        if depth >= TOP_LEVELS {
            for (n, (t, c)) in top_thr.iter_mut().zip(&mut top_col).enumerate() {
                *t = _mm512_set1_ps(thr[n]);
                *c = feat16[n] as usize;
            }
        }
        let k = &Kernel {
            depth,
            shallow,
            lane: _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            one: _mm512_set1_epi32(1),
            first_leaf: _mm512_set1_epi32((1i32 << depth) - 1),
            lvl_thr,
            lvl_feat,
            top_thr,
            top_col,
            thr: thr.as_ptr(),
            feat16: feat16.as_ptr(),
            nodes: nodes.as_ptr().cast(),
            even: _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
            leaves: leaves.as_ptr(),
        };
        // SAFETY: forwarded.
        unsafe {
            match (gather_values, gather_splits) {
                (false, false) => walk_all::<false, false>(k, block, nf, acc),
                (false, true) => walk_all::<false, true>(k, block, nf, acc),
                (true, false) => walk_all::<true, false>(k, block, nf, acc),
                (true, true) => walk_all::<true, true>(k, block, nf, acc),
            }
        }
    }

    /// Walks every group of the block, [`INTERLEAVE`] groups at a time.
    ///
    /// # Safety
    /// As [`walk_complete`].
    #[target_feature(enable = "avx512f")]
    unsafe fn walk_all<const GV: bool, const GS: bool>(
        k: &Kernel,
        block: &[f32],
        nf: usize,
        acc: &mut [i64],
    ) {
        let groups = acc.len() / GROUP;
        let mut g = 0;
        // Several groups at once: their dependency chains (lookup -> compare -> index)
        // are independent and overlap in the CPU.
        while g + INTERLEAVE <= groups {
            // SAFETY: groups g..g+INTERLEAVE are inside block and acc.
            unsafe {
                walk_groups_np::<INTERLEAVE, GV, GS>(
                    k,
                    block.as_ptr().add(g * GROUP * nf),
                    nf,
                    acc.as_mut_ptr().add(g * GROUP),
                )
            };
            g += INTERLEAVE;
        }
        while g < groups {
            // SAFETY: group g is inside block and acc.
            unsafe {
                walk_groups_np::<1, GV, GS>(
                    k,
                    block.as_ptr().add(g * GROUP * nf),
                    nf,
                    acc.as_mut_ptr().add(g * GROUP),
                )
            };
            g += 1;
        }
    }

    /// Groups walked together by [`walk_all`].
    const INTERLEAVE: usize = 8;

    /// Per-tree constants of the kernel.
    struct Kernel {
        depth: u32,
        shallow: u32,
        lane: __m512i,
        one: __m512i,
        first_leaf: __m512i,
        lvl_thr: [__m512; PERMUTE_LEVELS as usize],
        lvl_feat: [__m512i; PERMUTE_LEVELS as usize],
        /// Thresholds (broadcast) and feature offsets (`feature * 16`) of the top nodes;
        /// set when `depth >= TOP_LEVELS`.
        top_thr: [__m512; TOP_NODES],
        top_col: [usize; TOP_NODES],
        thr: *const f32,
        feat16: *const i32,
        /// The tree's splits as 64-bit words (threshold bits low, feature high).
        nodes: *const i64,
        /// Lane indices 0, 2, .., 30: the low halves of two registers of 64-bit words.
        even: __m512i,
        leaves: *const i64,
    }

    /// Dispatches [`walk_groups`] on the number of feature pairs (gathered values need none).
    ///
    /// # Safety
    /// As [`walk_groups`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn walk_groups_np<const N: usize, const GV: bool, const GS: bool>(
        k: &Kernel,
        x: *const f32,
        nf: usize,
        acc: *mut i64,
    ) {
        // SAFETY: forwarded.
        unsafe {
            if GV {
                return walk_groups::<N, 0, GS>(k, x, nf, acc);
            }
            match nf.div_ceil(2) {
                1 => walk_groups::<N, 1, GS>(k, x, nf, acc),
                2 => walk_groups::<N, 2, GS>(k, x, nf, acc),
                3 => walk_groups::<N, 3, GS>(k, x, nf, acc),
                4 => walk_groups::<N, 4, GS>(k, x, nf, acc),
                5 => walk_groups::<N, 5, GS>(k, x, nf, acc),
                6 => walk_groups::<N, 6, GS>(k, x, nf, acc),
                7 => walk_groups::<N, 7, GS>(k, x, nf, acc),
                8 => walk_groups::<N, 8, GS>(k, x, nf, acc),
                _ => walk_groups::<N, 0, GS>(k, x, nf, acc),
            }
        }
    }

    /// The first [`TOP_LEVELS`] levels for one group: the node of level `d` is one of `2^d`
    /// known to the kernel, so the row's feature column and threshold are chosen by blends on
    /// the comparisons already made (no permutes, no gathers). Returns the heap index reached.
    ///
    /// # Safety
    /// As [`walk_groups`]; `k.depth >= TOP_LEVELS`; `xg` points at the group's `16 * nf`
    /// values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn top_levels(k: &Kernel, xg: *const f32) -> __m512i {
        // SAFETY: top_col[n] = feature * 16 with feature < nf: 16 values inside the group.
        let c: [__m512; TOP_NODES] =
            std::array::from_fn(|n| unsafe { _mm512_loadu_ps(xg.add(k.top_col[n])) });
        let t = &k.top_thr;
        let g0 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(c[0], t[0]);
        let v1 = _mm512_mask_blend_ps(g0, c[1], c[2]);
        let t1 = _mm512_mask_blend_ps(g0, t[1], t[2]);
        let g1 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v1, t1);
        let v2 = _mm512_mask_blend_ps(
            g0,
            _mm512_mask_blend_ps(g1, c[3], c[4]),
            _mm512_mask_blend_ps(g1, c[5], c[6]),
        );
        let t2 = _mm512_mask_blend_ps(
            g0,
            _mm512_mask_blend_ps(g1, t[3], t[4]),
            _mm512_mask_blend_ps(g1, t[5], t[6]),
        );
        let g2 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v2, t2);
        // Heap index at level 3: 7 + 4 g0 + 2 g1 + g2.
        let ix = _mm512_set1_epi32(7);
        let ix = _mm512_mask_add_epi32(ix, g0, ix, _mm512_set1_epi32(4));
        let ix = _mm512_mask_add_epi32(ix, g1, ix, _mm512_set1_epi32(2));
        _mm512_mask_add_epi32(ix, g2, ix, k.one)
    }

    /// One step of `N` groups through level `d >= PERMUTE_LEVELS`, whose `2^d` splits are
    /// looked up with [`select_x::<LP>`] (`LP == 2^d / 32`, or 0 to gather).
    ///
    /// # Safety
    /// As [`walk_groups`]; `d < depth`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn deep_step<const N: usize, const NP: usize, const LP: usize>(
        k: &Kernel,
        idx: &mut [__m512i; N],
        d: usize,
        x: *const f32,
        nf: usize,
    ) {
        let base = (1usize << d) - 1;
        let basev = _mm512_set1_epi32(base as i32);
        for (i, ix) in idx.iter_mut().enumerate() {
            // SAFETY: rel < 2^d entries from `base`; idx inside the split arrays.
            let (t, f) = unsafe {
                if LP == 0 {
                    // Two 8-lane gathers of (threshold, feature) splits, split into halves;
                    // the feature times GROUP (16) is the offset of its column.
                    let lo = _mm512_i32gather_epi64::<8>(_mm512_castsi512_si256(*ix), k.nodes);
                    let hi =
                        _mm512_i32gather_epi64::<8>(_mm512_extracti64x4_epi64::<1>(*ix), k.nodes);
                    let odd = _mm512_add_epi32(k.even, k.one);
                    (
                        _mm512_castsi512_ps(_mm512_permutex2var_epi32(lo, k.even, hi)),
                        _mm512_slli_epi32::<4>(_mm512_permutex2var_epi32(lo, odd, hi)),
                    )
                } else {
                    let rel = _mm512_sub_epi32(*ix, basev);
                    (
                        select_x::<LP>(k.thr.add(base), 2 * LP, rel),
                        _mm512_castps_si512(select_x::<LP>(
                            k.feat16.add(base).cast::<f32>(),
                            2 * LP,
                            rel,
                        )),
                    )
                }
            };
            // SAFETY: f + lane < 16 * nf, inside group i.
            let v =
                unsafe { select_x::<NP>(x.add(i * GROUP * nf), nf, _mm512_add_epi32(f, k.lane)) };
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, t);
            let next = _mm512_add_epi32(_mm512_add_epi32(*ix, *ix), k.one);
            *ix = _mm512_mask_add_epi32(next, gt, next, k.one);
        }
    }

    /// `table[pos]` per lane for a table of `16 * nf` 32-bit values (`nf <= 2 * NP`),
    /// selected with two-register permutes and blends instead of a gather (gathers are slow on
    /// AMD cores); `NP == 0` gathers. Used for a group's feature values (`pos` =
    /// `feature * 16 + lane`) and for a tree level's splits (`pos` = node within the level).
    ///
    /// # Safety
    /// `xg` points at 16 * nf values; every `pos` lane is below 16 * nf.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn select_x<const NP: usize>(xg: *const f32, nf: usize, pos: __m512i) -> __m512 {
        if NP == 0 {
            // SAFETY: pos < 16 * nf.
            return unsafe { _mm512_i32gather_ps::<4>(pos, xg) };
        }
        let mut p = [_mm512_setzero_ps(); 8];
        for (q, slot) in p.iter_mut().enumerate().take(NP) {
            // SAFETY: column 2q < nf; column 2q + 1 read only when < nf.
            let (a, b) = unsafe {
                let a = _mm512_loadu_ps(xg.add(2 * q * GROUP));
                let b = if 2 * q + 1 < nf {
                    _mm512_loadu_ps(xg.add((2 * q + 1) * GROUP))
                } else {
                    a
                };
                (a, b)
            };
            *slot = _mm512_permutex2var_ps(a, pos, b);
        }
        // Reduce the pairs by the bits of pos / 32.
        let mut n = NP;
        let mut bit = 32;
        while n > 1 {
            let m = _mm512_test_epi32_mask(pos, _mm512_set1_epi32(bit));
            for q in 0..n / 2 {
                p[q] = _mm512_mask_blend_ps(m, p[2 * q], p[2 * q + 1]);
            }
            if n % 2 == 1 {
                p[n / 2] = p[n - 1];
            }
            n = n.div_ceil(2);
            bit <<= 1;
        }
        p[0]
    }

    /// Walks `N` consecutive groups starting at `x` (block) and adds to `acc`; feature values
    /// come from [`select_x::<NP>`], deep splits from gathers when `GS`.
    ///
    /// # Safety
    /// As [`walk_complete`]; `x` points at `N * 16 * nf` values and `acc` at `N * 16` slots.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn walk_groups<const N: usize, const NP: usize, const GS: bool>(
        k: &Kernel,
        x: *const f32,
        nf: usize,
        acc: *mut i64,
    ) {
        let mut idx = [_mm512_setzero_si512(); N];
        let mut first = 0;
        if k.depth >= TOP_LEVELS {
            for (i, ix) in idx.iter_mut().enumerate() {
                // SAFETY: group i is inside the block.
                *ix = unsafe { top_levels(k, x.add(i * GROUP * nf)) };
            }
            first = TOP_LEVELS as usize;
        }
        for d in first..k.shallow as usize {
            let base = _mm512_set1_epi32((1i32 << d) - 1);
            for (i, ix) in idx.iter_mut().enumerate() {
                let rel = _mm512_sub_epi32(*ix, base);
                let t = _mm512_permutexvar_ps(rel, k.lvl_thr[d]);
                let f = _mm512_permutexvar_epi32(rel, k.lvl_feat[d]);
                // SAFETY: f + lane < 16 * nf, inside group i.
                let v = unsafe {
                    select_x::<NP>(x.add(i * GROUP * nf), nf, _mm512_add_epi32(f, k.lane))
                };
                let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, t);
                let next = _mm512_add_epi32(_mm512_add_epi32(*ix, *ix), k.one);
                *ix = _mm512_mask_add_epi32(next, gt, next, k.one);
            }
        }
        // Deeper levels: the level's splits come from memory with permutes up to 256 nodes
        // (level 8), or with gathers (from level 6 when `GS`, always from level 9). The
        // level's lookup width is a constant per call.
        let depth = k.depth as usize;
        // SAFETY (all steps): level d's 2^d splits start at 2^d - 1; idx < 2^depth - 1.
        unsafe {
            if depth > 5 {
                deep_step::<N, NP, 1>(k, &mut idx, 5, x, nf);
            }
            if GS {
                for d in 6..depth {
                    deep_step::<N, NP, 0>(k, &mut idx, d, x, nf);
                }
            } else {
                if depth > 6 {
                    deep_step::<N, NP, 2>(k, &mut idx, 6, x, nf);
                }
                if depth > 7 {
                    deep_step::<N, NP, 4>(k, &mut idx, 7, x, nf);
                }
                if depth > 8 {
                    deep_step::<N, NP, 8>(k, &mut idx, 8, x, nf);
                }
                for d in 9..depth {
                    deep_step::<N, NP, 0>(k, &mut idx, d, x, nf);
                }
            }
        }
        for (i, ix) in idx.iter().enumerate() {
            let leaf = _mm512_sub_epi32(*ix, k.first_leaf);
            // SAFETY: leaf < 2^depth = leaves.len(); acc has 16 slots for group i.
            unsafe {
                let lo = _mm512_i32gather_epi64::<8>(_mm512_castsi512_si256(leaf), k.leaves);
                let hi =
                    _mm512_i32gather_epi64::<8>(_mm512_extracti64x4_epi64::<1>(leaf), k.leaves);
                let a = acc.add(i * GROUP);
                _mm512_storeu_epi64(a, _mm512_add_epi64(_mm512_loadu_epi64(a), lo));
                _mm512_storeu_epi64(a.add(8), _mm512_add_epi64(_mm512_loadu_epi64(a.add(8)), hi));
            }
        }
    }
}

fn compile(tree: &Tree, max_complete_depth: u32, scale: PathScale) -> Layout {
    let values: Vec<i64> = tree
        .leaf_values()
        .into_iter()
        .map(|v| scale.fixed(v))
        .collect();
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
    let mut leaves = vec![0; 1usize << depth];
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
    let mut thr: Vec<f32> = nodes.iter().map(|s| s.threshold).collect();
    let mut feat16: Vec<i32> = nodes
        .iter()
        .map(|s| (s.feature as usize * GROUP) as i32)
        .collect();
    thr.resize(n_internal + GROUP, f32::INFINITY);
    feat16.resize(n_internal + GROUP, 0);
    Layout::Complete {
        depth,
        nodes,
        thr,
        feat16,
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
            weighted_n_node_samples: None,
        }
    }

    /// The shipped model (14 features, max_samples 256) fits the rank kernel, so the default
    /// pipeline scores with it wherever the CPU has AVX-512 BW and VBMI.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_shipped_model_fits_the_rank_kernel() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default.json");
        let text = std::fs::read_to_string(path).expect("models/default.json");
        let file: crate::ModelFile = serde_json::from_str(&text).expect("model parses");
        let trees: Vec<Layout> = file
            .trees
            .iter()
            .map(|t| compile(t, MAX_COMPLETE_DEPTH, PathScale::for_trees(&file.trees)))
            .collect();
        for k in [ScoringKernel::Avx512Ranks, ScoringKernel::Avx512Ranks16] {
            assert!(
                rank_forest(&trees, file.features.len(), k).is_some(),
                "{k:?}"
            );
        }
    }

    /// A forest the rank kernel does not take is walked by the CPU's f32 kernel, and says so.
    #[test]
    fn the_kernel_in_use_falls_back_for_a_forest_the_rank_kernel_does_not_fit() {
        if !ScoringKernel::Avx512Ranks.is_supported() {
            return;
        }
        // Two levels: shallower than the rank kernel's three.
        let c = Compiled::new(&[lopsided()], 2, ScoringKernel::Avx512Ranks);
        assert_eq!(c.kernel(), ScoringKernel::Avx512Ranks);
        assert_eq!(c.kernel_in_use(), ScoringKernel::f32_for_this_cpu());
    }

    #[test]
    fn complete_and_sparse_layouts_agree_with_the_arrays() {
        let t = lopsided();
        let c = Compiled::new(std::slice::from_ref(&t), 2, ScoringKernel::for_this_cpu());
        let scale = PathScale::for_trees(std::slice::from_ref(&t));
        let vals: Vec<i64> = t.leaf_values().iter().map(|&v| scale.fixed(v)).collect();
        let sparse = Compiled {
            trees: vec![compile(&t, 0, scale)],
            nf: 2,
            scale,
            kernel: ScoringKernel::Portable,
            f32_kernel: ScoringKernel::Portable,
            #[cfg(target_arch = "x86_64")]
            ranks: None,
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
        let mut block = vec![0f32; GROUP * 2];
        for (r, row) in rows.iter().enumerate() {
            for (f, v) in row.iter().enumerate() {
                block[block_pos(r, f, 2)] = *v;
            }
        }
        let mut acc = vec![0; GROUP];
        c.path_sum_block(&block, 2, &mut acc);
        let mut acc_scalar = vec![0; GROUP];
        if let Layout::Complete {
            depth,
            thr,
            feat16,
            leaves,
            ..
        } = &c.trees[0]
        {
            walk_complete(*depth, thr, feat16, leaves, &block, 2, &mut acc_scalar);
        }
        let mut acc_sparse = vec![0; GROUP];
        sparse.path_sum_block(&block, 2, &mut acc_sparse);
        for (r, row) in rows.iter().enumerate() {
            let expect = vals[t.apply(row)];
            assert_eq!(acc[r], expect, "row {r}");
            assert_eq!(acc_sparse[r], expect, "row {r}");
            assert_eq!(acc_scalar[r], expect, "row {r}");
            assert_eq!(c.path_sum_row(row), expect, "row {r}");
        }
    }
}
