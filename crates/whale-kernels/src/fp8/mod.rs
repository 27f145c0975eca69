//! DeepSeek's FP8 weights kept as FP8: float8 e4m3fn bytes with one f32
//! scale per 128×128 block (`weight_scale_inv`), read in place (1 byte a
//! weight, memory-mapped) by dot-product and matrix kernels.
//!
//! # The format
//!
//! An e4m3fn byte is 1 sign bit, 4 exponent bits (bias 7) and 3 mantissa
//! bits; there are no infinities and `0x7f` / `0xff` are NaN (checkpoints
//! never hold them: FP8 casts saturate at ±448). Row `r`, column `c` of a
//! `[rows, cols]` matrix is `e4m3(w[r][c]) · scale[r / 128][c / 128]`, with
//! `scale` of shape `[ceil(rows/128), ceil(cols/128)]`.
//!
//! # Decoding by bit placement
//!
//! The kernels compute in a unit of 2^-8: an e4m3 byte, sign-extended to
//! 16 bits, shifted left by 7 and masked to the sign bit and its 7
//! exponent-and-mantissa bits (`& 0xbf80`), is the IEEE half with the same
//! sign, exponent field and mantissa: the e4m3 value times 2^-8, subnormal
//! codes included (exponent biases 7 and 15). x86 widens those halves to
//! f32 with `vcvtph2ps` (exact, and no microcode assist on subnormals, which
//! an f32 bit placement would meet); NEON places the bits in an f32 and
//! multiplies by 2^112 (exact). [`decode_unit`] is the scalar form. It
//! equals the format's definition for every non-NaN code (tested for all
//! 254 of them); the NaN codes read as ±480.
//!
//! # Activations rounded to bf16, products exact
//!
//! Each activation entering an FP8 matrix is scaled by 2^48 and rounded to
//! bf16, to nearest with ties to even ([`round_activation`]: a relative
//! error of at most 2^-8). From there on nothing is approximate: a weight
//! (4 significant bits) times a bf16 activation (8) is exact in f32, and
//! the sums round as f32 FMAs do. The 2^48 keeps every product and partial
//! sum a multiple of 2^-125, so none is subnormal, and the scale goes
//! back with the block scale (`scale · 2^-40` with the weights' 2^-8,
//! exact).
//!
//! Why round them: CPUs with AVX-512 BF16 (Zen 4 and later, Sapphire
//! Rapids and later) then add 32 products an instruction (`vdpbf16ps`),
//! with the weights made bf16 by two byte lookups (exact), where the f32
//! FMA path widens and adds 16. One-row decode was compute-bound on e4m3's
//! widening at 2 threads on Zen 4 (17.5 GB/s a core from L2), and is now
//! near the memory's speed (28 GB/s a core). The cost is bounded and small
//! beside FP8's own: e4m3 rounds the weights to a relative step of 2^-3,
//! bf16 the activations to 2^-7; DeepSeek's inference code rounds them to
//! e4m3 as well, and the GGUF kernels here round them to 8-bit integers.
//! `--fp8 f32` keeps the unrounded path (dequantized at load).
//!
//! # A fixed order
//!
//! Every level sums in the same order, so each is bit-identical to the
//! scalar twin ([`dot_with`] at [`SimdLevel::Scalar`]): 16 lanes, element
//! `i` of a 128-block into lane `i % 16` by one FMA each in element order
//! (lanes start at zero per block; weights and activations in the units
//! above); then `tot[j] = fma(scale · 2^-40, acc[j], tot[j])` per block;
//! then the lanes reduced pairwise (`j + 8`, `j + 4`, `j + 2`, `j + 1`).
//! AVX-512 holds the 16 lanes in one register, AVX2 in two, NEON in four.
//! `vdpbf16ps` adds two products a lane, the odd word's first: its words
//! are paired so that lane `j` adds element `j`, then `j + 16`, which is
//! the same order (and the same roundings: each add is one f32 rounding of
//! an exact product, and nothing is subnormal, where the instruction would
//! flush). Products with several activation rows decode each weight row
//! once (to f32, or with `vdpbf16ps` to its bf16 words, multiplied in
//! register tiles of 2 weight rows by 4 activation rows) and run the same
//! sums over the decoded row, so every element of [`matmul`] is the same
//! bits whatever the number of rows, the grouping of a batch, or the thread
//! count.

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::dispatch::{SimdLevel, Verified};
use crate::matmul::{column_views, rows_per_thread};

