//! AVX2 kernels of the i-quants with 8-weight grids (IQ1_S, IQ1_M, and
//! with sign codes IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S), for CPUs
//! without AVX-512: the
//! chunk-at-a-time kernels of [`super::kernels`] looked each group's sign
//! pattern up as a u64 and built it into a vector, and ran 1.3 to 2.7
//! times slower than llama.cpp's AVX2 kernels on the same core.
//!
//! Here a block's sign bits are worked out at once in one vector (the
//! 7-bit codes' parity bits by shift-xors, or the stored sign bytes), and
//! each chunk's 32 bits become `vpsignb` operands by one `vpshufb`, `vpand`
//! and `vpaddb`. The grid values are the expanded tables' (a u64, or two
//! u32, per 8 weights), the scales `vpmaddwd` operands, broadcast a chunk
//! by one `vpermd`. IQ1_S's and IQ1_M's grid indices are formed in vectors
//! and read back through memory; their weights enter `vpmaddubsw`
//! unsigned (`8g + 8`, `q + 9`), as in [`super::avx512`].
//!
//! These kernels are bound by the vector ports (Intel's p0, p1, p5 all
//! busy), not by the shuffle port alone: taking the sign work out of
//! IQ2_XXS made it 1.3 times faster, the grid loads 1.1 times; moving the
//! grid's three shuffles to broadcasts and blends (other ports) made it
//! slower. LLVM rewrites constant shuffles into sequences of two or three
//! (`vpshufd` + `vpermq` for a `vpermd`, `vpextrw` for a stored index read
//! back), so the controls and the stored indices pass through
//! `black_box`.
//!
//! Exact integers and the float step of the module docs of
//! [`super::kernels`]: every kernel returns the scalar reference's bits.

use super::*;
use crate::q8::ActRow;
use crate::qdot::reduce8;
use core::arch::x86_64::*;

/// `$body` for `$t` = 0..8, written out: with `t` a constant the index and
/// permute arithmetic folds away (as a loop the compiler kept it at run
/// time, about ten instructions a chunk).
macro_rules! for8 {
    ($t:ident => $body:block) => {
        for8!(@ $t, $body, 0 1 2 3 4 5 6 7)
    };
    (@ $t:ident, $body:block, $($n:literal)*) => {{
        $({
            let $t: usize = $n;
            $body
        })*
    }};
}

