//! The two inner loops of attention over a KV cache, for one query head:
//! scores against every cached key, and the score-weighted sum of the
//! cached values. Rows sit `stride` floats apart (heads of a position are
//! side by side in the cache).
//!
//! Each has a scalar reference and an AVX2/FMA version (also used at the
//! AVX-512 level), chosen once per call rather than once per position.
//! Scores are [`crate::dot_f32`] at the level (so they differ between levels
//! by f32 rounding); the weighted sum adds `w[p] * v[p]` in position order
//! with separate multiplies and adds at every level (bit-identical).

use crate::dispatch::{SimdLevel, Verified};
use crate::dot::verify;

/// `out[p] = dot(q, keys[p * stride ..][.. q.len()]) * scale` for every
/// `p < out.len()`. Panics if `keys` is too short.
pub fn attn_scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    attn_scores_verified(Verified::active(), q, keys, stride, scale, out)
}

/// [`attn_scores`] at an explicit level (tests). Panics if the CPU lacks it.
pub fn attn_scores_with(level: SimdLevel, q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    attn_scores_verified(verify(level), q, keys, stride, scale, out)
}

/// `out = Σ_p w[p] · values[p * stride ..][.. out.len()]`. Panics if
/// `values` is too short.
pub fn attn_weighted_sum(w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    attn_weighted_sum_verified(Verified::active(), w, values, stride, out)
}

/// [`attn_weighted_sum`] at an explicit level (tests).
pub fn attn_weighted_sum_with(level: SimdLevel, w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    attn_weighted_sum_verified(verify(level), w, values, stride, out)
}

#[track_caller]
fn check_rows(what: &str, n: usize, dim: usize, stride: usize, len: usize) {
    if n > 0 {
        let need = (n - 1).checked_mul(stride).and_then(|x| x.checked_add(dim));
        assert!(
            need.is_some_and(|need| need <= len),
            "{what}: {n} rows of {dim} at stride {stride} need more than {len} floats"
        );
    }
}

fn attn_scores_verified(v: Verified, q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    check_rows("attn_scores", out.len(), q.len(), stride, keys.len());
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a verified x86 level implies AVX2 and FMA; the rows were
        // checked to lie inside `keys`.
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni => unsafe { crate::avx2::attn_scores(q, keys, stride, scale, out) },
        _ => {
            for (p, o) in out.iter_mut().enumerate() {
                *o = crate::dot::dot_f32_verified(v, q, &keys[p * stride..p * stride + q.len()]) * scale;
            }
        }
    }
}

fn attn_weighted_sum_verified(v: Verified, w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    check_rows("attn_weighted_sum", w.len(), out.len(), stride, values.len());
    match v.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for `values`.
        SimdLevel::Avx2Fma | SimdLevel::Avx512Vnni => unsafe { crate::avx2::attn_weighted_sum(w, values, stride, out) },
        _ => {
            out.fill(0.0);
            for (p, &wp) in w.iter().enumerate() {
                let vr = &values[p * stride..p * stride + out.len()];
                for (o, &x) in out.iter_mut().zip(vr) {
                    *o += wp * x;
                }
            }
        }
    }
}
