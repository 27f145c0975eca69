//! One `#[repr(C)]` struct per storage format, laid out byte for byte as in
//! GGUF files (all multi-byte fields little-endian).
//!
//! Every field is a byte array (or a wrapper around one), so every struct has
//! alignment 1 and no padding: a `&[u8]` of the right length can always be
//! reinterpreted as a slice of blocks with [`bytemuck::cast_slice`], whatever
//! its address inside a memory-mapped file. Sizes are checked at compile time.

use bytemuck::{Pod, Zeroable};
use core::mem::{align_of, size_of};
use half::{bf16, f16};

/// A little-endian IEEE-754 binary16 value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct F16Le(pub [u8; 2]);

impl F16Le {
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f16::from_bits(u16::from_le_bytes(self.0)).to_f32()
    }
    pub fn from_f32(v: f32) -> Self {
        F16Le(f16::from_f32(v).to_bits().to_le_bytes())
    }
}

/// A little-endian bfloat16 value (the top 16 bits of an f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct Bf16Le(pub [u8; 2]);

impl Bf16Le {
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f32::from_bits((u16::from_le_bytes(self.0) as u32) << 16)
    }
    pub fn from_f32(v: f32) -> Self {
        Bf16Le(bf16::from_f32(v).to_bits().to_le_bytes())
    }
}

/// A float8 e4m3fn code (DeepSeek's FP8 weights; see [`crate::fp8`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct F8E4m3(pub [u8; 1]);

/// A little-endian IEEE-754 binary32 value (unaligned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct F32Le(pub [u8; 4]);

impl F32Le {
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f32::from_le_bytes(self.0)
    }
    pub fn from_f32(v: f32) -> Self {
        F32Le(v.to_le_bytes())
    }
}

/// A little-endian i16 (unaligned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct I16Le(pub [u8; 2]);

impl I16Le {
    #[inline(always)]
    pub fn get(self) -> i16 {
        i16::from_le_bytes(self.0)
    }
}

/// Q4_0: 32 elements, `x = (q - 8) * d`. `qs[j]` holds element `j` in its low
/// nibble and element `j + 16` in its high nibble.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: F16Le,
    pub qs: [u8; 16],
}

/// Q4_1: 32 elements, `x = q * d + m`, nibble order as Q4_0.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qs: [u8; 16],
}

/// Q5_0: 32 elements, `x = (q - 16) * d`; the low 4 bits of `q` as in Q4_0,
/// bit 4 of element `i` is bit `i` of the little-endian u32 `qh`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// Q5_1: 32 elements, `x = q * d + m`, bits as Q5_0.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// Q8_0: 32 elements, `x = q * d`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: F16Le,
    pub qs: [i8; 32],
}

/// Q8_1: 32 elements, `x = q * d`; `s` (= d * sum(q)) is only used by
/// integer dot products and ignored when dequantizing.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: F16Le,
    pub s: F16Le,
    pub qs: [i8; 32],
}

/// Q2_K: 256 elements in 16 groups of 16. `scales[g]`: low nibble scale,
/// high nibble min; `x = d * sc * q - dmin * m` with 2-bit `q`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2_K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: F16Le,
    pub dmin: F16Le,
}

/// Q3_K: 256 elements in 16 groups of 16, 3-bit `q` (2 low bits in `qs`,
/// the third in `hmask`), 16 signed 6-bit scales (offset 32) packed in `scales`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3_K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: F16Le,
}

/// Q4_K: 256 elements in 8 groups of 32, 4-bit `q`, 8 6-bit scales and
/// 8 6-bit mins packed in `scales`; `x = d * sc * q - dmin * m`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

/// Q5_K: as Q4_K with a fifth bit per element in `qh`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

/// Q6_K: 256 elements in 16 groups of 16, 6-bit `q` (low 4 bits in `ql`,
/// high 2 in `qh`), signed 8-bit scales; `x = d * scale * (q - 32)`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6_K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: F16Le,
}

/// Q8_K: 256 elements, `x = q * d` with an f32 `d`; `bsums` (sums of groups
/// of 16 quants) only serve integer dot products.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_K {
    pub d: F32Le,
    pub qs: [i8; 256],
    pub bsums: [I16Le; 16],
}

// ---------------------------------------------------------------------------
// The i-quants and ternary types (decoders and kernels in `crate::iq`). Every
// multi-byte field is little-endian; `u16` arrays are kept as bytes.
// ---------------------------------------------------------------------------

