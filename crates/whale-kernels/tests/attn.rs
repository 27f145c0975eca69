//! Attention inner loops at every SIMD level against an f64 reference.
//!
//! Tolerance: each output is a sum of at most 200 products of values in
//! [-1, 1] (scores) or a convex combination of such values (weighted sums
//! with weights summing to 1 here); f32 summation in any order stays within
//! n·eps·Σ|terms| ≈ 200 · 6e-8 · 200 = 2.4e-3 for scores in the worst case,
//! far less in practice, so 1e-4 absolute (scores, scaled by 0.125) and 1e-5
//! (weighted sums) leave room for any order while catching a wrong index,
//! stride or tail.

mod common;

use common::Rng;
use whale_kernels::{attn_scores_with, attn_weighted_sum_with, SimdLevel};

#[test]
fn scores_and_weighted_sums_match_f64_at_every_level() {
    let mut rng = Rng::new(7);
    for level in SimdLevel::available() {
        for (dim, stride, n) in [(64, 192, 37), (128, 128, 5), (72, 80, 200), (3, 7, 4), (8, 8, 1), (64, 64, 0)] {
            let q = rng.vec_f32(dim);
            let rows = rng.vec_f32(if n == 0 { 0 } else { (n - 1) * stride + dim });
            let mut scores = vec![f32::NAN; n];
            attn_scores_with(level, &q, &rows, stride, 0.125, &mut scores);
            for (p, s) in scores.iter().enumerate() {
                let want: f64 =
                    q.iter().zip(&rows[p * stride..]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * 0.125;
                assert!((*s as f64 - want).abs() < 1e-4, "{level} scores dim={dim} n={n} p={p}: {s} vs {want}");
            }
            let raw: Vec<f32> = (0..n).map(|_| rng.uniform(0.0, 1.0)).collect();
            let total: f32 = raw.iter().sum();
            let w: Vec<f32> = raw.iter().map(|x| x / total).collect();
            let mut out = vec![f32::NAN; dim];
            attn_weighted_sum_with(level, &w, &rows, stride, &mut out);
            // Same operations in the same order at every level.
            let mut scalar = vec![f32::NAN; dim];
            attn_weighted_sum_with(SimdLevel::Scalar, &w, &rows, stride, &mut scalar);
            assert!(out.iter().zip(&scalar).all(|(a, b)| a.to_bits() == b.to_bits()), "{level} weighted sum bits");
            for (j, o) in out.iter().enumerate() {
                let want: f64 = (0..n).map(|p| w[p] as f64 * rows[p * stride + j] as f64).sum();
                assert!((*o as f64 - want).abs() < 1e-5, "{level} weighted sum dim={dim} n={n} j={j}: {o} vs {want}");
            }
        }
    }
}

#[test]
#[should_panic(expected = "need more than")]
fn rows_past_the_end_are_refused() {
    let q = vec![0f32; 8];
    let mut out = vec![0f32; 3];
    // Three rows of 8 at stride 10 need 28 floats.
    attn_scores_with(SimdLevel::Scalar, &q, &[0f32; 27], 10, 1.0, &mut out);
}