/// Rows and columns per scale block.
pub const BLOCK: usize = 128;
/// Lanes of the fixed summation order (see the module docs).
const LANES: usize = 16;
/// The half bits kept after the shift: sign, 4 exponent and 3 mantissa bits.
pub(crate) const KEEP16: u16 = 0xbf80;
/// The f32 bits kept after a shift by 20 (NEON's f32 bit placement).
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) const KEEP32: u32 = 0x87f0_0000;
/// 2^112: an f32 bit placement times this is the value in the kernels' unit.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) const TWO_POW_112: f32 = f32::from_bits((127 + 112) << 23);
/// 2^48: activations are scaled by this before their rounding to bf16
/// (exact), so no product or sum of the kernels is ever subnormal.
pub(crate) const X_SCALE: f32 = f32::from_bits((127 + 48) << 23);
/// 2^-40: the products' unit (weights times 2^-8, activations times 2^48)
/// back to values, folded into the block scales (exact).
pub(crate) const S_SCALE: f32 = f32::from_bits((127 - 40) << 23);
/// 2^8: the weights' unit back to values.
const UNIT_INV: f32 = 256.0;

/// The bf16 bits of e4m3 magnitude `m` (0..128) in the kernels' unit:
/// normal codes `(1 + mant/8) · 2^(exp - 15)`, subnormal ones `mant · 2^-17`,
/// all normal bf16 with 4 significant bits at most.
const fn bf16_of_magnitude(m: u8) -> u16 {
    let (e, man) = ((m >> 3) as u16, (m & 7) as u16);
    if e > 0 {
        ((e + 112) << 7) | (man << 4)
    } else if man == 0 {
        0
    } else {
        let p = 15 - man.leading_zeros() as u16; // floor(log2(man)), 0..=2
        ((127 - 17 + p) << 7) | ((man << (7 - p)) & 0x7f)
    }
}

const fn bf16_bytes(high: bool) -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut m = 0;
    while m < 128 {
        let b = bf16_of_magnitude(m as u8);
        t[m] = if high { (b >> 8) as u8 } else { b as u8 };
        m += 1;
    }
    t
}

/// Low and high bytes of [`bf16_of_magnitude`], the `vpermi2b` tables.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) static BF16_LO: [u8; 128] = bf16_bytes(false);
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) static BF16_HI: [u8; 128] = bf16_bytes(true);

/// One activation as the kernels take it: `x · 2^48` rounded to bf16
/// (nearest, ties to even, as `vcvtneps2bf16`), widened back to f32. Its
/// relative error is at most 2^-8 (8 significant bits); it is never
/// subnormal (f32's smallest value times 2^48 is 2^-101), and finite for
/// `|x| < 2^80`.
#[inline]
pub fn round_activation(x: f32) -> f32 {
    let v = x * X_SCALE;
    if v.is_nan() {
        return v;
    }
    let b = v.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

/// The rounded activations of one row.
fn prepare(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| round_activation(v)).collect()
}

/// The bf16 words of `xb` (rounded activations) for the `vdpbf16ps`
/// kernel, 32-element chunk by chunk in its pairing: word `2j` is element
/// `16 + j`, word `2j + 1` element `j`. Whole 128-blocks only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn pair_words(xb: &[f32]) -> Vec<u16> {
    let n = xb.len() / BLOCK * BLOCK;
    let mut out = vec![0u16; n];
    for (o, c) in out.chunks_exact_mut(32).zip(xb.chunks_exact(32)) {
        for j in 0..16 {
            o[2 * j] = (c[16 + j].to_bits() >> 16) as u16;
            o[2 * j + 1] = (c[j].to_bits() >> 16) as u16;
        }
    }
    out
}

/// One e4m3 code in the kernels' unit (its value times 2^-8), by bit
/// placement into a half (see the module docs).
#[inline(always)]
pub fn decode_unit(b: u8) -> f32 {
    half::f16::from_bits(((b as i8 as i16 as u16) << 7) & KEEP16).to_f32()
}

