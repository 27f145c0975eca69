//! Weights stored eight rows interleaved (`whale_kernels::x8`, Q4_K and
//! Q6_K): the layout
//! round-trips to the file's bytes, its products are the scalar
//! reference's bits (here at this CPU's best level; `simd_env.rs` and
//! `simd_env_avx2.rs` run the same check at the scalar and AVX2 levels,
//! where groups are de-interleaved for the ordinary kernels), and bad
//! shapes are errors.

mod common;

use common::{random_row, Rng};
use whale_kernels::{x8, GgmlType, KernelError};

#[test]
fn interleaving_moves_every_word_and_deinterleaving_restores_the_file_bytes() {
    let mut rng = Rng::new(43);
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        for (rows, cols) in [(8, 256), (16, 2816)] {
            let rb = ty.row_bytes(cols).unwrap();
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect();
            let mut wx = w.clone();
            x8::interleave_in_place(ty, rows, cols, &mut wx).unwrap();
            assert_ne!(wx, w, "{ty} {rows}x{cols}: the layout changed nothing");
            // Word 1 of row 3's block 0 sits at byte 32 + 12.
            assert_eq!(wx[44..48], w[3 * rb + 4..][..4], "{ty}");
            if ty == GgmlType::Q6_K {
                // The two bytes of row 5's `d` (its block's last two) follow
                // the 52 whole words, row by row.
                assert_eq!(wx[52 * 32 + 2 * 5..][..2], w[5 * rb + 208..][..2]);
            }
            x8::deinterleave_in_place(ty, rows, cols, &mut wx).unwrap();
            assert_eq!(wx, w, "{ty} {rows}x{cols}");
        }
    }
}

#[test]
fn interleaved_products_give_the_scalar_reference_bits() {
    common::check_x8_matches_scalar(&mut Rng::new(44));
}

#[test]
fn shapes_and_types_without_an_interleaved_layout_are_errors() {
    let ty = GgmlType::Q4_K;
    let rb = ty.row_bytes(256).unwrap();
    let mut w = vec![0u8; 12 * rb];
    assert_eq!(x8::interleave_in_place(ty, 12, 256, &mut w), Err(KernelError::RowsNotGrouped { rows: 12 }));
    assert_eq!(
        x8::interleave_in_place(GgmlType::Q5_0, 8, 256, &mut w),
        Err(KernelError::NotInterleaved { ty: GgmlType::Q5_0 })
    );
    assert_eq!(x8::interleave_in_place(ty, 8, 300, &mut w), Err(KernelError::NotBlockMultiple { ty, elements: 300 }));
    assert!(matches!(x8::deinterleave_in_place(ty, 8, 256, &mut w), Err(KernelError::BadLength { .. })));
    let err = x8::interleave_in_place(ty, 12, 256, &mut w).unwrap_err();
    assert!(err.to_string().contains("12 rows"), "{err}");
}
