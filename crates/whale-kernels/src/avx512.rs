//! AVX-512 f32 kernels (x86-64 only): the attention weighted sum.
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

/// Sixteen cached values at a time, widened to f32.
trait Rows16: Copy {
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

/// Rows per block: 6 × 4 accumulators + 4 values + a broadcast fit in 32 registers.
const HB: usize = 6;
/// 16-column chunks per block.
const CB: usize = 4;

/// See [`crate::attn::attn_weighted_sum`] (shapes checked by the caller).
/// Columns in blocks of up to 64 (16 at a time) and rows in blocks of six;
/// a tail of `dim % 16` columns goes to the AVX2 kernel's column loop.
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
        crate::attn::KvSlice::F32(v) => weighted_sum(w, n, v, stride, dim, wide, lens, out),
        crate::attn::KvSlice::F16(v) => weighted_sum(w, n, v, stride, dim, wide, lens, out),
    }
    if wide < dim {
        // SAFETY: (caller) AVX2, FMA and F16C; same shapes.
        unsafe { crate::avx2::attn_weighted_sum_cols(w, n, values, stride, dim, wide, lens, out) };
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
fn weighted_sum<R: Rows16>(
    w: &[f32],
    n: usize,
    values: R,
    stride: usize,
    dim: usize,
    wide: usize,
    lens: &[usize],
    out: &mut [f32],
) {
    let nh = out.len() / dim;
    for c0 in (0..wide).step_by(16 * CB) {
        let cb = ((wide - c0) / 16).min(CB);
        for h0 in (0..nh).step_by(HB) {
            let hb = (nh - h0).min(HB);
            let lens = &lens[h0..h0 + hb];
            let longest = lens.iter().copied().max().unwrap_or(0);
            let mut acc = [[_mm512_setzero_ps(); CB]; HB];
            for p in 0..longest {
                let mut v = [_mm512_setzero_ps(); CB];
                for (j, vj) in v.iter_mut().enumerate().take(cb) {
                    // SAFETY: the caller checked that `n` rows of `dim` at
                    // `stride` fit, p < n, and c0 + 16 (j + 1) <= wide <= dim.
                    *vj = unsafe { values.load16(p * stride + c0 + 16 * j) };
                }
                for (i, a) in acc.iter_mut().enumerate().take(hb) {
                    if p < lens[i] {
                        let wp = _mm512_set1_ps(w[(h0 + i) * n + p]);
                        for (aj, vj) in a.iter_mut().zip(&v).take(cb) {
                            *aj = _mm512_add_ps(*aj, _mm512_mul_ps(wp, *vj));
                        }
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(hb) {
                for (j, aj) in a.iter().enumerate().take(cb) {
                    let at = (h0 + i) * dim + c0 + 16 * j;
                    let dst = &mut out[at..at + 16];
                    // SAFETY: `dst` holds 16 floats.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), *aj) };
                }
            }
        }
    }
}