/// The features every kernel here is compiled for (the `Avx2Fma` level's).
macro_rules! avx2_fn {
    ($(#[$m:meta])* unsafe fn $name:ident $($rest:tt)*) => {
        $(#[$m])*
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn $name $($rest)*
    };
}

/// The kernel for `wty` at this level, if it has one here.
///
/// # Safety
/// The CPU must have AVX2/FMA/F16C; `row` whole blocks of `wty`, each
/// `a[j]` its Q8_K activations of the same length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot<const N: usize>(wty: GgmlType, row: &[u8], a: &[ActRow<'_>; N]) -> Option<[f32; N]> {
    use GgmlType as G;
    // SAFETY (every arm): the caller's contract, passed on.
    unsafe {
        Some(match wty {
            G::IQ1_S => iq1s(row, a),
            G::IQ1_M => iq1m(row, a),
            G::IQ2_XXS => iq2xxs(row, a),
            G::IQ2_XS => iq2xs(row, a),
            G::IQ2_S => iq2s(row, a),
            G::IQ3_XXS => iq3xxs(row, a),
            G::IQ3_S => iq3s(row, a),
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// Shared parts, compiled inside the kernels that call them.
// ---------------------------------------------------------------------------

/// The vector of exact i32 sums a kernel keeps per activation row (a
/// 256-bit one here, a 512-bit one in [`super::avx512`]).
pub(super) trait Sums: Copy {
    /// Whether [`blocks`] sums eight blocks' lanes at once (with 32
    /// registers; at AVX2's 16 the eight partial vectors made IQ1_M 23.1 ->
    /// 24.5-26.5 ns a block, so there each block's total is taken alone).
    const GROUPED: bool;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// Eight i32 lanes with the same (exact) total.
    unsafe fn fold(self) -> __m256i;
}

impl Sums for __m256i {
    const GROUPED: bool = false;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX (the callers').
        unsafe { _mm256_setzero_si256() }
    }

    #[inline(always)]
    unsafe fn fold(self) -> __m256i {
        self
    }
}

/// The loop over `TS`-byte blocks of every level's kernels: `block(bytes,
/// b, sums)` adds block `b`'s exact integers into `sums` (one vector per
/// activation row) and returns its `d`; then the float step of
/// [`super::kernels`]' docs (`term` into lane `b % 8`, `reduce8`,
/// `post_scale`); with `V::GROUPED`, eight blocks at once: their sums' totals come out of one
/// `hsum_8x8` in lanes 0..8 (lane k = block 8g + k, the reference's lane
/// `b % 8`), and the terms `(d·da)·isum` are computed and added lane-wise,
/// the reference's operations. A last partial group's missing lanes add
/// `(0·0)·0 = +0`, which leaves every lane as it is (a lane that starts
/// at +0 and adds terms never holds -0). One horizontal sum per block
/// took about 1.5 ns of IQ4_XS's 10.5 on a Xeon.
#[inline(always)]
pub(super) unsafe fn blocks<const TS: usize, const N: usize, V: Sums>(
    wty: GgmlType,
    row: &[u8],
    a: &[ActRow<'_>; N],
    mut block: impl FnMut(&[u8; TS], usize, &mut [V; N]) -> f32,
) -> [f32; N] {
    use crate::avx2_q8::{f32x8, hsum_8x8, take8};
    if !V::GROUPED {
        let mut acc = [[0f32; 8]; N];
        for (b, blk) in row.chunks_exact(TS).enumerate() {
            // SAFETY: the callers' features.
            let mut sums = [unsafe { V::zero() }; N];
            let d = block(blk.try_into().unwrap(), b, &mut sums);
            for ((l, s), aj) in acc.iter_mut().zip(sums).zip(a) {
                // SAFETY: as above.
                l[b % 8] += crate::qdot::term(d, aj.d[b], unsafe { hsum(s.fold()) });
            }
        }
        return acc.map(|l| reduce8(l) * post_scale(wty));
    }
    // SAFETY (every intrinsic below): AVX2, the callers' features.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); N];
        for (g, group) in row.chunks(8 * TS).enumerate() {
            let mut part = [[_mm256_setzero_si256(); 8]; N];
            let mut d = [0f32; 8];
            for (k, blk) in group.chunks_exact(TS).enumerate() {
                let mut sums = [V::zero(); N];
                d[k] = block(blk.try_into().unwrap(), 8 * g + k, &mut sums);
                for (p, s) in part.iter_mut().zip(sums) {
                    p[k] = s.fold();
                }
            }
            let dv = f32x8(&d);
            for ((l, p), aj) in acc.iter_mut().zip(part).zip(a) {
                let da = match aj.d.get(8 * g..8 * g + 8) {
                    Some(da) => f32x8(da.try_into().unwrap()),
                    None => f32x8(&take8(aj.d, 8 * g)),
                };
                *l = _mm256_add_ps(*l, _mm256_mul_ps(_mm256_mul_ps(dv, da), _mm256_cvtepi32_ps(hsum_8x8(p))));
            }
        }
        acc.map(|l| {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), l);
            reduce8(lanes) * post_scale(wty)
        })
    }
}

/// Chunk `t` (weights 32t..32t + 32) of block `b`: magnitudes `u`, the
/// signs as `vpsignb` operands `sg` (when `SIGNED`), i16 scales `sc` of
/// the pairs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const SIGNED: bool, const N: usize>(
    sums: &mut [__m256i; N],
    a: &[ActRow<'_>; N],
    b: usize,
    t: usize,
    u: __m256i,
    sg: __m256i,
    sc: __m256i,
) {
    for (s, aj) in sums.iter_mut().zip(a) {
        // One bounds check a block (the same for every chunk), not one a chunk.
        let ys = &aj.qs[QK_K * b..QK_K * b + QK_K][32 * t..32 * t + 32];
        // SAFETY: AVX2 (the callers'); `ys` holds 32 bytes.
        unsafe {
            let mut y = _mm256_loadu_si256(ys.as_ptr().cast());
            if SIGNED {
                y = _mm256_sign_epi8(y, sg);
            }
            *s = _mm256_add_epi32(*s, _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), sc));
        }
    }
}

/// The horizontal sum of eight i32 lanes (exact).
#[inline(always)]
unsafe fn hsum(v: __m256i) -> i32 {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// Four u64 (element 0 first) as one vector.
#[inline(always)]
unsafe fn v4(e: [u64; 4]) -> __m256i {
    // SAFETY: AVX (the callers').
    unsafe { _mm256_setr_epi64x(e[0] as i64, e[1] as i64, e[2] as i64, e[3] as i64) }
}

/// Eight u32 `e(0..8)` as one vector.
#[inline(always)]
unsafe fn v8(e: impl Fn(usize) -> u32) -> __m256i {
    // SAFETY: AVX (the callers').
    unsafe {
        _mm256_setr_epi32(
            e(0) as i32,
            e(1) as i32,
            e(2) as i32,
            e(3) as i32,
            e(4) as i32,
            e(5) as i32,
            e(6) as i32,
            e(7) as i32,
        )
    }
}

/// `v`'s 128-bit half `h` in both halves: dwords `4h..4h + 4` as lanes
/// 0..4 of each, once a block for [`sign_bytes_of`].
#[inline(always)]
unsafe fn half(v: __m256i, h: usize) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe {
        if h == 0 {
            _mm256_permute2x128_si256::<0x00>(v, v)
        } else {
            _mm256_permute2x128_si256::<0x11>(v, v)
        }
    }
}

/// The 32 sign bits of dword `t` (bit j: weight j negative) of the vector
/// whose half `t / 4` is `halved` ([`half`]) as `vpsignb` operands
/// (negative where set, +127 where clear): one
/// `vpshufb` spreads the dword's bytes (bytes 0 and 1 into the low half,
/// 2 and 3 into the high one, each half holding the dword), instead of a
/// dword broadcast first (two more shuffle-port uops a chunk: IQ2_XXS
/// 3.1 → 3.4 GB/s a core from L2 on the Xeon of stop 47).
#[inline(always)]
unsafe fn sign_bytes_of(halved: __m256i, t: usize) -> __m256i {
    let b = 4 * (t % 4) as i8;
    // SAFETY: AVX2 (the callers').
    unsafe {
        let spread = _mm256_shuffle_epi8(
            halved,
            _mm256_setr_epi8(
                b,
                b,
                b,
                b,
                b,
                b,
                b,
                b,
                b + 1,
                b + 1,
                b + 1,
                b + 1,
                b + 1,
                b + 1,
                b + 1,
                b + 1,
                b + 2,
                b + 2,
                b + 2,
                b + 2,
                b + 2,
                b + 2,
                b + 2,
                b + 2,
                b + 3,
                b + 3,
                b + 3,
                b + 3,
                b + 3,
                b + 3,
                b + 3,
                b + 3,
            ),
        );
        // Bit j alone, plus 127: 0x80..0xFF (negative) where set, +127
        // where clear; `vpsignb` reads nothing but the sign (one uop fewer
        // than a compare to -1 / 0 and an `or` with 1).
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_add_epi8(_mm256_and_si256(spread, bit), _mm256_set1_epi8(127))
    }
}

/// `vpermd` controls, made opaque to the compiler once a call: given as
/// constants, LLVM wrote each lane broadcast as two shuffle-port uops
/// (`vpshufd` then `vpermq`, or `vextracti128` then `vpbroadcastd`), where
/// one `vpermd` with the control in a register (a load) takes one.
#[derive(Clone, Copy)]
struct Perm {
    /// `t` in every lane: dword `t` broadcast.
    dword: [__m256i; 8],
    /// `t` in the low 128-bit half, `4 + t` in the high one.
    pair: [__m256i; 4],
}

impl Perm {
    #[inline(always)]
    unsafe fn new() -> Self {
        // SAFETY: AVX (the callers').
        core::hint::black_box(unsafe {
            Perm {
                dword: core::array::from_fn(|t| _mm256_set1_epi32(t as i32)),
                pair: core::array::from_fn(|t| {
                    let t = t as i32;
                    _mm256_setr_epi32(t, t, t, t, t + 4, t + 4, t + 4, t + 4)
                }),
            }
        })
    }

    /// Dword `t` of `v` in every lane.
    #[inline(always)]
    unsafe fn dword(&self, v: __m256i, t: usize) -> __m256i {
        // SAFETY: AVX2 (the callers').
        unsafe { _mm256_permutevar8x32_epi32(v, self.dword[t]) }
    }
}

/// The 8-bit sign codes of 7-bit codes one per byte (bit 7 clear): the
/// parity bit of the `KSIGNS` rule (see [`super::avx512`]).
#[inline(always)]
unsafe fn with_parity(s: __m256i) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let mut x = _mm256_xor_si256(s, _mm256_srli_epi32::<4>(s));
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<2>(x));
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<1>(x));
        _mm256_or_si256(s, _mm256_slli_epi32::<7>(_mm256_and_si256(x, _mm256_set1_epi8(1))))
    }
}

