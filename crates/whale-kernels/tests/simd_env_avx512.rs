//! `WHALE_SIMD=avx512` selects the AVX-512 VNNI kernels without the AMX
//! tiles (on a CPU without AVX-512 it is ignored). A single test in its own
//! process, so it can set the variable before the level is first read. At
//! the default level an AMX CPU runs long batches (128 or more activation
//! rows for the 32-element types, 192 for Q6_K) on the tiles (`qdot.rs`
//! checks those); this checks that the vector
//! kernels still give the reference's bits at those batch sizes, and that
//! weights stored eight rows interleaved (`x8`) give them too, through the
//! panels (which put each block back as they unpack it) and this layout's
//! own row kernels.

mod common;

use common::{random_row, Rng};
use whale_kernels::{dispatch, matmul_q, quantize_acts, vec_dot_q_ref, GgmlType, SimdLevel};

#[test]
fn whale_simd_avx512_forces_vector_kernels() {
    std::env::set_var(dispatch::ENV_VAR, "avx512");
    let expected =
        if SimdLevel::Avx512Vnni.is_available() { SimdLevel::Avx512Vnni } else { SimdLevel::best_available() };
    assert_eq!(dispatch::active(), expected);
    let mut rng = Rng::new(43);
    for wty in [
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q2_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_XS,
    ] {
        let cols = wty.block_size().max(32) * 9;
        let rows = 19;
        let rb = wty.row_bytes(cols).unwrap();
        let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, wty, cols)).collect();
        for m in [16, 35] {
            let x = rng.vec_f32(m * cols);
            let acts = quantize_acts(wty, &x, m, cols);
            let mut y = vec![f32::NAN; m * rows];
            matmul_q(wty, &w, rows, cols, &x, m, &mut y, 2);
            for i in 0..m {
                for r in 0..rows {
                    let want = vec_dot_q_ref(wty, &w[r * rb..(r + 1) * rb], &acts, i);
                    assert_eq!(y[i * rows + r].to_bits(), want.to_bits(), "{wty} m={m} [{i}][{r}]");
                }
            }
        }
    }
    common::check_x8_matches_scalar(&mut rng);
}
