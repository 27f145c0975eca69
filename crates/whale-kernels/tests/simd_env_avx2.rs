//! `WHALE_SIMD=avx2` forces the AVX2 level even on an AVX-512 CPU (and is
//! ignored where AVX2 is missing). A single test in its own process, so it
//! can set the variable before the level is first read.

mod common;

use common::{random_row, Rng};
use whale_kernels::{dispatch, matmul_q, quantize_acts, vec_dot_q, vec_dot_q_ref, vec_dot_q_with, GgmlType, SimdLevel};

#[test]
fn whale_simd_avx2_forces_avx2() {
    std::env::set_var(dispatch::ENV_VAR, "avx2");
    let expected = if SimdLevel::Avx2Fma.is_available() { SimdLevel::Avx2Fma } else { SimdLevel::best_available() };
    assert_eq!(dispatch::active(), expected);
    let mut rng = Rng::new(41);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F16] {
        let n = ty.block_size().max(32) * 8;
        let row = random_row(&mut rng, ty, n);
        let acts = quantize_acts(ty, &rng.vec_f32(n), 1, n);
        let got = vec_dot_q(ty, &row, &acts, 0);
        assert_eq!(got.to_bits(), vec_dot_q_with(expected, ty, &row, &acts, 0).to_bits(), "{ty}");
        let mut y = [f32::NAN];
        matmul_q(ty, &row, 1, n, &rng.vec_f32(n), 1, &mut y, 1);
        assert!(y[0].is_finite());
    }

    // Decode (one activation row: Q4_1 and Q5_0 eight weight rows a call,
    // `rows8::avx2`) and batched products (groups of 8, 4, 2 and 1
    // activation rows per call, and from 12 rows (Q8_0, IQ4_NL: 24) the
    // panels of `panel_avx2`) at this level equal the scalar reference bit
    // for bit, for every type whose activations are quantized (F32 / Q8_1 /
    // Q8_K weights keep f32 activations and may differ by f32 rounding):
    // random weights, every quant, scale and min at its maximum against
    // activations of -1 (the largest i16 pair sums the panels add before
    // widening), and every byte 0x80 (Q8_0's -128, the largest magnitude of
    // the signed panels).
    for wty in GgmlType::ALL {
        if matches!(wty, GgmlType::F32 | GgmlType::Q8_1 | GgmlType::Q8_K) {
            continue;
        }
        let cols = wty.block_size().max(32) * 9;
        let rb = wty.row_bytes(cols).unwrap();
        for (rows, fill) in [(6, "random"), (13, "random"), (9, "max"), (9, "min")] {
            let mut w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, wty, cols)).collect();
            // "min": bytes of 0x80, Q8_0's -128 (the largest magnitude the
            // signed panels multiply).
            if fill == "max" || fill == "min" {
                w.fill(if fill == "max" { 0xFF } else { 0x80 });
                common::set_scales(wty, &mut w, 1.0);
            }
            for m in [1, 2, 7, 11, 12, 20, 35] {
                let x: Vec<f32> = match fill {
                    "max" | "min" => vec![-1.0; m * cols],
                    _ => rng.vec_f32(m * cols),
                };
                let acts = quantize_acts(wty, &x, m, cols);
                let mut y = vec![f32::NAN; m * rows];
                matmul_q(wty, &w, rows, cols, &x, m, &mut y, 1);
                for i in 0..m {
                    for r in 0..rows {
                        let want = vec_dot_q_ref(wty, &w[r * rb..(r + 1) * rb], &acts, i);
                        assert_eq!(
                            y[i * rows + r].to_bits(),
                            want.to_bits(),
                            "{wty} {fill} {rows} rows m={m} [{i}][{r}]"
                        );
                    }
                }
            }
        }
    }

    // The interleaved layout (`x8`): this level's own kernels and panels.
    common::check_x8_matches_scalar(&mut Rng::new(45));
}
