//! AVX-512 VNNI panel products of block-quantized weights (the K-quants
//! Q2_K … Q6_K, the 32-element types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
//! IQ4_NL (its table values plus 128, as Q8_0's `q + 128`), and the
//! i-quants of DeepSeek's low-bit GGUFs, IQ1_S … IQ4_XS, unpacked by
//! `crate::iq::avx512::unpack_k` into Q6_K's form: 16-element groups,
//! unsigned `q + off`) with many activation rows (prefill), x86-64 only.
//!
//! The row kernels of `avx2_q8` unpack each weight block once per group of
//! eight activation rows, transpose it, and reduce every block's partial sums
//! across lanes; with hundreds of activation rows that per-block work, not
//! the multiply-adds, is what they spend their time on. Here sixteen weight
//! rows (a panel) are unpacked once for all the activation rows, into the
//! layout where one 64-byte vector holds four consecutive quants of each of
//! the sixteen rows. Four bytes of an activation row, broadcast, then meet
//! all sixteen rows in one `vpdpbusd`: lane `r` of the sums is weight row
//! `r`, so no lanes are ever reduced, and each weight vector serves `J`
//! activation rows while it is in a register.
//!
//! # Exactly the reference's arithmetic
//!
//! As in `amx`. 32-element types: per block the exact integer dot of the
//! unsigned quants (`q + off`, corrected by `off · Σy`), then
//! `(d · da) · isum` into lane `b % 8` (and `m · s` into a second set of
//! lanes for Q4_1 / Q5_1). K-quants: per 256-element block the exact
//! `Σ_g sc_g · dot_g` over the
//! scale groups (32 elements for Q4_K / Q5_K, 16 for Q2_K, Q3_K, Q6_K), the
//! exact `Σ mv · bsum` of the activation's 16-element sums (the mins of
//! Q2_K / Q4_K / Q5_K, or for Q6_K the scales times its offset of 32:
//! quants are unpacked unsigned, `q + 32`, and Q3_K's `q + 4` likewise;
//! the i-quants likewise with their own offsets),
//! then the block's float term of `qdot::term` / `term_k` into lane `b % 8`,
//! each lane summing its blocks in order, and the lanes added as
//! `qdot::reduce8` adds them (times the i-quant's `post_scale`). The integers are exact whatever the order, and
//! the floats are the reference's operations in its order, so every output
//! is bit-identical to `vec_dot_q_ref` (tested in `tests/qdot.rs` through
//! `matmul_q`).

use crate::q8::ActRow;
use crate::types::{GgmlType, QK32, QK_K};
use crate::x8::Layout;
use core::arch::x86_64::*;

/// Weight rows per panel: one 16-lane vector of i32 sums.
pub(crate) const ROWS: usize = 16;

/// Activation rows a kernel call takes (each weight vector loaded once for
/// them): eight for the K-quants and the i-quants of 256-element blocks,
/// four for the 32-element types (IQ4_NL among them). Eight against four, `examples/prefill_shapes 512 1` on the Xeon
/// with AMX (stop 35): Q4_K 104 -> 120-128 GMAC/s, Q6_K 93 -> 111-113,
/// IQ1_S 103 -> 117; Q5_0 between -8 % and +10 % by shape, so it keeps four.
const J_K: usize = 8;
const J_LEGACY: usize = 4;

/// Activation rows below which the row kernels stay faster (the panel's
/// unpacking is shared by fewer rows than it costs), measured on Zen 4 at
/// V2-Lite's shapes with `examples/prefill_shapes.rs`: the K-quants were
/// even at 12 rows; the 32-element types, whose float step comes every 32
/// elements, were still slower at 16 (Q5_0 expert down: 56 against 62
/// GMAC/s) and faster at 24 (66-71 against 54).
///
/// Q6_K in the interleaved layout ([`crate::x8`]) from 8: its panels are
/// ahead there already (the Xeon of stop 48, one core, 2048 columns from
/// L2, `x8_bw 1 2 2048 q6_k M` at `WHALE_SIMD=avx512`, `WHALE_PREFETCH=0`,
/// ms a product, row kernels / panels: 0.35–0.36 / 0.32–0.33 at 8 rows,
/// 0.53 / 0.42–0.44 at 12). The other types' crossings in that layout
/// measured where these are: Q4_K, Q5_K and Q2_K at 12 (rows ahead or
/// level at 8, panels ahead from 12 or 16), the 32-element types at 16 to
/// 24 (Q4_0 level at 16 and 24, Q8_0 at 24, IQ4_NL ahead in rows at 12).
pub(crate) fn min_act_rows(wty: GgmlType, layout: crate::x8::Layout) -> usize {
    if wty == GgmlType::Q6_K && layout == crate::x8::Layout::X8 {
        8
    } else if is_iq_k(wty) {
        IQ_MIN_ACT_ROWS
    } else if is_k(wty) {
        12
    } else {
        20
    }
}

/// `min_act_rows` of the i-quants, whose row kernels spend most of their
/// time decoding the grids.
const IQ_MIN_ACT_ROWS: usize = 9;

