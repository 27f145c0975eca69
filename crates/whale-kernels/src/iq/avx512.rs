//! AVX-512 kernels of the i-quants most used in DeepSeek's low-bit GGUFs
//! (unsloth's UD-IQ1_S / UD-IQ1_M / UD-IQ2_XXS mixes and IQ2_XS files):
//! IQ2_XXS, IQ2_XS, IQ1_S and IQ1_M. The other types run the AVX2 kernels
//! of [`super::kernels`] at this level.
//!
//! What the 512-bit registers buy over those: two 32-weight chunks a step;
//! the signs of a whole block worked out at once in vector registers (the
//! 7-bit sign code's parity bit by three shift-xors) and applied to the
//! activations through a mask register (`vpsubb` under the mask) instead of
//! one table lookup and `vpsignb` per 8 weights; `vpdpwssd` fusing the
//! scale multiply with the accumulation; the grid values still come from
//! the expanded tables, eight u64 loads per step.
//!
//! Every kernel computes the exact integer of each block that the scalar
//! reference computes (the same `Σ sc · Σ q·y`, summed in another order,
//! which integers allow) and then the same float step (`term` into lane
//! `b % 8`, `reduce8`, `post_scale`), so its results are the reference's
//! bits. Ranges as in [`super::kernels`]: `|y| <= 127`, so negating an
//! activation never overflows, and a `vpmaddubsw` pair sum stays below
//! 2·43·127 (IQ2 grids) or 2·18·127 (IQ1, as `8g + 8 + δ'`).

use super::*;
use crate::q8::ActRow;
use crate::qdot::{reduce8, term};
use core::arch::x86_64::*;