/// The eight chunk words of IQ2_XXS / IQ3_XXS (dword t: chunk t's four
/// 7-bit sign codes and 4-bit scale): the chunks' 32 sign bits (dword t),
/// and the scales `2·(w >> 28) + 1` as an i16 pair (dword t).
#[inline(always)]
unsafe fn xxs_words(w: __m256i) -> (__m256i, __m256i) {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let m7 = _mm256_set1_epi32(0x7F);
        let spread = _mm256_or_si256(
            _mm256_or_si256(
                _mm256_and_si256(w, m7),
                _mm256_and_si256(_mm256_slli_epi32::<1>(w), _mm256_slli_epi32::<8>(m7)),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_slli_epi32::<2>(w), _mm256_slli_epi32::<16>(m7)),
                _mm256_and_si256(_mm256_slli_epi32::<3>(w), _mm256_slli_epi32::<24>(m7)),
            ),
        );
        let s = _mm256_add_epi32(_mm256_slli_epi32::<1>(_mm256_srli_epi32::<28>(w)), _mm256_set1_epi32(1));
        (with_parity(spread), _mm256_or_si256(s, _mm256_slli_epi32::<16>(s)))
    }
}

/// Sixteen 4-bit fields of `b` (low nibble first) as i16 pairs `2f + 1`,
/// one per dword, in the order [`chunk_scales`] takes them: chunk t's two
/// fields 2t and 2t + 1 are dword t % 4 of the low and of the high 128-bit
/// half of vector t / 4 (the low nibbles of bytes 4h..4h + 4, then their
/// high nibbles).
#[inline(always)]
unsafe fn nibble_pairs(b: &[u8; 8]) -> [__m256i; 2] {
    // SAFETY: AVX2 (the callers'); 8 bytes read.
    unsafe {
        let (lo, hi) = nibbles(_mm_loadl_epi64(b.as_ptr().cast()));
        let n = _mm_unpacklo_epi32(lo, hi);
        [odd_pairs(_mm256_cvtepu8_epi32(n)), odd_pairs(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(n)))]
    }
}

