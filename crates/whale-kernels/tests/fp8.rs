//! The FP8 kernels (`whale_kernels::fp8`): every SIMD level bit-identical
//! to the scalar twin, the twin against the format's exact dequantization
//! summed in f64, and every element of `matmul` the bits of `dot` whatever
//! the number of activation rows and threads.
//!
//! Tolerance against the f64 sum of the exact dequantization:
//! `2^-8 · Σ|w_i x_i| + 1e-5 · Σ|w_i x_i|`. Each activation is rounded to
//! bf16 (nearest: relative error at most 2^-8, half a unit in its 8th significant bit), which bounds the first
//! term; after that the products are exact in f32 (a 4-bit significand
//! times an 8-bit one) and each of the 16 lanes adds at most 8 of them per
//! block before one scaled add per block, so the longest chain of dependent
//! roundings for n columns is `8 + n/128 + 4` steps: 72 for the 7168
//! columns tested, below `72 · 2^-24 ≈ 4.3e-6` of `Σ|w_i x_i|`. Against the
//! same sum with the activations rounded first, only the second term is
//! allowed. A wrong decode or a scale applied to the wrong block moves the
//! result by a sizable fraction of `Σ|w_i x_i|`.

mod common;

use common::Rng;
use whale_kernels::fp8::{self, Fp8Matrix, BLOCK};
use whale_kernels::SimdLevel;

/// Random e4m3 codes, NaN codes (0x7f, 0xff) excluded as in checkpoints.
fn codes(rng: &mut Rng, n: usize) -> Vec<u8> {
    rng.bytes(n).into_iter().map(|b| if b & 0x7f == 0x7f { b ^ 0x01 } else { b }).collect()
}

fn scales(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(1e-4, 3e-3)).collect()
}

/// The exact sum in f64, with the activations as given or rounded to bf16
/// as the kernels take them.
fn reference(w: &[u8], s: &[f32], x: &[f32], rounded: bool) -> (f64, f64) {
    let (mut dot, mut abs) = (0f64, 0f64);
    for (c, (&b, &xi)) in w.iter().zip(x).enumerate() {
        let xi = if rounded { fp8::round_activation(xi) as f64 * 2f64.powi(-48) } else { xi as f64 };
        let t = (fp8::e4m3_to_f32_ref(b) * s[c / BLOCK]) as f64 * xi;
        dot += t;
        abs += t.abs();
    }
    (dot, abs)
}

const COLS: [usize; 9] = [1, 15, 16, 64, 100, 128, 200, 1000, 7168];

#[test]
fn every_level_is_bit_identical_to_the_scalar_twin() {
    let mut rng = Rng::new(8);
    for cols in COLS {
        for _ in 0..20 {
            let w = codes(&mut rng, cols);
            let s = scales(&mut rng, cols.div_ceil(BLOCK));
            let x = rng.vec_f32(cols);
            let want = fp8::dot_with(SimdLevel::Scalar, &w, &s, &x);
            let mut dec = vec![0f32; cols];
            for level in SimdLevel::available() {
                let got = fp8::dot_with(level, &w, &s, &x);
                assert_eq!(got.to_bits(), want.to_bits(), "{level}, {cols} columns: {got:e} vs scalar {want:e}");
                // The FMA kernel too where the CPU has the vdpbf16ps one.
                let got = fp8::dot_fma_with(level, &w, &s, &x);
                assert_eq!(got.to_bits(), want.to_bits(), "{level} FMA kernel, {cols} columns");
                fp8::decode_with(level, &w, &mut dec);
                for (c, (&d, &b)) in dec.iter().zip(&w).enumerate() {
                    assert_eq!(d.to_bits(), fp8::decode_unit(b).to_bits(), "{level}: decode of column {c}");
                }
                let got = fp8::dot_decoded_with(level, &dec, &s, &x);
                assert_eq!(got.to_bits(), want.to_bits(), "{level}, {cols} columns, decoded row");
            }
        }
    }
}

