//! The fast kernels (`vec_dot` at every SIMD level, `matvec`, `matmul`,
//! `dot_f32`) against the scalar reference (decode with `dequantize_row`,
//! which `dequant_reference.rs` checks against gguf-py, then sum in f64).
//!
//! Tolerance: `|fast - ref| <= REL_TOL * sum_i |w_i * x_i|`, REL_TOL = 1e-5.
//! The fast kernels decode the same f32 weights (or factor the block scale
//! out: `d * sum(q*x)`) and add products in f32 in a different order. The
//! standard bound for a summation whose longest chain of dependent f32
//! additions has k steps is `k * u * sum|t_i|` with u = 2^-24 ~ 6e-8. Our
//! chains are short: 16 or 32 lanes are summed independently, so k is about
//! n/256 (chunk sums) + 16 (lane length per chunk) + 5 (final reductions),
//! or n/32 block FMAs + 4 in the AVX2 block kernels: k < 160 for the
//! longest rows tested (4128 elements), i.e. < 1e-5. Scaling by
//! `sum|w_i x_i|` (not `|dot|`) keeps the bound meaningful when the dot
//! cancels to almost zero. A wrong decode (a swapped nibble, a wrong scale)
//! changes the result by a sizable fraction of `sum|w_i x_i|`, far above this.

mod common;

use common::{lengths, random_row, reference_dot, Rng};
use whale_kernels::{
    dequantize_row, dot_f32, dot_f32_with, matmul, matvec, vec_dot, vec_dot_ref, vec_dot_with, GgmlType, SimdLevel,
};

const REL_TOL: f64 = 1e-5;

fn assert_close(what: &str, got: f32, reference: f64, abs_sum: f64) {
    let err = (got as f64 - reference).abs();
    let tol = REL_TOL * abs_sum + f64::from(f32::MIN_POSITIVE);
    assert!(
        err <= tol,
        "{what}: got {got:e}, reference {reference:e}, error {err:e} > tolerance {tol:e} \
         (sum|w*x| = {abs_sum:e})"
    );
}

#[test]
fn vec_dot_ref_matches_f64_reference() {
    let mut rng = Rng::new(1);
    for ty in GgmlType::ALL {
        for n in lengths(ty) {
            let row = random_row(&mut rng, ty, n);
            let x = rng.vec_f32(n);
            let (reference, abs) = reference_dot(ty, &row, &x);
            // vec_dot_ref sums in f64 too: only the final rounding to f32 differs.
            let got = vec_dot_ref(ty, &row, &x);
            assert_close(&format!("vec_dot_ref {ty} n={n}"), got, reference, abs);
            assert_eq!(got, reference as f32, "vec_dot_ref {ty} n={n}");
        }
    }
}

#[test]
fn vec_dot_every_level_every_type() {
    let mut rng = Rng::new(2);
    let levels = SimdLevel::available();
    for ty in GgmlType::ALL {
        for n in lengths(ty) {
            for _ in 0..3 {
                let row = random_row(&mut rng, ty, n);
                let x = rng.vec_f32(n);
                let (reference, abs) = reference_dot(ty, &row, &x);
                assert_close(&format!("vec_dot {ty} n={n}"), vec_dot(ty, &row, &x), reference, abs);
                for &level in &levels {
                    let got = vec_dot_with(level, ty, &row, &x);
                    assert_close(&format!("vec_dot {level} {ty} n={n}"), got, reference, abs);
                }
            }
        }
    }
}

/// Rows that start at an odd address still decode (block structs have
/// alignment 1, and F32 rows fall back from the aligned fast path).
#[test]
fn vec_dot_unaligned_rows() {
    let mut rng = Rng::new(3);
    for ty in GgmlType::ALL {
        let n = ty.block_size().max(32) * 9;
        let row = random_row(&mut rng, ty, n);
        let mut shifted = vec![0u8; row.len() + 1];
        shifted[1..].copy_from_slice(&row);
        let x = rng.vec_f32(n);
        let (reference, abs) = reference_dot(ty, &row, &x);
        for &level in &SimdLevel::available() {
            let got = vec_dot_with(level, ty, &shifted[1..], &x);
            assert_close(&format!("unaligned {level} {ty}"), got, reference, abs);
        }
    }
}

#[test]
fn dot_f32_every_level() {
    let mut rng = Rng::new(4);
    for n in [0, 1, 3, 8, 15, 16, 17, 31, 32, 33, 100, 1000, 4097] {
        let a = rng.vec_f32(n);
        let b = rng.vec_f32(n);
        let reference: f64 = a.iter().zip(&b).map(|(&p, &q)| p as f64 * q as f64).sum();
        let abs: f64 = a.iter().zip(&b).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum();
        assert_close(&format!("dot_f32 n={n}"), dot_f32(&a, &b), reference, abs);
        for level in SimdLevel::available() {
            let got = dot_f32_with(level, &a, &b);
            assert_close(&format!("dot_f32 {level} n={n}"), got, reference, abs);
        }
    }
}