/// The weight types the panel kernel takes.
pub(crate) fn supports(wty: GgmlType) -> bool {
    use GgmlType as G;
    matches!(
        wty,
        G::Q2_K | G::Q3_K | G::Q4_K | G::Q5_K | G::Q6_K | G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::IQ4_NL
    ) || crate::iq::avx512::panel_offset(wty).is_some()
}

/// Whether `wty` has 256-element blocks (else 32-element ones).
fn is_k(wty: GgmlType) -> bool {
    wty.block_size() == QK_K
}

/// The i-quants with 256-element blocks: all but IQ4_NL, whose 32-element
/// blocks the panels take as Q8_0's (its table's values, shifted by 128).
pub(crate) fn is_iq_k(wty: GgmlType) -> bool {
    wty.is_iquant() && is_k(wty)
}

/// Elements per scale group.
fn group_len(wty: GgmlType) -> usize {
    if is_iq_k(wty) {
        crate::iq::avx512::panel_group_len(wty)
    } else if matches!(wty, GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q6_K) {
        16
    } else {
        32
    }
}

/// `R` weight rows unpacked (`V = 4R` bytes a vector: sixteen rows in
/// 64-byte vectors here, eight in 32-byte ones in `crate::panel_avx2`);
/// missing rows of a last panel are zero.
pub(crate) struct Panel<const R: usize, const V: usize> {
    /// Per 256 elements, 64 vectors: vector `w` holds quants `4w..4w + 4`
    /// of each row (row `r` at bytes `4r..4r + 4`), unsigned.
    pub q: Vec<[u8; V]>,
    /// K-quants, per block and scale group: the rows' group scales.
    pub sc: Vec<[i32; R]>,
    /// K-quants, per block, 8 pairs of 16-element groups: the rows'
    /// multipliers of the activation's group sums as i16 pairs (`KBlock::mv`).
    pub mv: Vec<[i32; R]>,
    /// Per block: `d` and `dmin` of the rows (`m` for Q4_1 / Q5_1).
    pub d: Vec<[f32; R]>,
    pub dmin: Vec<[f32; R]>,
    /// K-quants: what `Σ mv · bsum` is, mins (0) or the quants' offset
    /// (Q6_K: 32). 32-element types: the quants' offset.
    pub off: i32,
    /// K-quants: elements per scale group.
    pub group_len: usize,
    /// Interleaved rows only (`fill`'s `x8`): block b of every row put
    /// back in the file's layout, `R` blocks of at most `QK_K` bytes;
    /// empty until then.
    x8_blocks: Vec<u8>,
}

/// What a level supplies to fill a panel: its unpacking of one block (the
/// same at every level, `int8_kernels!`'s `unpack_legacy` / `unpack_k`)
/// and its transpose of the rows' unpacked elements into vectors. An
/// implementation exists only where its level was verified, so its safe
/// methods may run that level's code.
pub(crate) trait Unpacker<const R: usize, const V: usize> {
    /// One 32-element block's quants into `u`, as `q + legacy_off`; `d`
    /// and `m`.
    fn legacy(&self, wty: GgmlType, bytes: &[u8], u: &mut [u8; QK32]) -> (f32, f32);
    /// The offset of `legacy`'s quants, which the panel takes back off as
    /// `off · Σy` ([`legacy_off`]; the AVX2 level leaves Q8_0's and
    /// IQ4_NL's values signed, 0).
    fn legacy_off(&self, wty: GgmlType) -> i32 {
        legacy_off(wty)
    }
    /// One K block's unsigned quants into `u`, and the rest of it.
    fn k(&self, wty: GgmlType, bytes: &[u8], u: &mut [u8; QK_K]) -> crate::avx2_q8::KParts;
    /// The 256 elements `u` of each row into the 64 vectors `q`.
    fn store(&self, q: &mut [[u8; V]], u: &[[u8; QK_K]; R]);
    /// Whether this level unpacks 32-element blocks of `wty` straight
    /// from the interleaved layout ([`Unpacker::legacy_x8`]); elsewhere
    /// `fill` puts the rows back in the file's layout first.
    fn unpacks_x8(&self, wty: GgmlType) -> bool {
        let _ = wty;
        false
    }
    /// Whether this level unpacks K blocks of `wty` straight from the
    /// interleaved layout ([`Unpacker::k_x8`]).
    fn unpacks_k_x8(&self, wty: GgmlType) -> bool {
        let _ = wty;
        false
    }
    /// Rows `8g..8g + 8` of one K block into the block's 64 vectors `q`,
    /// group scales `sc`, multipliers `mv`, `d` and `dmin`, from
    /// `group_block` (that block of group g); returns the offset of `mv`
    /// (`KParts::off`). Only where `unpacks_k_x8`.
    #[allow(clippy::too_many_arguments)]
    fn k_x8(
        &self,
        wty: GgmlType,
        group_block: &[u8],
        g: usize,
        q: &mut [[u8; V]],
        sc: &mut [[i32; R]],
        mv: &mut [[i32; R]],
        d: &mut [f32; R],
        dmin: &mut [f32; R],
    ) -> i32 {
        let _ = (wty, group_block, g, q, sc, mv, d, dmin);
        unreachable!("k_x8 where unpacks_k_x8 is false")
    }
    /// Rows `8g..8g + 8` of one 32-element block into its eight vectors
    /// `q` (vector k: elements 4k..4k + 4) and their `d` and `m`, from
    /// `group_block` (that block of group g, `crate::x8`). Only where
    /// `unpacks_x8`.
    fn legacy_x8(
        &self,
        wty: GgmlType,
        group_block: &[u8],
        g: usize,
        q: &mut [[u8; V]],
        d: &mut [f32; R],
        m: &mut [f32; R],
    ) {
        let _ = (wty, group_block, g, q, d, m);
        unreachable!("legacy_x8 where unpacks_x8 is false")
    }
}

