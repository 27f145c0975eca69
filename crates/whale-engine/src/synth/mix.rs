//! Which type each tensor gets in a file of a given type: the mix that
//! llama.cpp's `llama-quantize` chooses (its `llama_tensor_get_type`, as of
//! llama.cpp 0c1e57098), restated for the file types whale writes.
//!
//! In short, for the K-quant mixes:
//! - 1-D tensors, norms and the MoE router (`ffn_gate_inp`) stay F32;
//! - the output matrix (or the token embedding, when it is tied to the
//!   output) is Q6_K, or Q8_0 when its rows are not a multiple of its block;
//! - `_M` mixes give Q6_K to the V-like attention tensors (`attn_v`,
//!   `attn_qkv`, `attn_kv_b`) and to `ffn_down*` of the layers
//!   [`use_more_bits`] picks (the first and last eighth, and every third in
//!   between). Both count in file order, where `blk.10` comes before
//!   `blk.2`: the Nth V-like tensor of the file, and for a dense model the
//!   Nth `ffn_down` (a MoE model's layer number is read from the name); `Q4_K_S` gives Q5_K to the first four V-like tensors and the
//!   first eighth of `ffn_down`; 8-expert models (Mixtral) get Q8_0 for
//!   `attn_v`/`attn_k` and Q5_K for `attn_output`;
//! - finally a type whose block does not divide a tensor's rows falls back:
//!   Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, and F16 when
//!   even 32 does not divide them.
//!
//! The tests check the result against the tensor types of real Q4_K_M files
//! that llama-quantize wrote (Qwen2.5-Coder-0.5B, DeepSeek-R1-Distill-Qwen-7B).

use std::str::FromStr;

use whale_kernels::GgmlType;

/// A whole-file type, as `llama-quantize` and `--type` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    pub const ALL: [FileType; 13] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q8_0,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::BF16 => "bf16",
            FileType::Q4_0 => "q4_0",
            FileType::Q4_1 => "q4_1",
            FileType::Q5_0 => "q5_0",
            FileType::Q5_1 => "q5_1",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_K_S => "q4_k_s",
            FileType::Q4_K_M => "q4_k_m",
            FileType::Q5_K_S => "q5_k_s",
            FileType::Q5_K_M => "q5_k_m",
            FileType::Q6_K => "q6_k",
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn gguf_id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::BF16 => 32,
        }
    }

    /// The type of every quantizable tensor before the mix adjusts it.
    pub fn base(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_K_S | FileType::Q4_K_M => GgmlType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => GgmlType::Q5_K,
            FileType::Q6_K => GgmlType::Q6_K,
        }
    }
}

impl FromStr for FileType {
    type Err = String;
    fn from_str(s: &str) -> Result<FileType, String> {
        let l = s.to_ascii_lowercase();
        FileType::ALL.into_iter().find(|t| t.name() == l).ok_or_else(|| {
            let names: Vec<_> = FileType::ALL.iter().map(|t| t.name()).collect();
            format!("unknown file type {s:?} (known: {})", names.join(", "))
        })
    }
}

/// What the mix needs to know about the whole model.
#[derive(Clone, Copy, Debug)]
pub struct MixModel {
    pub n_layer: usize,
    /// Routed experts (0 for a dense model).
    pub n_expert: usize,
    /// Whether there is no `output.weight` (the embedding is the output).
    pub tied: bool,
}

/// The rule llama-quantize uses to spend more bits on some layers.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

fn is_v_like(name: &str) -> bool {
    name.contains("attn_v.weight") || name.contains("attn_qkv.weight") || name.contains("attn_kv_b.weight")
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Chooses tensor types in file order; the V-like tensors are counted as they
/// come, as llama-quantize counts them.
pub struct Mix {
    ftype: FileType,
    model: MixModel,
    n_v_like: usize,
    i_v_like: usize,
    i_ffn_down: usize,
}

impl Mix {
    /// `names` are all tensor names of the file, in order (only counted).
    pub fn new<'a>(ftype: FileType, model: MixModel, names: impl IntoIterator<Item = &'a str>) -> Mix {
        let n_v_like = names.into_iter().filter(|n| is_v_like(n)).count();
        Mix { ftype, model, n_v_like, i_v_like: 0, i_ffn_down: 0 }
    }

    /// The type of the next tensor, `dims` in GGUF order.
    pub fn next(&mut self, name: &str, dims: &[u64]) -> GgmlType {
        let quantizable = dims.len() >= 2
            && name.ends_with("weight")
            && !name.contains("_norm.weight")
            && !name.contains("ffn_gate_inp.weight");
        if !quantizable {
            return GgmlType::F32;
        }
        let base = self.ftype.base();
        if matches!(base, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return base;
        }
        let chosen = self.adjust(name, dims, base);
        fallback(chosen, dims[0])
    }

    fn adjust(&mut self, name: &str, dims: &[u64], base: GgmlType) -> GgmlType {
        use FileType as F;
        let (ft, m) = (self.ftype, self.model);
        let eight = m.n_expert == 8;
        let is_output = name == "output.weight" || (m.tied && name == "token_embd.weight");
        if is_output {
            return if !dims[0].is_multiple_of(base.block_size() as u64) {
                GgmlType::Q8_0
            } else if base != GgmlType::Q8_0 {
                GgmlType::Q6_K
            } else {
                base
            };
        }
        if name == "token_embd.weight" {
            return base;
        }
        if is_v_like(name) {
            let i = self.i_v_like;
            self.i_v_like += 1;
            if eight {
                return GgmlType::Q8_0;
            }
            return match ft {
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, self.n_v_like) => GgmlType::Q6_K,
                F::Q4_K_S if i < 4 => GgmlType::Q5_K,
                _ => base,
            };
        }
        if name.contains("attn_k.weight") {
            return if eight { GgmlType::Q8_0 } else { base };
        }
        if name.contains("ffn_down") {
            // A MoE model's layer is read from the name; a dense model's is
            // the count of ffn_down tensors so far (file order), as
            // llama-quantize does.
            let i = if m.n_expert > 1 { layer_of(name).unwrap_or(0) } else { self.i_ffn_down };
            self.i_ffn_down += 1;
            let n = m.n_layer;
            return match ft {
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => GgmlType::Q6_K,
                F::Q4_K_S if i < n / 8 => GgmlType::Q5_K,
                _ => base,
            };
        }
        if name.contains("attn_output.weight") && eight && matches!(ft, F::Q4_K_S | F::Q4_K_M) {
            return GgmlType::Q5_K;
        }
        base
    }
}

/// A type whose block does not divide `cols` falls back to a smaller block.
pub fn fallback(ty: GgmlType, cols: u64) -> GgmlType {
    if cols.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let smaller = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K | GgmlType::Q8_K => GgmlType::Q8_0,
        other => other,
    };
    if cols.is_multiple_of(smaller.block_size() as u64) {
        smaller
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_picks_the_ends_and_every_third() {
        let picked: Vec<usize> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(picked, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn fallbacks() {
        assert_eq!(fallback(GgmlType::Q4_K, 896), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q6_K, 896), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q4_K, 16), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q4_K, 2048), GgmlType::Q4_K);
    }

    #[test]
    fn file_types_parse_by_name() {
        assert_eq!("Q4_K_M".parse::<FileType>(), Ok(FileType::Q4_K_M));
        assert!("q3_k_xl".parse::<FileType>().unwrap_err().contains("q4_k_m"));
    }
}
