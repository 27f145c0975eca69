//! AVX-512 kernels of the i-quants in DeepSeek's low-bit GGUFs (unsloth's
//! UD-IQ1_S / UD-IQ1_M / UD-IQ2_XXS mixes, the IQ2/IQ4 files): IQ1_S,
//! IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S and IQ4_XS, and the panel form of those
//! and IQ3_XXS / IQ3_S for prefill ([`unpack_k`]). The IQ3 types' row
//! kernels are the AVX2 ones of [`super::avx2`] at this level too (19.4
//! and 25.3 ns a block on Zen 4 against 21.1 and 26.3 composed here),
//! except where the grid entries are gathered ([`gathers`]), TQ1_0 and
//! TQ2_0 those of [`super::kernels`]; IQ4_NL, at both x86 levels, runs the
//! int8 kernels of the 32-element block types (Q4_0's nibbles through
//! IQ4's table, then Q8_0's signed products).
//!
//! What the 512-bit registers buy over those: two 32-weight chunks a step;
//! the signs of a whole block worked out at once in vector registers (the
//! 7-bit sign code's parity bit by three shift-xors) or read as they are
//! stored, and applied to the activations through a mask register (`vpsubb`
//! under the mask) instead of a table lookup and `vpsignb` per 8 weights;
//! `vpdpwssd` fusing the scale multiply with the accumulation. The grid
//! values still come from the expanded tables, a u64 (or two u32) per
//! 8 weights. How they are fetched depends on the CPU ([`gathers`]): on
//! Intel's with AMX one `vpgatherdq` takes a step's eight entries at the
//! indices formed in a vector; elsewhere each entry is a scalar load and
//! the eight are composed as two 256-bit halves. On Zen 4 neither gathers
//! (IQ1_S 19.0 ns a block against 15.2, IQ3_XXS 26.3 against 21.1) nor
//! grids held in registers as 2-bit codes (IQ2_XXS by `vpermi2b` and
//! `vpmultishiftqb`: 15.5 against 15.8; IQ1_S's codes gathered and spread
//! the same way: 20.5 against 15.2) were faster. On a Xeon with AMX the
//! composing inserts queue for the one shuffle port and the gathers win:
//! ns a block, composed against gathered (`iq_bench`, one core, stop 35):
//! IQ1_S 14.3 / 10.2, IQ1_M 17.4 / 12.6-12.9, IQ2_XXS 13.2 / 11.7-11.9,
//! IQ2_XS 16.6 / 11.3-11.4, IQ2_S 14.1 / 9.7-9.9, and IQ3_XXS 18.4 /
//! 13.4, IQ3_S 24.4 / 12.2-12.5 against the AVX2 kernels (llama.cpp's own
//! kernels on that core: IQ1_S 14.5, IQ1_M 19.9, IQ2_XXS 15.0, IQ2_XS
//! 17.5, IQ2_S 15.6, IQ3_XXS 19.8, IQ3_S 27.1).
//!
//! Every kernel computes the exact integer of each block that the scalar
//! reference computes (the same `Σ sc · Σ q·y`, summed in another order,
//! which integers allow) and then the same float step (`term` into lane
//! `b % 8`, `reduce8`, `post_scale`), so its results are the reference's
//! bits. Ranges as in [`super::kernels`]: `|y| <= 127`, so negating an
//! activation never overflows, and a `vpmaddubsw` pair sum stays at most
//! 2·127·127 (IQ4's `|q|`; 2·62·127 for the IQ3 grids, 2·43·127 for IQ2,
//! 2·18·127 for IQ1 as `q + 8` or `q + 9`).

use super::avx2::blocks;
use super::*;
use crate::q8::ActRow;
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
    // SAFETY: the caller's contract, passed on.
    unsafe { dot_with(wty, row, a, gathers()) }
}

/// [`dot`] with the grid entries gathered (`vpgatherdq`, `gather`) or
/// composed from scalar loads; both give the same bits.
///
/// # Safety
/// As [`dot`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn dot_with<const N: usize>(
    wty: GgmlType,
    row: &[u8],
    a: &[ActRow<'_>; N],
    gather: bool,
) -> Option<[f32; N]> {
    use GgmlType as G;
    // SAFETY (every arm): the caller's contract, passed on.
    unsafe {
        Some(match (wty, gather) {
            (G::IQ1_S, false) => iq1s::<N, false>(row, a),
            (G::IQ1_S, true) => iq1s::<N, true>(row, a),
            (G::IQ1_M, false) => iq1m::<N, false>(row, a),
            (G::IQ1_M, true) => iq1m::<N, true>(row, a),
            (G::IQ2_XXS, false) => iq2xxs::<N, false>(row, a),
            (G::IQ2_XXS, true) => iq2xxs::<N, true>(row, a),
            (G::IQ2_XS, false) => iq2xs::<N, false>(row, a),
            (G::IQ2_XS, true) => iq2xs::<N, true>(row, a),
            (G::IQ2_S, false) => iq2s::<N, false>(row, a),
            (G::IQ2_S, true) => iq2s::<N, true>(row, a),
            (G::IQ3_XXS, true) => iq3xxs_gathered(row, a),
            (G::IQ3_S, true) => iq3s_gathered(row, a),
            (G::IQ4_XS, _) => iq4xs(row, a),
            _ => return None,
        })
    }
}

/// Whether the grid entries are gathered on this CPU: on Intel's with AMX
/// tiles (Sapphire Rapids and later), whether or not whale uses the tiles.
/// There one `vpgatherdq` of eight entries costs less than composing them
/// from scalar loads, whose inserts all wait for the one shuffle port. On
/// a 2-core Xeon with AMX (stop 35, `iq_bench`, ns a block): IQ1_S 14.3
/// composed against 10.2 gathered (the module docs list every type). On
/// AMD Zen 4 the gathers measured slower (IQ1_S 19.0 against 15.2); and
/// the Intel cores with AVX-512 before Sapphire Rapids run gathers through
/// the microcode that patches the GDS ("Downfall") leak, which slows them
/// several times (not measured here). The tiles mark the
/// generation because a hypervisor may report any model number (the Xeon
/// above said Rocket Lake, which has no AMX).
pub(crate) fn gathers() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(crate::amx::cpu_has_tiles)
}

// ---------------------------------------------------------------------------
// The parts every kernel shares. `#[inline(always)]` without features of
// their own: they are compiled inside the `avx512_fn` kernels that call them.
// ---------------------------------------------------------------------------

impl super::avx2::Sums for __m512i {
    const GROUPED: bool = true;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX-512 F (the callers').
        unsafe { _mm512_setzero_si512() }
    }

    #[inline(always)]
    unsafe fn fold(self) -> __m256i {
        // SAFETY: AVX-512 F (the callers').
        unsafe { _mm256_add_epi32(_mm512_castsi512_si256(self), _mm512_extracti64x4_epi64::<1>(self)) }
    }
}

