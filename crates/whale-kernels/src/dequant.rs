//! Scalar dequantization: one [`Dequantize`] impl per block type, and the
//! row-level entry point [`dequantize_row`].
//!
//! These are the reference decoders: they are checked bit for bit against the
//! fixtures produced by gguf-py (`tests/dequant_reference.rs`), and every
//! other kernel is tested against them. The arithmetic is written in the same
//! order as the format definition (e.g. `(d * sc) * q - dmin * m`), with no
//! fused multiply-adds, so results are exactly reproducible.

use crate::blocks::*;
use crate::error::KernelError;
use crate::types::{GgmlType, QK32, QK_K};

/// A storage block that decodes to `ELEMS` f32 values.
pub trait Dequantize: bytemuck::Pod {
    /// The tensor type whose block this is.
    const TYPE: GgmlType;
    /// Elements per block.
    const ELEMS: usize;
    /// Decodes the block into `out[..ELEMS]` (`out` must hold at least `ELEMS` values).
    fn dequantize(&self, out: &mut [f32]);
}

/// Maps a [`GgmlType`] to its block type and evaluates `$body` with `$B` bound
/// to that type, so generic code can be instantiated once per format.
macro_rules! with_block_type {
    ($ty:expr, $B:ident => $body:expr) => {{
        use $crate::blocks::*;
        use $crate::types::GgmlType as G;
        match $ty {
            G::F32 => {
                type $B = F32Le;
                $body
            }
            G::F16 => {
                type $B = F16Le;
                $body
            }
            G::BF16 => {
                type $B = Bf16Le;
                $body
            }
            G::F8_E4M3 => {
                type $B = F8E4m3;
                $body
            }
            G::Q4_0 => {
                type $B = BlockQ4_0;
                $body
            }
            G::Q4_1 => {
                type $B = BlockQ4_1;
                $body
            }
            G::Q5_0 => {
                type $B = BlockQ5_0;
                $body
            }
            G::Q5_1 => {
                type $B = BlockQ5_1;
                $body
            }
            G::Q8_0 => {
                type $B = BlockQ8_0;
                $body
            }
            G::Q8_1 => {
                type $B = BlockQ8_1;
                $body
            }
            G::Q2_K => {
                type $B = BlockQ2_K;
                $body
            }
            G::Q3_K => {
                type $B = BlockQ3_K;
                $body
            }
            G::Q4_K => {
                type $B = BlockQ4_K;
                $body
            }
            G::Q5_K => {
                type $B = BlockQ5_K;
                $body
            }
            G::Q6_K => {
                type $B = BlockQ6_K;
                $body
            }
            G::Q8_K => {
                type $B = BlockQ8_K;
                $body
            }
            G::IQ2_XXS => {
                type $B = BlockIq2Xxs;
                $body
            }
            G::IQ2_XS => {
                type $B = BlockIq2Xs;
                $body
            }
            G::IQ2_S => {
                type $B = BlockIq2S;
                $body
            }
            G::IQ3_XXS => {
                type $B = BlockIq3Xxs;
                $body
            }
            G::IQ3_S => {
                type $B = BlockIq3S;
                $body
            }
            G::IQ1_S => {
                type $B = BlockIq1S;
                $body
            }
            G::IQ1_M => {
                type $B = BlockIq1M;
                $body
            }
            G::IQ4_NL => {
                type $B = BlockIq4Nl;
                $body
            }
            G::IQ4_XS => {
                type $B = BlockIq4Xs;
                $body
            }
            G::TQ1_0 => {
                type $B = BlockTq1_0;
                $body
            }
            G::TQ2_0 => {
                type $B = BlockTq2_0;
                $body
            }
        }
    }};
}
pub(crate) use with_block_type;

