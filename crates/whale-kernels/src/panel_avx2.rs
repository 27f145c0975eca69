//! AVX2 panel products of block-quantized weights with many activation
//! rows (prefill), for CPUs without AVX-512 VNNI (AMD Zen 2/3, Intel before
//! Ice Lake), x86-64 only.
//!
//! `crate::panel`'s layout on 256-bit registers: eight weight rows (a
//! panel) are unpacked once for all the activation rows, into vectors that
//! hold four consecutive quants of each of the eight rows, and four bytes
//! of an activation row, broadcast, meet all eight rows at once, lane `r`
//! of the sums being weight row `r`, so nothing is reduced across lanes.
//!
//! Without VNNI a 4-byte multiply-add is `vpmaddubsw` (pairs of u8·i8
//! summed to i16) and `vpmaddwd` (pairs of i16 to i32). The second one is
//! paid once per several steps: the i16 pair sums of up to `i16_run(u_max)`
//! steps are added as i16 first (they cannot overflow: a pair is at most
//! 2·u_max·128, 3840 for 4-bit quants, 7936 for 5-bit, 16128 for Q6_K's
//! `q + 32`), and the `vpmaddwd` that widens them multiplies by the
//! K-quant group scale at the same time. Q8_0 and IQ4_NL (8-bit signed
//! values, up to 255 once unsigned) would overflow the i16 pairs; they are
//! multiplied as magnitudes against the activations with the weights'
//! signs (`vpsignb`) and widened every step instead; so is IQ4_XS, the
//! one i-quant of 256-element blocks these panels take (its table values
//! signed, a scale per 32: `v2l expert gate iq4_xs` of
//! `examples/prefill_shapes 512 1`, 36.8 GMAC/s on the row kernels, 60.8
//! here; 33.7 against 44.7 at 12 rows).
//!
//! The integer sums are the reference's exact integers, and the float step
//! is `crate::panel`'s (the reference's operations in its order, block `b`
//! in lane `b % 8`), so every output is bit-identical to `vec_dot_q_ref`
//! (`tests/simd_env_avx2.rs`).

use crate::panel::Unpacker;
use crate::q8::ActRow;
use crate::types::{GgmlType, QK32, QK_K};
use core::arch::x86_64::*;

/// Weight rows per panel: one 8-lane vector of i32 sums.
const ROWS: usize = 8;

/// Activation rows a kernel call (each weight vector loaded once for them).
const J_MAIN: usize = 4;

