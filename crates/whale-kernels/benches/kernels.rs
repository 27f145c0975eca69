//! Per-kernel, per-type throughput at decode (M = 1) and prefill (M = 512)
//! shapes: `cargo bench -p whale-kernels --bench kernels [-- FILTER]`.
//! `WHALE_SIMD=scalar|avx2|avx512` pins a level, so levels can be compared.
//!
//! Weights are random blocks whose f16 scales are set to ordinary values (no
//! NaN, infinity or subnormal, which would distort float timings).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use whale_kernels::GgmlType;

/// Byte offsets of the f16 scale fields inside one block of each type.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    use GgmlType as G;
    match ty {
        G::Q4_0 | G::Q5_0 | G::Q8_0 => &[0],
        G::Q4_1 | G::Q5_1 | G::Q4_K | G::Q5_K => &[0, 2],
        G::Q2_K => &[80, 82],
        G::Q3_K => &[108],
        G::Q6_K => &[208],
        G::IQ2_XXS | G::IQ2_XS | G::IQ2_S | G::IQ3_XXS | G::IQ3_S | G::IQ1_S | G::IQ4_NL | G::IQ4_XS => &[0],
        G::TQ1_0 => &[52],
        G::TQ2_0 => &[64],
        _ => &[],
    }
}

/// `rows` rows of `cols` elements of type `ty`, deterministic pseudo-random.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * ty.row_bytes(cols).expect("cols fits the block size");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    match ty {
        GgmlType::F32 => (0..n / 4).flat_map(|_| ((next() % 2000) as f32 / 1000.0 - 1.0).to_le_bytes()).collect(),
        GgmlType::F16 => {
            (0..n / 2).flat_map(|_| half::f16::from_f32((next() % 2000) as f32 / 1000.0 - 1.0).to_le_bytes()).collect()
        }
        GgmlType::BF16 => {
            (0..n / 2).flat_map(|_| half::bf16::from_f32((next() % 2000) as f32 / 1000.0 - 1.0).to_le_bytes()).collect()
        }
        _ => {
            let mut w: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            let scale = half::f16::from_f32(0.01).to_le_bytes();
            for block in w.chunks_exact_mut(ty.type_size()) {
                for &o in scale_offsets(ty) {
                    block[o..o + 2].copy_from_slice(&scale);
                }
            }
            w
        }
    }
}

const TYPES: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::F16,
    GgmlType::F32,
];

/// Decode: one token through a Qwen2.5-0.5B ffn_down matrix (896 × 4864), the way
/// the engine calls it (quantized activations for block types).
fn decode(c: &mut Criterion) {
    let (rows, cols) = (896, 4864);
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut g = c.benchmark_group("decode_m1");
    g.throughput(Throughput::Elements((rows * cols) as u64));
    for ty in TYPES {
        let w = weights(ty, rows, cols);
        let mut y = vec![0f32; rows];
        g.bench_with_input(BenchmarkId::new("matmul_q", ty.name()), &w, |b, w| {
            b.iter(|| whale_kernels::matmul_q(ty, black_box(w), rows, cols, black_box(&x), 1, &mut y, 1))
        });
        g.bench_with_input(BenchmarkId::new("matvec_f32_acts", ty.name()), &w, |b, w| {
            b.iter(|| whale_kernels::matvec(ty, black_box(w), rows, cols, black_box(&x), &mut y, 1))
        });
    }
    g.finish();
}

/// Prefill: 512 tokens through a 256 × 4864 slice of ffn_down.
fn prefill(c: &mut Criterion) {
    let (rows, cols, m) = (256, 4864, 512);
    let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut g = c.benchmark_group("prefill_m512");
    g.sample_size(10);
    g.throughput(Throughput::Elements((rows * cols * m) as u64));
    for ty in TYPES {
        let w = weights(ty, rows, cols);
        let mut y = vec![0f32; rows * m];
        g.bench_with_input(BenchmarkId::new("matmul_q", ty.name()), &w, |b, w| {
            b.iter(|| whale_kernels::matmul_q(ty, black_box(w), rows, cols, black_box(&x), m, &mut y, 1))
        });
    }
    g.finish();
}

/// Activation quantization alone, per row of 4864.
fn quantize(c: &mut Criterion) {
    let cols = 4864;
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut g = c.benchmark_group("quantize_acts");
    g.throughput(Throughput::Elements(cols as u64));
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K] {
        g.bench_function(whale_kernels::vec_dot_type(ty).name(), |b| {
            b.iter(|| whale_kernels::quantize_acts(ty, black_box(&x), 1, cols))
        });
    }
    g.finish();
}

criterion_group!(benches, decode, prefill, quantize);
criterion_main!(benches);
