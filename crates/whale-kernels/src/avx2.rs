//! AVX2 + FMA kernels (x86-64 only).
//!
//! Every function here is an `unsafe fn` with
//! `#[target_feature(enable = "avx2,fma,f16c")]`; the caller must have checked
//! that the running CPU supports AVX2, FMA and F16C (in this crate: by holding a
//! `dispatch::Verified` at the `Avx2Fma` level). Row/length contracts are the
//! same as for the scalar kernels and are checked by the public entry points
//! before these are reached.
//!
//! The kernels decode quants in registers and accumulate in f32 with FMA;
//! they differ from the scalar path by rounding only and are tested against
//! [`crate::vec_dot_ref`] for every type.

use core::arch::x86_64::*;

use crate::blocks::*;
use crate::dequant::{k_scale_min, with_block_type};
use crate::dot::vec_dot_blocks;
use crate::types::GgmlType;

/// Row dot for any type: dedicated kernels for the common formats, else
/// the generic decode-into-buffer loop compiled for AVX2 with [`dot_f32`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `row` must hold exactly `x.len()`
/// elements of `ty` (whole blocks).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    use bytemuck::cast_slice;
    match ty {
        GgmlType::Q4_0 => q4_0(cast_slice(row), x),
        GgmlType::Q4_1 => q4_1(cast_slice(row), x),
        GgmlType::Q5_0 => q5_0(cast_slice(row), x),
        GgmlType::Q5_1 => q5_1(cast_slice(row), x),
        GgmlType::Q8_0 => q8_0(cast_slice(row), x),
        GgmlType::Q4_K => q4_k(cast_slice(row), x),
        GgmlType::Q5_K => q5_k(cast_slice(row), x),
        GgmlType::Q6_K => q6_k(cast_slice(row), x),
        // x86-64 is little-endian, so an aligned F32 row is an `[f32]`.
        GgmlType::F32 => match bytemuck::try_cast_slice::<u8, f32>(row) {
            Ok(w) => dot_f32(w, x),
            Err(_) => vec_dot_blocks::<F32Le>(row, x, |a, b| dot_f32(a, b)),
        },
        GgmlType::F16 => half_row::<false>(row, x),
        GgmlType::BF16 => half_row::<true>(row, x),
        _ => with_block_type!(ty, B => vec_dot_blocks::<B>(row, x, |a, b| dot_f32(a, b))),
    }
}

/// f32 dot product over `min(a.len(), b.len())` elements, four 8-lane
/// FMA accumulators.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut acc2 = _mm256_setzero_ps();
    let mut acc3 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 <= n and both slices hold at least n elements, so
        // the four unaligned 8-float loads from each stay in bounds.
        unsafe {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
            acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 16)), _mm256_loadu_ps(pb.add(i + 16)), acc2);
            acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 24)), _mm256_loadu_ps(pb.add(i + 24)), acc3);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, in bounds for both slices.
        unsafe {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        }
        i += 8;
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
    let mut sum = hsum(acc);
    for (p, q) in a[i..n].iter().zip(&b[i..n]) {
        sum += p * q;
    }
    sum
}

/// Four f32 dots sharing `x` (see `dot::dot4_verified`): two 8-lane
/// accumulators per row, `x` loaded once per step for all four rows.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    let n = x.len();
    let rows = rows.map(|r| &r[..n]);
    let mut lo = [_mm256_setzero_ps(); 4];
    let mut hi = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 16 <= n {
        let (x0, x1) = (load8(x, i), load8(x, i + 8));
        for k in 0..4 {
            lo[k] = _mm256_fmadd_ps(load8(rows[k], i), x0, lo[k]);
            hi[k] = _mm256_fmadd_ps(load8(rows[k], i + 8), x1, hi[k]);
        }
        i += 16;
    }
    if i + 8 <= n {
        let x0 = load8(x, i);
        for k in 0..4 {
            lo[k] = _mm256_fmadd_ps(load8(rows[k], i), x0, lo[k]);
        }
        i += 8;
    }
    let mut out = [0f32; 4];
    for k in 0..4 {
        let mut sum = hsum(_mm256_add_ps(lo[k], hi[k]));
        for (&p, &q) in rows[k][i..].iter().zip(&x[i..]) {
            sum += p * q;
        }
        out[k] = sum;
    }
    out
}

/// Decodes every weight of a row into `out` (whole blocks; `out.len()`
/// elements): the scalar decoders, compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `row` must hold exactly
/// `out.len()` elements of `ty`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    with_block_type!(ty, B => crate::dequant::dequantize_blocks::<B>(row, out))
}