#[test]
#[should_panic(expected = "differ in length")]
fn dot_f32_length_mismatch_panics() {
    dot_f32(&[1.0, 2.0], &[1.0]);
}

/// Shapes for the matrix tests: `rows * cols` above the 2^16 threading
/// threshold (so threads = 2 really splits), with an odd row count, plus a
/// small one that stays single-threaded.
fn shapes(ty: GgmlType) -> Vec<(usize, usize)> {
    let bs = ty.block_size().max(32);
    let big_cols = if bs == 256 { 1024 } else { 1056 };
    vec![(67, big_cols), (5, bs * 2), (1, bs)]
}

#[test]
fn matvec_matches_reference_and_is_thread_independent() {
    let mut rng = Rng::new(5);
    for ty in GgmlType::ALL {
        for (rows, cols) in shapes(ty) {
            let rb = ty.row_bytes(cols).unwrap();
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect();
            let x = rng.vec_f32(cols);
            let mut y1 = vec![f32::NAN; rows];
            matvec(ty, &w, rows, cols, &x, &mut y1, 1);
            for threads in [2, 3, 0, 64] {
                let mut yt = vec![f32::NAN; rows];
                matvec(ty, &w, rows, cols, &x, &mut yt, threads);
                let same = y1.iter().zip(&yt).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "matvec {ty} {rows}x{cols}: threads={threads} differs from 1");
            }
            for (r, &got) in y1.iter().enumerate() {
                let row = &w[r * rb..(r + 1) * rb];
                assert_eq!(got.to_bits(), vec_dot(ty, row, &x).to_bits());
                let (reference, abs) = reference_dot(ty, row, &x);
                assert_close(&format!("matvec {ty} {rows}x{cols} row {r}"), got, reference, abs);
            }
        }
    }
}

#[test]
fn matmul_matches_reference_and_is_thread_independent() {
    let mut rng = Rng::new(6);
    for ty in GgmlType::ALL {
        for (rows, cols) in shapes(ty) {
            let rb = ty.row_bytes(cols).unwrap();
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect();
            for m in [2, 3, 5] {
                let x = rng.vec_f32(m * cols);
                let mut y1 = vec![f32::NAN; m * rows];
                matmul(ty, &w, rows, cols, &x, m, &mut y1, 1);
                for threads in [2, 3, 0] {
                    let mut yt = vec![f32::NAN; m * rows];
                    matmul(ty, &w, rows, cols, &x, m, &mut yt, threads);
                    let same = y1.iter().zip(&yt).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "matmul {ty} {rows}x{cols} m={m}: threads={threads} differs");
                }
                for i in 0..m {
                    let xi = &x[i * cols..(i + 1) * cols];
                    for r in 0..rows {
                        let (reference, abs) = reference_dot(ty, &w[r * rb..(r + 1) * rb], xi);
                        let got = y1[i * rows + r];
                        let what = format!("matmul {ty} {rows}x{cols} m={m} y[{i}][{r}]");
                        assert_close(&what, got, reference, abs);
                    }
                }
            }
        }
    }
}

/// `matmul` with m = 1 is `matvec`; m = 0 writes nothing.
#[test]
fn matmul_degenerate_batches() {
    let mut rng = Rng::new(7);
    let (ty, rows, cols) = (GgmlType::Q4_K, 70, 1024);
    let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect();
    let x = rng.vec_f32(cols);
    let mut a = vec![0f32; rows];
    let mut b = vec![0f32; rows];
    matvec(ty, &w, rows, cols, &x, &mut a, 2);
    matmul(ty, &w, rows, cols, &x, 1, &mut b, 2);
    assert_eq!(a, b);
    let mut empty: Vec<f32> = vec![];
    matmul(ty, &w, rows, cols, &[], 0, &mut empty, 2);
}

/// The scratch-row path of `matmul` decodes exactly what `dequantize_row` does:
/// with x = a unit vector, y[i][r] is one decoded weight, with no rounding
/// (adding exact zeros and one `w * 1.0` is exact in any order).
#[test]
fn matmul_unit_vectors_read_back_weights() {
    let mut rng = Rng::new(8);
    for ty in GgmlType::ALL {
        let (rows, cols) = (4, ty.block_size().max(32) * 2);
        let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect();
        let mut decoded = vec![0f32; rows * cols];
        dequantize_row(ty, &w, &mut decoded).unwrap();
        let picks = [0, 1, cols / 2 + 3, cols - 1];
        let mut x = vec![0f32; picks.len() * cols];
        for (i, &c) in picks.iter().enumerate() {
            x[i * cols + c] = 1.0;
        }
        let mut y = vec![f32::NAN; picks.len() * rows];
        matmul(ty, &w, rows, cols, &x, picks.len(), &mut y, 1);
        for (i, &c) in picks.iter().enumerate() {
            for r in 0..rows {
                // `==`, not bits: a decoded -0.0 sums to +0.0.
                assert_eq!(y[i * rows + r], decoded[r * cols + c], "{ty}: w[{r}][{c}]");
            }
        }
    }
}
