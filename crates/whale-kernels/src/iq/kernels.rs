//! The fast dot products of the i-quant and ternary formats against 8-bit
//! activations, at every SIMD level.
//!
//! Each weight block is unpacked once into the integer form of the module
//! docs (256 signed bytes `q` and 16 scales) with table lookups and SWAR
//! byte arithmetic on u64 words (the grids are pre-expanded to one byte per
//! element, sign codes to byte masks), then dotted with each activation row
//! of the group: the integer sum `Σ_g sc[g] Σ q·y` at the level's width
//! (AVX2: `vpsignb` + `vpmaddubsw` + `vpmaddwd`; AVX-512 VNNI: the same with
//! `vpdpwssd`; NEON: `smull` + `sadalp`; scalar: plain i32), and the float
//! step of [`crate::qdot`] (`(d·da)·isum` into lane `b % 8`, [`reduce8`],
//! times [`post_scale`]). The integers are exact at every level and the float
//! step is the same code, so every level returns the bits of the scalar
//! reference `qdot::vec_dot_q_ref`, which decodes with the independent
//! element-by-element decoder of [`super::decode_ints`].
//!
//! Ranges: |q| <= 127 and |y| <= 127 (Q8_K and Q8_0 never produce -128), so
//! a `vpmaddubsw` pair sum is at most 2·127·127 = 32258 and never saturates;
//! |sc| <= 32 and a block's |isum| <= 256·127·127·32 < 2^31.

use super::*;
use crate::dispatch::{SimdLevel, Verified};
use crate::q8::ActRow;
use crate::qdot::{reduce8, term};

/// One unpacked block: `q` (the first `block_size` bytes used) and the
/// scale of each 16 elements.
#[repr(C, align(32))]
pub(crate) struct Unpacked {
    q: [i8; QK_K],
    sc: [i16; 16],
    d: f32,
}

impl Default for Unpacked {
    fn default() -> Self {
        Unpacked { q: [0; QK_K], sc: [1; 16], d: 0.0 }
    }
}

/// Byte `j` is 0xFF where bit `j` of the index is set.
const fn sign_masks() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut j = 0;
        while j < 8 {
            if i >> j & 1 == 1 {
                t[i] |= 0xFF << (8 * j);
            }
            j += 1;
        }
        i += 1;
    }
    t
}

static SIGN_MASK: [u64; 256] = sign_masks();

static KSIGN_MASK: [u64; 128] = {
    let m = sign_masks();
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = m[KSIGNS[i] as usize];
        i += 1;
    }
    t
};

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Bytes of `g` negated where `m` is 0xFF. Every grid byte is in 1..=127,
/// so `(g ^ 0xFF) + 1 = 256 - g` never carries into the next byte.
#[inline(always)]
fn negate(g: u64, m: u64) -> u64 {
    (g ^ m).wrapping_add(m & LOW)
}

/// Byte-wise wrapping `a + b` (no carries between bytes).
#[inline(always)]
fn add_bytes(a: u64, b: u64) -> u64 {
    ((a & !HIGH).wrapping_add(b & !HIGH)) ^ ((a ^ b) & HIGH)
}

#[inline(always)]
fn put(q: &mut [i8; QK_K], at: usize, v: u64) {
    q[at..at + 8].copy_from_slice(bytemuck::cast_slice(&v.to_le_bytes()));
}

/// IQ1_M's f16 `d`, spread over the top nibbles of its four scale words.
#[inline(always)]
fn iq1m_d(b: &[u8]) -> f32 {
    F16Le(iq1m_d_bits(b)).to_f32()
}

/// The bytes of IQ1_M's f16 `d` (see [`iq1m_d`]).
#[inline(always)]
pub(super) fn iq1m_d_bits(b: &[u8]) -> [u8; 2] {
    let w = |i| u16_at(&b[48..56], i);
    ((w(0) >> 12) | ((w(1) >> 8) & 0x00F0) | ((w(2) >> 4) & 0x0F00) | (w(3) & 0xF000)).to_le_bytes()
}