/// The low and the high nibbles of `x`'s bytes, each as bytes.
#[inline(always)]
unsafe fn nibbles(x: __m128i) -> (__m128i, __m128i) {
    // SAFETY: SSE2 (the callers' AVX2).
    unsafe {
        let m = _mm_set1_epi8(0x0F);
        (_mm_and_si128(x, m), _mm_and_si128(_mm_srli_epi16::<4>(x), m))
    }
}

/// Dwords `f` as `2f + 1`.
#[inline(always)]
unsafe fn odd(f: __m256i) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe { _mm256_add_epi32(_mm256_slli_epi32::<1>(f), _mm256_set1_epi32(1)) }
}

/// Dwords `s` (below 2^15) in both of their i16 words.
#[inline(always)]
unsafe fn both_words(s: __m256i) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe { _mm256_or_si256(s, _mm256_slli_epi32::<16>(s)) }
}

/// Dwords `f` as i16 pairs `2f + 1` (both words).
#[inline(always)]
unsafe fn odd_pairs(f: __m256i) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe { both_words(odd(f)) }
}

/// Chunk `t`'s scales from [`nibble_pairs`] (or IQ1_M's, in the same
/// order): fields 2t (low half) and 2t + 1 (high half), one `vpermd`.
#[inline(always)]
unsafe fn chunk_scales(p: &[__m256i; 2], perm: &Perm, t: usize) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe { _mm256_permutevar8x32_epi32(p[t / 4], perm.pair[t % 4]) }
}

/// Four IQ1_S/IQ1_M grid entries (`8g` bytes) as one vector.
///
/// # Safety
/// AVX; every index below 2048, as [`iq1m_indices`] and [`iq1s_indices`]
/// make them (a byte, and three bits above it).
#[inline(always)]
unsafe fn iq1_grid(i: [usize; 4]) -> __m256i {
    debug_assert!(i.iter().all(|&k| k < GRID_IQ1S_X8.len()));
    // SAFETY: the caller's contract.
    unsafe { v4(i.map(|k| *GRID_IQ1S_X8.get_unchecked(k))) }
}

/// IQ1_M's 32 grid indices `qs[j] | (nibble j & 7) << 8` (nibble j of the
/// 16 `qh` bytes, low first) into `idx`, formed with byte unpacks, and the
/// `qh` bytes in both 128-bit halves for [`iq1m_plus`]. A group's grid load
/// then takes its index with one load instead of five scalar operations
/// (shift, mask, shift, or, byte load).
/// Every index is below 2048: a byte, and three bits above it.
#[inline(always)]
unsafe fn iq1m_indices(blk: &[u8; 56], idx: &mut [u16; 32]) -> __m256i {
    // SAFETY: AVX2 (the callers'); loads within `blk`, stores within `idx`.
    unsafe {
        let qs0 = _mm_loadu_si128(blk[..16].as_ptr().cast());
        let qs1 = _mm_loadu_si128(blk[16..32].as_ptr().cast());
        let qh = _mm_loadu_si128(blk[32..48].as_ptr().cast());
        let seven = _mm_set1_epi8(7);
        let (lo, hi) = (_mm_and_si128(qh, seven), _mm_and_si128(_mm_srli_epi16::<4>(qh), seven));
        let (n0, n1) = (_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi));
        let out = idx.as_mut_ptr().cast::<__m128i>();
        _mm_storeu_si128(out, _mm_unpacklo_epi8(qs0, n0));
        _mm_storeu_si128(out.add(1), _mm_unpackhi_epi8(qs0, n0));
        _mm_storeu_si128(out.add(2), _mm_unpacklo_epi8(qs1, n1));
        _mm_storeu_si128(out.add(3), _mm_unpackhi_epi8(qs1, n1));
        _mm256_broadcastsi128_si256(qh)
    }
}