/// The features every kernel here is compiled for (the `Avx512Vnni` level's).
macro_rules! avx512_fn {
    ($(#[$m:meta])* unsafe fn $name:ident $($rest:tt)*) => {
        $(#[$m])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        #[inline]
        unsafe fn $name $($rest)*
    };
}

/// The kernel for `wty` at this level, if it has one here.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C; `row` whole
/// blocks of `wty`, each `a[j]` its Q8_K activations of the same length.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn dot<const N: usize>(wty: GgmlType, row: &[u8], a: &[ActRow<'_>; N]) -> Option<[f32; N]> {
    // SAFETY (every arm): the caller's contract, passed on.
    unsafe {
        match wty {
            GgmlType::IQ2_XXS => Some(iq2xxs(row, a)),
            GgmlType::IQ1_S => Some(iq1s(row, a)),
            GgmlType::IQ1_M => Some(iq1m(row, a)),
            GgmlType::IQ2_XS => Some(iq2xs(row, a)),
            _ => None,
        }
    }
}

/// Eight u64 (element 0 first) as one vector.
#[inline(always)]
unsafe fn v8(e: [u64; 8]) -> __m512i {
    // SAFETY: the caller has AVX-512 F (every caller is an `avx512_fn`).
    unsafe {
        _mm512_setr_epi64(
            e[0] as i64,
            e[1] as i64,
            e[2] as i64,
            e[3] as i64,
            e[4] as i64,
            e[5] as i64,
            e[6] as i64,
            e[7] as i64,
        )
    }
}

/// The horizontal sum of sixteen i32 lanes (exact).
#[inline(always)]
unsafe fn hsum(v: __m512i) -> i32 {
    // SAFETY: AVX-512 F, as above.
    unsafe {
        let s = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// The 8-bit sign codes of 7-bit codes held one per byte (bit 7 clear):
/// the eighth bit makes the count of set bits even (the `KSIGNS` rule).
/// Works on any lane width: the folds only move bits down within a byte's
/// own low bits before the `& 0x01` picks bit 0.
#[inline(always)]
unsafe fn with_parity(s: __m512i) -> __m512i {
    // SAFETY: AVX-512 F, as above.
    unsafe {
        let mut x = _mm512_xor_si512(s, _mm512_srli_epi32::<4>(s));
        x = _mm512_xor_si512(x, _mm512_srli_epi32::<2>(x));
        x = _mm512_xor_si512(x, _mm512_srli_epi32::<1>(x));
        _mm512_or_si512(s, _mm512_slli_epi32::<7>(_mm512_and_si512(x, _mm512_set1_epi8(1))))
    }
}

/// The scales of a step's four 16-weight groups `4p..4p+4` as i16 lanes
/// (eight each, the pair sums of 16 weights), from all sixteen in `sc`.
#[inline(always)]
unsafe fn step_scales(sc: __m256i, p: usize) -> __m512i {
    let c = 4 * p as i16;
    // SAFETY: AVX-512 BW, as above.
    unsafe {
        let idx = _mm512_add_epi16(
            _mm512_set1_epi16(c),
            _mm512_set_epi64(
                0x0003_0003_0003_0003,
                0x0003_0003_0003_0003,
                0x0002_0002_0002_0002,
                0x0002_0002_0002_0002,
                0x0001_0001_0001_0001,
                0x0001_0001_0001_0001,
                0,
                0,
            ),
        );
        _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(sc))
    }
}

/// Sixteen 4-bit fields (eight bytes, low nibble first) as i16 lanes `2f + 1`.
#[inline(always)]
unsafe fn nibble_scales(b: &[u8; 8]) -> __m256i {
    // SAFETY: AVX2 and AVX-512 BW/VL, as above; 8 bytes read.
    unsafe {
        let v = _mm_cvtepu8_epi16(_mm_loadl_epi64(b.as_ptr().cast()));
        let nib = _mm_or_si128(
            _mm_and_si128(v, _mm_set1_epi16(0x0F)),
            _mm_slli_epi16::<4>(_mm_and_si128(v, _mm_set1_epi16(0xF0))),
        );
        let s = _mm256_cvtepu8_epi16(nib);
        _mm256_add_epi16(_mm256_add_epi16(s, s), _mm256_set1_epi16(1))
    }
}

/// The four qwords of `v`, through general registers: a vector store read
/// back in pieces would wait for the store to complete.
#[inline(always)]
unsafe fn qwords(v: __m256i) -> [u64; 4] {
    // SAFETY: AVX2, as above.
    unsafe {
        let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        [
            _mm_cvtsi128_si64(lo) as u64,
            _mm_extract_epi64::<1>(lo) as u64,
            _mm_cvtsi128_si64(hi) as u64,
            _mm_extract_epi64::<1>(hi) as u64,
        ]
    }
}

/// The block's f16 `d` (exact; F16C).
#[inline(always)]
unsafe fn d16(lo: u8, hi: u8) -> f32 {
    // SAFETY: the caller has F16C.
    unsafe { crate::avx2_q8::h2f(F16Le([lo, hi])) }
}

avx512_fn! {
    /// IQ2_XXS (66-byte blocks: `d`, then eight chunks of four grid-index
    /// bytes and a word of four 7-bit sign codes and a 4-bit scale).
    unsafe fn iq2xxs<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
    const TS: usize = 66;
    let mut acc = [[0f32; 8]; N];
    // SAFETY (the loads): the slices named in each.
    unsafe {
        for (b, blk) in row.chunks_exact(TS).enumerate() {
            let blk: &[u8; TS] = blk.try_into().unwrap();
            let q: &[u8; 64] = blk[2..66].try_into().unwrap();
            let qs = _mm512_loadu_si512(q.as_ptr().cast());
            // Qword t: chunk t's word in the low half.
            let aux = _mm512_srli_epi64::<32>(qs);
            // Its four 7-bit codes one per byte, then their parity bits.
            let m7 = _mm512_set1_epi64(0x7F);
            let spread = _mm512_or_si512(
                _mm512_or_si512(_mm512_and_si512(aux, m7), _mm512_and_si512(_mm512_slli_epi64::<1>(aux), _mm512_slli_epi64::<8>(m7))),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_slli_epi64::<2>(aux), _mm512_slli_epi64::<16>(m7)),
                    _mm512_and_si512(_mm512_slli_epi64::<3>(aux), _mm512_slli_epi64::<24>(m7)),
                ),
            );
            // Dword p of this: chunks 2p and 2p+1's 32 sign bits each.
            let signs = _mm512_cvtepi64_epi32(with_parity(spread));
            let masks = qwords(signs);
            // Scale 2·(aux >> 28) + 1 as two i16 in dword 2t.
            let s = _mm512_add_epi64(_mm512_slli_epi64::<1>(_mm512_srli_epi64::<28>(aux)), _mm512_set1_epi64(1));
            let s = _mm512_or_si512(s, _mm512_slli_epi64::<16>(s));
            let d = d16(blk[0], blk[1]);
            let mut iacc = [_mm512_setzero_si512(); N];
            for p in 0..4 {
                let g = v8(core::array::from_fn(|k| GRID_IQ2XXS[q[16 * p + k % 4 + 8 * (k / 4)] as usize]));
                let c = 4 * p as i32;
                let sc = _mm512_permutexvar_epi32(
                    _mm512_setr_epi32(c, c, c, c, c, c, c, c, c + 2, c + 2, c + 2, c + 2, c + 2, c + 2, c + 2, c + 2),
                    s,
                );
                let k: __mmask64 = masks[p];
                for (ia, aj) in iacc.iter_mut().zip(a) {
                    let ys = &aj.qs[QK_K * b + 64 * p..QK_K * b + 64 * p + 64];
                    let y = _mm512_loadu_si512(ys.as_ptr().cast());
                    let y = _mm512_mask_sub_epi8(y, k, _mm512_setzero_si512(), y);
                    *ia = _mm512_dpwssd_epi32(*ia, _mm512_maddubs_epi16(g, y), sc);
                }
            }
            for ((l, ia), aj) in acc.iter_mut().zip(iacc).zip(a) {
                l[b % 8] += term(d, aj.d[b], hsum(ia));
            }
        }
    }
    acc.map(|l| reduce8(l) * post_scale(GgmlType::IQ2_XXS))
}
}

