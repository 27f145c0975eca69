//! x86-64 FP8 kernels: AVX-512 (16 lanes in one register), AVX2 (two), and
//! AVX-512 BF16 with VBMI (`vdpbf16ps`, two elements a lane per
//! instruction), all in the summation order of the scalar twin (see the
//! module docs). Every kernel takes the prepared activations (`xb`: each
//! `x` rounded to bf16 times 2^48, as f32).

use core::arch::x86_64::*;

use super::{reduce, Src, BLOCK, KEEP16, LANES, S_SCALE};

/// Lanes of a partial 16-chunk at the end of a block, added one by one as
/// the scalar twin does (`acc[j] = fma(w, xb, acc[j])` for `j < tail`).
#[inline(always)]
fn tail(acc: &mut [f32; LANES], w: Src<'_>, xb: &[f32], at: usize, n: usize) {
    for j in 0..n {
        let wi = match w {
            Src::Bytes(w) => super::decode_unit(w[at + j]),
            Src::Decoded(w) => w[at + j],
        };
        acc[j] = wi.mul_add(xb[at + j], acc[j]);
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
/// The CPU must have AVX-512 F and FMA; `xb.len() == w.len()`,
/// `scales.len() == ceil(len / 128)` (checked by the caller).
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn dot_avx512(w: Src<'_>, scales: &[f32], xb: &[f32]) -> f32 {
    let n = xb.len();
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
            acc = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xb.as_ptr().add(i)), acc);
            i += LANES;
        }
        if i < hi {
            let mut a = [0f32; LANES];
            _mm512_storeu_ps(a.as_mut_ptr(), acc);
            tail(&mut a, w, xb, i, hi - i);
            acc = _mm512_loadu_ps(a.as_ptr());
        }
        tot = _mm512_fmadd_ps(_mm512_set1_ps(s * S_SCALE), acc, tot);
    }
    let mut t = [0f32; LANES];
    _mm512_storeu_ps(t.as_mut_ptr(), tot);
    reduce(t)
}

/// The last, partial block of `R` rows (columns `full * 128..`) in the
/// 16-lane FMA form, added to `tot`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // r indexes several arrays at once
unsafe fn partial_block<const R: usize>(
    tot: &mut [__m512; R],
    w: [&[u8]; R],
    scales: [&[f32]; R],
    xb: &[f32],
    full: usize,
) {
    let n = xb.len();
    let mut acc = [_mm512_setzero_ps(); R];
    let mut i = full * BLOCK;
    while i + LANES <= n {
        let xv = _mm512_loadu_ps(xb.as_ptr().add(i));
        for r in 0..R {
            acc[r] = _mm512_fmadd_ps(decode16_512(w[r].as_ptr().add(i)), xv, acc[r]);
        }
        i += LANES;
    }
    for r in 0..R {
        if i < n {
            let mut a = [0f32; LANES];
            _mm512_storeu_ps(a.as_mut_ptr(), acc[r]);
            tail(&mut a, Src::Bytes(w[r]), xb, i, n - i);
            acc[r] = _mm512_loadu_ps(a.as_ptr());
        }
        tot[r] = _mm512_fmadd_ps(_mm512_set1_ps(scales[r][full] * S_SCALE), acc[r], tot[r]);
    }
}

#[inline(always)]
unsafe fn reduce_all<const R: usize>(tot: [__m512; R]) -> [f32; R] {
    tot.map(|t| {
        let mut a = [0f32; LANES];
        _mm512_storeu_ps(a.as_mut_ptr(), t);
        reduce(a)
    })
}

