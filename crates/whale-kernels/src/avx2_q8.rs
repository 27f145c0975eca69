//! AVX2 kernels for quantized activations (x86-64 only): activation
//! quantization and the integer dot products of [`crate::qdot`].
//!
//! Every function is an `unsafe fn` with
//! `#[target_feature(enable = "avx2,fma,f16c")]`; callers must hold a
//! `dispatch::Verified` at an x86 level (which implies those features), and
//! pass rows and activation views whose shapes the public entry points have
//! checked (a weight row of `n` elements, an activation row of `n` columns of
//! the matching activation type).
//!
//! The integer sums use `vpmaddubsw` (unsigned weight quants × signed
//! activation quants, pairs summed to i16 with saturation, which our ranges
//! never reach: at most 63·127·2 = 16002, or 128·127·2 = 32512 for Q8_0
//! weights of -128) and `vpmaddwd` (i16 pairs, optionally times a per-group
//! scale, to i32). Signed weight quants are either offset to unsigned and
//! corrected with the activation block sums (Q4_0: `-8·Σy`, Q5_0: `-16·Σy`,
//! Q3_K: `-4·Σ sc·bsum`, Q6_K: `-32·Σ sc·bsum`) or, for Q8_0, multiplied as
//! `|x| · sign(y, x)`. All integer results are exact, and the float part
//! repeats [`crate::qdot`]'s operations lane for lane (mul, then add, never
//! FMA), so results are bit-identical to the scalar level.
//!
//! The row-dot kernels are written once, in the `int8_kernels!` macro, over
//! three level primitives (`dot_u8_i8`, `dot_acc_scaled`, `q8_0_dot`); this
//! module instantiates them with AVX2 primitives and `avx512_q8` with VNNI
//! ones, so both levels share every line of layout code.

use core::arch::x86_64::*;

use crate::avx2::hsum;
use crate::blocks::*;
use crate::q8::ActRow;
use crate::types::{QK32, QK_K};

// ----------------------------------------------------------------------------
// Activation quantization
// ----------------------------------------------------------------------------

/// Q8_0 / Q8_1 quantization of one row (llama.cpp's x86 rule, see
/// [`crate::q8`]); the outputs are as in `q8::q8_32_row_verified`:
/// `qs` (`x.len()` quants), `d` and `sums` (one per block), `s` (one per block
/// or empty).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x.len()` must be a multiple of
/// 32 with `qs.len() == x.len()` and `d`, `sums` (and `s` unless empty)
/// holding `x.len() / 32` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_32_row(x: &[f32], qs: &mut [i8], d: &mut [f32], sums: &mut [i32], s: &mut [f32]) {
    let sign = _mm256_set1_ps(-0.0);
    for (b, (xb, qb)) in x.chunks_exact(QK32).zip(qs.chunks_exact_mut(QK32)).enumerate() {
        let v = [load8f(xb, 0), load8f(xb, 8), load8f(xb, 16), load8f(xb, 24)];
        let m01 = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
        let m23 = _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3]));
        let amax = hmax(_mm256_max_ps(m01, m23));
        let dd = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let q = v.map(|vi| {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(vi, id));
            _mm256_cvtps_epi32(r)
        });
        let sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        store_i8x32(qb, pack_i32_to_i8(q));
        d[b] = round_f16(dd);
        sums[b] = sum;
        if !s.is_empty() {
            // Q8_1's `s`: f16(d * sum) with the unrounded d (`q8::q8_1_s`).
            s[b] = round_f16(dd * sum as f32);
        }
    }
}

/// One Q8_K block (ggml's rule, see [`crate::q8`]); returns `d`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_k_block(x: &[f32; QK_K], qs: &mut [i8; QK_K], bsums: &mut [i16; 16]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut vmax = _mm256_setzero_ps();
    for c in 0..32 {
        vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, load8f(x, 8 * c)));
    }
    let amax = hmax(vmax);
    if amax == 0.0 {
        qs.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    // The signed value of the first element with |x| == amax (ggml keeps the
    // first one it meets).
    let target = _mm256_set1_ps(amax);
    let mut max = amax;
    for c in 0..32 {
        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, load8f(x, 8 * c)), target);
        let mask = _mm256_movemask_ps(eq);
        if mask != 0 {
            max = x[8 * c + mask.trailing_zeros() as usize];
            break;
        }
    }
    let iscale = -127.0 / max;
    let is = _mm256_set1_ps(iscale);
    for (c, qc) in qs.chunks_exact_mut(32).enumerate() {
        let q = [0, 8, 16, 24].map(|o| {
            let v = _mm256_mul_ps(load8f(x, 32 * c + o), is);
            _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v))
        });
        // Groups 2c and 2c + 1 are q[0..2] and q[2..4].
        bsums[2 * c] = hsum_i32(_mm256_add_epi32(q[0], q[1])) as i16;
        bsums[2 * c + 1] = hsum_i32(_mm256_add_epi32(q[2], q[3])) as i16;
        store_i8x32(qc, pack_i32_to_i8(q));
    }
    1.0 / iscale
}

/// f32 to f16 bits, round to nearest even (F16C), `out.len()` values.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x.len() >= out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_row(x: &[f32], out: &mut [u16]) {
    let n = out.len();
    let full = n - n % 8;
    for (o, xs) in out[..full].chunks_exact_mut(8).zip(x[..full].chunks_exact(8)) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(load8f(xs, 0));
        // SAFETY: `o` has exactly 8 u16 = 16 bytes; storeu is unaligned.
        unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), h) };
    }
    for (o, &v) in out[full..].iter_mut().zip(&x[full..n]) {
        *o = _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v))) as u16;
    }
}

/// `x` rounded to f16 (nearest even, as `half::f16::from_f32` and ggml's
/// F16C conversion do) and widened back, inline.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn round_f16(x: f32) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))))
}

/// Packs 4×8 i32 (elements 0..32 in order) to 32 saturated i8, in order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn pack_i32_to_i8(q: [__m256i; 4]) -> __m256i {
    // packs work within 128-bit halves: after both packs the 4-byte groups
    // are in the order 0 2 4 6 1 3 5 7 (in units of 4 elements); undo it.
    let a = _mm256_packs_epi32(q[0], q[1]);
    let b = _mm256_packs_epi32(q[2], q[3]);
    let p = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn store_i8x32(out: &mut [i8], v: __m256i) {
    let out = &mut out[..32];
    // SAFETY: `out` has exactly 32 bytes; storeu has no alignment requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

/// Largest lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

// ----------------------------------------------------------------------------
// Small helpers
// ----------------------------------------------------------------------------

/// Loads 8 floats from `x[at..at + 8]` (bounds-checked).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load8f(x: &[f32], at: usize) -> __m256 {
    let s = &x[at..at + 8];
    // SAFETY: `s` has exactly 8 floats; loadu has no alignment requirement.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Loads 32 activation quants from `y[at..at + 32]` (bounds-checked).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn load_y(y: &[i8], at: usize) -> __m256i {
    let s = &y[at..at + 32];
    // SAFETY: `s` has exactly 32 bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Eight values from `v[at..]`, zero-padded past the end (all zeros if `v`
/// is empty or shorter than `at`).
#[inline(always)]
pub(crate) fn take8<T: Copy + Default>(v: &[T], at: usize) -> [T; 8] {
    // Element by element: a variable-length copy would become a call to
    // memcpy (and a vzeroupper) in the middle of a kernel.
    core::array::from_fn(|k| v.get(at + k).copied().unwrap_or_default())
}

/// Lanes `at..at + 8` of `v` as a mask over the lanes that exist (the
/// first `n`, `n` at most 8): for the loads of a row's last, partial group
/// of eight blocks.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn lanes_present<T>(v: &[T], at: usize) -> (__m256i, usize) {
    let n = v.len().saturating_sub(at).min(8);
    (_mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), n)
}

