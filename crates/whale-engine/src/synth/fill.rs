//! Random but valid tensor bytes of every GGUF type.
//!
//! Quantized blocks are not quantized from anything: their integer fields are
//! random bits (every bit pattern of a quant or packed 6-bit scale is valid),
//! and their f16 scales are set so that the dequantized values have mean 0
//! and the standard deviation asked for. The "min" formats (Q4_1, Q5_1, Q2_K,
//! Q4_K, Q5_K) get a min equal to half the quant range, so that they are
//! zero-mean too. That is enough for a forward pass to behave like a real
//! one (no exploding activations, real routing spread), which is all a speed
//! benchmark and an engine-against-engine check need.
//!
//! The generator is a counter-based splitmix64, seeded by (seed, tensor name),
//! so a tensor's bytes do not depend on the order of the others and the same
//! seed gives the same file.

use half::{bf16, f16};
use whale_kernels::GgmlType;

/// splitmix64: small, fast, and good enough for weights.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, name: &str) -> Rng {
        // FNV-1a of the name, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// What the values of a tensor should look like.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// Mean 0, this standard deviation.
    Normal(f32),
    /// Every element this value (norm weights: 1).
    Const(f32),
}

fn put_f16(b: &mut [u8], at: usize, x: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(x).to_le_bytes());
}

/// Standard deviation of a uniform integer on 0..n.
fn uniform_std(n: u32) -> f32 {
    (((n * n - 1) as f32) / 12.0).sqrt()
}

/// Fills `out` (a whole number of blocks of `ty`) with random values.
pub fn fill(ty: GgmlType, init: Init, rng: &mut Rng, out: &mut [u8]) {
    let std = match init {
        Init::Const(c) => return fill_const(ty, c, out),
        Init::Normal(s) => s,
    };
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            // Uniform in [-√3σ, √3σ): standard deviation σ.
            let a = 3f32.sqrt() * std;
            let n = out.len() / ty.type_size();
            for i in 0..n {
                let x = (rng.unit() * 2.0 - 1.0) * a;
                match ty {
                    GgmlType::F32 => out[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes()),
                    GgmlType::F16 => put_f16(out, 2 * i, x),
                    _ => out[2 * i..2 * i + 2].copy_from_slice(&bf16::from_f32(x).to_le_bytes()),
                }
            }
        }
        _ => {
            rng.fill(out);
            for b in out.chunks_exact_mut(ty.type_size()) {
                fix_block(ty, std, rng, b);
            }
        }
    }
}