/// Activation rows from which the panels beat the row kernels.
///
/// In the file's layout: 12 for every type but Q8_0 and IQ4_NL, 24 for
/// those (their products are signed and widened every step,
/// [`group_dot_signed`]; IQ4_NL at 4864×896, GMAC/s, one core of the Xeon
/// of stop 46, row kernels against panels: 33.4 / 31.3 at 12 rows, 34.9 /
/// 32.8 at 16, 33.0 / 34.5 at 24, 31.5 / 35.5 at 512; Q8_0 at 128×896
/// 25.6 / 40 at 512). Measured at V2-Lite's shapes with `WHALE_SIMD=avx2`
/// on Zen 4 (`examples/prefill_shapes M 1 v2l`, GMAC/s, row kernels
/// against panels): at 8 rows even (Q4_K expert gate 55.4 / 55.5, Q5_0
/// expert down 36.0 / 37.7), at 12 the panels ahead (56.2 / 65.2, 34.1 /
/// 42.8), at 16 more so (48.3 / 70.2, 35.9 / 46.5). The 32-element types
/// cross over sooner than at the VNNI level (20 rows), where the row
/// kernels' block sums need no horizontal adds.
///
/// In the interleaved layout ([`crate::x8`]) the row kernels are faster
/// and the crossings move, each way: on the Xeon of stop 48, one core,
/// 2048 columns from L2 (`x8_bw 1 2 2048 TYPE M` at `WHALE_SIMD=avx2`,
/// `WHALE_PREFETCH=0`, weight GB/s, row kernels / panels): Q6_K 4.0 / 5.0–5.3
/// at 8 rows, 2.0 / 3.0–3.1 at 16 (level at 4 and 6); Q2_K 2.1 / 2.2 at 8,
/// 1.0 / 1.3 at 16; Q5_K 5.1–5.3 / 4.5–4.6 at 8, level at 12, 2.4–2.5 /
/// 2.6 at 16; IQ4_XS level at 12 and 16, 1.1 / 1.2–1.3 at 24; Q4_K 4.9–5.1
/// / 3.9 at 8, 3.2–3.4 / 2.9–3.1 at 12, 2.6–2.7 / 2.3–2.4 at 16, level at
/// 24; Q4_0 and Q4_1 ahead in rows through 64 (Q4_0 3.0 / 2.2 at 12, 1.2 /
/// 1.0 at 32), Q5_0 through 16 and level at 24; Q8_0 and IQ4_NL level
/// at 24 and 32. Q4_0's and Q4_1's 32, not more: those figures are from
/// L2, where the row kernels read every activation row again for each
/// eight weight rows; past 32 rows of a long row (32 × 7168 bytes) the
/// activations outgrow a Zen 2/3 core's 512 KiB L2, and the panels'
/// tiles keep them there.
pub(crate) fn min_act_rows(wty: GgmlType, layout: crate::x8::Layout) -> usize {
    use GgmlType as G;
    if layout == crate::x8::Layout::X8 && crate::x8::supports(wty) {
        return match wty {
            G::Q6_K | G::Q2_K => 8,
            G::Q5_K | G::IQ4_XS => 16,
            G::Q4_K | G::Q5_0 | G::Q8_0 | G::IQ4_NL => 24,
            G::Q4_0 | G::Q4_1 => 32,
            // A type the layout takes later: the file layout's value until
            // measured.
            _ => 12,
        };
    }
    if matches!(wty, G::Q8_0 | G::IQ4_NL) {
        24
    } else {
        12
    }
}

/// The weight types the AVX2 panel takes: `crate::panel`'s but the
/// i-quants of 256-element blocks other than IQ4_XS.
pub(crate) fn supports(wty: GgmlType) -> bool {
    (wty == GgmlType::IQ4_XS || !crate::panel::is_iq_k(wty)) && crate::panel::supports(wty)
}

/// Steps of four bytes whose i16 pair sums can be added before widening,
/// for unsigned quants up to `u_max` against activations down to -128:
/// the most whose sum of pairs, each at most 2·u_max·128 in magnitude,
/// stays within i16 (8 for 4-bit quants, 4 for 5-bit, 2 for Q6_K's q + 32).
const fn i16_run(u_max: i32) -> usize {
    (i16::MAX as i32 / (2 * u_max * 128)) as usize
}

/// This level's panels: `crate::panel`'s, eight rows of 32-byte vectors.
type Panel = crate::panel::Panel<ROWS, 32>;

/// This level's `Unpacker`; made only in [`matmul`], whose caller vouches
/// for AVX2.
struct Avx2(());

impl Unpacker<ROWS, 32> for Avx2 {
    #[inline(always)]
    fn legacy(&self, wty: GgmlType, bytes: &[u8], u: &mut [u8; QK32]) -> (f32, f32) {
        // SAFETY: an `Avx2` exists only where AVX2 was verified; `bytes` is one block.
        unsafe { crate::avx2_q8::unpack_legacy(wty, bytes, u) }
    }

    #[inline(always)]
    fn k(&self, wty: GgmlType, bytes: &[u8], u: &mut [u8; QK_K]) -> crate::avx2_q8::KParts {
        // SAFETY: as `legacy`.
        unsafe {
            if wty == GgmlType::IQ4_XS {
                crate::iq::avx2::unpack_iq4_xs_signed(bytes, u)
            } else {
                crate::avx2_q8::unpack_k(wty, bytes, u)
            }
        }
    }

    fn legacy_off(&self, wty: GgmlType) -> i32 {
        match wty {
            // `avx2_q8::unpack_legacy` leaves them signed at this level.
            GgmlType::Q8_0 | GgmlType::IQ4_NL => crate::avx2_q8::Q8_0_OFF,
            _ => crate::panel::legacy_off(wty),
        }
    }