/// `R` rows' [`dot_avx512`] sharing the loads of `xb` (independent streams
/// and dependency chains); each result is the bits of [`dot_avx512`] of its
/// row. Byte rows only.
///
/// # Safety
/// As for [`dot_avx512`], for every row.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // b and r index several arrays at once
pub(super) unsafe fn dotn_avx512<const R: usize>(w: [&[u8]; R], scales: [&[f32]; R], xb: &[f32]) -> [f32; R] {
    let full = xb.len() / BLOCK;
    let mut tot = [_mm512_setzero_ps(); R];
    // Whole blocks have a fixed trip count, so the accumulators stay in
    // registers (the lane-by-lane tail of a partial block would send them
    // through memory every block).
    for b in 0..full {
        let mut acc = [_mm512_setzero_ps(); R];
        for k in 0..BLOCK / LANES {
            let i = b * BLOCK + k * LANES;
            let xv = _mm512_loadu_ps(xb.as_ptr().add(i));
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(decode16_512(w[r].as_ptr().add(i)), xv, acc[r]);
            }
        }
        for r in 0..R {
            tot[r] = _mm512_fmadd_ps(_mm512_set1_ps(scales[r][b] * S_SCALE), acc[r], tot[r]);
        }
    }
    if full * BLOCK < xb.len() {
        partial_block(&mut tot, w, scales, xb, full);
    }
    reduce_all(tot)
}

/// Where byte `i` of 64 codes comes from so that `vpunpck{l,h}bw` of
/// their bf16 low and high bytes gives the words `vdpbf16ps` wants: in each
/// 32-element half, word `2j` is element `16 + j` and word `2j + 1` element
/// `j` (the instruction adds the odd word's product first, so lane `j` adds
/// element `j`, then `j + 16`: the twin's order). The unpacks take bytes
/// 0-7 (low) and 8-15 (high) of each 128-bit lane `L`, which become the
/// pairs `4L..4L + 4` (words `8L..8L + 8`) of the first half and of the
/// second.
const fn code_order() -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        let (lane, k) = (i / 16, i % 16);
        let half = if k < 8 { 0 } else { 32 };
        let j = 4 * lane + (k % 8) / 2;
        idx[i] = (half + if k % 2 == 0 { 16 + j } else { j }) as u8;
        i += 1;
    }
    idx
}

const CODE_ORDER: [u8; 64] = code_order();

/// 32 bf16 words as `vdpbf16ps` takes them.
#[inline(always)]
fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 64 plain bytes.
    unsafe { core::mem::transmute::<__m512i, __m512bh>(v) }
}

/// The constants of the e4m3-to-bf16 words: the lookup tables, the sign
/// mask and [`CODE_ORDER`].
struct Bf16Words {
    lo: [__m512i; 2],
    hi: [__m512i; 2],
    sign: __m512i,
    order: __m512i,
}

impl Bf16Words {
    #[inline(always)]
    unsafe fn new() -> Bf16Words {
        let (tl, th) = (&super::BF16_LO, &super::BF16_HI);
        Bf16Words {
            lo: [_mm512_loadu_si512(tl.as_ptr().cast()), _mm512_loadu_si512(tl.as_ptr().add(64).cast())],
            hi: [_mm512_loadu_si512(th.as_ptr().cast()), _mm512_loadu_si512(th.as_ptr().add(64).cast())],
            sign: _mm512_set1_epi8(0x80u8 as i8),
            order: _mm512_loadu_si512(CODE_ORDER.as_ptr().cast()),
        }
    }

    /// The 64 codes at `p` as two vectors of 32 bf16 words (the first and
    /// second 32 elements, each in the pairing above).
    #[inline(always)]
    unsafe fn words(&self, p: *const u8) -> (__m512i, __m512i) {
        let codes = _mm512_permutexvar_epi8(self.order, _mm512_loadu_si512(p.cast()));
        let lo = _mm512_permutex2var_epi8(self.lo[0], codes, self.lo[1]);
        let hi = _mm512_permutex2var_epi8(self.hi[0], codes, self.hi[1]);
        // hi | (codes & 0x80): the sign.
        let hi = _mm512_ternarylogic_epi32::<0xF8>(hi, codes, self.sign);
        (_mm512_unpacklo_epi8(lo, hi), _mm512_unpackhi_epi8(lo, hi))
    }
}