/// IQ2_XXS (2.06 bits a weight): per 32 elements, 8 bytes: four 8-bit
/// indices into the 256-entry E8 grid, then a little-endian u32 holding four
/// 7-bit sign codes and (top 4 bits) the scale.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq2Xxs {
    pub d: F16Le,
    pub qs: [u8; 64],
}

/// IQ2_XS (2.31 bits): per 8 elements a u16: 9-bit grid index (512 entries)
/// and a 7-bit sign code; a 4-bit scale per 16 elements.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq2Xs {
    pub d: F16Le,
    pub qs: [u8; 64],
    pub scales: [u8; 8],
}

/// IQ2_S (2.5 bits): per 8 elements an 8-bit grid index (`qs[..32]`) with
/// two more bits in `qh` (1024 entries) and 8 explicit sign bits
/// (`qs[32..]`); a 4-bit scale per 16 elements.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq2S {
    pub d: F16Le,
    pub qs: [u8; 64],
    pub qh: [u8; 8],
    pub scales: [u8; 8],
}

/// IQ3_XXS (3.06 bits): per 4 elements an 8-bit index into a 256-entry grid
/// (`qs[..64]`); per 32 elements a u32 of four 7-bit sign codes and a 4-bit
/// scale (`qs[64..]`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq3Xxs {
    pub d: F16Le,
    pub qs: [u8; 96],
}

/// IQ3_S (3.44 bits): per 4 elements a 9-bit grid index (8 bits in `qs`, the
/// ninth in `qh`; 512 entries), one sign bit per element, a 4-bit scale per
/// 32 elements.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq3S {
    pub d: F16Le,
    pub qs: [u8; 64],
    pub qh: [u8; 8],
    pub signs: [u8; 32],
    pub scales: [u8; 4],
}

/// IQ1_S (1.56 bits): per 8 elements an 11-bit index into the 2048-entry
/// ternary grid (8 bits in `qs`, 3 in `qh`); per 32 elements (one u16 of
/// `qh`) a 3-bit scale and the sign of a ±1/8 shift.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq1S {
    pub d: F16Le,
    pub qs: [u8; 32],
    pub qh: [u8; 16],
}

/// IQ1_M (1.75 bits): as IQ1_S with the shift sign per 8 elements and a
/// 3-bit scale per 16; the block's f16 `d` is spread over the top nibbles of
/// the four u16 words of `scales`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq1M {
    pub qs: [u8; 32],
    pub qh: [u8; 16],
    pub scales: [u8; 8],
}

/// IQ4_NL (4.5 bits, 32-element blocks): 4-bit indices into a fixed
/// non-linear table of 16 values, `x = d * table[q]`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Nl {
    pub d: F16Le,
    pub qs: [u8; 16],
}

/// IQ4_XS (4.25 bits): IQ4_NL's table with a 6-bit scale per 32 elements
/// (low 4 bits in `scales_l`, high 2 in the u16 `scales_h`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Xs {
    pub d: F16Le,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}

/// TQ1_0 (1.69 bits, ternary): base-3 digits packed five (`qs`) or four
/// (`qh`) to a byte, `x = d * (digit - 1)`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTq1_0 {
    pub qs: [u8; 48],
    pub qh: [u8; 4],
    pub d: F16Le,
}

/// TQ2_0 (2.06 bits, ternary): 2-bit `q`, `x = d * (q - 1)`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTq2_0 {
    pub qs: [u8; 64],
    pub d: F16Le,
}

macro_rules! assert_layout {
    ($($t:ty => $size:expr),* $(,)?) => {
        $(
            const _: () = assert!(size_of::<$t>() == $size);
            const _: () = assert!(align_of::<$t>() == 1);
        )*
    };
}

assert_layout! {
    F32Le => 4,
    F16Le => 2,
    Bf16Le => 2,
    F8E4m3 => 1,
    BlockQ4_0 => 18,
    BlockQ4_1 => 20,
    BlockQ5_0 => 22,
    BlockQ5_1 => 24,
    BlockQ8_0 => 34,
    BlockQ8_1 => 36,
    BlockQ2_K => 84,
    BlockQ3_K => 110,
    BlockQ4_K => 144,
    BlockQ5_K => 176,
    BlockQ6_K => 210,
    BlockQ8_K => 292,
    BlockIq2Xxs => 66,
    BlockIq2Xs => 74,
    BlockIq2S => 82,
    BlockIq3Xxs => 98,
    BlockIq3S => 110,
    BlockIq1S => 50,
    BlockIq1M => 56,
    BlockIq4Nl => 18,
    BlockIq4Xs => 136,
    BlockTq1_0 => 54,
    BlockTq2_0 => 66,
}