impl<const R: usize, const V: usize> Panel<R, V> {
    pub(crate) fn new(wty: GgmlType, nb: usize) -> Self {
        let (chunks, groups) = if is_k(wty) { (nb, QK_K / group_len(wty)) } else { (nb.div_ceil(8), 0) };
        Panel {
            q: vec![[0; V]; 64 * chunks],
            sc: vec![[0; R]; groups * nb],
            mv: vec![[0; R]; if is_k(wty) { 8 * nb } else { 0 }],
            d: vec![[0.0; R]; nb],
            dmin: vec![[0.0; R]; nb],
            off: legacy_off(wty),
            group_len: group_len(wty),
            x8_blocks: Vec::new(),
        }
    }

    /// Unpacks `rows` (at most `R` weight rows of `rb` bytes) through
    /// `lv`. K-quants a block of each row at a time, with its scales,
    /// multipliers, `d` and `dmin`; the 32-element types eight blocks of
    /// each row at a time (blocks past the row's end stay zero).
    ///
    /// `x8`: the rows are whole groups of eight stored interleaved
    /// (`crate::x8`), and this CPU's level. Where the level unpacks the
    /// type from that layout itself (`Unpacker::legacy_x8` for the
    /// 32-element types, `Unpacker::k_x8` for the K types: their words are
    /// the panel's vectors) it does, a group block at a time; else block b
    /// of each group (eight blocks of a 32-element type) goes back to the
    /// file's layout into a buffer of its own just before it is unpacked (a
    /// few KiB, in L1), so that interleaved weights cost the panels no more
    /// than a transpose. Straight from the layout the panels are faster
    /// than from the file's (`x8_bw 2 30 2048 TYPE 16` on the Xeon of stop
    /// 47, GB/s, file's layout against interleaved: AVX-512 Q4_K 4.8
    /// against 6.0, Q6_K 6.1 against 7.4; AVX2 Q4_K 3.4 against 4.0, Q2_K
    /// 1.7 against 2.4; level at 128 rows).
    #[inline(always)]
    pub(crate) fn fill(
        &mut self,
        wty: GgmlType,
        rows: &[u8],
        rb: usize,
        lv: &impl Unpacker<R, V>,
        x8: Option<crate::dispatch::Verified>,
    ) {
        let (ts, nrows) = (wty.type_size(), rows.len() / rb);
        let nb = rb / ts;
        if nrows < R {
            self.sc.iter_mut().for_each(|v| v.fill(0));
            self.mv.iter_mut().for_each(|v| v.fill(0));
            self.d.iter_mut().for_each(|v| v.fill(0.0));
            self.dmin.iter_mut().for_each(|v| v.fill(0.0));
        }
        let block = |r: usize, b: usize| &rows[r * rb + b * ts..r * rb + (b + 1) * ts];
        let mut u = [[0u8; QK_K]; R];
        let g8 = crate::x8::ROWS;
        if x8.is_some() && self.x8_blocks.is_empty() {
            // A K-quant block of each row, or eight blocks of a 32-element
            // type (at most 8 · 34 bytes).
            self.x8_blocks = vec![0; R * 2 * QK_K];
        }
        if is_k(wty) {
            let groups = QK_K / self.group_len;
            // Straight from the interleaved layout where the level can.
            let direct = x8.is_some() && lv.unpacks_k_x8(wty);
            for b in 0..nb {
                if direct {
                    let q = &mut self.q[64 * b..64 * (b + 1)];
                    for g in 0..nrows / g8 {
                        self.off = lv.k_x8(
                            wty,
                            &rows[g * g8 * rb + b * g8 * ts..][..g8 * ts],
                            g,
                            q,
                            &mut self.sc[groups * b..groups * (b + 1)],
                            &mut self.mv[8 * b..8 * (b + 1)],
                            &mut self.d[b],
                            &mut self.dmin[b],
                        );
                    }
                    // The groups past a last panel's rows: zero quants (their
                    // scales, `d` and `dmin` were zeroed above).
                    if nrows < R {
                        zero_groups(q, nrows / g8);
                    }
                    continue;
                }
                if let Some(v) = x8 {
                    for g in 0..nrows / g8 {
                        let src = &rows[g * g8 * rb + b * g8 * ts..g * g8 * rb + (b + 1) * g8 * ts];
                        crate::x8::to_file_layout(v, wty, ts, src, &mut self.x8_blocks[g * g8 * ts..(g + 1) * g8 * ts]);
                    }
                }
                for (r, ur) in u.iter_mut().enumerate().take(nrows) {
                    let bytes = match x8 {
                        Some(_) => &self.x8_blocks[r * ts..(r + 1) * ts],
                        None => block(r, b),
                    };
                    let k = lv.k(wty, bytes, ur);
                    for (dst, &v) in self.mv[8 * b..8 * (b + 1)].iter_mut().zip(&k.mv) {
                        dst[r] = v;
                    }
                    for (dst, &v) in self.sc[groups * b..groups * (b + 1)].iter_mut().zip(&k.sc) {
                        dst[r] = v;
                    }
                    (self.d[b][r], self.dmin[b][r], self.off) = (k.d, k.dmin, k.off);
                }
                lv.store(&mut self.q[64 * b..64 * (b + 1)], &u);
            }
        } else {
            self.off = lv.legacy_off(wty);
            // Straight from the interleaved layout where the level can: its
            // words are already the panel's vectors, eight rows at a time.
            let direct = x8.is_some() && lv.unpacks_x8(wty);
            for c in 0..nb.div_ceil(8) {
                let blocks = 8 * c..(8 * c + 8).min(nb);
                let n = blocks.len();
                if direct {
                    let q = &mut self.q[64 * c..64 * (c + 1)];
                    q[8 * n..].iter_mut().for_each(|v| *v = [0; V]);
                    for (k, b) in blocks.enumerate() {
                        let qk = &mut q[8 * k..8 * k + 8];
                        for g in 0..nrows / g8 {
                            let at = &rows[g * g8 * rb + b * g8 * ts..][..g8 * ts];
                            lv.legacy_x8(wty, at, g, qk, &mut self.d[b], &mut self.dmin[b]);
                        }
                        if nrows < R {
                            zero_groups(qk, nrows / g8);
                        }
                    }
                    continue;
                }
                if n < 8 {
                    u = [[0u8; QK_K]; R];
                }
                if let Some(v) = x8 {
                    // Blocks 8c.. of each group, back in the file's layout
                    // as rows of `n` blocks.
                    for g in 0..nrows / g8 {
                        let src = &rows[g * g8 * rb + 8 * c * g8 * ts..g * g8 * rb + (8 * c + n) * g8 * ts];
                        let dst = &mut self.x8_blocks[g * g8 * n * ts..(g + 1) * g8 * n * ts];
                        crate::x8::to_file_layout(v, wty, n * ts, src, dst);
                    }
                }
                for (r, ur) in u.iter_mut().enumerate().take(nrows) {
                    for (k, b) in blocks.clone().enumerate() {
                        let uk: &mut [u8; QK32] = (&mut ur[QK32 * k..QK32 * (k + 1)]).try_into().unwrap();
                        let bytes = match x8 {
                            Some(_) => &self.x8_blocks[(r * n + k) * ts..(r * n + k + 1) * ts],
                            None => block(r, b),
                        };
                        (self.d[b][r], self.dmin[b][r]) = lv.legacy(wty, bytes, uk);
                    }
                }
                lv.store(&mut self.q[64 * c..64 * (c + 1)], &u);
            }
        }
    }
}

