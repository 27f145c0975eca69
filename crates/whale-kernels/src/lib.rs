//! Quantized tensor formats and the CPU kernels that read them, for whale.
//!
//! This crate knows nothing about models or GGUF files beyond the element
//! types of their tensors; the engine validates shapes and hands it raw bytes.
//!
//! # Design
//!
//! * **One `#[repr(C)]` block type per format** ([`blocks`]): each GGUF
//!   storage format (Q4_0, Q6_K, ...) is a plain struct laid out byte for byte
//!   as on disk, with compile-time size assertions. All fields are byte
//!   arrays, so any correctly sized `&[u8]` (e.g. a slice of a memory-mapped
//!   file, at any alignment) reinterprets as `&[Block]` with `bytemuck`.
//! * **A scalar reference beside every fast kernel**: [`dequantize_row`]
//!   ([`dequant`]) is the reference decoder, tested bit for bit against
//!   fixtures produced by the independent gguf-py implementation;
//!   [`vec_dot_ref`] is decode-then-dot in f64. Every faster path
//!   ([`vec_dot`], [`matvec`], [`matmul()`], the SIMD kernels) is tested
//!   against those.
//! * **Run-time SIMD dispatch** ([`dispatch`]): the fast kernels exist at a
//!   portable scalar level (Rust written so the compiler vectorises it for
//!   the build target) and, on x86-64, at an AVX2+FMA(+F16C) level and an
//!   AVX-512 VNNI level, chosen at run time with `is_x86_feature_detected!`.
//!   `WHALE_SIMD=scalar|avx2|avx512|amx|neon` forces a level (AMX-INT8 tiles,
//!   where the CPU and OS have them, do the integer part of prefill products;
//!   without them, at the VNNI level, prefill products of 12 (K-quants) or
//!   20 (32-element types) or more rows unpack 16 weight rows at a time into
//!   a panel that each activation row meets with broadcast multiply-adds,
//!   `panel.rs`). New levels slot in
//!   beside `avx2.rs` / `avx2_q8.rs`.
//! * **Quantized activations, like llama.cpp** ([`q8`], [`qdot`]): llama.cpp
//!   never dots quantized weights with f32 activations; it first rounds each
//!   activation row to the weight type's "vec_dot type" (Q8_0, Q8_1, Q8_K, or
//!   F16 / BF16 for half-precision weights) and then takes exact integer dot
//!   products. That rounding changes greedy outputs (SmolLM2-135M Q4_1
//!   diverges from exact f32 math at step 5), so whale reproduces it bit for
//!   bit ([`quantize_acts`], checked against bytes produced by llama.cpp's own
//!   CPU backend) and applies ggml's per-block formulas ([`vec_dot_q`],
//!   [`matmul_q`]). It is also the fast path: 8-bit × 8-bit multiply-adds
//!   (`vpmaddubsw`, `vpdpbusd`) instead of widening every weight to f32. The
//!   engine uses [`matmul_q`] for every non-F32 weight; [`matvec`] /
//!   [`matmul()`] remain as exact-f32 references.
//! * **No allocation in the hot loop**: [`vec_dot`] decodes block by block
//!   into a 256-float stack buffer (scalar) or in registers (AVX2), and
//!   [`matmul()`] decodes each weight row once into a per-thread scratch row
//!   reused for all `m` input vectors.
//! * **Threads**: [`matvec`] and [`matmul()`] split weight rows across scoped
//!   the persistent worker pool (`pool`) when the product is large enough;
//!   results never depend on the thread count.
//!
//! # Modules
//!
//! * [`types`] — [`GgmlType`], block sizes and row sizes.
//! * [`blocks`] — the on-disk block structs.
//! * [`dequant`] — scalar decoders and [`dequantize_row`].
//! * [`iq`] — the i-quant and ternary formats: grids, decoders, kernels.
//! * [`fp8`] — DeepSeek's block-scaled float8 e4m3 weights, read in place.
//! * [`dot`] — [`dot_f32`], [`vec_dot_ref`], [`vec_dot`].
//! * [`mod@matmul`] — [`matvec`], [`matmul()`].
//! * [`q8`] — activation quantization: [`vec_dot_type`], [`QuantizedActs`],
//!   [`quantize_acts`].
//! * [`qdot`] — dot products against quantized activations: [`vec_dot_q_ref`],
//!   [`vec_dot_q`], [`matmul_q`], [`matmul_q_acts`].
//! * [`dispatch`] — SIMD level detection and the `WHALE_SIMD` override.
//! * [`error`] — [`KernelError`].
//!
//! # Numerics
//!
//! Decoding is exact with respect to the format definition (the same f32
//! operations in the same order as gguf-py, no fused multiply-add), so
//! [`dequantize_row`] is bit-identical to gguf-py's dequantizer.
//! Dot products accumulate in f32 with several partial sums; they differ from
//! the f64-accumulated [`vec_dot_ref`] by ordinary rounding, bounded by a
//! small multiple of `f32::EPSILON * sum(|w_i * x_i|)` (the tests use
//! `1e-5 * sum(|w_i * x_i|)`; observed errors are below `1e-7` of it). Results
//! of [`vec_dot`], [`matvec`] and [`matmul()`] are deterministic for a given
//! SIMD level and never depend on the thread count; [`matmul()`] with `m > 1`
//! may differ from [`matvec`] in the last bits (different summation order).
//!
//! The quantized-activation path is stricter: integer block sums are exact
//! and the f32 operations are done in one fixed order, so [`vec_dot_q`] at
//! every SIMD level, and every element of [`matmul_q`] whatever `m` and the
//! thread count, is bit-identical to the scalar reference [`vec_dot_q_ref`]
//! (F32 weights excepted: they keep f32 activations and the f32 kernels).
//! Against llama.cpp the quantized activations are identical and the dot
//! products agree to f32 rounding of the per-block sums (ggml sums the same
//! block terms in another order).

pub mod attn;
pub mod blocks;
pub mod dequant;
pub mod dispatch;
pub mod dot;
pub mod error;
pub mod fp8;
pub mod gemm;
pub mod iq;
pub mod matmul;
pub mod pool;
pub mod q8;
pub mod qdot;
pub mod types;
pub mod x8;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_q8;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_q8;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod panel;
#[cfg(target_arch = "x86_64")]
mod panel_avx2;
#[cfg(target_arch = "x86_64")]
mod rows8;

pub use attn::{attn_scores, attn_scores_with, attn_weighted_sum, attn_weighted_sum_with, KvSlice};
pub use dequant::dequantize_row;
pub use dispatch::SimdLevel;
pub use dot::{dot_f32, dot_f32_with, vec_dot, vec_dot_ref, vec_dot_with};
pub use error::KernelError;
pub use gemm::{gemm_f32, gemm_f32_ref};
pub use matmul::{matmul, matmul_gather, matvec, matvec_many};
pub use q8::{f32_to_f16, quantize_acts, quantize_acts_into, quantize_acts_with, vec_dot_type, QuantizedActs};
pub use qdot::{
    matmul_q, matmul_q_acts, matmul_q_each, matmul_q_many, vec_dot_q, vec_dot_q_ref, vec_dot_q_with, QProduct,
    QProductOwn,
};
pub use types::GgmlType;
