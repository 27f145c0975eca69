//! The codebook ("i-quant") formats IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
//! IQ3_XXS, IQ3_S, IQ4_NL, IQ4_XS and the ternary TQ1_0, TQ2_0: their
//! tables, reference decoders and kernels.
//!
//! # The formats
//!
//! Each i-quant block stores, per 8 (or 4) weights, an index into a fixed
//! lattice codebook ("grid") of small positive integers, a sign per weight
//! (explicit bits, or a 7-bit code expanded by [`KSIGNS`] to 8 signs with
//! even parity), and small integer scales per 16 or 32 weights, under one
//! f16 `d` per 256 weights. IQ1_S / IQ1_M grids are ternary (-1, 0, 1) with
//! a ±1/8 shift per 32 (IQ1_S) or 8 (IQ1_M) weights; IQ4_NL / IQ4_XS store
//! 4-bit indices into a 16-value non-linear table ([`KVALUES_IQ4`]). The bit
//! layouts are documented on the block structs ([`crate::blocks`]) and in
//! the decoders below; the grids ([`grids`]) come from gguf-py.
//!
//! # Integer form
//!
//! Every weight of these types is `d * sc[g] * q * F` with an integer `q`
//! (|q| <= 127), an integer scale `sc` per 16 elements and a per-type
//! power of two `F` ([`post_scale`]):
//!
//! | type            | `q`                          | `sc`          | `F`  |
//! |-----------------|------------------------------|---------------|------|
//! | IQ2_XXS/XS/S    | ±grid (8, 25, 43)            | `2·s + 1`     | 1/8  |
//! | IQ3_XXS         | ±grid (4 ..= 62)             | `2·s + 1`     | 1/4  |
//! | IQ3_S           | ±grid (1 ..= 15)             | `2·s + 1`     | 1    |
//! | IQ1_S / IQ1_M   | `8·g ± 1`, g ∈ {-1, 0, 1}    | `2·s + 1`     | 1/8  |
//! | IQ4_NL          | table value (-127 ..= 113)   | 1             | 1    |
//! | IQ4_XS          | table value                  | `s - 32`      | 1    |
//! | TQ1_0 / TQ2_0   | -1, 0, 1 (TQ2_0 also 2)      | 1             | 1    |
//!
//! so a dot product with 8-bit activations (Q8_K; Q8_0 for IQ4_NL) is an
//! exact integer sum per block, `isum = Σ_g sc[g] Σ_{j∈g} q_j·y_j`, and one
//! float step: block term `(d·da)·isum` into lane `b % 8`, the lanes reduced
//! as in [`crate::qdot`], times `F` (exact: a power of two). ggml computes the
//! same integers (IQ1_S: `sumi + 1/8·sumi1` = `(8·sumi + sumi1)/8`, exactly
//! in f32 at these magnitudes) but applies IQ4_XS's scales per 32 weights in
//! f32; the results agree to f32 rounding of the block sums, as for the
//! K-quants.
//!
//! No bit pattern of these blocks is invalid: every index field is exactly
//! as wide as its grid (256, 512, 1024 or 2048 entries), so there is no
//! out-of-range index to reject; a non-finite `d` decodes to non-finite
//! weights, as in every other format.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod grids;
pub(crate) mod kernels;

use crate::blocks::*;
use crate::dequant::{Dequantize, IntBlock};
use crate::types::{GgmlType, QK_K};

pub(crate) use kernels::{vec_dot, vec_dot_group};

/// The 16 values of IQ4_NL and IQ4_XS.
pub const KVALUES_IQ4: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// IQ4_XS's scale of 32-element sub-block `ib` of block `b` (its bytes):
/// six bits, nibble `ib` of `scales_l` (bytes 4..8) under bits `2ib..2ib
/// + 2` of `scales_h` (bytes 2..4), less 32.
#[inline(always)]
pub(crate) fn iq4_xs_scale(b: &[u8], ib: usize) -> i32 {
    let lo = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F;
    let hi = (u16::from_le_bytes([b[2], b[3]]) >> (2 * ib)) & 3;
    i32::from(lo | (hi as u8) << 4) - 32
}