/// `R` rows' dot products by `vdpbf16ps`, the same bits as
/// [`dotn_avx512`]. Per 64 weight bytes: one `vpermb` puts the codes in
/// the order above, two 128-entry byte lookups (`vpermi2b`) give the low
/// and high bytes of each code's magnitude as a bf16 in the kernels' unit
/// (exact: 4 significant bits, all normal), one `vpternlogd` puts the sign
/// in, two unpacks pair the bytes into words, and two `vdpbf16ps` add 32
/// products each, exact (bf16 times bf16) and rounded once per add as the
/// twin's FMAs are.
/// `xw` holds the activations' bf16 words in the same pairing
/// ([`super::pair_words`]).
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VBMI and BF16; lengths as for
/// [`dot_avx512`]; `xw.len() >= xb.len() / 128 * 128`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512bf16,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // b and r index several arrays at once
pub(super) unsafe fn dotn_bf16<const R: usize>(w: [&[u8]; R], scales: [&[f32]; R], xb: &[f32], xw: &[u16]) -> [f32; R] {
    let full = xb.len() / BLOCK;
    let conv = Bf16Words::new();
    let mut tot = [_mm512_setzero_ps(); R];
    for b in 0..full {
        let mut acc = [_mm512_setzero_ps(); R];
        for half in 0..2 {
            let i = b * BLOCK + half * 64;
            let x0 = bh(_mm512_loadu_si512(xw.as_ptr().add(i).cast()));
            let x1 = bh(_mm512_loadu_si512(xw.as_ptr().add(i + 32).cast()));
            for r in 0..R {
                let (w0, w1) = conv.words(w[r].as_ptr().add(i));
                acc[r] = _mm512_dpbf16_ps(acc[r], bh(w0), x0);
                acc[r] = _mm512_dpbf16_ps(acc[r], bh(w1), x1);
            }
        }
        for r in 0..R {
            tot[r] = _mm512_fmadd_ps(_mm512_set1_ps(scales[r][b] * S_SCALE), acc[r], tot[r]);
        }
    }
    if full * BLOCK < xb.len() {
        partial_block(&mut tot, w, scales, xb, full);
    }
    reduce_all(tot)
}

/// # Safety
/// The CPU must have AVX2 and FMA; lengths as for [`dot_avx512`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_avx2(w: Src<'_>, scales: &[f32], xb: &[f32]) -> f32 {
    let n = xb.len();
    let mut tot = [_mm256_setzero_ps(); 2];
    for (b, &s) in scales.iter().enumerate() {
        let acc = block_avx2(w, xb, b * BLOCK, ((b + 1) * BLOCK).min(n));
        add_block_avx2(&mut tot, s, acc);
    }
    reduce_avx2(tot)
}

/// Columns `lo..hi` (one block) in the twin's 16 lanes, as two registers.
#[inline(always)]
unsafe fn block_avx2(w: Src<'_>, xb: &[f32], lo: usize, hi: usize) -> [__m256; 2] {
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = lo;
    while i + LANES <= hi {
        let (w0, w1) = match w {
            Src::Bytes(w) => (decode8_256(w.as_ptr().add(i)), decode8_256(w.as_ptr().add(i + 8))),
            Src::Decoded(w) => (_mm256_loadu_ps(w.as_ptr().add(i)), _mm256_loadu_ps(w.as_ptr().add(i + 8))),
        };
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb.as_ptr().add(i)), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb.as_ptr().add(i + 8)), acc1);
        i += LANES;
    }
    if i < hi {
        let mut a = [0f32; LANES];
        _mm256_storeu_ps(a.as_mut_ptr(), acc0);
        _mm256_storeu_ps(a.as_mut_ptr().add(8), acc1);
        tail(&mut a, w, xb, i, hi - i);
        acc0 = _mm256_loadu_ps(a.as_ptr());
        acc1 = _mm256_loadu_ps(a.as_ptr().add(8));
    }
    [acc0, acc1]
}

/// `tot += (scale · 2^-40) · acc`, lane by lane: the twin's block step.
#[inline(always)]
unsafe fn add_block_avx2(tot: &mut [__m256; 2], scale: f32, acc: [__m256; 2]) {
    let sv = _mm256_set1_ps(scale * S_SCALE);
    tot[0] = _mm256_fmadd_ps(sv, acc[0], tot[0]);
    tot[1] = _mm256_fmadd_ps(sv, acc[1], tot[1]);
}

