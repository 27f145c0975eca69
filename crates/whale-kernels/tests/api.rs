//! Type table, length validation and programmer-error panics.

mod common;

use common::{random_row, Rng};
use whale_kernels::dispatch::{self, SimdLevel};
use whale_kernels::{dequantize_row, matmul, matvec, vec_dot, GgmlType, KernelError};

/// (type, GGUF id, name, elements per block, bytes per block), as in the
/// GGUF / ggml format description.
const TABLE: [(GgmlType, u32, &str, usize, usize); 26] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
];

#[test]
fn type_table() {
    assert_eq!(GgmlType::ALL.len(), TABLE.len());
    for (ty, id, name, bs, ts) in TABLE {
        assert_eq!(ty as u32, id, "{name}");
        assert_eq!(GgmlType::from_u32(id), Some(ty), "{name}");
        assert_eq!(ty.name(), name);
        assert_eq!(ty.to_string(), name);
        assert_eq!(ty.block_size(), bs, "{name}");
        assert_eq!(ty.type_size(), ts, "{name}");
        assert!(GgmlType::ALL.contains(&ty));
    }
}

#[test]
fn unsupported_ids() {
    // 4, 5: removed Q4_2/Q4_3; 24..=28: I8..I64, F64; 31..=33: Q4_0_4_4 etc.; 36..: IQ4_NL_4_4 etc., MXFP4.
    let supported: Vec<u32> = TABLE.iter().map(|t| t.1).collect();
    for id in 0..64 {
        assert_eq!(GgmlType::from_u32(id).is_some(), supported.contains(&id), "id {id}");
    }
    assert_eq!(GgmlType::from_u32(u32::MAX), None);
}

#[test]
fn row_bytes() {
    assert_eq!(GgmlType::F32.row_bytes(3), Some(12));
    assert_eq!(GgmlType::BF16.row_bytes(0), Some(0));
    assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
    assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
    assert_eq!(GgmlType::Q6_K.row_bytes(896 * 4), Some(14 * 210));
    assert_eq!(GgmlType::Q4_K.row_bytes(128), None);
    assert_eq!(GgmlType::Q8_K.row_bytes(usize::MAX / 256 * 256), None, "overflow");
}

#[test]
fn dequantize_bad_lengths_are_errors() {
    let mut rng = Rng::new(11);
    for ty in GgmlType::ALL {
        let bs = ty.block_size();
        let row = random_row(&mut rng, ty, bs * 2);
        let mut out = vec![0f32; bs * 2];
        assert_eq!(dequantize_row(ty, &row, &mut out), Ok(()));
        // One byte too many / too few.
        let long = [row.as_slice(), &[0u8]].concat();
        let err = dequantize_row(ty, &long, &mut out).unwrap_err();
        assert_eq!(err, KernelError::BadLength { ty, elements: bs * 2, bytes: row.len() + 1 });
        assert!(err.to_string().contains(ty.name()), "{err}");
        let err = dequantize_row(ty, &row[..row.len() - 1], &mut out).unwrap_err();
        assert!(matches!(err, KernelError::BadLength { .. }), "{err:?}");
        // Right bytes for a different element count.
        assert!(dequantize_row(ty, &row, &mut out[..bs]).is_err());
        // Empty is fine.
        assert_eq!(dequantize_row(ty, &[], &mut []), Ok(()));
        if bs > 1 {
            let err = dequantize_row(ty, &row, &mut out[..bs + 1]).unwrap_err();
            assert_eq!(err, KernelError::NotBlockMultiple { ty, elements: bs + 1 });
            let e: &dyn std::error::Error = &err;
            assert!(e.to_string().contains("block size"), "{e}");
        }
    }
}

#[test]
#[should_panic(expected = "vec_dot: a Q4_K row of 256 elements takes 144 bytes, got 143")]
fn vec_dot_bad_row_panics() {
    vec_dot(GgmlType::Q4_K, &[0u8; 143], &[0f32; 256]);
}

#[test]
#[should_panic(expected = "not a multiple of the Q8_0 block size 32")]
fn vec_dot_bad_x_panics() {
    vec_dot(GgmlType::Q8_0, &[0u8; 34], &[0f32; 31]);
}