/// One step of block `b`: its weights `64p..64p + 64` as unsigned
/// magnitudes `u` with `neg` marking the negative ones (when `SIGNED`),
/// times the i16 scales `sc` of their pairs, into each row's sums.
#[inline(always)]
unsafe fn step<const SIGNED: bool, const N: usize>(
    sums: &mut [__m512i; N],
    a: &[ActRow<'_>; N],
    b: usize,
    p: usize,
    u: __m512i,
    neg: __mmask64,
    sc: __m512i,
) {
    for (s, aj) in sums.iter_mut().zip(a) {
        // One bounds check a block (the same for every chunk), not one a chunk.
        let ys = &aj.qs[QK_K * b..QK_K * b + QK_K][64 * p..64 * p + 64];
        // SAFETY: AVX-512 F/BW/VNNI (the callers'); `ys` holds 64 bytes.
        unsafe {
            let mut y = _mm512_loadu_si512(ys.as_ptr().cast());
            if SIGNED {
                y = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
            }
            *s = _mm512_dpwssd_epi32(*s, _mm512_maddubs_epi16(u, y), sc);
        }
    }
}

/// Adds `f(Q8_K sums of the block's sixteen 16-weight groups)` (eight i32)
/// to each row's sums: the offsets that IQ1's unsigned weights leave.
#[inline(always)]
unsafe fn add_offsets<const N: usize>(
    sums: &mut [__m512i; N],
    a: &[ActRow<'_>; N],
    b: usize,
    f: impl Fn(__m256i) -> __m256i,
) {
    for (s, aj) in sums.iter_mut().zip(a) {
        let bs = &aj.bsums[16 * b..16 * b + 16];
        // SAFETY: AVX-512 F (the callers'); 16 i16 = 32 bytes.
        unsafe { *s = _mm512_add_epi32(*s, _mm512_zextsi256_si512(f(_mm256_loadu_si256(bs.as_ptr().cast())))) };
    }
}

/// Eight u64 (element 0 first) as one vector.
#[inline(always)]
unsafe fn v8(e: [u64; 8]) -> __m512i {
    // SAFETY: AVX-512 F (the callers').
    unsafe {
        let lo = _mm256_setr_epi64x(e[0] as i64, e[1] as i64, e[2] as i64, e[3] as i64);
        let hi = _mm256_setr_epi64x(e[4] as i64, e[5] as i64, e[6] as i64, e[7] as i64);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }
}

/// Step `p`'s eight grid entries of `table`, at the u16 indices `8p..8p + 8`
/// of `idx`, by one gather. The callers mask every index below `L`.
#[inline(always)]
unsafe fn gather8<const L: usize>(table: &'static [u64; L], idx: __m512i, p: usize) -> __m512i {
    // SAFETY: AVX-512 F (the callers'); each index is below `L`, so every
    // address read is inside `table`.
    unsafe {
        let part = match p {
            0 => _mm512_castsi512_si128(idx),
            1 => _mm512_extracti32x4_epi32::<1>(idx),
            2 => _mm512_extracti32x4_epi32::<2>(idx),
            _ => _mm512_extracti32x4_epi32::<3>(idx),
        };
        _mm512_i32gather_epi64::<8>(_mm256_cvtepu16_epi32(part), table.as_ptr().cast())
    }
}

/// Sixteen u32 `e(0..16)` (element 0 first) as one vector, composed as two
/// 256-bit halves (IQ3_XXS: 21 ns a block, against 26 by `vpgatherdd` and
/// 30 composed at 512 bits; IQ3_S 26 either way).
#[inline(always)]
unsafe fn v16(e: impl Fn(usize) -> u32) -> __m512i {
    // SAFETY: AVX-512 F (the callers').
    unsafe {
        let h = |o: usize| {
            _mm256_setr_epi32(
                e(o) as i32,
                e(o + 1) as i32,
                e(o + 2) as i32,
                e(o + 3) as i32,
                e(o + 4) as i32,
                e(o + 5) as i32,
                e(o + 6) as i32,
                e(o + 7) as i32,
            )
        };
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(h(0)), h(8))
    }
}

/// The four qwords of `v`, through general registers: a vector store read
/// back in pieces would wait for the store to complete.
#[inline(always)]
unsafe fn qwords(v: __m256i) -> [u64; 4] {
    // SAFETY: AVX2 (the callers').
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

/// Sign bits as stored one byte per 8 weights (IQ2_S, IQ3_S): step `p`'s mask.
#[inline(always)]
fn stored_signs(s: &[u8], p: usize) -> __mmask64 {
    u64::from_le_bytes(s[8 * p..8 * p + 8].try_into().unwrap())
}

/// The 8-bit sign codes of 7-bit codes held one per byte (bit 7 clear):
/// the eighth bit makes the count of set bits even (the `KSIGNS` rule).
/// Any lane width: the folds only move bits down, and bit 0 of each byte
/// (the parity) takes only bits of its own byte.
#[inline(always)]
unsafe fn with_parity(s: __m512i) -> __m512i {
    // SAFETY: AVX-512 F/BW (the callers').
    unsafe {
        let mut x = _mm512_xor_si512(s, _mm512_srli_epi32::<4>(s));
        x = _mm512_xor_si512(x, _mm512_srli_epi32::<2>(x));
        x = _mm512_xor_si512(x, _mm512_srli_epi32::<1>(x));
        _mm512_or_si512(s, _mm512_slli_epi32::<7>(_mm512_and_si512(x, _mm512_set1_epi8(1))))
    }
}

/// The eight chunk words of IQ2_XXS and IQ3_XXS (qword t: chunk t's word,
/// four 7-bit sign codes and a 4-bit scale, in its low half): each step's
/// 64 sign bits, and the scales `2·(w >> 28) + 1` as i16 pairs in dword 2t.
#[inline(always)]
unsafe fn xxs_words(w: __m512i) -> ([u64; 4], __m512i) {
    // SAFETY: AVX-512 F/BW (the callers').
    unsafe {
        // The four codes one per byte.
        let m7 = _mm512_set1_epi64(0x7F);
        let spread = _mm512_or_si512(
            _mm512_or_si512(
                _mm512_and_si512(w, m7),
                _mm512_and_si512(_mm512_slli_epi64::<1>(w), _mm512_slli_epi64::<8>(m7)),
            ),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_slli_epi64::<2>(w), _mm512_slli_epi64::<16>(m7)),
                _mm512_and_si512(_mm512_slli_epi64::<3>(w), _mm512_slli_epi64::<24>(m7)),
            ),
        );
        // Dword p: chunks 2p and 2p + 1's 32 sign bits each.
        let masks = qwords(_mm512_cvtepi64_epi32(with_parity(spread)));
        let s = _mm512_add_epi64(_mm512_slli_epi64::<1>(_mm512_srli_epi64::<28>(w)), _mm512_set1_epi64(1));
        (masks, _mm512_or_si512(s, _mm512_slli_epi64::<16>(s)))
    }
}