    fn store(&self, q: &mut [[u8; 32]], u: &[[u8; QK_K]; ROWS]) {
        // SAFETY: as `legacy`.
        unsafe { store_transposed(q, u) }
    }

    fn unpacks_x8(&self, wty: GgmlType) -> bool {
        matches!(wty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL)
    }

    fn unpacks_k_x8(&self, wty: GgmlType) -> bool {
        crate::rows8::avx2::unpacks_k_x8(wty)
    }

    fn k_x8(
        &self,
        wty: GgmlType,
        at: &[u8],
        g: usize,
        q: &mut [[u8; 32]],
        sc: &mut [[i32; ROWS]],
        mv: &mut [[i32; ROWS]],
        d: &mut [f32; ROWS],
        dmin: &mut [f32; ROWS],
    ) -> i32 {
        // A panel is one group of eight rows here (as in `legacy_x8`).
        debug_assert_eq!(g, 0);
        // SAFETY: an `Avx2` exists only where AVX2 was verified; `at` is
        // one group block (`fill`), and `fill` passes one block's vectors,
        // scale groups and multipliers.
        unsafe { crate::rows8::avx2::k_x8_unpacked(wty, at, 0, 0, q, sc, mv, d, dmin) }
    }

    fn legacy_x8(
        &self,
        wty: GgmlType,
        at: &[u8],
        g: usize,
        q: &mut [[u8; 32]],
        d: &mut [f32; ROWS],
        m: &mut [f32; ROWS],
    ) {
        // A panel is one group of eight rows here, and `fill` passes only
        // the groups a panel has.
        debug_assert_eq!(g, 0);
        // SAFETY: an `Avx2` exists only where AVX2 was verified; `at` is
        // one group block (`fill`).
        unsafe { unpack_x8(wty, at, q, d, m) }
    }
}

/// `Avx2::legacy_x8` of a group block `at`: its eight vectors are the
/// panel's, as they come.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_x8(wty: GgmlType, at: &[u8], q: &mut [[u8; 32]], d: &mut [f32; ROWS], m: &mut [f32; ROWS]) {
    // SAFETY: this function's features (the caller's level); each store is
    // one 32-byte vector, or eight f32.
    unsafe {
        let (u, dv, mv) = crate::rows8::avx2::legacy_x8_unpacked(wty, at);
        for (v, uk) in q.iter_mut().zip(u) {
            _mm256_storeu_si256(v.as_mut_ptr().cast(), uk);
        }
        _mm256_storeu_ps(d.as_mut_ptr(), dv);
        _mm256_storeu_ps(m.as_mut_ptr(), mv);
    }
}

/// The 256 unpacked elements `u` of each row into the 64 vectors `q`: each
/// 32 bytes of the eight rows, transposed as 8×8 words.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_transposed(q: &mut [[u8; 32]], u: &[[u8; QK_K]; ROWS]) {
    for part in 0..8 {
        // SAFETY: 32 bytes of each row's 256.
        let v: [__m256i; ROWS] =
            core::array::from_fn(|r| unsafe { _mm256_loadu_si256(u[r].as_ptr().add(32 * part).cast()) });
        // SAFETY: (caller) AVX2.
        for (k, t) in unsafe { crate::avx2_q8::transpose_8x8_i32(v) }.into_iter().enumerate() {
            // SAFETY: one 32-byte vector of the panel.
            unsafe { _mm256_storeu_si256(q[8 * part + k].as_mut_ptr().cast(), t) };
        }
    }
}