/// Sets a random block's scales (and, for the min formats, its mins).
fn fix_block(ty: GgmlType, std: f32, rng: &mut Rng, b: &mut [u8]) {
    match ty {
        // value = d·(q − 8)
        GgmlType::Q4_0 => put_f16(b, 0, std / uniform_std(16)),
        // value = d·q + m, m = −7.5·d
        GgmlType::Q4_1 => {
            let d = std / uniform_std(16);
            put_f16(b, 0, d);
            put_f16(b, 2, -7.5 * d);
        }
        GgmlType::Q5_0 => put_f16(b, 0, std / uniform_std(32)),
        GgmlType::Q5_1 => {
            let d = std / uniform_std(32);
            put_f16(b, 0, d);
            put_f16(b, 2, -15.5 * d);
        }
        // value = d·q, q uniform over i8
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            let d = std / uniform_std(256);
            put_f16(b, 0, d);
            if ty == GgmlType::Q8_1 {
                // s = d·Σq, as the format defines it.
                let sum: i32 = b[4..36].iter().map(|&q| q as i8 as i32).sum();
                put_f16(b, 2, d * sum as f32);
            }
        }
        // scales[16]: low nibble scale, high nibble min; value = d·sc·q − dmin·m,
        // with m = sc and dmin = 1.5·d (half of 0..3).
        GgmlType::Q2_K => {
            let mut s_sum = 0.0;
            for s in &mut b[..16] {
                let v = (*s & 0x0f).max(4);
                *s = v | (v << 4);
                s_sum += v as f32;
            }
            let d = std / (s_sum / 16.0 * uniform_std(4));
            put_f16(b, 80, d);
            put_f16(b, 82, 1.5 * d);
        }
        // value = d·(sc − 32)·q3, q3 in −4..3, with random 6-bit scales.
        GgmlType::Q3_K => put_f16(b, 108, std / (18.5 * uniform_std(8))),
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // Eight 6-bit (scale, min) pairs, packed in 12 bytes; each min is
            // set equal to its scale, and dmin = d·(levels − 1)/2.
            let mut s = [0u8; 8];
            for v in &mut s {
                *v = 16 + (rng.next_u64() % 48) as u8;
            }
            let sc = &mut b[4..16];
            for j in 0..4 {
                sc[j] = s[j] | ((s[j + 4] >> 4) << 6);
                sc[j + 4] = sc[j];
                sc[j + 8] = (s[j + 4] & 0x0f) | ((s[j + 4] & 0x0f) << 4);
            }
            let levels = if ty == GgmlType::Q4_K { 16 } else { 32 };
            let mean_s = s.iter().map(|&v| v as f32).sum::<f32>() / 8.0;
            let d = std / (mean_s * uniform_std(levels));
            put_f16(b, 0, d);
            put_f16(b, 2, d * (levels - 1) as f32 / 2.0);
        }
        // value = d·sc·(q − 32), with i8 scales of either sign and |sc| in 16..63.
        GgmlType::Q6_K => {
            let mut abs_sum = 0.0;
            for s in &mut b[192..208] {
                let m = 16 + (*s % 48);
                let v = if *s & 0x80 != 0 { -(m as i8) } else { m as i8 };
                *s = v as u8;
                abs_sum += m as f32;
            }
            put_f16(b, 208, std / (abs_sum / 16.0 * uniform_std(64)));
        }
        GgmlType::Q8_K => {
            // d f32, qs[256], bsums[16] = sums of 16 quants each.
            b[0..4].copy_from_slice(&(std / uniform_std(256)).to_le_bytes());
            for g in 0..16 {
                let s: i32 = b[4 + 16 * g..4 + 16 * (g + 1)].iter().map(|&q| q as i8 as i32).sum();
                b[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
            }
        }
        // The i-quants and ternary types: every index, sign and scale bit
        // pattern is valid (random), and `d` is chosen so that the block's
        // decoded values have the asked RMS.
        t if t.is_iquant() => {
            if t == GgmlType::TQ2_0 {
                // 2-bit q of 3 (value 2) becomes 1 (value 0): values -1, 0, 1
                // with probabilities 1/4, 1/2, 1/4, zero-mean.
                for q in &mut b[..64] {
                    *q &= !(((*q >> 1) & *q & 0x55) << 1);
                }
            }
            whale_kernels::iq::set_block_d(t, b, 1.0);
            let mut x = [0f32; 256];
            let x = &mut x[..t.block_size()];
            whale_kernels::dequantize_row(t, b, x).expect("one whole block");
            let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
            whale_kernels::iq::set_block_d(t, b, if rms > 0.0 { std / rms } else { 0.0 });
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => unreachable!("float types are filled directly"),
        other => unreachable!("{other} has its own arm above"),
    }
}

fn fill_const(ty: GgmlType, c: f32, out: &mut [u8]) {
    let one: Vec<u8> = match ty {
        GgmlType::F32 => c.to_le_bytes().to_vec(),
        GgmlType::F16 => f16::from_f32(c).to_le_bytes().to_vec(),
        GgmlType::BF16 => bf16::from_f32(c).to_le_bytes().to_vec(),
        // Constants are only asked of norm weights, which are never quantized.
        _ => panic!("fill_const: {ty} is quantized"),
    };
    for chunk in out.chunks_exact_mut(one.len()) {
        chunk.copy_from_slice(&one);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whale_kernels::dequantize_row;

    /// Every type dequantizes to finite values with mean ≈ 0 and the asked
    /// standard deviation within 15 % (4096 samples of a uniform-ish
    /// distribution: the sampling error of the std is about 2 %, the rest is
    /// the f16 rounding of the scales and the approximate mean of random
    /// scales). The mean may be off by 0.15 std: the symmetric formats'
    /// levels (Q4_0's −8..7, say) average −d/2, about 0.11 std.
    #[test]
    fn every_type_dequantizes_to_the_asked_spread() {
        for ty in GgmlType::ALL {
            let n = 4096;
            let mut bytes = vec![0u8; ty.row_bytes(n).unwrap()];
            fill(ty, Init::Normal(0.02), &mut Rng::new(7, ty.name()), &mut bytes);
            let mut x = vec![0f32; n];
            dequantize_row(ty, &bytes, &mut x).unwrap();
            assert!(x.iter().all(|v| v.is_finite()), "{ty}");
            let mean = x.iter().sum::<f32>() / n as f32;
            let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n as f32).sqrt();
            assert!(mean.abs() < 0.15 * 0.02, "{ty}: mean {mean}");
            assert!((std / 0.02 - 1.0).abs() < 0.15, "{ty}: std {std}");
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let run = |seed| {
            let mut b = vec![0u8; 144 * 4];
            fill(GgmlType::Q4_K, Init::Normal(1.0), &mut Rng::new(seed, "blk.0.x"), &mut b);
            b
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