#[test]
#[should_panic(expected = "matvec: w has 100 bytes, expected rows * row_bytes = 3 * 34")]
fn matvec_bad_w_panics() {
    let mut y = [0f32; 3];
    matvec(GgmlType::Q8_0, &[0u8; 100], 3, 32, &[0f32; 32], &mut y, 1);
}

#[test]
#[should_panic(expected = "matvec: y has 2 elements, expected rows = 3")]
fn matvec_bad_y_panics() {
    let mut y = [0f32; 2];
    matvec(GgmlType::Q8_0, &[0u8; 102], 3, 32, &[0f32; 32], &mut y, 1);
}

#[test]
#[should_panic(expected = "matvec: x has 31 elements, expected cols = 32")]
fn matvec_bad_x_panics() {
    let mut y = [0f32; 3];
    matvec(GgmlType::Q8_0, &[0u8; 102], 3, 32, &[0f32; 31], &mut y, 1);
}

#[test]
#[should_panic(expected = "matmul: x has 64 elements, expected m * cols = 3 * 32")]
fn matmul_bad_x_panics() {
    let mut y = [0f32; 9];
    matmul(GgmlType::Q8_0, &[0u8; 102], 3, 32, &[0f32; 64], 3, &mut y, 1);
}

#[test]
#[should_panic(expected = "matmul: y has 8 elements, expected m * rows = 3 * 3")]
fn matmul_bad_y_panics() {
    let mut y = [0f32; 8];
    matmul(GgmlType::Q8_0, &[0u8; 102], 3, 32, &[0f32; 96], 3, &mut y, 1);
}

#[test]
#[should_panic(expected = "matmul: cols = 48 is not a multiple of the Q8_0 block size 32")]
fn matmul_bad_cols_panics() {
    let mut y = [0f32; 6];
    matmul(GgmlType::Q8_0, &[], 3, 48, &[0f32; 96], 2, &mut y, 1);
}

#[test]
fn simd_level_choice() {
    assert!(SimdLevel::Scalar.is_available());
    assert_eq!(SimdLevel::available()[0], SimdLevel::Scalar);
    let best = SimdLevel::best_available();
    assert!(best.is_available());
    assert_eq!(dispatch::choose(Some("scalar")), SimdLevel::Scalar);
    assert_eq!(dispatch::choose(Some(" SCALAR ")), SimdLevel::Scalar);
    assert_eq!(dispatch::choose(None), best);
    assert_eq!(dispatch::choose(Some("auto")), best);
    assert_eq!(dispatch::choose(Some("no-such-level")), best);
    let avx2 = dispatch::choose(Some("avx2"));
    assert!(avx2.is_available());
    if SimdLevel::Avx2Fma.is_available() {
        assert_eq!(avx2, SimdLevel::Avx2Fma);
    }
    let avx512 = dispatch::choose(Some("AVX512"));
    assert_eq!(avx512, if SimdLevel::Avx512Vnni.is_available() { SimdLevel::Avx512Vnni } else { best });
    let amx = dispatch::choose(Some("amx"));
    assert_eq!(amx, if SimdLevel::Amx.is_available() { SimdLevel::Amx } else { best });
    // Levels are ordered: a CPU with a level has all the lower ones of its
    // architecture (x86-64: scalar, avx2, avx512, amx; AArch64: scalar, neon).
    let avail = SimdLevel::available();
    let arch: Vec<SimdLevel> = if cfg!(target_arch = "aarch64") {
        vec![SimdLevel::Scalar, SimdLevel::Neon]
    } else {
        SimdLevel::ALL.iter().copied().filter(|&l| l != SimdLevel::Neon).collect()
    };
    assert_eq!(avail, arch[..avail.len()].to_vec());
    assert_eq!(dispatch::choose(Some("neon")), if SimdLevel::Neon.is_available() { SimdLevel::Neon } else { best });
    assert_eq!(best, *avail.last().unwrap());
    assert!(dispatch::active().is_available());
    for level in SimdLevel::ALL {
        assert!(dispatch::choose(Some(level.name())).is_available());
    }
}

/// The bandwidth probe's reader sums every word (any length, wrapping).
#[test]
fn sum_words_is_the_wrapping_sum() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let words: Vec<u64> = (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    for n in [0, 1, 15, 16, 17, 333, 1000] {
        let want = words[..n].iter().fold(0u64, |s, &w| s.wrapping_add(w));
        assert_eq!(whale_kernels::matmul::sum_words(&words[..n]), want, "n = {n}");
    }
}
