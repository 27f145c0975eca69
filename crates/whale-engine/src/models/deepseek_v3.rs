//! DeepSeek-V2, V2-Lite, V3 and R1: Multi-head Latent Attention (MLA) and
//! DeepSeekMoE. Hugging Face `model_type` `deepseek_v2` / `deepseek_v3`, GGUF
//! architecture `deepseek2`.
//!
//! **MLA caches the latent.** Per token and layer the cache holds the
//! normalized KV latent `c` (`kv_lora_rank` values) and the rotated key part
//! shared by all heads (`qk_rope_head_dim`): 576 values on V3, against
//! 128 × (192 + 128) for decompressed per-head K and V. Attention never
//! decompresses it: the K up-projection is absorbed into the query
//! (`q_lat = W_UK[h]ᵀ q_nope`) so scores are `q_lat·c + q_rope·k_rope`, the
//! softmax-weighted sum is taken over latents, and the V up-projection
//! `W_UV[h]` is applied once per head after attention. With absorption MLA is
//! multi-query attention with one KV head of width kv_lora_rank + rope, and
//! prefill and decode share this one path.
//!
//! Order of this file: config (config.json names, then resolved), weights with
//! their shapes, forward pass, loading from HF folders and GGUF.
//!
//! Where the reference implementation decides a detail, this file does what
//! transformers 5.24 does; such places carry the tag `[hf-ref]`.

use std::ops::Range;

use serde::Deserialize;

use crate::formats::gguf::GgufFile;
use crate::formats::names::{self, expert, layer, name};
use crate::formats::weights::WeightStore;
use crate::models::batch::OutputRows;
use crate::models::moe::{route, route_margin, router_scores, RouterConfig, TopkMethod};
use crate::models::ops::{self, yarn_get_mscale, Rope, RopeStyle, Yarn};
use crate::models::{
    attention_into, batch_logits, batch_logits_each, batch_spans, cfg_err, embed_tokens, load_embed_output,
    Architecture, AttnLayout, BatchRows, BatchSeq, CacheType, Drafter, KvCache, Linear, LoadOptions, Logits,
    LogitsHidden, Model, ModelError, ModelInfo,
};

/// `[hf-ref]` q_a_layernorm and kv_a_layernorm use eps 1e-6, not rms_norm_eps.
const LORA_NORM_EPS: f32 = 1e-6;
/// Heads whose MLA up-projections (k_b, v_b) run as one pool job. (All of
/// V3's 128 heads in one decode job measured slower, 15.5 against 15.7
/// tok/s on the V3-shaped file, Intel Xeon of stop 42.)
const HEAD_GROUP: usize = 16;
/// The most absorbed queries (`n · heads · (kv_lora + rope)` floats, 16
/// MiB) that MLA forms at once; the heads of a longer prefill chunk go in
/// groups (14 heads at a time at 512 tokens), a decode's all at once.
const ATTN_GROUP_FLOATS: usize = 4 << 20;
/// Gathered token rows of the routed experts that run as one pool job in a
/// prefill (bounds the memory of a batch: 1024 rows of V3's 7168 floats).
const EXPERT_ROWS: usize = 1024;

/// config.json of DeepSeek-V2/V3, with DeepSeek's key names.
#[derive(Debug, Deserialize)]
pub struct DeepseekConfigJson {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub moe_intermediate_size: Option<usize>,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub n_routed_experts: Option<usize>,
    pub num_experts_per_tok: Option<usize>,
    pub n_shared_experts: Option<usize>,
    pub n_group: Option<usize>,
    pub topk_group: Option<usize>,
    pub topk_method: Option<String>,
    pub scoring_func: Option<String>,
    #[serde(default)]
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: Option<f32>,
    #[serde(default)]
    pub first_k_dense_replace: usize,
    pub moe_layer_freq: Option<usize>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub num_nextn_predict_layers: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

/// Resolved hyper-parameters.
#[derive(Clone, Debug)]
pub struct DeepseekParams {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Dense layers' MLP width.
    pub intermediate_size: usize,
    /// Each expert's MLP width.
    pub moe_intermediate_size: usize,
    pub n_layers: usize,
    pub n_head: usize,
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    /// `None` for a model without MoE layers.
    pub router: Option<RouterConfig>,
    pub n_shared_experts: usize,
    pub first_k_dense_replace: usize,
    pub moe_layer_freq: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub yarn: Option<Yarn>,
    /// `(qk_nope + qk_rope)^-0.5`, × mscale(factor, mscale_all_dim)² under YaRN.
    pub softmax_scale: f32,
    pub context_length: usize,
    /// Multi-token-prediction layers stored after the last layer (not run here).
    pub num_nextn_predict_layers: usize,
}

impl DeepseekParams {
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Values cached per token and layer: the latent and the shared rope key.
    pub fn latent_width(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.router.is_some() && i >= self.first_k_dense_replace && i.is_multiple_of(self.moe_layer_freq)
    }

    /// Weights of the model by role, from the hyper-parameters alone (for
    /// `whale info` on a config.json, before anything is downloaded).
    pub fn parameter_counts(&self) -> ParamCounts {
        let (h, nh) = (self.hidden_size, self.n_head);
        let attn = match self.q_lora_rank {
            Some(q) => h * q + q * nh * self.qk_head_dim(),
            None => h * nh * self.qk_head_dim(),
        } + h * self.latent_width()
            + self.kv_lora_rank * nh * (self.qk_nope_head_dim + self.v_head_dim)
            + nh * self.v_head_dim * h;
        let dense_mlp = 3 * h * self.intermediate_size;
        let expert = 3 * h * self.moe_intermediate_size;
        let mut c = ParamCounts { embedding: self.vocab_size * h, head: self.vocab_size * h, ..Default::default() };
        let layer = |c: &mut ParamCounts, i: usize| -> (usize, usize) {
            // (matrices, active matrices) of layer i; norms and router to `other`.
            c.other += 2 * h + self.kv_lora_rank + self.q_lora_rank.unwrap_or(0);
            match &self.router {
                Some(r) if self.is_moe_layer(i) => {
                    c.other += r.n_experts * h + r.n_experts;
                    let shared = self.n_shared_experts * expert;
                    (attn + r.n_experts * expert + shared, attn + r.top_k * expert + shared + r.n_experts * h)
                }
                _ => (attn + dense_mlp, attn + dense_mlp),
            }
        };
        for i in 0..self.n_layers {
            let (m, a) = layer(&mut c, i);
            c.matrices += m;
            c.active += a;
        }
        for k in 0..self.num_nextn_predict_layers {
            // An MTP layer: a decoder block of the last layer's kind, its
            // projection of [embedding; hidden], three norms, and the copies
            // of the embedding and head that V3's checkpoint stores with it.
            let (m, _) = layer(&mut c, self.n_layers + k);
            c.mtp += m + 2 * h * h + 3 * h + 2 * self.vocab_size * h;
        }
        c.active += c.head;
        c.other += h;
        c
    }
}

/// Weights of a DeepSeek model by role (element counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamCounts {
    pub embedding: usize,
    pub head: usize,
    /// The projections of the decoder layers: what DeepSeek's FP8
    /// checkpoints store in float8.
    pub matrices: usize,
    /// Norms, routers and their biases (bf16/f32 in every release).
    pub other: usize,
    /// The multi-token-prediction layers (stored, not part of decoding).
    pub mtp: usize,
    /// What one decoded token reads: every layer's attention and dense or
    /// shared MLP, its router, `top_k` routed experts, and the head.
    pub active: usize,
}

