//! Weights stored eight rows interleaved (`whale_kernels::x8`, Q2_K, Q4_K,
//! Q5_K, Q6_K, IQ4_XS and the 32-element Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL): the layout
//! round-trips to the file's bytes, its products are the scalar
//! reference's bits (here at this CPU's best level; `simd_env.rs` runs the
//! same check at the scalar level, where groups are de-interleaved for the
//! ordinary kernels, and `simd_env_avx2.rs` at AVX2, which has kernels and
//! panels of its own for the layout), and bad shapes are errors.

mod common;

use common::{random_row, Rng};
use whale_kernels::{x8, GgmlType, KernelError};

#[test]
fn interleaving_moves_every_word_and_deinterleaving_restores_the_file_bytes() {
    let mut rng = Rng::new(43);
    for ty in [GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS] {
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
            if ty == GgmlType::Q2_K {
                // Word 20 (`d` and `dmin`, past the 4×8 transpose of words
                // 16..20) of row 6 at 20 · 32 + 24.
                assert_eq!(wx[20 * 32 + 24..][..4], w[6 * rb + 80..][..4]);
            }
            if ty == GgmlType::IQ4_XS {
                // Word 33 (its last, moved word by word) of row 7.
                assert_eq!(wx[33 * 32 + 28..][..4], w[7 * rb + 132..][..4]);
            }
            x8::deinterleave_in_place(ty, rows, cols, &mut wx).unwrap();
            assert_eq!(wx, w, "{ty} {rows}x{cols}");
        }
    }
}