/// `out[i][r] = dot(weight row r of w, acts[i])` for every activation row
/// and every weight row of `w` (`rb` bytes each), bit-identical to
/// `vec_dot_q_ref`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `wty` must be one `supports` takes
/// and every `acts[i]` a row of `vec_dot_type(wty)` of the weight rows' length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn matmul(
    wty: GgmlType,
    layout: crate::x8::Layout,
    w: &[u8],
    rb: usize,
    acts: &[ActRow<'_>],
    out: &mut [&mut [f32]],
) {
    debug_assert!(supports(wty) && out.len() == acts.len());
    let nb = rb / wty.type_size();
    // SAFETY (the closures): (caller) AVX2, and rows of `nb` blocks of the
    // activation type.
    crate::panel::drive::<ROWS, 32, J_MAIN>(
        wty,
        layout,
        w,
        rb,
        acts,
        out,
        &Avx2(()),
        |p, a| unsafe { dots::<J_MAIN>(wty, p, a, nb) },
        |p, a| {
            // The rest one at a time.
            let mut o = [[0f32; ROWS]; J_MAIN];
            for (o, &r) in o.iter_mut().zip(a) {
                *o = unsafe { dots::<1>(wty, p, &[r], nb) }[0];
            }
            o
        },
    );
}

/// The 8 outputs of each of `J` activation rows against one panel.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots<const J: usize>(wty: GgmlType, p: &Panel, a: &[ActRow<'_>; J], nb: usize) -> [[f32; ROWS]; J] {
    use GgmlType as G;
    // SAFETY: (caller) as `matmul`.
    unsafe {
        match wty {
            // Steps per scale group (8 of 32 elements, 4 of 16), and
            // steps summed as i16 for the type's largest unsigned quant.
            G::Q4_K => k_dots::<J, 8, { i16_run(15) }>(p, a, nb),
            G::Q5_K => k_dots::<J, 8, { i16_run(31) }>(p, a, nb),
            G::Q6_K => k_dots::<J, 4, { i16_run(63) }>(p, a, nb),
            // Q2_K's and Q3_K's whole groups of 4 steps fit i16 (their
            // `i16_run` is 42 and 18).
            G::Q2_K | G::Q3_K => k_dots::<J, 4, 4>(p, a, nb),
            G::Q4_0 | G::Q4_1 => legacy_dots::<J, { i16_run(15) }>(wty, p, a, nb),
            G::Q8_0 | G::IQ4_NL => legacy_dots::<J, 0>(wty, p, a, nb),
            // Signed values, one scale per 32 (8 steps), no mins; IQ4_XS's
            // power of two is 1.
            G::IQ4_XS => k_dots::<J, 8, 0>(p, a, nb),
            _ => legacy_dots::<J, { i16_run(31) }>(wty, p, a, nb),
        }
    }
}

/// [`group_dot`] for 8-bit signed weights `v` (Q8_0, IQ4_NL's table
/// values: `unpack_legacy` at this level leaves them signed, its
/// `Q8_0_OFF` being 0), whose pairs of products as unsigned `v + 128`
/// would overflow i16: the magnitudes (at most 128) times the activation
/// bytes with the weights' signs (`vpsignb`: at most 127), a pair at most
/// 2·128·127, widened every step: activation bytes are never -128
/// (`quantize_acts` rounds to ±127; `vpsignb` could not negate -128). The
/// sums are `Σ v·y`. [`group_dot`] with `RUN` 0 comes here.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn group_dot_signed<const J: usize, const STEPS: usize>(
    p: &Panel,
    first: usize,
    ys: &[*const i8; J],
    mul: __m256i,
    acc: &mut [__m256i; J],
) {
    for s in 0..STEPS {
        // SAFETY: 32 bytes of the panel.
        let v = unsafe { _mm256_loadu_si256(p.q[first + s].as_ptr().cast()) };
        let mag = _mm256_abs_epi8(v);
        for j in 0..J {
            // SAFETY: (caller) four bytes of row j's block at step s.
            let y = unsafe { core::ptr::read_unaligned(ys[j].add(4 * s).cast::<i32>()) };
            let pairs = _mm256_maddubs_epi16(mag, _mm256_sign_epi8(_mm256_set1_epi32(y), v));
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(pairs, mul));
        }
    }
}

