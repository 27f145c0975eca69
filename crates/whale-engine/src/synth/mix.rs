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
//! - the very-low-bit i-quant mixes (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S)
//!   give Q5_K to the output, Q2_K to the token embedding, Q4_K to the
//!   V-like tensors when the model has grouped-query attention (4+ heads a
//!   KV head) or 4+ experts (else Q2_K), Q2_K to the first eighth of the
//!   `ffn_down` tensors (counted in file order, over `ffn_down`, `_exps` and
//!   `_shexp`), and IQ2_XXS (IQ1_*) or Q5_K (8 experts) to `attn_output`;
//!   IQ2_S takes IQ3_S wherever the others take Q2_K, and for `attn_output`;
//! - IQ3_XXS (no importance matrix): output Q5_K, token embedding IQ3_S,
//!   V-like Q4_K with grouped-query attention (else IQ3_S), `attn_k` and
//!   `attn_q` IQ2_S, `ffn_down` Q4_K in the first eighth of the layers and
//!   Q3_K after, `attn_output` IQ3_S; IQ3_S: V-like Q4_K with grouped-query
//!   attention;
//! - Q2_K gives Q3_K to `ffn_down` and `attn_output`, and to the V-like
//!   tensors Q4_K with grouped-query attention, else Q3_K; Q3_K_S keeps
//!   Q3_K everywhere; Q3_K_M gives Q5_K to the first two V-like tensors and
//!   Q4_K to the others, Q5_K to `ffn_down` of the first sixteenth of the
//!   layers and Q4_K after, Q4_K to `attn_output`; Q3_K_L gives Q5_K to all
//!   three (8-expert models: `attn_output` Q5_K for Q2_K, Q3_K_S and Q3_K_M
//!   as for Q4_K_M);
//! - IQ4_NL / IQ4_XS give Q5_K to the V-like tensors with grouped-query
//!   attention and to `ffn_down` of the first eighth of the layers; the
//!   ternary TQ1_0 / TQ2_0 give Q4_K to the token embedding;
//! - `ud-iq1_s` is not a llama-quantize type but the mix of unsloth's
//!   published dynamic 1.58-bit DeepSeek-R1 (`DeepSeek-R1-UD-IQ1_S`, as its
//!   authors describe it): routed experts' gate and up IQ1_S, their down
//!   IQ2_XXS in the layers [`use_more_bits`] picks and IQ1_S elsewhere,
//!   shared experts Q6_K, attention and the dense layers Q4_K (`attn_kv_b`
//!   and dense `ffn_down` Q6_K), token embedding Q4_K, output Q6_K;
//! - finally a type whose block does not divide a tensor's rows falls back:
//!   Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K/TQ* → Q4_0, the
//!   256-element i-quants → IQ4_NL, and F16 when even 32 does not divide them.
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
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ1_S,
    IQ1_M,
    IQ2_XXS,
    IQ2_XS,
    IQ2_S,
    IQ3_XXS,
    IQ3_S,
    IQ4_NL,
    IQ4_XS,
    TQ1_0,
    TQ2_0,
    /// unsloth's dynamic 1.58-bit DeepSeek-R1 mix (module docs).
    UD_IQ1_S,
}