/// The `vpshufb` controls of [`iq1m_plus`]: for chunk t, byte 2t into the
/// low 128-bit half and 2t + 1 into the high one, made opaque to the
/// compiler (as constants LLVM turned each `vpshufb` into three
/// shuffle-port uops: `vpshufhw`, `vpshufd`, `vpermq`).
#[inline(always)]
unsafe fn iq1m_spread() -> [__m256i; 8] {
    // SAFETY: AVX (the callers').
    core::hint::black_box(core::array::from_fn(|t| unsafe {
        _mm256_setr_m128i(_mm_set1_epi8(2 * t as i8), _mm_set1_epi8(2 * t as i8 + 1))
    }))
}

/// A chunk's IQ1_M weights `8g + δ + 9` from its grid values `g` (`8g`
/// bytes): `+10` where the group's nibble has bit 3 clear (δ = +1), `+8`
/// where set, the bit picked from the `qh` bytes of [`iq1m_indices`] by
/// one `vpshufb` with the chunk's control from [`iq1m_spread`] (groups 0,
/// 1 from byte 2t, 2, 3 from byte 2t + 1; the low nibble's bit 3, then the
/// high one's). Added byte-wise: u64 adds would carry out of `8g`'s 0xF8.
#[inline(always)]
unsafe fn iq1m_plus(g: __m256i, qh: __m256i, spread: &__m256i) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let spread = _mm256_shuffle_epi8(qh, *spread);
        let (lo, hi) = (0x0808_0808_0808_0808u64 as i64, 0x8080_8080_8080_8080u64 as i64);
        let bit = _mm256_setr_epi64x(lo, hi, lo, hi);
        let neg = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_add_epi8(_mm256_add_epi8(g, _mm256_set1_epi8(10)), _mm256_add_epi8(neg, neg))
    }
}

/// The `vpshufb` controls of [`iq1s_indices`]: for chunks 2p, 2p + 1, the
/// `qh` word of chunk 2p into bytes 1, 2 of each dword of the low 128-bit
/// half, 2p + 1's into the high half (as `h << 8`), opaque to the compiler
/// (see [`iq1m_spread`]).
#[inline(always)]
unsafe fn iq1s_spread() -> [__m256i; 4] {
    core::hint::black_box(core::array::from_fn(|p| {
        // In each dword, bytes 1 and 2 take the word's two bytes (at 4p in
        // the low half, 4p + 2 in the high one); index -128 writes zero.
        let c: [i8; 32] = core::array::from_fn(|i| {
            let w = 4 * p as i8 + 2 * (i / 16) as i8;
            match i % 4 {
                1 => w,
                2 => w + 1,
                _ => -128,
            }
        });
        // SAFETY: AVX (the callers'); 32 bytes read.
        unsafe { _mm256_loadu_si256(c.as_ptr().cast()) }
    }))
}

/// IQ1_S's 32 grid indices `qs[j] | ((qh[j / 4] >> 3(j % 4)) & 7) << 8`
/// into `idx`, eight a vector (see [`iq1m_indices`]); every index below
/// 2048 (`& 0x700`, or a byte).
#[inline(always)]
unsafe fn iq1s_indices(blk: &[u8; 50], spread: &[__m256i; 4], idx: &mut [u32; 32]) {
    // SAFETY: AVX2 (the callers'); loads within `blk`, stores within `idx`.
    unsafe {
        let qh = _mm256_broadcastsi128_si256(_mm_loadu_si128(blk[34..50].as_ptr().cast()));
        let shifts = _mm256_setr_epi32(0, 3, 6, 9, 0, 3, 6, 9);
        for (p, out) in idx.chunks_exact_mut(8).enumerate() {
            let hi = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_shuffle_epi8(qh, spread[p]), shifts),
                _mm256_set1_epi32(0x700),
            );
            let qs = _mm256_cvtepu8_epi32(_mm_loadl_epi64(blk[2 + 8 * p..10 + 8 * p].as_ptr().cast()));
            _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm256_or_si256(hi, qs));
        }
    }
}

/// The block's f16 `d` (exact; F16C).
#[inline(always)]
unsafe fn d16(lo: u8, hi: u8) -> f32 {
    // SAFETY: F16C (the callers').
    unsafe { crate::avx2_q8::h2f(F16Le([lo, hi])) }
}

// ---------------------------------------------------------------------------
// The kernels.
// ---------------------------------------------------------------------------