/// Σ over `STEPS` steps from `first` of the panel's vector times the
/// broadcast activation bytes, per activation row: the i16 pair sums of
/// `RUN` steps at a time (`i16_run`) added as i16, then widened by
/// `vpmaddwd` with `mul` (the group scales, or ones) and added as i32 into
/// `acc`. `RUN` 0: signed 8-bit weights, [`group_dot_signed`]. Constant
/// counts, so that the loops unroll and the sums stay in registers.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn group_dot<const J: usize, const STEPS: usize, const RUN: usize>(
    p: &Panel,
    first: usize,
    ys: &[*const i8; J],
    mul: __m256i,
    acc: &mut [__m256i; J],
) {
    if RUN == 0 {
        // SAFETY: the caller's contract, the same.
        return unsafe { group_dot_signed::<J, STEPS>(p, first, ys, mul, acc) };
    }
    for t in (0..STEPS).step_by(RUN) {
        let mut s16 = [_mm256_setzero_si256(); J];
        for s in t..t + RUN {
            // SAFETY: 32 bytes of the panel.
            let wv = unsafe { _mm256_loadu_si256(p.q[first + s].as_ptr().cast()) };
            for j in 0..J {
                // SAFETY: (caller) four bytes of row j's block at step s.
                let y = unsafe { core::ptr::read_unaligned(ys[j].add(4 * s).cast::<i32>()) };
                s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(wv, _mm256_set1_epi32(y)));
            }
        }
        for j in 0..J {
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(s16[j], mul));
        }
    }
}

/// The 8 outputs of each of `J` activation rows against one panel of
/// K-quants: per block, `Σ_g sc_g · dot_g` and `Σ mv · bsum` exactly, then
/// `crate::panel`'s float step. `RUN` 0: signed values without mins or
/// offset (IQ4_XS, [`group_dot_signed`]), the term `(d·da)·isum`.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_dots<const J: usize, const STEPS: usize, const RUN: usize>(
    p: &Panel,
    a: &[ActRow<'_>; J],
    nb: usize,
) -> [[f32; ROWS]; J] {
    debug_assert_eq!(4 * STEPS, p.group_len);
    let gl = 4 * STEPS;
    let groups = QK_K / gl;
    let zero = _mm256_setzero_ps();
    let zi = _mm256_setzero_si256();
    let with_min = p.off == 0;
    let offv = _mm256_set1_epi32(p.off);
    let lo16 = _mm256_set1_epi32(0xFFFF);
    let mut lanes = [[zero; J]; 8];
    for b in 0..nb {
        let mut is = [zi; J];
        for g in 0..groups {
            let e = gl * g;
            let ys: [*const i8; J] = core::array::from_fn(|j| a[j].qs[QK_K * b + e..QK_K * b + e + gl].as_ptr());
            // SAFETY: 8 i32. Each scale into both i16 halves of its lane,
            // the `vpmaddwd` multiplier.
            let scv = unsafe { _mm256_loadu_si256(p.sc[groups * b + g].as_ptr().cast()) };
            let scv = _mm256_or_si256(_mm256_and_si256(scv, lo16), _mm256_slli_epi32::<16>(scv));
            // SAFETY: `ys[j]` points at `gl` readable bytes, the group's steps.
            unsafe { group_dot::<J, STEPS, RUN>(p, 64 * b + e / 4, &ys, scv, &mut is) };
        }
        if RUN == 0 {
            // SAFETY: 8 floats.
            let dv = unsafe { _mm256_loadu_ps(p.d[b].as_ptr()) };
            for j in 0..J {
                let t = _mm256_mul_ps(_mm256_mul_ps(dv, _mm256_set1_ps(a[j].d[b])), _mm256_cvtepi32_ps(is[j]));
                lanes[b % 8][j] = _mm256_add_ps(lanes[b % 8][j], t);
            }
            continue;
        }
        let mut ms = [zi; J];
        for q in 0..8 {
            // SAFETY: 8 i32.
            let mvv = unsafe { _mm256_loadu_si256(p.mv[8 * b + q].as_ptr().cast()) };
            for j in 0..J {
                let bs = &a[j].bsums[16 * b + 2 * q..16 * b + 2 * q + 2];
                let pair = (bs[0] as u16 as u32 | (bs[1] as u16 as u32) << 16) as i32;
                ms[j] = _mm256_add_epi32(ms[j], _mm256_madd_epi16(mvv, _mm256_set1_epi32(pair)));
            }
        }
        // SAFETY: 8 floats each.
        let (dv, dminv) = unsafe { (_mm256_loadu_ps(p.d[b].as_ptr()), _mm256_loadu_ps(p.dmin[b].as_ptr())) };
        for j in 0..J {
            let da = _mm256_set1_ps(a[j].d[b]);
            let t = if with_min {
                _mm256_sub_ps(
                    _mm256_mul_ps(_mm256_mul_ps(dv, da), _mm256_cvtepi32_ps(is[j])),
                    _mm256_mul_ps(_mm256_mul_ps(dminv, da), _mm256_cvtepi32_ps(ms[j])),
                )
            } else {
                let isum = _mm256_sub_epi32(is[j], _mm256_mullo_epi32(ms[j], offv));
                _mm256_mul_ps(_mm256_mul_ps(dv, da), _mm256_cvtepi32_ps(isum))
            };
            lanes[b % 8][j] = _mm256_add_ps(lanes[b % 8][j], t);
        }
    }
    // SAFETY: (caller) AVX2.
    core::array::from_fn(|j| unsafe { crate::avx2::store8(reduce_lanes(&lanes, j)) })
}

