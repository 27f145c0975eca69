//! Attention inner loops at every SIMD level against an f64 reference.
//!
//! Tolerance: a score is a sum of at most 128 products of values in
//! [-1, 1], scaled by 0.125; f32 summation in any order is within
//! n·eps·Σ|terms| ≈ 128 · 6e-8 · 128 · 0.125 ≈ 1.2e-4 in the worst case and
//! far less in practice, so 1e-4 absolute. A weighted sum here is a convex
//! combination of values in [-1, 1] (weights sum to one): 1e-5. Both catch
//! a wrong index, stride, head or tail.

mod common;

use common::Rng;
use whale_kernels::{attn_scores_with, attn_weighted_sum_with, dot_f32_with, f32_to_f16, KvSlice, SimdLevel};

/// Many query rows of MLA's width (576: more than one chunk of rows meets
/// each key) with causal lengths that differ row by row, f32 and f16 keys:
/// each score the bits of that row scored alone, within 2e-3 of f64 (576
/// products of values in [-1, 1] times 0.125: n·eps·Σ|terms| ≈ 576 · 6e-8
/// · 576 · 0.125 ≈ 2.5e-3 at worst), and every position past a row's
/// length left as it was.
#[test]
fn scores_of_many_wide_rows_with_causal_lengths() {
    let mut rng = Rng::new(11);
    let (nh, dim, n) = (200, 576, 40);
    let q = rng.vec_f32(nh * dim);
    let keys = rng.vec_f32(n * dim);
    let mut halves = vec![0u16; keys.len()];
    f32_to_f16(&keys, &mut halves);
    let lens: Vec<usize> = (0..nh).map(|i| 1 + (i * 7) % n).collect();
    for level in SimdLevel::available() {
        for kv in [KvSlice::F32(&keys), KvSlice::F16(&halves)] {
            let mut scores = vec![f32::NAN; nh * n];
            attn_scores_with(level, &q, dim, kv, dim, 0.125, &lens, &mut scores);
            for (i, &len) in lens.iter().enumerate() {
                let mut alone = vec![f32::NAN; n];
                attn_scores_with(level, &q[i * dim..(i + 1) * dim], dim, kv, dim, 0.125, &[len], &mut alone);
                for p in 0..n {
                    let s = scores[i * n + p];
                    if p >= len {
                        assert!(s.is_nan(), "{level} row {i} position {p} past its length was written");
                        continue;
                    }
                    assert_eq!(s.to_bits(), alone[p].to_bits(), "{level} row {i} [{p}] differs from the row alone");
                    let mut k = vec![0f32; dim];
                    kv.read(p * dim, &mut k);
                    let want: f64 =
                        q[i * dim..(i + 1) * dim].iter().zip(&k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                            * 0.125;
                    assert!((s as f64 - want).abs() < 2e-3, "{level} [{i}][{p}]: {s} against {want}");
                }
            }
        }
    }
}

#[test]
fn scores_and_weighted_sums_match_f64_at_every_level() {
    let mut rng = Rng::new(7);
    for level in SimdLevel::available() {
        for (nh, dim, stride, n) in
            [(1, 64, 192, 37), (7, 128, 256, 5), (3, 72, 80, 200), (9, 3, 7, 4), (16, 8, 8, 1), (2, 64, 64, 0)]
        {
            let q = rng.vec_f32(nh * dim);
            let rows = rng.vec_f32(if n == 0 { 0 } else { (n - 1) * stride + dim });
            let mut scores = vec![f32::NAN; nh * n];
            attn_scores_with(level, &q, dim, &rows, stride, 0.125, &vec![n; nh], &mut scores);
            for i in 0..nh {
                for p in 0..n {
                    let s = scores[i * n + p];
                    let want: f64 = q[i * dim..(i + 1) * dim]
                        .iter()
                        .zip(&rows[p * stride..])
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * 0.125;
                    assert!((s as f64 - want).abs() < 1e-4, "{level} scores nh={nh} dim={dim} n={n} [{i}][{p}]");
                }
            }
            let mut w = Vec::new();
            for _ in 0..nh {
                let raw: Vec<f32> = (0..n).map(|_| rng.uniform(0.0, 1.0)).collect();
                let total: f32 = raw.iter().sum();
                w.extend(raw.iter().map(|x| x / total));
            }
            let mut out = vec![f32::NAN; nh * dim];
            attn_weighted_sum_with(level, &w, n, &rows, stride, dim, &vec![n; nh], &mut out);
            for i in 0..nh {
                for j in 0..dim {
                    let want: f64 = (0..n).map(|p| w[i * n + p] as f64 * rows[p * stride + j] as f64).sum();
                    let o = out[i * dim + j];
                    assert!((o as f64 - want).abs() < 1e-5, "{level} weighted sum nh={nh} dim={dim} n={n} [{i}][{j}]");
                }
            }
            // Same operations in the same order at every level, and per head
            // the same bits as that head alone.
            let mut scalar = vec![f32::NAN; nh * dim];
            attn_weighted_sum_with(SimdLevel::Scalar, &w, n, &rows, stride, dim, &vec![n; nh], &mut scalar);
            assert!(out.iter().zip(&scalar).all(|(a, b)| a.to_bits() == b.to_bits()), "{level} weighted sum bits");
            for i in 0..nh {
                let mut one = vec![f32::NAN; dim];
                attn_weighted_sum_with(level, &w[i * n..(i + 1) * n], n, &rows, stride, dim, &[n], &mut one);
                assert!(one.iter().zip(&out[i * dim..]).all(|(a, b)| a.to_bits() == b.to_bits()), "{level} head {i}");
                let mut s1 = vec![f32::NAN; n];
                attn_scores_with(level, &q[i * dim..(i + 1) * dim], dim, &rows, stride, 0.125, &[n], &mut s1);
                assert!(
                    s1.iter().zip(&scores[i * n..]).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{level} scores head {i}"
                );
            }
        }
    }
}

/// f16 rows (an f16 KV cache) give the bits the same rows widened to f32
/// give, at every level: widening is exact and the arithmetic is shared.
#[test]
fn f16_rows_equal_their_f32_widening() {
    let mut rng = Rng::new(11);
    for level in SimdLevel::available() {
        for (nh, dim, stride, n) in [(3, 64, 192, 37), (2, 72, 80, 9), (4, 5, 7, 3)] {
            let q = rng.vec_f32(nh * dim);
            let rows = rng.vec_f32((n - 1) * stride + dim);
            let mut h = vec![0u16; rows.len()];
            f32_to_f16(&rows, &mut h);
            let wide: Vec<f32> = h.iter().map(|&b| half::f16::from_bits(b).to_f32()).collect();
            let (mut s16, mut s32) = (vec![f32::NAN; nh * n], vec![f32::NAN; nh * n]);
            attn_scores_with(level, &q, dim, KvSlice::F16(&h), stride, 0.125, &vec![n; nh], &mut s16);
            attn_scores_with(level, &q, dim, &wide, stride, 0.125, &vec![n; nh], &mut s32);
            assert!(s16.iter().zip(&s32).all(|(a, b)| a.to_bits() == b.to_bits()), "{level} scores");
            let w: Vec<f32> = (0..nh * n).map(|_| rng.uniform(0.0, 0.2)).collect();
            let (mut o16, mut o32) = (vec![f32::NAN; nh * dim], vec![f32::NAN; nh * dim]);
            attn_weighted_sum_with(level, &w, n, KvSlice::F16(&h), stride, dim, &vec![n; nh], &mut o16);
            attn_weighted_sum_with(level, &w, n, &wide, stride, dim, &vec![n; nh], &mut o32);
            assert!(o16.iter().zip(&o32).all(|(a, b)| a.to_bits() == b.to_bits()), "{level} weighted sums");
        }
    }
    // Round to nearest even, as llama.cpp's f16 cache: 1 + 2^-11 is a tie
    // between 1 and 1 + 2^-10 and goes to the even 1.0; 1 + 3·2^-11 to 1 + 2^-9.
    let mut h = [0u16; 3];
    f32_to_f16(&[1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), -65504.0], &mut h);
    assert_eq!(h, [0x3C00, 0x3C02, 0xFBFF]);
}

