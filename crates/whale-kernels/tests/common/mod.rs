//! Random test data shared by the kernel tests (no external crates: a small
//! SplitMix64 generator with fixed seeds keeps failures reproducible).
#![allow(dead_code)]

use whale_kernels::blocks::*;
use whale_kernels::GgmlType;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn vec_f32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform(-1.0, 1.0)).collect()
    }
}

fn scale(rng: &mut Rng) -> F16Le {
    F16Le::from_f32(rng.uniform(-0.1, 0.1))
}

/// A random `ty`-encoded row of `n` elements: random quant bits, scale
/// fields random in [-0.1, 0.1) (finite, no NaN/inf), float types in [-1, 1).
pub fn random_row(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let len = ty.row_bytes(n).expect("whole blocks");
    let mut row = rng.bytes(len);
    macro_rules! fix {
        ($B:ty, |$b:ident| $body:expr) => {
            for $b in bytemuck::cast_slice_mut::<u8, $B>(&mut row) {
                $body;
            }
        };
    }
    match ty {
        GgmlType::F32 => fix!(F32Le, |v| *v = F32Le::from_f32(rng.uniform(-1.0, 1.0))),
        GgmlType::F16 => fix!(F16Le, |v| *v = F16Le::from_f32(rng.uniform(-1.0, 1.0))),
        GgmlType::BF16 => fix!(Bf16Le, |v| *v = Bf16Le::from_f32(rng.uniform(-1.0, 1.0))),
        GgmlType::Q4_0 => fix!(BlockQ4_0, |b| b.d = scale(rng)),
        GgmlType::Q4_1 => fix!(BlockQ4_1, |b| {
            b.d = scale(rng);
            b.m = scale(rng)
        }),
        GgmlType::Q5_0 => fix!(BlockQ5_0, |b| b.d = scale(rng)),
        GgmlType::Q5_1 => fix!(BlockQ5_1, |b| {
            b.d = scale(rng);
            b.m = scale(rng)
        }),
        GgmlType::Q8_0 => fix!(BlockQ8_0, |b| b.d = scale(rng)),
        GgmlType::Q8_1 => fix!(BlockQ8_1, |b| {
            b.d = scale(rng);
            b.s = scale(rng)
        }),
        GgmlType::Q2_K => fix!(BlockQ2_K, |b| {
            b.d = scale(rng);
            b.dmin = scale(rng)
        }),
        GgmlType::Q3_K => fix!(BlockQ3_K, |b| b.d = scale(rng)),
        GgmlType::Q4_K => fix!(BlockQ4_K, |b| {
            b.d = scale(rng);
            b.dmin = scale(rng)
        }),
        GgmlType::Q5_K => fix!(BlockQ5_K, |b| {
            b.d = scale(rng);
            b.dmin = scale(rng)
        }),
        GgmlType::Q6_K => fix!(BlockQ6_K, |b| b.d = scale(rng)),
        GgmlType::Q8_K => fix!(BlockQ8_K, |b| b.d = F32Le::from_f32(rng.uniform(-0.1, 0.1))),
        // The i-quants: every index / sign / scale bit pattern is valid.
        t => {
            assert!(t.is_iquant(), "{t}");
            for b in row.chunks_exact_mut(t.type_size()) {
                whale_kernels::iq::set_block_d(t, b, scale(rng).to_f32());
            }
        }
    }
    row
}

/// Row lengths to test for `ty`: single block, several blocks, a count that
/// is not a multiple of the 256-element decode chunk, and a long row.
pub fn lengths(ty: GgmlType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![1, 7, 8, 15, 16, 17, 31, 33, 255, 256, 1000, 4099],
        32 => vec![32, 64, 96, 256, 288, 1024, 4096 + 32],
        256 => vec![256, 512, 768, 2816, 4096],
        bs => panic!("unexpected block size {bs}"),
    }
}

/// Exact-ish reference: decode with `dequantize_row`, sum in f64. Also
/// returns `sum |w_i * x_i|`, the scale of the rounding error of any f32
/// summation order.
pub fn reference_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> (f64, f64) {
    let mut w = vec![0f32; x.len()];
    whale_kernels::dequantize_row(ty, row, &mut w).unwrap();
    let mut dot = 0f64;
    let mut abs = 0f64;
    for (&a, &b) in w.iter().zip(x) {
        let t = a as f64 * b as f64;
        dot += t;
        abs += t.abs();
    }
    (dot, abs)
}