/// `v[at..at + 8]` as a vector, lanes past the end of `v` zero: a row's
/// last, partial group of eight blocks (V3's 7168 columns end in one) is
/// read by a masked load, not copied into an array and read back as one
/// vector (a store-forwarding stall).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn f32x8_at(v: &[f32], at: usize) -> __m256 {
    let (mask, n) = lanes_present(v, at);
    let p = v.as_ptr().wrapping_add(at.min(v.len()));
    if n == 8 {
        // SAFETY: `v[at..at + 8]` exists; loadu is unaligned.
        unsafe { _mm256_loadu_ps(p) }
    } else {
        // SAFETY: only the lanes inside `v` are read (masked-off lanes
        // access no memory and cannot fault).
        unsafe { _mm256_maskload_ps(p, mask) }
    }
}

/// [`f32x8_at`] for i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn i32x8_at(v: &[i32], at: usize) -> __m256i {
    let (mask, n) = lanes_present(v, at);
    let p = v.as_ptr().wrapping_add(at.min(v.len()));
    if n == 8 {
        // SAFETY: `v[at..at + 8]` exists; loadu is unaligned.
        unsafe { _mm256_loadu_si256(p.cast()) }
    } else {
        // SAFETY: as in `f32x8_at`.
        unsafe { _mm256_maskload_epi32(p, mask) }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn f32x8(v: &[f32; 8]) -> __m256 {
    // SAFETY: reads the 8 floats of `v`; loadu is unaligned.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// Eight f16 bit patterns widened to f32 (exact).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn f16x8(v: &[u16; 8]) -> __m256 {
    // SAFETY: reads the 16 bytes of `v`; loadu is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(v.as_ptr().cast()) })
}

/// 8×8 transpose of i32 lanes: lane k of result t is lane t of `v[k]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn transpose_8x8_i32(v: [__m256i; 8]) -> [__m256i; 8] {
    // Within 128-bit halves: pairs of rows, then quads; then swap halves.
    let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
    let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
    let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
    let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
    let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    // s0: lane t of v0..v3 for t = 0 (low half) and 4 (high half); s1: 1/5; s2: 2/6; s3: 3/7.
    let s0 = _mm256_unpacklo_epi64(t0, t2);
    let s1 = _mm256_unpackhi_epi64(t0, t2);
    let s2 = _mm256_unpacklo_epi64(t1, t3);
    let s3 = _mm256_unpackhi_epi64(t1, t3);
    let s4 = _mm256_unpacklo_epi64(t4, t6);
    let s5 = _mm256_unpackhi_epi64(t4, t6);
    let s6 = _mm256_unpacklo_epi64(t5, t7);
    let s7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256::<0x20>(s0, s4),
        _mm256_permute2x128_si256::<0x20>(s1, s5),
        _mm256_permute2x128_si256::<0x20>(s2, s6),
        _mm256_permute2x128_si256::<0x20>(s3, s7),
        _mm256_permute2x128_si256::<0x31>(s0, s4),
        _mm256_permute2x128_si256::<0x31>(s1, s5),
        _mm256_permute2x128_si256::<0x31>(s2, s6),
        _mm256_permute2x128_si256::<0x31>(s3, s7),
    ]
}

/// Sum of the eight i32 lanes (exact, wrapping never happens for our ranges).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
    _mm_cvtsi128_si32(s)
}

/// Lane `k` of the result is the sum of the lanes of `v[k]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn hsum_8x8(v: [__m256i; 8]) -> __m256i {
    // hadd works per 128-bit half: h0123 = [Σ lo(v0..v3) | Σ hi(v0..v3)] by
    // quarter sums; adding the halves of (h0123, h4567) finishes it.
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    let h0123 = _mm256_hadd_epi32(h01, h23);
    let h4567 = _mm256_hadd_epi32(h45, h67);
    let lo = _mm256_permute2x128_si256::<0x20>(h0123, h4567);
    let hi = _mm256_permute2x128_si256::<0x31>(h0123, h4567);
    _mm256_add_epi32(lo, hi)
}

/// `acc + Σ u·y` over 32 bytes in eight i32 lanes (`u` unsigned, `y`
/// signed; every pair u·y + u'·y' fits i16 for our ranges).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_u8_i8(acc: __m256i, u: __m256i, y: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1)))
}

/// `acc + Σ u·y·sc` in eight i32 lanes, `sc` one i16 per pair of bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_acc_scaled(acc: __m256i, u: __m256i, y: __m256i, sc: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), sc))
}

/// `acc + Σ x·y` for signed `x` (Q8_0 weights) in eight i32 lanes (nothing
/// to correct afterwards: `Q8_0_OFF` is 0), computed as |x| · (y with the
/// sign of x): exact for every i8 `x` (|-128| is 128 as an unsigned byte)
/// and |y| <= 127.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8_0_dot(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    dot_u8_i8(acc, _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// `lo` with 0x10 added to byte j where bit j of `qh` is set (`lo` < 0x10).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn or_high_bits(lo: __m256i, qh: [u8; 4]) -> __m256i {
    _mm256_or_si256(lo, crate::avx2::high_bits32(qh))
}

/// What `q8_0_dot` leaves to subtract per block, times Σy.
pub(crate) const Q8_0_OFF: i32 = 0;

#[inline(always)]
pub(crate) fn bits(h: F16Le) -> u16 {
    u16::from_le_bytes(h.0)
}

/// f16 to f32 with the F16C instruction, inline (the `half` crate dispatches
/// at run time through an out-of-line call). Exact, like every f16 widening.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn h2f(h: F16Le) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits(h) as i32)))
}

/// Byte-shuffle control that broadcasts i16 word `w` (0..8) of each 128-bit
/// half to all eight words of that half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn word_bcast(w: i32) -> __m256i {
    _mm256_set1_epi16(((2 * w) | ((2 * w + 1) << 8)) as i16)
}

/// Control broadcasting word `lo` in the low half and word `hi` in the high half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn word_bcast2(lo: i32, hi: i32) -> __m256i {
    _mm256_set_m128i(
        _mm_set1_epi16(((2 * hi) | ((2 * hi + 1) << 8)) as i16),
        _mm_set1_epi16(((2 * lo) | ((2 * lo + 1) << 8)) as i16),
    )
}

/// The 16 per-group i16 values `v16` with both 128-bit halves holding the
/// eight of half `h` (groups 8h..8h+8).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn groups_of_half(v16: __m256i, h: usize) -> __m256i {
    if h == 0 {
        _mm256_permute2x128_si256::<0x00>(v16, v16)
    } else {
        _mm256_permute2x128_si256::<0x11>(v16, v16)
    }
}

/// 16 bytes as i16 (sign-extended if `SIGNED`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn widen16<const SIGNED: bool>(v: [u8; 16]) -> __m256i {
    // SAFETY: reads the 16 bytes of `v`; loadu is unaligned.
    let x = unsafe { _mm_loadu_si128(v.as_ptr().cast()) };
    if SIGNED {
        _mm256_cvtepi8_epi16(x)
    } else {
        _mm256_cvtepu8_epi16(x)
    }
}

/// The 16 Q8_K group sums of block `b` as i16.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn bsums(a: ActRow<'_>, b: usize) -> __m256i {
    let s = &a.bsums[16 * b..16 * b + 16];
    // SAFETY: `s` has exactly 16 i16 = 32 bytes; loadu is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// The scale vector for the 32 quants at element 128h + 32s of a K block
/// with 16-element groups (Q2_K, Q3_K, Q6_K): groups g = 8h + 2s (low half)
/// and g + 1 (high half); `sc_h = groups_of_half(scales, h)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn group_scales(sc_h: __m256i, s: usize) -> __m256i {
    _mm256_shuffle_epi8(sc_h, word_bcast2(2 * s as i32, 2 * s as i32 + 1))
}