/// Decodes `dst.len()` elements stored in `src`, which must be exactly
/// `ty.row_bytes(dst.len())` bytes long.
///
/// Returns [`KernelError::NotBlockMultiple`] if `dst.len()` is not a whole
/// number of blocks and [`KernelError::BadLength`] if `src` has the wrong
/// length. Never panics.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let elements = dst.len();
    let expected = ty.row_bytes(elements).ok_or(KernelError::NotBlockMultiple { ty, elements })?;
    if src.len() != expected {
        return Err(KernelError::BadLength { ty, elements, bytes: src.len() });
    }
    with_block_type!(ty, B => dequantize_blocks::<B>(src, dst));
    Ok(())
}

/// Decodes whole blocks; `src.len()` must be a multiple of the block size in
/// bytes and `dst` must hold the matching number of elements.
#[inline]
pub(crate) fn dequantize_blocks<B: Dequantize>(src: &[u8], dst: &mut [f32]) {
    let blocks: &[B] = bytemuck::cast_slice(src);
    debug_assert_eq!(blocks.len() * B::ELEMS, dst.len());
    for (b, out) in blocks.iter().zip(dst.chunks_exact_mut(B::ELEMS)) {
        b.dequantize(out);
    }
}

impl Dequantize for F32Le {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMS: usize = 1;
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.to_f32();
    }
}

impl Dequantize for F16Le {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMS: usize = 1;
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.to_f32();
    }
}

/// The code's value before its block scale (the scales live beside the
/// codes, see [`crate::fp8`]); exact, from the format's definition.
impl Dequantize for F8E4m3 {
    const TYPE: GgmlType = GgmlType::F8_E4M3;
    const ELEMS: usize = 1;
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = crate::fp8::e4m3_to_f32_ref(self.0[0]);
    }
}

impl Dequantize for Bf16Le {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMS: usize = 1;
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.to_f32();
    }
}

impl Dequantize for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK32;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK32];
        let d = self.d.to_f32();
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = ((b & 0x0F) as i32 - 8) as f32 * d;
            out[j + 16] = ((b >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl Dequantize for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK32;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK32];
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = d * (b & 0x0F) as f32 + m;
            out[j + 16] = d * (b >> 4) as f32 + m;
        }
    }
}

/// The 5-bit quants of a Q5_0/Q5_1 block, unsigned (0..=31), in element order.
#[inline(always)]
pub(crate) fn q5_quants(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for (j, &b) in qs.iter().enumerate() {
        q[j] = (b & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (b >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

impl Dequantize for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = QK32;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK32];
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(q5_quants(self.qh, &self.qs).iter()) {
            *o = (q as i32 - 16) as f32 * d;
        }
    }
}

impl Dequantize for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = QK32;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK32];
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (o, &q) in out.iter_mut().zip(q5_quants(self.qh, &self.qs).iter()) {
            *o = d * q as f32 + m;
        }
    }
}

impl Dequantize for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK32;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out[..QK32].iter_mut().zip(self.qs.iter()) {
            *o = q as f32 * d;
        }
    }
}

impl Dequantize for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const ELEMS: usize = QK32;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out[..QK32].iter_mut().zip(self.qs.iter()) {
            *o = q as f32 * d;
        }
    }
}

impl Dequantize for BlockQ2_K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        // Element e = 128*h + 32*s + l takes bits 2s..2s+2 of qs[32*h + l];
        // group g = e / 16 uses scales[g]. Loops run per group of 16 so the
        // inner loop has constant shifts (and vectorises).
        for (g, group) in out.chunks_exact_mut(16).enumerate() {
            let (h, s, half) = (g / 8, (g % 8) / 2, g % 2);
            let sc = self.scales[g];
            let dl = d * (sc & 0x0F) as f32;
            let ml = dmin * (sc >> 4) as f32;
            let qs = &self.qs[32 * h + 16 * half..][..16];
            for (o, &b) in group.iter_mut().zip(qs) {
                let q = (b >> (2 * s)) & 3;
                *o = dl * q as f32 - ml;
            }
        }
    }
}