#[inline(always)]
fn half(lo: u8, hi: u8) -> f32 {
    F16Le([lo, hi]).to_f32()
}

/// Unpacks one `wty` block (`b` is exactly one block) into `u`.
#[inline(always)]
pub(crate) fn unpack(wty: GgmlType, b: &[u8], u: &mut Unpacked) {
    use GgmlType as G;
    match wty {
        G::IQ2_XXS => {
            u.d = half(b[0], b[1]);
            let qs = &b[2..66];
            for ib in 0..8 {
                let aux = u32_at(qs, 2 * ib + 1);
                let s = (2 * (aux >> 28) + 1) as i16;
                u.sc[2 * ib] = s;
                u.sc[2 * ib + 1] = s;
                for k in 0..4 {
                    let g = GRID_IQ2XXS[qs[8 * ib + k] as usize];
                    let m = KSIGN_MASK[((aux >> (7 * k)) & 127) as usize];
                    put(&mut u.q, 32 * ib + 8 * k, negate(g, m));
                }
            }
        }
        G::IQ2_XS => {
            u.d = half(b[0], b[1]);
            let (qs, scales) = (&b[2..66], &b[66..74]);
            for g in 0..16 {
                u.sc[g] = 2 * ((scales[g / 2] >> (4 * (g % 2))) & 0x0F) as i16 + 1;
            }
            for k in 0..32 {
                let w = u16_at(qs, k);
                put(&mut u.q, 8 * k, negate(GRID_IQ2XS[(w & 511) as usize], KSIGN_MASK[(w >> 9) as usize]));
            }
        }
        G::IQ2_S => {
            u.d = half(b[0], b[1]);
            let (qs, qh, scales) = (&b[2..66], &b[66..74], &b[74..82]);
            for g in 0..16 {
                u.sc[g] = 2 * ((scales[g / 2] >> (4 * (g % 2))) & 0x0F) as i16 + 1;
            }
            for k in 0..32 {
                let idx = qs[k] as usize | (((qh[k / 4] >> (2 * (k % 4))) & 3) as usize) << 8;
                put(&mut u.q, 8 * k, negate(GRID_IQ2S[idx], SIGN_MASK[qs[32 + k] as usize]));
            }
        }
        G::IQ3_XXS => {
            u.d = half(b[0], b[1]);
            let (qs, ss) = (&b[2..66], &b[66..98]);
            for ib in 0..8 {
                let aux = u32_at(ss, ib);
                let s = (2 * (aux >> 28) + 1) as i16;
                u.sc[2 * ib] = s;
                u.sc[2 * ib + 1] = s;
                for k in 0..4 {
                    let g0 = GRID_IQ3XXS[qs[8 * ib + 2 * k] as usize] as u64;
                    let g1 = GRID_IQ3XXS[qs[8 * ib + 2 * k + 1] as usize] as u64;
                    let m = KSIGN_MASK[((aux >> (7 * k)) & 127) as usize];
                    put(&mut u.q, 32 * ib + 8 * k, negate(g0 | g1 << 32, m));
                }
            }
        }
        G::IQ3_S => {
            u.d = half(b[0], b[1]);
            let (qs, qh, signs, scales) = (&b[2..66], &b[66..74], &b[74..106], &b[106..110]);
            for g in 0..16 {
                u.sc[g] = 2 * ((scales[g / 4] >> (4 * ((g / 2) % 2))) & 0x0F) as i16 + 1;
            }
            for k in 0..32 {
                let h = qh[k / 4] >> (2 * (k % 4));
                let g0 = GRID_IQ3S[qs[2 * k] as usize | ((h & 1) as usize) << 8] as u64;
                let g1 = GRID_IQ3S[qs[2 * k + 1] as usize | (((h >> 1) & 1) as usize) << 8] as u64;
                put(&mut u.q, 8 * k, negate(g0 | g1 << 32, SIGN_MASK[signs[k] as usize]));
            }
        }
        G::IQ1_S => {
            u.d = half(b[0], b[1]);
            let (qs, qh) = (&b[2..34], &b[34..50]);
            for ib in 0..8 {
                let w = u16_at(qh, ib);
                let s = 2 * ((w >> 12) & 7) as i16 + 1;
                u.sc[2 * ib] = s;
                u.sc[2 * ib + 1] = s;
                let delta = if w & 0x8000 != 0 { u64::MAX } else { LOW };
                for k in 0..4 {
                    let idx = qs[4 * ib + k] as usize | (((w >> (3 * k)) & 7) as usize) << 8;
                    put(&mut u.q, 32 * ib + 8 * k, add_bytes(GRID_IQ1S_X8[idx], delta));
                }
            }
        }
        G::IQ1_M => {
            let (qs, qh, sc) = (&b[..32], &b[32..48], &b[48..56]);
            let w = |i| u16_at(sc, i);
            u.d = iq1m_d(b);
            for g in 0..16 {
                u.sc[g] = 2 * ((w(g / 4) >> (3 * (g % 4))) & 7) as i16 + 1;
            }
            for k in 0..32 {
                let nib = qh[k / 2] >> (4 * (k % 2));
                let idx = qs[k] as usize | ((nib & 7) as usize) << 8;
                let delta = if nib & 8 != 0 { u64::MAX } else { LOW };
                put(&mut u.q, 8 * k, add_bytes(GRID_IQ1S_X8[idx], delta));
            }
        }
        G::IQ4_NL => {
            u.d = half(b[0], b[1]);
            for (j, &v) in b[2..18].iter().enumerate() {
                u.q[j] = KVALUES_IQ4[(v & 0x0F) as usize];
                u.q[j + 16] = KVALUES_IQ4[(v >> 4) as usize];
            }
        }
        G::IQ4_XS => {
            u.d = half(b[0], b[1]);
            for ib in 0..8 {
                let s = super::iq4_xs_scale(b, ib) as i16;
                u.sc[2 * ib] = s;
                u.sc[2 * ib + 1] = s;
                for (j, &v) in b[8 + 16 * ib..24 + 16 * ib].iter().enumerate() {
                    u.q[32 * ib + j] = KVALUES_IQ4[(v & 0x0F) as usize];
                    u.q[32 * ib + j + 16] = KVALUES_IQ4[(v >> 4) as usize];
                }
            }
        }
        G::TQ2_0 => {
            u.d = half(b[64], b[65]);
            for c in 0..2 {
                for w8 in 0..4 {
                    let v = u64::from_le_bytes(b[32 * c + 8 * w8..32 * c + 8 * w8 + 8].try_into().unwrap());
                    for s in 0..4 {
                        // ((v >> 2s) & 3) - 1 per byte; the bytes are < 4, so
                        // setting their top bit first keeps borrows inside.
                        let x = (((v >> (2 * s)) & (3 * LOW)) | HIGH).wrapping_sub(LOW) ^ HIGH;
                        put(&mut u.q, 128 * c + 32 * s + 8 * w8, x);
                    }
                }
            }
        }
        G::TQ1_0 => {
            u.d = half(b[52], b[53]);
            let mut e = 0;
            for (lo, hi, n) in [(0usize, 32usize, 5u32), (32, 48, 5), (48, 52, 4)] {
                let mut p = 1u8;
                for _ in 0..n {
                    for &v in &b[lo..hi] {
                        u.q[e] = ((((v.wrapping_mul(p)) as u16) * 3) >> 8) as i8 - 1;
                        e += 1;
                    }
                    p = p.wrapping_mul(3);
                }
            }
        }
        other => unreachable!("{other} is not an i-quant"),
    }
}