/// The float step of one group of eight 32-element blocks, shared by every
/// x86 level so all do the same f32 operations: `is` holds Σ u·y per block;
/// subtract `off·ys` (`ys` the blocks' activation quant sums), then
/// `acc += (dw·da)·isum` and (if `MIN`) `accm += mw·sa`, lane k = block k of
/// the group. Lanes past the end of a row carry zero scales and sums.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn legacy_group<const MIN: bool>(
    acc: &mut __m256,
    accm: &mut __m256,
    mut is: __m256i,
    off: i32,
    ys: __m256i,
    da: __m256,
    sa: __m256,
    dw: __m256,
    mw: __m256,
) {
    if off != 0 {
        is = _mm256_sub_epi32(is, _mm256_mullo_epi32(ys, _mm256_set1_epi32(off)));
    }
    let dd = _mm256_mul_ps(dw, da);
    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(dd, _mm256_cvtepi32_ps(is)));
    if MIN {
        *accm = _mm256_add_ps(*accm, _mm256_mul_ps(mw, sa));
    }
}

/// The f32 step of eight K blocks, lane k = block k, shared by every x86
/// kernel so all do the same operations: `(d·da)·isum - (dmin·da)·m` for the
/// types with mins (`off == 0`), else `(d·da)·(isum - off·m)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn k_group_term(
    isum: __m256i,
    m: __m256i,
    d8: __m256,
    dmin8: __m256,
    da: __m256,
    off: i32,
) -> __m256 {
    if off == 0 {
        // (d·da)·isum - (dmin·da)·Σ m·bsum
        _mm256_sub_ps(
            _mm256_mul_ps(_mm256_mul_ps(d8, da), _mm256_cvtepi32_ps(isum)),
            _mm256_mul_ps(_mm256_mul_ps(dmin8, da), _mm256_cvtepi32_ps(m)),
        )
    } else {
        // (d·da)·(isum - off·Σ sc·bsum)
        let corr = _mm256_mullo_epi32(m, _mm256_set1_epi32(off));
        _mm256_mul_ps(_mm256_mul_ps(d8, da), _mm256_cvtepi32_ps(_mm256_sub_epi32(isum, corr)))
    }
}

/// `off·m` lane by lane (wrapping, as `k_group_term`'s correction): a
/// shift for the offsets of Q3_K (4) and Q6_K (32).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn times_off(m: __m256i, off: i32) -> __m256i {
    if off > 0 && (off as u32).is_power_of_two() {
        _mm256_sll_epi32(m, _mm_cvtsi32_si128(off.trailing_zeros() as i32))
    } else {
        _mm256_mullo_epi32(m, _mm256_set1_epi32(off))
    }
}

/// The first 16 bytes of a Q4_K / Q5_K block: `d`, `dmin` and the 12 bytes
/// of packed 6-bit scales and mins.
#[inline]
pub(crate) fn k_head<B: bytemuck::Pod>(b: &B) -> &[u8; 16] {
    bytemuck::bytes_of(b)[..16].try_into().expect("a K block is longer than 16 bytes")
}

/// The eight 6-bit scales and eight 6-bit mins of the Q4_K / Q5_K block
/// that starts with `head` (see [`k_head`]), each as i16, as
/// `dequant::k_scale_min` decodes them one at a time, unpacked from
/// little-endian words of the 12 packed bytes, all three at once in one
/// register: word 0 holds scales 0..4 (low six bits) and the top two bits
/// of scales 4..8, word 1 likewise for the mins, word 2 the low nibbles of
/// scales 4..8 (low) and mins 4..8 (high). No scalar work and no
/// scalar-to-vector moves per block (a scalar version of the same word
/// operations held the Q4_K row kernels 15 % slower).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn k4_scales_mins_v(head: &[u8; 16]) -> (__m128i, __m128i) {
    // SAFETY: reads the 16 bytes of `head`; loadu is unaligned.
    let x = unsafe { _mm_loadu_si128(head.as_ptr().cast()) };
    // Words [w0 w1 w2 w2] and [w0 w1 w0 w1] of the 12 scale bytes.
    let a = _mm_shuffle_epi32::<0b11_11_10_01>(x);
    let b = _mm_shuffle_epi32::<0b10_01_10_01>(x);
    // [w0 & 3F, w1 & 3F, w2 & 0F, (w2 >> 4) & 0F] ...
    let t = _mm_and_si128(
        _mm_srlv_epi32(a, _mm_set_epi32(4, 0, 0, 0)),
        _mm_set_epi32(0x0F0F_0F0F, 0x0F0F_0F0F, 0x3F3F_3F3F, 0x3F3F_3F3F),
    );
    // ... | [0, 0, ((w0 >> 6) & 03) << 4, ((w1 >> 6) & 03) << 4]
    let u = _mm_slli_epi32::<4>(_mm_and_si128(_mm_srli_epi32::<6>(b), _mm_set_epi32(0x0303_0303, 0x0303_0303, 0, 0)));
    // Bytes [sc0..4 mn0..4 sc4..8 mn4..8] -> [sc0..8 mn0..8].
    let r = _mm_shuffle_epi8(_mm_or_si128(t, u), _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15));
    (_mm_cvtepu8_epi16(r), _mm_cvtepu8_epi16(_mm_srli_si128::<8>(r)))
}

/// The sixteen 6-bit signed scales of a Q3_K block, as
/// `dequant::q3_k_scales` decodes them one at a time, in one register:
/// the low nibbles are bytes 0..8 (scales 0..8) and their high nibbles
/// (scales 8..16), and the top two bits of scale i are bits 2(i / 4)..
/// of byte 8 + i % 4, so that a shift of dword k by 2k lines them up.
/// (The scalar loop stored its sixteen bytes one by one and the kernel
/// read them back as a vector, a store-forwarding stall a block: the
/// Q3_K row kernel ran at 4.3-4.7 GB/s from L2 on the Xeon of stop 38,
/// 11.5 with this.)
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn q3_k_scales_v(sc: &[u8; 12]) -> __m128i {
    let lo = u64::from_le_bytes(sc[..8].try_into().expect("8 bytes"));
    let hi = u32::from_le_bytes(sc[8..].try_into().expect("4 bytes"));
    let v = _mm_set_epi64x(i64::from(hi), lo as i64);
    let m4 = _mm_set1_epi8(0x0F);
    let low = _mm_unpacklo_epi64(_mm_and_si128(v, m4), _mm_and_si128(_mm_srli_epi16::<4>(v), m4));
    let tops = _mm_srlv_epi32(_mm_shuffle_epi32::<0b10_10_10_10>(v), _mm_setr_epi32(0, 2, 4, 6));
    let high = _mm_slli_epi16::<4>(_mm_and_si128(tops, _mm_set1_epi8(3)));
    _mm_sub_epi8(_mm_or_si128(low, high), _mm_set1_epi8(32))
}

/// A 256-element K-quant block unpacked for the integer dot: `u[t]` holds
/// the unsigned quants of elements `32t..32t + 32`, `sc[t]` their group
/// scales (one i16 per pair of bytes, for `dot_acc_scaled`), and `mv` the
/// 16 i16 multipliers of the activation's Q8_K group sums. The block term is
/// `term_k(d, dmin, da, isum, Σ mv·bsum)` when `off == 0` (types with mins),
/// else `term(d, da, isum - off·Σ mv·bsum)` (signed quants stored offset).
#[derive(Clone, Copy)]
pub(crate) struct KBlock {
    pub u: [__m256i; 8],
    pub sc: [__m256i; 8],
    pub d: f32,
    pub dmin: f32,
    pub mv: __m256i,
    pub off: i32,
}