/// Step `p`'s scales from [`xxs_words`]: chunk 2p's in lanes 0..16, 2p + 1's above.
#[inline(always)]
unsafe fn xxs_scales(s: __m512i, p: usize) -> __m512i {
    let c = 4 * p as i32;
    // SAFETY: AVX-512 F (the callers').
    unsafe {
        _mm512_permutexvar_epi32(
            _mm512_setr_epi32(c, c, c, c, c, c, c, c, c + 2, c + 2, c + 2, c + 2, c + 2, c + 2, c + 2, c + 2),
            s,
        )
    }
}

/// Step `p`'s scales from sixteen i16 (one per 16-weight group): group
/// 4p + j's in lanes 8j..8j + 8 (the pair sums of its 16 weights).
#[inline(always)]
unsafe fn group_scales(sc: __m256i, p: usize) -> __m512i {
    // SAFETY: AVX-512 BW (the callers').
    unsafe {
        let j = _mm512_set_epi64(
            0x0003_0003_0003_0003,
            0x0003_0003_0003_0003,
            0x0002_0002_0002_0002,
            0x0002_0002_0002_0002,
            0x0001_0001_0001_0001,
            0x0001_0001_0001_0001,
            0,
            0,
        );
        _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16(4 * p as i16), j), _mm512_castsi256_si512(sc))
    }
}

/// The sixteen 4-bit fields of `b` (low nibble first) as one byte each.
#[inline(always)]
unsafe fn nibbles16(b: &[u8; 8]) -> __m128i {
    // SAFETY: SSE2 (the callers'); 8 bytes read.
    unsafe {
        let x = _mm_loadl_epi64(b.as_ptr().cast());
        let m = _mm_set1_epi8(0x0F);
        _mm_unpacklo_epi8(_mm_and_si128(x, m), _mm_and_si128(_mm_srli_epi16::<4>(x), m))
    }
}

/// Bytes as i16 lanes `2f + 1` (the IQ2/IQ3 scales from their fields).
#[inline(always)]
unsafe fn odd_scales(f: __m128i) -> __m256i {
    // SAFETY: AVX2 (the callers').
    unsafe {
        let s = _mm256_cvtepu8_epi16(f);
        _mm256_add_epi16(_mm256_add_epi16(s, s), _mm256_set1_epi16(1))
    }
}

/// Eight 4-bit fields (four bytes, low nibble first), each twice: the
/// per-32 scales of IQ3_S and IQ4_XS as sixteen per-16 fields.
#[inline(always)]
unsafe fn nibbles8_twice(b: &[u8; 4]) -> __m128i {
    // SAFETY: SSE2 (the callers').
    unsafe {
        let x = _mm_cvtsi32_si128(i32::from_le_bytes(*b));
        let m = _mm_set1_epi8(0x0F);
        let n = _mm_unpacklo_epi8(_mm_and_si128(x, m), _mm_and_si128(_mm_srli_epi16::<4>(x), m));
        _mm_unpacklo_epi8(n, n)
    }
}

/// IQ1_M's group nibbles (byte g: group g's index top bits and shift
/// sign) and the mask of the groups whose shift δ is -1 (bit 3 set).
#[inline(always)]
unsafe fn iq1m_nibbles(blk: &[u8]) -> (__m256i, __mmask32) {
    // SAFETY: AVX2 and AVX-512 BW/VL (the callers'); bytes 32..48 (qh).
    unsafe {
        let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(blk[32..48].as_ptr().cast()));
        let nib = _mm256_or_si256(
            _mm256_and_si256(v, _mm256_set1_epi16(0x0F)),
            _mm256_slli_epi16::<4>(_mm256_and_si256(v, _mm256_set1_epi16(0xF0))),
        );
        (nib, _mm256_test_epi8_mask(nib, _mm256_set1_epi8(8)))
    }
}

/// IQ1_M's sixteen group scales (bits 3(g % 4).. of word g / 4) as i16
/// lanes `2s + 1`.
#[inline(always)]
unsafe fn iq1m_scales(blk: &[u8]) -> __m256i {
    // SAFETY: AVX2 and AVX-512 BW/VL (the callers'); bytes 48..56.
    unsafe {
        let rep = _mm256_permutexvar_epi16(
            _mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
            _mm256_castsi128_si256(_mm_loadl_epi64(blk[48..56].as_ptr().cast())),
        );
        let s = _mm256_and_si256(
            _mm256_srlv_epi16(rep, _mm256_setr_epi16(0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9)),
            _mm256_set1_epi16(7),
        );
        _mm256_add_epi16(_mm256_add_epi16(s, s), _mm256_set1_epi16(1))
    }
}

/// IQ4_XS's eight 6-bit scales (chunk t's: its low nibble | bits 2t.. of
/// the top word << 4, minus 32), each twice, as sixteen i16 group scales.
#[inline(always)]
unsafe fn iq4xs_scales(blk: &[u8]) -> __m256i {
    // SAFETY: AVX2 and AVX-512 BW/VL (the callers'); bytes 2..8.
    unsafe {
        let top = u16::from_le_bytes([blk[2], blk[3]]) as i16;
        let hi = _mm256_slli_epi16::<4>(_mm256_and_si256(
            _mm256_srlv_epi16(
                _mm256_set1_epi16(top),
                _mm256_setr_epi16(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14),
            ),
            _mm256_set1_epi16(3),
        ));
        let lo = _mm256_cvtepu8_epi16(nibbles8_twice(blk[4..8].try_into().unwrap()));
        _mm256_sub_epi16(_mm256_or_si256(lo, hi), _mm256_set1_epi16(32))
    }
}

/// The block's f16 `d` (exact; F16C).
#[inline(always)]
unsafe fn d16(lo: u8, hi: u8) -> f32 {
    // SAFETY: F16C (the callers').
    unsafe { crate::avx2_q8::h2f(F16Le([lo, hi])) }
}

// ---------------------------------------------------------------------------
// The kernels, one per type.
// ---------------------------------------------------------------------------

