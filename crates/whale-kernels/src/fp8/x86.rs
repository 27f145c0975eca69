//! x86-64 FP8 kernels: AVX-512 (16 lanes in one register) and AVX2 (two),
//! in the summation order of the scalar twin (see the module docs).

use core::arch::x86_64::*;

use super::{reduce, Src, BLOCK, KEEP, LANES, TWO_POW_120};

/// Lanes of a partial 16-chunk at the end of a block, added one by one as
/// the scalar twin does (`acc[j] = fma(w, x, acc[j])` for `j < tail`).
#[inline(always)]
fn tail(acc: &mut [f32; LANES], w: Src<'_>, x: &[f32], at: usize, n: usize) {
    for j in 0..n {
        let wi = match w {
            Src::Bytes(w) => super::e4m3_to_f32(w[at + j]),
            Src::Decoded(w) => w[at + j],
        };
        acc[j] = wi.mul_add(x[at + j], acc[j]);
    }
}

/// 16 e4m3 bytes at `p` as f32 (bit placement, then × 2^120).
#[inline(always)]
unsafe fn decode16_512(p: *const u8) -> __m512 {
    let i = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()));
    let f = _mm512_castsi512_ps(_mm512_and_si512(_mm512_slli_epi32::<20>(i), _mm512_set1_epi32(KEEP as i32)));
    _mm512_mul_ps(f, _mm512_set1_ps(TWO_POW_120))
}

/// 8 e4m3 bytes at `p` as f32.
#[inline(always)]
unsafe fn decode8_256(p: *const u8) -> __m256 {
    let i = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()));
    let f = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32::<20>(i), _mm256_set1_epi32(KEEP as i32)));
    _mm256_mul_ps(f, _mm256_set1_ps(TWO_POW_120))
}

/// # Safety
/// The CPU must have AVX-512 F and FMA; `x.len() == w.len()`,
/// `scales.len() == ceil(len / 128)` (checked by the caller).
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dot_avx512(w: Src<'_>, scales: &[f32], x: &[f32]) -> f32 {
    let n = x.len();
    let mut tot = _mm512_setzero_ps();
    for (b, &s) in scales.iter().enumerate() {
        let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
        let mut acc = _mm512_setzero_ps();
        let mut i = lo;
        while i + LANES <= hi {
            let wv = match w {
                Src::Bytes(w) => decode16_512(w.as_ptr().add(i)),
                Src::Decoded(w) => _mm512_loadu_ps(w.as_ptr().add(i)),
            };
            acc = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x.as_ptr().add(i)), acc);
            i += LANES;
        }
        if i < hi {
            let mut a = [0f32; LANES];
            _mm512_storeu_ps(a.as_mut_ptr(), acc);
            tail(&mut a, w, x, i, hi - i);
            acc = _mm512_loadu_ps(a.as_ptr());
        }
        tot = _mm512_fmadd_ps(_mm512_set1_ps(s), acc, tot);
    }
    let mut t = [0f32; LANES];
    _mm512_storeu_ps(t.as_mut_ptr(), tot);
    reduce(t)
}

/// # Safety
/// The CPU must have AVX2 and FMA; lengths as for [`dot_avx512`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_avx2(w: Src<'_>, scales: &[f32], x: &[f32]) -> f32 {
    let n = x.len();
    let (mut tot0, mut tot1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, &s) in scales.iter().enumerate() {
        let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = lo;
        while i + LANES <= hi {
            let (w0, w1) = match w {
                Src::Bytes(w) => (decode8_256(w.as_ptr().add(i)), decode8_256(w.as_ptr().add(i + 8))),
                Src::Decoded(w) => (_mm256_loadu_ps(w.as_ptr().add(i)), _mm256_loadu_ps(w.as_ptr().add(i + 8))),
            };
            acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.as_ptr().add(i)), acc0);
            acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.as_ptr().add(i + 8)), acc1);
            i += LANES;
        }
        if i < hi {
            let mut a = [0f32; LANES];
            _mm256_storeu_ps(a.as_mut_ptr(), acc0);
            _mm256_storeu_ps(a.as_mut_ptr().add(8), acc1);
            tail(&mut a, w, x, i, hi - i);
            acc0 = _mm256_loadu_ps(a.as_ptr());
            acc1 = _mm256_loadu_ps(a.as_ptr().add(8));
        }
        let sv = _mm256_set1_ps(s);
        tot0 = _mm256_fmadd_ps(sv, acc0, tot0);
        tot1 = _mm256_fmadd_ps(sv, acc1, tot1);
    }
    let mut t = [0f32; LANES];
    _mm256_storeu_ps(t.as_mut_ptr(), tot0);
    _mm256_storeu_ps(t.as_mut_ptr().add(8), tot1);
    reduce(t)
}

/// # Safety
/// The CPU must have AVX-512 F; `out.len() == w.len()`.
#[target_feature(enable = "avx512f,avx2")]
pub(super) unsafe fn decode_avx512(w: &[u8], out: &mut [f32]) {
    let mut i = 0;
    while i + LANES <= w.len() {
        _mm512_storeu_ps(out.as_mut_ptr().add(i), decode16_512(w.as_ptr().add(i)));
        i += LANES;
    }
    for j in i..w.len() {
        out[j] = super::e4m3_to_f32(w[j]);
    }
}

/// # Safety
/// The CPU must have AVX2; `out.len() == w.len()`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn decode_avx2(w: &[u8], out: &mut [f32]) {
    let mut i = 0;
    while i + 8 <= w.len() {
        _mm256_storeu_ps(out.as_mut_ptr().add(i), decode8_256(w.as_ptr().add(i)));
        i += 8;
    }
    for j in i..w.len() {
        out[j] = super::e4m3_to_f32(w[j]);
    }
}