impl ParamCounts {
    /// All weights, MTP layers included.
    pub fn total(&self) -> usize {
        self.embedding + self.head + self.matrices + self.other + self.mtp
    }
}

impl DeepseekParams {
    pub fn from_hf(cfg: &serde_json::Value) -> Result<DeepseekParams, ModelError> {
        let c: DeepseekConfigJson =
            serde_json::from_value(cfg.clone()).map_err(|e| cfg_err(format!("config.json: {e}")))?;
        let v3 = c.model_type == "deepseek_v3";
        let router = match c.n_routed_experts {
            Some(n) if n > 0 => {
                // [hf-ref] DeepseekV3 always routes with sigmoid + bias-corrected groups,
                // whatever topk_method says; V2 follows topk_method with softmax.
                let method = if v3 {
                    TopkMethod::NoauxTc
                } else {
                    match c.topk_method.as_deref().unwrap_or("greedy") {
                        "greedy" => TopkMethod::Greedy,
                        "group_limited_greedy" => TopkMethod::GroupLimitedGreedy,
                        other => {
                            return Err(cfg_err(format!("topk_method {other:?} is not supported for deepseek_v2")))
                        }
                    }
                };
                if let Some(sf) = c.scoring_func.as_deref() {
                    let want = if v3 { "sigmoid" } else { "softmax" };
                    if sf != want {
                        return Err(cfg_err(format!(
                            "scoring_func {sf:?} does not match {} (expects {want:?})",
                            c.model_type
                        )));
                    }
                }
                Some(RouterConfig {
                    n_experts: n,
                    top_k: c.num_experts_per_tok.ok_or_else(|| cfg_err("num_experts_per_tok is missing"))?,
                    n_group: c.n_group.unwrap_or(1),
                    topk_group: c.topk_group.unwrap_or(1),
                    method,
                    norm_topk_prob: c.norm_topk_prob,
                    routed_scaling_factor: c.routed_scaling_factor.unwrap_or(1.0),
                })
            }
            _ => None,
        };
        let yarn = match c.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            None => None,
            Some(rs) => {
                let ty = rs.get("type").or_else(|| rs.get("rope_type")).and_then(|v| v.as_str()).unwrap_or("");
                if ty != "yarn" {
                    return Err(cfg_err(format!(
                        "rope_scaling type {ty:?} is not supported for DeepSeek (only \"yarn\")"
                    )));
                }
                let num = |k: &str, d: f32| rs.get(k).and_then(|v| v.as_f64()).map_or(d, |v| v as f32);
                Some(Yarn {
                    factor: num("factor", 1.0),
                    original_max_position_embeddings: num("original_max_position_embeddings", 4096.0),
                    beta_fast: num("beta_fast", 32.0),
                    beta_slow: num("beta_slow", 1.0),
                    mscale: num("mscale", 1.0),
                    mscale_all_dim: num("mscale_all_dim", 0.0),
                })
            }
        };
        let p = DeepseekParams {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            moe_intermediate_size: c.moe_intermediate_size.unwrap_or(c.intermediate_size),
            n_layers: c.num_hidden_layers,
            n_head: c.num_attention_heads,
            q_lora_rank: c.q_lora_rank.filter(|&r| r > 0),
            kv_lora_rank: c.kv_lora_rank,
            qk_nope_head_dim: c.qk_nope_head_dim,
            qk_rope_head_dim: c.qk_rope_head_dim,
            v_head_dim: c.v_head_dim,
            router,
            n_shared_experts: c.n_shared_experts.unwrap_or(0),
            first_k_dense_replace: c.first_k_dense_replace,
            moe_layer_freq: c.moe_layer_freq.unwrap_or(1),
            rms_norm_eps: c.rms_norm_eps as f32,
            rope_theta: c.rope_theta.unwrap_or(10000.0) as f32,
            yarn,
            softmax_scale: 0.0,
            context_length: c.max_position_embeddings.unwrap_or(4096),
            num_nextn_predict_layers: c.num_nextn_predict_layers,
        };
        p.resolve()
    }

    /// From llama.cpp's `deepseek2.*` keys.
    ///
    /// `[gguf-topk-method]` GGUF has no key for topk_method. As llama.cpp does,
    /// it follows from the gating function: sigmoid (expert_gating_func 2) means
    /// V3's bias-corrected group routing; softmax (1, or absent as in V2 files)
    /// means V2's routing, group-limited when expert_group_count > 1.
    /// `[gguf-yarn-mscale]` GGUF stores 0.1 × mscale_all_dim as
    /// rope.scaling.yarn_log_multiplier and no separate mscale; whale takes
    /// mscale = mscale_all_dim, which holds for every released DeepSeek model
    /// (V3/R1: 1.0 and 1.0; V2: 0.707 and 0.707), so cos/sin are not rescaled.
    pub fn from_gguf(g: &GgufFile) -> Result<DeepseekParams, ModelError> {
        let a = "deepseek2";
        let opt = |k: &str| g.get_u64(&format!("{a}.{k}")).map(|v| v as usize);
        let req = |k: &str| opt(k).ok_or_else(|| cfg_err(format!("GGUF is missing {a}.{k}")));
        let f = |k: &str| g.get_f64(&format!("{a}.{k}")).map(|v| v as f32);
        let n_head = req("attention.head_count")?;
        let nextn = opt("nextn_predict_layers").unwrap_or(0);
        let rope = req("rope.dimension_count")?;
        let kv_lora = req("attention.kv_lora_rank")?;
        // Newer files describe the absorbed (MQA) form in key_length/value_length
        // and the per-head sizes in *_mla; older ones only the per-head sizes.
        let qk_head = opt("attention.key_length_mla").map_or_else(|| req("attention.key_length"), Ok)?;
        let v_head = opt("attention.value_length_mla").map_or_else(|| req("attention.value_length"), Ok)?;
        if qk_head <= rope {
            return Err(cfg_err(format!("key length {qk_head} must exceed the rope dimension {rope}")));
        }
        let vocab_size = match g.tensor(names::TOKEN_EMBD.0) {
            Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
            _ => return Err(cfg_err("GGUF has no 2-D token_embd.weight")),
        };
        let n_experts = opt("expert_count").unwrap_or(0);
        let router = if n_experts > 0 {
            let sigmoid = opt("expert_gating_func") == Some(2);
            let n_group = opt("expert_group_count").unwrap_or(1).max(1);
            let method = match (sigmoid, n_group > 1) {
                (true, _) => TopkMethod::NoauxTc,
                (false, true) => TopkMethod::GroupLimitedGreedy,
                (false, false) => TopkMethod::Greedy,
            };
            Some(RouterConfig {
                n_experts,
                top_k: req("expert_used_count")?,
                n_group,
                topk_group: opt("expert_group_used_count").unwrap_or(1).max(1),
                method,
                norm_topk_prob: g.get(&format!("{a}.expert_weights_norm")).and_then(|v| v.as_bool()).unwrap_or(false),
                routed_scaling_factor: f("expert_weights_scale").unwrap_or(1.0),
            })
        } else {
            None
        };
        let yarn = match g.get_str(&format!("{a}.rope.scaling.type")) {
            Some("yarn") => {
                let mscale_all_dim = f("rope.scaling.yarn_log_multiplier").map_or(0.0, |m| m / 0.1);
                Some(Yarn {
                    factor: f("rope.scaling.factor").unwrap_or(1.0),
                    original_max_position_embeddings: f("rope.scaling.original_context_length").unwrap_or(4096.0),
                    beta_fast: f("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
                    beta_slow: f("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
                    mscale: mscale_all_dim,
                    mscale_all_dim,
                })
            }
            None | Some("none") => None,
            Some(other) => return Err(cfg_err(format!("rope scaling {other:?} is not supported for deepseek2"))),
        };
        let p = DeepseekParams {
            vocab_size,
            hidden_size: req("embedding_length")?,
            intermediate_size: req("feed_forward_length")?,
            moe_intermediate_size: opt("expert_feed_forward_length").unwrap_or(0),
            // llama.cpp counts the nextn (MTP) layers in block_count and
            // stores them last, as the checkpoints do.
            n_layers: req("block_count")?
                .checked_sub(nextn)
                .ok_or_else(|| cfg_err(format!("{a}.nextn_predict_layers ({nextn}) exceeds {a}.block_count")))?,
            n_head,
            q_lora_rank: opt("attention.q_lora_rank").filter(|&r| r > 0),
            kv_lora_rank: kv_lora,
            qk_nope_head_dim: qk_head - rope,
            qk_rope_head_dim: rope,
            v_head_dim: v_head,
            router,
            n_shared_experts: opt("expert_shared_count").unwrap_or(0),
            first_k_dense_replace: opt("leading_dense_block_count").unwrap_or(0),
            moe_layer_freq: 1,
            rms_norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            rope_theta: f("rope.freq_base").unwrap_or(10000.0),
            yarn,
            softmax_scale: 0.0,
            context_length: opt("context_length").unwrap_or(4096),
            num_nextn_predict_layers: nextn,
        };
        p.resolve()
    }

    /// Check consistency and compute derived values.
    fn resolve(mut self) -> Result<DeepseekParams, ModelError> {
        let p = &self;
        let nonzero = [
            ("hidden_size", p.hidden_size),
            ("num_hidden_layers", p.n_layers),
            ("num_attention_heads", p.n_head),
            ("kv_lora_rank", p.kv_lora_rank),
            ("qk_nope_head_dim", p.qk_nope_head_dim),
            ("qk_rope_head_dim", p.qk_rope_head_dim),
            ("v_head_dim", p.v_head_dim),
            ("vocab_size", p.vocab_size),
        ];
        if let Some((k, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(cfg_err(format!("{k} must be non-zero")));
        }
        if !p.qk_rope_head_dim.is_multiple_of(2) {
            return Err(cfg_err(format!("qk_rope_head_dim {} must be even", p.qk_rope_head_dim)));
        }
        if p.n_layers > 1024 || p.hidden_size > 1 << 17 || p.n_head > 1024 || p.kv_lora_rank > 1 << 14 {
            return Err(cfg_err("implausible sizes in the config"));
        }
        if p.moe_layer_freq == 0 {
            return Err(cfg_err("moe_layer_freq must be at least 1"));
        }
        if let Some(r) = &p.router {
            r.validate().map_err(cfg_err)?;
            if p.moe_intermediate_size == 0 {
                return Err(cfg_err("moe_intermediate_size must be non-zero for a MoE model"));
            }
        }
        let mut scale = 1.0 / (self.qk_head_dim() as f32).sqrt();
        if let Some(y) = &self.yarn {
            // [hf-ref] the softmax scale grows by mscale(f, mscale_all_dim)² only
            // when mscale_all_dim is non-zero.
            if y.mscale_all_dim != 0.0 {
                let m = yarn_get_mscale(y.factor, y.mscale_all_dim);
                scale *= m * m;
            }
        }
        self.softmax_scale = scale;
        Ok(self)
    }
}

/// A SwiGLU MLP: `down(silu(gate x) * up x)`.
struct Mlp {
    gate: Linear, // [ff, hidden]
    up: Linear,   // [ff, hidden]
    down: Linear, // [hidden, ff]
}

impl Mlp {
    fn bytes(&self) -> u64 {
        self.gate.bytes() + self.up.bytes() + self.down.bytes()
    }

    /// `x`: rows stacked from the sequences `spans` (see [`Linear::forward_spans`]).
    fn forward_spans(&self, x: &[f32], spans: &[Range<usize>], th: usize) -> Vec<f32> {
        Linear::swiglu_ffn(&self.gate, &self.up, &self.down, x, spans, th) // [m, hidden]
    }
}

/// The downs of `mlps` on SwiGLU(gate, up), as one job of the worker pool:
/// `gu` holds each MLP's gate output then its up output, in order, and
/// `spans[i]` the sequence spans of MLP `i`'s rows.
fn swiglu_downs(mlps: &[&Mlp], gu: Vec<Vec<f32>>, spans: &[&[Range<usize>]], th: usize) -> Vec<Vec<f32>> {
    let mut gu = gu.into_iter();
    let acts: Vec<Vec<f32>> = mlps
        .iter()
        .map(|_| {
            let (mut g, u) = (gu.next().expect("gate"), gu.next().expect("up"));
            ops::swiglu(&mut g, &u);
            g
        })
        .collect();
    let downs: Vec<&Linear> = mlps.iter().map(|m| &m.down).collect();
    let ins: Vec<&[f32]> = acts.iter().map(Vec::as_slice).collect();
    Linear::forward_each(&downs, &ins, spans, th)
}

enum QProj {
    /// V2-Lite: `q_proj` `[n_head * qk_head, hidden]`.
    Plain(Linear),
    /// V2/V3: `q_b(RMSNorm(q_a(x)))`, `q_a` `[q_lora, hidden]`, `q_b` `[n_head * qk_head, q_lora]`.
    Lora { a: Linear, norm: Vec<f32>, b: Linear },
}

struct Attn {
    q: QProj,
    kv_a: Linear,      // [kv_lora + rope, hidden]
    kv_norm: Vec<f32>, // [kv_lora]
    k_b: Vec<Linear>,  // n_head × [kv_lora, qk_nope]: W_UKᵀ, absorbed into the query
    v_b: Vec<Linear>,  // n_head × [v_head, kv_lora]: W_UV, applied after attention
    o: Linear,         // [hidden, n_head * v_head]
}

enum Ffn {
    Dense(Mlp),
    Moe { router: Linear, bias: Option<Vec<f32>>, experts: Vec<Mlp>, shared: Option<Mlp> },
}

struct Block {
    attn_norm: Vec<f32>, // [hidden]
    attn: Attn,
    ffn_norm: Vec<f32>, // [hidden]
    ffn: Ffn,
}

/// The experts chosen for each token of one MoE layer (for tests and debugging).
#[derive(Clone, Debug, Default)]
pub struct LayerRouting {
    pub layer: usize,
    /// `[n_tok]` of (expert, weight), best first.
    pub tokens: Vec<Vec<(usize, f32)>>,
    /// `[n_tok]`: how near each token's routing came to another choice
    /// ([`route_margin`]).
    pub margins: Vec<f32>,
    /// `[n_tok, n_experts]`: the router's scores (sigmoid or softmax of
    /// its logits, before the selection bias).
    pub scores: Vec<f32>,
}

pub struct Deepseek {
    pub params: DeepseekParams,
    info: ModelInfo,
    embed: Linear, // [vocab, hidden]
    blocks: Vec<Block>,
    norm: Vec<f32>, // [hidden]
    output: Linear, // [vocab, hidden]
    rope: Rope,
    threads: usize,
    /// Hint the kernel to read routed experts as the router picks them
    /// ([`LoadOptions::prefetch_experts`]).
    prefetch_experts: bool,
    cache_type: CacheType,
    mtp: Vec<MtpLayer>,
}

impl Model for Deepseek {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_cache(&self, capacity: usize) -> KvCache {
        // Only the latent row: V is read from its first kv_lora_rank values.
        KvCache::new(self.params.n_layers, self.params.latent_width(), 0, capacity, self.cache_type)
    }

    fn forward(&self, cache: &mut KvCache, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError> {
        self.forward_traced(cache, tokens, logits, None)
    }

    fn forward_batch(&self, seqs: &mut [BatchSeq<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.run(seqs, Logits::Last, None)
    }

    fn drafter(&self) -> Option<&dyn Drafter> {
        (!self.mtp.is_empty()).then_some(self as &dyn Drafter)
    }

    /// MTP layers are not counted: plain decoding never runs them.
    fn active_weight_bytes(&self) -> u64 {
        let top_k = self.params.router.as_ref().map_or(0, |r| r.top_k) as u64;
        let block = |b: &Block| -> u64 {
            let a = &b.attn;
            let q = match &a.q {
                QProj::Plain(w) => w.bytes(),
                QProj::Lora { a, b, .. } => a.bytes() + b.bytes(),
            };
            let heads: u64 = a.k_b.iter().chain(&a.v_b).map(Linear::bytes).sum();
            let attn = q + a.kv_a.bytes() + heads + a.o.bytes();
            let ffn = match &b.ffn {
                Ffn::Dense(m) => m.bytes(),
                Ffn::Moe { router, experts, shared, .. } => {
                    // Experts of one layer have the same shapes and types.
                    let one = experts.first().map_or(0, Mlp::bytes);
                    router.bytes() + shared.as_ref().map_or(0, Mlp::bytes) + top_k * one
                }
            };
            attn + ffn
        };
        self.blocks.iter().map(block).sum::<u64>() + self.output.bytes()
    }
}

/// One matrix a head (MLA's k_b or v_b), HEAD_GROUP heads a pool job, with
/// the inputs of a group in memory at once (a decode's single rows are
/// read in place): head `hd` reads row `t` of its
/// input from `input(t, hd)` (all `n` rows of `spans`), and its output
/// (`[n, lins[hd].rows]`) goes to `output(hd, y)`.
fn per_head<'a>(
    lins: &[Linear],
    n: usize,
    spans: &[Range<usize>],
    th: usize,
    input: impl Fn(usize, usize) -> &'a [f32],
    mut output: impl FnMut(usize, &[f32]),
) {
    for g0 in (0..lins.len()).step_by(HEAD_GROUP) {
        let heads = g0..(g0 + HEAD_GROUP).min(lins.len());
        // One row (a decode) is read in place; several are gathered.
        let xs: Vec<Vec<f32>> = match n {
            1 => Vec::new(),
            _ => heads.clone().map(|hd| (0..n).flat_map(|t| input(t, hd).iter().copied()).collect()).collect(),
        };
        let group: Vec<&Linear> = lins[heads.clone()].iter().collect();
        let ins: Vec<&[f32]> = match n {
            1 => heads.clone().map(|hd| input(0, hd)).collect(),
            _ => xs.iter().map(Vec::as_slice).collect(),
        };
        let sp: Vec<&[Range<usize>]> = vec![spans; group.len()];
        for (hd, y) in heads.zip(Linear::forward_each(&group, &ins, &sp, th)) {
            output(hd, &y);
        }
    }
}

/// DeepSeek-V3's MTP layer (the first, where a checkpoint has several):
/// `eh_proj([enorm(embed(next)); hnorm(hidden)])`, a decoder block of its
/// own, then `shared_head.norm` and the model's output head, as vLLM's and
/// SGLang's DeepSeek MTP run it.
impl Drafter for Deepseek {
    fn new_draft_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(1, self.params.latent_width(), 0, capacity, self.cache_type)
    }

    fn forward_batch_hidden(
        &self,
        seqs: &mut [BatchSeq<'_>],
        all_rows: &[bool],
    ) -> Result<Vec<LogitsHidden>, ModelError> {
        if all_rows.len() != seqs.len() {
            return Err(cfg_err(format!("{} row choices for {} sequences", all_rows.len(), seqs.len())));
        }
        let (x, spans) = self.run_hidden(seqs, None, false)?;
        let (p, h) = (&self.params, self.params.hidden_size);
        let which: Vec<Logits> = all_rows.iter().map(|&a| if a { Logits::All } else { Logits::Last }).collect();
        let logits = batch_logits_each(&x, &spans, &which, &self.norm, p.rms_norm_eps, &self.output, self.threads);
        Ok(logits.into_iter().zip(&spans).map(|(l, s)| (l, x[s.start * h..s.end * h].to_vec())).collect())
    }

    fn draft_batch(&self, seqs: &mut [BatchSeq<'_>], hidden: &[&[f32]]) -> Result<Vec<LogitsHidden>, ModelError> {
        let m = self.mtp.first().ok_or_else(|| cfg_err("the model has no MTP layer to draft with"))?;
        let (p, th) = (&self.params, self.threads);
        let h = p.hidden_size;
        if hidden.len() != seqs.len() {
            return Err(cfg_err(format!("draft: hidden rows for {} sequences, {} given", seqs.len(), hidden.len())));
        }
        for (s, hd) in seqs.iter().zip(hidden) {
            if hd.len() != s.tokens.len() * h {
                return Err(cfg_err(format!("draft: {} hidden values for {} tokens of {h}", hd.len(), s.tokens.len())));
            }
        }
        let BatchRows { spans, pos0, tokens } = BatchRows::new(seqs)?;
        let pos = positions(&spans, &pos0);
        let e = embed_tokens(&self.embed, &tokens)?;
        let mut cat = vec![0f32; tokens.len() * 2 * h];
        let rows = hidden.iter().flat_map(|hd| hd.chunks_exact(h));
        for ((c, er), hr) in cat.chunks_exact_mut(2 * h).zip(e.chunks_exact(h)).zip(rows) {
            let (ce, ch) = c.split_at_mut(h);
            ops::rms_norm(er, &m.enorm, p.rms_norm_eps, ce);
            ops::rms_norm(hr, &m.hnorm, p.rms_norm_eps, ch);
        }
        let mut x = m.eh_proj.forward_spans(&cat, &spans, th);
        self.block_forward(0, &m.block, &mut x, seqs, &spans, &pos, None, None);
        for (s, span) in seqs.iter_mut().zip(&spans) {
            s.cache.len += span.len();
        }
        let logits = batch_logits(&x, &spans, Logits::Last, &m.shared_head_norm, p.rms_norm_eps, &self.output, th);
        Ok(logits.into_iter().zip(&spans).map(|(l, s)| (l, x[(s.end - 1) * h..s.end * h].to_vec())).collect())
    }
}

impl Deepseek {
    /// The forward pass; with `trace`, the routing of every MoE layer is recorded.
    pub fn forward_traced(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: Logits,
        trace: Option<&mut Vec<LayerRouting>>,
    ) -> Result<Vec<f32>, ModelError> {
        let mut seqs = [BatchSeq { cache, tokens }];
        let mut out = self.run(&mut seqs, logits, trace)?;
        Ok(out.pop().expect("one sequence"))
    }

    /// The forward pass of a batch of sequences (one is the plain forward):
    /// their rows are stacked for every product, including each routed
    /// expert's (tokens of all sequences grouped by expert); the latent cache
    /// writes, RoPE positions and attention are per sequence.
    fn run(
        &self,
        seqs: &mut [BatchSeq<'_>],
        logits: Logits,
        trace: Option<&mut Vec<LayerRouting>>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        // Only the last row of each sequence reaches the output: the last
        // block finishes those rows alone (the trace records every row).
        let last_only = logits == Logits::Last && trace.is_none();
        let (x, spans) = self.run_hidden(seqs, trace, last_only)?;
        let p = &self.params;
        Ok(batch_logits(&x, &spans, logits, &self.norm, p.rms_norm_eps, &self.output, self.threads))
    }

    /// [`Deepseek::run`] up to the last block's output (`[n, hidden]`,
    /// before the final norm), with the rows' spans; with `last_only`, the
    /// last block finishes only the last row of each sequence (see
    /// [`OutputRows`]) and the result has those rows, one span each.
    fn run_hidden(
        &self,
        seqs: &mut [BatchSeq<'_>],
        mut trace: Option<&mut Vec<LayerRouting>>,
        last_only: bool,
    ) -> Result<(Vec<f32>, Vec<Range<usize>>), ModelError> {
        let BatchRows { spans, pos0, tokens } = BatchRows::new(seqs)?;
        let pos = positions(&spans, &pos0);
        let mut x = embed_tokens(&self.embed, &tokens)?; // [n, hidden]
        let kept = if last_only { OutputRows::last_of(&spans) } else { None };
        let n_blocks = self.blocks.len();
        for (l, b) in self.blocks.iter().enumerate() {
            let keep = kept.as_ref().filter(|_| l + 1 == n_blocks);
            self.block_forward(l, b, &mut x, seqs, &spans, &pos, keep, trace.as_deref_mut());
        }
        for (s, span) in seqs.iter_mut().zip(&spans) {
            s.cache.len += span.len();
        }
        Ok((x, kept.map_or(spans, |k| k.spans)))
    }

    /// One decoder block on the stacked rows `x` (`[n, hidden]`, updated in
    /// place), writing its latent cache rows into layer `l` of each
    /// sequence's cache; `l` also names the layer in `trace`. With `keep`,
    /// every row writes its cache row but only the kept rows go on (their
    /// queries, attention, output projection and FFN), and `x` becomes
    /// those rows.
    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        l: usize,
        b: &Block,
        x: &mut Vec<f32>,
        seqs: &mut [BatchSeq<'_>],
        spans: &[Range<usize>],
        pos: &[usize],
        keep: Option<&OutputRows>,
        trace: Option<&mut Vec<LayerRouting>>,
    ) {
        let p = &self.params;
        let (h, th) = (p.hidden_size, self.threads);
        let (nope, rope, lat, lw) = (p.qk_nope_head_dim, p.qk_rope_head_dim, p.kv_lora_rank, p.latent_width());
        let qk = p.qk_head_dim();
        let vh = p.v_head_dim;
        let n = x.len() / h;
        let mut xn = vec![0f32; n * h];
        for (src, dst) in x.chunks_exact(h).zip(xn.chunks_exact_mut(h)) {
            ops::rms_norm(src, &b.attn_norm, p.rms_norm_eps, dst);
        }
        // --- MLA ---
        let a = &b.attn;
        // The query's first product and kv_a read the same input: one job.
        let q_in = match &a.q {
            QProj::Plain(w) | QProj::Lora { a: w, .. } => w,
        };
        // kv: [n, kv_lora + rope]
        let [q0, kv]: [Vec<f32>; 2] =
            Linear::forward_spans_many(&[q_in, &a.kv_a], &xn, spans, th).try_into().expect("two outputs");
        // Cache rows [c | k_rope]: normalized latent, rotated shared key.
        let mut row = vec![0f32; lw];
        for (s, span) in seqs.iter_mut().zip(spans) {
            for t in span.clone() {
                ops::rms_norm(&kv[t * lw..t * lw + lat], &a.kv_norm, LORA_NORM_EPS, &mut row[..lat]);
                row[lat..].copy_from_slice(&kv[t * lw + lat..(t + 1) * lw]);
                self.rope.apply(&mut row[lat..], pos[t]);
                s.cache.k[l].write(pos[t] * lw, &row);
            }
        }
        // From here on, only the rows that go on.
        let kept_pos;
        let (q0, spans, pos, n) = match keep {
            Some(k) => {
                *x = k.gather(x, h);
                kept_pos = k.pick(pos);
                (k.gather(&q0, q0.len() / n), &k.spans[..], &kept_pos[..], k.rows.len())
            }
            None => (q0, spans, pos, n),
        };
        let q = match &a.q {
            QProj::Plain(_) => q0,
            QProj::Lora { norm, b: qb, .. } => {
                let mut c = q0; // [n, q_lora]
                ops::rms_norm_rows(&mut c, norm, LORA_NORM_EPS);
                qb.forward_spans(&c, spans, th)
            }
        }; // [n, n_head, nope + rope]

        // Heads in groups of at most ATTN_GROUP_FLOATS absorbed queries
        // (all at once in a decode), so that a prefill chunk's absorbed
        // queries and latent outputs live for one group at a time: for V3's
        // 128 heads at 512 tokens they would take 151 and 134 MB at once.
        let group = (ATTN_GROUP_FLOATS / (n * lw).max(1)).clamp(1, p.n_head);
        // Each row's rotation, for all its heads.
        let rot: Vec<_> = pos.iter().map(|&ps| self.rope.at(ps)).collect();
        let mut o = vec![0f32; n * p.n_head * vh]; // [n, n_head * v_head]
        for g0 in (0..p.n_head).step_by(group) {
            let heads = g0..(g0 + group).min(p.n_head);
            let gn = heads.len();
            // Absorbed queries [n, gn, kv_lora + rope]: W_UKᵀ q_nope, then q_rope.
            let mut q_abs = vec![0f32; n * gn * lw];
            let q_head = |t: usize, i: usize| &q[(t * p.n_head + g0 + i) * qk..][..nope];
            per_head(&a.k_b[heads.clone()], n, spans, th, q_head, |i, q_lat| {
                for t in 0..n {
                    let dst = &mut q_abs[(t * gn + i) * lw..][..lw];
                    dst[..lat].copy_from_slice(&q_lat[t * lat..(t + 1) * lat]);
                    dst[lat..].copy_from_slice(&q[(t * p.n_head + g0 + i) * qk + nope..][..rope]);
                    rot[t].apply(&mut dst[lat..]);
                }
            });
            let lay = AttnLayout { n_head: gn, n_kv_head: 1, k_dim: lw, v_dim: lat, k_stride: lw, v_stride: lw };
            let mut o_lat = vec![0f32; n * gn * lat]; // [n, gn, kv_lora]
            for (s, span) in seqs.iter().zip(spans) {
                let (t0, t1) = (span.start, span.end);
                let qs = &q_abs[t0 * gn * lw..t1 * gn * lw];
                let c = s.cache.k[l].view();
                let os = &mut o_lat[t0 * gn * lat..t1 * gn * lat];
                attention_into(qs, c, c, lay, span.len(), pos[t0], p.softmax_scale, th, os);
            }
            drop(q_abs);
            // Per head W_UV: [n, gn, kv_lora] → the group's columns of `o`.
            let lat_head = |t: usize, i: usize| &o_lat[(t * gn + i) * lat..][..lat];
            per_head(&a.v_b[heads.clone()], n, spans, th, lat_head, |i, oh| {
                for t in 0..n {
                    o[(t * p.n_head + g0 + i) * vh..][..vh].copy_from_slice(&oh[t * vh..(t + 1) * vh]);
                }
            });
        }
        let out = a.o.forward_spans(&o, spans, th); // [n, hidden]
        ops::add_assign(x, &out);
        // --- FFN ---
        xn.truncate(n * h);
        for (src, dst) in x.chunks_exact(h).zip(xn.chunks_exact_mut(h)) {
            ops::rms_norm(src, &b.ffn_norm, p.rms_norm_eps, dst);
        }
        let y = match &b.ffn {
            Ffn::Dense(mlp) => mlp.forward_spans(&xn, spans, th),
            Ffn::Moe { router, bias, experts, shared } => {
                let cfg = p.router.as_ref().expect("MoE layer has a router config");
                let r_logits = router.forward_spans(&xn, spans, th); // [n, n_experts]
                let routes: Vec<Vec<(usize, f32)>> =
                    r_logits.chunks_exact(cfg.n_experts).map(|lg| route(cfg, lg, bias.as_deref())).collect();
                // Group tokens by expert: each expert runs once on all its
                // tokens, of every sequence (in stacked order, so each
                // sequence's tokens are contiguous among them).
                let mut by_expert: Vec<Vec<(usize, f32)>> = vec![Vec::new(); cfg.n_experts];
                for (t, r) in routes.iter().enumerate() {
                    for &(e, w) in r {
                        by_expert[e].push((t, w));
                    }
                }
                if self.prefetch_experts {
                    for (mlp, _) in experts.iter().zip(&by_expert).filter(|(_, t)| !t.is_empty()) {
                        for lin in [&mlp.gate, &mlp.up, &mlp.down] {
                            lin.data.will_need();
                        }
                    }
                }
                // Gate and up of the shared experts and of every routed
                // expert that all rows go to (each one when decoding one
                // sequence) read the same input: one product for all of
                // them, with the activations quantized once.
                let everyone: Vec<usize> = (0..cfg.n_experts).filter(|&e| by_expert[e].len() == n).collect();
                let common: Vec<&Mlp> = shared.iter().chain(everyone.iter().map(|&e| &experts[e])).collect();
                let gu_lins: Vec<&Linear> = common.iter().flat_map(|m| [&m.gate, &m.up]).collect();
                let gu = Linear::forward_spans_many(&gu_lins, &xn, spans, th);
                // Their downs as one job too (not one pool synchronisation
                // an expert when decoding).
                let mut common_down = swiglu_downs(&common, gu, &vec![spans; common.len()], th).into_iter();
                let mut y = match shared {
                    Some(_) => common_down.next().expect("shared down"),
                    None => vec![0f32; n * h],
                };
                let mut common_y = everyone.iter().map(|&e| (e, common_down.next()));
                // The other experts (a prefill's: each its own tokens)
                // run in batches of about EXPERT_ROWS gathered rows, each
                // batch's gate and up as one pool job and its downs as
                // another, instead of two jobs an expert; computed when
                // the loop below first needs one, so that the sum keeps
                // its order (shared, then experts by index).
                let partial: Vec<usize> =
                    (0..cfg.n_experts).filter(|&e| !by_expert[e].is_empty() && by_expert[e].len() < n).collect();
                let mut next_partial = 0;
                let mut ready: std::collections::VecDeque<(usize, Vec<f32>)> = Default::default();
                let seq_of = |t: usize| spans.partition_point(|sp| sp.end <= t);
                for (e, toks) in by_expert.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
                    let ye = if toks.len() == n {
                        let (ce, ye) = common_y.next().expect("every all-rows expert has its output");
                        debug_assert_eq!(ce, e);
                        ye.expect("down")
                    } else {
                        if ready.is_empty() {
                            let mut batch = Vec::new();
                            let mut rows = 0;
                            while let Some(&pe) = partial.get(next_partial) {
                                if !batch.is_empty() && rows + by_expert[pe].len() > EXPERT_ROWS {
                                    break;
                                }
                                batch.push(pe);
                                rows += by_expert[pe].len();
                                next_partial += 1;
                            }
                            let gathered: Vec<(Vec<f32>, Vec<Range<usize>>)> = batch
                                .iter()
                                .map(|&pe| {
                                    let toks = &by_expert[pe];
                                    let mut xs = Vec::with_capacity(toks.len() * h);
                                    for &(t, _) in toks {
                                        xs.extend_from_slice(&xn[t * h..(t + 1) * h]);
                                    }
                                    let counts = spans
                                        .iter()
                                        .enumerate()
                                        .map(|(i, _)| toks.iter().filter(|&&(t, _)| seq_of(t) == i).count());
                                    let e_spans = batch_spans(counts).into_iter().filter(|r| !r.is_empty()).collect();
                                    (xs, e_spans)
                                })
                                .collect();
                            let mlps: Vec<&Mlp> = batch.iter().map(|&pe| &experts[pe]).collect();
                            let lins: Vec<&Linear> = mlps.iter().flat_map(|m| [&m.gate, &m.up]).collect();
                            let ins: Vec<&[f32]> = gathered.iter().flat_map(|(xs, _)| [&xs[..], &xs[..]]).collect();
                            let sps: Vec<&[Range<usize>]> =
                                gathered.iter().flat_map(|(_, sp)| [&sp[..], &sp[..]]).collect();
                            let gu = Linear::forward_each(&lins, &ins, &sps, th);
                            let dsps: Vec<&[Range<usize>]> = gathered.iter().map(|(_, sp)| &sp[..]).collect();
                            ready.extend(batch.into_iter().zip(swiglu_downs(&mlps, gu, &dsps, th)));
                        }
                        let (pe, ye) = ready.pop_front().expect("a batch holds at least this expert");
                        debug_assert_eq!(pe, e);
                        ye
                    }; // [m, hidden]
                    for (i, &(t, w)) in toks.iter().enumerate() {
                        for (dst, &v) in y[t * h..(t + 1) * h].iter_mut().zip(&ye[i * h..(i + 1) * h]) {
                            *dst += w * v;
                        }
                    }
                }
                if let Some(tr) = trace {
                    let rows = r_logits.chunks_exact(cfg.n_experts);
                    let margins = rows.clone().map(|lg| route_margin(cfg, lg, bias.as_deref())).collect();
                    let scores = rows.flat_map(|lg| router_scores(cfg, lg)).collect();
                    tr.push(LayerRouting { layer: l, tokens: routes, margins, scores });
                }
                y
            }
        };
        ops::add_assign(x, &y);
    }

    pub fn load(store: &WeightStore, opts: LoadOptions) -> Result<Deepseek, ModelError> {
        let p = match store {
            WeightStore::Gguf(g) => DeepseekParams::from_gguf(g)?,
            WeightStore::Hf(hf) => DeepseekParams::from_hf(&hf.config)?,
        };
        let h = p.hidden_size;
        let blocks = (0..p.n_layers).map(|i| load_block(store, &p, i)).collect::<Result<Vec<_>, _>>()?;
        // Multi-token-prediction layers follow the last layer. They are loaded
        // (so a checkpoint with them is complete and checked) but kept apart:
        // the forward pass never runs them as ordinary layers.
        let mtp = (p.n_layers..p.n_layers + p.num_nextn_predict_layers)
            .map(|i| load_mtp(store, &p, i))
            .collect::<Result<Vec<_>, _>>()?;
        let (embed, output) = load_embed_output(store, p.vocab_size, h)?;
        // The rope part rotates adjacent pairs in every format ([hf-ref]
        // rope_interleave; llama.cpp's deepseek2 uses the same pairing).
        let rope = match &p.yarn {
            Some(y) => Rope::yarn(RopeStyle::Interleaved, p.qk_rope_head_dim, p.rope_theta, y),
            None => Rope::new(RopeStyle::Interleaved, p.qk_rope_head_dim, p.rope_theta, None),
        };
        let info = ModelInfo {
            architecture: Architecture::Deepseek,
            vocab_size: p.vocab_size,
            hidden_size: h,
            n_layers: p.n_layers,
            context_length: p.context_length,
            kv_values_per_token_layer: p.latent_width(),
            routed_experts: p.router.as_ref().map(|r| (r.top_k, r.n_experts)),
        };
        Ok(Deepseek {
            info,
            embed,
            blocks,
            norm: store.vector(&name(names::OUTPUT_NORM), h)?,
            output,
            rope,
            threads: opts.threads.max(1),
            prefetch_experts: opts.prefetch_experts,
            cache_type: opts.cache_type,
            mtp,
            params: p,
        })
    }

    /// Multi-token-prediction layers loaded from the checkpoint.
    pub fn mtp_layers(&self) -> usize {
        self.mtp.len()
    }
}

fn lin(store: &WeightStore, pair: (&str, &str), i: usize, shape: [usize; 2]) -> Result<Linear, ModelError> {
    Ok(Linear::from_view(store.get(&layer(pair, i), &shape)?, None))
}

fn mlp(store: &WeightStore, pairs: [(&str, &str); 3], i: usize, ff: usize, h: usize) -> Result<Mlp, ModelError> {
    Ok(Mlp {
        gate: lin(store, pairs[0], i, [ff, h])?,
        up: lin(store, pairs[1], i, [ff, h])?,
        down: lin(store, pairs[2], i, [h, ff])?,
    })
}

/// One decoder block (attention and dense or MoE feed-forward) of layer `i`.
fn load_block(store: &WeightStore, p: &DeepseekParams, i: usize) -> Result<Block, ModelError> {
    let h = p.hidden_size;
    let (qk, lat, nh) = (p.qk_head_dim(), p.kv_lora_rank, p.n_head);
    let q = match p.q_lora_rank {
        None => QProj::Plain(lin(store, names::ATTN_Q, i, [nh * qk, h])?),
        Some(r) => QProj::Lora {
            a: lin(store, names::ATTN_Q_A, i, [r, h])?,
            norm: store.vector(&layer(names::ATTN_Q_A_NORM, i), r)?,
            b: lin(store, names::ATTN_Q_B, i, [nh * qk, r])?,
        },
    };
    let (k_b, v_b) = load_kv_b(store, p, i)?;
    let attn = Attn {
        q,
        kv_a: lin(store, names::ATTN_KV_A_MQA, i, [lat + p.qk_rope_head_dim, h])?,
        kv_norm: store.vector(&layer(names::ATTN_KV_A_NORM, i), lat)?,
        k_b,
        v_b,
        o: lin(store, names::ATTN_OUT, i, [h, nh * p.v_head_dim])?,
    };
    let ffn = if p.is_moe_layer(i) {
        let r = p.router.as_ref().expect("is_moe_layer implies a router");
        let ff = p.moe_intermediate_size;
        let shared = if p.n_shared_experts > 0 {
            let pairs = [names::FFN_GATE_SHEXP, names::FFN_UP_SHEXP, names::FFN_DOWN_SHEXP];
            Some(mlp(store, pairs, i, ff * p.n_shared_experts, h)?)
        } else {
            None
        };
        Ffn::Moe {
            router: lin(store, names::FFN_GATE_INP, i, [r.n_experts, h])?,
            bias: store.optional_vector(&layer(names::FFN_EXP_PROBS_B, i), r.n_experts)?,
            experts: load_experts(store, i, r.n_experts, ff, h)?,
            shared,
        }
    } else {
        Ffn::Dense(mlp(store, [names::FFN_GATE, names::FFN_UP, names::FFN_DOWN], i, p.intermediate_size, h)?)
    };
    Ok(Block {
        attn_norm: store.vector(&layer(names::ATTN_NORM, i), h)?,
        attn,
        ffn_norm: store.vector(&layer(names::FFN_NORM, i), h)?,
        ffn,
    })
}

/// A multi-token-prediction layer: it combines the last hidden state
/// (`hnorm`) with the embedding of the next token (`enorm`) through
/// `eh_proj` `[hidden, 2 × hidden]`, then runs a full block and a final norm.
struct MtpLayer {
    enorm: Vec<f32>,
    hnorm: Vec<f32>,
    eh_proj: Linear,
    block: Block,
    shared_head_norm: Vec<f32>,
}

fn load_mtp(store: &WeightStore, p: &DeepseekParams, i: usize) -> Result<MtpLayer, ModelError> {
    let h = p.hidden_size;
    Ok(MtpLayer {
        enorm: store.vector(&layer(names::MTP_ENORM, i), h)?,
        hnorm: store.vector(&layer(names::MTP_HNORM, i), h)?,
        eh_proj: lin(store, names::MTP_EH_PROJ, i, [h, 2 * h])?,
        block: load_block(store, p, i)?,
        shared_head_norm: store.vector(&layer(names::MTP_SHARED_HEAD_NORM, i), h)?,
    })
}

/// Position of every stacked row.
fn positions(spans: &[Range<usize>], pos0: &[usize]) -> Vec<usize> {
    spans.iter().zip(pos0).flat_map(|(sp, &p0)| (0..sp.len()).map(move |t| p0 + t)).collect()
}

/// Per-head W_UKᵀ `[kv_lora, qk_nope]` and W_UV `[v_head, kv_lora]`.
///
/// Newer GGUFs store them split (`attn_k_b` already transposed, `attn_v_b`);
/// HF folders and older GGUFs store `kv_b_proj` `[n_head * (qk_nope + v_head),
/// kv_lora]`, whose K rows are transposed here once, at load.
fn load_kv_b(store: &WeightStore, p: &DeepseekParams, i: usize) -> Result<(Vec<Linear>, Vec<Linear>), ModelError> {
    let (nh, nope, vh, lat) = (p.n_head, p.qk_nope_head_dim, p.v_head_dim, p.kv_lora_rank);
    if store.is_gguf() && store.contains(&layer(names::ATTN_K_B, i)) {
        let k = store.get(&layer(names::ATTN_K_B, i), &[nh, lat, nope])?;
        let v = store.get(&layer(names::ATTN_V_B, i), &[nh, vh, lat])?;
        let k_b = (0..nh).map(|hd| Linear::row_slice(&k, hd * lat, lat, nope)).collect();
        let v_b = (0..nh).map(|hd| Linear::row_slice(&v, hd * vh, vh, lat)).collect();
        return Ok((k_b, v_b));
    }
    let kv_b = store.get(&layer(names::ATTN_KV_B, i), &[nh * (nope + vh), lat])?;
    let full = kv_b.to_f32()?; // [nh * (nope + vh), lat]
    let mut k_b = Vec::with_capacity(nh);
    let mut v_b = Vec::with_capacity(nh);
    for hd in 0..nh {
        let base = hd * (nope + vh);
        // W_UK[h] is rows base..base+nope ([nope, lat]); store its transpose.
        let mut t = vec![0f32; lat * nope];
        for r in 0..nope {
            for c in 0..lat {
                t[c * nope + r] = full[(base + r) * lat + c];
            }
        }
        k_b.push(Linear::from_f32(lat, nope, &t));
        v_b.push(Linear::row_slice(&kv_b, base + nope, vh, lat));
    }
    Ok((k_b, v_b))
}

/// The routed experts of layer `i`: stacked `[n_exp, ff, hidden]` tensors in
/// GGUF, one tensor per expert in HF folders.
fn load_experts(store: &WeightStore, i: usize, n_exp: usize, ff: usize, h: usize) -> Result<Vec<Mlp>, ModelError> {
    if store.is_gguf() {
        let g = store.get(&layer(names::FFN_GATE_EXPS, i), &[n_exp, ff, h])?;
        let u = store.get(&layer(names::FFN_UP_EXPS, i), &[n_exp, ff, h])?;
        let d = store.get(&layer(names::FFN_DOWN_EXPS, i), &[n_exp, h, ff])?;
        return Ok((0..n_exp)
            .map(|e| Mlp {
                gate: Linear::row_slice(&g, e * ff, ff, h),
                up: Linear::row_slice(&u, e * ff, ff, h),
                down: Linear::row_slice(&d, e * h, h, ff),
            })
            .collect());
    }
    (0..n_exp)
        .map(|e| {
            let get = |pair, shape: [usize; 2]| -> Result<Linear, ModelError> {
                Ok(Linear::from_view(store.get(&expert(pair, i, e), &shape)?, None))
            };
            Ok(Mlp {
                gate: get(names::FFN_GATE_EXP, [ff, h])?,
                up: get(names::FFN_UP_EXP, [ff, h])?,
                down: get(names::FFN_DOWN_EXP, [h, ff])?,
            })
        })
        .collect()
}

#[cfg(test)]
mod param_count_tests {
    use super::*;

    /// deepseek-ai/DeepSeek-V3's config.json (the keys that size it).
    fn v3() -> DeepseekParams {
        DeepseekParams::from_hf(&serde_json::json!({
            "model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168,
            "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
            "num_nextn_predict_layers": 1, "num_attention_heads": 128, "n_shared_experts": 1,
            "n_routed_experts": 256, "routed_scaling_factor": 2.5, "kv_lora_rank": 512,
            "q_lora_rank": 1536, "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
            "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
            "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": true,
            "scoring_func": "sigmoid", "rms_norm_eps": 1e-6, "rope_theta": 10000,
            "max_position_embeddings": 163840,
            "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                             "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
        }))
        .unwrap()
    }

    /// DeepSeek's own figures for V3: 671B weights in the main model, 37B
    /// activated per token, 685B with the MTP module (its model card).
    #[test]
    fn v3_counts_match_the_published_sizes() {
        let c = v3().parameter_counts();
        let b = |n: usize| n as f64 / 1e9;
        eprintln!("{c:?}: main {:.2}B, active {:.2}B, total {:.2}B", b(c.total() - c.mtp), b(c.active), b(c.total()));
        assert!((b(c.total() - c.mtp) - 671.0).abs() < 1.0, "main model {:.2}B", b(c.total() - c.mtp));
        assert!((b(c.active) - 37.0).abs() < 1.0, "active {:.2}B", b(c.active));
        assert!((b(c.total()) - 685.0).abs() < 1.0, "with MTP {:.2}B", b(c.total()));
    }
}
