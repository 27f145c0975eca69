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

// DeepSeek-V2/V3 (GGUF architecture `deepseek2`).
pub const ATTN_Q_A: (&str, &str) = ("blk.{}.attn_q_a.weight", "model.layers.{}.self_attn.q_a_proj.weight");
pub const ATTN_Q_A_NORM: (&str, &str) =
    ("blk.{}.attn_q_a_norm.weight", "model.layers.{}.self_attn.q_a_layernorm.weight");
pub const ATTN_Q_B: (&str, &str) = ("blk.{}.attn_q_b.weight", "model.layers.{}.self_attn.q_b_proj.weight");
pub const ATTN_KV_A_MQA: (&str, &str) =
    ("blk.{}.attn_kv_a_mqa.weight", "model.layers.{}.self_attn.kv_a_proj_with_mqa.weight");
pub const ATTN_KV_A_NORM: (&str, &str) =
    ("blk.{}.attn_kv_a_norm.weight", "model.layers.{}.self_attn.kv_a_layernorm.weight");
/// The up-projection of the latent to per-head K (no-rope part) and V; newer
/// GGUFs split it into `attn_k_b` (K part, transposed) and `attn_v_b`.
pub const ATTN_KV_B: (&str, &str) = ("blk.{}.attn_kv_b.weight", "model.layers.{}.self_attn.kv_b_proj.weight");
pub const ATTN_K_B: (&str, &str) = ("blk.{}.attn_k_b.weight", "-");
pub const ATTN_V_B: (&str, &str) = ("blk.{}.attn_v_b.weight", "-");
pub const FFN_GATE_INP: (&str, &str) = ("blk.{}.ffn_gate_inp.weight", "model.layers.{}.mlp.gate.weight");
pub const FFN_EXP_PROBS_B: (&str, &str) =
    ("blk.{}.exp_probs_b.bias", "model.layers.{}.mlp.gate.e_score_correction_bias");
/// Stacked experts in GGUF (`[n_expert, rows, cols]`); one tensor per expert in HF.
pub const FFN_GATE_EXPS: (&str, &str) = ("blk.{}.ffn_gate_exps.weight", "-");
pub const FFN_UP_EXPS: (&str, &str) = ("blk.{}.ffn_up_exps.weight", "-");
pub const FFN_DOWN_EXPS: (&str, &str) = ("blk.{}.ffn_down_exps.weight", "-");
pub const FFN_GATE_EXP: (&str, &str) = ("-", "model.layers.{}.mlp.experts.{e}.gate_proj.weight");
pub const FFN_UP_EXP: (&str, &str) = ("-", "model.layers.{}.mlp.experts.{e}.up_proj.weight");
pub const FFN_DOWN_EXP: (&str, &str) = ("-", "model.layers.{}.mlp.experts.{e}.down_proj.weight");
pub const FFN_GATE_SHEXP: (&str, &str) =
    ("blk.{}.ffn_gate_shexp.weight", "model.layers.{}.mlp.shared_experts.gate_proj.weight");
pub const FFN_UP_SHEXP: (&str, &str) =
    ("blk.{}.ffn_up_shexp.weight", "model.layers.{}.mlp.shared_experts.up_proj.weight");
pub const FFN_DOWN_SHEXP: (&str, &str) =
    ("blk.{}.ffn_down_shexp.weight", "model.layers.{}.mlp.shared_experts.down_proj.weight");

/// Name of expert `e` of layer `i` (HF spelling; GGUF stacks experts).
pub fn expert(pair: (&str, &str), i: usize, e: usize) -> TensorName {
    let t = layer(pair, i);
    TensorName { gguf: t.gguf, hf: t.hf.replace("{e}", &e.to_string()) }
}

// DeepSeek-V3 multi-token prediction, stored as the layer after the last.
pub const MTP_ENORM: (&str, &str) = ("blk.{}.nextn.enorm.weight", "model.layers.{}.enorm.weight");
pub const MTP_HNORM: (&str, &str) = ("blk.{}.nextn.hnorm.weight", "model.layers.{}.hnorm.weight");
pub const MTP_EH_PROJ: (&str, &str) = ("blk.{}.nextn.eh_proj.weight", "model.layers.{}.eh_proj.weight");
pub const MTP_SHARED_HEAD_NORM: (&str, &str) =
    ("blk.{}.nextn.shared_head_norm.weight", "model.layers.{}.shared_head.norm.weight");
