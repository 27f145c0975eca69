//! AVX-512 f32 kernels (x86-64 only): the attention scores and weighted
//! sum, and the float-weight GEMM of prefill and of the vision models (see
//! [`dot_block`]).
//!
//! Same contract as the AVX2 version in `avx2.rs` and the same arithmetic
//! per output element (`o += w[p] * v[p]`, a multiply then an add, in
//! position order), so the results are bit-identical at every level; only
//! the blocking differs. With 32 registers, six rows' accumulators for 64
//! columns stay in registers while each value chunk is loaded (and widened
//! from f16) once for the six rows: about 2.5× fewer instructions per
//! multiply-add than eight rows × eight columns in 16 AVX2 registers.
//!
//! Every function is an `unsafe fn` with the target features below; callers
//! must hold a `dispatch::Verified` at an AVX-512 level and pass the shapes
//! the public entry points check.

use core::arch::x86_64::*;

/// Sixteen cached values at a time, widened to f32 (eight, one value and
/// the prefetch as at the AVX2 level).
trait Rows16: crate::avx2::Rows {
    /// Values `at..at + 16`.
    ///
    /// # Safety
    /// `at + 16 <= len`; the CPU must support AVX-512F.
    unsafe fn load16(self, at: usize) -> __m512;
}

impl Rows16 for &[f32] {
    #[inline(always)]
    unsafe fn load16(self, at: usize) -> __m512 {
        debug_assert!(at + 16 <= self.len());
        // SAFETY: (caller) sixteen floats from `at` are in bounds.
        unsafe { _mm512_loadu_ps(self.as_ptr().add(at)) }
    }
}

impl Rows16 for &[u16] {
    #[inline(always)]
    unsafe fn load16(self, at: usize) -> __m512 {
        debug_assert!(at + 16 <= self.len());
        // SAFETY: (caller) sixteen halves from `at` are in bounds.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(self.as_ptr().add(at).cast())) }
    }
}

/// See [`crate::attn::attn_scores`] (shapes checked by the caller): the
/// scores of [`crate::avx2::attn_scores`], bit for bit (each one
/// [`crate::avx2::dot_f32`]'s four 8-lane accumulators over 32-element
/// steps, its sum of them and its tail, times `scale`), computed for four
/// query rows and six keys at once in 512-bit registers ([`dots`]).
///
/// Six keys at a time are widened to f32 into an aligned scratch that stays
/// in L1 while every query row meets them, and the query rows are copied
/// once into aligned rows too (stop 54). Until then the kernel ran four
/// rows by three keys, widening each key again for every four rows, with
/// both operands' 512-bit loads straddling lines: one thread's scores of
/// V3's 128 heads against 2048 f16 keys (a quick bench on the Xeon of stop
/// 54) 67 → 93–103 GFLOP/s, and a V3 layer's whole decode attention at depth
/// 4096 (`attn_decode 4096 128`, two threads) 10.5–10.7 → 9.0–9.5 ms.
///
/// # Safety
/// The CPU must support AVX-512F/VL and AVX2/FMA/F16C.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attn_scores(
    q: &[f32],
    dim: usize,
    n: usize,
    n_seen: usize,
    keys: crate::attn::KvSlice<'_>,
    stride: usize,
    scale: f32,
    lens: &[usize],
    out: &mut [f32],
) {
    // SAFETY: (caller) AVX-512 with AVX2 and F16C; the shapes checked.
    unsafe {
        crate::attn::score_tiles::<SCORE_ROWS, SCORE_KEYS>(q, dim, n, n_seen, keys, stride, scale, lens, out, |q, k| {
            dots(q, k, dim)
        })
    }
}

/// Query rows and keys [`attn_scores`] takes at a time: 4 × 6 dots, one
/// accumulator each in a pass (see [`dots`]), are 24 of the 32 registers.
const SCORE_ROWS: usize = 4;
const SCORE_KEYS: usize = 6;