/// Zeros the bytes of groups `from..` (eight rows each, 32 bytes of every
/// vector) of the vectors `q`: the groups past a last panel's rows.
fn zero_groups<const V: usize>(q: &mut [[u8; V]], from: usize) {
    for v in q.iter_mut() {
        v[32 * from..].fill(0);
    }
}

/// This level's `Unpacker`; made only in [`matmul`], whose caller vouches
/// for the VNNI level.
struct Vnni(());

impl Unpacker<ROWS, 64> for Vnni {
    #[inline(always)]
    fn legacy(&self, wty: GgmlType, bytes: &[u8], u: &mut [u8; QK32]) -> (f32, f32) {
        // SAFETY: a `Vnni` exists only at the VNNI level; `bytes` is one block.
        unsafe { crate::avx512_q8::unpack_legacy(wty, bytes, u) }
    }

    #[inline(always)]
    fn k(&self, wty: GgmlType, bytes: &[u8], u: &mut [u8; QK_K]) -> crate::avx2_q8::KParts {
        // SAFETY: as `legacy`.
        unsafe {
            if wty.is_iquant() {
                crate::iq::avx512::unpack_k(wty, bytes, u)
            } else {
                crate::avx512_q8::unpack_k(wty, bytes, u)
            }
        }
    }

    fn store(&self, q: &mut [[u8; 64]], u: &[[u8; QK_K]; ROWS]) {
        // SAFETY: as `legacy`.
        unsafe { store_transposed(q, u) }
    }

    fn unpacks_x8(&self, wty: GgmlType) -> bool {
        matches!(wty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL)
    }

    fn unpacks_k_x8(&self, wty: GgmlType) -> bool {
        crate::rows8::avx2::unpacks_k_x8(wty)
    }