avx512_fn! {
    /// IQ1_S (50-byte blocks: `d`, 32 grid-index low bytes, eight words of
    /// four 3-bit index tops, a 3-bit scale and the shift's sign), with the
    /// weights entering `vpmaddubsw` as `8g + 8` as the AVX2 kernel does
    /// (`dot_iq1s` there) and the chunks' `(δ - 8)` put back from the
    /// Q8_K sums.
    unsafe fn iq1s<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        const TS: usize = 50;
        let mut acc = [[0f32; 8]; N];
        let seven = _mm256_set1_epi32(7);
        let eight = _mm512_set1_epi8(8);
        for (b, blk) in row.chunks_exact(TS).enumerate() {
            let blk: &[u8; TS] = blk.try_into().unwrap();
            // SAFETY: bytes 34..50 of the block (qh, eight u16).
            let w = _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(blk[34..50].as_ptr().cast()) });
            // Dword t: the scale 2·s + 1 as two i16; s·(δ - 8) for the sums.
            let sc = _mm256_add_epi32(
                _mm256_slli_epi32::<1>(_mm256_and_si256(_mm256_srli_epi32::<12>(w), seven)),
                _mm256_set1_epi32(1),
            );
            let sc2 = _mm512_castsi256_si512(_mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc)));
            let neg = _mm256_cmpgt_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), _mm256_setzero_si256());
            let coef = _mm256_mullo_epi32(sc, _mm256_blendv_epi8(_mm256_set1_epi32(-7), _mm256_set1_epi32(-9), neg));
            let d = d16(blk[0], blk[1]);
            let mut iacc = [_mm512_setzero_si512(); N];
            for p in 0..4 {
                // Index 4t + k of chunk t: qs[4t + k] | bits 3k..3k+3 of
                // qh[t] << 8, formed in scalar registers (formed in vectors
                // and read back through memory it measured no faster).
                let g = v8(core::array::from_fn(|k| {
                    let t = 2 * p + k / 4;
                    let h = u16::from_le_bytes([blk[34 + 2 * t], blk[35 + 2 * t]]) as usize;
                    GRID_IQ1S_X8[blk[2 + 4 * t + k % 4] as usize | ((h >> (3 * (k % 4))) & 7) << 8]
                }));
                let u = _mm512_add_epi8(g, eight);
                let c = 2 * p as i32;
                let st = _mm512_permutexvar_epi32(
                    _mm512_setr_epi32(c, c, c, c, c, c, c, c, c + 1, c + 1, c + 1, c + 1, c + 1, c + 1, c + 1, c + 1),
                    sc2,
                );
                for (ia, aj) in iacc.iter_mut().zip(a) {
                    let ys = &aj.qs[QK_K * b + 64 * p..QK_K * b + 64 * p + 64];
                    // SAFETY: `ys` holds 64 bytes.
                    let y = unsafe { _mm512_loadu_si512(ys.as_ptr().cast()) };
                    *ia = _mm512_dpwssd_epi32(*ia, _mm512_maddubs_epi16(u, y), st);
                }
            }
            for ((l, ia), aj) in acc.iter_mut().zip(iacc).zip(a) {
                let bs = &aj.bsums[16 * b..16 * b + 16];
                // SAFETY: 16 i16 = 32 bytes.
                let ysum = _mm256_madd_epi16(unsafe { _mm256_loadu_si256(bs.as_ptr().cast()) }, _mm256_set1_epi16(1));
                let total = _mm512_add_epi32(ia, _mm512_zextsi256_si512(_mm256_mullo_epi32(coef, ysum)));
                l[b % 8] += term(d, aj.d[b], hsum(total));
            }
        }
        acc.map(|l| reduce8(l) * post_scale(GgmlType::IQ1_S))
    }
}