avx512_fn! {
    /// IQ1_S (50-byte blocks: `d`, 32 grid-index low bytes, eight words of
    /// four 3-bit index tops, a 3-bit scale and the shift's sign). The
    /// weights `q = 8g + δ` (δ = ±1 a chunk) enter `vpmaddubsw` as `8g + 8`,
    /// and each chunk's `s·(δ - 8)·Σy` is added back from the Q8_K sums.
    unsafe fn iq1s<const N: usize, const G: bool>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let seven = _mm256_set1_epi32(7);
        let eight = _mm512_set1_epi8(8);
        blocks::<50, N, __m512i>(GgmlType::IQ1_S, row, a, |blk, b, sums| {
            // SAFETY: bytes 34..50 of the block (qh, eight u16).
            let w = _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(blk[34..50].as_ptr().cast()) });
            // Dword t: the scale 2·s + 1 (as two i16 in `sc2`), s·(δ - 8).
            let sc = _mm256_add_epi32(
                _mm256_slli_epi32::<1>(_mm256_and_si256(_mm256_srli_epi32::<12>(w), seven)),
                _mm256_set1_epi32(1),
            );
            let sc2 = _mm512_castsi256_si512(_mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc)));
            let neg = _mm256_cmpgt_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), _mm256_setzero_si256());
            let coef = _mm256_mullo_epi32(sc, _mm256_blendv_epi8(_mm256_set1_epi32(-7), _mm256_set1_epi32(-9), neg));
            // SAFETY: a whole block; AVX-512 F/BW.
            let idx = unsafe { G.then(|| iq1s_indices(blk)) };
            for p in 0..4 {
                // SAFETY: AVX-512 F/BW.
                let u = unsafe {
                    let g = iq1s_grid(blk, idx, p);
                    _mm512_add_epi8(g, eight)
                };
                let c = 2 * p as i32;
                let st = _mm512_permutexvar_epi32(
                    _mm512_setr_epi32(c, c, c, c, c, c, c, c, c + 1, c + 1, c + 1, c + 1, c + 1, c + 1, c + 1, c + 1),
                    sc2,
                );
                // SAFETY: this kernel's features.
                unsafe { step::<false, N>(sums, a, b, p, u, 0, st) };
            }
            // SAFETY: as above.
            unsafe {
                add_offsets(sums, a, b, |bs| _mm256_mullo_epi32(coef, _mm256_madd_epi16(bs, _mm256_set1_epi16(1))));
                d16(blk[0], blk[1])
            }
        })
    }
}

avx512_fn! {
    /// IQ1_M (56-byte blocks: 32 grid-index low bytes, a nibble per
    /// 8-weight group with the index's top three bits and the sign of its
    /// shift δ = ±1, sixteen 3-bit scales with `d` in the words' top
    /// nibbles). The weights `q = 8g + δ` enter `vpmaddubsw` as `q + 9`
    /// (0..=18), and `9·Σ sc·Σy` comes back off from the Q8_K sums.
    unsafe fn iq1m<const N: usize, const G: bool>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        // Per qword (8-weight group): 8 added where δ = -1, 10 where +1.
        let (eights, tens) = (_mm512_set1_epi8(8), _mm512_set1_epi8(10));
        blocks::<56, N, __m512i>(GgmlType::IQ1_M, row, a, |blk, b, sums| {
            // SAFETY: this kernel's features.
            let (nib, neg) = unsafe { iq1m_nibbles(blk) };
            // Grid index g: qs[g] | (nibble & 7) << 8, formed in a vector
            // and taken out four at a time as qwords, then by shifts in
            // scalar registers. Taken out one by one (`vpextrw`, which the
            // compiler made of a store to an array) it ran 19 ns a block on
            // Zen 4 and 24 on a Xeon, whose one shuffle port those extracts
            // and the grid vectors' inserts share; now 18.7-19.7 there
            // (llama.cpp 19.7-20.0). Formed in scalar registers: 21 on Zen
            // 4; read back from memory: 26.
            // Gathered (`G`), no qwords are taken out.
            // SAFETY: a whole block; this kernel's features.
            let idx = unsafe { iq1m_indices(blk, nib) };
            // SAFETY: AVX-512 F.
            let w: [u64; 8] = if G {
                [0; 8]
            } else {
                let (a, b) = unsafe { (qwords(_mm512_castsi512_si256(idx)), qwords(_mm512_extracti64x4_epi64::<1>(idx))) };
                [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
            };
            // SAFETY: this kernel's features.
            let sc = unsafe { iq1m_scales(blk) };
            for p in 0..4 {
                // SAFETY: this kernel's features.
                unsafe {
                    let g = if G {
                        gather8(&GRID_IQ1S_X8, idx, p)
                    } else {
                        v8(core::array::from_fn(|k| GRID_IQ1S_X8[(w[2 * p + k / 4] >> (16 * (k % 4))) as usize & 2047]))
                    };
                    let u = _mm512_add_epi8(g, _mm512_mask_blend_epi64((neg >> (8 * p)) as u8, tens, eights));
                    step::<false, N>(sums, a, b, p, u, 0, group_scales(sc, p));
                }
            }
            let [d0, d1] = super::kernels::iq1m_d_bits(blk);
            // SAFETY: as above.
            unsafe {
                add_offsets(sums, a, b, |bs| _mm256_mullo_epi32(_mm256_madd_epi16(bs, sc), _mm256_set1_epi32(-9)));
                d16(d0, d1)
            }
        })
    }
}