#[inline(always)]
unsafe fn reduce_avx2(tot: [__m256; 2]) -> f32 {
    let mut t = [0f32; LANES];
    _mm256_storeu_ps(t.as_mut_ptr(), tot[0]);
    _mm256_storeu_ps(t.as_mut_ptr().add(8), tot[1]);
    reduce(t)
}

/// `R` rows' [`dot_avx2`] sharing the loads of `xb`, whole blocks with
/// their accumulators in registers as [`dotn_avx512`] has them; each result
/// is the bits of [`dot_avx2`] of its row.
///
/// # Safety
/// As for [`dot_avx2`], for every row.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // b and r index several arrays at once
pub(super) unsafe fn dotn_avx2<const R: usize>(w: [&[u8]; R], scales: [&[f32]; R], xb: &[f32]) -> [f32; R] {
    let n = xb.len();
    let full = n / BLOCK;
    let mut tot = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..full {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for k in 0..BLOCK / LANES {
            let i = b * BLOCK + k * LANES;
            let (x0, x1) = (_mm256_loadu_ps(xb.as_ptr().add(i)), _mm256_loadu_ps(xb.as_ptr().add(i + 8)));
            for r in 0..R {
                acc[r][0] = _mm256_fmadd_ps(decode8_256(w[r].as_ptr().add(i)), x0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(decode8_256(w[r].as_ptr().add(i + 8)), x1, acc[r][1]);
            }
        }
        for r in 0..R {
            add_block_avx2(&mut tot[r], scales[r][b], acc[r]);
        }
    }
    core::array::from_fn(|r| {
        if full * BLOCK < n {
            add_block_avx2(&mut tot[r], scales[r][full], block_avx2(Src::Bytes(w[r]), xb, full * BLOCK, n));
        }
        reduce_avx2(tot[r])
    })
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

/// Whole blocks of `w` as the bf16 words [`dotn_bf16`] makes: exact
/// weights in the kernels' unit, paired as its activation words are.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VBMI; `w.len()` is a multiple of
/// 128 and `out.len() == w.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(super) unsafe fn decode_pairs(w: &[u8], out: &mut [u16]) {
    let conv = Bf16Words::new();
    let mut i = 0;
    while i + 64 <= w.len() {
        let (w0, w1) = conv.words(w.as_ptr().add(i));
        _mm512_storeu_si512(out.as_mut_ptr().add(i).cast(), w0);
        _mm512_storeu_si512(out.as_mut_ptr().add(i + 32).cast(), w1);
        i += 64;
    }
}

/// `R` weight rows (words from [`decode_pairs`]) times `T` activation rows
/// (words from `pair_words`) by `vdpbf16ps`, the `R·T` accumulators in
/// registers: each weight and activation load serves `T` or `R`
/// products. Each result is the bits of [`dotn_bf16`] of its pair (the
/// same instructions on the same words in the same order). Whole blocks
/// only.
///
/// # Safety
/// The CPU must have AVX-512 F and BF16; every slice has the same length,
/// a multiple of 128, and `scales[r].len() == len / 128`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
#[allow(clippy::needless_range_loop)] // r and t index several arrays at once
pub(super) unsafe fn tile_bf16<const R: usize, const T: usize>(
    wd: [&[u16]; R],
    scales: [&[f32]; R],
    xw: [&[u16]; T],
) -> [[f32; T]; R] {
    let full = xw[0].len() / BLOCK;
    let mut tot = [[_mm512_setzero_ps(); T]; R];
    for b in 0..full {
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        for c in 0..BLOCK / 32 {
            let i = b * BLOCK + 32 * c;
            let xv: [__m512bh; T] = core::array::from_fn(|t| bh(_mm512_loadu_si512(xw[t].as_ptr().add(i).cast())));
            for r in 0..R {
                let wv = bh(_mm512_loadu_si512(wd[r].as_ptr().add(i).cast()));
                for t in 0..T {
                    acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv, xv[t]);
                }
            }
        }
        for r in 0..R {
            let s = _mm512_set1_ps(scales[r][b] * S_SCALE);
            for t in 0..T {
                tot[r][t] = _mm512_fmadd_ps(s, acc[r][t], tot[r][t]);
            }
        }
    }
    tot.map(|row| reduce_all(row))
}