avx512_fn! {
    /// IQ2_XS (74-byte blocks: `d`, 32 words of a 9-bit grid index and a
    /// 7-bit sign code, sixteen 4-bit scales).
    unsafe fn iq2xs<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        const TS: usize = 74;
        let mut acc = [[0f32; 8]; N];
        for (b, blk) in row.chunks_exact(TS).enumerate() {
            let blk: &[u8; TS] = blk.try_into().unwrap();
            // SAFETY: bytes 2..66, the 32 words.
            let qs = unsafe { _mm512_loadu_si512(blk[2..66].as_ptr().cast()) };
            // Byte g of this: group g's eight sign bits; qword p: step p's.
            let signs = _mm512_cvtepi16_epi8(with_parity(_mm512_srli_epi16::<9>(qs)));
            let masks = qwords(signs);
            let sc = nibble_scales(blk[66..74].try_into().unwrap());
            let d = d16(blk[0], blk[1]);
            let mut iacc = [_mm512_setzero_si512(); N];
            for (p, &k) in masks.iter().enumerate() {
                let g = v8(core::array::from_fn(|k| {
                    let at = 2 + 2 * (8 * p + k);
                    GRID_IQ2XS[(u16::from_le_bytes([blk[at], blk[at + 1]]) & 511) as usize]
                }));
                let st = step_scales(sc, p);
                for (ia, aj) in iacc.iter_mut().zip(a) {
                    let ys = &aj.qs[QK_K * b + 64 * p..QK_K * b + 64 * p + 64];
                    // SAFETY: `ys` holds 64 bytes.
                    let y = unsafe { _mm512_loadu_si512(ys.as_ptr().cast()) };
                    let y = _mm512_mask_sub_epi8(y, k, _mm512_setzero_si512(), y);
                    *ia = _mm512_dpwssd_epi32(*ia, _mm512_maddubs_epi16(g, y), st);
                }
            }
            for ((l, ia), aj) in acc.iter_mut().zip(iacc).zip(a) {
                l[b % 8] += term(d, aj.d[b], hsum(ia));
            }
        }
        acc.map(|l| reduce8(l) * post_scale(GgmlType::IQ2_XS))
    }
}