avx512_fn! {
    /// IQ2_XXS (66-byte blocks: `d`, then eight chunks of four grid-index
    /// bytes and a word of four 7-bit sign codes and a 4-bit scale).
    unsafe fn iq2xxs<const N: usize, const G: bool>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        blocks::<66, N, __m512i>(GgmlType::IQ2_XXS, row, a, |blk, b, sums| {
            let q: &[u8; 64] = blk[2..66].try_into().unwrap();
            // SAFETY: the 64 bytes of `q`.
            let (masks, s) = unsafe { xxs_words(_mm512_srli_epi64::<32>(_mm512_loadu_si512(q.as_ptr().cast()))) };
            // SAFETY: a whole block; this kernel's features.
            let idx = unsafe { G.then(|| iq2xxs_indices(blk)) };
            for (p, &neg) in masks.iter().enumerate() {
                // SAFETY: this kernel's features.
                unsafe {
                    let g = match idx {
                        Some(idx) => gather8(&GRID_IQ2XXS, idx, p),
                        None => v8(core::array::from_fn(|k| GRID_IQ2XXS[q[16 * p + k % 4 + 8 * (k / 4)] as usize])),
                    };
                    step::<true, N>(sums, a, b, p, g, neg, xxs_scales(s, p));
                }
            }
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

avx512_fn! {
    /// IQ2_XS (74-byte blocks: `d`, 32 words of a 9-bit grid index and a
    /// 7-bit sign code, sixteen 4-bit scales).
    unsafe fn iq2xs<const N: usize, const G: bool>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        blocks::<74, N, __m512i>(GgmlType::IQ2_XS, row, a, |blk, b, sums| {
            // SAFETY: bytes 2..66, the 32 words.
            let qs = unsafe { _mm512_loadu_si512(blk[2..66].as_ptr().cast()) };
            // Byte g of this: group g's eight sign bits; qword p: step p's.
            let masks = qwords(_mm512_cvtepi16_epi8(with_parity(_mm512_srli_epi16::<9>(qs))));
            let sc = odd_scales(nibbles16(blk[66..74].try_into().unwrap()));
            // SAFETY: a whole block; this kernel's features.
            let idx = unsafe { G.then(|| iq2xs_indices(blk)) };
            for (p, &neg) in masks.iter().enumerate() {
                // SAFETY: this kernel's features.
                unsafe {
                    let g = match idx {
                        Some(idx) => gather8(&GRID_IQ2XS, idx, p),
                        None => v8(core::array::from_fn(|k| {
                            let at = 2 + 2 * (8 * p + k);
                            GRID_IQ2XS[(u16::from_le_bytes([blk[at], blk[at + 1]]) & 511) as usize]
                        })),
                    };
                    step::<true, N>(sums, a, b, p, g, neg, group_scales(sc, p));
                }
            }
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

avx512_fn! {
    /// IQ2_S (82-byte blocks: `d`, 32 grid-index low bytes, 32 sign bytes,
    /// the indices' top two bits, sixteen 4-bit scales).
    unsafe fn iq2s<const N: usize, const G: bool>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        blocks::<82, N, __m512i>(GgmlType::IQ2_S, row, a, |blk, b, sums| {
            let sc = odd_scales(nibbles16(blk[74..82].try_into().unwrap()));
            // SAFETY: a whole block; this kernel's features.
            let idx = unsafe { G.then(|| iq2s_indices(blk)) };
            for p in 0..4 {
                let h = u16::from_le_bytes([blk[66 + 2 * p], blk[67 + 2 * p]]) as usize;
                // SAFETY: this kernel's features.
                unsafe {
                    let g = match idx {
                        Some(idx) => gather8(&GRID_IQ2S, idx, p),
                        None => v8(core::array::from_fn(|k| GRID_IQ2S[blk[2 + 8 * p + k] as usize | ((h >> (2 * k)) & 3) << 8])),
                    };
                    step::<true, N>(sums, a, b, p, g, stored_signs(&blk[34..66], p), group_scales(sc, p));
                }
            }
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

/// Grid indices whose low bytes are the 32 bytes `qs` and whose top bits
/// come `BITS` at a time from eight u16 words `tops`: lane j (as u16) is
/// `qs[j] | ((tops[j / 4] >> BITS·(j % 4)) & (2^BITS - 1)) << 8`.
#[inline(always)]
unsafe fn indices_with_tops<const BITS: i16>(qs: __m256i, tops: __m128i) -> __m512i {
    // SAFETY: AVX-512 F/BW (the callers').
    unsafe {
        let word = _mm512_set_epi16(
            7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0,
        );
        let (b1, b2, b3) = (BITS, 2 * BITS, 3 * BITS);
        let shift = _mm512_set_epi16(
            b3, b2, b1, 0, b3, b2, b1, 0, b3, b2, b1, 0, b3, b2, b1, 0, b3, b2, b1, 0, b3, b2, b1, 0, b3, b2, b1, 0,
            b3, b2, b1, 0,
        );
        let hi = _mm512_srlv_epi16(_mm512_permutexvar_epi16(word, _mm512_castsi128_si512(tops)), shift);
        let mask = _mm512_set1_epi16((1 << BITS) - 1);
        _mm512_or_si512(_mm512_cvtepu8_epi16(qs), _mm512_slli_epi16::<8>(_mm512_and_si512(hi, mask)))
    }
}

/// IQ1_S's 32 grid indices (50-byte block): `qs[j]` and bits `3(j % 4)..`
/// of word `qh[j / 4]` as bits 8..11.
#[inline(always)]
unsafe fn iq1s_indices(blk: &[u8]) -> __m512i {
    // SAFETY: AVX-512 F/BW (the callers'); bytes 2..34 (qs) and 34..50 (qh).
    unsafe {
        indices_with_tops::<3>(
            _mm256_loadu_si256(blk[2..34].as_ptr().cast()),
            _mm_loadu_si128(blk[34..50].as_ptr().cast()),
        )
    }
}

/// Step `p`'s eight IQ1_S grid entries (50-byte block `blk`): gathered at
/// `idx` ([`iq1s_indices`]) where given, else composed from scalar loads
/// with the indices formed in scalar registers (formed in vectors and read
/// back through memory it measured no faster on Zen 4).
#[inline(always)]
unsafe fn iq1s_grid(blk: &[u8], idx: Option<__m512i>, p: usize) -> __m512i {
    // SAFETY: AVX-512 F (the callers'); a whole block.
    unsafe {
        match idx {
            Some(idx) => gather8(&GRID_IQ1S_X8, idx, p),
            None => v8(core::array::from_fn(|k| {
                let t = 2 * p + k / 4;
                let h = u16::from_le_bytes([blk[34 + 2 * t], blk[35 + 2 * t]]) as usize;
                GRID_IQ1S_X8[blk[2 + 4 * t + k % 4] as usize | ((h >> (3 * (k % 4))) & 7) << 8]
            })),
        }
    }
}

/// IQ1_M's 32 grid indices (56-byte block; `nib` from [`iq1m_nibbles`]),
/// lane j as u16: `qs[j]` and the low three bits of nibble j as bits 8..11.
#[inline(always)]
unsafe fn iq1m_indices(blk: &[u8], nib: __m256i) -> __m512i {
    // SAFETY: AVX-512 F/BW (the callers'); bytes 0..32 (qs).
    unsafe {
        let lo = _mm512_cvtepu8_epi16(_mm256_loadu_si256(blk[..32].as_ptr().cast()));
        let hi = _mm512_cvtepu8_epi16(_mm256_and_si256(nib, _mm256_set1_epi8(7)));
        _mm512_or_si512(lo, _mm512_slli_epi16::<8>(hi))
    }
}

/// IQ2_XXS's 32 grid indices (66-byte block), lane j as u16: byte j % 4 of
/// chunk j / 4 (each chunk's qword starts with its four index bytes).
#[inline(always)]
unsafe fn iq2xxs_indices(blk: &[u8]) -> __m512i {
    // SAFETY: AVX-512 F/BW (the callers'); bytes 2..66.
    unsafe { _mm512_cvtepu8_epi16(_mm512_cvtepi64_epi32(_mm512_loadu_si512(blk[2..66].as_ptr().cast()))) }
}

/// IQ2_XS's 32 grid indices (74-byte block), lane j as u16: the low nine
/// bits of word j.
#[inline(always)]
unsafe fn iq2xs_indices(blk: &[u8]) -> __m512i {
    // SAFETY: AVX-512 F/BW (the callers'); bytes 2..66.
    unsafe { _mm512_and_si512(_mm512_loadu_si512(blk[2..66].as_ptr().cast()), _mm512_set1_epi16(511)) }
}

/// IQ2_S's 32 grid indices (82-byte block): `qs[j]` and bits `2(j % 4)..`
/// of byte `qh[j / 4]` as bits 8..10.
#[inline(always)]
unsafe fn iq2s_indices(blk: &[u8]) -> __m512i {
    // SAFETY: AVX-512 F/BW (the callers'); bytes 2..34 (qs) and 66..74 (qh).
    unsafe {
        indices_with_tops::<2>(
            _mm256_loadu_si256(blk[2..34].as_ptr().cast()),
            _mm_cvtepu8_epi16(_mm_loadl_epi64(blk[66..74].as_ptr().cast())),
        )
    }
}

/// IQ3_XXS's sixteen grid indices of step `p` (98-byte block) as u32.
#[inline(always)]
unsafe fn iq3xxs_indices(blk: &[u8], p: usize) -> __m512i {
    // SAFETY: AVX-512 F (the callers'); bytes 2 + 16p..18 + 16p.
    unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(blk[2 + 16 * p..18 + 16 * p].as_ptr().cast())) }
}

/// IQ3_S's sixteen grid indices of step `p` (110-byte block) as u32:
/// `qs[16p + j]` and bit j of the step's 16 top bits as bit 8.
#[inline(always)]
unsafe fn iq3s_indices(blk: &[u8], p: usize) -> __m512i {
    let qh = u16::from_le_bytes([blk[66 + 2 * p], blk[67 + 2 * p]]) as i32;
    // SAFETY: AVX-512 F (the callers'); bytes 2 + 16p..18 + 16p.
    unsafe {
        let lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk[2 + 16 * p..18 + 16 * p].as_ptr().cast()));
        let top = _mm512_srlv_epi32(
            _mm512_set1_epi32(qh),
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        );
        _mm512_or_si512(lo, _mm512_slli_epi32::<8>(_mm512_and_si512(top, _mm512_set1_epi32(1))))
    }
}

/// Step `p`'s sixteen grid entries of `table` at the u32 indices in `idx`,
/// by one gather. The callers mask every index below `L`.
#[inline(always)]
unsafe fn gather16<const L: usize>(table: &'static [u32; L], idx: __m512i) -> __m512i {
    // SAFETY: AVX-512 F (the callers'); each index is below `L`, so every
    // address read is inside `table`.
    unsafe { _mm512_i32gather_epi32::<4>(idx, table.as_ptr().cast()) }
}

avx512_fn! {
    /// IQ3_XXS (98-byte blocks: `d`, 64 grid-index bytes of four weights
    /// each, then eight words of four 7-bit sign codes and a 4-bit scale),
    /// its grid entries gathered; where [`gathers`] is false the AVX2
    /// kernel runs instead (composed at 512 bits it was slower there).
    unsafe fn iq3xxs_gathered<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        blocks::<98, N, __m512i>(GgmlType::IQ3_XXS, row, a, |blk, b, sums| {
            // SAFETY: bytes 66..98 (the words) and 2..66 (the indices).
            unsafe {
                let (masks, s) = xxs_words(_mm512_cvtepu32_epi64(_mm256_loadu_si256(blk[66..98].as_ptr().cast())));
                for (p, &neg) in masks.iter().enumerate() {
                    step::<true, N>(sums, a, b, p, gather16(&GRID_IQ3XXS, iq3xxs_indices(blk, p)), neg, xxs_scales(s, p));
                }
                d16(blk[0], blk[1])
            }
        })
    }
}

avx512_fn! {
    /// IQ3_S (110-byte blocks: `d`, 64 grid-index low bytes, their top
    /// bits, 32 sign bytes, eight 4-bit scales), its grid entries gathered;
    /// where [`gathers`] is false the AVX2 kernel runs instead.
    unsafe fn iq3s_gathered<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        blocks::<110, N, __m512i>(GgmlType::IQ3_S, row, a, |blk, b, sums| {
            // SAFETY: bytes 2..66 (the index bytes), 74..106 (signs), 106..110 (scales).
            unsafe {
                let sc = odd_scales(nibbles8_twice(blk[106..110].try_into().unwrap()));
                for p in 0..4 {
                    let g = gather16(&GRID_IQ3S, iq3s_indices(blk, p));
                    step::<true, N>(sums, a, b, p, g, stored_signs(&blk[74..106], p), group_scales(sc, p));
                }
                d16(blk[0], blk[1])
            }
        })
    }
}

avx512_fn! {
    /// IQ4_XS (136-byte blocks: `d`, the eight 6-bit scales' top bits and
    /// low nibbles, then 16 bytes a chunk: its first 16 weights in the low
    /// nibbles, the next 16 in the high). The values come from
    /// `KVALUES_IQ4` by `vpshufb`; signed, they enter `vpmaddubsw` as
    /// magnitudes with their signs moved onto the activations.
    unsafe fn iq4xs<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        // SAFETY: the table holds 16 bytes.
        let kv = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(KVALUES_IQ4.as_ptr().cast()) });
        // 128-bit lanes [0, 1, 2, 3] take the step's bytes [0..16, 0..16,
        // 16..32, 16..32] and shift the second and fourth by 4.
        let lanes = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
        let shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
        let low4 = _mm512_set1_epi8(0x0F);
        blocks::<136, N, __m512i>(GgmlType::IQ4_XS, row, a, |blk, b, sums| {
            // SAFETY: this kernel's features.
            let sc = unsafe { iq4xs_scales(blk) };
            for p in 0..4 {
                // SAFETY: bytes 8 + 32p .. 40 + 32p of the block; this kernel's features.
                unsafe {
                    let x = _mm512_castsi256_si512(_mm256_loadu_si256(blk[8 + 32 * p..40 + 32 * p].as_ptr().cast()));
                    let nib = _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutexvar_epi64(lanes, x), shifts), low4);
                    let q = _mm512_shuffle_epi8(kv, nib);
                    step::<true, N>(sums, a, b, p, _mm512_abs_epi8(q), _mm512_movepi8_mask(q), group_scales(sc, p));
                }
            }
            // SAFETY: as above.
            unsafe { d16(blk[0], blk[1]) }
        })
    }
}

