//! Activation quantization: the f32 input vectors of a matrix product are
//! converted to the weight type's "vec_dot type" before the dot products,
//! exactly as llama.cpp's CPU backend (ggml-cpu) does.
//!
//! # Why quantize activations
//!
//! * **Parity with llama.cpp.** ggml never multiplies quantized weights with
//!   f32 activations: `ggml_compute_forward_mul_mat` first converts each
//!   activation row with `from_float` of the weight type's `vec_dot_type`
//!   (Q8_0, Q8_1, Q8_K, F16 or BF16), then runs integer (or half-precision)
//!   dot products. Rounding the activations to 8 bits changes logits by
//!   amounts that do flip greedy choices (SmolLM2-135M Q4_1 diverges at step 5
//!   with exact f32 math), so whale must round the same way to produce the same
//!   tokens.
//! * **Throughput.** With both operands 8-bit, a block dot is a handful of
//!   integer multiply-adds (`vpmaddubsw`, `vpdpbusd`) on 32 or 64 bytes at a
//!   time instead of widening every weight to f32.
//!
//! # Mapping ([`vec_dot_type`])
//!
//! | weights                   | activations                    |
//! |---------------------------|--------------------------------|
//! | Q4_0, Q5_0, Q8_0          | Q8_0                           |
//! | Q4_1, Q5_1                | Q8_1                           |
//! | Q2_K, Q3_K, Q4_K, Q5_K, Q6_K | Q8_K                        |
//! | F16                       | F16 (round to nearest even)    |
//! | BF16                      | BF16 (round to nearest even)   |
//! | F32, Q8_1, Q8_K           | F32 (kept as is)               |
//!
//! Q8_1 and Q8_K are activation formats; ggml has no dot product with them as
//! weights, so whale keeps f32 activations for them (exact f32 math).
//!
//! # Rounding: llama.cpp on x86-64
//!
//! ggml has two Q8_0/Q8_1 quantizers that differ in the last bit:
//!
//! * the portable reference `quantize_row_q8_0_ref` (also what gguf-py
//!   implements): `d = amax / 127`, `id = 1 / d`, `q = roundf(x * id)`
//!   (round half away from zero);
//! * the x86 one that llama.cpp's CPU backend actually runs on any AVX/AVX2
//!   machine (`quantize_row_q8_0` in `ggml-cpu/arch/x86/quants.c`):
//!   `d = amax / 127`, `id = 127 / amax`, `q = round_half_even(x * id)`.
//!
//! They differ only where `x * id` lands on (or within an ulp of) a half
//! integer. whale reproduces llama.cpp on x86-64, so [`quantize_acts`] and
//! [`quantize_row_q8_0`] / [`quantize_row_q8_1`] use **the x86 rule**; the
//! reference rule is available as [`quantize_row_q8_0_ggml_ref`] /
//! [`quantize_row_q8_1_ggml_ref`] (tested bit for bit against gguf-py).
//!
//! Both store `d` as f16 (round to nearest even) and the dot products use
//! that rounded `d`; Q8_1's `s` is `f16(d * sum(q))` with the *unrounded* f32
//! `d`, as in ggml.
//!
//! Q8_K has a single rule everywhere in ggml (`quantize_row_q8_K_ref`, which
//! the x86 backend calls): with `max` the first element of largest magnitude,
//! `iscale = -127 / max`, `q = min(127, round_half_even(iscale * x))`
//! (ggml's `nearest_int`, a round-half-even trick), `d = 1 / iscale` kept in
//! f32, and `bsums[g]` the sums of the 16 quants of group `g`. An all-zero
//! block gets `d = 0`, zero quants and zero sums.
//!
//! F16 activations are `f32 -> f16` round to nearest even (the F16C
//! instruction ggml uses); BF16 ones round to nearest even with NaN quieted
//! (ggml's `GGML_FP32_TO_BF16`).
//!
//! Non-finite activations (inf, NaN) give unspecified (but memory-safe)
//! quantized values, and may differ between SIMD levels; ggml has the same
//! caveat.
//!
//! # Storage
//!
//! [`QuantizedActs`] keeps the quantized rows as structure-of-arrays (all
//! quants of a row contiguous, scales as f32 beside them, plus per-block
//! quant sums) rather than ggml's interleaved blocks, so SIMD kernels can load
//! 32 or 64 quants at once and never convert an f16 scale twice.
//! [`QuantizedActs::ggml_row`] rebuilds ggml's exact block bytes and
//! [`QuantizedActs::from_ggml_rows`] reads them (for fixtures and
//! cross-checks).