/// A score is `dot_f32` at the level times the scale, bit for bit, however
/// the kernel groups rows and keys (four rows by six keys at the AVX-512
/// levels, by three at AVX2 from 128 floats a row, three rows a key below)
/// and whatever the row lengths.
#[test]
fn scores_are_dot_f32_bits() {
    let mut rng = Rng::new(17);
    for level in SimdLevel::available() {
        for (nh, dim, stride, n) in [
            (5, 64, 64, 29),
            (3, 128, 136, 17),
            (2, 576, 576, 11),
            (4, 72, 72, 13),
            (3, 32, 40, 8),
            (6, 75, 80, 7),
            // Wide rows with an 8-float and a scalar tail, and row and key
            // counts that leave partial tiles.
            (7, 200, 208, 13),
            (9, 147, 150, 8),
        ] {
            let q = rng.vec_f32(nh * dim);
            let rows = rng.vec_f32((n - 1) * stride + dim);
            let lens: Vec<usize> = (0..nh).map(|i| n - (i * 3) % n).collect();
            let mut out = vec![f32::NAN; nh * n];
            attn_scores_with(level, &q, dim, &rows, stride, 0.3, &lens, &mut out);
            for (i, &len) in lens.iter().enumerate() {
                for p in 0..len {
                    let want =
                        dot_f32_with(level, &q[i * dim..(i + 1) * dim], &rows[p * stride..p * stride + dim]) * 0.3;
                    assert_eq!(out[i * n + p].to_bits(), want.to_bits(), "{level} dim {dim} row {i} key {p}");
                }
            }
        }
    }
}