    fn k_x8(
        &self,
        wty: GgmlType,
        at: &[u8],
        g: usize,
        q: &mut [[u8; 64]],
        sc: &mut [[i32; ROWS]],
        mv: &mut [[i32; ROWS]],
        d: &mut [f32; ROWS],
        dmin: &mut [f32; ROWS],
    ) -> i32 {
        // IQ4_XS's values unsigned, plus this level's panel offset, as
        // `iq::avx512::unpack_k` gives them.
        let iq4_off = crate::iq::avx512::panel_offset(GgmlType::IQ4_XS).unwrap_or(0);
        // SAFETY: a `Vnni` exists only at the VNNI level, which has AVX2;
        // `at` is one group block (`fill`), which passes one block's
        // vectors, scale groups and multipliers.
        unsafe { crate::rows8::avx2::k_x8_unpacked(wty, at, g, iq4_off, q, sc, mv, d, dmin) }
    }

    fn legacy_x8(
        &self,
        wty: GgmlType,
        at: &[u8],
        g: usize,
        q: &mut [[u8; 64]],
        d: &mut [f32; ROWS],
        m: &mut [f32; ROWS],
    ) {
        // SAFETY: a `Vnni` exists only at the VNNI level; `at` is one
        // group block (`fill`).
        unsafe { unpack_x8(wty, at, g, q, d, m) }
    }
}

/// `Vnni::legacy_x8` of a group block `at`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_x8(wty: GgmlType, at: &[u8], g: usize, q: &mut [[u8; 64]], d: &mut [f32; ROWS], m: &mut [f32; ROWS]) {
    // SAFETY: this function's features (the caller's level); `at` is one
    // group block; each store is 32 bytes of 64, or 8 f32 of 16.
    unsafe {
        let (u, dv, mv) = crate::rows8::legacy_x8_unpacked(wty, at);
        for (v, uk) in q.iter_mut().zip(u) {
            _mm256_storeu_si256(v[32 * g..32 * g + 32].as_mut_ptr().cast(), uk);
        }
        _mm256_storeu_ps(d[8 * g..8 * g + 8].as_mut_ptr(), dv);
        _mm256_storeu_ps(m[8 * g..8 * g + 8].as_mut_ptr(), mv);
    }
}

/// The 256 unpacked elements `u` of each row into the 64 vectors `q`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_transposed(q: &mut [[u8; 64]], u: &[[u8; QK_K]; ROWS]) {
    for quarter in 0..4 {
        // SAFETY: 64 bytes of each row's 256.
        let v: [__m512i; ROWS] =
            core::array::from_fn(|r| unsafe { _mm512_loadu_si512(u[r].as_ptr().add(64 * quarter).cast()) });
        for (k, t) in transpose_16x16(v).into_iter().enumerate() {
            // SAFETY: one 64-byte vector of the panel.
            unsafe { _mm512_storeu_si512(q[16 * quarter + k].as_mut_ptr().cast(), t) };
        }
    }
}

/// The offset of a 32-element type's unsigned quants (0 for the K-quants,
/// whose offset `unpack_k` gives).
pub(crate) fn legacy_off(wty: GgmlType) -> i32 {
    match wty {
        GgmlType::Q4_0 => crate::qdot::Q4_0_OFF,
        GgmlType::Q5_0 => crate::qdot::Q5_0_OFF,
        GgmlType::Q8_0 | GgmlType::IQ4_NL => crate::avx512_q8::Q8_0_OFF,
        _ => 0,
    }
}

/// The 16×16 transpose of 32-bit words: word `r` of result `c` is word `c`
/// of `v[r]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose_16x16(v: [__m512i; 16]) -> [__m512i; 16] {
    // Pairs of rows interleaved by words, then pairs of pairs by 64 bits:
    // 128-bit lane L of u[4i + k] holds rows 4i..4i+4 of word 4L + k.
    let t: [__m512i; 16] = core::array::from_fn(|x| {
        let (a, b) = (v[x & !1], v[x | 1]);
        if x % 2 == 0 {
            _mm512_unpacklo_epi32(a, b)
        } else {
            _mm512_unpackhi_epi32(a, b)
        }
    });
    let u: [__m512i; 16] = core::array::from_fn(|x| {
        let (i, k) = (x / 4, x % 4);
        let (a, b) = (t[4 * i + k / 2], t[4 * i + k / 2 + 2]);
        if k % 2 == 0 {
            _mm512_unpacklo_epi64(a, b)
        } else {
            _mm512_unpackhi_epi64(a, b)
        }
    });
    // Then the 128-bit lanes gathered across the four row groups: word
    // c = 4L + k is lane L of u[k], u[4 + k], u[8 + k], u[12 + k].
    let mut out = [_mm512_setzero_si512(); 16];
    for k in 0..4 {
        let even01 = _mm512_shuffle_i32x4::<0x88>(u[k], u[4 + k]);
        let odd01 = _mm512_shuffle_i32x4::<0xDD>(u[k], u[4 + k]);
        let even23 = _mm512_shuffle_i32x4::<0x88>(u[8 + k], u[12 + k]);
        let odd23 = _mm512_shuffle_i32x4::<0xDD>(u[8 + k], u[12 + k]);
        out[k] = _mm512_shuffle_i32x4::<0x88>(even01, even23);
        out[8 + k] = _mm512_shuffle_i32x4::<0xDD>(even01, even23);
        out[4 + k] = _mm512_shuffle_i32x4::<0x88>(odd01, odd23);
        out[12 + k] = _mm512_shuffle_i32x4::<0xDD>(odd01, odd23);
    }
    out
}