use half::f16;

use crate::blocks::*;
use crate::dispatch::{SimdLevel, Verified};
use crate::error::KernelError;
use crate::types::{GgmlType, QK32, QK_K};

/// The activation type ggml's CPU backend converts f32 activations to before
/// dotting them with weights of type `wty` (see the module docs' table).
pub fn vec_dot_type(wty: GgmlType) -> GgmlType {
    use GgmlType as G;
    match wty {
        G::Q4_0 | G::Q5_0 | G::Q8_0 => G::Q8_0,
        G::Q4_1 | G::Q5_1 => G::Q8_1,
        G::Q2_K | G::Q3_K | G::Q4_K | G::Q5_K | G::Q6_K => G::Q8_K,
        G::IQ4_NL => G::Q8_0,
        G::IQ2_XXS | G::IQ2_XS | G::IQ2_S | G::IQ3_XXS | G::IQ3_S | G::IQ1_S | G::IQ1_M | G::IQ4_XS => G::Q8_K,
        G::TQ1_0 | G::TQ2_0 => G::Q8_K,
        G::F16 => G::F16,
        G::BF16 => G::BF16,
        G::F32 | G::Q8_1 | G::Q8_K | G::F8_E4M3 => G::F32,
    }
}

/// `m` activation rows of `cols` elements, converted to one activation type
/// (Q8_0, Q8_1, Q8_K, F16, BF16 or F32). Made by [`quantize_acts`] (or
/// [`QuantizedActs::from_ggml_rows`]) and consumed by [`crate::vec_dot_q`] and
/// [`crate::matmul_q_acts`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantizedActs {
    ty: Option<GgmlType>,
    m: usize,
    cols: usize,
    /// Q8_*: quants, `m * cols`, row-major.
    qs: Vec<i8>,
    /// Q8_*: per-block scale (Q8_0/Q8_1: the f16 `d` widened; Q8_K: f32 `d`).
    d: Vec<f32>,
    /// Q8_1: per-block `s = f16(d * sum(q))`, widened.
    s: Vec<f32>,
    /// Q8_0 / Q8_1: per-block sum of the 32 quants.
    sums: Vec<i32>,
    /// Q8_K: 16 per block, sums of 16 quants.
    bsums: Vec<i16>,
    /// F16 / BF16: the 16-bit values, `m * cols`.
    halves: Vec<u16>,
    /// F32: the activations, `m * cols`.
    f32s: Vec<f32>,
}

/// A borrowed view of one activation row, as the dot kernels read it. Only
/// the fields of the row's type are non-empty.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ActRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub sums: &'a [i32],
    pub bsums: &'a [i16],
    pub halves: &'a [u16],
    pub f32s: &'a [f32],
}

impl QuantizedActs {
    /// An empty container (no rows, F32); [`quantize_acts_into`] fills it.
    pub fn new() -> QuantizedActs {
        QuantizedActs::default()
    }

