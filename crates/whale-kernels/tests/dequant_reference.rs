//! `dequantize_row` against fixtures produced by an independent
//! implementation: the numpy dequantizers of the PyPI `gguf` package
//! (see `tests/data/gen_dequant_fixtures.py` for how they were made and how
//! to regenerate them; Q8_1 and Q8_K, which that package lacks, are plain
//! numpy `q * d` in the same script).
//!
//! Tolerance: none, the comparison is bit for bit. The reference computes in
//! float32 with the same operations in the same order as the format
//! definition (e.g. `(d * sc) * q - dmin * m`, `d * q + m`), each rounded
//! once, and numpy never fuses a multiply and an add; our decoders do the
//! same operations, so any difference is a bug (a wrong bit layout would
//! show up as wildly different values anyway).

use std::path::PathBuf;
use whale_kernels::{dequantize_row, GgmlType};

struct Fixture {
    ty: GgmlType,
    data: Vec<u8>,
    expected: Vec<f32>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn load(ty: GgmlType) -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("dequant_{}.bin", ty.name().to_ascii_lowercase()));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&raw[0..4], b"WKFX", "{}: bad magic", path.display());
    assert_eq!(u32_at(&raw, 4), 1, "{}: version", path.display());
    let id = u32_at(&raw, 8);
    assert_eq!(GgmlType::from_u32(id), Some(ty), "{}: type id {id}", path.display());
    let n = u32_at(&raw, 12) as usize;
    let nb = u32_at(&raw, 16) as usize;
    assert_eq!(raw.len(), 20 + nb + 4 * n, "{}: file size", path.display());
    let data = raw[20..20 + nb].to_vec();
    let expected = raw[20 + nb..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Fixture { ty, data, expected }
}

fn assert_bit_equal(ty: GgmlType, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            g.to_bits() == e.to_bits(),
            "{ty}: element {i} (block {}, offset {}): got {g:e} ({:#010x}), gguf-py gives {e:e} ({:#010x})",
            i / ty.block_size(),
            i % ty.block_size(),
            g.to_bits(),
            e.to_bits()
        );
    }
}

fn check(ty: GgmlType) {
    let f = load(ty);
    assert_eq!(f.ty.row_bytes(f.expected.len()), Some(f.data.len()));
    assert!(f.expected.len() >= 8 * ty.block_size().max(32), "{ty}: fixture too small");
    // The fixtures hold non-trivial values (guards against an all-zero file).
    assert!(f.expected.iter().filter(|v| **v != 0.0).count() > f.expected.len() / 2);

    let mut got = vec![f32::NAN; f.expected.len()];
    dequantize_row(ty, &f.data, &mut got).unwrap();
    assert_bit_equal(ty, &got, &f.expected);

    // Block by block gives the same values as the whole row.
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let mut piece = vec![f32::NAN; bs];
    for (b, block) in f.data.chunks_exact(ts).enumerate() {
        dequantize_row(ty, block, &mut piece).unwrap();
        assert_bit_equal(ty, &piece, &f.expected[b * bs..(b + 1) * bs]);
    }
}

macro_rules! fixture_tests {
    ($($name:ident => $ty:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(GgmlType::$ty);
            }
        )*
    };
}

fixture_tests! {
    dequant_f32 => F32,
    dequant_f16 => F16,
    dequant_bf16 => BF16,
    dequant_q4_0 => Q4_0,
    dequant_q4_1 => Q4_1,
    dequant_q5_0 => Q5_0,
    dequant_q5_1 => Q5_1,
    dequant_q8_0 => Q8_0,
    dequant_q8_1 => Q8_1,
    dequant_q2_k => Q2_K,
    dequant_q3_k => Q3_K,
    dequant_q4_k => Q4_K,
    dequant_q5_k => Q5_K,
    dequant_q6_k => Q6_K,
    dequant_q8_k => Q8_K,
    dequant_iq2_xxs => IQ2_XXS,
    dequant_iq2_xs => IQ2_XS,
    dequant_iq2_s => IQ2_S,
    dequant_iq3_xxs => IQ3_XXS,
    dequant_iq3_s => IQ3_S,
    dequant_iq1_s => IQ1_S,
    dequant_iq1_m => IQ1_M,
    dequant_iq4_nl => IQ4_NL,
    dequant_iq4_xs => IQ4_XS,
    dequant_tq1_0 => TQ1_0,
    dequant_tq2_0 => TQ2_0,
}

/// Every supported type has a fixture (so a new type cannot be added untested).
#[test]
fn every_type_has_a_fixture() {
    for ty in GgmlType::ALL {
        let _ = load(ty);
    }
}
