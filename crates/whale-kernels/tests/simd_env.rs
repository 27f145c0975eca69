//! `WHALE_SIMD=scalar` forces the scalar kernels. This file holds a single
//! test (its own process), so it can set the variable before the level is
//! first read. It also runs `matvec` / `matmul` on the scalar level against
//! the f64 reference (the other test files run them at the best level), with
//! the tolerance explained in `kernels.rs`, and `matmul_q` on the scalar
//! level against `vec_dot_q_ref` (bit for bit, see `qdot.rs`).

mod common;

use common::{random_row, reference_dot, Rng};
use whale_kernels::{
    dispatch, matmul, matmul_q, matvec, quantize_acts, vec_dot, vec_dot_q_ref, vec_dot_type, vec_dot_with, GgmlType,
    SimdLevel,
};

#[test]
fn whale_simd_scalar_forces_scalar_path() {
    std::env::set_var(dispatch::ENV_VAR, "scalar");
    assert_eq!(dispatch::active(), SimdLevel::Scalar);
    let mut rng = Rng::new(21);
    for ty in GgmlType::ALL {
        let n = ty.block_size().max(32) * 8;
        let row = random_row(&mut rng, ty, n);
        let x = rng.vec_f32(n);
        let got = vec_dot(ty, &row, &x);
        let scalar = vec_dot_with(SimdLevel::Scalar, ty, &row, &x);
        assert_eq!(got.to_bits(), scalar.to_bits(), "{ty}");
    }

    for ty in GgmlType::ALL {
        let (rows, cols, m) = (67, ty.block_size().max(32) * 4, 3);
        let rb = ty.row_bytes(cols).unwrap();
        let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect();
        let x = rng.vec_f32(m * cols);
        let mut y = vec![f32::NAN; rows];
        matvec(ty, &w, rows, cols, &x[..cols], &mut y, 2);
        let mut ym = vec![f32::NAN; m * rows];
        matmul(ty, &w, rows, cols, &x, m, &mut ym, 2);
        for r in 0..rows {
            let row = &w[r * rb..(r + 1) * rb];
            for i in 0..m {
                let (reference, abs) = reference_dot(ty, row, &x[i * cols..(i + 1) * cols]);
                let tol = 1e-5 * abs + f64::from(f32::MIN_POSITIVE);
                let got = ym[i * rows + r];
                assert!((got as f64 - reference).abs() <= tol, "matmul {ty} [{i}][{r}]");
                if i == 0 {
                    assert!((y[r] as f64 - reference).abs() <= tol, "matvec {ty} [{r}]");
                }
            }
        }
        // Types with quantized (or 16-bit) activations: bit-identical to the reference.
        if vec_dot_type(ty) != GgmlType::F32 {
            let mut yq = vec![f32::NAN; m * rows];
            matmul_q(ty, &w, rows, cols, &x, m, &mut yq, 2);
            let acts = quantize_acts(ty, &x, m, cols);
            for r in 0..rows {
                for i in 0..m {
                    let want = vec_dot_q_ref(ty, &w[r * rb..(r + 1) * rb], &acts, i);
                    assert_eq!(yq[i * rows + r].to_bits(), want.to_bits(), "matmul_q {ty} [{i}][{r}]");
                }
            }
        }
    }

    // Interleaved Q4_K (`x8`): de-interleaved for this level's kernels.
    common::check_x8_matches_scalar(&mut Rng::new(46));
}
