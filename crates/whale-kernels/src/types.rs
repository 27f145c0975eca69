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
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    /// Not a GGUF type (its id is outside GGUF's range and it is not in
    /// [`GgmlType::ALL`], so no GGUF file can name it): the float8 e4m3fn
    /// bytes of a DeepSeek FP8 safetensors checkpoint kept as they are. Their
    /// 128×128 block scales travel beside them, and only [`crate::fp8`]
    /// reads them scaled; [`crate::dequantize_row`] gives the codes' values
    /// before their scales.
    F8_E4M3 = 0x1_0000,
}

/// Elements per block of the 32-element ("legacy") quantization formats.
pub const QK32: usize = 32;
/// Elements per super-block of the K-quant formats.
pub const QK_K: usize = 256;

impl GgmlType {
    /// Every supported type, in type-id order.
    pub const ALL: [GgmlType; 26] = [
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
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
    ];

    /// Maps a GGUF tensor type id to a type; `None` for ids this crate does
    /// not support (MXFP4, integer types, removed ids 4 and 5, ...).
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
            GgmlType::IQ2_XXS => "IQ2_XXS",
            GgmlType::IQ2_XS => "IQ2_XS",
            GgmlType::IQ3_XXS => "IQ3_XXS",
            GgmlType::IQ1_S => "IQ1_S",
            GgmlType::IQ4_NL => "IQ4_NL",
            GgmlType::IQ3_S => "IQ3_S",
            GgmlType::IQ2_S => "IQ2_S",
            GgmlType::IQ4_XS => "IQ4_XS",
            GgmlType::IQ1_M => "IQ1_M",
            GgmlType::TQ1_0 => "TQ1_0",
            GgmlType::TQ2_0 => "TQ2_0",
            GgmlType::F8_E4M3 => "F8_E4M3",
        }
    }

    /// Elements per block: 1 for F32/F16/BF16, 32 for Q4_0..Q8_1 and IQ4_NL,
    /// 256 for the K-quants, the other i-quants and the ternary types.
    pub fn block_size(self) -> usize {
        use GgmlType as G;
        match self {
            G::F32 | G::F16 | G::BF16 | G::F8_E4M3 => 1,
            G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::Q8_1 | G::IQ4_NL => QK32,
            G::Q2_K | G::Q3_K | G::Q4_K | G::Q5_K | G::Q6_K | G::Q8_K => QK_K,
            G::IQ2_XXS | G::IQ2_XS | G::IQ2_S | G::IQ3_XXS | G::IQ3_S | G::IQ1_S | G::IQ1_M | G::IQ4_XS => QK_K,
            G::TQ1_0 | G::TQ2_0 => QK_K,
        }
    }

    /// Whether this is one of the codebook ("i-quant") or ternary formats,
    /// whose decoders and kernels live in [`crate::iq`].
    pub fn is_iquant(self) -> bool {
        use GgmlType as G;
        matches!(
            self,
            G::IQ2_XXS
                | G::IQ2_XS
                | G::IQ2_S
                | G::IQ3_XXS
                | G::IQ3_S
                | G::IQ1_S
                | G::IQ1_M
                | G::IQ4_NL
                | G::IQ4_XS
                | G::TQ1_0
                | G::TQ2_0
        )
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
            GgmlType::IQ2_XXS => size_of::<BlockIq2Xxs>(),
            GgmlType::IQ2_XS => size_of::<BlockIq2Xs>(),
            GgmlType::IQ2_S => size_of::<BlockIq2S>(),
            GgmlType::IQ3_XXS => size_of::<BlockIq3Xxs>(),
            GgmlType::IQ3_S => size_of::<BlockIq3S>(),
            GgmlType::IQ1_S => size_of::<BlockIq1S>(),
            GgmlType::IQ1_M => size_of::<BlockIq1M>(),
            GgmlType::IQ4_NL => size_of::<BlockIq4Nl>(),
            GgmlType::IQ4_XS => size_of::<BlockIq4Xs>(),
            GgmlType::TQ1_0 => size_of::<BlockTq1_0>(),
            GgmlType::TQ2_0 => size_of::<BlockTq2_0>(),
            GgmlType::F8_E4M3 => 1,
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