impl FileType {
    pub const ALL: [FileType; 29] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q8_0,
        FileType::Q2_K,
        FileType::Q3_K_S,
        FileType::Q3_K_M,
        FileType::Q3_K_L,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
        FileType::IQ1_S,
        FileType::IQ1_M,
        FileType::IQ2_XXS,
        FileType::IQ2_XS,
        FileType::IQ2_S,
        FileType::IQ3_XXS,
        FileType::IQ3_S,
        FileType::IQ4_NL,
        FileType::IQ4_XS,
        FileType::TQ1_0,
        FileType::TQ2_0,
        FileType::UD_IQ1_S,
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
            FileType::Q2_K => "q2_k",
            FileType::Q3_K_S => "q3_k_s",
            FileType::Q3_K_M => "q3_k_m",
            FileType::Q3_K_L => "q3_k_l",
            FileType::Q4_K_S => "q4_k_s",
            FileType::Q4_K_M => "q4_k_m",
            FileType::Q5_K_S => "q5_k_s",
            FileType::Q5_K_M => "q5_k_m",
            FileType::Q6_K => "q6_k",
            FileType::IQ1_S => "iq1_s",
            FileType::IQ1_M => "iq1_m",
            FileType::IQ2_XXS => "iq2_xxs",
            FileType::IQ2_XS => "iq2_xs",
            FileType::IQ2_S => "iq2_s",
            FileType::IQ3_XXS => "iq3_xxs",
            FileType::IQ3_S => "iq3_s",
            FileType::IQ4_NL => "iq4_nl",
            FileType::IQ4_XS => "iq4_xs",
            FileType::TQ1_0 => "tq1_0",
            FileType::TQ2_0 => "tq2_0",
            FileType::UD_IQ1_S => "ud-iq1_s",
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
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::BF16 => 32,
            FileType::IQ2_XXS => 19,
            FileType::IQ2_XS => 20,
            FileType::IQ3_XXS => 23,
            FileType::IQ3_S => 26,
            FileType::IQ2_S => 28,
            FileType::IQ1_S | FileType::UD_IQ1_S => 24,
            FileType::IQ4_NL => 25,
            FileType::IQ4_XS => 30,
            FileType::IQ1_M => 31,
            FileType::TQ1_0 => 36,
            FileType::TQ2_0 => 37,
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
            FileType::Q2_K => GgmlType::Q2_K,
            FileType::Q3_K_S | FileType::Q3_K_M | FileType::Q3_K_L => GgmlType::Q3_K,
            FileType::Q4_K_S | FileType::Q4_K_M => GgmlType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => GgmlType::Q5_K,
            FileType::Q6_K => GgmlType::Q6_K,
            FileType::IQ1_S | FileType::UD_IQ1_S => GgmlType::IQ1_S,
            FileType::IQ1_M => GgmlType::IQ1_M,
            FileType::IQ2_XXS => GgmlType::IQ2_XXS,
            FileType::IQ2_XS => GgmlType::IQ2_XS,
            FileType::IQ2_S => GgmlType::IQ2_S,
            FileType::IQ3_XXS => GgmlType::IQ3_XXS,
            FileType::IQ3_S => GgmlType::IQ3_S,
            FileType::IQ4_NL => GgmlType::IQ4_NL,
            FileType::IQ4_XS => GgmlType::IQ4_XS,
            FileType::TQ1_0 => GgmlType::TQ1_0,
            FileType::TQ2_0 => GgmlType::TQ2_0,
        }
    }

    /// llama-quantize's very-low-bit family (its own rules for V-like
    /// tensors, `ffn_down`, `attn_output` and the embeddings).
    fn very_low_bit(self) -> bool {
        matches!(self, FileType::IQ1_S | FileType::IQ1_M | FileType::IQ2_XXS | FileType::IQ2_XS | FileType::IQ2_S)
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
    /// Query heads per KV head (1 without grouped-query attention).
    pub n_gqa: usize,
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
            } else if ft.very_low_bit() || ft == F::IQ3_XXS {
                GgmlType::Q5_K
            } else if base != GgmlType::Q8_0 {
                GgmlType::Q6_K
            } else {
                base
            };
        }
        if name == "token_embd.weight" {
            return match ft {
                F::IQ2_S | F::IQ3_XXS => GgmlType::IQ3_S,
                _ if ft.very_low_bit() => GgmlType::Q2_K,
                F::TQ1_0 | F::TQ2_0 | F::UD_IQ1_S => GgmlType::Q4_K,
                _ => base,
            };
        }
        if ft == F::UD_IQ1_S {
            return ud_iq1_s(name, m.n_layer);
        }
        if ft.very_low_bit() {
            return self.very_low_bit(name, base);
        }
        if is_v_like(name) {
            let i = self.i_v_like;
            self.i_v_like += 1;
            if eight {
                return GgmlType::Q8_0;
            }
            return match ft {
                F::Q2_K if m.n_gqa >= 4 => GgmlType::Q4_K,
                F::Q2_K => GgmlType::Q3_K,
                F::Q3_K_M if i < 2 => GgmlType::Q5_K,
                F::Q3_K_M => GgmlType::Q4_K,
                F::Q3_K_L => GgmlType::Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, self.n_v_like) => GgmlType::Q6_K,
                F::Q4_K_S if i < 4 => GgmlType::Q5_K,
                F::IQ4_NL | F::IQ4_XS if m.n_gqa >= 4 => GgmlType::Q5_K,
                F::IQ3_XXS | F::IQ3_S if m.n_gqa >= 4 => GgmlType::Q4_K,
                F::IQ3_XXS => GgmlType::IQ3_S,
                _ => base,
            };
        }
        if name.contains("attn_k.weight") {
            return if eight {
                GgmlType::Q8_0
            } else if ft == F::IQ3_XXS {
                GgmlType::IQ2_S
            } else {
                base
            };
        }
        if name.contains("attn_q.weight") && ft == F::IQ3_XXS {
            return GgmlType::IQ2_S;
        }
        if name.contains("ffn_down") {
            // A MoE model's layer is read from the name; a dense model's is
            // the count of ffn_down tensors so far (file order), as
            // llama-quantize does.
            let i = if m.n_expert > 1 { layer_of(name).unwrap_or(0) } else { self.i_ffn_down };
            self.i_ffn_down += 1;
            let n = m.n_layer;
            return match ft {
                F::Q2_K => GgmlType::Q3_K,
                F::Q3_K_M if i < n / 16 => GgmlType::Q5_K,
                F::Q3_K_M => GgmlType::Q4_K,
                F::Q3_K_L => GgmlType::Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => GgmlType::Q6_K,
                F::Q4_K_S if i < n / 8 => GgmlType::Q5_K,
                F::IQ4_NL | F::IQ4_XS if i < n / 8 => GgmlType::Q5_K,
                F::IQ3_XXS if i < n / 8 => GgmlType::Q4_K,
                F::IQ3_XXS => GgmlType::Q3_K,
                _ => base,
            };
        }
        if name.contains("attn_output.weight") {
            let to_q5_k_with_eight = matches!(
                ft,
                F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M | F::IQ4_NL | F::IQ4_XS | F::IQ3_XXS | F::IQ3_S
            );
            if eight && to_q5_k_with_eight {
                return GgmlType::Q5_K;
            }
            if !eight {
                match ft {
                    F::Q2_K => return GgmlType::Q3_K,
                    F::IQ3_XXS => return GgmlType::IQ3_S,
                    F::Q3_K_M => return GgmlType::Q4_K,
                    F::Q3_K_L => return GgmlType::Q5_K,
                    _ => {}
                }
            }
        }
        base
    }

    /// IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS below the output and the embedding.
    fn very_low_bit(&mut self, name: &str, base: GgmlType) -> GgmlType {
        let m = self.model;
        // IQ2_S spends IQ3_S where the others spend Q2_K.
        let low = if self.ftype == FileType::IQ2_S { GgmlType::IQ3_S } else { GgmlType::Q2_K };
        if is_v_like(name) {
            self.i_v_like += 1;
            return if m.n_gqa >= 4 || m.n_expert >= 4 { GgmlType::Q4_K } else { low };
        }
        if m.n_expert == 8 && name.contains("attn_k.weight") {
            return GgmlType::Q4_K;
        }
        if name.contains("ffn_down") {
            let i = self.i_ffn_down;
            self.i_ffn_down += 1;
            return if i < m.n_layer / 8 { low } else { base };
        }
        if name.contains("attn_output.weight") {
            return match (m.n_expert, self.ftype) {
                (8, _) => GgmlType::Q5_K,
                (_, FileType::IQ1_S | FileType::IQ1_M) => GgmlType::IQ2_XXS,
                (_, FileType::IQ2_S) => GgmlType::IQ3_S,
                _ => base,
            };
        }
        base
    }
}

