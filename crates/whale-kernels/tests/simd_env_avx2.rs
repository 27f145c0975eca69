//! `WHALE_SIMD=avx2` forces the AVX2 level even on an AVX-512 CPU (and is
//! ignored where AVX2 is missing). A single test in its own process, so it
//! can set the variable before the level is first read.

mod common;

use common::{random_row, Rng};
use whale_kernels::{dispatch, matmul_q, quantize_acts, vec_dot_q, vec_dot_q_with, GgmlType, SimdLevel};

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
}