/// The 16 signed 6-bit scales of a Q3_K block. Scale `i` takes its low four
/// bits from byte `i % 8` (low nibble for i < 8, high nibble otherwise) and
/// its top two bits from bits `2*(i/4)..` of byte `8 + i % 4`; stored with an
/// offset of 32.
#[inline(always)]
pub(crate) fn q3_k_scales(sc: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { sc[i] & 0x0F } else { sc[i - 8] >> 4 };
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

impl Dequantize for BlockQ3_K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = self.d.to_f32();
        let scales = q3_k_scales(&self.scales);
        // Element e = 128*h + 32*s + l: low two bits are bits 2s..2s+2 of
        // qs[32*h + l]; bit (e / 32) = 4h + s of hmask[l] set means "no -4
        // offset". Group g = e / 16 uses scales[g].
        for (g, group) in out.chunks_exact_mut(16).enumerate() {
            let (h, s, half) = (g / 8, (g % 8) / 2, g % 2);
            let dl = d * scales[g] as f32;
            let qs = &self.qs[32 * h + 16 * half..][..16];
            let hm = &self.hmask[16 * half..][..16];
            let bit = 4 * h + s;
            for ((o, &b), &m) in group.iter_mut().zip(qs).zip(hm) {
                let low = ((b >> (2 * s)) & 3) as i32;
                let minus4 = ((!(m >> bit) & 1) as i32) << 2;
                *o = dl * (low - minus4) as f32;
            }
        }
    }
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K block, both 6-bit.
/// For j < 4 they are the low six bits of bytes j and j + 4; for j >= 4 the
/// low (scale) / high (min) nibble of byte j + 4 plus the top two bits of
/// bytes j - 4 (scale) / j (min).
#[inline(always)]
pub(crate) fn k_scale_min(sc: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (sc[j] & 0x3F, sc[j + 4] & 0x3F)
    } else {
        ((sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4))
    }
}

impl Dequantize for BlockQ4_K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        // Sub-block j = 2c + s (32 elements) holds nibble s of qs[32c .. 32c + 32].
        for (j, chunk) in out.chunks_exact_mut(32).enumerate() {
            let (c, s) = (j / 2, j % 2);
            let (sc, m) = k_scale_min(&self.scales, j);
            let dl = d * sc as f32;
            let ml = dmin * m as f32;
            for (l, o) in chunk.iter_mut().enumerate() {
                let q = (self.qs[32 * c + l] >> (4 * s)) & 0x0F;
                *o = dl * q as f32 - ml;
            }
        }
    }
}

impl Dequantize for BlockQ5_K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        // As Q4_K; the fifth bit of element 32j + l is bit j of qh[l].
        for (j, chunk) in out.chunks_exact_mut(32).enumerate() {
            let (c, s) = (j / 2, j % 2);
            let (sc, m) = k_scale_min(&self.scales, j);
            let dl = d * sc as f32;
            let ml = dmin * m as f32;
            for (l, o) in chunk.iter_mut().enumerate() {
                let low = (self.qs[32 * c + l] >> (4 * s)) & 0x0F;
                let high = (self.qh[l] >> j) & 1;
                let q = low | (high << 4);
                *o = dl * q as f32 - ml;
            }
        }
    }
}

impl Dequantize for BlockQ6_K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = self.d.to_f32();
        // Element e = 128*h + 32*s + l (s in 0..4, l in 0..32):
        // low nibble: nibble (s / 2) of ql[64*h + 32*(s % 2) + l],
        // high two bits: bits 2s..2s+2 of qh[32*h + l];
        // group g = e / 16 uses scales[g].
        for (g, group) in out.chunks_exact_mut(16).enumerate() {
            let (h, s, half) = (g / 8, (g % 8) / 2, g % 2);
            let dl = d * self.scales[g] as f32;
            let ql = &self.ql[64 * h + 32 * (s % 2) + 16 * half..][..16];
            let qh = &self.qh[32 * h + 16 * half..][..16];
            for ((o, &lo), &hi) in group.iter_mut().zip(ql).zip(qh) {
                let low = (lo >> (4 * (s / 2))) & 0x0F;
                let high = (hi >> (2 * s)) & 3;
                let q = (low | (high << 4)) as i32 - 32;
                *o = dl * q as f32;
            }
        }
    }
}

