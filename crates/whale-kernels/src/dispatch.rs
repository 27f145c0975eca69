//! Run-time choice of the instruction-set level used by the fast kernels.
//!
//! Every fast kernel exists at the [`SimdLevel::Scalar`] level (portable
//! Rust, auto-vectorised by the compiler for the build target) and may have a
//! faster version at a higher level. The level used by [`crate::vec_dot`],
//! [`crate::matvec`], [`crate::matmul()`] and [`crate::dot_f32`] is chosen once
//! per process by [`active`]:
//!
//! * `WHALE_SIMD=scalar` forces the scalar kernels;
//! * `WHALE_SIMD=avx2` asks for AVX2+FMA (used only if the CPU has it);
//! * `WHALE_SIMD=avx512` asks for AVX-512 with VNNI (used only if the CPU
//!   has it), without AMX;
//! * `WHALE_SIMD=neon` asks for the AArch64 NEON kernels (the default there);
//! * `WHALE_SIMD=amx` asks for AVX-512 VNNI plus AMX-INT8 tiles for
//!   products with 16 or more activation rows (used only if the CPU has AMX
//!   and the OS grants it, see [`crate::amx`]);
//! * unset, empty, `auto` or anything else: the best level the CPU supports.
//!
//! A level that names an unsupported instruction set falls back to the best
//! available one (so `WHALE_SIMD=avx512` on an AVX2-only CPU runs AVX2).
//!
//! Kernels without a version at some level use the next lower one: the f32
//! kernels ([`crate::vec_dot`], [`crate::matvec`], ...) run their AVX2 code at
//! the AVX-512 level; the quantized-activation kernels ([`crate::qdot`]) have
//! AVX-512 VNNI versions.
//!
//! Adding a level (e.g. NEON) means: a variant here, a detection arm in
//! [`SimdLevel::is_available`], and kernel modules beside `avx2.rs` /
//! `avx512_q8.rs` that [`crate::dot`] and [`crate::qdot`] call for it.

use std::sync::OnceLock;

/// An instruction-set level for the fast kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Portable Rust; always available.
    Scalar,
    /// x86-64 AVX2 with FMA3 and F16C (every AVX2 CPU has F16C; it is
    /// checked all the same).
    Avx2Fma,
    /// x86-64 AVX-512 F/BW/VL with VNNI (`vpdpbusd`), on top of everything
    /// [`SimdLevel::Avx2Fma`] needs (Intel Ice Lake and later, AMD Zen 4 and
    /// later).
    Avx512Vnni,
    /// [`SimdLevel::Avx512Vnni`] plus Intel AMX-INT8 tiles (Sapphire Rapids
    /// and later, Linux 5.16+), used by [`crate::matmul_q`] for groups of 16
    /// activation rows (prefill); every other kernel runs its AVX-512 code.
    Amx,
    /// AArch64 Advanced SIMD (every AArch64 CPU has it): hand-written
    /// kernels for the integer dots of the quantized products; the other
    /// kernels run the portable code, which the compiler vectorises with
    /// NEON on AArch64 anyway.
    Neon,
}

/// Name of the environment variable read by [`active`].
pub const ENV_VAR: &str = "WHALE_SIMD";

impl SimdLevel {
    /// Every level, slowest first.
    pub const ALL: [SimdLevel; 5] =
        [SimdLevel::Scalar, SimdLevel::Avx2Fma, SimdLevel::Avx512Vnni, SimdLevel::Amx, SimdLevel::Neon];

    /// Short lower-case name, as accepted by `WHALE_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2Fma => "avx2",
            SimdLevel::Avx512Vnni => "avx512",
            SimdLevel::Amx => "amx",
            SimdLevel::Neon => "neon",
        }
    }

    /// Whether the running CPU supports this level.
    pub fn is_available(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            SimdLevel::Avx2Fma => {
                #[cfg(target_arch = "x86_64")]
                {
                    std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                        && std::arch::is_x86_feature_detected!("f16c")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            SimdLevel::Avx512Vnni => {
                #[cfg(target_arch = "x86_64")]
                {
                    SimdLevel::Avx2Fma.is_available()
                        && std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512bw")
                        && std::arch::is_x86_feature_detected!("avx512vl")
                        && std::arch::is_x86_feature_detected!("avx512vnni")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            SimdLevel::Amx => {
                #[cfg(target_arch = "x86_64")]
                {
                    SimdLevel::Avx512Vnni.is_available() && crate::amx::available()
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            SimdLevel::Neon => {
                #[cfg(target_arch = "aarch64")]
                {
                    std::arch::is_aarch64_feature_detected!("neon")
                }
                #[cfg(not(target_arch = "aarch64"))]
                {
                    false
                }
            }
        }
    }

    /// The fastest level the running CPU supports.
    pub fn best_available() -> SimdLevel {
        Self::ALL.iter().rev().copied().find(|l| l.is_available()).unwrap_or(SimdLevel::Scalar)
    }

    /// The levels the running CPU supports (always includes `Scalar`).
    pub fn available() -> Vec<SimdLevel> {
        Self::ALL.iter().copied().filter(|l| l.is_available()).collect()
    }
}

impl core::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The level chosen for a `WHALE_SIMD` value (see the module docs).
pub fn choose(env_value: Option<&str>) -> SimdLevel {
    let best = SimdLevel::best_available();
    match env_value.map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "scalar" => SimdLevel::Scalar,
        Some(v) if v == "avx2" && SimdLevel::Avx2Fma.is_available() => SimdLevel::Avx2Fma,
        Some(v) if v == "avx512" && SimdLevel::Avx512Vnni.is_available() => SimdLevel::Avx512Vnni,
        Some(v) if v == "amx" && SimdLevel::Amx.is_available() => SimdLevel::Amx,
        Some(v) if v == "neon" && SimdLevel::Neon.is_available() => SimdLevel::Neon,
        _ => best,
    }
}

/// The level the kernels use in this process: decided on first call from
/// `WHALE_SIMD` and the CPU, then fixed.
pub fn active() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| choose(std::env::var(ENV_VAR).ok().as_deref()))
}

/// A [`SimdLevel`] known to be supported by the running CPU. Only this module
/// can make one, after checking; the SIMD kernels rely on that for safety.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verified(SimdLevel);

impl Verified {
    /// `Some` iff the CPU supports `level`.
    pub(crate) fn new(level: SimdLevel) -> Option<Verified> {
        level.is_available().then_some(Verified(level))
    }

    /// The process-wide level ([`active`]).
    pub(crate) fn active() -> Verified {
        static ACTIVE: OnceLock<Verified> = OnceLock::new();
        *ACTIVE.get_or_init(|| Verified::new(active()).unwrap_or(Verified(SimdLevel::Scalar)))
    }

    /// The level; kernels without tile code run their AVX-512 VNNI version
    /// at [`SimdLevel::Amx`].
    pub(crate) fn level(self) -> SimdLevel {
        self.0
    }

    /// Whether the AMX tile products may run (the level is [`SimdLevel::Amx`]).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn amx(self) -> bool {
        self.0 == SimdLevel::Amx
    }
}
