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
//! * unset, empty, `auto` or anything else: the best level the CPU supports.
//!
//! Adding a level (e.g. AVX-512 or NEON) means: a variant here, a detection
//! arm in [`SimdLevel::is_available`], and a kernel module beside
//! `avx2.rs` that [`crate::dot`] calls for that variant.

use std::sync::OnceLock;

/// An instruction-set level for the fast kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Portable Rust; always available.
    Scalar,
    /// x86-64 AVX2 with FMA3 and F16C (every AVX2 CPU has F16C; it is
    /// checked all the same).
    Avx2Fma,
}

/// Name of the environment variable read by [`active`].
pub const ENV_VAR: &str = "WHALE_SIMD";

impl SimdLevel {
    /// Every level, slowest first.
    pub const ALL: [SimdLevel; 2] = [SimdLevel::Scalar, SimdLevel::Avx2Fma];

    /// Short lower-case name, as accepted by `WHALE_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2Fma => "avx2",
        }
    }

    /// Whether the running CPU supports this level.
    pub fn is_available(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            SimdLevel::Avx2Fma => {
                #[cfg(target_arch = "x86_64")]
                {
                    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
                }
                #[cfg(not(target_arch = "x86_64"))]
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

    pub(crate) fn level(self) -> SimdLevel {
        self.0
    }
}