avx2_fn! {
    /// IQ2_XXS (layout in [`super::avx512`]).
    unsafe fn iq2xxs<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let perm = Perm::new();
        blocks::<66, N, __m256i>(GgmlType::IQ2_XXS, row, a, |blk, b, sums| {
            let q: &[u8; 64] = blk[2..66].try_into().unwrap();
            // The index bytes through `black_box`: LLVM took some out of the
            // vectors loaded below with `vpextrb` (two uops, one a shuffle)
            // instead of a byte load.
            let ix = core::hint::black_box(q);
            // The chunk words are the odd dwords of qs.
            // SAFETY: the 64 bytes of `q`.
            let (lo, hi) = unsafe {
                (_mm256_loadu_si256(q[..32].as_ptr().cast()), _mm256_loadu_si256(q[32..].as_ptr().cast()))
            };
            let odd = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
            let w = _mm256_blend_epi32::<0xF0>(
                _mm256_permutevar8x32_epi32(lo, odd),
                _mm256_permutevar8x32_epi32(hi, odd),
            );
            let (signs, s) = xxs_words(w);
            // SAFETY: this kernel's features.
            let sh = unsafe { [half(signs, 0), half(signs, 1)] };
            for8!(t => {
                // SAFETY: this kernel's features.
                unsafe {
                    let g = v4(core::array::from_fn(|k| GRID_IQ2XXS[ix[8 * t + k] as usize]));
                    step::<true, N>(sums, a, b, t, g, sign_bytes_of(sh[t / 4], t), perm.dword(s, t));
                }
            });
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

avx2_fn! {
    /// IQ3_XXS (layout in [`super::avx512`]).
    unsafe fn iq3xxs<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let perm = Perm::new();
        blocks::<98, N, __m256i>(GgmlType::IQ3_XXS, row, a, |blk, b, sums| {
            let ix = core::hint::black_box(blk); // as in `iq2xxs`
            // SAFETY: bytes 66..98, the eight words.
            let (signs, s) = xxs_words(unsafe { _mm256_loadu_si256(blk[66..98].as_ptr().cast()) });
            // SAFETY: this kernel's features.
            let sh = unsafe { [half(signs, 0), half(signs, 1)] };
            for8!(t => {
                let q = &ix[2 + 8 * t..10 + 8 * t];
                // SAFETY: this kernel's features.
                unsafe {
                    let g = v8(|j| GRID_IQ3XXS[q[j] as usize]);
                    step::<true, N>(sums, a, b, t, g, sign_bytes_of(sh[t / 4], t), perm.dword(s, t));
                }
            });
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

avx2_fn! {
    /// IQ2_XS (layout in [`super::avx512`]).
    unsafe fn iq2xs<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let perm = Perm::new();
        blocks::<74, N, __m256i>(GgmlType::IQ2_XS, row, a, |blk, b, sums| {
            let ix = core::hint::black_box(blk); // as in `iq2xxs`
            // SAFETY: bytes 2..66, the 32 words.
            let (lo, hi) = unsafe {
                (_mm256_loadu_si256(blk[2..34].as_ptr().cast()), _mm256_loadu_si256(blk[34..66].as_ptr().cast()))
            };
            // Byte g: group g's sign code (packs works within 128-bit lanes).
            let codes = _mm256_packus_epi16(_mm256_srli_epi16::<9>(lo), _mm256_srli_epi16::<9>(hi));
            let signs = with_parity(_mm256_permute4x64_epi64::<0b11_01_10_00>(codes));
            // SAFETY: this kernel's features.
            let scales = unsafe { nibble_pairs(blk[66..74].try_into().unwrap()) };
            // SAFETY: this kernel's features.
            let sh = unsafe { [half(signs, 0), half(signs, 1)] };
            for8!(t => {
                // SAFETY: this kernel's features.
                unsafe {
                    let g = v4(core::array::from_fn(|k| {
                        let at = 2 + 2 * (4 * t + k);
                        GRID_IQ2XS[(u16::from_le_bytes([ix[at], ix[at + 1]]) & 511) as usize]
                    }));
                    step::<true, N>(sums, a, b, t, g, sign_bytes_of(sh[t / 4], t), chunk_scales(&scales, &perm, t));
                }
            });
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

avx2_fn! {
    /// IQ2_S (layout in [`super::avx512`]).
    unsafe fn iq2s<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let perm = Perm::new();
        blocks::<82, N, __m256i>(GgmlType::IQ2_S, row, a, |blk, b, sums| {
            let ix = core::hint::black_box(blk); // as in `iq2xxs`
            // SAFETY: bytes 34..66, the sign bytes.
            let signs = unsafe { _mm256_loadu_si256(blk[34..66].as_ptr().cast()) };
            // SAFETY: this kernel's features.
            let scales = unsafe { nibble_pairs(blk[74..82].try_into().unwrap()) };
            // SAFETY: this kernel's features.
            let sh = unsafe { [half(signs, 0), half(signs, 1)] };
            for8!(t => {
                let h = ix[66 + t] as usize;
                // SAFETY: this kernel's features.
                unsafe {
                    let g = v4(core::array::from_fn(|k| {
                        GRID_IQ2S[ix[2 + 4 * t + k] as usize | ((h >> (2 * k)) & 3) << 8]
                    }));
                    step::<true, N>(sums, a, b, t, g, sign_bytes_of(sh[t / 4], t), chunk_scales(&scales, &perm, t));
                }
            });
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

avx2_fn! {
    /// IQ3_S (layout in [`super::avx512`]).
    unsafe fn iq3s<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let perm = Perm::new();
        blocks::<110, N, __m256i>(GgmlType::IQ3_S, row, a, |blk, b, sums| {
            let ix = core::hint::black_box(blk); // as in `iq2xxs`
            // SAFETY: bytes 74..106, the sign bytes.
            let signs = unsafe { _mm256_loadu_si256(blk[74..106].as_ptr().cast()) };
            // SAFETY: this kernel's features.
            let sh = unsafe { [half(signs, 0), half(signs, 1)] };
            // Dword t: chunk t's scale (nibble t of bytes 106..110) as 2s + 1.
            // SAFETY: this kernel's features; 4 bytes read.
            let sc = unsafe {
                let (lo, hi) = nibbles(_mm_cvtsi32_si128(i32::from_le_bytes(blk[106..110].try_into().unwrap())));
                odd_pairs(_mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)))
            };
            for8!(t => {
                let (q, h) = (&ix[2 + 8 * t..10 + 8 * t], ix[66 + t] as usize);
                // SAFETY: this kernel's features.
                unsafe {
                    let g = v8(|j| GRID_IQ3S[q[j] as usize | ((h >> j) & 1) << 8]);
                    step::<true, N>(sums, a, b, t, g, sign_bytes_of(sh[t / 4], t), perm.dword(sc, t));
                }
            });
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

avx2_fn! {
    /// IQ1_M (layout in [`super::avx512`]): `q + 9` unsigned, `9·Σ sc·Σy`
    /// taken back from the Q8_K sums.
    unsafe fn iq1m<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let perm = Perm::new();
        let spread = iq1m_spread();
        blocks::<56, N, __m256i>(GgmlType::IQ1_M, row, a, |blk, b, sums| {
            // Scale f (of weights 16f..16f + 16): bits 3(f % 4).. of word f / 4,
            // as 2s + 1, in the order of `nibble_pairs` (fields 2t | 2t + 1,
            // t = 4h..4h + 4, from the words 2h, 2h + 1 of one dword).
            let at = |h: usize| i32::from_le_bytes(blk[48 + 4 * h..52 + 4 * h].try_into().unwrap());
            let shifts = _mm256_setr_epi32(0, 6, 16, 22, 3, 9, 19, 25);
            let field = |h: usize| _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(at(h)), shifts), _mm256_set1_epi32(7));
            // SAFETY: this kernel's features.
            let (s0, s1) = unsafe { (odd(field(0)), odd(field(1))) };
            // SAFETY: as above.
            let pairs = unsafe { [both_words(s0), both_words(s1)] };
            // Fields 2k and 2k + 1 as the two words of dword k (the Q8_K sums'
            // order).
            let sc16 = _mm256_or_si256(
                _mm256_permute2x128_si256::<0x20>(s0, s1),
                _mm256_slli_epi32::<16>(_mm256_permute2x128_si256::<0x31>(s0, s1)),
            );
            let mut idx = [0u16; 32];
            // SAFETY: this kernel's features.
            let qh = unsafe { iq1m_indices(blk, &mut idx) };
            // Read back from memory, one load a group (LLVM would take each
            // out of its vector with a `vpextrw`, a shuffle-port uop).
            let idx = core::hint::black_box(&mut idx);
            for8!(t => {
                // SAFETY: this kernel's features; the indices of
                // `iq1m_indices` / `iq1s_indices` are below 2048.
                unsafe {
                    let g = iq1_grid(core::array::from_fn(|k| idx[4 * t + k] as usize));
                    step::<false, N>(sums, a, b, t, iq1m_plus(g, qh, &spread[t]), g, chunk_scales(&pairs, &perm, t));
                }
            });
            let [d0, d1] = super::kernels::iq1m_d_bits(blk);
            // SAFETY: as above.
            unsafe {
                for (s, aj) in sums.iter_mut().zip(a) {
                    let bs = &aj.bsums[16 * b..16 * b + 16];
                    let ysc = _mm256_madd_epi16(_mm256_loadu_si256(bs.as_ptr().cast()), sc16);
                    *s = _mm256_sub_epi32(*s, _mm256_mullo_epi32(ysc, _mm256_set1_epi32(9)));
                }
                d16(d0, d1)
            }
        })
    }
}

avx2_fn! {
    /// IQ1_S (layout in [`super::avx512`]): the weights enter `vpmaddubsw`
    /// as `8g + 8`, each chunk's `s·(δ - 8)·Σy` added back from the Q8_K
    /// sums; grid indices formed in vectors a block at a time
    /// ([`iq1s_indices`]) and read back one load a group (in scalar
    /// registers, five operations a group, the kernel ran at 2.9 GB/s a
    /// core from L2 on the Xeon of stop 48, now 3.2–3.5).
    unsafe fn iq1s<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let perm = Perm::new();
        let seven = _mm256_set1_epi32(7);
        let spread = iq1s_spread();
        blocks::<50, N, __m256i>(GgmlType::IQ1_S, row, a, |blk, b, sums| {
            // SAFETY: bytes 34..50 of the block (qh, eight u16).
            let w = _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(blk[34..50].as_ptr().cast()) });
            // Dword t: the scale 2·s + 1 (as two i16 in `sc2`), s·(δ - 8).
            let sc = _mm256_add_epi32(
                _mm256_slli_epi32::<1>(_mm256_and_si256(_mm256_srli_epi32::<12>(w), seven)),
                _mm256_set1_epi32(1),
            );
            let sc2 = _mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc));
            let neg = _mm256_cmpgt_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), _mm256_setzero_si256());
            let coef = _mm256_mullo_epi32(sc, _mm256_blendv_epi8(_mm256_set1_epi32(-7), _mm256_set1_epi32(-9), neg));
            let mut idx = [0u32; 32];
            // SAFETY: this kernel's features.
            unsafe { iq1s_indices(blk, &spread, &mut idx) };
            // Read back from memory, one load a group (see `iq1m`).
            let idx = core::hint::black_box(&mut idx);
            for8!(t => {
                // SAFETY: this kernel's features; the indices of
                // `iq1m_indices` / `iq1s_indices` are below 2048.
                unsafe {
                    let g = iq1_grid(core::array::from_fn(|k| idx[4 * t + k] as usize));
                    step::<false, N>(sums, a, b, t, _mm256_add_epi8(g, _mm256_set1_epi8(8)), g, perm.dword(sc2, t));
                }
            });
            // SAFETY: as above.
            unsafe {
                for (s, aj) in sums.iter_mut().zip(a) {
                    let bs = &aj.bsums[16 * b..16 * b + 16];
                    let ysum = _mm256_madd_epi16(_mm256_loadu_si256(bs.as_ptr().cast()), _mm256_set1_epi16(1));
                    *s = _mm256_add_epi32(*s, _mm256_mullo_epi32(coef, ysum));
                }
                d16(blk[0], blk[1])
            }
        })
    }
}

/// One IQ4_XS block for the AVX2 panels (`crate::panel_avx2`): its 256
/// table values, signed, into `u` (as bytes; element `32ib + j` is nibble
/// `j / 16` of `qs[16ib + j % 16]`), its eight scales `ls - 32` (one per 32
/// elements, `sc[0..8]`), and `d`. No offset and no mins: the panels
/// multiply these values signed (`panel_avx2::group_dot_signed`).
///
/// # Safety
/// The CPU must have AVX2; `bytes` is one block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn unpack_iq4_xs_signed(bytes: &[u8], u: &mut [u8; QK_K]) -> crate::avx2_q8::KParts {
    let b: &BlockIq4Xs = bytemuck::from_bytes(bytes);
    // SAFETY: 16 table bytes; each load 32 bytes of `qs`, each store 32
    // bytes of `u`.
    unsafe {
        let kv = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4.as_ptr().cast()));
        let nib = _mm256_set1_epi8(0x0F);
        for c in 0..4 {
            // Sub-blocks 2c and 2c + 1: their 16 bytes each, as 128-bit
            // halves of one load; low nibbles first in each sub-block.
            let x = _mm256_loadu_si256(b.qs[32 * c..].as_ptr().cast());
            let lo = _mm256_shuffle_epi8(kv, _mm256_and_si256(x, nib));
            let hi = _mm256_shuffle_epi8(kv, _mm256_and_si256(_mm256_srli_epi16::<4>(x), nib));
            let first = _mm256_permute2x128_si256::<0x20>(lo, hi);
            let second = _mm256_permute2x128_si256::<0x31>(lo, hi);
            _mm256_storeu_si256(u.as_mut_ptr().add(64 * c).cast(), first);
            _mm256_storeu_si256(u.as_mut_ptr().add(64 * c + 32).cast(), second);
        }
    }
    let sc = core::array::from_fn(|ib| if ib < 8 { iq4_xs_scale(bytes, ib) } else { 0 });
    crate::avx2_q8::KParts { d: b.d.to_f32(), dmin: 0.0, off: 0, mv: [0; 8], sc }
}