/// Widens 8 packed 16-bit floats to f32: bfloat16 if `BF16`, else IEEE half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn widen<const BF16: bool>(p: __m128i) -> __m256 {
    if BF16 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(p)))
    } else {
        _mm256_cvtph_ps(p)
    }
}

/// Dot of a row of 16-bit floats (BF16 if `BF16`, else F16) with `x`.
/// Two accumulators.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn half_row<const BF16: bool>(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    debug_assert_eq!(row.len(), 2 * n);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        let b = &row[2 * i..2 * i + 32];
        // SAFETY: `b` holds exactly 32 bytes = 16 values; loadu is unaligned.
        let (p0, p1) = unsafe { (_mm_loadu_si128(b.as_ptr().cast()), _mm_loadu_si128(b.as_ptr().add(16).cast())) };
        acc0 = _mm256_fmadd_ps(widen::<BF16>(p0), load8(x, i), acc0);
        acc1 = _mm256_fmadd_ps(widen::<BF16>(p1), load8(x, i + 8), acc1);
        i += 16;
    }
    let mut sum = hsum(_mm256_add_ps(acc0, acc1));
    // Tail (< 16 values): widen up to 8 at a time from a zero-padded copy.
    while i < n {
        let k = (n - i).min(8);
        let mut padded = [0u8; 16];
        padded[..2 * k].copy_from_slice(&row[2 * i..2 * (i + k)]);
        let mut wide = [0f32; 8];
        // SAFETY: `padded` is 16 bytes and `wide` 8 floats; both unaligned ops.
        unsafe {
            let p = _mm_loadu_si128(padded.as_ptr().cast());
            _mm256_storeu_ps(wide.as_mut_ptr(), widen::<BF16>(p));
        }
        for (a, b) in wide[..k].iter().zip(&x[i..i + k]) {
            sum += a * b;
        }
        i += k;
    }
    sum
}

/// `R` rows' [`half_row`] (a whole number of 16-value chunks) sharing the
/// loads of `x`: the same operations in the same order for each row, so
/// each result is the bits of [`half_row`]; the rows' streams interleave,
/// which keeps more cache lines in flight. Compiled with AVX-512VL for the
/// 32 vector registers that 8 rows' accumulators need; the arithmetic stays
/// 256-bit.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C, AVX-512 F and VL; every row holds
/// `2 * x.len()` bytes and `x.len()` is a multiple of 16.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
#[allow(clippy::needless_range_loop)] // r indexes the rows and both accumulators
pub(crate) unsafe fn half_rows<const BF16: bool, const R: usize>(rows: [&[u8]; R], x: &[f32]) -> [f32; R] {
    let n = x.len();
    debug_assert!(n.is_multiple_of(16) && rows.iter().all(|r| r.len() == 2 * n));
    let mut acc0 = [_mm256_setzero_ps(); R];
    let mut acc1 = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i + 16 <= n {
        let (x0, x1) = (load8(x, i), load8(x, i + 8));
        for r in 0..R {
            let b = rows[r].as_ptr().add(2 * i);
            acc0[r] = _mm256_fmadd_ps(widen::<BF16>(_mm_loadu_si128(b.cast())), x0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(widen::<BF16>(_mm_loadu_si128(b.add(16).cast())), x1, acc1[r]);
        }
        i += 16;
    }
    std::array::from_fn(|r| hsum(_mm256_add_ps(acc0[r], acc1[r])))
}

/// Horizontal sum of the eight lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// The eight rows' sums of accumulators `acc` (lane r = row r; `acc[k]`
/// holds the blocks `b % 8 == k`): the tree that
/// [`hsum`] takes over the lanes of one row's
/// accumulator, `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`, taken
/// across the vectors instead. Each row gets the bits `hsum` gives the
/// one-row kernels (which hold block b in lane `b % 8`), without a
/// transpose and eight horizontal sums.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn hsum_across(acc: [__m256; 8]) -> __m256 {
    let add = |a, b| _mm256_add_ps(a, b);
    add(add(add(acc[0], acc[4]), add(acc[2], acc[6])), add(add(acc[1], acc[5]), add(acc[3], acc[7])))
}

/// The eight lanes of `v`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn store8(v: __m256) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: eight floats; storeu is unaligned.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Loads 8 floats from `x[at..at + 8]` (bounds-checked).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load8(x: &[f32], at: usize) -> __m256 {
    let s = &x[at..at + 8];
    // SAFETY: `s` has exactly 8 floats; loadu has no alignment requirement.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Dot of 32 signed 8-bit quants `q` with `x[0..32]`: returns the partial