/// The `ud-iq1_s` mix below the output and the embedding (module docs).
fn ud_iq1_s(name: &str, n_layer: usize) -> GgmlType {
    if name.contains("_exps") {
        let more = layer_of(name).is_some_and(|i| use_more_bits(i, n_layer));
        return if name.contains("ffn_down") && more { GgmlType::IQ2_XXS } else { GgmlType::IQ1_S };
    }
    if name.contains("_shexp") || is_v_like(name) || name.contains("ffn_down") {
        return GgmlType::Q6_K;
    }
    GgmlType::Q4_K
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
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => GgmlType::Q4_0,
        t if t.is_iquant() => GgmlType::IQ4_NL,
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
    fn iquant_mixes_follow_llama_quantize_and_the_published_r1_mix() {
        use GgmlType as G;
        let moe = MixModel { n_layer: 8, n_expert: 64, tied: false, n_gqa: 1 };
        let mut mix = Mix::new(FileType::UD_IQ1_S, moe, ["blk.0.attn_kv_b.weight"]);
        assert_eq!(mix.next("token_embd.weight", &[2048, 1000]), G::Q4_K);
        assert_eq!(mix.next("blk.0.ffn_down.weight", &[2048, 2048]), G::Q6_K);
        assert_eq!(mix.next("blk.0.attn_kv_b.weight", &[512, 4096]), G::Q6_K);
        assert_eq!(mix.next("blk.3.attn_q_a.weight", &[2048, 1536]), G::Q4_K);
        assert_eq!(mix.next("blk.3.ffn_gate_exps.weight", &[2048, 1408, 64]), G::IQ1_S);
        assert_eq!(mix.next("blk.3.ffn_up_exps.weight", &[2048, 1408, 64]), G::IQ1_S);
        // Layer 2 of 8 is not one that use_more_bits picks; 3 and 7 are.
        assert_eq!(mix.next("blk.2.ffn_down_exps.weight", &[2048, 2048, 64]), G::IQ1_S);
        assert_eq!(mix.next("blk.3.ffn_down_exps.weight", &[2048, 2048, 64]), G::IQ2_XXS);
        assert_eq!(mix.next("blk.7.ffn_down_exps.weight", &[2048, 2048, 64]), G::IQ2_XXS);
        // V2-Lite's 1408-column down projections cannot hold 256-blocks.
        assert_eq!(mix.next("blk.7.ffn_down_exps.weight", &[1408, 2048, 64]), G::IQ4_NL);
        assert_eq!(mix.next("blk.3.ffn_down_shexp.weight", &[2816, 2048]), G::Q6_K);
        assert_eq!(mix.next("blk.3.ffn_gate_inp.weight", &[2048, 64]), G::F32);
        assert_eq!(mix.next("output.weight", &[2048, 1000]), G::Q6_K);

        let dense = MixModel { n_layer: 8, n_expert: 0, tied: false, n_gqa: 7 };
        let mut mix = Mix::new(FileType::IQ2_XXS, dense, ["blk.0.attn_v.weight"]);
        assert_eq!(mix.next("output.weight", &[1536, 1000]), G::Q5_K);
        assert_eq!(mix.next("token_embd.weight", &[1536, 1000]), G::Q2_K);
        assert_eq!(mix.next("blk.0.attn_v.weight", &[1536, 256]), G::Q4_K);
        assert_eq!(mix.next("blk.0.ffn_down.weight", &[8960, 1536]), G::Q2_K);
        assert_eq!(mix.next("blk.1.ffn_down.weight", &[8960, 1536]), G::IQ2_XXS);
        assert_eq!(mix.next("blk.1.attn_output.weight", &[1536, 1536]), G::IQ2_XXS);
        let mut mix = Mix::new(FileType::IQ1_M, dense, []);
        assert_eq!(mix.next("blk.1.attn_output.weight", &[1536, 1536]), G::IQ2_XXS);
        let mut mix = Mix::new(FileType::IQ3_XXS, dense, []);
        assert_eq!(mix.next("blk.0.attn_q.weight", &[1536, 1536]), G::IQ2_S);
        assert_eq!(mix.next("blk.0.ffn_down.weight", &[8960, 1536]), G::Q4_K);
        assert_eq!(mix.next("blk.1.ffn_down.weight", &[8960, 1536]), G::Q3_K);
        let mut mix = Mix::new(FileType::IQ4_XS, dense, []);
        assert_eq!(mix.next("blk.0.attn_v.weight", &[1536, 256]), G::Q5_K);
        assert_eq!(mix.next("blk.0.ffn_down.weight", &[8960, 1536]), G::Q5_K);
        assert_eq!(mix.next("blk.1.ffn_up.weight", &[1536, 8960]), G::IQ4_XS);
        let mut mix = Mix::new(FileType::TQ1_0, dense, []);
        assert_eq!(mix.next("token_embd.weight", &[1536, 1000]), G::Q4_K);
        assert_eq!(mix.next("blk.1.ffn_up.weight", &[1536, 8960]), G::TQ1_0);

        assert_eq!(fallback(G::IQ2_XXS, 896), G::IQ4_NL);
        assert_eq!(fallback(G::IQ4_XS, 896), G::IQ4_NL);
        assert_eq!(fallback(G::TQ2_0, 896), G::Q4_0);
        assert_eq!(fallback(G::IQ1_S, 16), G::F16);
    }

    #[test]
    fn low_k_mixes_follow_llama_quantize() {
        use GgmlType as G;
        // V2-Lite-like: 16 layers, 64 experts, no grouped-query attention.
        let moe = MixModel { n_layer: 16, n_expert: 64, tied: false, n_gqa: 1 };
        let names = ["blk.0.attn_kv_b.weight", "blk.1.attn_kv_b.weight", "blk.2.attn_kv_b.weight"];
        let mut mix = Mix::new(FileType::Q3_K_M, moe, names);
        assert_eq!(mix.next("output.weight", &[2048, 1000]), G::Q6_K);
        assert_eq!(mix.next("token_embd.weight", &[2048, 1000]), G::Q3_K);
        assert_eq!(mix.next("blk.0.attn_kv_b.weight", &[512, 4096]), G::Q5_K);
        assert_eq!(mix.next("blk.1.attn_kv_b.weight", &[512, 4096]), G::Q5_K);
        assert_eq!(mix.next("blk.2.attn_kv_b.weight", &[512, 4096]), G::Q4_K);
        // The first sixteenth's Q5_K, on 10944 columns: Q5_1.
        assert_eq!(mix.next("blk.0.ffn_down.weight", &[10944, 2048]), G::Q5_1);
        assert_eq!(mix.next("blk.1.ffn_down_exps.weight", &[2048, 2048, 64]), G::Q4_K);
        // 1408 columns cannot hold 256-blocks: Q4_K falls back to Q5_0.
        assert_eq!(mix.next("blk.1.ffn_down_exps.weight", &[1408, 2048, 64]), G::Q5_0);
        assert_eq!(mix.next("blk.1.ffn_gate_exps.weight", &[2048, 1408, 64]), G::Q3_K);
        assert_eq!(mix.next("blk.1.attn_output.weight", &[2048, 2048]), G::Q4_K);
        assert_eq!(mix.next("blk.1.attn_q.weight", &[2048, 3072]), G::Q3_K);

        let mut mix = Mix::new(FileType::Q2_K, moe, names);
        assert_eq!(mix.next("token_embd.weight", &[2048, 1000]), G::Q2_K);
        assert_eq!(mix.next("blk.0.attn_kv_b.weight", &[512, 4096]), G::Q3_K);
        assert_eq!(mix.next("blk.1.ffn_down_exps.weight", &[2048, 2048, 64]), G::Q3_K);
        assert_eq!(mix.next("blk.1.ffn_up_exps.weight", &[2048, 1408, 64]), G::Q2_K);
        assert_eq!(mix.next("blk.1.attn_output.weight", &[2048, 2048]), G::Q3_K);
        // 1408 columns: Q3_K falls back to Q4_0.
        assert_eq!(mix.next("blk.1.ffn_down_shexp.weight", &[1408, 2048]), G::Q4_0);
        let gqa = MixModel { n_layer: 28, n_expert: 0, tied: false, n_gqa: 7 };
        let mut mix = Mix::new(FileType::Q2_K, gqa, ["blk.0.attn_v.weight"]);
        assert_eq!(mix.next("blk.0.attn_v.weight", &[3584, 512]), G::Q4_K);

        let mut mix = Mix::new(FileType::Q3_K_S, moe, names);
        for name in ["blk.0.attn_kv_b.weight", "blk.0.ffn_down.weight", "blk.1.attn_output.weight"] {
            assert_eq!(mix.next(name, &[2048, 2048]), G::Q3_K, "{name}");
        }
        let mut mix = Mix::new(FileType::Q3_K_L, moe, names);
        for name in ["blk.0.attn_kv_b.weight", "blk.9.ffn_down_exps.weight", "blk.1.attn_output.weight"] {
            assert_eq!(mix.next(name, &[2048, 2048]), G::Q5_K, "{name}");
        }
        assert_eq!(mix.next("blk.1.ffn_up_exps.weight", &[2048, 1408, 64]), G::Q3_K);

        let eight = MixModel { n_layer: 32, n_expert: 8, tied: false, n_gqa: 4 };
        let mut mix = Mix::new(FileType::Q3_K_S, eight, []);
        assert_eq!(mix.next("blk.1.attn_output.weight", &[4096, 4096]), G::Q5_K);
        assert_eq!(FileType::Q3_K_M.gguf_id(), 12);
    }

    #[test]
    fn file_types_parse_by_name() {
        assert_eq!("Q4_K_M".parse::<FileType>(), Ok(FileType::Q4_K_M));
        assert!("q3_k_xl".parse::<FileType>().unwrap_err().contains("q4_k_m"));
    }
}