/// [`KVALUES_IQ4`] plus 128: IQ4_NL's and IQ4_XS's weights as the unsigned
/// operand of the x86 byte products (`vpdpbusd`), whose sums then start at
/// `-128·Σy` as Q8_0's do (the interleaved layout's kernels).
#[cfg(target_arch = "x86_64")]
pub(crate) const KVALUES_IQ4_U: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES_IQ4[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

/// Sign codes: 7 stored bits `i` give 8 signs, bit `j` set meaning weight `j`
/// of the group is negative; the eighth bit makes the number of negative
/// weights even.
pub const KSIGNS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = (i as u8) | (((i as u32).count_ones() as u8 & 1) << 7);
        i += 1;
    }
    t
};

/// The value maps of the packed grids (see [`grids`]).
const MAP_IQ2: [u8; 3] = [0x08, 0x19, 0x2b];
const MAP_IQ3XXS: [u8; 8] = [0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3e];
const MAP_IQ3S: [u8; 8] = [0x01, 0x03, 0x05, 0x07, 0x09, 0x0b, 0x0d, 0x0f];
const MAP_IQ1: [i8; 3] = [-1, 0, 1];

/// Value `j` of entry `e` of a packed grid, as an index into its value map.
const fn packed_at(e: u16, bits: u32, j: u32) -> usize {
    ((e >> (bits * j)) & ((1 << bits) - 1)) as usize
}

/// Expands a grid of 8-value entries to little-endian u64s of bytes.
const fn expand8<const N: usize>(packed: &[u16; N], map: [u8; 3], scale: i8) -> [u64; N] {
    let mut t = [0u64; N];
    let mut i = 0;
    while i < N {
        let mut j = 0;
        while j < 8 {
            let v = (map[packed_at(packed[i], 2, j as u32)] as i8).wrapping_mul(scale);
            t[i] |= (v as u8 as u64) << (8 * j);
            j += 1;
        }
        i += 1;
    }
    t
}

/// Expands a grid of 4-value entries (3-bit indices) to little-endian u32s.
const fn expand4<const N: usize>(packed: &[u16; N], map: [u8; 8]) -> [u32; N] {
    let mut t = [0u32; N];
    let mut i = 0;
    while i < N {
        let mut j = 0;
        while j < 4 {
            t[i] |= (map[packed_at(packed[i], 3, j as u32)] as u32) << (8 * j);
            j += 1;
        }
        i += 1;
    }
    t
}

const fn iq1_map_as_u8() -> [u8; 3] {
    [MAP_IQ1[0] as u8, MAP_IQ1[1] as u8, MAP_IQ1[2] as u8]
}

/// The grids as the kernels read them: 8 (or 4) bytes per entry, byte `j`
/// the value of element `j`. IQ1_S's ternary values are stored times 8
/// (-8, 0, 8), ready for the `8·g ± 1` integer form.
pub(crate) static GRID_IQ2XXS: [u64; 256] = expand8(&grids::IQ2XXS_PACKED, MAP_IQ2, 1);
pub(crate) static GRID_IQ2XS: [u64; 512] = expand8(&grids::IQ2XS_PACKED, MAP_IQ2, 1);
pub(crate) static GRID_IQ2S: [u64; 1024] = expand8(&grids::IQ2S_PACKED, MAP_IQ2, 1);
pub(crate) static GRID_IQ3XXS: [u32; 256] = expand4(&grids::IQ3XXS_PACKED, MAP_IQ3XXS);
pub(crate) static GRID_IQ3S: [u32; 512] = expand4(&grids::IQ3S_PACKED, MAP_IQ3S);
pub(crate) static GRID_IQ1S_X8: [u64; 2048] = expand8(&grids::IQ1S_PACKED, iq1_map_as_u8(), 8);

