//! x86-64 FP8 kernels: AVX-512 (16 lanes in one register) and AVX2 (two),
//! in the summation order of the scalar twin (see the module docs).

use core::arch::x86_64::*;

use super::{reduce, Src, BLOCK, KEEP16, LANES, UNIT_INV};

/// Lanes of a partial 16-chunk at the end of a block, added one by one as
/// the scalar twin does (`acc[j] = fma(w, x, acc[j])` for `j < tail`).
#[inline(always)]
fn tail(acc: &mut [f32; LANES], w: Src<'_>, x: &[f32], at: usize, n: usize) {
    for j in 0..n {
        let wi = match w {
            Src::Bytes(w) => super::decode_unit(w[at + j]),
            Src::Decoded(w) => w[at + j],
        };
        acc[j] = wi.mul_add(x[at + j], acc[j]);
    }
}

/// 16 e4m3 bytes at `p` in the kernels' unit: sign-extended to 16 bits,
/// placed as f16 bits, widened to f32 by `vcvtph2ps` (exact, subnormal
/// halves included, without a microcode assist).
#[inline(always)]
unsafe fn decode16_512(p: *const u8) -> __m512 {
    let i = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()));
    _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16::<7>(i), _mm256_set1_epi16(KEEP16 as i16)))
}

/// 8 e4m3 bytes at `p` in the kernels' unit.
#[inline(always)]
unsafe fn decode8_256(p: *const u8) -> __m256 {
    let i = _mm_cvtepi8_epi16(_mm_loadl_epi64(p.cast()));
    _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16::<7>(i), _mm_set1_epi16(KEEP16 as i16)))
}

/// # Safety
/// The CPU must have AVX-512 F and FMA; `x.len() == w.len()`,
/// `scales.len() == ceil(len / 128)` (checked by the caller).
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
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
        tot = _mm512_fmadd_ps(_mm512_set1_ps(s * UNIT_INV), acc, tot);
    }
    let mut t = [0f32; LANES];
    _mm512_storeu_ps(t.as_mut_ptr(), tot);
    reduce(t)
}

/// `R` rows' [`dot_avx512`] sharing the loads of `x` (independent streams
/// and dependency chains); each result is the bits of [`dot_avx512`] of its
/// row. Byte rows only.
///
/// # Safety
/// As for [`dot_avx512`], for every row.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // b and r index several arrays at once
pub(super) unsafe fn dotn_avx512<const R: usize>(w: [&[u8]; R], scales: [&[f32]; R], x: &[f32]) -> [f32; R] {
    let n = x.len();
    let mut tot = [_mm512_setzero_ps(); R];
    for b in 0..scales[0].len() {
        let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
        let mut acc = [_mm512_setzero_ps(); R];
        let mut i = lo;
        while i + LANES <= hi {
            let xv = _mm512_loadu_ps(x.as_ptr().add(i));
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(decode16_512(w[r].as_ptr().add(i)), xv, acc[r]);
            }
            i += LANES;
        }
        for r in 0..R {
            if i < hi {
                let mut a = [0f32; LANES];
                _mm512_storeu_ps(a.as_mut_ptr(), acc[r]);
                tail(&mut a, Src::Bytes(w[r]), x, i, hi - i);
                acc[r] = _mm512_loadu_ps(a.as_ptr());
            }
            tot[r] = _mm512_fmadd_ps(_mm512_set1_ps(scales[r][b] * UNIT_INV), acc[r], tot[r]);
        }
    }
    tot.map(|t| {
        let mut a = [0f32; LANES];
        _mm512_storeu_ps(a.as_mut_ptr(), t);
        reduce(a)
    })
}

/// # Safety
/// The CPU must have AVX2 and FMA; lengths as for [`dot_avx512`].
#[target_feature(enable = "avx2,fma,f16c")]
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
        let sv = _mm256_set1_ps(s * UNIT_INV);
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
#[target_feature(enable = "avx512f,avx2,f16c")]
pub(super) unsafe fn decode_avx512(w: &[u8], out: &mut [f32]) {
    let mut i = 0;
    while i + LANES <= w.len() {
        _mm512_storeu_ps(out.as_mut_ptr().add(i), decode16_512(w.as_ptr().add(i)));
        i += LANES;
    }
    for j in i..w.len() {
        out[j] = super::decode_unit(w[j]);
    }
}

/// # Safety
/// The CPU must have AVX2; `out.len() == w.len()`.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn decode_avx2(w: &[u8], out: &mut [f32]) {
    let mut i = 0;
    while i + 8 <= w.len() {
        _mm256_storeu_ps(out.as_mut_ptr().add(i), decode8_256(w.as_ptr().add(i)));
        i += 8;
    }
    for j in i..w.len() {
        out[j] = super::decode_unit(w[j]);
    }
}