/// The 8 outputs of each of `J` activation rows against one panel of a
/// 32-element type: per block the exact `Σ u·y`, `off · Σy` subtracted,
/// `(d · da) · isum` into lane `b % 8`; Q4_1 / Q5_1 add `m · s` into lanes
/// of their own, summed after. `RUN` 0: the weights are signed 8-bit values
/// (Q8_0, IQ4_NL; `p.off` 0), summed by [`group_dot_signed`].
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn legacy_dots<const J: usize, const RUN: usize>(
    wty: GgmlType,
    p: &Panel,
    a: &[ActRow<'_>; J],
    nb: usize,
) -> [[f32; ROWS]; J] {
    let with_min = matches!(wty, GgmlType::Q4_1 | GgmlType::Q5_1);
    let zero = _mm256_setzero_ps();
    let ones = _mm256_set1_epi16(1);
    let mut lanes = [[zero; J]; 8];
    let mut lanes_m = [[zero; J]; 8];
    for b in 0..nb {
        let ys: [*const i8; J] = core::array::from_fn(|j| a[j].qs[QK32 * b..QK32 * (b + 1)].as_ptr());
        let mut dot = [_mm256_setzero_si256(); J];
        // SAFETY: `ys[j]` points at the block's 32 bytes, its 8 steps.
        unsafe { group_dot::<J, 8, RUN>(p, 64 * (b / 8) + 8 * (b % 8), &ys, ones, &mut dot) };
        // SAFETY: 8 floats each.
        let (dv, mv) = unsafe { (_mm256_loadu_ps(p.d[b].as_ptr()), _mm256_loadu_ps(p.dmin[b].as_ptr())) };
        for j in 0..J {
            let isum =
                if p.off != 0 { _mm256_sub_epi32(dot[j], _mm256_set1_epi32(p.off * a[j].sums[b])) } else { dot[j] };
            let t = _mm256_mul_ps(_mm256_mul_ps(dv, _mm256_set1_ps(a[j].d[b])), _mm256_cvtepi32_ps(isum));
            lanes[b % 8][j] = _mm256_add_ps(lanes[b % 8][j], t);
            if with_min {
                lanes_m[b % 8][j] = _mm256_add_ps(lanes_m[b % 8][j], _mm256_mul_ps(mv, _mm256_set1_ps(a[j].s[b])));
            }
        }
    }
    core::array::from_fn(|j| {
        let mut s = reduce_lanes(&lanes, j);
        if with_min {
            s = _mm256_add_ps(s, reduce_lanes(&lanes_m, j));
        }
        // SAFETY: (caller) AVX2.
        unsafe { crate::avx2::store8(s) }
    })
}

/// Lanes `lanes[0..8][j]` added as `qdot::reduce8` adds eight lanes
/// ([`crate::avx2::hsum_across`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn reduce_lanes<const J: usize>(lanes: &[[__m256; J]; 8], j: usize) -> __m256 {
    // SAFETY: AVX2 (this function's features).
    unsafe { crate::avx2::hsum_across(core::array::from_fn(|k| lanes[k][j])) }
}