/// One float8 e4m3fn code as f32 by bit placement ([`decode_unit`] · 2^8).
#[inline(always)]
pub fn e4m3_to_f32(b: u8) -> f32 {
    decode_unit(b) * UNIT_INV
}

/// One float8 e4m3fn code as f32 from the format's definition (the
/// reference the fast decode is tested against; NaN for `0x7f` / `0xff`).
pub fn e4m3_to_f32_ref(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0f) as i32;
    let man = (b & 0x07) as f32;
    if exp == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

/// A block-scaled FP8 matrix: `w` holds `rows × cols` e4m3 bytes row-major;
/// `scales` are the block scales (row-major, `ceil(cols/128)` per row of
/// blocks) of the tensor these rows come from, whose row `row0` is row 0
/// here: a slice of rows (one head of MLA's `kv_b_proj`) keeps the
/// tensor's scale grid, so row `r` takes scale row `(row0 + r) / 128`.
#[derive(Clone, Copy, Debug)]
pub struct Fp8Matrix<'a> {
    pub w: &'a [u8],
    pub scales: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row0: usize,
}

impl<'a> Fp8Matrix<'a> {
    /// Scale blocks per row.
    pub fn scale_cols(&self) -> usize {
        self.cols.div_ceil(BLOCK)
    }

    /// Row `r`'s bytes and its scales (one per 128 columns).
    pub fn row(&self, r: usize) -> (&'a [u8], &'a [f32]) {
        let (sc, br) = (self.scale_cols(), (self.row0 + r) / BLOCK);
        (&self.w[r * self.cols..(r + 1) * self.cols], &self.scales[br * sc..(br + 1) * sc])
    }

    /// Panics (programmer error) unless the slices match the shape.
    #[track_caller]
    fn check(&self, what: &str) {
        assert!(
            Some(self.w.len()) == self.rows.checked_mul(self.cols),
            "{what}: w has {} bytes, expected rows * cols = {} * {}",
            self.w.len(),
            self.rows,
            self.cols
        );
        let want = (self.row0 + self.rows).div_ceil(BLOCK) * self.scale_cols();
        assert!(
            self.scales.len() >= want && self.scales.len().is_multiple_of(self.scale_cols().max(1)),
            "{what}: {} scales for rows {}..{} of {} columns",
            self.scales.len(),
            self.row0,
            self.row0 + self.rows,
            self.cols
        );
    }

    /// Row `r` dequantized exactly (the format's definition): `out[c] =
    /// e4m3(w[r][c]) · scale`. `out.len() == cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (w, s) = self.row(r);
        for ((o, &b), c) in out.iter_mut().zip(w).zip(0..) {
            *o = e4m3_to_f32_ref(b) * s[c / BLOCK];
        }
    }
}

/// `Σ_c e4m3(w[c]) · scales[c / 128] · x[c]` at the process's SIMD level,
/// with each `x[c]` rounded to bf16 ([`round_activation`]).
/// `scales.len() == ceil(w.len() / 128)`, `x.len() == w.len()`.
pub fn dot(w: &[u8], scales: &[f32], x: &[f32]) -> f32 {
    dot_with(Verified::active().level(), w, scales, x)
}

/// [`dot`] at a given level (panics if the CPU lacks it): every level gives
/// the same bits as [`SimdLevel::Scalar`], the reference twin.
pub fn dot_with(level: SimdLevel, w: &[u8], scales: &[f32], x: &[f32]) -> f32 {
    let v = crate::dot::verify(level);
    check_dot(w.len(), scales, x);
    let xb = prepare(x);
    let xw = if bf16_dot(v) { pair_words(&xb) } else { Vec::new() };
    dotn_verified::<1>(v, &xw, [w], [scales], &xb)[0]
}

/// [`dot_with`] by the level's FMA kernel even where the CPU has the
/// `vdpbf16ps` one: the same bits (for tests of both).
#[doc(hidden)]
pub fn dot_fma_with(level: SimdLevel, w: &[u8], scales: &[f32], x: &[f32]) -> f32 {
    check_dot(w.len(), scales, x);
    dot_verified(crate::dot::verify(level), Src::Bytes(w), scales, &prepare(x))
}

