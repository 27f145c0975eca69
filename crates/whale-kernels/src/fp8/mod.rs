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
//! multiplies by 2^112 (exact). [`decode_unit`] is the scalar form. The 2^8
//! goes back with the block scale (`scale · 256`, exact), so a dot is the
//! same bits as with the values themselves unless a product underflows.
//! It equals the format's definition for every non-NaN code (tested for all
//! 254 of them); the NaN codes read as ±480.
//!
//! # Why f32 products, in a fixed order
//!
//! The kernels multiply the decoded weights with f32 activations by fused
//! multiply-adds: the products are exact (4 significant bits times 24), so
//! no activation is rounded (8-bit or bf16 activations would each lose
//! precision against the f32 path that dequantizes at load), and decode
//! reads 1 byte a weight, which bounds it, not the arithmetic.
//!
//! Every level sums in the same order, so each is bit-identical to the
//! scalar twin ([`dot_with`] at [`SimdLevel::Scalar`]): 16 lanes, element
//! `i` of a 128-block into lane `i % 16` by one FMA each in element order
//! (lanes start at zero per block; weights in the unit above); then
//! `tot[j] = fma(scale · 256, acc[j], tot[j])` per block; then the lanes reduced pairwise (`j + 8`, `j + 4`,
//! `j + 2`, `j + 1`). AVX-512 holds the 16 lanes in one register, AVX2 in
//! two, NEON in four. Products with several activation rows decode each
//! weight row once and run the same sums over the decoded row, so every
//! element of [`matmul`] is the same bits whatever the number of rows,
//! the grouping of a batch, or the thread count.

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
/// 2^8: the kernels' unit back to values (folded into the block scales).
pub(crate) const UNIT_INV: f32 = 256.0;

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

/// `Σ_c e4m3(w[c]) · scales[c / 128] · x[c]` at the process's SIMD level.
/// `scales.len() == ceil(w.len() / 128)`, `x.len() == w.len()`.
pub fn dot(w: &[u8], scales: &[f32], x: &[f32]) -> f32 {
    dot_verified(Verified::active(), Src::Bytes(w), scales, x)
}

/// [`dot`] at a given level (panics if the CPU lacks it): every level gives
/// the same bits as [`SimdLevel::Scalar`], the reference twin.
pub fn dot_with(level: SimdLevel, w: &[u8], scales: &[f32], x: &[f32]) -> f32 {
    dot_verified(crate::dot::verify(level), Src::Bytes(w), scales, x)
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
    dot_verified(crate::dot::verify(level), Src::Decoded(wd), scales, x)
}

/// The weights of one dot: bytes, or a row decoded by [`decode_verified`].
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    Bytes(&'a [u8]),
    Decoded(&'a [f32]),
}

impl Src<'_> {
    fn len(&self) -> usize {
        match self {
            Src::Bytes(w) => w.len(),
            Src::Decoded(w) => w.len(),
        }
    }
}

fn dot_verified(v: Verified, w: Src<'_>, scales: &[f32], x: &[f32]) -> f32 {
    let n = w.len();
    assert!(x.len() == n, "fp8 dot: x has {} elements, the row {n}", x.len());
    assert!(scales.len() == n.div_ceil(BLOCK), "fp8 dot: {} scales for {n} columns", scales.len());
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX-512 level has AVX-512 F (and AVX2, FMA).
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { x86::dot_avx512(w, scales, x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX2 level has AVX2 and FMA.
        SimdLevel::Avx2Fma => unsafe { x86::dot_avx2(w, scales, x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: a verified NEON level has NEON.
        SimdLevel::Neon => unsafe { neon::dot(w, scales, x) },
        _ => dot_scalar(w, scales, x),
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

/// [`ROWS`] rows' [`dot_verified`] on bytes: the same bits, with the rows'
/// streams interleaved where a level has that.
fn dotn_verified(v: Verified, w: [&[u8]; ROWS], scales: [&[f32]; ROWS], x: &[f32]) -> [f32; ROWS] {
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified AVX-512 level has AVX-512 F, FMA and F16C;
        // every row has x.len() bytes (rows of one matrix).
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { x86::dotn_avx512(w, scales, x) },
        _ => std::array::from_fn(|r| dot_verified(v, Src::Bytes(w[r]), scales[r], x)),
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

/// The scalar twin: the summation order every level follows.
fn dot_scalar(w: Src<'_>, scales: &[f32], x: &[f32]) -> f32 {
    let mut tot = [0f32; LANES];
    for (b, &s) in scales.iter().enumerate() {
        let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(x.len()));
        let mut acc = [0f32; LANES];
        for i in lo..hi {
            let wi = match w {
                Src::Bytes(w) => decode_unit(w[i]),
                Src::Decoded(w) => w[i],
            };
            acc[i % LANES] = wi.mul_add(x[i], acc[i % LANES]);
        }
        for (t, a) in tot.iter_mut().zip(acc) {
            *t = (s * UNIT_INV).mul_add(a, *t);
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
    let work = wm.rows.saturating_mul(wm.cols).saturating_mul(m);
    let chunk = rows_per_thread(threads, wm.rows, work);
    let views = column_views(y, wm.rows, chunk, m);
    let jobs: Vec<_> = views.into_iter().enumerate().map(|(i, view)| (i * chunk, view)).collect();
    crate::pool::run_parts(threads, jobs, |(r0, view)| matmul_rows(v, wm, x, r0, view));
}

/// Rows `r0..r0 + out[0].len()` of the product (`out[t]` is token `t`'s share).
fn matmul_rows(v: Verified, wm: Fp8Matrix<'_>, x: &[f32], r0: usize, mut out: Vec<&mut [f32]>) {
    let cols = wm.cols;
    let n = out.first().map_or(0, |o| o.len());
    if out.len() == 1 {
        let y = &mut out[0];
        let mut k = 0;
        while k + ROWS <= n {
            let rows: [(&[u8], &[f32]); ROWS] = std::array::from_fn(|j| wm.row(r0 + k + j));
            let dots = dotn_verified(v, rows.map(|r| r.0), rows.map(|r| r.1), x);
            y[k..k + ROWS].copy_from_slice(&dots);
            k += ROWS;
        }
        for (j, o) in y.iter_mut().enumerate().skip(k) {
            let (w, s) = wm.row(r0 + j);
            *o = dot_verified(v, Src::Bytes(w), s, x);
        }
        return;
    }
    let mut row = vec![0f32; cols];
    for (tile, xs) in out.chunks_mut(TOKEN_TILE).zip(x.chunks(TOKEN_TILE * cols)) {
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
    fn reduce_order_is_pairwise() {
        let t: [f32; 16] = std::array::from_fn(|j| j as f32);
        assert_eq!(reduce(t), 120.0);
    }
}