/// The power of two `F` that the integer form leaves out (module docs).
#[inline(always)]
pub(crate) fn post_scale(wty: GgmlType) -> f32 {
    use GgmlType as G;
    match wty {
        G::IQ2_XXS | G::IQ2_XS | G::IQ2_S | G::IQ1_S | G::IQ1_M => 0.125,
        G::IQ3_XXS => 0.25,
        _ => 1.0,
    }
}

/// Sets the f16 super-block scale `d` of one block of an i-quant or ternary
/// type (`block` is exactly one block): at byte 0 for the IQ types, at the
/// end for TQ1_0 / TQ2_0, and for IQ1_M in the top nibbles of its four
/// scale words. For writers of synthetic weights and tests.
///
/// Panics if `ty` is not one of these types or `block` is not one block.
pub fn set_block_d(ty: GgmlType, block: &mut [u8], d: f32) {
    assert!(ty.is_iquant() && block.len() == ty.type_size(), "set_block_d: one {ty} block expected");
    let bits = F16Le::from_f32(d).0;
    match ty {
        GgmlType::TQ1_0 => block[52..54].copy_from_slice(&bits),
        GgmlType::TQ2_0 => block[64..66].copy_from_slice(&bits),
        GgmlType::IQ1_M => {
            let h = u16::from_le_bytes(bits);
            for i in 0..4 {
                let at = 48 + 2 * i;
                let w = u16::from_le_bytes([block[at], block[at + 1]]);
                let w = (w & 0x0FFF) | (((h >> (4 * i)) & 0xF) << 12);
                block[at..at + 2].copy_from_slice(&w.to_le_bytes());
            }
        }
        _ => block[0..2].copy_from_slice(&bits),
    }
}

// ---------------------------------------------------------------------------
// Reference decoding, element by element from the format definition. The
// float operations are gguf-py's, in its order (tests/dequant_reference.rs
// checks them bit for bit); `decode_ints` is the integer form that the
// scalar reference dot (`qdot::vec_dot_q_ref`) uses. Both read the packed
// grids, not the expanded tables of the kernels.
// ---------------------------------------------------------------------------

/// Little-endian u16 number `i` of `b` (also the kernels').
#[inline(always)]
fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[2 * i], b[2 * i + 1]])
}

#[inline(always)]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Grid value of element `j` of entry `idx` of an 8-value IQ2 grid.
fn iq2_value(packed: &[u16], idx: usize, j: usize) -> i32 {
    MAP_IQ2[packed_at(packed[idx], 2, j as u32)] as i32
}

/// A block of one of these types in the integer form: `(q, sc per 16
/// elements, d)` through `f(element, q)` for each of the 256 (or 32)
/// elements, and `scale(g)` for each group of 16. Shared by the float and
/// integer reference decoders so that the bit layout is written once.
struct Layout {
    q: [i8; QK_K],
    sc: [i32; 16],
    /// f32 factor per 16 elements, computed exactly as gguf-py does.
    dl: [f32; 16],
    /// IQ1 shifts as f32 (±0.125), per element (0 elsewhere).
    delta: [f32; QK_K],
    /// The grid value, per element, before sign (IQ1: -1, 0, 1).
    g: [f32; QK_K],
    /// Negative sign, per element.
    neg: [bool; QK_K],
    d: f32,
}

impl Layout {
    fn new() -> Layout {
        Layout {
            q: [0; QK_K],
            sc: [1; 16],
            dl: [0.0; 16],
            delta: [0.0; QK_K],
            g: [0.0; QK_K],
            neg: [false; QK_K],
            d: 0.0,
        }
    }
}