/// One activation row's [`matmul`] by the level's FMA kernels, as many
/// rows at a time as its decode takes them, even where the CPU has the
/// `vdpbf16ps` kernel: the same bits (for tests of both).
#[doc(hidden)]
pub fn matvec_fma_with(level: SimdLevel, wm: Fp8Matrix<'_>, x: &[f32], y: &mut [f32]) {
    wm.check("fp8 matvec");
    assert!(x.len() == wm.cols && y.len() == wm.rows, "fp8 matvec: x has {}, y {} elements", x.len(), y.len());
    matvec(crate::dot::verify(level), wm, &prepare(x), &[], 0, y);
}

/// Decodes `w` into `out` in the kernels' unit (values times 2^-8, before
/// the block scales) at a given level; every level gives the bits of
/// [`decode_unit`].
pub fn decode_with(level: SimdLevel, w: &[u8], out: &mut [f32]) {
    decode_verified(crate::dot::verify(level), w, out)
}

/// [`dot`] of a row already decoded by [`decode_with`]: the same bits as
/// [`dot`] on the bytes.
pub fn dot_decoded_with(level: SimdLevel, wd: &[f32], scales: &[f32], x: &[f32]) -> f32 {
    check_dot(wd.len(), scales, x);
    dot_verified(crate::dot::verify(level), Src::Decoded(wd), scales, &prepare(x))
}

#[track_caller]
fn check_dot(n: usize, scales: &[f32], x: &[f32]) {
    assert!(x.len() == n, "fp8 dot: x has {} elements, the row {n}", x.len());
    assert!(scales.len() == n.div_ceil(BLOCK), "fp8 dot: {} scales for {n} columns", scales.len());
}

/// Whether `v`'s dot products run on `vdpbf16ps` (AVX-512 BF16 and VBMI,
/// at an AVX-512 level).
fn bf16_dot(v: Verified) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        matches!(v.level(), SimdLevel::Avx512Vnni | SimdLevel::Amx)
            && *HAS.get_or_init(|| {
                std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512vbmi")
            })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = v;
        false
    }
}

