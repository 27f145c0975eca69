//! The KV cache: per-layer key and value rows, preallocated for a capacity
//! (never grown by concatenation), stored as f16 (the default, as in
//! llama.cpp) or f32.

use crate::models::ModelError;

/// Element type of the KV cache, as llama.cpp's `--cache-type-k/-v`.
///
/// `F16` (the default, as in llama.cpp) halves the cache: keys and values
/// are rounded to f16 (nearest even) when stored and widened exactly when
/// read. `F32` keeps them exact, as Hugging Face transformers computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheType {
    F32,
    #[default]
    F16,
}

impl CacheType {
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
        }
    }

    /// Bytes per cached value.
    pub fn bytes(self) -> usize {
        match self {
            CacheType::F32 => 4,
            CacheType::F16 => 2,
        }
    }
}

impl std::str::FromStr for CacheType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(CacheType::F32),
            "f16" => Ok(CacheType::F16),
            other => Err(format!("unknown cache type {other:?} (expected f16 or f32)")),
        }
    }
}

/// One layer's cached rows (keys or values), `[capacity, width]`.
#[derive(Clone, Debug, PartialEq)]
pub enum KvRows {
    F32(Vec<f32>),
    /// f16 bit patterns.
    F16(Vec<u16>),
}

impl KvRows {
    pub fn zeros(ty: CacheType, n: usize) -> KvRows {
        match ty {
            CacheType::F32 => KvRows::F32(vec![0.0; n]),
            CacheType::F16 => KvRows::F16(vec![0; n]),
        }
    }

    pub fn cache_type(&self) -> CacheType {
        match self {
            KvRows::F32(_) => CacheType::F32,
            KvRows::F16(_) => CacheType::F16,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32(v) => v.len(),
            KvRows::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        match self {
            KvRows::F32(v) => v.capacity() * 4,
            KvRows::F16(v) => v.capacity() * 2,
        }
    }

    /// Stores `x` at values `at..at + x.len()`. f16 rounds to nearest even
    /// and saturates at ±65504 (f16's largest finite value), where a plain
    /// conversion would store ±inf and turn every later score into NaN.
    pub fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            KvRows::F32(v) => v[at..at + x.len()].copy_from_slice(x),
            KvRows::F16(v) => {
                const F16_MAX: f32 = 65504.0;
                let dst = &mut v[at..at + x.len()];
                if x.iter().all(|v| v.abs() <= F16_MAX) {
                    whale_kernels::f32_to_f16(x, dst);
                } else {
                    let clamped: Vec<f32> = x.iter().map(|v| v.clamp(-F16_MAX, F16_MAX)).collect();
                    whale_kernels::f32_to_f16(&clamped, dst);
                }
            }
        }
    }

    /// Values `at..at + out.len()`, widened to f32.
    pub fn read(&self, at: usize, out: &mut [f32]) {
        self.view().read(at, out)
    }

    /// The rows, as the attention kernels read them.
    pub fn view(&self) -> whale_kernels::KvSlice<'_> {
        match self {
            KvRows::F32(v) => whale_kernels::KvSlice::F32(v),
            KvRows::F16(v) => whale_kernels::KvSlice::F16(v),
        }
    }

    /// Copies the first `n` values of `src`, converting between cache types
    /// (f16 to f32 exactly; f32 to f16 as [`KvRows::write`] rounds).
    pub fn copy_prefix_from(&mut self, src: &KvRows, n: usize) {
        match (self, src) {
            (KvRows::F32(d), KvRows::F32(s)) => d[..n].copy_from_slice(&s[..n]),
            (KvRows::F16(d), KvRows::F16(s)) => d[..n].copy_from_slice(&s[..n]),
            (d, s) => {
                let mut wide = vec![0f32; n];
                s.read(0, &mut wide);
                d.write(0, &wide);
            }
        }
    }

    /// Grows to `n` values (zeros), keeping the contents.
    pub fn grow(&mut self, n: usize) {
        match self {
            KvRows::F32(v) => {
                v.reserve_exact(n.saturating_sub(v.len()));
                v.resize(n.max(v.len()), 0.0);
            }
            KvRows::F16(v) => {
                v.reserve_exact(n.saturating_sub(v.len()));
                v.resize(n.max(v.len()), 0);
            }
        }
    }
}

/// Per-layer K and V rows, preallocated for `capacity` tokens.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// `[n_layers]` of `[capacity, k_width]`.
    pub k: Vec<KvRows>,
    /// `[n_layers]` of `[capacity, v_width]`.
    pub v: Vec<KvRows>,
    pub k_width: usize,
    pub v_width: usize,
    /// Tokens stored so far.
    pub len: usize,
    pub capacity: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, k_width: usize, v_width: usize, capacity: usize, ty: CacheType) -> KvCache {
        KvCache {
            k: vec![KvRows::zeros(ty, capacity * k_width); n_layers],
            v: vec![KvRows::zeros(ty, capacity * v_width); n_layers],
            k_width,
            v_width,
            len: 0,
            capacity,
        }
    }

    /// Bytes per cached token (all layers, keys and values).
    pub fn bytes_per_token(&self) -> usize {
        let ty = self.k.first().map_or(CacheType::F32, KvRows::cache_type);
        self.k.len() * (self.k_width + self.v_width) * ty.bytes()
    }

    /// Forget everything after the first `len` tokens (keeps the allocation).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Check that `n` more tokens fit.
    pub fn reserve(&self, n: usize) -> Result<(), ModelError> {
        if self.len + n > self.capacity {
            return Err(ModelError::ContextFull { needed: self.len + n, capacity: self.capacity });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f16 rows round to nearest even, saturate instead of storing inf, and
    /// prefix copies convert between cache types.
    #[test]
    fn f16_cache_rows_round_saturate_and_convert() {
        let mut h = KvRows::zeros(CacheType::F16, 6);
        h.write(0, &[1.0 + 2f32.powi(-11), 1e6, -1e6, 65504.0, 0.1, f32::NAN]);
        let mut back = [0f32; 6];
        h.read(0, &mut back);
        // Ties to even; beyond f16's range saturates instead of storing inf.
        assert_eq!(&back[..5], &[1.0, 65504.0, -65504.0, 65504.0, half::f16::from_f32(0.1).to_f32()]);
        assert!(back[5].is_nan());
        // Prefix copies convert between types: f16 -> f32 exactly, f32 -> f16 as `write`.
        let mut f = KvRows::zeros(CacheType::F32, 6);
        f.copy_prefix_from(&h, 5);
        let mut wide = [0f32; 5];
        f.read(0, &mut wide);
        assert_eq!(wide, back[..5]);
        let mut h2 = KvRows::zeros(CacheType::F16, 6);
        h2.copy_prefix_from(&KvRows::F32(vec![3.0, 1e9, 0.1, 0.0, 0.0, 0.0]), 3);
        let mut r = [0f32; 3];
        h2.read(0, &mut r);
        assert_eq!(r, [3.0, 65504.0, half::f16::from_f32(0.1).to_f32()]);
        assert_eq!((h.bytes(), f.bytes()), (12, 24));
    }
}