fn layout(wty: GgmlType, b: &[u8]) -> Layout {
    use GgmlType as G;
    let mut l = Layout::new();
    let f16 = |lo: u8, hi: u8| F16Le([lo, hi]).to_f32();
    match wty {
        G::IQ2_XXS | G::IQ3_XXS => {
            l.d = f16(b[0], b[1]);
            let qs = &b[2..];
            let iq3 = wty == G::IQ3_XXS;
            for ib in 0..8 {
                // IQ2_XXS: 8 bytes per 32 elements, indices then the u32;
                // IQ3_XXS: 8 index bytes per 32 elements, the u32s after all 64.
                let aux = if iq3 { u32_at(&qs[64..], ib) } else { u32_at(qs, 2 * ib + 1) };
                let s = aux >> 28;
                let half = if iq3 { 0.5 } else { 0.25 };
                for h in 0..2 {
                    l.sc[2 * ib + h] = 2 * s as i32 + 1;
                    l.dl[2 * ib + h] = (l.d * (0.5 + s as f32)) * half;
                }
                for k in 0..4 {
                    let signs = KSIGNS[((aux >> (7 * k)) & 127) as usize];
                    for j in 0..8 {
                        let e = 32 * ib + 8 * k + j;
                        let v = if iq3 {
                            let idx = qs[8 * ib + 2 * k + j / 4] as usize;
                            MAP_IQ3XXS[packed_at(grids::IQ3XXS_PACKED[idx], 3, (j % 4) as u32)] as i32
                        } else {
                            iq2_value(&grids::IQ2XXS_PACKED, qs[8 * ib + k] as usize, j)
                        };
                        l.set(e, v, signs >> j & 1 == 1);
                    }
                }
            }
        }
        G::IQ2_XS | G::IQ2_S => {
            l.d = f16(b[0], b[1]);
            let qs = &b[2..66];
            let (qh, scales) = if wty == G::IQ2_S { (&b[66..74], &b[74..82]) } else { (&b[..0], &b[66..74]) };
            for g in 0..16 {
                let s = (scales[g / 2] >> (4 * (g % 2))) & 0x0F;
                l.sc[g] = 2 * s as i32 + 1;
                l.dl[g] = (l.d * (0.5 + s as f32)) * 0.25;
            }
            for k in 0..32 {
                let (idx, signs) = if wty == G::IQ2_XS {
                    let w = u16_at(qs, k);
                    ((w & 511) as usize, KSIGNS[(w >> 9) as usize])
                } else {
                    let hi = (qh[k / 4] >> (2 * (k % 4))) & 3;
                    (qs[k] as usize | (hi as usize) << 8, qs[32 + k])
                };
                let packed: &[u16] = if wty == G::IQ2_XS { &grids::IQ2XS_PACKED } else { &grids::IQ2S_PACKED };
                for j in 0..8 {
                    l.set(8 * k + j, iq2_value(packed, idx, j), signs >> j & 1 == 1);
                }
            }
        }
        G::IQ3_S => {
            l.d = f16(b[0], b[1]);
            let (qs, qh, signs, scales) = (&b[2..66], &b[66..74], &b[74..106], &b[106..110]);
            for g in 0..16 {
                let s = (scales[g / 4] >> (4 * ((g / 2) % 2))) & 0x0F;
                l.sc[g] = 2 * s as i32 + 1;
                l.dl[g] = l.d * (1 + 2 * s as i32) as f32;
            }
            for k in 0..64 {
                let idx = qs[k] as usize | (((qh[k / 8] >> (k % 8)) & 1) as usize) << 8;
                for j in 0..4 {
                    let e = 4 * k + j;
                    let v = MAP_IQ3S[packed_at(grids::IQ3S_PACKED[idx], 3, j as u32)] as i32;
                    l.set(e, v, signs[e / 8] >> (e % 8) & 1 == 1);
                }
            }
        }
        G::IQ1_S | G::IQ1_M => {
            let m = wty == G::IQ1_M;
            let (qs, rest) = if m { (&b[..32], &b[32..]) } else { (&b[2..34], &b[34..]) };
            if m {
                let w = |i| u16_at(&rest[16..], i);
                let bits = (w(0) >> 12) | ((w(1) >> 8) & 0x00F0) | ((w(2) >> 4) & 0x0F00) | (w(3) & 0xF000);
                l.d = F16Le(bits.to_le_bytes()).to_f32();
            } else {
                l.d = f16(b[0], b[1]);
            }
            for g in 0..16 {
                let s =
                    if m { (u16_at(&rest[16..], g / 4) >> (3 * (g % 4))) & 7 } else { (u16_at(rest, g / 2) >> 12) & 7 };
                l.sc[g] = 2 * s as i32 + 1;
                l.dl[g] = l.d * (2 * s + 1) as f32;
            }
            for k in 0..32 {
                let (hi, neg_shift) = if m {
                    let nib = rest[k / 2] >> (4 * (k % 2));
                    ((nib & 7) as u16, nib & 8 != 0)
                } else {
                    let w = u16_at(rest, k / 4);
                    ((w >> (3 * (k % 4))) & 7, w & 0x8000 != 0)
                };
                let idx = qs[k] as usize | (hi as usize) << 8;
                for j in 0..8 {
                    let e = 8 * k + j;
                    let g = MAP_IQ1[packed_at(grids::IQ1S_PACKED[idx], 2, j as u32)];
                    l.g[e] = g as f32;
                    l.delta[e] = if neg_shift { -0.125 } else { 0.125 };
                    l.q[e] = 8 * g + if neg_shift { -1 } else { 1 };
                }
            }
        }
        G::IQ4_NL | G::IQ4_XS => {
            l.d = f16(b[0], b[1]);
            let (qs, n) = if wty == G::IQ4_NL { (&b[2..18], 1) } else { (&b[8..136], 8) };
            for ib in 0..n {
                if wty == G::IQ4_XS {
                    let s = iq4_xs_scale(b, ib);
                    for h in 0..2 {
                        l.sc[2 * ib + h] = s;
                        l.dl[2 * ib + h] = l.d * s as f32;
                    }
                }
                for j in 0..32 {
                    let byte = qs[16 * ib + j % 16];
                    let v = KVALUES_IQ4[((byte >> (4 * (j / 16))) & 0x0F) as usize];
                    l.q[32 * ib + j] = v;
                    l.g[32 * ib + j] = v as f32;
                }
            }
            if wty == G::IQ4_NL {
                l.dl = [l.d; 16];
            }
        }
        G::TQ1_0 | G::TQ2_0 => {
            let (d, digits) = if wty == G::TQ2_0 {
                let mut t = [0u8; QK_K];
                for (e, t) in t.iter_mut().enumerate() {
                    let (c, s, j) = (e / 128, (e % 128) / 32, e % 32);
                    *t = (b[32 * c + j] >> (2 * s)) & 3;
                }
                (f16(b[64], b[65]), t)
            } else {
                // Base-3 digit k of a byte v: ((v · 3^k mod 256) · 3) >> 8.
                let digit = |v: u8, k: u32| (((v.wrapping_mul(3u8.pow(k)) as u16) * 3) >> 8) as u8;
                let mut t = [0u8; QK_K];
                let mut e = 0;
                for (bytes, n) in [(&b[0..32], 5u32), (&b[32..48], 5), (&b[48..52], 4)] {
                    for k in 0..n {
                        for &v in bytes {
                            t[e] = digit(v, k);
                            e += 1;
                        }
                    }
                }
                (f16(b[52], b[53]), t)
            };
            l.d = d;
            l.dl = [d; 16];
            for (e, &digit) in digits.iter().enumerate() {
                l.q[e] = digit as i8 - 1;
                l.g[e] = l.q[e] as f32;
            }
        }
        other => unreachable!("{other} is not an i-quant"),
    }
    l
}