    /// Bytes its buffers hold (their capacity, not only what is in use).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.qs.capacity()
            + 4 * (self.d.capacity() + self.s.capacity() + self.sums.capacity() + self.f32s.capacity())
            + 2 * (self.bsums.capacity() + self.halves.capacity())
    }

    /// The activation type of the rows.
    pub fn ty(&self) -> GgmlType {
        self.ty.unwrap_or(GgmlType::F32)
    }

    /// Number of rows.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` as ggml stores it: `ty().row_bytes(cols())` bytes of
    /// `block_q8_0` / `block_q8_1` / `block_q8_K`, or the raw f16 / bf16 / f32
    /// values (little-endian). Panics if `i >= m()`.
    pub fn ggml_row(&self, i: usize) -> Vec<u8> {
        assert!(i < self.m, "ggml_row: row {i} of {}", self.m);
        let r = self.row(i);
        let ty = self.ty();
        let mut out = vec![0u8; ty.row_bytes(self.cols).expect("cols is a whole number of blocks")];
        match ty {
            GgmlType::Q8_0 => {
                let blocks: &mut [BlockQ8_0] = bytemuck::cast_slice_mut(&mut out);
                for (b, (blk, qs)) in blocks.iter_mut().zip(r.qs.chunks_exact(QK32)).enumerate() {
                    blk.d = F16Le::from_f32(r.d[b]);
                    blk.qs.copy_from_slice(qs);
                }
            }
            GgmlType::Q8_1 => {
                let blocks: &mut [BlockQ8_1] = bytemuck::cast_slice_mut(&mut out);
                for (b, (blk, qs)) in blocks.iter_mut().zip(r.qs.chunks_exact(QK32)).enumerate() {
                    blk.d = F16Le::from_f32(r.d[b]);
                    blk.s = F16Le::from_f32(r.s[b]);
                    blk.qs.copy_from_slice(qs);
                }
            }
            GgmlType::Q8_K => {
                let blocks: &mut [BlockQ8_K] = bytemuck::cast_slice_mut(&mut out);
                for (b, (blk, qs)) in blocks.iter_mut().zip(r.qs.chunks_exact(QK_K)).enumerate() {
                    blk.d = F32Le::from_f32(r.d[b]);
                    blk.qs.copy_from_slice(qs);
                    for (o, &v) in blk.bsums.iter_mut().zip(&r.bsums[16 * b..16 * b + 16]) {
                        *o = I16Le(v.to_le_bytes());
                    }
                }
            }
            GgmlType::F16 | GgmlType::BF16 => {
                for (o, &h) in out.chunks_exact_mut(2).zip(r.halves) {
                    o.copy_from_slice(&h.to_le_bytes());
                }
            }
            GgmlType::F32 => {
                for (o, &v) in out.chunks_exact_mut(4).zip(r.f32s) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            other => unreachable!("{other} is never an activation type"),
        }
        out
    }

    /// Reads `m` rows of `cols` elements stored as ggml does (the inverse of
    /// [`ggml_row`](Self::ggml_row)), e.g. the output of llama.cpp's
    /// `from_float`. `ty` must be an activation type (Q8_0, Q8_1, Q8_K, F16,
    /// BF16, F32). Q8_0/Q8_1 per-block quant sums are recomputed from the
    /// quants; Q8_1's `s` and Q8_K's `bsums` are taken as stored.
    pub fn from_ggml_rows(ty: GgmlType, m: usize, cols: usize, bytes: &[u8]) -> Result<QuantizedActs, KernelError> {
        let elements = m.saturating_mul(cols);
        let expected = ty.row_bytes(elements).ok_or(KernelError::NotBlockMultiple { ty, elements })?;
        if bytes.len() != expected || ty.row_bytes(cols).is_none() {
            return Err(KernelError::BadLength { ty, elements, bytes: bytes.len() });
        }
        let mut a = QuantizedActs { ty: Some(ty), m, cols, ..QuantizedActs::default() };
        match ty {
            GgmlType::Q8_0 => {
                for blk in bytemuck::cast_slice::<u8, BlockQ8_0>(bytes) {
                    a.d.push(blk.d.to_f32());
                    a.qs.extend_from_slice(&blk.qs);
                    a.sums.push(blk.qs.iter().map(|&q| q as i32).sum());
                }
            }
            GgmlType::Q8_1 => {
                for blk in bytemuck::cast_slice::<u8, BlockQ8_1>(bytes) {
                    a.d.push(blk.d.to_f32());
                    a.s.push(blk.s.to_f32());
                    a.qs.extend_from_slice(&blk.qs);
                    a.sums.push(blk.qs.iter().map(|&q| q as i32).sum());
                }
            }
            GgmlType::Q8_K => {
                for blk in bytemuck::cast_slice::<u8, BlockQ8_K>(bytes) {
                    a.d.push(blk.d.to_f32());
                    a.qs.extend_from_slice(&blk.qs);
                    a.bsums.extend(blk.bsums.iter().map(|b| b.get()));
                }
            }
            GgmlType::F16 | GgmlType::BF16 => {
                a.halves = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            }
            GgmlType::F32 => {
                a.f32s = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            }
            _ => return Err(KernelError::NotActivationType { ty }),
        }
        Ok(a)
    }

    /// Every row's quants, row-major (empty for 16-bit and f32 types).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn all_qs(&self) -> &[i8] {
        &self.qs
    }

    /// The view of row `i` the kernels read. `i < m` must hold.
    pub(crate) fn row(&self, i: usize) -> ActRow<'_> {
        debug_assert!(i < self.m);
        let n = self.cols;
        let ty = self.ty();
        let bs = ty.block_size();
        let nb = n / bs;
        let pick = |v: usize| if v == 0 { 0..0 } else { i * v..(i + 1) * v };
        match ty {
            GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K => ActRow {
                qs: &self.qs[pick(n)],
                d: &self.d[pick(nb)],
                s: if self.s.is_empty() { &[] } else { &self.s[pick(nb)] },
                sums: if self.sums.is_empty() { &[] } else { &self.sums[pick(nb)] },
                bsums: if self.bsums.is_empty() { &[] } else { &self.bsums[pick(16 * nb)] },
                ..ActRow::default()
            },
            GgmlType::F16 | GgmlType::BF16 => ActRow { halves: &self.halves[pick(n)], ..ActRow::default() },
            _ => ActRow { f32s: &self.f32s[pick(n)], ..ActRow::default() },
        }
    }

    /// Resizes every buffer for `m` rows of `cols` elements of `ty`.
    fn reset(&mut self, ty: GgmlType, m: usize, cols: usize) {
        self.ty = Some(ty);
        self.m = m;
        self.cols = cols;
        let n = m * cols;
        let (q, d, s, sums, bsums, halves, f) = match ty {
            GgmlType::Q8_0 => (n, n / QK32, 0, n / QK32, 0, 0, 0),
            GgmlType::Q8_1 => (n, n / QK32, n / QK32, n / QK32, 0, 0, 0),
            GgmlType::Q8_K => (n, n / QK_K, 0, 0, n / 16, 0, 0),
            GgmlType::F16 | GgmlType::BF16 => (0, 0, 0, 0, 0, n, 0),
            _ => (0, 0, 0, 0, 0, 0, n),
        };
        self.qs.resize(q, 0);
        self.d.resize(d, 0.0);
        self.s.resize(s, 0.0);
        self.sums.resize(sums, 0);
        self.bsums.resize(bsums, 0);
        self.halves.resize(halves, 0);
        self.f32s.resize(f, 0.0);
    }
}