/// The weights of one dot: bytes, or a row decoded by [`decode_verified`].
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    Bytes(&'a [u8]),
    Decoded(&'a [f32]),
}

/// One dot on prepared activations `xb` by the level's FMA kernel.
fn dot_verified(v: Verified, w: Src<'_>, scales: &[f32], xb: &[f32]) -> f32 {
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX-512 level has AVX-512 F (and AVX2, FMA);
        // lengths checked by the callers.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { x86::dot_avx512(w, scales, xb) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX2 level has AVX2 and FMA.
        SimdLevel::Avx2Fma => unsafe { x86::dot_avx2(w, scales, xb) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: a verified NEON level has NEON.
        SimdLevel::Neon => unsafe { neon::dot(w, scales, xb) },
        _ => dot_scalar(w, scales, xb),
    }
}

/// Rows a decode step dots together (one activation row) at the AVX-512
/// level: their byte streams and sums interleave, which keeps more cache
/// lines in flight. `examples/fp8_bench.rs`, [18432, 7168], 2 threads, on
/// the development machine (Xeon, AVX-512, 20.7 GB/s streaming read):
/// 1 row at a time read 8.6-10.1 GB/s, 2 rows 12-15, 4 rows 14.7-15.2,
/// 8 rows 16.9-18.7 (a bf16 matvec of the same shape: 12.4-13.5). A
/// software prefetch ahead of the rows, as the other matvecs do, made it
/// no faster and is left out.
const ROWS: usize = 8;

/// [`ROWS`] for the `vdpbf16ps` kernel, which does less work a byte: on
/// Zen 4, 2 threads, 16 rows read 30.5-32.2 GB/s, 8 rows 26.9-30.7, 4 rows
/// 22.5-24.7 (alternating, `fp8_bench 2`).
const ROWS_BF16: usize = 16;

/// [`ROWS`] at the AVX2 level (16 registers: each row holds 2 accumulators
/// and 2 block totals). Zen 4 with `WHALE_SIMD=avx2`, `fp8_bench 2`,
/// alternating: one row at a time 14.7-16.2 GB/s, 2 rows 13.6-13.9, 4 rows
/// 20.1-20.7, 8 rows 21.1-21.9 but slower from L2 (12.6 GB/s a core
/// against 13.4 with 4: its accumulators spill).
const ROWS_AVX2: usize = 4;

/// `R` rows' dots on bytes with prepared activations (`xw`: their
/// [`pair_words`], for the `vdpbf16ps` kernel where [`bf16_dot`]; empty for
/// the FMA kernels): the same bits as [`dot_verified`], with the rows'
/// streams interleaved where a level has that.
fn dotn_verified<const R: usize>(v: Verified, xw: &[u16], w: [&[u8]; R], scales: [&[f32]; R], xb: &[f32]) -> [f32; R] {
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: bf16_dot checked AVX-512 BF16 and VBMI at a verified
        // AVX-512 level; every row has xb.len() bytes (rows of one matrix)
        // and xw holds the pair words of xb's whole blocks.
        SimdLevel::Avx512Vnni | SimdLevel::Amx if bf16_dot(v) && !xw.is_empty() => unsafe {
            x86::dotn_bf16(w, scales, xb, xw)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX-512 level has AVX-512 F, FMA and F16C.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { x86::dotn_avx512(w, scales, xb) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX2 level has AVX2, FMA and F16C.
        SimdLevel::Avx2Fma => unsafe { x86::dotn_avx2(w, scales, xb) },
        _ => {
            let _ = xw; // only the vdpbf16ps kernel reads the pair words
            std::array::from_fn(|r| dot_verified(v, Src::Bytes(w[r]), scales[r], xb))
        }
    }
}

fn decode_verified(v: Verified, w: &[u8], out: &mut [f32]) {
    assert!(out.len() == w.len(), "fp8 decode: {} outputs for {} bytes", out.len(), w.len());
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX-512 level has AVX-512 F.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { x86::decode_avx512(w, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX2 level has AVX2.
        SimdLevel::Avx2Fma => unsafe { x86::decode_avx2(w, out) },
        _ => {
            for (o, &b) in out.iter_mut().zip(w) {
                *o = decode_unit(b);
            }
        }
    }
}

/// The scalar twin: the summation order every level follows, on prepared
/// activations.
fn dot_scalar(w: Src<'_>, scales: &[f32], xb: &[f32]) -> f32 {
    let mut tot = [0f32; LANES];
    for (b, &s) in scales.iter().enumerate() {
        let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(xb.len()));
        let mut acc = [0f32; LANES];
        for i in lo..hi {
            let wi = match w {
                Src::Bytes(w) => decode_unit(w[i]),
                Src::Decoded(w) => w[i],
            };
            acc[i % LANES] = wi.mul_add(xb[i], acc[i % LANES]);
        }
        for (t, a) in tot.iter_mut().zip(acc) {
            *t = (s * S_SCALE).mul_add(a, *t);
        }
    }
    reduce(tot)
}

/// The lanes summed pairwise: `j + 8`, `j + 4`, `j + 2`, `j + 1`.
#[inline(always)]
pub(crate) fn reduce(mut t: [f32; LANES]) -> f32 {
    for step in [8, 4, 2, 1] {
        for j in 0..step {
            t[j] += t[j + step];
        }
    }
    t[0]
}

/// Activation rows per pass over the weights in [`matmul`]: 32 rows of
/// 7168 f32 (V3's hidden size) are 0.9 MiB, which stay in L2 while every
/// weight row of a thread's share is decoded once and dotted with them.
const TOKEN_TILE: usize = 32;

/// `y[t][r] = Σ_c W[r][c] · x[t][c]` for an FP8 matrix: `x` is `[m, cols]`,
/// `y` `[m, rows]`, both row-major. Weight rows are split across up to
/// `threads` threads of the worker pool; one activation row (decode) reads
/// each weight byte once in registers, several decode each weight row once
/// per 32 of them. Every element is the bits of [`dot`] whatever `m` and
/// `threads` are.
pub fn matmul(wm: Fp8Matrix<'_>, x: &[f32], m: usize, y: &mut [f32], threads: usize) {
    wm.check("fp8 matmul");
    assert!(
        Some(x.len()) == m.checked_mul(wm.cols),
        "fp8 matmul: x has {} elements, expected {m} * {}",
        x.len(),
        wm.cols
    );
    assert!(
        Some(y.len()) == m.checked_mul(wm.rows),
        "fp8 matmul: y has {} elements, expected {m} * {}",
        y.len(),
        wm.rows
    );
    if m == 0 || wm.rows == 0 {
        return;
    }
    let v = Verified::active();
    let xb = prepare(x);
    // The activations' pair words exactly where the vdpbf16ps kernels run
    // (several rows need whole blocks); the FMA kernels otherwise.
    let dp = bf16_dot(v) && (m == 1 || wm.cols.is_multiple_of(BLOCK));
    let xw = if dp { pair_words(&xb) } else { Vec::new() };
    let work = wm.rows.saturating_mul(wm.cols).saturating_mul(m);
    let chunk = rows_per_thread(threads, wm.rows, work);
    let views = column_views(y, wm.rows, chunk, m);
    let jobs: Vec<_> = views.into_iter().enumerate().map(|(i, view)| (i * chunk, view)).collect();
    crate::pool::run_parts(threads, jobs, |(r0, view)| matmul_rows(v, wm, &xb, &xw, r0, view));
}

/// Weight rows a `vdpbf16ps` tile holds ([`gemm_bf16`]).
#[cfg(target_arch = "x86_64")]
const TILE_ROWS: usize = 2;
/// Activation rows a `vdpbf16ps` tile holds: 2 × 4 accumulators and their
/// block totals, 2 weight and 4 activation vectors fit the 32 registers.
#[cfg(target_arch = "x86_64")]
const TILE_TOKENS: usize = 4;

/// Several activation rows on `vdpbf16ps`: per [`TOKEN_TILE`] tokens, each
/// weight row is decoded once to bf16 words ([`x86::decode_pairs`]) and
/// multiplied by [`x86::tile_bf16`] in tiles of [`TILE_ROWS`] ×
/// [`TILE_TOKENS`]. Every element is the bits of [`dot`] (whole blocks:
/// `cols` is a multiple of 128, and the CPU has [`bf16_dot`]).
#[cfg(target_arch = "x86_64")]
fn gemm_bf16(wm: Fp8Matrix<'_>, xw: &[u16], r0: usize, mut out: Vec<&mut [f32]>) {
    const R: usize = TILE_ROWS;
    const T: usize = TILE_TOKENS;
    let cols = wm.cols;
    let n = out.first().map_or(0, |o| o.len());
    let mut wd = vec![0u16; R * cols];
    for (tile, xs) in out.chunks_mut(TOKEN_TILE).zip(xw.chunks(TOKEN_TILE * cols)) {
        let x: Vec<&[u16]> = xs.chunks_exact(cols).collect();
        let mut k = 0;
        while k < n {
            let rows = (n - k).min(R);
            for (j, d) in wd.chunks_exact_mut(cols).take(rows).enumerate() {
                // SAFETY: bf16_dot checked AVX-512 BW and VBMI; the row has
                // cols bytes, a multiple of 128, as `d` has words.
                unsafe { x86::decode_pairs(wm.row(r0 + k + j).0, d) };
            }
            let scales: [&[f32]; R] = std::array::from_fn(|j| wm.row(r0 + k + j.min(rows - 1)).1);
            let words: [&[u16]; R] = std::array::from_fn(|j| &wd[j.min(rows - 1) * cols..][..cols]);
            let mut t = 0;
            while t < x.len() {
                let take = (x.len() - t).min(T);
                let xt: [&[u16]; T] = std::array::from_fn(|i| x[t + i.min(take - 1)]);
                // SAFETY: bf16_dot checked AVX-512 BF16; every slice has
                // cols elements, a multiple of 128, with cols / 128 scales.
                let dots = unsafe { x86::tile_bf16::<R, T>(words, scales, xt) };
                for (j, row) in dots.iter().enumerate().take(rows) {
                    for (i, &d) in row.iter().enumerate().take(take) {
                        tile[t + i][k + j] = d;
                    }
                }
                t += take;
            }
            k += rows;
        }
    }
}

/// One activation row's rows `r0..r0 + y.len()`, as many rows at a time
/// as the kernel that runs takes: the `vdpbf16ps` one where `xw` holds the
/// pair words, else the level's FMA one.
fn matvec(v: Verified, wm: Fp8Matrix<'_>, xb: &[f32], xw: &[u16], r0: usize, y: &mut [f32]) {
    match v.level() {
        _ if bf16_dot(v) && !xw.is_empty() => matvec_rows::<ROWS_BF16>(v, wm, xb, xw, r0, y),
        SimdLevel::Avx2Fma => matvec_rows::<ROWS_AVX2>(v, wm, xb, xw, r0, y),
        _ => matvec_rows::<ROWS>(v, wm, xb, xw, r0, y),
    }
}

/// One activation row's rows `r0..r0 + y.len()`, `R` rows at a time.
fn matvec_rows<const R: usize>(v: Verified, wm: Fp8Matrix<'_>, xb: &[f32], xw: &[u16], r0: usize, y: &mut [f32]) {
    let mut k = 0;
    while k + R <= y.len() {
        let rows: [(&[u8], &[f32]); R] = std::array::from_fn(|j| wm.row(r0 + k + j));
        let dots = dotn_verified(v, xw, rows.map(|r| r.0), rows.map(|r| r.1), xb);
        y[k..k + R].copy_from_slice(&dots);
        k += R;
    }
    for (j, o) in y.iter_mut().enumerate().skip(k) {
        let (w, s) = wm.row(r0 + j);
        *o = dotn_verified::<1>(v, xw, [w], [s], xb)[0];
    }
}

/// Rows `r0..r0 + out[0].len()` of the product (`out[t]` is token `t`'s
/// share) on prepared activations.
fn matmul_rows(v: Verified, wm: Fp8Matrix<'_>, xb: &[f32], xw: &[u16], r0: usize, mut out: Vec<&mut [f32]>) {
    let cols = wm.cols;
    let n = out.first().map_or(0, |o| o.len());
    if out.len() == 1 {
        return matvec(v, wm, xb, xw, r0, out[0]);
    }
    #[cfg(target_arch = "x86_64")]
    if bf16_dot(v) && !xw.is_empty() {
        return gemm_bf16(wm, xw, r0, out);
    }
    let mut row = vec![0f32; cols];
    for (tile, xs) in out.chunks_mut(TOKEN_TILE).zip(xb.chunks(TOKEN_TILE * cols)) {
        for k in 0..n {
            let (w, s) = wm.row(r0 + k);
            decode_verified(v, w, &mut row);
            for (yt, xt) in tile.iter_mut().zip(xs.chunks_exact(cols)) {
                yt[k] = dot_verified(v, Src::Decoded(&row), s, xt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_placement_equals_the_definition_for_every_code() {
        for b in 0..=255u8 {
            let (fast, exact) = (e4m3_to_f32(b), e4m3_to_f32_ref(b));
            if exact.is_nan() {
                assert_eq!(fast.abs(), 480.0, "NaN code {b:#04x}");
            } else {
                assert_eq!(fast.to_bits(), exact.to_bits(), "code {b:#04x}: {fast} vs {exact}");
            }
        }
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0f32).to_bits());
    }

    #[test]
    fn bf16_tables_hold_every_magnitude_exactly() {
        for m in 0..128u8 {
            let bits = decode_unit(m).to_bits();
            assert_eq!(bits & 0xffff, 0, "code {m:#04x} has more than bf16's bits");
            let t = u16::from(BF16_LO[m as usize]) | u16::from(BF16_HI[m as usize]) << 8;
            assert_eq!(t, (bits >> 16) as u16, "code {m:#04x}");
        }
    }

    #[test]
    fn activations_round_to_nearest_even_bf16() {
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even (1) wins; just
        // above it rounds up; the scale is exact.
        assert_eq!(round_activation(1.0 + 2f32.powi(-8)), X_SCALE);
        assert_eq!(round_activation(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), (1.0 + 2f32.powi(-7)) * X_SCALE);
        assert_eq!(round_activation(-3.0), -3.0 * X_SCALE);
        assert_eq!(round_activation(f32::from_bits(1)), 2f32.powi(-101), "the smallest subnormal stays normal");
        assert_eq!(round_activation(0.0).to_bits(), 0);
    }

    #[test]
    fn reduce_order_is_pairwise() {
        let t: [f32; 16] = std::array::from_fn(|j| j as f32);
        assert_eq!(reduce(t), 120.0);
    }
}