impl Dequantize for BlockQ8_K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out[..QK_K].iter_mut().zip(self.qs.iter()) {
            *o = q as f32 * d;
        }
    }
}

/// One weight block as the integer kernels see it: signed quants with the
/// type's offset applied and, per 16 elements, the integer scale and min,
/// so that weight `e` = `d * sc[e / 16] * q[e] - dmin * mn[e / 16]`
/// (legacy 32-element types: `sc` 1 and `mn` 0, and `dmin` holds `m` of
/// Q4_1 / Q5_1, whose weight is `d * q + m`). The scalar reference of the
/// quantized dots and the AMX / NEON unpacking share it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IntBlock {
    pub q: [i8; QK_K],
    pub sc: [i32; 16],
    pub mn: [i32; 16],
    pub d: f32,
    pub dmin: f32,
}

impl Default for IntBlock {
    fn default() -> Self {
        IntBlock { q: [0; QK_K], sc: [1; 16], mn: [0; 16], d: 0.0, dmin: 0.0 }
    }
}

/// Decodes one `wty` block (`bytes` is exactly one block) into `o`.
/// Panics for types without 8-bit-activation dots (F32, F16, BF16, Q8_1,
/// Q8_K).
pub(crate) fn decode_ints(wty: GgmlType, bytes: &[u8], o: &mut IntBlock) {
    if wty.block_size() == QK32 {
        o.sc = [1; 16];
        o.mn = [0; 16];
    }
    use GgmlType as G;
    let nib = |qs: &[u8; 16], q: &mut [i8], off: i8| {
        for (j, &b) in qs.iter().enumerate() {
            q[j] = (b & 0x0F) as i8 - off;
            q[j + 16] = (b >> 4) as i8 - off;
        }
    };
    match wty {
        G::Q4_0 => {
            let b: &BlockQ4_0 = bytemuck::from_bytes(bytes);
            nib(&b.qs, &mut o.q, 8);
            (o.d, o.dmin) = (b.d.to_f32(), 0.0);
        }
        G::Q4_1 => {
            let b: &BlockQ4_1 = bytemuck::from_bytes(bytes);
            nib(&b.qs, &mut o.q, 0);
            (o.d, o.dmin) = (b.d.to_f32(), b.m.to_f32());
        }
        G::Q5_0 => {
            let b: &BlockQ5_0 = bytemuck::from_bytes(bytes);
            for (q, v) in o.q.iter_mut().zip(q5_quants(b.qh, &b.qs)) {
                *q = v as i8 - 16;
            }
            (o.d, o.dmin) = (b.d.to_f32(), 0.0);
        }
        G::Q5_1 => {
            let b: &BlockQ5_1 = bytemuck::from_bytes(bytes);
            for (q, v) in o.q.iter_mut().zip(q5_quants(b.qh, &b.qs)) {
                *q = v as i8;
            }
            (o.d, o.dmin) = (b.d.to_f32(), b.m.to_f32());
        }
        G::Q8_0 => {
            let b: &BlockQ8_0 = bytemuck::from_bytes(bytes);
            o.q[..QK32].copy_from_slice(&b.qs);
            (o.d, o.dmin) = (b.d.to_f32(), 0.0);
        }
        G::Q2_K => {
            let b: &BlockQ2_K = bytemuck::from_bytes(bytes);
            // Element 128h + 32s + l: bits 2s..2s+2 of qs[32h + l].
            for h in 0..2 {
                for s in 0..4 {
                    for l in 0..32 {
                        o.q[128 * h + 32 * s + l] = ((b.qs[32 * h + l] >> (2 * s)) & 3) as i8;
                    }
                }
            }
            for g in 0..16 {
                o.sc[g] = (b.scales[g] & 0x0F) as i32;
                o.mn[g] = (b.scales[g] >> 4) as i32;
            }
            (o.d, o.dmin) = (b.d.to_f32(), b.dmin.to_f32());
        }
        G::Q3_K => {
            let b: &BlockQ3_K = bytemuck::from_bytes(bytes);
            let scales = q3_k_scales(&b.scales);
            for h in 0..2 {
                for s in 0..4 {
                    for l in 0..32 {
                        let e = 128 * h + 32 * s + l;
                        let low = ((b.qs[32 * h + l] >> (2 * s)) & 3) as i8;
                        let high_set = (b.hmask[l] >> (e / 32)) & 1 == 1;
                        o.q[e] = if high_set { low } else { low - 4 };
                    }
                }
            }
            for (sc, &v) in o.sc.iter_mut().zip(&scales) {
                *sc = v as i32;
            }
            o.mn = [0; 16];
            (o.d, o.dmin) = (b.d.to_f32(), 0.0);
        }
        G::Q4_K | G::Q5_K => {
            let (scales, qs, qh, d, dmin) = if wty == G::Q4_K {
                let b: &BlockQ4_K = bytemuck::from_bytes(bytes);
                (&b.scales, &b.qs, None, b.d.to_f32(), b.dmin.to_f32())
            } else {
                let b: &BlockQ5_K = bytemuck::from_bytes(bytes);
                (&b.scales, &b.qs, Some(&b.qh), b.d.to_f32(), b.dmin.to_f32())
            };
            // Sub-block j = 2c + s: nibble s of qs[32c + l], bit j of qh[l].
            for j in 0..8 {
                let (c, s) = (j / 2, j % 2);
                for l in 0..32 {
                    let low = (qs[32 * c + l] >> (4 * s)) & 0x0F;
                    let high = qh.map_or(0, |h| (h[l] >> j) & 1);
                    o.q[32 * j + l] = (low | (high << 4)) as i8;
                }
                let (sc, m) = k_scale_min(scales, j);
                o.sc[2 * j..2 * j + 2].fill(sc as i32);
                o.mn[2 * j..2 * j + 2].fill(m as i32);
            }
            (o.d, o.dmin) = (d, dmin);
        }
        G::Q6_K => {
            let b: &BlockQ6_K = bytemuck::from_bytes(bytes);
            for h in 0..2 {
                for s in 0..4 {
                    for l in 0..32 {
                        let low = (b.ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0F;
                        let high = (b.qh[32 * h + l] >> (2 * s)) & 3;
                        o.q[128 * h + 32 * s + l] = (low | (high << 4)) as i8 - 32;
                    }
                }
            }
            for g in 0..16 {
                o.sc[g] = b.scales[g] as i32;
                o.mn[g] = 0;
            }
            (o.d, o.dmin) = (b.d.to_f32(), 0.0);
        }
        // Q4_0's nibbles through IQ4's table (what `iq::decode_ints` gives,
        // without forming the 256-element layout of the other i-quants for
        // a 32-element block: the AMX tiles decode every block this way).
        G::IQ4_NL => {
            let b: &BlockIq4Nl = bytemuck::from_bytes(bytes);
            for (j, &v) in b.qs.iter().enumerate() {
                o.q[j] = crate::iq::KVALUES_IQ4[usize::from(v & 0x0F)];
                o.q[j + 16] = crate::iq::KVALUES_IQ4[usize::from(v >> 4)];
            }
            (o.d, o.dmin) = (b.d.to_f32(), 0.0);
        }
        t if t.is_iquant() => crate::iq::decode_ints(t, bytes, o),
        other => unreachable!("{other} has no integer dot"),
    }
}