avx512_fn! {
    /// IQ1_M (56-byte blocks: 32 grid-index low bytes, a nibble per
    /// 8-weight group with the index's top three bits and the sign of its
    /// shift δ = ±1, sixteen 3-bit scales with `d` in the words' top
    /// nibbles). The weights `q = 8g + δ` enter `vpmaddubsw` as `q + 9`
    /// (0..=18), and `9·Σ sc·Σy` comes back off from the Q8_K sums.
    unsafe fn iq1m<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        const TS: usize = 56;
        let mut acc = [[0f32; 8]; N];
        // Per qword (8-weight group): 8 added where δ = -1, 10 where +1.
        let (eights, tens) = (_mm512_set1_epi8(8), _mm512_set1_epi8(10));
        for (b, blk) in row.chunks_exact(TS).enumerate() {
            let blk: &[u8; TS] = blk.try_into().unwrap();
            // Byte g: group g's nibble; bit g of `neg`: its δ is -1.
            // SAFETY: bytes 32..48 (qh).
            let v = _mm256_cvtepu8_epi16(unsafe { _mm_loadu_si128(blk[32..48].as_ptr().cast()) });
            let nib = _mm256_or_si256(
                _mm256_and_si256(v, _mm256_set1_epi16(0x0F)),
                _mm256_slli_epi16::<4>(_mm256_and_si256(v, _mm256_set1_epi16(0xF0))),
            );
            let neg = _mm256_test_epi8_mask(nib, _mm256_set1_epi8(8));
            // Grid index g: qs[g] | (nibble & 7) << 8, formed in a vector
            // (the compiler takes them out with `vpextrw`; formed in scalar
            // registers they measured 21 ns a block against 19, read back
            // from memory 26).
            let idx: [u16; 32] = {
                let mut idx = [0u16; 32];
                // SAFETY: bytes 0..32 (qs); 64 bytes into `idx`.
                unsafe {
                    let lo = _mm512_cvtepu8_epi16(_mm256_loadu_si256(blk[..32].as_ptr().cast()));
                    let hi = _mm512_cvtepu8_epi16(_mm256_and_si256(nib, _mm256_set1_epi8(7)));
                    _mm512_storeu_si512(idx.as_mut_ptr().cast(), _mm512_or_si512(lo, _mm512_slli_epi16::<8>(hi)));
                }
                idx
            };
            // Scale g: bits 3(g % 4).. of word g / 4, as 2s + 1.
            // SAFETY: bytes 48..56 (the four scale words).
            let words = _mm_loadl_epi64(blk[48..56].as_ptr().cast());
            let rep = _mm256_permutexvar_epi16(
                _mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                _mm256_castsi128_si256(words),
            );
            let s = _mm256_and_si256(
                _mm256_srlv_epi16(rep, _mm256_setr_epi16(0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9)),
                _mm256_set1_epi16(7),
            );
            let sc = _mm256_add_epi16(_mm256_add_epi16(s, s), _mm256_set1_epi16(1));
            let [d0, d1] = super::kernels::iq1m_d_bits(blk);
            let d = d16(d0, d1);
            let mut iacc = [_mm512_setzero_si512(); N];
            for p in 0..4 {
                let g = v8(core::array::from_fn(|k| GRID_IQ1S_X8[(idx[8 * p + k] & 2047) as usize]));
                let kp = (neg >> (8 * p)) as u8;
                let u = _mm512_add_epi8(g, _mm512_mask_blend_epi64(kp, tens, eights));
                let st = step_scales(sc, p);
                for (ia, aj) in iacc.iter_mut().zip(a) {
                    let ys = &aj.qs[QK_K * b + 64 * p..QK_K * b + 64 * p + 64];
                    // SAFETY: `ys` holds 64 bytes.
                    let y = unsafe { _mm512_loadu_si512(ys.as_ptr().cast()) };
                    *ia = _mm512_dpwssd_epi32(*ia, _mm512_maddubs_epi16(u, y), st);
                }
            }
            for ((l, ia), aj) in acc.iter_mut().zip(iacc).zip(a) {
                let bs = &aj.bsums[16 * b..16 * b + 16];
                // SAFETY: 16 i16 = 32 bytes.
                let ysc = _mm256_madd_epi16(unsafe { _mm256_loadu_si256(bs.as_ptr().cast()) }, sc);
                let corr = _mm256_mullo_epi32(ysc, _mm256_set1_epi32(-9));
                let total = _mm512_add_epi32(ia, _mm512_zextsi256_si512(corr));
                l[b % 8] += term(d, aj.d[b], hsum(total));
            }
        }
        acc.map(|l| reduce8(l) * post_scale(GgmlType::IQ1_M))
    }
}
