//! Dot products: the f32 dot, the scalar reference row dot, and the fast
//! row dot with its per-level dispatch.

use crate::dequant::{dequantize_row, with_block_type, Dequantize};
use crate::dispatch::{SimdLevel, Verified};
use crate::types::GgmlType;

/// Elements decoded at a time by the block-wise kernels (one K-quant
/// super-block, or eight 32-element blocks).
pub(crate) const CHUNK: usize = 256;

/// Plain f32 dot product of two equal-length slices.
///
/// Uses the process-wide SIMD level ([`crate::dispatch::active`]); the
/// scalar version keeps 16 independent partial sums so the compiler can
/// vectorise it. Panics if the lengths differ.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: slices differ in length");
    dot_f32_verified(Verified::active(), a, b)
}

/// [`dot_f32`] at an explicit level. Panics if the CPU lacks `level` or the
/// lengths differ.
pub fn dot_f32_with(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32_with: slices differ in length");
    dot_f32_verified(verify(level), a, b)
}

/// Scalar reference dot product between one stored row (`row`, `ty`-encoded,
/// `x.len()` elements) and `x`.
///
/// Decodes the row with [`dequantize_row`] and sums the products in f64
/// (each f32*f32 product is exact in f64), so it is the most accurate and
/// simplest version; it allocates and is slow. Panics if `row` is not
/// `ty.row_bytes(x.len())` bytes long.
pub fn vec_dot_ref(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let mut w = vec![0f32; x.len()];
    if let Err(e) = dequantize_row(ty, row, &mut w) {
        panic!("vec_dot_ref: {e}");
    }
    let sum: f64 = w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
    sum as f32
}

/// Fast dot product between one stored row and `x` (same contract as
/// [`vec_dot_ref`]). Decodes block by block into a stack buffer (no heap
/// allocation) or, where a SIMD kernel exists, in registers. Accumulates in
/// f32, so it differs from [`vec_dot_ref`] by rounding only.
///
/// Panics if `x.len()` is not a multiple of the block size or `row` is not
/// `ty.row_bytes(x.len())` bytes long.
pub fn vec_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    check_row(ty, row.len(), x.len(), "vec_dot");
    vec_dot_verified(Verified::active(), ty, row, x)
}

/// [`vec_dot`] at an explicit level (for tests and benchmarks). Panics if the
/// CPU lacks `level`, or on the length errors [`vec_dot`] panics on.
pub fn vec_dot_with(level: SimdLevel, ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    check_row(ty, row.len(), x.len(), "vec_dot_with");
    vec_dot_verified(verify(level), ty, row, x)
}

#[track_caller]
pub(crate) fn verify(level: SimdLevel) -> Verified {
    match Verified::new(level) {
        Some(v) => v,
        None => panic!("SIMD level {level} is not supported by this CPU"),
    }
}

/// Panics unless `row_len` bytes hold exactly `n` elements of `ty`.
#[track_caller]
pub(crate) fn check_row(ty: GgmlType, row_len: usize, n: usize, what: &str) {
    let Some(expected) = ty.row_bytes(n) else {
        panic!("{what}: {n} elements is not a multiple of the {ty} block size {}", ty.block_size());
    };
    assert!(row_len == expected, "{what}: a {ty} row of {n} elements takes {expected} bytes, got {row_len}");
}

/// f32 dot at a verified level; lengths must match.
#[inline]
pub(crate) fn dot_f32_verified(v: Verified, a: &[f32], b: &[f32]) -> f32 {
    match v.level() {
        SimdLevel::Scalar | SimdLevel::Neon => dot_f32_scalar(a, b),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Verified` holding `Avx2Fma` or `Avx512Vnni` is only made
        // after checking that the CPU supports AVX2, FMA and F16C (the AVX-512
        // level requires them too, see `SimdLevel::is_available`).
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { crate::avx2::dot_f32(a, b) },
        #[cfg(not(target_arch = "x86_64"))]
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            unreachable!("x86 levels are never verified off x86-64")
        }
    }
}

/// Four dot products sharing one `x`: `out[k] = dot(rows[k], x)`, at a
/// verified level. Each row's arithmetic is the same whichever slot it is in
/// and whatever the other rows are, so results do not depend on how rows are
/// grouped. All slices must have `x.len()` elements.
#[inline]
pub(crate) fn dot4_verified(v: Verified, rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    for r in rows {
        debug_assert_eq!(r.len(), x.len());
    }
    match v.level() {
        SimdLevel::Scalar | SimdLevel::Neon => dot4_scalar(rows, x),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_f32_verified`, the CPU supports AVX2, FMA and F16C.
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { crate::avx2::dot4(rows, x) },
        #[cfg(not(target_arch = "x86_64"))]
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            unreachable!("x86 levels are never verified off x86-64")
        }
    }
}