/// `out[i][r] = dot(weight row r of w, acts[i])` for every activation row
/// and every weight row of `w` (`rb` bytes each), bit-identical to
/// `vec_dot_q_ref`.
///
/// # Safety
/// The CPU must support the VNNI level; `wty` must be one `supports` takes
/// and every `acts[i]` a row of `vec_dot_type(wty)` of the weight rows' length.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn matmul(
    wty: GgmlType,
    layout: Layout,
    w: &[u8],
    rb: usize,
    acts: &[ActRow<'_>],
    out: &mut [&mut [f32]],
) {
    debug_assert!(supports(wty) && out.len() == acts.len());
    // SAFETY: the caller's contract, passed on.
    unsafe {
        if is_k(wty) {
            matmul_j::<J_K>(wty, layout, w, rb, acts, out)
        } else {
            matmul_j::<J_LEGACY>(wty, layout, w, rb, acts, out)
        }
    }
}

/// [`matmul`] with `JM` activation rows a call.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn matmul_j<const JM: usize>(
    wty: GgmlType,
    layout: Layout,
    w: &[u8],
    rb: usize,
    acts: &[ActRow<'_>],
    out: &mut [&mut [f32]],
) {
    let nb = rb / wty.type_size();
    // SAFETY (the closures): (caller) the VNNI level, and rows of `nb`
    // blocks of the activation type.
    drive::<ROWS, 64, JM>(
        wty,
        layout,
        w,
        rb,
        acts,
        out,
        &Vnni(()),
        |p, a| unsafe { dots::<JM>(wty, p, a, nb) },
        |p, a| {
            // Fewer than `JM` rows: one alone, else the next call size up
            // with the last row repeated. A call of one costs about three
            // quarters of a call of four (its multiply-adds wait on each
            // other's results), one of eight about two of four.
            let mut o = [[0f32; ROWS]; JM];
            let last = a.len() - 1;
            // SAFETY: as above.
            unsafe {
                if a.len() == 1 {
                    o[0] = dots::<1>(wty, p, &[a[0]], nb)[0];
                } else if a.len() <= 4 && JM > 4 {
                    o[..4].copy_from_slice(&dots::<4>(wty, p, &core::array::from_fn(|k| a[k.min(last)]), nb));
                } else {
                    o = dots::<JM>(wty, p, &core::array::from_fn(|k| a[k.min(last)]), nb);
                }
            }
            o
        },
    );
}