impl Layout {
    /// Element `e` is `±v` (grid types).
    fn set(&mut self, e: usize, v: i32, neg: bool) {
        self.q[e] = if neg { -v } else { v } as i8;
        self.g[e] = v as f32;
        self.neg[e] = neg;
    }
}

/// Float decoding in gguf-py's order: grid types `±(dl · g)`; IQ1 `dl · (g
/// + delta)`; IQ4 and ternary `dl · q`.
fn dequantize_iq(wty: GgmlType, b: &[u8], out: &mut [f32]) {
    let l = layout(wty, b);
    let n = wty.block_size();
    for (e, o) in out[..n].iter_mut().enumerate() {
        let dl = l.dl[e / 16];
        *o = match wty {
            GgmlType::IQ1_S | GgmlType::IQ1_M => dl * (l.g[e] + l.delta[e]),
            GgmlType::IQ4_NL | GgmlType::IQ4_XS | GgmlType::TQ1_0 | GgmlType::TQ2_0 => dl * l.g[e],
            _ => {
                let v = dl * l.g[e];
                if l.neg[e] {
                    -v
                } else {
                    v
                }
            }
        };
    }
}

/// The integer form of one block (`bytes` is exactly one block).
pub(crate) fn decode_ints(wty: GgmlType, bytes: &[u8], o: &mut IntBlock) {
    let l = layout(wty, bytes);
    o.q = l.q;
    o.sc = l.sc;
    o.mn = [0; 16];
    o.d = l.d;
    o.dmin = 0.0;
}