/// Quantizes `m` rows of `cols` f32 activations (`x` row-major, `m * cols`
/// values) into the activation type of weight type `wty`
/// ([`vec_dot_type`]); F32 keeps the values. Uses the process-wide SIMD level;
/// every level produces identical bytes for finite input.
///
/// Panics if `x.len() != m * cols` or `cols` is not a whole number of
/// activation blocks (32 for Q8_0/Q8_1, 256 for Q8_K).
pub fn quantize_acts(wty: GgmlType, x: &[f32], m: usize, cols: usize) -> QuantizedActs {
    let mut a = QuantizedActs::new();
    quantize_acts_into(wty, x, m, cols, &mut a);
    a
}

/// [`quantize_acts`] into an existing container, reusing its allocations
/// (for a decode loop that quantizes every step).
pub fn quantize_acts_into(wty: GgmlType, x: &[f32], m: usize, cols: usize, out: &mut QuantizedActs) {
    quantize_acts_verified(Verified::active(), wty, x, m, cols, out);
}

/// [`quantize_acts`] at an explicit SIMD level (tests, benchmarks). Panics
/// if the CPU lacks `level`.
pub fn quantize_acts_with(level: SimdLevel, wty: GgmlType, x: &[f32], m: usize, cols: usize) -> QuantizedActs {
    let mut a = QuantizedActs::new();
    quantize_acts_verified(crate::dot::verify(level), wty, x, m, cols, &mut a);
    a
}

pub(crate) fn quantize_acts_verified(
    v: Verified,
    wty: GgmlType,
    x: &[f32],
    m: usize,
    cols: usize,
    out: &mut QuantizedActs,
) {
    let ty = vec_dot_type(wty);
    assert!(
        Some(x.len()) == m.checked_mul(cols),
        "quantize_acts: x has {} elements, expected m * cols = {m} * {cols}",
        x.len()
    );
    assert!(
        cols.is_multiple_of(ty.block_size()),
        "quantize_acts: cols = {cols} is not a multiple of the {ty} block size {} (weights {wty})",
        ty.block_size()
    );
    out.reset(ty, m, cols);
    match ty {
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            let with_s = ty == GgmlType::Q8_1;
            let nb = cols / QK32;
            for i in 0..m {
                let xs = &x[i * cols..(i + 1) * cols];
                let qs = &mut out.qs[i * cols..(i + 1) * cols];
                let d = &mut out.d[i * nb..(i + 1) * nb];
                let sums = &mut out.sums[i * nb..(i + 1) * nb];
                let s = if with_s { &mut out.s[i * nb..(i + 1) * nb] } else { &mut [][..] };
                q8_32_row_verified(v, xs, qs, d, sums, s);
            }
        }
        GgmlType::Q8_K => {
            for ((xb, qs), (d, bsums)) in x
                .chunks_exact(QK_K)
                .zip(out.qs.chunks_exact_mut(QK_K))
                .zip(out.d.iter_mut().zip(out.bsums.chunks_exact_mut(16)))
            {
                *d = q8_k_block_verified(v, xb.try_into().unwrap(), qs.try_into().unwrap(), bsums.try_into().unwrap());
            }
        }
        GgmlType::F16 => f16_row_verified(v, x, &mut out.halves),
        GgmlType::BF16 => {
            for (h, &f) in out.halves.iter_mut().zip(x) {
                *h = bf16_bits(f);
            }
        }
        _ => out.f32s.copy_from_slice(x),
    }
}

