//! The tensor-name table: each weight's GGUF name (llama.cpp's) and its
//! Hugging Face name, in one place. Adding an architecture adds its rows here.

/// The two spellings of one tensor's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorName {
    pub gguf: String,
    pub hf: String,
}

/// Make the name of a global tensor.
pub fn name(pair: (&str, &str)) -> TensorName {
    TensorName { gguf: pair.0.to_string(), hf: pair.1.to_string() }
}

/// Make the name of a per-layer tensor: `{}` in either pattern is the layer index.
pub fn layer(pair: (&str, &str), i: usize) -> TensorName {
    TensorName { gguf: pair.0.replace("{}", &i.to_string()), hf: pair.1.replace("{}", &i.to_string()) }
}

pub const TOKEN_EMBD: (&str, &str) = ("token_embd.weight", "model.embed_tokens.weight");
pub const OUTPUT_NORM: (&str, &str) = ("output_norm.weight", "model.norm.weight");
pub const OUTPUT: (&str, &str) = ("output.weight", "lm_head.weight");
/// llama3-style RoPE frequency factors, which llama.cpp's converter precomputes.
pub const ROPE_FREQS: (&str, &str) = ("rope_freqs.weight", "rope_freqs.weight");

pub const ATTN_NORM: (&str, &str) = ("blk.{}.attn_norm.weight", "model.layers.{}.input_layernorm.weight");
pub const ATTN_Q: (&str, &str) = ("blk.{}.attn_q.weight", "model.layers.{}.self_attn.q_proj.weight");
pub const ATTN_K: (&str, &str) = ("blk.{}.attn_k.weight", "model.layers.{}.self_attn.k_proj.weight");
pub const ATTN_V: (&str, &str) = ("blk.{}.attn_v.weight", "model.layers.{}.self_attn.v_proj.weight");
pub const ATTN_Q_BIAS: (&str, &str) = ("blk.{}.attn_q.bias", "model.layers.{}.self_attn.q_proj.bias");
pub const ATTN_K_BIAS: (&str, &str) = ("blk.{}.attn_k.bias", "model.layers.{}.self_attn.k_proj.bias");
pub const ATTN_V_BIAS: (&str, &str) = ("blk.{}.attn_v.bias", "model.layers.{}.self_attn.v_proj.bias");
pub const ATTN_OUT: (&str, &str) = ("blk.{}.attn_output.weight", "model.layers.{}.self_attn.o_proj.weight");
pub const FFN_NORM: (&str, &str) = ("blk.{}.ffn_norm.weight", "model.layers.{}.post_attention_layernorm.weight");
pub const FFN_GATE: (&str, &str) = ("blk.{}.ffn_gate.weight", "model.layers.{}.mlp.gate_proj.weight");
pub const FFN_UP: (&str, &str) = ("blk.{}.ffn_up.weight", "model.layers.{}.mlp.up_proj.weight");
pub const FFN_DOWN: (&str, &str) = ("blk.{}.ffn_down.weight", "model.layers.{}.mlp.down_proj.weight");