impl KBlock {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn new(d: f32, dmin: f32, mv: __m256i, off: i32) -> KBlock {
        let z = _mm256_setzero_si256();
        KBlock { u: [z; 8], sc: [z; 8], d, dmin, mv, off }
    }
}

/// A K block as the panels keep it (`int8_kernels!`'s `unpack_k`, which
/// writes the quants themselves out): `d`, `dmin` and the offset of
/// `KBlock`, its 16 multipliers of the activation's group sums as 8 i32
/// pairs, and its group scales as integers.
pub(crate) struct KParts {
    pub d: f32,
    pub dmin: f32,
    pub off: i32,
    pub mv: [i32; 8],
    pub sc: [i32; 16],
}

// ----------------------------------------------------------------------------
// Row dots
// ----------------------------------------------------------------------------

/// The integer-dot kernels, generated once per x86 level. The invoking
/// module supplies the level's primitives, each a `#[target_feature]`
/// function of that level:
///
/// * `dot_u8_i8(acc, u, y)`: `acc +` Σ u·y (unsigned × signed bytes) in eight i32 lanes;
/// * `dot_acc_scaled(acc, u, y, sc)`: `acc + Σ u·y·sc`, `sc` one i16 per
///   pair of bytes;
/// * `q8_0_dot(acc, x, y)` and `Q8_0_OFF`: `acc +` Σ (x + Q8_0_OFF)·y for signed `x`;
/// * `or_high_bits(lo, qh)`: byte j of `lo` with 0x10 set where bit j of
///   the little-endian `qh` is (the fifth bit of Q5_0 / Q5_1 quants).
///
/// All the layout work (unpacking, scale broadcasts, offsets, the f32 step)
/// is shared, so every level computes the same exact integers and the same
/// floats.
macro_rules! int8_kernels {
    ($features:literal) => {
        use $crate::avx2::{hsum, load32, nibbles32};
        use $crate::avx2_q8::{
            bits, bsums, group_scales, groups_of_half, h2f, hsum_8x8, k_head, legacy_group, load_y, transpose_8x8_i32,
            widen16, word_bcast, KBlock,
        };
        use $crate::blocks::*;
        use $crate::q8::ActRow;
        use $crate::qdot::{Q4_0_OFF, Q5_0_OFF, T_GROUP_BYTES};
        use $crate::types::{GgmlType, QK32, QK_K};

        /// Row dots for every quantized-activation type (not F32 / Q8_1 /
        /// Q8_K weights, which the caller routes to the f32 kernels): rows
        /// `rows` of `w` (`rb` bytes each) against `N` activation rows,
        /// `put(r, dots)` for each. Each weight block is unpacked once and
        /// used `N` times (prefill; decode is `N = 1`). Result `j` does not
        /// depend on `N` or on the other rows: per activation row the
        /// integer sums are the same exact numbers and the f32 operations
        /// the same, in the same order.
        ///
        /// The type is matched once for the run of rows, not once a row.
        /// One core from L2 (`examples/decode_bw 1 1 COLS`), alternating
        /// with a row a call, on the Xeon of stop 39: Q4_K, Q6_K and Q8_0
        /// at 2304 columns 4-6 % faster, at 7168 2-4 %, at 1792 1-4 %. The
        /// larger cost a row on Intel (Q4_K 13.3 GB/s at 1792 columns, 19.1
        /// at 28672) is the software prefetch of each row, which pays from
        /// memory (`crate::matmul::prefetch_setting`). `prefetch`: each row
        /// first asks for the bytes `crate::matmul::prefetch` names.
        ///
        /// # Safety
        /// The CPU must support this module's target features; `w` holds
        /// the rows `rows` of `rb` bytes, each exactly as many `wty`
        /// elements as each `a[j]` has columns, and every `a[j]` must be of
        /// type `vec_dot_type(wty)`.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn dot_rows<const N: usize, const T: bool>(
            wty: GgmlType,
            w: &[u8],
            rb: usize,
            rows: core::ops::Range<usize>,
            prefetch: bool,
            a: &[ActRow<'_>; N],
            at: &[&[i8]; N],
            put: &mut impl FnMut(usize, [f32; N]),
        ) {
            use bytemuck::cast_slice;
            use GgmlType as G;
            let nib = |b: &[u8; 16], _qh: [u8; 4]| nibbles32(b);
            let nib5 = |b: &[u8; 16], qh: [u8; 4]| or_high_bits(nibbles32(b), qh);
            let plain = |acc: __m256i, u: __m256i, y: __m256i| dot_u8_i8(acc, u, y);
            match wty {
                G::Q4_0 => each_row(w, rb, rows, prefetch, put, |row| {
                    legacy::<_, false, N, T>(
                        cast_slice::<u8, BlockQ4_0>(row),
                        a,
                        at,
                        Q4_0_OFF,
                        |b| (bits(b.d), 0),
                        |b| nib(&b.qs, [0; 4]),
                        plain,
                    )
                }),
                G::Q4_1 => each_row(w, rb, rows, prefetch, put, |row| {
                    legacy::<_, true, N, T>(
                        cast_slice::<u8, BlockQ4_1>(row),
                        a,
                        at,
                        0,
                        |b| (bits(b.d), bits(b.m)),
                        |b| nib(&b.qs, [0; 4]),
                        plain,
                    )
                }),
                G::Q5_0 => each_row(w, rb, rows, prefetch, put, |row| {
                    legacy::<_, false, N, T>(
                        cast_slice::<u8, BlockQ5_0>(row),
                        a,
                        at,
                        Q5_0_OFF,
                        |b| (bits(b.d), 0),
                        |b| nib5(&b.qs, b.qh),
                        plain,
                    )
                }),
                G::Q5_1 => each_row(w, rb, rows, prefetch, put, |row| {
                    legacy::<_, true, N, T>(
                        cast_slice::<u8, BlockQ5_1>(row),
                        a,
                        at,
                        0,
                        |b| (bits(b.d), bits(b.m)),
                        |b| nib5(&b.qs, b.qh),
                        plain,
                    )
                }),
                G::Q8_0 => each_row(w, rb, rows, prefetch, put, |row| {
                    legacy::<_, false, N, T>(
                        cast_slice::<u8, BlockQ8_0>(row),
                        a,
                        at,
                        Q8_0_OFF,
                        |b| (bits(b.d), 0),
                        |b| load32(bytemuck::cast_slice(&b.qs), 0),
                        |acc, x, y| q8_0_dot(acc, x, y),
                    )
                }),
                // Q4_0's layout with IQ4's signed table for values: Q8_0's
                // products (the float step is the same, its `post_scale` 1).
                G::IQ4_NL => each_row(w, rb, rows, prefetch, put, |row| {
                    legacy::<_, false, N, T>(
                        cast_slice::<u8, BlockIq4Nl>(row),
                        a,
                        at,
                        Q8_0_OFF,
                        |b| (bits(b.d), 0),
                        |b| {
                            // SAFETY: the table holds 16 bytes.
                            let kv = unsafe { _mm_loadu_si128($crate::iq::KVALUES_IQ4.as_ptr().cast()) };
                            _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(kv), nibbles32(&b.qs))
                        },
                        |acc, x, y| q8_0_dot(acc, x, y),
                    )
                }),
                G::Q2_K => each_row(w, rb, rows, prefetch, put, |row| {
                    kquant::<_, N>(cast_slice::<u8, BlockQ2_K>(row), a, |b| unpack_q2_k(b))
                }),
                G::Q3_K => each_row(w, rb, rows, prefetch, put, |row| {
                    kquant::<_, N>(cast_slice::<u8, BlockQ3_K>(row), a, |b| unpack_q3_k(b))
                }),
                G::Q4_K => each_row(w, rb, rows, prefetch, put, |row| {
                    kquant_or_t::<BlockQ4_K, N, T>(
                        row,
                        a,
                        at,
                        |b| unpack_q45_k::<false>(k_head(b), &b.qs, None),
                        |b| sub_block_scales(k_head(b)),
                    )
                }),
                G::Q5_K => each_row(w, rb, rows, prefetch, put, |row| {
                    kquant_or_t::<BlockQ5_K, N, T>(
                        row,
                        a,
                        at,
                        |b| unpack_q45_k::<true>(k_head(b), &b.qs, Some(&b.qh)),
                        |b| sub_block_scales(k_head(b)),
                    )
                }),
                G::Q6_K => each_row(w, rb, rows, prefetch, put, |row| {
                    kquant_or_t::<BlockQ6_K, N, T>(row, a, at, |b| unpack_q6_k(b), |b| half_block_scales(&b.scales))
                }),
                G::F16 => each_row(w, rb, rows, prefetch, put, |row| {
                    core::array::from_fn(|j| $crate::avx2_q8::half_row::<false>(row, a[j].halves))
                }),
                G::BF16 => each_row(w, rb, rows, prefetch, put, |row| {
                    core::array::from_fn(|j| $crate::avx2_q8::half_row::<true>(row, a[j].halves))
                }),
                G::F32 | G::Q8_1 | G::Q8_K => unreachable!("f32 activations are handled by the caller"),
                t => unreachable!("{t} is dotted by crate::iq"),
            }
        }

        /// The loop of `dot_rows`, inside each arm so that `dot` is one
        /// type's kernel, inlined.
        #[inline(always)]
        fn each_row<const N: usize>(
            w: &[u8],
            rb: usize,
            rows: core::ops::Range<usize>,
            prefetch: bool,
            put: &mut impl FnMut(usize, [f32; N]),
            dot: impl Fn(&[u8]) -> [f32; N],
        ) {
            for r in rows {
                if prefetch {
                    $crate::matmul::prefetch(w, r * rb, rb);
                }
                put(r, dot(&w[r * rb..(r + 1) * rb]));
            }
        }

        /// One weight row against `N` activation rows (as stored, not
        /// group-transposed): [`dot_rows`] of a single row.
        ///
        /// # Safety
        /// The CPU must support this module's target features; `row` must
        /// hold exactly as many `wty` elements as each `a[j]` has columns,
        /// and every `a[j]` must be of type `vec_dot_type(wty)`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn vec_dot_n<const N: usize>(wty: GgmlType, row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
            let mut res = [0f32; N];
            dot_rows::<N, false>(wty, row, row.len(), 0..1, false, a, &[&[]; N], &mut |_, d| res = d);
            res
        }

        /// The 32-element block types, eight blocks at a time: `unpack`
        /// gives a block's quants as 32 bytes, `idot(acc, u, y)` acc + Σ u·y in eight
        /// i32 lanes, `off·Σy` is subtracted per block, and the f32 part is
        /// `legacy_group`, one block per lane. `dm(block)` returns the f16
        /// bits of `d` and (if `MIN`) `m`. A group of eight blocks is
        /// unpacked once for all `N` activation rows.
        ///
        /// The per-block integer sums come out in lane k = block k either
        /// way: without `T`, from eight 8-lane partial sums by `hsum_8x8`;
        /// with `T` (prefill), the group's weights are transposed once so
        /// that lane k of `tw[t]` holds bytes 4t..4t+4 of block k, and the
        /// activations come pre-transposed the same way (`at`), so eight
        /// multiply-adds give the block sums with no horizontal step; they
        /// start from the row's `-off·Σy` per block, stored after the quants.
        #[target_feature(enable = $features)]
        #[inline]
        #[allow(clippy::too_many_arguments)]
        unsafe fn legacy<B, const MIN: bool, const N: usize, const T: bool>(
            blocks: &[B],
            a: &[ActRow<'_>; N],
            at: &[&[i8]; N],
            off: i32,
            dm: impl Fn(&B) -> (u16, u16),
            unpack: impl Fn(&B) -> __m256i,
            idot: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
        ) -> [f32; N] {
            let ahead =
                $crate::matmul::Ahead::new(core::mem::size_of_val(blocks), $crate::matmul::LEGACY_SPREAD_MIN_ROW);
            if ahead.on() {
                legacy_in::<B, MIN, N, T, true>(blocks, a, at, off, ahead, &dm, &unpack, &idot)
            } else {
                legacy_in::<B, MIN, N, T, false>(blocks, a, at, off, ahead, &dm, &unpack, &idot)
            }
        }

        /// [`legacy`], with (`SPREAD`) or without the weight stream's
        /// prefetch a group at a time (`ahead`): two copies of the loop,
        /// so that rows too short to spread run the loop without the
        /// request code.
        #[target_feature(enable = $features)]
        #[inline]
        #[allow(clippy::too_many_arguments)]
        unsafe fn legacy_in<B, const MIN: bool, const N: usize, const T: bool, const SPREAD: bool>(
            blocks: &[B],
            a: &[ActRow<'_>; N],
            at: &[&[i8]; N],
            off: i32,
            ahead: $crate::matmul::Ahead,
            dm: &impl Fn(&B) -> (u16, u16),
            unpack: &impl Fn(&B) -> __m256i,
            idot: &impl Fn(__m256i, __m256i, __m256i) -> __m256i,
        ) -> [f32; N] {
            let mut acc = [_mm256_setzero_ps(); N];
            let mut accm = [_mm256_setzero_ps(); N];
            let nb = blocks.len();
            for g in 0..nb.div_ceil(8) {
                let base = 8 * g;
                let full = base + 8 <= nb;
                let mut u = [_mm256_setzero_si256(); 8];
                let mut dw = [0u16; 8];
                let mut mw = [0u16; 8];
                if SPREAD {
                    let grp = &blocks[base..nb.min(base + 8)];
                    ahead.fetch(grp.as_ptr(), core::mem::size_of_val(grp));
                }
                if full {
                    // Fixed-size view: fully unrolled.
                    let grp: &[B; 8] = blocks[base..base + 8].try_into().unwrap();
                    u = core::array::from_fn(|k| unpack(&grp[k]));
                    for k in 0..8 {
                        (dw[k], mw[k]) = dm(&grp[k]);
                    }
                } else {
                    // The last, partial group: zero-padded lanes.
                    for (k, b) in blocks[base..].iter().enumerate() {
                        u[k] = unpack(b);
                        (dw[k], mw[k]) = dm(b);
                    }
                }
                let tw = if T { transpose_8x8_i32(u) } else { u };
                let (dwf, mwf) = ($crate::avx2_q8::f16x8(&dw), $crate::avx2_q8::f16x8(&mw));
                for j in 0..N {
                    let is = if T {
                        let y: &[i8; T_GROUP_BYTES] =
                            at[j][T_GROUP_BYTES * g..T_GROUP_BYTES * (g + 1)].try_into().unwrap();
                        let z = _mm256_setzero_si256();
                        // Starts from the group's `-off·Σy` (bytes 256..288).
                        let mut is0 = idot(load_y(y, 8 * QK32), tw[0], load_y(y, 0));
                        let mut is1 = idot(z, tw[1], load_y(y, QK32));
                        for t in (2..8).step_by(2) {
                            is0 = idot(is0, tw[t], load_y(y, QK32 * t));
                            is1 = idot(is1, tw[t + 1], load_y(y, QK32 * (t + 1)));
                        }
                        _mm256_add_epi32(is0, is1)
                    } else if full {
                        let y: &[i8; 8 * QK32] = a[j].qs[8 * QK32 * g..8 * QK32 * (g + 1)].try_into().unwrap();
                        hsum_8x8(core::array::from_fn(|k| idot(_mm256_setzero_si256(), u[k], load_y(y, QK32 * k))))
                    } else {
                        let mut parts = [_mm256_setzero_si256(); 8];
                        for k in 0..nb - base {
                            parts[k] = idot(_mm256_setzero_si256(), u[k], load_y(a[j].qs, QK32 * (base + k)));
                        }
                        hsum_8x8(parts)
                    };
                    // Loaded from the rows, a partial group's by masked
                    // loads (a copy into a local array would cost a
                    // store-forwarding stall per load).
                    let ys = if off != 0 { $crate::avx2_q8::i32x8_at(a[j].sums, base) } else { _mm256_setzero_si256() };
                    let da = $crate::avx2_q8::f32x8_at(a[j].d, base);
                    let sa = if MIN { $crate::avx2_q8::f32x8_at(a[j].s, base) } else { _mm256_setzero_ps() };
                    let off = if T { 0 } else { off };
                    legacy_group::<MIN>(&mut acc[j], &mut accm[j], is, off, ys, da, sa, dwf, mwf);
                }
            }
            core::array::from_fn(|j| if MIN { hsum(acc[j]) + hsum(accm[j]) } else { hsum(acc[j]) })
        }

        /// The 256-element K blocks, eight at a time: each block is unpacked
        /// once (`unpack`, see `KBlock`) and its integer sums formed for
        /// each of the `N` activation rows (`row_sum(kb, b, j)`: Σ sc·u·y of
        /// block `b` and row `j` spread over eight i32 lanes); then per row
        /// one `hsum_8x8` puts the eight blocks' sums in lanes 0..8 and the
        /// block terms are computed lane-wise (lane k = block 8g + k, the
        /// lane `acc[b % 8]` of the reference; a last partial group has zero
        /// lanes, whose terms are +0).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn kgroups<B, const N: usize>(
            blocks: &[B],
            a: &[ActRow<'_>; N],
            unpack: impl Fn(&B) -> KBlock,
            row_sum: impl Fn(&KBlock, usize, usize) -> __m256i,
        ) -> [f32; N] {
            let z = _mm256_setzero_si256();
            let mut acc = [_mm256_setzero_ps(); N];
            let nb = blocks.len();
            let ahead = $crate::matmul::Ahead::new(core::mem::size_of_val(blocks), 0);
            for g in 0..nb.div_ceil(8) {
                let base = 8 * g;
                let n = (nb - base).min(8);
                // Written before they are read (lanes past a partial
                // group read as zeros below); left uninitialised so that each
                // group does not clear 2·N·256 bytes first (a memset that
                // took 6 % of a MoE prefill).
                let mut isv = [[core::mem::MaybeUninit::<__m256i>::uninit(); 8]; N];
                let mut mv = [[core::mem::MaybeUninit::<__m256i>::uninit(); 8]; N];
                let mut d = [0f32; 8];
                let mut dmin = [0f32; 8];
                let mut off = 0;
                for k in 0..n {
                    let b = base + k;
                    ahead.fetch(blocks.as_ptr().wrapping_add(b), core::mem::size_of::<B>());
                    let kb = unpack(&blocks[b]);
                    (d[k], dmin[k], off) = (kb.d, kb.dmin, kb.off);
                    for j in 0..N {
                        let is = row_sum(&kb, b, j);
                        let m = _mm256_madd_epi16(bsums(a[j], b), kb.mv);
                        if kb.off == 0 {
                            isv[j][k].write(is);
                            mv[j][k].write(m);
                        } else {
                            // The offset's correction `off·Σ mv·bsum` taken
                            // from the lanes before they are summed: the
                            // same integer (mod 2^32) as from the sum, and
                            // one horizontal sum a group instead of two.
                            isv[j][k].write(_mm256_sub_epi32(is, $crate::avx2_q8::times_off(m, kb.off)));
                        }
                    }
                }
                let (d8, dmin8) = ($crate::avx2_q8::f32x8(&d), $crate::avx2_q8::f32x8(&dmin));
                for j in 0..N {
                    // Lanes past a partial group are zeros, chosen here
                    // rather than written into the arrays first: that loop
                    // became two `memset` calls a row wherever a row ends in
                    // a partial group (1.2 % of a decode's samples at
                    // R1-Distill-Qwen-7B's 3584 and 18944 columns).
                    // SAFETY: lanes `k < n` were written above (`mv` only
                    // where `off == 0`).
                    let isum =
                        unsafe { hsum_8x8(core::array::from_fn(|k| if k < n { isv[j][k].assume_init() } else { z })) };
                    let m = if off == 0 {
                        unsafe { hsum_8x8(core::array::from_fn(|k| if k < n { mv[j][k].assume_init() } else { z })) }
                    } else {
                        z
                    };
                    let da = $crate::avx2_q8::f32x8_at(a[j].d, base);
                    acc[j] = _mm256_add_ps(acc[j], $crate::avx2_q8::k_group_term(isum, m, d8, dmin8, da, off));
                }
            }
            core::array::from_fn(|j| hsum(acc[j]))
        }

        /// The K blocks through `kgroups` with each pair of 32 quants and
        /// 32 activations multiplied and scaled (`dot_acc_scaled`).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn kquant<B, const N: usize>(
            blocks: &[B],
            a: &[ActRow<'_>; N],
            unpack: impl Fn(&B) -> KBlock,
        ) -> [f32; N] {
            let z = _mm256_setzero_si256();
            kgroups::<B, N>(blocks, a, unpack, |kb, b, j| {
                let yb: &[i8; QK_K] = a[j].qs[QK_K * b..QK_K * (b + 1)].try_into().unwrap();
                let mut is = [z; 4];
                for t in 0..8 {
                    is[t % 4] = dot_acc_scaled(is[t % 4], kb.u[t], load_y(yb, 32 * t), kb.sc[t]);
                }
                _mm256_add_epi32(_mm256_add_epi32(is[0], is[1]), _mm256_add_epi32(is[2], is[3]))
            })
        }

        /// The K blocks whose scales cover 32 or 16 elements (Q4_K, Q5_K,
        /// Q6_K) against activations stored group-transposed (`at`, one
        /// 256-element block a group, see `qdot::transpose_groups`), through
        /// `kgroups`: each weight block's quants are transposed once for
        /// the `N` rows (kept in `u`), so that lane k of `u[t]` holds bytes
        /// 4t..4t+4 of sub-block k (elements 32k + 4t ..), and eight
        /// `dot_u8_i8` give the sums of the eight sub-blocks in lanes 0..8
        /// (elements 0..16 of each sub-block from t < 4, 16..32 from
        /// t ≥ 4); one i32 multiply each by `scales(block)` (the scales of
        /// those halves, lane k = sub-block k, kept in `sc[0]` and `sc[1]`)
        /// replaces the per-pair scaling of `kquant`. The block's integer
        /// sum is the same exact number as `kquant`'s, so the results are
        /// the same bits.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn kquant_t<B, const N: usize>(
            blocks: &[B],
            a: &[ActRow<'_>; N],
            at: &[&[i8]; N],
            unpack: impl Fn(&B) -> KBlock,
            scales: impl Fn(&B) -> (__m256i, __m256i),
        ) -> [f32; N] {
            let z = _mm256_setzero_si256();
            let unpack_t = |blk: &B| {
                let mut kb = unpack(blk);
                kb.u = transpose_8x8_i32(kb.u);
                (kb.sc[0], kb.sc[1]) = scales(blk);
                kb
            };
            kgroups::<B, N>(blocks, a, unpack_t, |kb, b, j| {
                let y: &[i8; T_GROUP_BYTES] = at[j][T_GROUP_BYTES * b..T_GROUP_BYTES * (b + 1)].try_into().unwrap();
                let mut lo = dot_u8_i8(z, kb.u[0], load_y(y, 0));
                let mut hi = dot_u8_i8(z, kb.u[4], load_y(y, 128));
                for t in 1..4 {
                    lo = dot_u8_i8(lo, kb.u[t], load_y(y, 32 * t));
                    hi = dot_u8_i8(hi, kb.u[t + 4], load_y(y, 32 * (t + 4)));
                }
                _mm256_add_epi32(_mm256_mullo_epi32(lo, kb.sc[0]), _mm256_mullo_epi32(hi, kb.sc[1]))
            })
        }

        /// One K-quant block (Q2_K … Q6_K) unpacked for `crate::panel`:
        /// its 256 unsigned quants into `u`, and its `d`, `dmin`, offset,
        /// the multipliers of the activation's group sums and the group
        /// scales as integers (eight 32-element groups for Q4_K / Q5_K,
        /// sixteen 16-element ones for Q2_K, Q3_K and Q6_K), see `KParts`.
        ///
        /// # Safety
        /// The CPU must support this module's target features; `bytes` is
        /// exactly one block of `wty`.
        #[target_feature(enable = $features)]
        #[inline]
        pub(crate) unsafe fn unpack_k(wty: GgmlType, bytes: &[u8], u: &mut [u8; QK_K]) -> $crate::avx2_q8::KParts {
            let mut sc = [0i32; 16];
            let kb = match wty {
                GgmlType::Q4_K => {
                    let b: &BlockQ4_K = bytemuck::from_bytes(bytes);
                    // SAFETY: eight i32 into `sc[..8]`.
                    unsafe { _mm256_storeu_si256(sc.as_mut_ptr().cast(), sub_block_scales(k_head(b)).0) };
                    unpack_q45_k::<false>(k_head(b), &b.qs, None)
                }
                GgmlType::Q5_K => {
                    let b: &BlockQ5_K = bytemuck::from_bytes(bytes);
                    // SAFETY: eight i32 into `sc[..8]`.
                    unsafe { _mm256_storeu_si256(sc.as_mut_ptr().cast(), sub_block_scales(k_head(b)).0) };
                    unpack_q45_k::<true>(k_head(b), &b.qs, Some(&b.qh))
                }
                GgmlType::Q6_K => {
                    let b: &BlockQ6_K = bytemuck::from_bytes(bytes);
                    sc = b.scales.map(i32::from);
                    unpack_q6_k(b)
                }
                GgmlType::Q3_K => {
                    let b: &BlockQ3_K = bytemuck::from_bytes(bytes);
                    let v = $crate::avx2_q8::q3_k_scales_v(&b.scales);
                    let (lo, hi) = (_mm256_cvtepi8_epi32(v), _mm256_cvtepi8_epi32(_mm_srli_si128::<8>(v)));
                    // SAFETY: eight i32 into each half of `sc`.
                    unsafe {
                        _mm256_storeu_si256(sc.as_mut_ptr().cast(), lo);
                        _mm256_storeu_si256(sc.as_mut_ptr().add(8).cast(), hi);
                    }
                    unpack_q3_k(b)
                }
                GgmlType::Q2_K => {
                    let b: &BlockQ2_K = bytemuck::from_bytes(bytes);
                    sc = b.scales.map(|v| i32::from(v & 0x0F));
                    unpack_q2_k(b)
                }
                t => unreachable!("unpack_k: {t} is not a K-quant"),
            };
            for (c, v) in kb.u.iter().enumerate() {
                // SAFETY: 32 bytes into `u[32c..32c + 32]`.
                unsafe { _mm256_storeu_si256(u.as_mut_ptr().add(32 * c).cast(), *v) };
            }
            let mut mv = [0i32; 8];
            // SAFETY: the 16 i16 multipliers, as 8 i32 pairs, into `mv`.
            unsafe { _mm256_storeu_si256(mv.as_mut_ptr().cast(), kb.mv) };
            $crate::avx2_q8::KParts { d: kb.d, dmin: kb.dmin, off: kb.off, mv, sc }
        }

        /// One block of a 32-element type unpacked as `vec_dot_n` reads it,
        /// for `crate::panel`: its 32 quants as unsigned bytes (`q + off`,
        /// `off` the type's offset: 8 for Q4_0, 16 for Q5_0, this level's
        /// `Q8_0_OFF` for Q8_0 and for IQ4_NL's table values, 0 for Q4_1 /
        /// Q5_1) into `u`; returns `d`
        /// and `m` (Q4_1 / Q5_1; else 0).
        ///
        /// # Safety
        /// The CPU must support this module's target features; `bytes` is
        /// exactly one block of `wty`.
        #[target_feature(enable = $features)]
        #[inline]
        pub(crate) unsafe fn unpack_legacy(wty: GgmlType, bytes: &[u8], u: &mut [u8; QK32]) -> (f32, f32) {
            let (q, d, m) = unpack_legacy_v(wty, bytes);
            // SAFETY: 32 bytes into `u`.
            unsafe { _mm256_storeu_si256(u.as_mut_ptr().cast(), q) };
            (d, m)
        }

        /// `unpack_legacy`'s quants as a vector.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn unpack_legacy_v(wty: GgmlType, bytes: &[u8]) -> (__m256i, f32, f32) {
            use GgmlType as G;
            match wty {
                G::Q4_0 => {
                    let b: &BlockQ4_0 = bytemuck::from_bytes(bytes);
                    (nibbles32(&b.qs), h2f(b.d), 0.0)
                }
                G::Q4_1 => {
                    let b: &BlockQ4_1 = bytemuck::from_bytes(bytes);
                    (nibbles32(&b.qs), h2f(b.d), h2f(b.m))
                }
                G::Q5_0 => {
                    let b: &BlockQ5_0 = bytemuck::from_bytes(bytes);
                    (or_high_bits(nibbles32(&b.qs), b.qh), h2f(b.d), 0.0)
                }
                G::Q5_1 => {
                    let b: &BlockQ5_1 = bytemuck::from_bytes(bytes);
                    (or_high_bits(nibbles32(&b.qs), b.qh), h2f(b.d), h2f(b.m))
                }
                G::Q8_0 => {
                    let b: &BlockQ8_0 = bytemuck::from_bytes(bytes);
                    let q = load32(bytemuck::cast_slice(&b.qs), 0);
                    (_mm256_add_epi8(q, _mm256_set1_epi8(Q8_0_OFF as u8 as i8)), h2f(b.d), 0.0)
                }
                G::IQ4_NL => {
                    let b: &BlockIq4Nl = bytemuck::from_bytes(bytes);
                    // IQ4's table values, as Q8_0's quants: plus Q8_0_OFF.
                    // SAFETY: the table holds 16 bytes.
                    let table = unsafe { _mm_loadu_si128($crate::iq::KVALUES_IQ4.as_ptr().cast()) };
                    let v = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(table), nibbles32(&b.qs));
                    (_mm256_add_epi8(v, _mm256_set1_epi8(Q8_0_OFF as u8 as i8)), h2f(b.d), 0.0)
                }
                t => unreachable!("unpack_legacy: {t} is not a 32-element type with 8-bit activations"),
            }
        }

        /// A Q4_K / Q5_K / Q6_K row: `kquant_t` against transposed
        /// activations (`T`), else `kquant`.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn kquant_or_t<B: bytemuck::Pod, const N: usize, const T: bool>(
            row: &[u8],
            a: &[ActRow<'_>; N],
            at: &[&[i8]; N],
            unpack: impl Fn(&B) -> KBlock,
            scales: impl Fn(&B) -> (__m256i, __m256i),
        ) -> [f32; N] {
            let blocks = bytemuck::cast_slice::<u8, B>(row);
            if T {
                kquant_t::<B, N>(blocks, a, at, unpack, scales)
            } else {
                kquant::<B, N>(blocks, a, unpack)
            }
        }

        /// Q4_K / Q5_K: the eight 6-bit sub-block scales as i32 lanes (the
        /// same for both halves of each sub-block).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn sub_block_scales(head: &[u8; 16]) -> (__m256i, __m256i) {
            let v = _mm256_cvtepu16_epi32($crate::avx2_q8::k4_scales_mins_v(head).0);
            (v, v)
        }

        /// Q6_K: the signed scales of the 16-element groups, lane k = group
        /// 2k (elements 32k..32k+16) in the first vector and 2k + 1 in the
        /// second.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn half_block_scales(sc: &[i8; 16]) -> (__m256i, __m256i) {
            // SAFETY: reads the 16 scale bytes; loadu is unaligned.
            let raw = unsafe { _mm_loadu_si128(sc.as_ptr().cast()) };
            let even_odd = _mm_shuffle_epi8(raw, _mm_set_epi8(15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0));
            (_mm256_cvtepi8_epi32(even_odd), _mm256_cvtepi8_epi32(_mm_srli_si128::<8>(even_odd)))
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn unpack_q2_k(blk: &BlockQ2_K) -> KBlock {
            let m3 = _mm256_set1_epi8(3);
            let m4 = _mm_set1_epi8(0x0F);
            // SAFETY: reads the 16 scale bytes; loadu is unaligned.
            let raw = unsafe { _mm_loadu_si128(blk.scales.as_ptr().cast()) };
            let sc = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
            let mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4));
            let mut kb = KBlock::new(h2f(blk.d), h2f(blk.dmin), mn, 0);
            for h in 0..2 {
                let sc_h = groups_of_half(sc, h);
                // Element 128h + 32s + l: bits 2s..2s+2 of qs[32h + l].
                let mut q = load32(&blk.qs, 32 * h);
                for s in 0..4 {
                    kb.u[4 * h + s] = _mm256_and_si256(q, m3);
                    kb.sc[4 * h + s] = group_scales(sc_h, s);
                    q = _mm256_srli_epi16::<2>(q);
                }
            }
            kb
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn unpack_q3_k(blk: &BlockQ3_K) -> KBlock {
            let m3 = _mm256_set1_epi8(3);
            let one = _mm256_set1_epi8(1);
            let sc = _mm256_cvtepi8_epi16($crate::avx2_q8::q3_k_scales_v(&blk.scales));
            // u = low two bits + 4 * (hmask bit 4h + s): 0..=7; value = u - 4.
            let mut kb = KBlock::new(h2f(blk.d), 0.0, sc, 4);
            let mut hm = load32(&blk.hmask, 0);
            for h in 0..2 {
                let sc_h = groups_of_half(sc, h);
                let mut q = load32(&blk.qs, 32 * h);
                for s in 0..4 {
                    let hb = _mm256_slli_epi16::<2>(_mm256_and_si256(hm, one));
                    kb.u[4 * h + s] = _mm256_or_si256(_mm256_and_si256(q, m3), hb);
                    kb.sc[4 * h + s] = group_scales(sc_h, s);
                    q = _mm256_srli_epi16::<2>(q);
                    hm = _mm256_srli_epi16::<1>(hm);
                }
            }
            kb
        }

        /// Q4_K and Q5_K (`HIGH`: with the fifth bit from `qh`).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn unpack_q45_k<const HIGH: bool>(head: &[u8; 16], qs: &[u8; 128], qh: Option<&[u8; 32]>) -> KBlock {
            let m4 = _mm256_set1_epi8(0x0F);
            let one = _mm256_set1_epi8(1);
            let (sc16, mn) = $crate::avx2_q8::k4_scales_mins_v(head);
            let sc = _mm256_broadcastsi128_si256(sc16);
            // Each min covers two groups of 16: [m0 m0 m1 m1 .. m7 m7].
            let mn2 = _mm256_set_m128i(_mm_unpackhi_epi16(mn, mn), _mm_unpacklo_epi16(mn, mn));
            let (d, dmin) = (F16Le([head[0], head[1]]), F16Le([head[2], head[3]]));
            let mut kb = KBlock::new(h2f(d), h2f(dmin), mn2, 0);
            let mut hb = if HIGH { load32(qh.expect("Q5_K has qh"), 0) } else { _mm256_setzero_si256() };
            // Sub-block j = 2c + s (elements 32j..): nibble s of qs[32c..], bit j of qh.
            for c in 0..4 {
                let v = load32(qs, 32 * c);
                let mut lo = _mm256_and_si256(v, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                if HIGH {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(_mm256_and_si256(hb, one)));
                    hb = _mm256_srli_epi16::<1>(hb);
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16::<4>(_mm256_and_si256(hb, one)));
                    hb = _mm256_srli_epi16::<1>(hb);
                }
                kb.u[2 * c] = lo;
                kb.u[2 * c + 1] = hi;
                kb.sc[2 * c] = _mm256_shuffle_epi8(sc, word_bcast(2 * c as i32));
                kb.sc[2 * c + 1] = _mm256_shuffle_epi8(sc, word_bcast(2 * c as i32 + 1));
            }
            kb
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn unpack_q6_k(blk: &BlockQ6_K) -> KBlock {
            let m4 = _mm256_set1_epi8(0x0F);
            let m3 = _mm256_set1_epi8(0x03);
            let sc = widen16::<true>(bytemuck::cast(blk.scales));
            let mut kb = KBlock::new(h2f(blk.d), 0.0, sc, 32);
            for h in 0..2 {
                let sc_h = groups_of_half(sc, h);
                let ql0 = load32(&blk.ql, 64 * h);
                let ql1 = load32(&blk.ql, 64 * h + 32);
                let mut qh = load32(&blk.qh, 32 * h);
                // Element 128h + 32s + l: nibble s/2 of ql[64h + 32(s%2) + l],
                // bits 2s..2s+2 of qh[32h + l]; u = q + 32 in 0..=63.
                let lows = [
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                ];
                for (s, low) in lows.into_iter().enumerate() {
                    kb.u[4 * h + s] = _mm256_or_si256(low, _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m3)));
                    kb.sc[4 * h + s] = group_scales(sc_h, s);
                    qh = _mm256_srli_epi16::<2>(qh);
                }
            }
            kb
        }
    };
}
pub(crate) use int8_kernels;