/// One pass of [`dots`]: for each row and key, the accumulator of
/// elements `off..off + 16` of every 32-element step (`off` 0: the first
/// two of [`crate::avx2::dot_f32`]'s 8-lane accumulators side by side;
/// 16: the last two).
///
/// # Safety
/// The CPU must support AVX-512F; every row holds `dim` floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline(never)]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed [row][key]
unsafe fn dots_pass<const RR: usize, const KK: usize>(
    q: [&[f32]; RR],
    k: [&[f32]; KK],
    dim: usize,
    off: usize,
    out: &mut [[__m512; KK]; RR],
) {
    let mut acc = [[_mm512_setzero_ps(); KK]; RR];
    let mut i = 0;
    // SAFETY (every load): `i + off + 16 <= i + 32 <= dim`, in bounds of
    // every row.
    unsafe {
        while i + 32 <= dim {
            let kv: [__m512; KK] = core::array::from_fn(|j| _mm512_loadu_ps(k[j].as_ptr().add(i + off)));
            for r in 0..RR {
                let a = _mm512_loadu_ps(q[r].as_ptr().add(i + off));
                for j in 0..KK {
                    acc[r][j] = _mm512_fmadd_ps(a, kv[j], acc[r][j]);
                }
            }
            i += 32;
        }
    }
    *out = acc;
}

/// `dot_f32(q[r], k[j])` for `RR` rows and `KK` keys (widened to f32), each
/// with [`crate::avx2::dot_f32`]'s operations in its order: the first two
/// of its accumulators in one pass over the rows ([`dots_pass`]), the last
/// two in a second, so that a pass holds one register a dot and each
/// query vector loaded serves `KK` keys.
///
/// # Safety
/// The CPU must support AVX-512F/VL and AVX2/FMA/F16C; each row holds
/// `dim` floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed [row][key]
unsafe fn dots<const RR: usize, const KK: usize>(q: [&[f32]; RR], k: [&[f32]; KK], dim: usize) -> [[f32; KK]; RR] {
    let (mut lo, mut hi) = ([[_mm512_setzero_ps(); KK]; RR], [[_mm512_setzero_ps(); KK]; RR]);
    // SAFETY: (caller) the rows hold `dim` floats; this function's features.
    unsafe {
        dots_pass(q, k, dim, 0, &mut lo);
        dots_pass(q, k, dim, 16, &mut hi);
    }
    let body = dim / 32 * 32;
    let mut out = [[0f32; KK]; RR];
    for r in 0..RR {
        for j in 0..KK {
            let half = |v: __m512, h: usize| -> __m256 {
                let d = _mm512_castps_pd(v);
                _mm256_castpd_ps(if h == 0 { _mm512_castpd512_pd256(d) } else { _mm512_extractf64x4_pd::<1>(d) })
            };
            let (mut a0, a1, a2, a3) = (half(lo[r][j], 0), half(lo[r][j], 1), half(hi[r][j], 0), half(hi[r][j], 1));
            let mut t = body;
            // SAFETY: `t + 8 <= dim`, in bounds as above.
            while t + 8 <= dim {
                unsafe {
                    a0 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(q[r].as_ptr().add(t)),
                        _mm256_loadu_ps(k[j].as_ptr().add(t)),
                        a0,
                    )
                };
                t += 8;
            }
            let v = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
            // SAFETY: this function's features include AVX2.
            let mut sum = unsafe { crate::avx2::hsum(v) };
            for (x, y) in q[r][t..dim].iter().zip(&k[j][t..dim]) {
                sum += x * y;
            }
            out[r][j] = sum;
        }
    }
    out
}