#[test]
fn dot_matches_the_exact_dequantization_summed_in_f64() {
    let mut rng = Rng::new(9);
    for cols in COLS {
        for _ in 0..20 {
            let w = codes(&mut rng, cols);
            let s = scales(&mut rng, cols.div_ceil(BLOCK));
            let x = rng.vec_f32(cols);
            let got = fp8::dot(&w, &s, &x) as f64;
            let (want, abs) = reference(&w, &s, &x, true);
            assert!((got - want).abs() <= 1e-5 * abs + 1e-30, "{cols} columns: {got:e} vs {want:e} (Σ|wx| {abs:e})");
            let (want, abs) = reference(&w, &s, &x, false);
            let tol = (2f64.powi(-8) + 1e-5) * abs + 1e-30;
            assert!((got - want).abs() <= tol, "{cols} columns, unrounded x: {got:e} vs {want:e} (Σ|wx| {abs:e})");
        }
    }
    // A scale applied to the wrong block is caught: scales 1 and 1000.
    let w = vec![0x38u8; 256]; // 1.0
    let x = vec![1f32; 256];
    assert_eq!(fp8::dot(&w, &[1.0, 1000.0], &x), 128.0 + 128_000.0);
}

#[test]
fn every_level_decodes_rows_in_groups_with_the_bits_of_the_scalar_twin() {
    // 35 rows: groups of 16, 8 or 4 and a remainder at every level; 200
    // columns end in a partial block.
    let mut rng = Rng::new(11);
    for (rows, cols) in [(35, 256), (35, 200)] {
        let w = codes(&mut rng, rows * cols);
        let s = scales(&mut rng, rows.div_ceil(BLOCK) * cols.div_ceil(BLOCK));
        let wm = Fp8Matrix { w: &w, scales: &s, rows, cols, row0: 0 };
        let x = rng.vec_f32(cols);
        for level in SimdLevel::available() {
            let mut y = vec![f32::NAN; rows];
            fp8::matvec_fma_with(level, wm, &x, &mut y);
            for (r, &got) in y.iter().enumerate() {
                let (wr, sr) = wm.row(r);
                let want = fp8::dot_with(SimdLevel::Scalar, wr, sr, &x);
                assert_eq!(got.to_bits(), want.to_bits(), "{level} FMA rows, [{rows}, {cols}]: row {r}");
            }
        }
    }
}

#[test]
fn matmul_elements_are_the_bits_of_dot_for_any_batch_and_thread_count() {
    let mut rng = Rng::new(10);
    for (rows, cols) in [(1, 64), (130, 200), (300, 256), (131, 384), (257, 1000)] {
        let w = codes(&mut rng, rows * cols);
        let sc = cols.div_ceil(BLOCK);
        let s = scales(&mut rng, rows.div_ceil(BLOCK) * sc);
        let wm = Fp8Matrix { w: &w, scales: &s, rows, cols, row0: 0 };
        for m in [1usize, 3, 40] {
            let x = rng.vec_f32(m * cols);
            for threads in [1, 2, 3] {
                let mut y = vec![f32::NAN; m * rows];
                fp8::matmul(wm, &x, m, &mut y, threads);
                for t in 0..m {
                    for r in 0..rows {
                        let (wr, sr) = wm.row(r);
                        let want = fp8::dot(wr, sr, &x[t * cols..(t + 1) * cols]);
                        assert_eq!(
                            y[t * rows + r].to_bits(),
                            want.to_bits(),
                            "[{rows}, {cols}] m = {m}, {threads} threads: y[{t}][{r}]"
                        );
                    }
                }
            }
        }
        // Row r takes scale row r / 128: dequantize_row says so exactly.
        let mut out = vec![0f32; cols];
        wm.dequantize_row(rows - 1, &mut out);
        let blk = (rows - 1) / BLOCK;
        assert_eq!(out[0], fp8::e4m3_to_f32_ref(w[(rows - 1) * cols]) * s[blk * sc]);
        // A slice of rows keeps the tensor's scale grid: rows 100.. of the
        // tensor are rows 0.. of the slice, and the slice's row 28 is the
        // tensor's row 128, the first of the second block row.
        if rows > 130 {
            let sub = Fp8Matrix { w: &w[100 * cols..], scales: &s, rows: rows - 100, cols, row0: 100 };
            let x = rng.vec_f32(cols);
            let mut y = vec![0f32; rows - 100];
            fp8::matmul(sub, &x, 1, &mut y, 2);
            let (wr, sr) = wm.row(128);
            assert_eq!(y[28].to_bits(), fp8::dot(wr, sr, &x).to_bits(), "row slice at 100");
            assert_eq!(sr.as_ptr(), s[sc..].as_ptr(), "row 128 takes scale row 1");
        }
    }
}