// ---------------------------------------------------------------------------
// Blocks unpacked for the prefill panels (`crate::panel`): the weights as
// unsigned bytes `q + OFF` (the type's largest |q|, so none is negative),
// the sixteen 16-weight group scales, and `OFF`, which the panel takes back
// off as `OFF·Σ sc·Σy` from the Q8_K group sums (as Q6_K's 32).
// ---------------------------------------------------------------------------

/// The i-quants the panels take, with their offsets.
pub(crate) fn panel_offset(wty: GgmlType) -> Option<i32> {
    use GgmlType as G;
    match wty {
        G::IQ1_S | G::IQ1_M => Some(9),
        G::IQ2_XXS | G::IQ2_XS | G::IQ2_S => Some(43),
        G::IQ3_XXS => Some(62),
        G::IQ3_S => Some(15),
        G::IQ4_XS => Some(127),
        _ => None,
    }
}

/// Signed weights given as magnitudes `g` and signs `neg`, plus `off`.
#[inline(always)]
unsafe fn offset_signed(g: __m512i, neg: __mmask64, off: i32) -> __m512i {
    // SAFETY: AVX-512 BW (the callers').
    unsafe {
        let o = _mm512_set1_epi8(off as i8);
        _mm512_mask_sub_epi8(_mm512_add_epi8(o, g), neg, o, g)
    }
}