/// This level's kernels (the primitives above are AVX2's).
mod kernels {
    use super::{dot_acc_scaled, dot_u8_i8, or_high_bits, q8_0_dot, Q8_0_OFF};
    use core::arch::x86_64::*;
    int8_kernels!("avx2,fma,f16c");
}
pub(crate) use kernels::{dot_rows, unpack_k, unpack_legacy, vec_dot_n};

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

/// F16 × F16 / BF16 × BF16 in `qdot`'s order: four 8-lane accumulators
/// (lanes 0..32 of each 32-element chunk), mul then add.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn half_row<const BF16: bool>(row: &[u8], x: &[u16]) -> f32 {
    let n = x.len();
    let full = n - n % 32;
    let mut acc = [_mm256_setzero_ps(); 4];
    for (wc, xc) in row[..2 * full].chunks_exact(64).zip(x[..full].chunks_exact(32)) {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `wc` has 64 bytes and `xc` 32 values (64 bytes): the 16
            // bytes at 16k are in bounds for k < 4; loadu is unaligned.
            let (w, v) = unsafe {
                (_mm_loadu_si128(wc.as_ptr().add(16 * k).cast()), _mm_loadu_si128(xc.as_ptr().add(8 * k).cast()))
            };
            *a = _mm256_add_ps(*a, _mm256_mul_ps(widen::<BF16>(w), widen::<BF16>(v)));
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let mut sum = hsum(v);
    let widen1 = |h: u16| -> f32 {
        if BF16 {
            f32::from_bits((h as u32) << 16)
        } else {
            half::f16::from_bits(h).to_f32()
        }
    };
    for (w, &xv) in row[2 * full..].chunks_exact(2).zip(&x[full..]) {
        sum += widen1(u16::from_le_bytes([w[0], w[1]])) * widen1(xv);
    }
    sum
}
