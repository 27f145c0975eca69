//! The tensor element types of GGUF files and their block geometry.

/// A ggml / GGUF tensor element type. The discriminants are the type ids
/// stored in GGUF tensor-info records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
}

/// Elements per block of the 32-element ("legacy") quantization formats.
pub const QK32: usize = 32;
/// Elements per super-block of the K-quant formats.
pub const QK_K: usize = 256;

impl GgmlType {
    /// Every supported type, in type-id order.
    pub const ALL: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::BF16,
    ];

    /// Maps a GGUF tensor type id to a type; `None` for ids this crate does
    /// not support (IQ*, TQ*, MXFP4, integer types, removed ids 4 and 5, ...).
    pub fn from_u32(v: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| *t as u32 == v)
    }

    /// The type's name as gguf-py / llama.cpp tooling spells it ("F32", "Q4_K", "BF16").
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Elements per block: 1 for F32/F16/BF16, 32 for Q4_0..Q8_1, 256 for K-quants.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 | GgmlType::Q8_1 => QK32,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::Q8_K => QK_K,
        }
    }

    /// Bytes per block (the size of the matching `#[repr(C)]` struct in [`crate::blocks`]).
    pub fn type_size(self) -> usize {
        use crate::blocks::*;
        use core::mem::size_of;
        match self {
            GgmlType::F32 => size_of::<F32Le>(),
            GgmlType::F16 => size_of::<F16Le>(),
            GgmlType::BF16 => size_of::<Bf16Le>(),
            GgmlType::Q4_0 => size_of::<BlockQ4_0>(),
            GgmlType::Q4_1 => size_of::<BlockQ4_1>(),
            GgmlType::Q5_0 => size_of::<BlockQ5_0>(),
            GgmlType::Q5_1 => size_of::<BlockQ5_1>(),
            GgmlType::Q8_0 => size_of::<BlockQ8_0>(),
            GgmlType::Q8_1 => size_of::<BlockQ8_1>(),
            GgmlType::Q2_K => size_of::<BlockQ2_K>(),
            GgmlType::Q3_K => size_of::<BlockQ3_K>(),
            GgmlType::Q4_K => size_of::<BlockQ4_K>(),
            GgmlType::Q5_K => size_of::<BlockQ5_K>(),
            GgmlType::Q6_K => size_of::<BlockQ6_K>(),
            GgmlType::Q8_K => size_of::<BlockQ8_K>(),
        }
    }

    /// Bytes needed to store `n` elements; `None` if `n` is not a multiple of
    /// [`block_size`](Self::block_size) (or the byte count overflows `usize`).
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size())
    }
}

impl core::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