/// sums over elements 0..16 and 16..32 (as 8-lane vectors, not yet reduced),
/// so callers can apply per-16 scales.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_i8x32(q: __m256i, x: &[f32]) -> (__m256, __m256) {
    let x = &x[..32];
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    let f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    let f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(lo)));
    let f2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    let f3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(hi)));
    let a = _mm256_fmadd_ps(f1, load8(x, 8), _mm256_mul_ps(f0, load8(x, 0)));
    let b = _mm256_fmadd_ps(f3, load8(x, 24), _mm256_mul_ps(f2, load8(x, 16)));
    (a, b)
}

/// Sum of `x[0..32]` as an 8-lane vector.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn sum32(x: &[f32]) -> __m256 {
    let x = &x[..32];
    _mm256_add_ps(_mm256_add_ps(load8(x, 0), load8(x, 8)), _mm256_add_ps(load8(x, 16), load8(x, 24)))
}

/// Loads 16 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: reads exactly the 16 bytes of `b`; loadu is unaligned.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Loads 32 bytes starting at `b[at]` (bounds-checked).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn load32(b: &[u8], at: usize) -> __m256i {
    let s = &b[at..at + 32];
    // SAFETY: `s` has exactly 32 bytes; loadu is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// The 32 4-bit quants of a Q4_0/Q4_1/Q5 block, element order, 0..=15 per byte.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn nibbles32(qs: &[u8; 16]) -> __m256i {
    let v = load16(qs);
    let m4 = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(v, m4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m4);
    _mm256_set_m128i(hi, lo)
}