/// See [`crate::attn::attn_weighted_sum`] (shapes checked by the caller).
/// Rows and 16-column chunks in register blocks (see [`weighted_sum`]); a
/// tail of `dim % 16` columns goes to the AVX2 kernel's column loop.
///
/// # Safety
/// The CPU must support AVX-512F and AVX2/FMA/F16C.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attn_weighted_sum(
    w: &[f32],
    n: usize,
    values: crate::attn::KvSlice<'_>,
    stride: usize,
    dim: usize,
    lens: &[usize],
    out: &mut [f32],
) {
    let wide = dim / 16 * 16;
    match values {
        crate::attn::KvSlice::F32(v) => weighted_sum(w, n, v, stride, dim, 0..wide, lens, out),
        crate::attn::KvSlice::F16(v) => weighted_sum(w, n, v, stride, dim, 0..wide, lens, out),
    }
    if wide < dim {
        // SAFETY: (caller) AVX2, FMA and F16C; same shapes.
        unsafe { crate::avx2::attn_weighted_sum_cols(w, n, values, stride, dim, wide, lens, out) };
    }
}

/// Positions a pass of [`weighted_sum`] takes at a time: their value rows
/// stay in L2 while every block of rows meets them (256 rows of 512 f16
/// values are 256 KiB), and a block's weights, position-major, in L1.
const WSUM_POSITIONS: usize = 256;

// `weighted_sum`: columns `0..wide` (a multiple of 16) of the weighted sums.
//
// The sums run a block of positions at a time ([`WSUM_POSITIONS`]); in
// each, the rows go in blocks of 16, 12, 8, 6, 4, 2 or 1 and the columns
// in chunks of 16 × (1 to 4: at most 24 accumulators), one accumulator a
// row and chunk,
// loaded from `out` and stored back between position blocks (exact: the
// same chain of multiplies and adds in position order). A block's weights
// are first copied position-major, the block's rows of one position side
// by side: row-major, the rows of a long cache lie a multiple of 4 KiB
// apart, and sixteen of them fell in one L1 set.
//
// Until stop 41 every block of six rows passed over all the positions, so
// the values came from L3 again for each: V2-Lite's MLA at decode (16
// heads, depth 4096) read its 4 MB of values three times a layer, V3's
// (128 heads) 22 times.
crate::avx2::wsum_tile!(
    weighted_sum,
    Block,
    Rows16,
    load16,
    __m512,
    16,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_add_ps,
    _mm512_mul_ps,
    [16.. => 16, 1; 12..=15 => 12, 2; 8..=11 => 8, 2; 6 | 7 => 6, 4; 4 | 5 => 4, 4; 2 | 3 => 2, 4; _ => 1, 4;]
);

/// A weight row of 16-bit or 32-bit floats, widened to f32 in registers
/// (exactly: f16 and bf16 are subsets of f32).
trait FloatRow: Copy {
    /// Bytes per value.
    const BYTES: usize;
    /// Values `at..at + 16` of the row starting at `p`.
    ///
    /// # Safety
    /// The 16 values are in bounds; the CPU supports AVX-512F and F16C.
    unsafe fn load16(p: *const u8, at: usize) -> __m512;
    /// Values `at..at + 8`.
    ///
    /// # Safety
    /// As for [`FloatRow::load16`].
    unsafe fn load8(p: *const u8, at: usize) -> __m256;
    /// Value `at` of `row`.
    fn get(row: &[u8], at: usize) -> f32;
}

#[derive(Clone, Copy)]
struct F32Row;
#[derive(Clone, Copy)]
struct F16Row;
#[derive(Clone, Copy)]
struct Bf16Row;

impl FloatRow for F32Row {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load16(p: *const u8, at: usize) -> __m512 {
        // SAFETY: (caller) in bounds; loadu has no alignment requirement.
        unsafe { _mm512_loadu_ps(p.add(4 * at).cast()) }
    }
    #[inline(always)]
    unsafe fn load8(p: *const u8, at: usize) -> __m256 {
        // SAFETY: as above.
        unsafe { _mm256_loadu_ps(p.add(4 * at).cast()) }
    }
    fn get(row: &[u8], at: usize) -> f32 {
        f32::from_le_bytes(row[4 * at..4 * at + 4].try_into().expect("4 bytes"))
    }
}

