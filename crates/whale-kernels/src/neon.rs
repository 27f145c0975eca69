//! AArch64 NEON kernels for the quantized products (AArch64 only).
//!
//! The integer block sums of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and Q6_K
//! with 8-bit activations, done with `smull` (8×8 → 16-bit products, exact
//! for any bytes: |−128·−128| fits) and `sadalp` (pairwise widening adds
//! into 32-bit lanes), which every AArch64 CPU has. The integers are exact
//! whatever the order, and the float step is the scalar reference's own
//! (`qdot::scalar::legacy`, `legacy_min`, `k_quant`), so every result is
//! bit-identical to `vec_dot_q_ref`, as at the x86 levels. Other types run
//! the scalar kernels. Tested under qemu-aarch64 (see `scripts/test-aarch64`).

use core::arch::aarch64::*;

use crate::blocks::*;
use crate::dequant::{decode_ints, k_scale_min, q5_quants, IntBlock};
use crate::q8::ActRow;
use crate::qdot::scalar;
use crate::types::GgmlType;

/// `acc +` Σ x[j]·y[j] over 16 signed bytes, in four 32-bit lanes.
#[target_feature(enable = "neon")]
#[inline]
fn dot16(acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
    let hi = vmull_s8(vget_high_s8(x), vget_high_s8(y));
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// 16 bytes of `v` from `at` (bounds-checked).
#[target_feature(enable = "neon")]
#[inline]
fn load16(v: &[i8], at: usize) -> int8x16_t {
    let s = &v[at..at + 16];
    // SAFETY: `s` holds 16 bytes.
    unsafe { vld1q_s8(s.as_ptr()) }
}

/// Σ x[j]·y[j] for 32 weight quants `x` (already signed) and activations `y`.
#[target_feature(enable = "neon")]
#[inline]
fn dot32(x: &[i8; 32], y: &[i8]) -> i32 {
    let acc = dot16(vdupq_n_s32(0), load16(x, 0), load16(y, 0));
    vaddvq_s32(dot16(acc, load16(x, 16), load16(y, 16)))
}

/// The 32 quants of a 4-bit block: low nibbles then high nibbles, minus `off`.
#[target_feature(enable = "neon")]
#[inline]
fn nibbles(qs: &[u8; 16], off: i8) -> [i8; 32] {
    // SAFETY: `qs` holds 16 bytes.
    let v = unsafe { vld1q_u8(qs.as_ptr()) };
    let lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
    let o = vdupq_n_s8(off);
    let mut q = [0i8; 32];
    // SAFETY: `q` holds 32 bytes.
    unsafe {
        vst1q_s8(q.as_mut_ptr(), vsubq_s8(lo, o));
        vst1q_s8(q.as_mut_ptr().add(16), vsubq_s8(hi, o));
    }
    q
}

fn signed(q: [u8; 32], off: u8) -> [i8; 32] {
    q.map(|v| v.wrapping_sub(off) as i8)
}

/// Row dot (see `qdot::vec_dot_q_verified`): NEON integer sums for the
/// common types, the scalar kernels for the rest.
///
/// # Safety
/// The CPU must have NEON (every AArch64 CPU does; the caller holds a
/// `Verified` at the `Neon` level); shapes as `vec_dot_q_verified` checks.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot(wty: GgmlType, row: &[u8], a: ActRow<'_>) -> f32 {
    use bytemuck::cast_slice;
    use GgmlType as G;
    match wty {
        G::Q4_0 => {
            scalar::legacy(cast_slice::<u8, BlockQ4_0>(row), a, |b, y, _| (b.d.to_f32(), dot32(&nibbles(&b.qs, 8), y)))
        }
        G::Q4_1 => scalar::legacy_min(cast_slice::<u8, BlockQ4_1>(row), a, |b, y| {
            (b.d.to_f32(), b.m.to_f32(), dot32(&nibbles(&b.qs, 0), y))
        }),
        G::Q5_0 => scalar::legacy(cast_slice::<u8, BlockQ5_0>(row), a, |b, y, _| {
            (b.d.to_f32(), dot32(&signed(q5_quants(b.qh, &b.qs), 16), y))
        }),
        G::Q5_1 => scalar::legacy_min(cast_slice::<u8, BlockQ5_1>(row), a, |b, y| {
            (b.d.to_f32(), b.m.to_f32(), dot32(&signed(q5_quants(b.qh, &b.qs), 0), y))
        }),
        G::Q8_0 => scalar::legacy(cast_slice::<u8, BlockQ8_0>(row), a, |b, y, _| (b.d.to_f32(), dot32(&b.qs, y))),
        G::Q4_K => scalar::k_quant::<_, true>(cast_slice::<u8, BlockQ4_K>(row), a, |b, y, bsums| {
            let mut isum = 0i32;
            let mut msum = 0i32;
            for c in 0..4 {
                let q = nibbles_32(&b.qs[32 * c..32 * c + 32]);
                for (s, q) in q.iter().enumerate() {
                    let j = 2 * c + s;
                    let (sc, m) = k_scale_min(&b.scales, j);
                    isum += sc as i32 * dot32(q, &y[32 * j..32 * j + 32]);
                    msum += m as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32);
                }
            }
            (b.d.to_f32(), b.dmin.to_f32(), isum, msum)
        }),
        G::Q6_K => scalar::k_quant::<_, false>(cast_slice::<u8, BlockQ6_K>(row), a, |b, y, _| {
            let mut blk = IntBlock::default();
            decode_ints(G::Q6_K, bytemuck::bytes_of(b), &mut blk);
            let mut isum = 0i32;
            for g in 0..16 {
                let d = vaddvq_s32(dot16(vdupq_n_s32(0), load16(&blk.q, 16 * g), load16(y, 16 * g)));
                isum += b.scales[g] as i32 * d;
            }
            (b.d.to_f32(), 0.0, isum, 0)
        }),
        _ => scalar::vec_dot(wty, row, a),
    }
}

/// The low and high nibbles of 32 bytes (Q4_K: sub-blocks 2c and 2c + 1).
#[target_feature(enable = "neon")]
#[inline]
fn nibbles_32(qs: &[u8]) -> [[i8; 32]; 2] {
    let mut out = [[0i8; 32]; 2];
    for h in 0..2 {
        let s: &[u8; 16] = qs[16 * h..16 * h + 16].try_into().expect("16 bytes");
        // SAFETY: `s` holds 16 bytes.
        let v = unsafe { vld1q_u8(s.as_ptr()) };
        let lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
        let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
        // SAFETY: each store writes 16 of 32 bytes.
        unsafe {
            vst1q_s8(out[0].as_mut_ptr().add(16 * h), lo);
            vst1q_s8(out[1].as_mut_ptr().add(16 * h), hi);
        }
    }
    out
}