macro_rules! dequantize_impls {
    ($($B:ident => $T:ident),* $(,)?) => {
        $(
            impl Dequantize for $B {
                const TYPE: GgmlType = GgmlType::$T;
                const ELEMS: usize = if matches!(GgmlType::$T, GgmlType::IQ4_NL) { 32 } else { QK_K };
                fn dequantize(&self, out: &mut [f32]) {
                    dequantize_iq(GgmlType::$T, bytemuck::bytes_of(self), out);
                }
            }
        )*
    };
}

dequantize_impls! {
    BlockIq2Xxs => IQ2_XXS,
    BlockIq2Xs => IQ2_XS,
    BlockIq2S => IQ2_S,
    BlockIq3Xxs => IQ3_XXS,
    BlockIq3S => IQ3_S,
    BlockIq1S => IQ1_S,
    BlockIq1M => IQ1_M,
    BlockIq4Nl => IQ4_NL,
    BlockIq4Xs => IQ4_XS,
    BlockTq1_0 => TQ1_0,
    BlockTq2_0 => TQ2_0,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksigns_have_even_parity_and_keep_the_stored_bits() {
        for (i, &s) in KSIGNS.iter().enumerate() {
            assert_eq!(s.count_ones() % 2, 0, "{i}");
            assert_eq!((s & 0x7F) as usize, i);
        }
        assert_eq!(KSIGNS[1], 0x81);
        assert_eq!(KSIGNS[3], 0x03);
    }

    #[test]
    fn expanded_grids_match_the_packed_ones() {
        // Entry 0 of every IQ2 grid is all 0x08; IQ1S entry 0 is all -1 (x8).
        assert_eq!(GRID_IQ2XXS[0], 0x0808_0808_0808_0808);
        assert_eq!(GRID_IQ2XS[0], 0x0808_0808_0808_0808);
        assert_eq!(GRID_IQ2S[0], 0x0808_0808_0808_0808);
        assert_eq!(GRID_IQ1S_X8[0], u64::from_le_bytes([(-8i8) as u8; 8]));
        assert_eq!(GRID_IQ3XXS[0], 0x0404_0404);
        for (i, &e) in grids::IQ2XS_PACKED.iter().enumerate() {
            for j in 0..8 {
                assert_eq!((GRID_IQ2XS[i] >> (8 * j)) as u8 as i32, iq2_value(&grids::IQ2XS_PACKED, i, j), "{i} {e}");
            }
        }
        for (i, &e) in grids::IQ1S_PACKED.iter().enumerate() {
            for j in 0..8 {
                let v = MAP_IQ1[packed_at(e, 2, j)] as i32 * 8;
                assert_eq!((GRID_IQ1S_X8[i] >> (8 * j)) as u8 as i8 as i32, v, "{i}");
            }
        }
        // Grid entries are distinct (a codebook never repeats a point).
        let mut seen = std::collections::HashSet::new();
        assert!(GRID_IQ1S_X8.iter().all(|e| seen.insert(*e)));
    }
}