impl FloatRow for F16Row {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8, at: usize) -> __m512 {
        // SAFETY: (caller) in bounds and F16C/AVX-512F present.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * at).cast())) }
    }
    #[inline(always)]
    unsafe fn load8(p: *const u8, at: usize) -> __m256 {
        // SAFETY: as above.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * at).cast())) }
    }
    fn get(row: &[u8], at: usize) -> f32 {
        half::f16::from_le_bytes([row[2 * at], row[2 * at + 1]]).to_f32()
    }
}

impl FloatRow for Bf16Row {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8, at: usize) -> __m512 {
        // SAFETY: (caller) in bounds; a bf16 is the high half of its f32.
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.add(2 * at).cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h))
        }
    }
    #[inline(always)]
    unsafe fn load8(p: *const u8, at: usize) -> __m256 {
        // SAFETY: as above.
        unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(2 * at).cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
        }
    }
    fn get(row: &[u8], at: usize) -> f32 {
        half::bf16::from_le_bytes([row[2 * at], row[2 * at + 1]]).to_f32()
    }
}

/// Activation rows one call of [`dot_block`] takes: 16 accumulators, 4
/// widened weight chunks and 1 activation chunk fit the 32 registers with
/// room to spare. Six (24 accumulators) looked better on paper, but the
/// compiler spilled accumulators to the stack every step: bf16
/// [599, 2048] x [2048, 2048] at 130 GFLOPS with six, 180 with four (2
/// threads, Zen 4).
const XR: usize = 4;

/// Bytes of activation rows [`rows_float_gather`] keeps for each pass over
/// the weights.
const X_BLOCK_BYTES: usize = 256 << 10;

/// `avx2::dot4` of `K` weight rows (`rows`, raw bytes of `W`; four in the
/// GEMM) with each of `R` activation rows ([`XR`], or fewer for the last
/// ones), the same bits for every pair: one register per pair
/// holds dot4's two 8-lane accumulators (lanes 0-7 its `lo`: elements
/// `16t + j`; lanes 8-15 its `hi`: `16t + 8 + j`), fed by the same fused
/// multiply-adds in the same order; the epilogue is dot4's (a last 8-chunk
/// into `lo`, `hsum(lo + hi)`, then the tail one product at a time). Each
/// weight chunk is widened once for all `R` rows and each activation
/// chunk loaded once for four: 16 FMAs per 8 loads at `R` = 4, where dot4
/// has 8 per 10.
///
/// Always inlined into its callers, which enable AVX-512F, AVX2, FMA and
/// F16C (as a separate function it ran at half the speed).
#[allow(clippy::needless_range_loop)] // r and k index several arrays at once
#[inline(always)]
unsafe fn dot_block<W: FloatRow, const K: usize, const R: usize>(rows: [&[u8]; K], xs: [&[f32]; R]) -> [[f32; K]; R] {
    let n = xs[0].len();
    let wp = rows.map(|r| {
        assert!(r.len() >= n * W::BYTES, "dot_block: a weight row is shorter than x");
        r.as_ptr()
    });
    let xp = xs.map(|x| {
        assert!(x.len() == n, "dot_block: activation rows of different lengths");
        x.as_ptr()
    });
    let mut acc = [[_mm512_setzero_ps(); K]; R];
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, within every row (asserted above).
        let w: [__m512; K] = std::array::from_fn(|k| unsafe { W::load16(wp[k], i) });
        for r in 0..R {
            // SAFETY: as above.
            let xv = unsafe { _mm512_loadu_ps(xp[r].add(i)) };
            for k in 0..K {
                acc[r][k] = _mm512_fmadd_ps(w[k], xv, acc[r][k]);
            }
        }
        i += 16;
    }
    let eight = i + 8 <= n;
    // Two passes, so that the first (constant trip counts, no inner loop)
    // unrolls and `acc` stays in registers through the main loop: with one
    // pass the compiler kept `acc` in memory too and stored all 24
    // accumulators every step (bf16 at 80 instead of 150 GFLOPS, Zen 4).
    let mut halves = [[_mm256_setzero_ps(); K]; R];
    for r in 0..R {
        for k in 0..K {
            let a = acc[r][k];
            let mut lo = _mm512_castps512_ps256(a);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
            if eight {
                // SAFETY: i + 8 <= n.
                lo = unsafe { _mm256_fmadd_ps(W::load8(wp[k], i), _mm256_loadu_ps(xp[r].add(i)), lo) };
            }
            halves[r][k] = _mm256_add_ps(lo, hi);
        }
    }
    let from = if eight { i + 8 } else { i };
    let mut out = [[0f32; K]; R];
    for r in 0..R {
        for k in 0..K {
            // SAFETY: AVX2 is enabled here.
            let mut sum = unsafe { crate::avx2::hsum(halves[r][k]) };
            for j in from..n {
                sum += W::get(rows[k], j) * xs[r][j];
            }
            out[r][k] = sum;
        }
    }
    out
}