#[test]
fn the_32_element_types_keep_d_before_the_words_q8_0_flips_and_q5_0_stores_masks() {
    let mut rng = Rng::new(45);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::IQ4_NL] {
        for (rows, cols) in [(8, 32), (16, 1408)] {
            let (rb, bs) = (ty.row_bytes(cols).unwrap(), ty.type_size());
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect();
            let mut wx = w.clone();
            x8::interleave_in_place(ty, rows, cols, &mut wx).unwrap();
            // Group 1 (or 0), block 1 (or 0): the group block's start.
            let (g, b) = (rows / 8 - 1, cols / 32 - 1);
            let at = g * 8 * rb + b * 8 * bs;
            let block = |r: usize| &w[(8 * g + r) * rb + b * bs..][..bs];
            let head = if ty == GgmlType::Q4_1 { 4 } else { 2 };
            for r in 0..8 {
                // Row r's d (and m) at `head · r`.
                assert_eq!(wx[at + head * r..][..head], block(r)[..head], "{ty}: row {r}'s head");
            }
            let words = at + 8 * head;
            match ty {
                GgmlType::Q8_0 => {
                    // Row 3's quants 4..8 (word 1) at 32 + 12, each + 128.
                    let want: Vec<u8> = block(3)[2 + 4..2 + 8].iter().map(|q| q ^ 0x80).collect();
                    assert_eq!(wx[words + 32 + 12..][..4], want[..], "{ty}");
                }
                GgmlType::Q5_0 => {
                    // Mask word m: nibble m of row r's qh as its nibble r.
                    for m in 0..8 {
                        let mask = u32::from_le_bytes(wx[words + 4 * m..][..4].try_into().unwrap());
                        for r in 0..8 {
                            let qh = u32::from_le_bytes(block(r)[2..6].try_into().unwrap());
                            assert_eq!((mask >> (4 * r)) & 0xF, (qh >> (4 * m)) & 0xF, "{ty}: mask {m} row {r}");
                        }
                    }
                    // Then the quants: row 6's word 2 at 32 · 3 + 24.
                    assert_eq!(wx[words + 96 + 24..][..4], block(6)[6 + 8..6 + 12], "{ty}");
                }
                _ => assert_eq!(wx[words + 32 + 8..][..4], block(2)[head + 4..head + 8], "{ty}"),
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
        x8::interleave_in_place(GgmlType::Q5_1, 8, 256, &mut w),
        Err(KernelError::NotInterleaved { ty: GgmlType::Q5_1 })
    );
    assert_eq!(x8::interleave_in_place(ty, 8, 300, &mut w), Err(KernelError::NotBlockMultiple { ty, elements: 300 }));
    assert!(matches!(x8::deinterleave_in_place(ty, 8, 256, &mut w), Err(KernelError::BadLength { .. })));
    let err = x8::interleave_in_place(ty, 12, 256, &mut w).unwrap_err();
    assert!(err.to_string().contains("12 rows"), "{err}");
}

/// Interleaved and file-layout matrices together in one pool job
/// (`matmul_q_many`, `matmul_q_each`, as the engine runs Q/K/V or the
/// routed experts): every output is the bits of `matmul_q` on the matrix in
/// the file's layout. 40 rows over 2 threads split 20 + 20 in the file's
/// layout; interleaved, the shares must be whole groups (24 + 16), and a
/// share of 20 would read half a group. A decode's products go in one run
/// a thread, cut across them, so at 2, 3 and 5 threads runs end inside
/// products of both layouts.
#[test]
fn interleaved_and_file_products_share_one_job() {
    use whale_kernels::x8::Layout;
    use whale_kernels::{matmul_q, matmul_q_each, matmul_q_many, QProduct, QProductOwn};
    let mut rng = Rng::new(45);
    let cols = 2048;
    // (type, rows, layout): the Q6_K matrix of 24 rows stays in the file's
    // layout, as a loader leaves a matrix it does not rewrite.
    let specs = [
        (GgmlType::Q4_K, 40, Layout::X8),
        (GgmlType::Q6_K, 24, Layout::File),
        (GgmlType::Q6_K, 40, Layout::X8),
        (GgmlType::Q4_K, 8, Layout::X8),
    ];
    let file: Vec<Vec<u8>> =
        specs.iter().map(|&(ty, rows, _)| (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect()).collect();
    let stored: Vec<Vec<u8>> = specs
        .iter()
        .zip(&file)
        .map(|(&(ty, rows, layout), w)| {
            let mut w = w.clone();
            if layout == Layout::X8 {
                x8::interleave_in_place(ty, rows, cols, &mut w).unwrap();
            }
            w
        })
        .collect();
    for m in [1, 2, 5, 17] {
        let x = rng.vec_f32(m * cols);
        let want: Vec<Vec<f32>> = specs
            .iter()
            .zip(&file)
            .map(|(&(ty, rows, _), w)| {
                let mut y = vec![0f32; m * rows];
                matmul_q(ty, w, rows, cols, &x, m, &mut y, 1);
                y
            })
            .collect();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for threads in [1, 2, 3, 5] {
            let mut ys: Vec<Vec<f32>> = specs.iter().map(|s| vec![f32::NAN; m * s.1]).collect();
            let mut products: Vec<QProduct<'_>> = specs
                .iter()
                .zip(&stored)
                .zip(ys.iter_mut())
                .map(|((&(wty, rows, layout), w), y)| QProduct { wty, layout, w, rows, y })
                .collect();
            matmul_q_many(&mut products, cols, &x, m, threads);
            drop(products);
            for (k, (y, w)) in ys.iter().zip(&want).enumerate() {
                assert_eq!(bits(y), bits(w), "matmul_q_many: product {k} {:?}, m {m}, threads {threads}", specs[k]);
            }

            let mut ys: Vec<Vec<f32>> = specs.iter().map(|s| vec![f32::NAN; m * s.1]).collect();
            let mut products: Vec<QProductOwn<'_>> = specs
                .iter()
                .zip(&stored)
                .zip(ys.iter_mut())
                .map(|((&(wty, rows, layout), w), y)| QProductOwn { wty, layout, w, rows, cols, m, x: &x, y })
                .collect();
            matmul_q_each(&mut products, threads);
            drop(products);
            for (k, (y, w)) in ys.iter().zip(&want).enumerate() {
                assert_eq!(bits(y), bits(w), "matmul_q_each: product {k} {:?}, m {m}, threads {threads}", specs[k]);
            }
        }
    }
}

/// One row of an interleaved matrix, put back in the file's layout, is the
/// file's row; a row past the end is an error.
#[test]
fn a_row_of_an_interleaved_matrix_comes_back_as_in_the_file() {
    let mut rng = Rng::new(46);
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let (rows, cols) = (24, 512);
        let rb = ty.row_bytes(cols).unwrap();
        let w: Vec<u8> = (0..rows).flat_map(|_| random_row(&mut rng, ty, cols)).collect();
        let mut wx = w.clone();
        x8::interleave_in_place(ty, rows, cols, &mut wx).unwrap();
        let mut out = vec![0u8; rb];
        for r in 0..rows {
            x8::row_in_file_layout(ty, cols, &wx, r, &mut out).unwrap();
            assert_eq!(out, w[r * rb..(r + 1) * rb], "{ty} row {r}");
        }
        assert!(x8::row_in_file_layout(ty, cols, &wx, rows, &mut out).is_err());
        assert!(x8::row_in_file_layout(ty, cols, &wx[..rb * 12], 0, &mut out).is_err());
    }
}