/// Byte j (0..32) = 0x10 if bit j of the little-endian `qh` is set, else 0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn high_bits32(qh: [u8; 4]) -> __m256i {
    // Broadcast qh; byte j takes qh byte j / 8 and tests bit j % 8.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(i32::from_le_bytes(qh)), spread);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0(blocks: &[BlockQ4_0], x: &[f32]) -> f32 {
    let eight = _mm256_set1_epi8(8);
    let mut acc = _mm256_setzero_ps();
    for (b, xs) in blocks.iter().zip(x.chunks_exact(32)) {
        let q = _mm256_sub_epi8(nibbles32(&b.qs), eight);
        let (s0, s1) = dot_i8x32(q, xs);
        acc = _mm256_fmadd_ps(_mm256_add_ps(s0, s1), _mm256_set1_ps(b.d.to_f32()), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1(blocks: &[BlockQ4_1], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for (b, xs) in blocks.iter().zip(x.chunks_exact(32)) {
        let (s0, s1) = dot_i8x32(nibbles32(&b.qs), xs);
        acc = _mm256_fmadd_ps(_mm256_add_ps(s0, s1), _mm256_set1_ps(b.d.to_f32()), acc);
        acc_m = _mm256_fmadd_ps(sum32(xs), _mm256_set1_ps(b.m.to_f32()), acc_m);
    }
    hsum(acc) + hsum(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0(blocks: &[BlockQ5_0], x: &[f32]) -> f32 {
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = _mm256_setzero_ps();
    for (b, xs) in blocks.iter().zip(x.chunks_exact(32)) {
        let q = _mm256_or_si256(nibbles32(&b.qs), high_bits32(b.qh));
        let (s0, s1) = dot_i8x32(_mm256_sub_epi8(q, sixteen), xs);
        acc = _mm256_fmadd_ps(_mm256_add_ps(s0, s1), _mm256_set1_ps(b.d.to_f32()), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1(blocks: &[BlockQ5_1], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for (b, xs) in blocks.iter().zip(x.chunks_exact(32)) {
        let q = _mm256_or_si256(nibbles32(&b.qs), high_bits32(b.qh));
        let (s0, s1) = dot_i8x32(q, xs);
        acc = _mm256_fmadd_ps(_mm256_add_ps(s0, s1), _mm256_set1_ps(b.d.to_f32()), acc);
        acc_m = _mm256_fmadd_ps(sum32(xs), _mm256_set1_ps(b.m.to_f32()), acc_m);
    }
    hsum(acc) + hsum(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0(blocks: &[BlockQ8_0], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, xs) in blocks.iter().zip(x.chunks_exact(32)) {
        let q = load32(bytemuck::cast_slice(&b.qs), 0);
        let (s0, s1) = dot_i8x32(q, xs);
        acc = _mm256_fmadd_ps(_mm256_add_ps(s0, s1), _mm256_set1_ps(b.d.to_f32()), acc);
    }
    hsum(acc)
}

/// Shared Q4_K / Q5_K body: returns `(sum_j sc_j * sum(q*x), sum_j m_j * sum(x))`
/// over the 8 sub-blocks j, with the fifth bit taken from `qh` when given; the
/// caller scales them by `d` and `dmin`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn k4_block(scales: &[u8; 12], qs: &[u8; 128], qh: Option<&[u8; 32]>, xs: &[f32]) -> (__m256, __m256) {
    let m4 = _mm256_set1_epi8(0x0F);
    let qh_v = qh.map(|h| load32(h, 0));
    let mut block = _mm256_setzero_ps();
    let mut block_m = _mm256_setzero_ps();
    for c in 0..4 {
        let v = load32(qs, 32 * c);
        let halves = [_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4)];
        for (s, mut q) in halves.into_iter().enumerate() {
            let j = 2 * c + s;
            if let Some(h) = qh_v {
                let bit = _mm256_set1_epi8(1 << j);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
                q = _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
            }
            let xj = &xs[32 * j..32 * j + 32];
            let (s0, s1) = dot_i8x32(q, xj);
            let (sc, m) = k_scale_min(scales, j);
            block = _mm256_fmadd_ps(_mm256_add_ps(s0, s1), _mm256_set1_ps(sc as f32), block);
            block_m = _mm256_fmadd_ps(sum32(xj), _mm256_set1_ps(m as f32), block_m);
        }
    }
    (block, block_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k(blocks: &[BlockQ4_K], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for (b, xs) in blocks.iter().zip(x.chunks_exact(256)) {
        let (block, block_m) = k4_block(&b.scales, &b.qs, None, xs);
        acc = _mm256_fmadd_ps(block, _mm256_set1_ps(b.d.to_f32()), acc);
        acc_m = _mm256_fmadd_ps(block_m, _mm256_set1_ps(b.dmin.to_f32()), acc_m);
    }
    hsum(acc) - hsum(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k(blocks: &[BlockQ5_K], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for (b, xs) in blocks.iter().zip(x.chunks_exact(256)) {
        let (block, block_m) = k4_block(&b.scales, &b.qs, Some(&b.qh), xs);
        acc = _mm256_fmadd_ps(block, _mm256_set1_ps(b.d.to_f32()), acc);
        acc_m = _mm256_fmadd_ps(block_m, _mm256_set1_ps(b.dmin.to_f32()), acc_m);
    }
    hsum(acc) - hsum(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k(blocks: &[BlockQ6_K], x: &[f32]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(0x03);
    let offset = _mm256_set1_epi8(32);
    let mut acc = _mm256_setzero_ps();
    for (b, xs) in blocks.iter().zip(x.chunks_exact(256)) {
        let mut block = _mm256_setzero_ps();
        for h in 0..2 {
            let ql0 = load32(&b.ql, 64 * h);
            let ql1 = load32(&b.ql, 64 * h + 32);
            let qh = load32(&b.qh, 32 * h);
            // Element 128h + 32s + l: nibble s/2 of ql[64h + 32(s%2) + l],
            // bits 2s..2s+2 of qh[32h + l].
            let lows = [
                _mm256_and_si256(ql0, m4),
                _mm256_and_si256(ql1, m4),
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
            ];
            let highs = [
                _mm256_and_si256(qh, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(qh), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(qh), m3),
            ];
            for s in 0..4 {
                let q = _mm256_or_si256(lows[s], _mm256_slli_epi16::<4>(highs[s]));
                let q = _mm256_sub_epi8(q, offset);
                let e = 128 * h + 32 * s;
                let (s0, s1) = dot_i8x32(q, &xs[e..e + 32]);
                let g = e / 16;
                block = _mm256_fmadd_ps(s0, _mm256_set1_ps(b.scales[g] as f32), block);
                block = _mm256_fmadd_ps(s1, _mm256_set1_ps(b.scales[g + 1] as f32), block);
            }
        }
        acc = _mm256_fmadd_ps(block, _mm256_set1_ps(b.d.to_f32()), acc);
    }
    hsum(acc)
}

/// Eight cached values at a time, widened to f32 (see [`crate::attn::KvSlice`]).
pub(crate) trait Rows: Copy {
    /// Values `at..at + 8`.
    ///
    /// # Safety
    /// `at + 8 <= len`; the CPU must support AVX2 and F16C.
    unsafe fn load8(self, at: usize) -> __m256;
    /// Value `at`, widened.
    fn get(self, at: usize) -> f32;
    /// Asks for values `at..at + len` to be brought into L2 (a hint: any
    /// address is sound).
    fn prefetch(self, at: usize, len: usize);
}

/// Prefetches (into L2) the lines of `bytes` bytes from `p`.
#[inline(always)]
pub(crate) fn prefetch_bytes(p: *const u8, bytes: usize) {
    let mut o = 0;
    while o < bytes {
        // SAFETY: a prefetch hint of any address is sound; the address is
        // formed with wrapping arithmetic and never dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(o).cast()) };
        o += 64;
    }
}

impl Rows for &[f32] {
    #[inline(always)]
    unsafe fn load8(self, at: usize) -> __m256 {
        debug_assert!(at + 8 <= self.len());
        // SAFETY: (caller) eight floats from `at` are in bounds.
        unsafe { _mm256_loadu_ps(self.as_ptr().add(at)) }
    }
    #[inline(always)]
    fn get(self, at: usize) -> f32 {
        self[at]
    }
    #[inline(always)]
    fn prefetch(self, at: usize, len: usize) {
        prefetch_bytes(self.as_ptr().wrapping_add(at).cast(), 4 * len);
    }
}

impl Rows for &[u16] {
    #[inline(always)]
    unsafe fn load8(self, at: usize) -> __m256 {
        debug_assert!(at + 8 <= self.len());
        // SAFETY: (caller) eight halves from `at` are in bounds; F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(self.as_ptr().add(at).cast())) }
    }
    #[inline(always)]
    fn get(self, at: usize) -> f32 {
        half::f16::from_bits(self[at]).to_f32()
    }
    #[inline(always)]
    fn prefetch(self, at: usize, len: usize) {
        prefetch_bytes(self.as_ptr().wrapping_add(at).cast(), 2 * len);
    }
}

/// See [`crate::attn::attn_scores`] (shapes checked by the caller, which
/// passes the rows in L2-sized chunks): keys `0..n_seen` (at least every
/// row's length); each score is [`dot_f32`] (the summation order of ggml's
/// `ggml_vec_dot_f32`: four 8-lane FMA accumulators over 32-element
/// steps), four rows by three keys at a time ([`dots`]).
///
/// Three keys at a time are widened to f32 into an aligned scratch that
/// stays in L1 while every query row meets them, and the query rows are
/// copied once into aligned rows (stop 54, as the AVX-512 kernel). Until
/// then each key met three rows at a time, four loads for three
/// multiply-adds.
#[target_feature(enable = "avx2,fma,f16c")]
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
    if dim < SCORE_TILE_MIN_DIM {
        // SAFETY: this function's features; the same shapes.
        return unsafe { attn_scores_narrow(q, dim, n, n_seen, keys, stride, scale, lens, out) };
    }
    // SAFETY: (caller) AVX2 and F16C; the shapes checked.
    unsafe {
        crate::attn::score_tiles::<SCORE_ROWS, SCORE_KEYS>(q, dim, n, n_seen, keys, stride, scale, lens, out, |q, k| {
            dots(q, k, dim)
        })
    }
}

/// [`attn_scores`] for rows narrower than [`SCORE_TILE_MIN_DIM`]: each
/// key widened from f16 into a scratch row once for all the rows, and
/// met by three rows at a time ([`dots_3x1`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attn_scores_narrow(
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
    let mut wide = Vec::new();
    for p in 0..n_seen {
        let k = match keys {
            crate::attn::KvSlice::F32(keys) => &keys[p * stride..p * stride + dim],
            crate::attn::KvSlice::F16(keys) => {
                wide.resize(dim, 0.0);
                widen_row(&keys[p * stride..p * stride + dim], &mut wide);
                &wide[..]
            }
        };
        let mut i = 0;
        while i + 3 <= lens.len() {
            if lens[i..i + 3].iter().any(|&l| p < l) {
                let rows =
                    [&q[i * dim..(i + 1) * dim], &q[(i + 1) * dim..(i + 2) * dim], &q[(i + 2) * dim..(i + 3) * dim]];
                // SAFETY: this function's features; the three rows and the key hold `dim` floats.
                let d = unsafe { dots_3x1(rows, k) };
                for (r, x) in d.into_iter().enumerate() {
                    if p < lens[i + r] {
                        out[(i + r) * n + p] = x * scale;
                    }
                }
            }
            i += 3;
        }
        for (i, &len) in lens.iter().enumerate().skip(i) {
            if p < len {
                out[i * n + p] = dot_f32(&q[i * dim..(i + 1) * dim], k) * scale;
            }
        }
    }
}

/// [`dot_f32`] of three rows with one key, each in its order: the key's
/// chunks are loaded once for the three (12 accumulators of the 16
/// registers), where one dot at a time loads two vectors a multiply-add.
///
/// # Safety
/// The CPU must support AVX2 and FMA; the four slices have one length.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed [row][chunk]
unsafe fn dots_3x1(q: [&[f32]; 3], k: &[f32]) -> [f32; 3] {
    let n = k.len();
    debug_assert!(q.iter().all(|r| r.len() == n));
    let mut acc = [[_mm256_setzero_ps(); 4]; 3];
    let mut i = 0;
    // SAFETY (every load): `i + 8 * c + 8 <= n`, in bounds of the key and the three rows.
    unsafe {
        while i + 32 <= n {
            for c in 0..4 {
                let kv = _mm256_loadu_ps(k.as_ptr().add(i + 8 * c));
                for r in 0..3 {
                    acc[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(q[r].as_ptr().add(i + 8 * c)), kv, acc[r][c]);
                }
            }
            i += 32;
        }
        while i + 8 <= n {
            let kv = _mm256_loadu_ps(k.as_ptr().add(i));
            for r in 0..3 {
                acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(q[r].as_ptr().add(i)), kv, acc[r][0]);
            }
            i += 8;
        }
    }
    let mut out = [0f32; 3];
    for r in 0..3 {
        let a = &acc[r];
        let v = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        // SAFETY: this function's features include AVX2.
        let mut sum = unsafe { hsum(v) };
        for (x, y) in q[r][i..n].iter().zip(&k[i..n]) {
            sum += x * y;
        }
        out[r] = sum;
    }
    out
}

/// Rows narrower than this go one key at a time ([`attn_scores_narrow`]):
/// the four passes of [`dots`] over a row of 64 cost more than they save
/// (GQA's 64-float heads, `attn_decode 4096 14 2 2 64 64` at AVX2: 0.59
/// against 0.69 ms a layer), from 128 on they save (`attn_decode 4096 28 2
/// 4 128 128`: 2.0 → 1.85 ms; V3's 576: 15.1–15.4 → 11.8–12.1 ms).
const SCORE_TILE_MIN_DIM: usize = 128;

/// Query rows and keys [`attn_scores`] takes at a time: 4 × 3 dots, one
/// accumulator each in a pass, 12 of the 16 registers.
const SCORE_ROWS: usize = 4;
const SCORE_KEYS: usize = 3;

/// One pass of [`dots`]: for each row and key, accumulator `off / 8` of
/// [`dot_f32`] (elements `off..off + 8` of every 32-element step).
///
/// # Safety
/// The CPU must support AVX2 and FMA; every row holds `dim` floats.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline(never)]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed [row][key]
unsafe fn dots_pass<const RR: usize, const KK: usize>(
    q: [&[f32]; RR],
    k: [&[f32]; KK],
    dim: usize,
    off: usize,
    out: &mut [[__m256; KK]; RR],
) {
    let mut acc = [[_mm256_setzero_ps(); KK]; RR];
    let mut i = 0;
    // SAFETY (every load): `i + off + 8 <= i + 32 <= dim`, in bounds of
    // every row.
    unsafe {
        while i + 32 <= dim {
            let kv: [__m256; KK] = core::array::from_fn(|j| _mm256_loadu_ps(k[j].as_ptr().add(i + off)));
            for r in 0..RR {
                let a = _mm256_loadu_ps(q[r].as_ptr().add(i + off));
                for j in 0..KK {
                    acc[r][j] = _mm256_fmadd_ps(a, kv[j], acc[r][j]);
                }
            }
            i += 32;
        }
    }
    *out = acc;
}

/// `dot_f32(q[r], k[j])` for `RR` rows and `KK` keys, each with
/// [`dot_f32`]'s operations in its order: each of its four accumulators in
/// a pass of its own over the rows ([`dots_pass`]), so that a pass holds one
/// register a dot and each query vector loaded serves `KK` keys.
///
/// # Safety
/// The CPU must support AVX2 and FMA; each row holds `dim` floats.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::needless_range_loop)] // the accumulators are indexed [row][key]
unsafe fn dots<const RR: usize, const KK: usize>(q: [&[f32]; RR], k: [&[f32]; KK], dim: usize) -> [[f32; KK]; RR] {
    let mut acc = [[[_mm256_setzero_ps(); KK]; RR]; 4];
    for (c, a) in acc.iter_mut().enumerate() {
        // SAFETY: (caller) the rows hold `dim` floats; this function's features.
        unsafe { dots_pass(q, k, dim, 8 * c, a) };
    }
    let body = dim / 32 * 32;
    let mut out = [[0f32; KK]; RR];
    for r in 0..RR {
        for j in 0..KK {
            let mut a0 = acc[0][r][j];
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
            let v = _mm256_add_ps(_mm256_add_ps(a0, acc[1][r][j]), _mm256_add_ps(acc[2][r][j], acc[3][r][j]));
            // SAFETY: this function's features.
            let mut sum = unsafe { hsum(v) };
            for (x, y) in q[r][t..dim].iter().zip(&k[j][t..dim]) {
                sum += x * y;
            }
            out[r][j] = sum;
        }
    }
    out
}

/// `out[j] = f32(h[j])`, exact.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn widen_row(h: &[u16], out: &mut [f32]) {
    let mut j = 0;
    while j + 8 <= out.len() {
        // SAFETY: j + 8 <= len of both (equal lengths); F16C.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(j), h.load8(j)) };
        j += 8;
    }
    for (o, &x) in out[j..].iter_mut().zip(&h[j..]) {
        *o = half::f16::from_bits(x).to_f32();
    }
}

/// Positions a pass of [`weighted_sum_from`] takes at a time (as
/// `avx512::WSUM_POSITIONS`): their value rows stay in L2 while every
/// block of rows meets them.
const WSUM_POSITIONS: usize = 256;

/// Columns `c0..dim` of the weighted sums, each `o += w[p] * v[p]` in
/// position order with a separate multiply and add (no FMA), the
/// arithmetic of the scalar reference.
///
/// As the AVX-512 kernel: a block of positions at a time, the rows in
/// blocks of 8, 6, 4, 2 or 1 with their weights copied position-major, the
/// columns in chunks of 8 (one to four a block: at most 12 accumulators of
/// the 16 registers), the accumulators kept in `out` between position
/// blocks, and the value rows of the next block of positions prefetched.
/// Columns past the last multiple of 8 are summed one at a time.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn weighted_sum_from<R: Rows>(
    w: &[f32],
    n: usize,
    values: R,
    stride: usize,
    dim: usize,
    c0: usize,
    lens: &[usize],
    out: &mut [f32],
) {
    let wide = c0 + (dim - c0) / 8 * 8;
    sums8(w, n, values, stride, dim, c0..wide, lens, out);
    for j in wide..dim {
        for (i, &len) in lens.iter().enumerate() {
            out[i * dim + j] = (0..len).fold(0.0, |acc, p| acc + w[i * n + p] * values.get(p * stride + j));
        }
    }
}

/// Defines the tile type of an x86 weighted sum: `$name<'a, R>` adds a
/// block of positions to rows `h0..h0 + HB` of `out`, over columns `cols`
/// (a multiple of `$lanes`), with one `$vec` accumulator a row and chunk of
/// `$lanes` columns. Both levels take their tile from here ([`Block8`] over
/// 256-bit vectors, `avx512::Block` over 512-bit ones) so that their
/// arithmetic stays one text: a multiply then an add (no FMA), in position
/// order, the scalar reference's. A macro rather than a generic, because a
/// function that takes or returns a 512-bit vector must enable AVX-512
/// itself, so the vector type and the target features go together.
macro_rules! wsum_tile {
    (
        $sums:ident, $name:ident, $rows:path, $load:ident, $vec:ty, $lanes:literal, $features:tt,
        $loadu:ident, $storeu:ident, $set1:ident, $add:ident, $mul:ident,
        [$($left:pat => $hb:literal, $cb:literal;)*]
    ) => {
        /// Columns `cols` (a multiple of the lanes) of the weighted sums,
        /// a block of positions at a time ([`WSUM_POSITIONS`]), the value
        /// rows of the next block prefetched (the kernel reads 64 bytes of
        /// a row at a time, rows 1 KiB or more apart, a pattern the
        /// hardware prefetchers do not follow); in each, the rows in the
        /// blocks this level's table picks by the rows left.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        fn $sums<R: $rows>(
            w: &[f32],
            n: usize,
            values: R,
            stride: usize,
            dim: usize,
            cols: std::ops::Range<usize>,
            lens: &[usize],
            out: &mut [f32],
        ) {
            let nh = out.len() / dim;
            let longest = lens.iter().copied().max().unwrap_or(0);
            for r in 0..nh {
                out[r * dim + cols.start..r * dim + cols.end].fill(0.0);
            }
            let fetch = |ps: std::ops::Range<usize>| {
                for p in ps {
                    values.prefetch(p * stride + cols.start, cols.len());
                }
            };
            fetch(0..longest.min(WSUM_POSITIONS));
            let mut wt = Vec::new();
            for p0 in (0..longest).step_by(WSUM_POSITIONS) {
                let ps = p0..(p0 + WSUM_POSITIONS).min(longest);
                fetch(ps.end..(ps.end + WSUM_POSITIONS).min(longest));
                let mut h0 = 0;
                while h0 < nh {
                    let at = $name { w, n, values, stride, dim, cols: cols.clone(), lens, h0, ps: ps.clone() };
                    h0 += match nh - h0 {
                        $($left => at.run::<$hb, $cb>(&mut wt, out),)*
                    };
                }
            }
        }

        /// Rows `h0..h0 + HB` of a weighted sum over positions `ps`.
        struct $name<'a, R> {
            w: &'a [f32],
            n: usize,
            values: R,
            stride: usize,
            dim: usize,
            /// Columns, a multiple of the lanes of them.
            cols: std::ops::Range<usize>,
            lens: &'a [usize],
            h0: usize,
            ps: std::ops::Range<usize>,
        }

        impl<R: $rows> $name<'_, R> {
            /// Adds the block's positions to `HB` rows of `out`, `CB`
            /// chunks of columns at a time (the last ones one at a time);
            /// returns `HB`.
            #[target_feature(enable = $features)]
            fn run<const HB: usize, const CB: usize>(&self, wt: &mut Vec<f32>, out: &mut [f32]) -> usize {
                let Some((lens, common)) =
                    crate::attn::position_major::<HB>(self.w, self.n, self.lens, self.h0, &self.ps, wt)
                else {
                    return HB;
                };
                let mut c = self.cols.start;
                while c < self.cols.end {
                    if self.cols.end - c >= $lanes * CB {
                        self.tile::<HB, CB>(wt, &lens, common, c, out);
                        c += $lanes * CB;
                    } else {
                        self.tile::<HB, 1>(wt, &lens, common, c, out);
                        c += $lanes;
                    }
                }
                HB
            }

            /// Columns `c..c + $lanes * CB` of the block's rows.
            #[target_feature(enable = $features)]
            #[inline]
            #[allow(clippy::needless_range_loop)] // the accumulators are indexed [row][chunk]
            fn tile<const HB: usize, const CB: usize>(
                &self,
                wt: &[f32],
                lens: &[usize; HB],
                common: usize,
                c: usize,
                out: &mut [f32],
            ) {
                let p0 = self.ps.start;
                let at = |i: usize, j: usize| (self.h0 + i) * self.dim + c + $lanes * j;
                // SAFETY: each row of `out` holds `dim >= cols.end >= c + $lanes * CB` floats.
                let mut acc: [[$vec; CB]; HB] =
                    core::array::from_fn(|i| core::array::from_fn(|j| unsafe { $loadu(out.as_ptr().add(at(i, j))) }));
                for (k, ws) in wt.chunks_exact(HB).enumerate() {
                    let p = p0 + k;
                    // SAFETY: the caller checked that `n` rows of `dim` at
                    // `stride` fit, p < n, and c + $lanes (j + 1) <= dim.
                    let v: [$vec; CB] =
                        core::array::from_fn(|j| unsafe { self.values.$load(p * self.stride + c + $lanes * j) });
                    for i in 0..HB {
                        if p < common || p < lens[i] {
                            let wp = $set1(ws[i]);
                            for j in 0..CB {
                                acc[i][j] = $add(acc[i][j], $mul(wp, v[j]));
                            }
                        }
                    }
                }
                for i in 0..HB {
                    for j in 0..CB {
                        // SAFETY: as for the loads.
                        unsafe { $storeu(out.as_mut_ptr().add(at(i, j)), acc[i][j]) };
                    }
                }
            }
        }
    };
}
pub(crate) use wsum_tile;

wsum_tile!(
    sums8,
    Block8,
    Rows,
    load8,
    __m256,
    8,
    "avx2,fma,f16c",
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_add_ps,
    _mm256_mul_ps,
    [8.. => 8, 1; 6 | 7 => 6, 2; 4 | 5 => 4, 2; 2 | 3 => 2, 4; _ => 1, 4;]
);

/// Columns `c0..dim` of [`crate::attn::attn_weighted_sum`] (shapes checked
/// by the caller): all of them at the AVX2 level, the tail of the AVX-512
/// kernel's.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attn_weighted_sum_cols(
    w: &[f32],
    n: usize,
    values: crate::attn::KvSlice<'_>,
    stride: usize,
    dim: usize,
    c0: usize,
    lens: &[usize],
    out: &mut [f32],
) {
    match values {
        crate::attn::KvSlice::F32(v) => weighted_sum_from(w, n, v, stride, dim, c0, lens, out),
        crate::attn::KvSlice::F16(v) => weighted_sum_from(w, n, v, stride, dim, c0, lens, out),
    }
}

/// Wrapping sum of `words`, read with 256-bit loads into four accumulators
/// (the read pattern of the kernels, for the bandwidth probe).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut chunks = words.chunks_exact(16);
    for c in &mut chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: words 4k..4k+4 of a 16-word chunk.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().add(4 * k).cast()) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut lanes = [0u64; 4];
    let total = _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
    // SAFETY: four u64.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), total) };
    lanes.iter().chain(chunks.remainder()).fold(0u64, |s, &w| s.wrapping_add(w))
}