/// One block of `wty` (one [`panel_offset`] takes) unpacked for the panels:
/// `q + off` into `u`; `d`, `off`, the group scales `sc` and their i16 pairs
/// `mv` (the multipliers of the Q8_K group sums, see `crate::panel`).
///
/// # Safety
/// The CPU must have the VNNI level's features; `bytes` is one block of `wty`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn unpack_k(wty: GgmlType, bytes: &[u8], u: &mut [u8; QK_K]) -> crate::avx2_q8::KParts {
    // SAFETY: the caller's contract, passed on.
    unsafe { unpack_k_with(wty, bytes, u, gathers()) }
}

/// [`unpack_k`] with the grid entries gathered (`gather`) or composed from
/// scalar loads; both unpack the same bytes.
///
/// # Safety
/// As [`unpack_k`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_k_with(wty: GgmlType, bytes: &[u8], u: &mut [u8; QK_K], gather: bool) -> crate::avx2_q8::KParts {
    use GgmlType as G;
    let off = panel_offset(wty).expect("an i-quant the panels take");
    let mut put = |p: usize, v: __m512i| {
        // SAFETY: 64 bytes into `u[64p..64p + 64]`.
        unsafe { _mm512_storeu_si512(u[64 * p..64 * p + 64].as_mut_ptr().cast(), v) }
    };
    // The scales as sixteen i16 (one per group of 16), and `d`.
    // SAFETY (the block): this function's features; the byte ranges below
    // are inside the block of each type.
    let (sc, d): (__m256i, f32) = unsafe {
        match wty {
            G::IQ2_XXS | G::IQ3_XXS => {
                let two = wty == G::IQ2_XXS;
                let w = if two {
                    _mm512_srli_epi64::<32>(_mm512_loadu_si512(bytes[2..66].as_ptr().cast()))
                } else {
                    _mm512_cvtepu32_epi64(_mm256_loadu_si256(bytes[66..98].as_ptr().cast()))
                };
                let (masks, s) = xxs_words(w);
                let idx2 = (gather && two).then(|| iq2xxs_indices(bytes));
                for (p, &neg) in masks.iter().enumerate() {
                    let q = &bytes[2 + 16 * p..18 + 16 * p];
                    let g = match (two, idx2) {
                        (true, Some(idx)) => gather8(&GRID_IQ2XXS, idx, p),
                        (true, None) => v8(core::array::from_fn(|k| GRID_IQ2XXS[q[k % 4 + 8 * (k / 4)] as usize])),
                        (false, _) if gather => gather16(&GRID_IQ3XXS, iq3xxs_indices(bytes, p)),
                        (false, _) => v16(|j| GRID_IQ3XXS[q[j] as usize]),
                    };
                    put(p, offset_signed(g, neg, off));
                }
                // Group g: chunk g / 2's scale (low i16 of dword 2(g / 2)).
                let per_group = _mm512_permutexvar_epi32(
                    _mm512_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14),
                    s,
                );
                (_mm512_cvtepi32_epi16(_mm512_and_si512(per_group, _mm512_set1_epi32(0xFFFF))), d16(bytes[0], bytes[1]))
            }
            G::IQ2_XS => {
                let qs = _mm512_loadu_si512(bytes[2..66].as_ptr().cast());
                let masks = qwords(_mm512_cvtepi16_epi8(with_parity(_mm512_srli_epi16::<9>(qs))));
                let idx = gather.then(|| iq2xs_indices(bytes));
                for (p, &neg) in masks.iter().enumerate() {
                    let g = match idx {
                        Some(idx) => gather8(&GRID_IQ2XS, idx, p),
                        None => v8(core::array::from_fn(|k| {
                            let at = 2 + 2 * (8 * p + k);
                            GRID_IQ2XS[(u16::from_le_bytes([bytes[at], bytes[at + 1]]) & 511) as usize]
                        })),
                    };
                    put(p, offset_signed(g, neg, off));
                }
                (odd_scales(nibbles16(bytes[66..74].try_into().unwrap())), d16(bytes[0], bytes[1]))
            }
            G::IQ2_S => {
                let idx = gather.then(|| iq2s_indices(bytes));
                for p in 0..4 {
                    let h = u16::from_le_bytes([bytes[66 + 2 * p], bytes[67 + 2 * p]]) as usize;
                    let g = match idx {
                        Some(idx) => gather8(&GRID_IQ2S, idx, p),
                        None => v8(core::array::from_fn(|k| {
                            GRID_IQ2S[bytes[2 + 8 * p + k] as usize | ((h >> (2 * k)) & 3) << 8]
                        })),
                    };
                    put(p, offset_signed(g, stored_signs(&bytes[34..66], p), off));
                }
                (odd_scales(nibbles16(bytes[74..82].try_into().unwrap())), d16(bytes[0], bytes[1]))
            }
            G::IQ3_S => {
                let qh = u64::from_le_bytes(bytes[66..74].try_into().unwrap());
                for p in 0..4 {
                    let (q, h) = (&bytes[2 + 16 * p..18 + 16 * p], (qh >> (16 * p)) as usize);
                    let g = if gather {
                        gather16(&GRID_IQ3S, iq3s_indices(bytes, p))
                    } else {
                        v16(|j| GRID_IQ3S[q[j] as usize | ((h >> j) & 1) << 8])
                    };
                    put(p, offset_signed(g, stored_signs(&bytes[74..106], p), off));
                }
                (odd_scales(nibbles8_twice(bytes[106..110].try_into().unwrap())), d16(bytes[0], bytes[1]))
            }
            G::IQ4_XS => {
                let kv = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4.as_ptr().cast()));
                let lanes = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
                let shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
                for p in 0..4 {
                    let x = _mm512_castsi256_si512(_mm256_loadu_si256(bytes[8 + 32 * p..40 + 32 * p].as_ptr().cast()));
                    let nib = _mm512_and_si512(
                        _mm512_srlv_epi64(_mm512_permutexvar_epi64(lanes, x), shifts),
                        _mm512_set1_epi8(0x0F),
                    );
                    put(p, _mm512_add_epi8(_mm512_shuffle_epi8(kv, nib), _mm512_set1_epi8(off as i8)));
                }
                (iq4xs_scales(bytes), d16(bytes[0], bytes[1]))
            }
            G::IQ1_S => {
                let mut sc = [0i16; 16];
                let idx = gather.then(|| iq1s_indices(bytes));
                for p in 0..4 {
                    // Per chunk t: q + 9 = (8g + 8) + (δ + 1), δ + 1 = 2 or 0.
                    let mut plus = 0u64;
                    for t in [2 * p, 2 * p + 1] {
                        let w = u16::from_le_bytes([bytes[34 + 2 * t], bytes[35 + 2 * t]]);
                        if w & 0x8000 == 0 {
                            plus |= 0xFFFF_FFFF << (32 * (t - 2 * p));
                        }
                        sc[2 * t] = 2 * ((w >> 12) & 7) as i16 + 1;
                        sc[2 * t + 1] = sc[2 * t];
                    }
                    let g = iq1s_grid(bytes, idx, p);
                    let u8s = _mm512_add_epi8(g, _mm512_set1_epi8(8));
                    put(p, _mm512_mask_add_epi8(u8s, plus, u8s, _mm512_set1_epi8(2)));
                }
                (_mm256_loadu_si256(sc.as_ptr().cast()), d16(bytes[0], bytes[1]))
            }
            G::IQ1_M => {
                let (nib, neg) = iq1m_nibbles(bytes);
                let idx = gather.then(|| iq1m_indices(bytes, nib));
                for p in 0..4 {
                    let g = match idx {
                        Some(idx) => gather8(&GRID_IQ1S_X8, idx, p),
                        None => v8(core::array::from_fn(|k| {
                            let gi = 8 * p + k;
                            let hi = (bytes[32 + gi / 2] >> (4 * (gi % 2))) & 7;
                            GRID_IQ1S_X8[bytes[gi] as usize | (hi as usize) << 8]
                        })),
                    };
                    let add =
                        _mm512_mask_blend_epi64((neg >> (8 * p)) as u8, _mm512_set1_epi8(10), _mm512_set1_epi8(8));
                    put(p, _mm512_add_epi8(g, add));
                }
                let [d0, d1] = super::kernels::iq1m_d_bits(bytes);
                (iq1m_scales(bytes), d16(d0, d1))
            }
            t => unreachable!("unpack_k: {t} has no panel form"),
        }
    };
    let mut s16 = [0i16; 16];
    // SAFETY: 32 bytes into `s16`.
    unsafe { _mm256_storeu_si256(s16.as_mut_ptr().cast(), sc) };
    crate::avx2_q8::KParts {
        d,
        dmin: 0.0,
        off,
        mv: core::array::from_fn(|q| (s16[2 * q] as u16 as u32 | (s16[2 * q + 1] as u16 as u32) << 16) as i32),
        // One scale per `panel_group_len` elements (each per-32 scale is
        // both of its 16-element groups' above).
        sc: if panel_group_len(wty) == 32 {
            core::array::from_fn(|g| if g < 8 { i32::from(s16[2 * g]) } else { 0 })
        } else {
            s16.map(i32::from)
        },
    }
}