/// One row of Q8_0/Q8_1 blocks at a verified level: quants into `qs`, the
/// f16-rounded scales (widened) into `d`, quant sums into `sums`, and, if `s`
/// is non-empty, Q8_1's `f16(d * sum)` (widened) into `s`.
fn q8_32_row_verified(v: Verified, x: &[f32], qs: &mut [i8], d: &mut [f32], sums: &mut [i32], s: &mut [f32]) {
    match v.level() {
        SimdLevel::Scalar | SimdLevel::Neon => {
            for (b, (xb, qb)) in x.chunks_exact(QK32).zip(qs.chunks_exact_mut(QK32)).enumerate() {
                let (dd, sum) = q8_32_x86(xb.try_into().unwrap(), qb.try_into().unwrap());
                d[b] = f16::from_f32(dd).to_f32();
                sums[b] = sum;
                if !s.is_empty() {
                    s[b] = q8_1_s(dd, sum);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both x86 levels imply AVX2, FMA and F16C (`SimdLevel::is_available`);
        // the slices have the lengths the function documents (checked above).
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe {
            crate::avx2_q8::quantize_q8_32_row(x, qs, d, sums, s)
        },
        #[cfg(not(target_arch = "x86_64"))]
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            unreachable!("x86 levels are never verified off x86-64")
        }
    }
}

fn q8_k_block_verified(v: Verified, x: &[f32; QK_K], qs: &mut [i8; QK_K], bsums: &mut [i16; 16]) -> f32 {
    match v.level() {
        SimdLevel::Scalar | SimdLevel::Neon => q8_k_block(x, qs, bsums),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both x86 levels imply AVX2, FMA and F16C.
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe {
            crate::avx2_q8::quantize_q8_k_block(x, qs, bsums)
        },
        #[cfg(not(target_arch = "x86_64"))]
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            unreachable!("x86 levels are never verified off x86-64")
        }
    }
}

/// `out[j]` = the f16 bits of `x[j]`, rounded to nearest even (as
/// llama.cpp stores an f16 KV cache). Panics if the lengths differ.
pub fn f32_to_f16(x: &[f32], out: &mut [u16]) {
    assert!(x.len() == out.len(), "f32_to_f16: {} values into {} halves", x.len(), out.len());
    f16_row_verified(Verified::active(), x, out)
}

/// f32 to f16 bits, round to nearest even, at a verified level.
fn f16_row_verified(v: Verified, x: &[f32], out: &mut [u16]) {
    match v.level() {
        SimdLevel::Scalar | SimdLevel::Neon => {
            for (h, &f) in out.iter_mut().zip(x) {
                *h = f16::from_f32(f).to_bits();
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both x86 levels imply AVX2, FMA and F16C; `out` and `x` have
        // the same length (both `m * cols`).
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { crate::avx2_q8::f16_row(x, out) },
        #[cfg(not(target_arch = "x86_64"))]
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            unreachable!("x86 levels are never verified off x86-64")
        }
    }
}

/// f32 to bf16 bits exactly as ggml's `GGML_FP32_TO_BF16`: round to nearest
/// even, NaN made quiet. Plain integer code (the compiler vectorises it), the
/// same at every level.
#[inline(always)]
pub(crate) fn bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        ((u >> 16) | 64) as u16
    } else {
        (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16
    }
}

/// Q8_1's `s` field: `f16(d * sum)` with the unrounded f32 `d`, widened back.
#[inline]
pub(crate) fn q8_1_s(d: f32, sum: i32) -> f32 {
    f16::from_f32(d * sum as f32).to_f32()
}

/// Largest `|x_j|` of a block (0 for an all-zero block).
#[inline(always)]
fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// One 32-value block, llama.cpp's x86 rule: returns the unrounded f32
/// `d = amax / 127` and the sum of the quants; `q = round_half_even(x * 127 / amax)`.
#[inline]
pub(crate) fn q8_32_x86(x: &[f32; QK32], qs: &mut [i8; QK32]) -> (f32, i32) {
    let amax = amax(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        // |v * id| <= 127 * (1 + 2^-23)^2 < 127.5 for finite input, so the
        // clamp only matters for non-finite values.
        let r = ((v * id).round_ties_even() as i32).clamp(-128, 127);
        *q = r as i8;
        sum += r;
    }
    (d, sum)
}

/// One 32-value block, ggml's portable reference rule (and gguf-py's):
/// `id = 1 / d`, round half away from zero. Returns `(d, sum)` like
/// [`q8_32_x86`].
#[inline]
fn q8_32_ggml_ref(x: &[f32; QK32], qs: &mut [i8; QK32]) -> (f32, i32) {
    let d = amax(x) / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let r = ((v * id).round() as i32).clamp(-128, 127);
        *q = r as i8;
        sum += r;
    }
    (d, sum)
}

