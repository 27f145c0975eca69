//! AArch64 NEON FP8 kernel: the 16 lanes of the scalar twin in four
//! registers (see the module docs for the order).

use core::arch::aarch64::*;

use super::{reduce, Src, BLOCK, KEEP32, LANES, S_SCALE, TWO_POW_112};

/// 16 e4m3 bytes at `p` in the kernels' unit, as four vectors of f32
/// (lanes 0-3, 4-7, 8-11, 12-15): f32 bit placement times 2^112.
#[inline(always)]
unsafe fn decode16(p: *const u8) -> [float32x4_t; 4] {
    let b = vld1q_s8(p.cast());
    let (lo, hi) = (vmovl_s8(vget_low_s8(b)), vmovl_high_s8(b));
    let ints = [vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)), vmovl_high_s16(hi)];
    let keep = vdupq_n_u32(KEEP32);
    ints.map(|i| {
        let bits = vandq_u32(vreinterpretq_u32_s32(vshlq_n_s32::<20>(i)), keep);
        vmulq_n_f32(vreinterpretq_f32_u32(bits), TWO_POW_112)
    })
}

/// # Safety
/// The CPU must have NEON; `x.len() == w.len()`, `scales.len() ==
/// ceil(len / 128)` (checked by the caller).
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot(w: Src<'_>, scales: &[f32], x: &[f32]) -> f32 {
    let n = x.len();
    let mut tot = [vdupq_n_f32(0.0); 4];
    for (b, &s) in scales.iter().enumerate() {
        let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = lo;
        while i + LANES <= hi {
            let wv = match w {
                Src::Bytes(w) => decode16(w.as_ptr().add(i)),
                Src::Decoded(w) => std::array::from_fn(|q| vld1q_f32(w.as_ptr().add(i + 4 * q))),
            };
            for q in 0..4 {
                acc[q] = vfmaq_f32(acc[q], wv[q], vld1q_f32(x.as_ptr().add(i + 4 * q)));
            }
            i += LANES;
        }
        if i < hi {
            let mut a = [0f32; LANES];
            for (q, v) in acc.iter().enumerate() {
                vst1q_f32(a.as_mut_ptr().add(4 * q), *v);
            }
            for j in 0..hi - i {
                let wi = match w {
                    Src::Bytes(w) => super::decode_unit(w[i + j]),
                    Src::Decoded(w) => w[i + j],
                };
                a[j] = wi.mul_add(x[i + j], a[j]);
            }
            acc = std::array::from_fn(|q| vld1q_f32(a.as_ptr().add(4 * q)));
        }
        for q in 0..4 {
            tot[q] = vfmaq_n_f32(tot[q], acc[q], s * S_SCALE);
        }
    }
    let mut t = [0f32; LANES];
    for (q, v) in tot.iter().enumerate() {
        vst1q_f32(t.as_mut_ptr().add(4 * q), *v);
    }
    reduce(t)
}