/// Elements per scale group of `wty`'s panels: 32 for the types with a
/// scale per 32 weights, so that the panels multiply each group's sums by
/// its scale half as often (`vpmulld`, two uops on the port the
/// multiply-adds use), else 16.
pub(crate) fn panel_group_len(wty: GgmlType) -> usize {
    use GgmlType as G;
    match wty {
        G::IQ1_S | G::IQ2_XXS | G::IQ3_XXS | G::IQ3_S | G::IQ4_XS => 32,
        _ => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{SimdLevel, Verified};

    /// The types whose grid entries are gathered or composed.
    const GRID_TYPES: [GgmlType; 7] = [
        GgmlType::IQ1_S,
        GgmlType::IQ1_M,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ2_S,
        GgmlType::IQ3_XXS,
        GgmlType::IQ3_S,
    ];

    /// The panels' unpacking gives the same bytes and parts either way.
    #[test]
    fn gathered_and_composed_unpacking_agree() {
        if Verified::new(SimdLevel::Avx512Vnni).is_none() {
            eprintln!("no AVX-512 VNNI on this CPU: neither way runs here");
            return;
        }
        let mut s = 5u64;
        for wty in GRID_TYPES {
            for fill in [None, Some(0u8), Some(0xFF)] {
                for _ in 0..20 {
                    let mut blk: Vec<u8> = (0..wty.type_size())
                        .map(|_| {
                            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            fill.unwrap_or((s >> 33) as u8)
                        })
                        .collect();
                    super::super::set_block_d(wty, &mut blk, 0.5);
                    let (mut ug, mut uc) = ([0u8; QK_K], [0u8; QK_K]);
                    // SAFETY: AVX-512 VNNI checked above; one whole block.
                    let (pg, pc) =
                        unsafe { (unpack_k_with(wty, &blk, &mut ug, true), unpack_k_with(wty, &blk, &mut uc, false)) };
                    assert_eq!(ug, uc, "{wty} fill {fill:?}");
                    assert_eq!((pg.d.to_bits(), pg.off, pg.mv, pg.sc), (pc.d.to_bits(), pc.off, pc.mv, pc.sc), "{wty}");
                }
            }
        }
    }

    /// Both ways of fetching the grid entries, whichever this CPU uses,
    /// give the scalar reference's bits, over random blocks and the all-set
    /// and all-clear ones against activations at ±127.
    #[test]
    fn gathered_and_composed_grids_give_the_scalar_bits() {
        if Verified::new(SimdLevel::Avx512Vnni).is_none() {
            eprintln!("no AVX-512 VNNI on this CPU: neither way runs here");
            return;
        }
        let scalar = Verified::new(SimdLevel::Scalar).unwrap();
        let (nb, mut s) = (11, 3u64);
        let mut rnd = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let n = nb * QK_K;
        let xs: Vec<Vec<f32>> = vec![
            (0..3 * n).map(|_| rnd() as f32 / u32::MAX as f32 * 2.0 - 1.0).collect(),
            (0..3 * n).map(|i| if (i / 7) % 3 == 0 { -1.0 } else { 1.0 }).collect(),
        ];
        for wty in GRID_TYPES {
            for fill in [None, Some(0u8), Some(0xFF)] {
                let mut row: Vec<u8> = (0..wty.row_bytes(n).unwrap()).map(|_| fill.unwrap_or(rnd() as u8)).collect();
                for blk in row.chunks_exact_mut(wty.type_size()) {
                    super::super::set_block_d(wty, blk, 0.01);
                }
                for x in &xs {
                    let acts = crate::quantize_acts(wty, x, 3, n);
                    let a3 = [acts.row(0), acts.row(1), acts.row(2)];
                    let want = super::super::kernels::vec_dot_group::<3>(scalar, wty, &row, &a3);
                    for gather in [false, true] {
                        // SAFETY: AVX-512 VNNI checked above; whole blocks and
                        // activation rows of as many columns.
                        // The IQ3 types composed are the AVX2 kernels'.
                        let (got3, got1) = unsafe {
                            (
                                dot_with::<3>(wty, &row, &a3, gather)
                                    .unwrap_or_else(|| super::super::avx2::dot(wty, &row, &a3).unwrap()),
                                dot_with::<1>(wty, &row, &[a3[1]], gather)
                                    .unwrap_or_else(|| super::super::avx2::dot(wty, &row, &[a3[1]]).unwrap()),
                            )
                        };
                        assert_eq!(
                            got3.map(f32::to_bits),
                            want.map(f32::to_bits),
                            "{wty} gather {gather} fill {fill:?}"
                        );
                        assert_eq!(
                            got1[0].to_bits(),
                            want[1].to_bits(),
                            "{wty} gather {gather} fill {fill:?}, one row"
                        );
                    }
                }
            }
        }
    }
}