/// One Q8_K block (ggml's only rule, see the module docs): quants and group
/// sums; returns `d`.
#[inline]
pub(crate) fn q8_k_block(x: &[f32; QK_K], qs: &mut [i8; QK_K], bsums: &mut [i16; 16]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
            max = v;
        }
    }
    if amax == 0.0 {
        qs.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = ((iscale * v).round_ties_even() as i32).clamp(-128, 127) as i8;
    }
    for (bs, g) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
        *bs = g.iter().map(|&q| q as i16).sum();
    }
    1.0 / iscale
}

/// Quantizes `x` (`32 * out.len()` values) to Q8_0 blocks with llama.cpp's
/// x86 rule (the rule [`quantize_acts`] uses). Scalar code.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    q8_0_blocks(x, out, q8_32_x86);
}

/// Quantizes `x` to Q8_0 blocks with ggml's portable reference rule
/// (`quantize_row_q8_0_ref`, as gguf-py and model-file converters do).
pub fn quantize_row_q8_0_ggml_ref(x: &[f32], out: &mut [BlockQ8_0]) {
    q8_0_blocks(x, out, q8_32_ggml_ref);
}

/// Quantizes `x` (`32 * out.len()` values) to Q8_1 blocks with llama.cpp's
/// x86 rule (the rule [`quantize_acts`] uses). Scalar code.
pub fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    q8_1_blocks(x, out, q8_32_x86);
}

/// Quantizes `x` to Q8_1 blocks with ggml's portable reference rule
/// (`quantize_row_q8_1_ref`).
pub fn quantize_row_q8_1_ggml_ref(x: &[f32], out: &mut [BlockQ8_1]) {
    q8_1_blocks(x, out, q8_32_ggml_ref);
}

/// Quantizes `x` (`256 * out.len()` values) to Q8_K blocks (ggml's
/// `quantize_row_q8_K_ref`, the rule everywhere). Scalar code.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8_K]) {
    assert_eq!(x.len(), QK_K * out.len(), "quantize_row_q8_k: x has {} values for {} blocks", x.len(), out.len());
    for (xb, blk) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut bsums = [0i16; 16];
        let d = q8_k_block(xb.try_into().unwrap(), &mut blk.qs, &mut bsums);
        blk.d = F32Le::from_f32(d);
        for (o, v) in blk.bsums.iter_mut().zip(bsums) {
            *o = I16Le(v.to_le_bytes());
        }
    }
}

type Block32Fn = fn(&[f32; QK32], &mut [i8; QK32]) -> (f32, i32);

fn q8_0_blocks(x: &[f32], out: &mut [BlockQ8_0], f: Block32Fn) {
    assert_eq!(x.len(), QK32 * out.len(), "quantize_row_q8_0: x has {} values for {} blocks", x.len(), out.len());
    for (xb, blk) in x.chunks_exact(QK32).zip(out.iter_mut()) {
        let (d, _) = f(xb.try_into().unwrap(), &mut blk.qs);
        blk.d = F16Le::from_f32(d);
    }
}

fn q8_1_blocks(x: &[f32], out: &mut [BlockQ8_1], f: Block32Fn) {
    assert_eq!(x.len(), QK32 * out.len(), "quantize_row_q8_1: x has {} values for {} blocks", x.len(), out.len());
    for (xb, blk) in x.chunks_exact(QK32).zip(out.iter_mut()) {
        let (d, sum) = f(xb.try_into().unwrap(), &mut blk.qs);
        blk.d = F16Le::from_f32(d);
        blk.s = F16Le::from_f32(d * sum as f32);
    }
}