/// The panel loop of every level: each `R` rows of `w` (`rb` bytes each;
/// stored as `layout` says, whole groups of eight when interleaved)
/// unpacked into one panel
/// through `lv`, then met by the activation rows
/// `JM` at a time (`main`; the last `acts.len() % JM` by `rest`, whose
/// first that many results count), whose `R` outputs each (`[..rows]` of
/// a last, partial panel) go to `out[i][r0..]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive<const R: usize, const V: usize, const JM: usize>(
    wty: GgmlType,
    layout: Layout,
    w: &[u8],
    rb: usize,
    acts: &[ActRow<'_>],
    out: &mut [&mut [f32]],
    lv: &impl Unpacker<R, V>,
    main: impl Fn(&Panel<R, V>, &[ActRow<'_>; JM]) -> [[f32; R]; JM],
    rest: impl Fn(&Panel<R, V>, &[ActRow<'_>]) -> [[f32; R]; JM],
) {
    let mut panel = Panel::new(wty, rb / wty.type_size());
    let nrows = w.len() / rb;
    let x8 = (layout == Layout::X8).then(crate::dispatch::Verified::active);
    for r0 in (0..nrows).step_by(R) {
        let nv = R.min(nrows - r0);
        panel.fill(wty, &w[r0 * rb..(r0 + nv) * rb], rb, lv, x8);
        // The next panel's bytes into L2 while this one meets the
        // activation rows: `fill` reads a block of each of its rows in
        // turn, sixteen short streams that the hardware prefetcher did not
        // fetch ahead, and waited on memory for each row's first bytes (its
        // first loads held 43 % of the unpacking's samples). pp512 at two
        // threads on the Xeon, alternating with and without: the 6-layer
        // UD-IQ1_S V3 slice 42.0-43.9 -> 44.9-45.6 tok/s, V2-Lite-shaped
        // Q4_K_M 257-267 -> 279-280, the 2-layer V3 261 -> 265-271.
        let next = &w[((r0 + R) * rb).min(w.len())..((r0 + 2 * R) * rb).min(w.len())];
        for line in (0..next.len()).step_by(64) {
            // SAFETY: an address inside `next`; a prefetch never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(next.as_ptr().add(line).cast()) };
        }
        let put = |out: &mut [&mut [f32]], res: &[[f32; R]]| {
            for (o, v) in out.iter_mut().zip(res) {
                o[r0..r0 + nv].copy_from_slice(&v[..nv]);
            }
        };
        let whole = acts.len() / JM * JM;
        for i in (0..whole).step_by(JM) {
            put(&mut out[i..i + JM], &main(&panel, acts[i..i + JM].try_into().unwrap()));
        }
        if whole < acts.len() {
            put(&mut out[whole..], &rest(&panel, &acts[whole..])[..acts.len() - whole]);
        }
    }
}

/// The 16 outputs of each of `J` activation rows against one panel.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dots<const J: usize>(wty: GgmlType, p: &Panel<ROWS, 64>, a: &[ActRow<'_>; J], nb: usize) -> [[f32; ROWS]; J] {
    // SAFETY: (caller) as `matmul`.
    unsafe {
        if is_iq_k(wty) {
            // The power of two that the i-quants' integer form leaves out,
            // applied after the lanes are summed, as `vec_dot_q_ref` does.
            let f = crate::iq::post_scale(wty);
            panel_dots::<J>(p, a, nb).map(|o| o.map(|v| v * f))
        } else if is_k(wty) {
            panel_dots::<J>(p, a, nb)
        } else {
            legacy_dots::<J>(wty, p, a, nb)
        }
    }
}

/// The 16 outputs of each of `J` activation rows against one panel.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_dots<const J: usize>(p: &Panel<ROWS, 64>, a: &[ActRow<'_>; J], nb: usize) -> [[f32; ROWS]; J] {
    let gl = p.group_len;
    let groups = QK_K / gl;
    let steps = gl / 4;
    let zero = _mm512_setzero_ps();
    let zi = _mm512_setzero_si512();
    let with_min = p.off == 0;
    let offv = _mm512_set1_epi32(p.off);
    let mut lanes = [[zero; J]; 8];
    for b in 0..nb {
        let ys: [&[i8; QK_K]; J] = core::array::from_fn(|j| a[j].qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap());
        let bsums: [&[i16; 16]; J] = core::array::from_fn(|j| a[j].bsums[16 * b..16 * (b + 1)].try_into().unwrap());
        let mut is = [zi; J];
        for g in 0..groups {
            let mut dot = [zi; J];
            for t in 0..steps {
                let e = gl * g + 4 * t;
                // SAFETY: 64 bytes of the panel.
                let wv = unsafe { _mm512_loadu_si512(p.q[64 * b + e / 4].as_ptr().cast()) };
                for j in 0..J {
                    // SAFETY: bytes e..e + 4 of the block (e + 4 <= 256).
                    let y = unsafe { core::ptr::read_unaligned(ys[j].as_ptr().add(e).cast::<i32>()) };
                    dot[j] = _mm512_dpbusd_epi32(dot[j], wv, _mm512_set1_epi32(y));
                }
            }
            // SAFETY: 16 i32.
            let scv = unsafe { _mm512_loadu_si512(p.sc[groups * b + g].as_ptr().cast()) };
            for j in 0..J {
                is[j] = _mm512_add_epi32(is[j], _mm512_mullo_epi32(dot[j], scv));
            }
        }
        let mut ms = [zi; J];
        for q in 0..8 {
            // SAFETY: 16 i32.
            let mvv = unsafe { _mm512_loadu_si512(p.mv[8 * b + q].as_ptr().cast()) };
            for j in 0..J {
                // SAFETY: sums 2q and 2q + 1 of the block's 16, as one
                // little-endian i32 holding the pair.
                let pair = unsafe { core::ptr::read_unaligned(bsums[j].as_ptr().add(2 * q).cast::<i32>()) };
                ms[j] = _mm512_dpwssd_epi32(ms[j], mvv, _mm512_set1_epi32(pair));
            }
        }
        // SAFETY: 16 floats each.
        let (dv, dminv) = unsafe { (_mm512_loadu_ps(p.d[b].as_ptr()), _mm512_loadu_ps(p.dmin[b].as_ptr())) };
        for j in 0..J {
            let da = _mm512_set1_ps(a[j].d[b]);
            let t = if with_min {
                _mm512_sub_ps(
                    _mm512_mul_ps(_mm512_mul_ps(dv, da), _mm512_cvtepi32_ps(is[j])),
                    _mm512_mul_ps(_mm512_mul_ps(dminv, da), _mm512_cvtepi32_ps(ms[j])),
                )
            } else {
                let isum = _mm512_sub_epi32(is[j], _mm512_mullo_epi32(ms[j], offv));
                _mm512_mul_ps(_mm512_mul_ps(dv, da), _mm512_cvtepi32_ps(isum))
            };
            lanes[b % 8][j] = _mm512_add_ps(lanes[b % 8][j], t);
        }
    }
    core::array::from_fn(|j| {
        let mut o = [0f32; ROWS];
        // SAFETY: 16 floats.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), reduce_lanes(&lanes, j)) };
        o
    })
}

/// Lanes `lanes[0..8][j]` added as `qdot::reduce8` adds eight lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce_lanes<const J: usize>(lanes: &[[__m512; J]; 8], j: usize) -> __m512 {
    let l = |k: usize| lanes[k][j];
    _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(l(0), l(4)), _mm512_add_ps(l(2), l(6))),
        _mm512_add_ps(_mm512_add_ps(l(1), l(5)), _mm512_add_ps(l(3), l(7))),
    )
}

