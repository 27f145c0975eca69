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
}