/// Sets every f16 scale field of a row to `v` (d, dmin, m).
pub fn set_scales(ty: GgmlType, row: &mut [u8], v: f32) {
    if ty.is_iquant() {
        for blk in row.chunks_exact_mut(ty.type_size()) {
            whale_kernels::iq::set_block_d(ty, blk, v);
        }
        return;
    }
    let offs: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => return,
    };
    let h = F16Le::from_f32(v).0;
    for blk in row.chunks_exact_mut(ty.type_size()) {
        for &o in offs {
            blk[o..o + 2].copy_from_slice(&h);
        }
    }
}

/// `x8::matmul_x8` on interleaved matrices of every type of the layout
/// (Q2_K, Q4_K, Q5_K, Q6_K, IQ4_XS, and the 32-element ones) against the scalar
/// reference of every row in the file's layout, bit for bit, at the level
/// this process runs: random blocks, every bit set (the integer sums at
/// their extremes, against activations at ±127) and all zeros; whole and
/// partial groups of eight blocks (2048 and 2816 columns); one and three
/// activation rows (each group meets each row in turn) and 20, 32 and 200
/// (the panels, which at AVX2 take this layout from 8 to 32 rows by type,
/// and, from 192 rows of Q6_K and 128 of the 32-element types, the AMX
/// tiles), over one tile or several (240 rows); one and two threads.
#[allow(dead_code)]
pub fn check_x8_matches_scalar(rng: &mut Rng) {
    use whale_kernels::{quantize_acts, vec_dot_q_ref, x8};
    let k_shapes = [(8, 256), (24, 2048), (16, 2816), (240, 2048)];
    // Rows of 1, 4, 28 and 44 blocks: a partial run of eight blocks, and
    // Qwen2.5-0.5B's and DeepSeek-V2's expert-down widths.
    let shapes_32 = [(8, 32), (24, 896), (16, 1408), (240, 128)];
    for (ty, rows, cols) in [GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS]
        .into_iter()
        .flat_map(|ty| k_shapes.map(|(r, c)| (ty, r, c)))
        .chain(
            [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::IQ4_NL]
                .into_iter()
                .flat_map(|ty| shapes_32.map(|(r, c)| (ty, r, c))),
        )
    {
        let rb = ty.row_bytes(cols).unwrap();
        // "min": bytes of 0x80, Q8_0's -128 (its `q + 128` is 0).
        for fill in ["random", "max", "min", "zero"] {
            let mut w: Vec<u8> = match fill {
                "max" => vec![0xFF; rows * rb],
                "min" => vec![0x80; rows * rb],
                "zero" => vec![0; rows * rb],
                _ => (0..rows).flat_map(|_| random_row(rng, ty, cols)).collect(),
            };
            if fill == "max" || fill == "min" {
                set_scales(ty, &mut w, 1.0);
            }
            let mut wx = w.clone();
            x8::interleave_in_place(ty, rows, cols, &mut wx).unwrap();
            let ms: &[usize] = if rows > 24 {
                &[20]
            } else if fill == "random" {
                &[1, 3, 20, 200]
            } else {
                // 32: at or past every AVX2 panel threshold of this
                // layout (`panel_avx2::min_act_rows`: 8 to 32), so the
                // extremes meet the panels too; 20 takes the row kernels
                // of Q4_K and the 32-element types there.
                &[1, 3, 20, 32]
            };
            for &m in ms {
                let x: Vec<f32> = match fill {
                    "random" => rng.vec_f32(m * cols),
                    _ => (0..m * cols).map(|j| if j % 3 == 0 { -1.0 } else { 1.0 }).collect(),
                };
                let acts = quantize_acts(ty, &x, m, cols);
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; m * rows];
                    x8::matmul_x8(ty, &wx, rows, cols, &acts, &mut y, threads).unwrap();
                    for i in 0..m {
                        for r in 0..rows {
                            let want = vec_dot_q_ref(ty, &w[r * rb..(r + 1) * rb], &acts, i);
                            assert_eq!(
                                y[i * rows + r].to_bits(),
                                want.to_bits(),
                                "{ty} {rows}x{cols} {fill} m {m} threads {threads}: row {r} of activation row {i}"
                            );
                        }
                    }
                }
            }
        }
    }
}