/// `panel_dots` for the 32-element types: per block, eight multiply-adds of
/// four bytes each, `off · Σy` subtracted, `(d · da) · isum` into lane
/// `b % 8`; Q4_1 / Q5_1 add `m · s` into lanes of their own, summed after.
///
/// The lanes go one after another (blocks `k, k + 8, …` for lane k, the
/// order in which the reference adds a lane's terms), so that a lane's
/// `J` accumulators stay in registers; taken block by block, the eight
/// lanes of four activation rows were 32 vectors, which lived on the stack
/// (a load and a store a term). The activation rows' fields are read
/// through pointers checked once here, not sliced per block.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn legacy_dots<const J: usize>(
    wty: GgmlType,
    p: &Panel<ROWS, 64>,
    a: &[ActRow<'_>; J],
    nb: usize,
) -> [[f32; ROWS]; J] {
    let with_min = matches!(wty, GgmlType::Q4_1 | GgmlType::Q5_1);
    assert!(p.q.len() >= 64 * nb.div_ceil(8) && p.d.len() >= nb && p.dmin.len() >= nb);
    for aj in a {
        assert!(aj.qs.len() >= QK32 * nb && aj.d.len() >= nb && aj.sums.len() >= nb);
        assert!(!with_min || aj.s.len() >= nb);
    }
    let ys: [*const i8; J] = core::array::from_fn(|j| a[j].qs.as_ptr());
    let das: [*const f32; J] = core::array::from_fn(|j| a[j].d.as_ptr());
    let sums: [*const i32; J] = core::array::from_fn(|j| a[j].sums.as_ptr());
    let ss: [*const f32; J] = core::array::from_fn(|j| a[j].s.as_ptr());
    let zero = _mm512_setzero_ps();
    let mut lanes = [[zero; J]; 8];
    let mut lanes_m = [[zero; J]; 8];
    for k in 0..8 {
        let mut acc = [zero; J];
        let mut acc_m = [zero; J];
        for b in (k..nb).step_by(8) {
            // Two chains of four multiply-adds a row, not one of eight: a
            // lane has only a few blocks, so their latency is not hidden.
            let mut dot2 = [[_mm512_setzero_si512(); 2]; J];
            for t in 0..8 {
                // SAFETY: vector t of block b, within the panel (checked).
                let wv = unsafe { _mm512_loadu_si512(p.q.as_ptr().add(64 * (b / 8) + 8 * k + t).cast()) };
                for j in 0..J {
                    // SAFETY: bytes 32b + 4t.. of activation row j (checked).
                    let y = unsafe { core::ptr::read_unaligned(ys[j].add(QK32 * b + 4 * t).cast::<i32>()) };
                    dot2[j][t % 2] = _mm512_dpbusd_epi32(dot2[j][t % 2], wv, _mm512_set1_epi32(y));
                }
            }
            let dot: [__m512i; J] = core::array::from_fn(|j| _mm512_add_epi32(dot2[j][0], dot2[j][1]));
            // SAFETY: block b's fields (checked); 16 floats each.
            let (dv, mv) = unsafe {
                (_mm512_loadu_ps(p.d.as_ptr().add(b).cast()), _mm512_loadu_ps(p.dmin.as_ptr().add(b).cast()))
            };
            for j in 0..J {
                // SAFETY: block b of row j's fields (checked).
                let (da, sum) = unsafe { (*das[j].add(b), *sums[j].add(b)) };
                let isum = if p.off != 0 { _mm512_sub_epi32(dot[j], _mm512_set1_epi32(p.off * sum)) } else { dot[j] };
                let t = _mm512_mul_ps(_mm512_mul_ps(dv, _mm512_set1_ps(da)), _mm512_cvtepi32_ps(isum));
                acc[j] = _mm512_add_ps(acc[j], t);
                if with_min {
                    // SAFETY: as above (`s` checked where `with_min`).
                    let s = unsafe { *ss[j].add(b) };
                    acc_m[j] = _mm512_add_ps(acc_m[j], _mm512_mul_ps(mv, _mm512_set1_ps(s)));
                }
            }
        }
        lanes[k] = acc;
        lanes_m[k] = acc_m;
    }
    core::array::from_fn(|j| {
        let mut s = reduce_lanes(&lanes, j);
        if with_min {
            s = _mm512_add_ps(s, reduce_lanes(&lanes_m, j));
        }
        let mut o = [0f32; ROWS];
        // SAFETY: 16 floats.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), s) };
        o
    })
}