/// `matmul::matmul_rows` for float weights at the AVX-512 level, the same
/// bits: [`XR`] activation rows at a time (copied into a small buffer)
/// against every weight row of the share, four at a time (a short last
/// group repeats a row whose results are dropped), by [`dot_block`]; the last
/// rows (fewer than [`XR`]) as one narrower block. `out[i][r]` receives weight row `r` times `x[i]`.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C; `ty` is F32, F16 or
/// BF16 and `w` holds whole rows of `rb` bytes of `cols` values.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(crate) unsafe fn matmul_rows_float(
    ty: crate::GgmlType,
    w: &[u8],
    rb: usize,
    cols: usize,
    x: &[f32],
    out: Vec<&mut [f32]>,
) {
    // Copies of the rows read faster than the rows in place (whose stride is
    // often a multiple of 4 KiB): 150 against 210 GFLOPS at
    // [576, 4096] x [1024, 4096] f32, 2 threads, Zen 4.
    let x_row = |i: usize, o: &mut [f32]| o.copy_from_slice(&x[i * cols..][..cols]);
    // SAFETY: (caller) as documented.
    unsafe { matmul_rows_float_gather(ty, w, rb, cols, &x_row, out) }
}

/// [`matmul_rows_float`] with activation rows made on demand by
/// `x_row(i, out)`: blocks of [`XR`] rows into a buffer that stays in L2,
/// then every weight group of the share over them. The same bits as
/// [`matmul_rows_float`] over the rows `x_row` writes.
///
/// # Safety
/// As for [`matmul_rows_float`].
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(crate) unsafe fn matmul_rows_float_gather(
    ty: crate::GgmlType,
    w: &[u8],
    rb: usize,
    cols: usize,
    x_row: &(dyn Fn(usize, &mut [f32]) + Sync),
    out: Vec<&mut [f32]>,
) {
    match ty {
        // SAFETY: (caller) as documented.
        crate::GgmlType::F32 => unsafe { rows_float_gather::<F32Row>(w, rb, cols, x_row, out) },
        crate::GgmlType::F16 => unsafe { rows_float_gather::<F16Row>(w, rb, cols, x_row, out) },
        crate::GgmlType::BF16 => unsafe { rows_float_gather::<Bf16Row>(w, rb, cols, x_row, out) },
        other => unreachable!("matmul_rows_float_gather: {other} is not a float type"),
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn rows_float_gather<W: FloatRow>(
    w: &[u8],
    rb: usize,
    cols: usize,
    x_row: &(dyn Fn(usize, &mut [f32]) + Sync),
    mut out: Vec<&mut [f32]>,
) {
    let m = out.len();
    // Several blocks of XR activation rows (about 256 KiB, in L2) go
    // against each group of four weight rows, which stays in L1 across them:
    // the weights stream from memory once per block set instead of once per
    // XR rows.
    let blocks = (X_BLOCK_BYTES / (XR * cols * 4).max(1)).clamp(1, 8);
    let mut xb = vec![0f32; blocks * XR * cols];
    let mut t = 0;
    while t < m {
        let nb = ((m - t) / XR).min(blocks);
        // The last rows (fewer than XR) go as one narrower block.
        let take = if nb == 0 { m - t } else { nb * XR };
        for (r, dst) in xb.chunks_exact_mut(cols).take(take).enumerate() {
            x_row(t + r, dst);
        }
        let xs: Vec<&[f32]> = xb.chunks_exact(cols).take(take).collect();
        let outs = &mut out[t..t + take];
        // SAFETY: (caller) as documented.
        unsafe {
            match take {
                1 => float_blocks::<W, 4, 1>(w, rb, &xs, outs),
                2 => float_blocks::<W, 4, 2>(w, rb, &xs, outs),
                3 => float_blocks::<W, 4, 3>(w, rb, &xs, outs),
                _ => float_blocks::<W, 4, XR>(w, rb, &xs, outs),
            }
        }
        t += take;
    }
}

/// Every group of `K` weight rows of `w` (a short last group repeats a row
/// whose results are dropped) against the activation vectors `xs`, `R` at a
/// time and the last ones (fewer than `R`) one by one, while the group stays
/// in L1; `out[i]` receives the dots with `xs[i]`.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C; `w` holds whole rows
/// of `rb` bytes of `xs[i].len()` values.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn float_blocks<W: FloatRow, const K: usize, const R: usize>(
    w: &[u8],
    rb: usize,
    xs: &[&[f32]],
    out: &mut [&mut [f32]],
) {
    let full = xs.len() / R * R;
    for (g, group) in w.chunks(K * rb).enumerate() {
        let k = group.len() / rb;
        let rows: [&[u8]; K] = std::array::from_fn(|j| &group[(j % k) * rb..][..rb]);
        let cols = K * g..K * g + k;
        for (xb, outs) in xs[..full].chunks_exact(R).zip(out.chunks_exact_mut(R)) {
            // SAFETY: (caller) the CPU features; rows hold the vectors' length.
            let dots = unsafe { dot_block::<W, K, R>(rows, std::array::from_fn(|r| xb[r])) };
            for (o, d) in outs.iter_mut().zip(&dots) {
                o[cols.clone()].copy_from_slice(&d[..k]);
            }
        }
        for (x, o) in xs[full..].iter().zip(&mut out[full..]) {
            // SAFETY: as above.
            let [d] = unsafe { dot_block::<W, K, 1>(rows, [x]) };
            o[cols.clone()].copy_from_slice(&d[..k]);
        }
    }
}

/// `matmul::matvec` of each activation vector of `xs` (length a multiple of
/// 16) against 16-bit float weight rows (`ty` F16 or BF16), eight rows
/// (eight streams in flight) and two vectors at a time through
/// [`float_blocks`], the weights widened once for both. With no remainder to handle, dot_block's arithmetic per pair is
/// `avx2::half_row`'s (lanes 0-7 its first accumulator, 8-15 its second,
/// `hsum` of their sum), so each result is the bits of the matvec. The last
/// rows (fewer than eight) and an odd last vector go in narrower blocks.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C; `w` holds whole rows
/// of `rb` bytes of `xs[i].len()` values, and `out[i]` has one value a row.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(crate) unsafe fn matvec_many_half(ty: crate::GgmlType, w: &[u8], rb: usize, xs: &[&[f32]], out: &mut [&mut [f32]]) {
    match ty {
        // SAFETY: (caller) as documented.
        crate::GgmlType::F16 => unsafe { float_blocks::<F16Row, 8, 2>(w, rb, xs, out) },
        crate::GgmlType::BF16 => unsafe { float_blocks::<Bf16Row, 8, 2>(w, rb, xs, out) },
        other => unreachable!("matvec_many_half: {other} is not a 16-bit float type"),
    }
}
