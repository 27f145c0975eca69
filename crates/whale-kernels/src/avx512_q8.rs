//! AVX-512 VNNI kernels for quantized activations (x86-64 only).
//!
//! The kernels of `avx2_q8` (the `int8_kernels!` macro: same unpacking,
//! same exact integers, same f32 step, hence bit-identical results) with the
//! multiply-adds done by VNNI on 256-bit registers (AVX512-VL encodings):
//!
//! * `vpdpbusd` replaces `vpmaddubsw` + `vpmaddwd(·, 1)` (+ add): four u8×i8
//!   products summed straight into i32, no i16 intermediate;
//! * `vpdpwssd` replaces `vpmaddwd(·, scales)` + add for the K-quant scales;
//! * Q8_0 weights are biased to unsigned (`x + 128`, one xor) and corrected
//!   with `-128·Σy` instead of the two `vpsignb` of AVX2;
//! * the fifth bit of Q5_0 / Q5_1 quants is a byte mask (`vpaddb` under `qh`).
//!
//! Why not 512-bit registers: on the Intel Xeon (Sapphire Rapids class)
//! development machine, 512-bit integer multiplies issue on one fused port
//! while 256-bit ones use two, and a first 512-bit version of these kernels
//! measured 5-25% slower than AVX2; the win comes from the fused VNNI
//! instructions, which 256-bit registers keep. (On AMD Zen 4/5, 256-bit VNNI
//! runs at full rate as well.)
//!
//! Every function is an `unsafe fn` with the target features below; callers
//! must hold a `dispatch::Verified` at the `Avx512Vnni` level and pass the
//! shapes the public entry points check.

use core::arch::x86_64::*;

/// `acc +` Σ u·y (unsigned × signed bytes) in eight i32 lanes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn dot_u8_i8(acc: __m256i, u: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, y)
}

/// `acc + Σ u·y·sc`, `sc` one i16 per pair of bytes (the i16 pair sums of
/// `vpmaddubsw` cannot saturate: at most 63·127·2).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn dot_acc_scaled(acc: __m256i, u: __m256i, y: __m256i, sc: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, y), sc)
}

/// `acc +` Σ (x + 128)·y for signed `x`: `x ^ 0x80` is `x + 128` as an unsigned byte.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q8_0_dot(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    dot_u8_i8(acc, _mm256_xor_si256(x, _mm256_set1_epi8(-128)), y)
}

/// `lo` with 0x10 added to byte j where bit j of `qh` is set: `qh` is the
/// byte mask itself (one masked add instead of AVX2's broadcast, shuffle,
/// test and select; the Q5_0 experts' downs of a DeepSeek-V2-Lite GGUF
/// are read through it).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn or_high_bits(lo: __m256i, qh: [u8; 4]) -> __m256i {
    _mm256_mask_add_epi8(lo, u32::from_le_bytes(qh), lo, _mm256_set1_epi8(0x10))
}

/// `q8_0_dot` adds 128·Σy per block; the kernel subtracts it.
pub(crate) const Q8_0_OFF: i32 = 128;

crate::avx2_q8::int8_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");