/// Rows that see fewer keys (`lens`, causal masking of several tokens in
/// one call) get the bits of a call for that row alone over its keys, at
/// every level and for f16 rows too; scores past a row's length are left
/// untouched.
#[test]
fn per_row_lengths_equal_rows_alone() {
    let mut rng = Rng::new(13);
    for level in SimdLevel::available() {
        let (dim, stride, n) = (64, 130, 23);
        let lens = [1, 5, 5, 8, 9, 16, 17, 22, 23, 23, 0];
        let nh = lens.len();
        let q = rng.vec_f32(nh * dim);
        let rows = rng.vec_f32((n - 1) * stride + dim);
        let mut h = vec![0u16; rows.len()];
        f32_to_f16(&rows, &mut h);
        for kv in [KvSlice::F32(&rows), KvSlice::F16(&h)] {
            let mut scores = vec![f32::NAN; nh * n];
            attn_scores_with(level, &q, dim, kv, stride, 0.125, &lens, &mut scores);
            let w: Vec<f32> = (0..nh * n).map(|_| rng.uniform(0.0, 0.2)).collect();
            let mut out = vec![f32::NAN; nh * dim];
            attn_weighted_sum_with(level, &w, n, kv, stride, dim, &lens, &mut out);
            for (i, &len) in lens.iter().enumerate() {
                let mut alone = vec![f32::NAN; len];
                attn_scores_with(level, &q[i * dim..(i + 1) * dim], dim, kv, stride, 0.125, &[len], &mut alone);
                let got = &scores[i * n..(i + 1) * n];
                assert!(got[..len].iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "{level} scores {i}");
                assert!(got[len..].iter().all(|x| x.is_nan()), "{level} row {i} past its length");
                let mut one = vec![f32::NAN; dim];
                attn_weighted_sum_with(level, &w[i * n..i * n + len], len, kv, stride, dim, &[len], &mut one);
                let got = &out[i * dim..(i + 1) * dim];
                assert!(got.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "{level} sums {i}");
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
    attn_scores_with(SimdLevel::Scalar, &q, 8, &[0f32; 27][..], 10, 1.0, &[3], &mut out);
}

#[test]
#[should_panic(expected = "not whole rows")]
fn ragged_heads_are_refused() {
    let mut out = vec![0f32; 10];
    attn_weighted_sum_with(SimdLevel::Scalar, &[0.5; 4], 2, &[0f32; 64][..], 8, 8, &[2, 2], &mut out);
}