/// One weight row against `N` activation rows (shapes checked by the
/// callers; `a[j]` of type `vec_dot_type(wty)`).
#[inline]
pub(crate) fn vec_dot_group<const N: usize>(v: Verified, wty: GgmlType, row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
    match v.level() {
        SimdLevel::Scalar => dot_loop(wty, row, a, isum_scalar),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Verified` at `Avx2Fma` means the CPU has AVX2.
        SimdLevel::Avx2Fma => unsafe { x86::dot_avx2(wty, row, a) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Verified` at these levels means AVX-512 F/BW/VL/VNNI.
        SimdLevel::Avx512Vnni | SimdLevel::Amx => unsafe { x86::dot_avx512(wty, row, a) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: a `Verified` at `Neon` means the CPU has NEON.
        SimdLevel::Neon => unsafe { arm::dot_neon(wty, row, a) },
        #[allow(unreachable_patterns)]
        _ => dot_loop(wty, row, a, isum_scalar),
    }
}

/// [`vec_dot_group`] for one activation row.
#[inline]
pub(crate) fn vec_dot(v: Verified, wty: GgmlType, row: &[u8], a: ActRow<'_>) -> f32 {
    vec_dot_group::<1>(v, wty, row, &[a])[0]
}

/// The shared loop: unpack each block once, `isum(block, y, groups of 16)`
/// per activation row, the float step of the module docs.
#[inline(always)]
fn dot_loop<const N: usize>(
    wty: GgmlType,
    row: &[u8],
    a: &[ActRow<'_>; N],
    isum: impl Fn(&Unpacked, &[i8], usize) -> i32,
) -> [f32; N] {
    let (bs, ts) = (wty.block_size(), wty.type_size());
    let groups = bs / 16;
    let mut acc = [[0f32; 8]; N];
    let mut u = Unpacked::default();
    for (b, bytes) in row.chunks_exact(ts).enumerate() {
        unpack(wty, bytes, &mut u);
        for (acc, aj) in acc.iter_mut().zip(a) {
            let s = isum(&u, &aj.qs[bs * b..bs * (b + 1)], groups);
            acc[b % 8] += term(u.d, aj.d[b], s);
        }
    }
    let f = post_scale(wty);
    acc.map(|l| reduce8(l) * f)
}

fn isum_scalar(u: &Unpacked, y: &[i8], groups: usize) -> i32 {
    let mut s = 0i32;
    for g in 0..groups {
        let d: i32 =
            u.q[16 * g..16 * g + 16].iter().zip(&y[16 * g..16 * g + 16]).map(|(&q, &y)| q as i32 * y as i32).sum();
        s += u.sc[g] as i32 * d;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86 entry points. The grid types have kernels of their own in
    //! [`crate::iq::avx2`] and [`crate::iq::avx512`]; here IQ4_XS (at the
    //! AVX2 level) and TQ2_0 build each 32-weight chunk in registers (IQ4's
    //! table by `vpshufb`, TQ2_0's 2-bit fields by shifts) as `(u, v, sc)`:
    //! unsigned magnitudes `u`, a vector `v` whose sign is the weight's sign
    //! (`vpsignb` moves it onto the activations), and the two 16-weight
    //! scales as i16 lanes, so the integer dot is
    //! `vpmaddwd(vpmaddubsw(u, sign(y, v)), sc)`; TQ1_0 (base-3 digits)
    //! goes through the portable unpacking into a buffer.
    use super::*;
    use core::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2; shapes as [`vec_dot_group`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_avx2<const N: usize>(wty: GgmlType, row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        use GgmlType as G;
        // SAFETY (every arm): the caller's contract, passed on.
        unsafe {
            if let Some(r) = crate::iq::avx2::dot(wty, row, a) {
                return r;
            }
            match wty {
                G::IQ4_XS => dot_chunks::<IQ4XS, N>(wty, row, a),
                G::TQ2_0 => dot_chunks::<TQ20, N>(wty, row, a),
                // SAFETY: this function's features are the ones `isum` needs.
                _ => dot_loop(wty, row, a, |u, y, g| isum(u, y, g)),
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL/VNNI (and AVX2); shapes as above.
    /// The AVX2 kernels: VNNI would fuse one add per chunk.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn dot_avx512<const N: usize>(wty: GgmlType, row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        // SAFETY: the caller's contract is `avx512::dot`'s; AVX-512 implies
        // the AVX2 set.
        unsafe { crate::iq::avx512::dot(wty, row, a).unwrap_or_else(|| dot_avx2(wty, row, a)) }
    }

    const IQ4XS: u8 = 8;
    const TQ20: u8 = 9;

    /// Chunk `$t` (weights 32t..32t+32) of block `$b` of the type tagged
    /// `$T`, as `(u, v, sc)`. A macro, so that it is compiled inside the
    /// caller's loop with its target features (an `#[inline]` function of
    /// this size was left as a call). The caller guarantees that `$b` is one
    /// whole block of that type and `$t` is below its chunk count.
    macro_rules! chunk {
        ($T:ident, $b:expr, $t:expr) => {{
            let (b, t): (&[u8], usize) = ($b, $t);
            match $T {
                IQ4XS => {
                    let s = super::iq4_xs_scale(b, t) as i16;
                    // SAFETY: bytes 8 + 16t .. 24 + 16t of the block.
                    let (u, v) = plain(unsafe { iq4_chunk(&b[8 + 16 * t..24 + 16 * t]) });
                    (u, v, _mm256_set1_epi16(s))
                }
                TQ20 => {
                    let (c, sh) = (t / 4, t % 4);
                    // SAFETY: bytes 32c .. 32c + 32 of the 64 quant bytes.
                    let x = unsafe { _mm256_loadu_si256(b[32 * c..32 * c + 32].as_ptr() as *const __m256i) };
                    let f = _mm256_srl_epi16(x, _mm_cvtsi32_si128(2 * sh as i32));
                    let q = _mm256_sub_epi8(_mm256_and_si256(f, _mm256_set1_epi8(3)), _mm256_set1_epi8(1));
                    let (u, v) = plain(q);
                    (u, v, _mm256_set1_epi16(1))
                }
                _ => unreachable!("type tag {}", $T),
            }
        }};
    }

    /// The shared loop over blocks and chunks for type tag `T`: exact i32
    /// sums per block (eight i32 lanes, summed at the block's end), then
    /// the float step of the module docs.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_chunks<const T: u8, const N: usize>(wty: GgmlType, row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        let (bs, ts) = (wty.block_size(), wty.type_size());
        let chunks = bs / 32;
        let mut acc = [[0f32; 8]; N];
        for (b, blk) in row.chunks_exact(ts).enumerate() {
            let mut iacc = [_mm256_setzero_si256(); N];
            for t in 0..chunks {
                // `blk` is one whole block of this type, `t` < its chunks.
                let (u, v, sc) = chunk!(T, blk, t);
                for (ia, aj) in iacc.iter_mut().zip(a) {
                    let ys = &aj.qs[bs * b + 32 * t..bs * b + 32 * t + 32];
                    // SAFETY: `ys` holds 32 bytes.
                    let y = unsafe { _mm256_loadu_si256(ys.as_ptr() as *const __m256i) };
                    let p = _mm256_maddubs_epi16(u, _mm256_sign_epi8(y, v));
                    *ia = _mm256_add_epi32(*ia, _mm256_madd_epi16(p, sc));
                }
            }
            let d = block_d::<T>(blk);
            for ((l, ia), aj) in acc.iter_mut().zip(iacc).zip(a) {
                l[b % 8] += term(d, aj.d[b], hsum(ia));
            }
        }
        let f = post_scale(wty);
        acc.map(|l| reduce8(l) * f)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// The block's `d`, widened by F16C (`F16Le::to_f32` goes through the
    /// `half` crate's run-time dispatch, a call that cost 4 ns of IQ1_S's
    /// 22 a block). Exact either way.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn block_d<const T: u8>(b: &[u8]) -> f32 {
        let bits = match T {
            TQ20 => [b[64], b[65]],
            _ => [b[0], b[1]],
        };
        // SAFETY: this function's features include F16C.
        unsafe { crate::avx2_q8::h2f(F16Le(bits)) }
    }

    /// Scales of a chunk's two 16-weight halves as i16 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn sc2(lo: i16, hi: i16) -> __m256i {
        _mm256_setr_m128i(_mm_set1_epi16(lo), _mm_set1_epi16(hi))
    }

    /// Signed weights `q` (|q| <= 127) as `(u, v)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn plain(q: __m256i) -> (__m256i, __m256i) {
        (_mm256_sign_epi8(q, q), q)
    }

    /// IQ4's 16 values for each nibble of 16 bytes: low nibbles then high.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn iq4_chunk(qs: &[u8]) -> __m256i {
        // SAFETY: `qs` holds 16 bytes (callers slice it so).
        let x = unsafe { _mm_loadu_si128(qs[..16].as_ptr() as *const __m128i) };
        let m = _mm_set1_epi8(0x0F);
        let nib = _mm256_setr_m128i(_mm_and_si128(x, m), _mm_and_si128(_mm_srli_epi16::<4>(x), m));
        // SAFETY: the table holds 16 bytes.
        let kv = unsafe { _mm_loadu_si128(KVALUES_IQ4.as_ptr() as *const __m128i) };
        _mm256_shuffle_epi8(_mm256_setr_m128i(kv, kv), nib)
    }

    /// `Σ_g sc[g] Σ q·y` over `groups` groups of 16 of an unpacked block.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn isum(u: &Unpacked, y: &[i8], groups: usize) -> i32 {
        debug_assert!(y.len() >= 16 * groups && groups.is_multiple_of(2));
        let mut acc = _mm256_setzero_si256();
        for t in 0..groups / 2 {
            // SAFETY: `u.q` and `y` hold at least 32·(t+1) bytes (asserted above).
            let (w, yv) = unsafe {
                (
                    _mm256_loadu_si256(u.q.as_ptr().add(32 * t) as *const __m256i),
                    _mm256_loadu_si256(y.as_ptr().add(32 * t) as *const __m256i),
                )
            };
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(yv, w));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc2(u.sc[2 * t], u.sc[2 * t + 1])));
        }
        hsum(acc)
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::*;
    use core::arch::aarch64::*;

    /// # Safety
    /// The CPU must have NEON; shapes as [`vec_dot_group`].
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dot_neon<const N: usize>(wty: GgmlType, row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
        dot_loop(wty, row, a, |u, y, g| isum(u, y, g))
    }

    /// Per group of 16: `smull` halves, `sadalp` into four i32 lanes, the
    /// lanes summed and times the group's scale.
    #[target_feature(enable = "neon")]
    #[inline]
    fn isum(u: &Unpacked, y: &[i8], groups: usize) -> i32 {
        let mut s = 0i32;
        for g in 0..groups {
            let (q, yv) = (&u.q[16 * g..16 * g + 16], &y[16 * g..16 * g + 16]);
            // SAFETY: both slices hold 16 bytes.
            let (q, yv) = unsafe { (vld1q_s8(q.as_ptr()), vld1q_s8(yv.as_ptr())) };
            let lo = vmull_s8(vget_low_s8(q), vget_low_s8(yv));
            let hi = vmull_s8(vget_high_s8(q), vget_high_s8(yv));
            let acc = vpadalq_s16(vpadalq_s16(vdupq_n_s32(0), lo), hi);
            s += u.sc[g] as i32 * vaddvq_s32(acc);
        }
        s
    }
}