/// Portable [`dot4_verified`]: 8 accumulators per row, reduced pairwise.
pub(crate) fn dot4_scalar(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    const LANES: usize = 8;
    let n = x.len();
    let rows = rows.map(|r| &r[..n]);
    let mut acc = [[0f32; LANES]; 4];
    let full = n - n % LANES;
    for (c, xc) in x[..full].chunks_exact(LANES).enumerate() {
        for (a, r) in acc.iter_mut().zip(rows) {
            let rc = &r[c * LANES..(c + 1) * LANES];
            for ((s, &p), &q) in a.iter_mut().zip(rc).zip(xc) {
                *s += p * q;
            }
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), r) in out.iter_mut().zip(acc).zip(rows) {
        let [a0, a1, a2, a3, a4, a5, a6, a7] = a;
        let mut sum = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7));
        for (&p, &q) in r[full..].iter().zip(&x[full..]) {
            sum += p * q;
        }
        *o = sum;
    }
    out
}

/// Row dot at a verified level; `row` must already be checked by [`check_row`].
#[inline]
pub(crate) fn vec_dot_verified(v: Verified, ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    match v.level() {
        SimdLevel::Scalar | SimdLevel::Neon => vec_dot_scalar(ty, row, x),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_f32_verified`, the CPU supports AVX2, FMA and
        // F16C; `row` holds `x.len()` elements (checked by the callers).
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { crate::avx2::vec_dot(ty, row, x) },
        #[cfg(not(target_arch = "x86_64"))]
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni | SimdLevel::Amx => {
            unreachable!("x86 levels are never verified off x86-64")
        }
    }
}

/// Portable f32 dot: 16 independent accumulators (vectorisable without
/// reassociation), reduced pairwise at the end.
#[inline]
pub(crate) fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let a_chunks = a.chunks_exact(LANES);
    let b_chunks = b.chunks_exact(LANES);
    let mut tail = 0f32;
    for (x, y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        tail += x * y;
    }
    for (x, y) in a_chunks.zip(b_chunks) {
        for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        let (lo, hi) = acc.split_at_mut(width);
        for (s, &t) in lo.iter_mut().zip(hi.iter()) {
            *s += t;
        }
    }
    acc[0] + tail
}

/// Block-wise row dot: decode up to [`CHUNK`] elements into a stack buffer,
/// dot them with `x` using `dot`, accumulate. `row` must hold exactly
/// `x.len()` elements of `B`.
#[inline(always)]
pub(crate) fn vec_dot_blocks<B: Dequantize>(row: &[u8], x: &[f32], dot: impl Fn(&[f32], &[f32]) -> f32) -> f32 {
    let blocks: &[B] = bytemuck::cast_slice(row);
    debug_assert_eq!(blocks.len() * B::ELEMS, x.len());
    let per_chunk = CHUNK / B::ELEMS;
    let mut buf = [0f32; CHUNK];
    let mut sum = 0f32;
    for (bs, xs) in blocks.chunks(per_chunk).zip(x.chunks(CHUNK)) {
        for (b, out) in bs.iter().zip(buf.chunks_exact_mut(B::ELEMS)) {
            b.dequantize(out);
        }
        sum += dot(&buf[..xs.len()], xs);
    }
    sum
}

/// The scalar-level row dot.
pub(crate) fn vec_dot_scalar(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    if ty == GgmlType::F32 {
        if let Ok(w) = bytemuck::try_cast_slice::<u8, f32>(row) {
            if cfg!(target_endian = "little") {
                return dot_f32_scalar(w, x);
            }
        }
    }
    with_block_type!(ty, B => vec_dot_blocks::<B>(row, x, dot_f32_scalar))
}
