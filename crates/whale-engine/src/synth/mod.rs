//! Synthetic models: GGUF files with a real model's shapes, metadata and
//! tokenizer, and random but valid quantized weights (`whale synth`).
//!
//! They let a user benchmark a model before downloading it, and make speed
//! work on DeepSeek's shapes possible without the real weights. Nothing in a
//! synthetic file is whale-specific: llama.cpp loads it too, so the same file
//! can be run by both engines side by side.
//!
//! - [`presets`]: the real models' shapes, from their `config.json`;
//! - [`mix`]: which type each tensor gets, as `llama-quantize` chooses;
//! - [`fill`]: random valid bytes of each type;
//! - [`tokenizer`]: the `tokenizer.*` keys, taken from a GGUF or converted
//!   from a Hugging Face `tokenizer.json`;
//! - [`fp8`]: DeepSeek's FP8 safetensors folder instead of a GGUF.
//!
//! [`Synth::write`] streams: the file is written tensor by tensor, in chunks of
//! a few MiB, so a file of any size needs only that much memory.
//!
//! May call: [`crate::formats`] and the kernels crate, nothing else.

pub mod fill;
pub mod fp8;
pub mod janus;
pub mod mix;
pub mod presets;
pub mod tokenizer;

use std::io::{self, Write};

use whale_kernels::GgmlType;

use crate::formats::gguf::{MetaValue, TensorInfo};
use crate::formats::gguf_write::{GgufWriter, ShapeError};
use fill::{Init, Rng};
use mix::{FileType, Mix, MixModel};
use presets::{Config, Order, Preset};

/// Why a synthetic model cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown model {0:?} (known: {known})", known = known_names())]
    UnknownModel(String),
    #[error("--layers {asked}: {model} has {max} layers; ask for 1 to {max}")]
    BadLayers { model: &'static str, asked: usize, max: usize },
    #[error("the tokenizer has no tokenizer.ggml.tokens array")]
    NoTokens,
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("writing: {0}")]
    Io(String),
}

fn known_names() -> String {
    presets::PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

/// What to make.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub like: String,
    /// Layers to keep (all when `None`). A MoE model keeps at least one MoE
    /// layer: with fewer layers than its dense prefix plus one, the dense
    /// prefix shrinks to `layers − 1`.
    pub layers: Option<usize>,
    pub ftype: FileType,
    pub seed: u64,
}

/// A planned file: header and tensor table, with how to fill each tensor.
pub struct Synth {
    pub preset: &'static Preset,
    pub layers: usize,
    writer: GgufWriter,
    inits: Vec<Init>,
    seed: u64,
}

/// One tensor of the plan, before its type is chosen.
struct Planned {
    name: String,
    dims: Vec<u64>,
    init: Init,
}

fn matrix(name: String, cols: usize, rows: usize) -> Planned {
    // Unit-variance outputs for unit-variance inputs.
    Planned { name, dims: vec![cols as u64, rows as u64], init: Init::Normal(1.0 / (cols as f32).sqrt()) }
}

fn experts(name: String, cols: usize, rows: usize, n: usize) -> Planned {
    let mut p = matrix(name, cols, rows);
    p.dims.push(n as u64);
    p
}

fn norm(name: String, n: usize) -> Planned {
    Planned { name, dims: vec![n as u64], init: Init::Const(1.0) }
}

fn vector(name: String, n: usize, std: f32) -> Planned {
    Planned { name, dims: vec![n as u64], init: Init::Normal(std) }
}

fn embeddings(hidden: usize, vocab: usize, tied: bool) -> Vec<Planned> {
    let mut v = Vec::new();
    if !tied {
        v.push(Planned {
            name: "output.weight".into(),
            dims: vec![hidden as u64, vocab as u64],
            init: Init::Normal(4.0 / (hidden as f32).sqrt()),
        });
    }
    // A tied embedding is also the output: 0.1 keeps the logits' spread near
    // 0.1·√hidden (3 to 9), so greedy choices are clear but not all alike.
    v.push(Planned {
        name: "token_embd.weight".into(),
        dims: vec![hidden as u64, vocab as u64],
        init: Init::Normal(0.1),
    });
    v
}

/// Layer indices in the order converters write them: llama.cpp's converter
/// takes the Hugging Face tensors sorted by name, so `model.layers.10` comes
/// before `model.layers.2`. The order matters: llama-quantize counts some
/// tensors as they come.
fn layer_order(layers: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..layers).collect();
    v.sort_by_key(|i| i.to_string());
    v
}

/// [`Order::GgufNames`]: non-layer tensors by name, then layers by number.
fn gguf_order_key(name: &str) -> (usize, &str) {
    let layer = name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<usize>().ok());
    (layer.map_or(0, |l| l + 1), name)
}

/// The metadata and tensors of a model, in the order llama.cpp's converter
/// writes them (the Hugging Face names sorted: `lm_head`, `model.embed_tokens`,
/// `model.layers.*`, `model.norm`).
fn layout(p: &Preset, layers: usize, vocab: usize) -> (Vec<(String, MetaValue)>, Vec<Planned>, MixModel) {
    use MetaValue::{Bool, String as S, F32, U32};
    let u = |v: usize| U32(v as u32);
    let mut meta: Vec<(String, MetaValue)> = Vec::new();
    let mut t = Vec::new();
    match &p.config {
        Config::Qwen2(c) => {
            let a = "qwen2";
            meta.push(("general.architecture".into(), S(a.into())));
            for (k, v) in [
                ("block_count", u(layers)),
                ("context_length", u(c.max_position_embeddings)),
                ("embedding_length", u(c.hidden_size)),
                ("feed_forward_length", u(c.intermediate_size)),
                ("attention.head_count", u(c.num_attention_heads)),
                ("attention.head_count_kv", u(c.num_key_value_heads)),
                ("rope.freq_base", F32(c.rope_theta)),
                ("attention.layer_norm_rms_epsilon", F32(c.rms_norm_eps)),
            ] {
                meta.push((format!("{a}.{k}"), v));
            }
            let (h, kv) = (c.hidden_size, c.hidden_size / c.num_attention_heads * c.num_key_value_heads);
            t.extend(embeddings(h, vocab, c.tie_word_embeddings));
            for i in layer_order(layers) {
                let b = |s: &str| format!("blk.{i}.{s}");
                t.push(norm(b("attn_norm.weight"), h));
                t.push(matrix(b("ffn_down.weight"), c.intermediate_size, h));
                t.push(matrix(b("ffn_gate.weight"), h, c.intermediate_size));
                t.push(matrix(b("ffn_up.weight"), h, c.intermediate_size));
                t.push(norm(b("ffn_norm.weight"), h));
                t.push(vector(b("attn_k.bias"), kv, 0.1));
                t.push(matrix(b("attn_k.weight"), h, kv));
                t.push(matrix(b("attn_output.weight"), h, h));
                t.push(vector(b("attn_q.bias"), h, 0.1));
                t.push(matrix(b("attn_q.weight"), h, h));
                t.push(vector(b("attn_v.bias"), kv, 0.1));
                t.push(matrix(b("attn_v.weight"), h, kv));
            }
            t.push(norm("output_norm.weight".into(), h));
            (
                meta,
                t,
                MixModel {
                    n_layer: layers,
                    n_expert: 0,
                    tied: c.tie_word_embeddings,
                    n_gqa: c.num_attention_heads / c.num_key_value_heads.max(1),
                },
            )
        }
        Config::Deepseek2(c) => {
            let a = "deepseek2";
            let dense = c.first_k_dense_replace.min(layers.saturating_sub(1));
            let (h, nh) = (c.hidden_size, c.num_attention_heads);
            let qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
            let (factor, orig, beta_fast, beta_slow, mscale_all_dim) = c.yarn;
            meta.push(("general.architecture".into(), S(a.into())));
            let mut kv = vec![
                ("block_count", u(layers)),
                ("context_length", u(c.max_position_embeddings)),
                ("embedding_length", u(h)),
                ("feed_forward_length", u(c.intermediate_size)),
                ("attention.head_count", u(nh)),
                ("attention.head_count_kv", u(1)),
                ("rope.freq_base", F32(c.rope_theta)),
                ("attention.layer_norm_rms_epsilon", F32(c.rms_norm_eps)),
                ("expert_count", u(c.n_routed_experts)),
                ("expert_used_count", u(c.num_experts_per_tok)),
                ("expert_group_count", u(c.n_group)),
                ("expert_group_used_count", u(c.topk_group)),
                ("expert_gating_func", u(if c.sigmoid_scoring { 2 } else { 1 })),
                ("leading_dense_block_count", u(dense)),
                ("vocab_size", u(vocab)),
            ];
            kv.extend([
                // 0 when queries are not low-rank (V2-Lite): llama.cpp requires the key.
                ("attention.q_lora_rank", u(c.q_lora_rank.unwrap_or(0))),
                ("attention.kv_lora_rank", u(c.kv_lora_rank)),
                ("attention.key_length", u(c.kv_lora_rank + c.qk_rope_head_dim)),
                ("attention.value_length", u(c.kv_lora_rank)),
                ("attention.key_length_mla", u(qk)),
                ("attention.value_length_mla", u(c.v_head_dim)),
                ("expert_feed_forward_length", u(c.moe_intermediate_size)),
                ("expert_shared_count", u(c.n_shared_experts)),
                ("expert_weights_scale", F32(c.routed_scaling_factor)),
                ("expert_weights_norm", Bool(c.norm_topk_prob)),
                ("rope.dimension_count", u(c.qk_rope_head_dim)),
                ("rope.scaling.type", S("yarn".into())),
                ("rope.scaling.factor", F32(factor)),
                ("rope.scaling.original_context_length", u(orig)),
                ("rope.scaling.yarn_beta_fast", F32(beta_fast)),
                ("rope.scaling.yarn_beta_slow", F32(beta_slow)),
                ("rope.scaling.yarn_log_multiplier", F32(0.1 * mscale_all_dim)),
            ]);
            for (k, v) in kv {
                meta.push((format!("{a}.{k}"), v));
            }
            t.extend(embeddings(h, vocab, false));
            let (ne, ff) = (c.n_routed_experts, c.moe_intermediate_size);
            for i in layer_order(layers) {
                let b = |s: &str| format!("blk.{i}.{s}");
                t.push(norm(b("attn_norm.weight"), h));
                if i < dense {
                    t.push(matrix(b("ffn_down.weight"), c.intermediate_size, h));
                    t.push(matrix(b("ffn_gate.weight"), h, c.intermediate_size));
                    t.push(matrix(b("ffn_up.weight"), h, c.intermediate_size));
                } else {
                    t.push(experts(b("ffn_down_exps.weight"), ff, h, ne));
                    t.push(experts(b("ffn_gate_exps.weight"), h, ff, ne));
                    t.push(experts(b("ffn_up_exps.weight"), h, ff, ne));
                    if c.sigmoid_scoring {
                        t.push(vector(b("exp_probs_b.bias"), ne, 0.01));
                    }
                    t.push(matrix(b("ffn_gate_inp.weight"), h, ne));
                    let sh = ff * c.n_shared_experts;
                    t.push(matrix(b("ffn_down_shexp.weight"), sh, h));
                    t.push(matrix(b("ffn_gate_shexp.weight"), h, sh));
                    t.push(matrix(b("ffn_up_shexp.weight"), h, sh));
                }
                t.push(norm(b("ffn_norm.weight"), h));
                t.push(norm(b("attn_kv_a_norm.weight"), c.kv_lora_rank));
                t.push(matrix(b("attn_kv_a_mqa.weight"), h, c.kv_lora_rank + c.qk_rope_head_dim));
                t.push(experts(b("attn_k_b.weight"), c.qk_nope_head_dim, c.kv_lora_rank, nh));
                t.push(experts(b("attn_v_b.weight"), c.kv_lora_rank, c.v_head_dim, nh));
                t.push(matrix(b("attn_output.weight"), nh * c.v_head_dim, h));
                match c.q_lora_rank {
                    Some(q) => {
                        t.push(norm(b("attn_q_a_norm.weight"), q));
                        t.push(matrix(b("attn_q_a.weight"), h, q));
                        t.push(matrix(b("attn_q_b.weight"), q, nh * qk));
                    }
                    None => t.push(matrix(b("attn_q.weight"), h, nh * qk)),
                }
            }
            t.push(norm("output_norm.weight".into(), h));
            // MLA stores as many KV heads as query heads.
            (meta, t, MixModel { n_layer: layers, n_expert: c.n_routed_experts, tied: false, n_gqa: 1 })
        }
    }
}

impl Synth {
    /// Plans a file like `spec.like`, with `tokenizer` (the `tokenizer.*`
    /// keys of a real model: see [`tokenizer`]). The vocabulary is the
    /// tokenizer's, so its embedding rows match its tokens.
    pub fn plan(spec: &SynthSpec, tokenizer: Vec<(String, MetaValue)>) -> Result<Synth, SynthError> {
        let preset = presets::find(&spec.like).ok_or_else(|| SynthError::UnknownModel(spec.like.clone()))?;
        let max = preset.num_hidden_layers();
        let layers = spec.layers.unwrap_or(max);
        if layers == 0 || layers > max {
            return Err(SynthError::BadLayers { model: preset.name, asked: layers, max });
        }
        let vocab = tokenizer
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .and_then(|(_, v)| v.as_array())
            .map(|a| a.len())
            .ok_or(SynthError::NoTokens)?;
        let (meta, mut planned, model) = layout(preset, layers, vocab);
        if preset.order == Order::GgufNames {
            planned.sort_by(|a, b| gguf_order_key(&a.name).cmp(&gguf_order_key(&b.name)));
        }

        let mut w = GgufWriter::new();
        let mut meta = meta.into_iter();
        // general.architecture first, as every converter writes it.
        if let Some((k, v)) = meta.next() {
            w.set(&k, v);
        }
        let mut name = format!("{} (synthetic: random weights, seed {})", preset.hf_repo, spec.seed);
        if layers < max {
            name.push_str(&format!(", {layers} of {max} layers"));
        }
        w.set("general.type", MetaValue::String("model".into()));
        w.set("general.name", MetaValue::String(name));
        for (k, v) in meta {
            w.set(&k, v);
        }
        w.set("general.file_type", MetaValue::U32(spec.ftype.gguf_id()));
        w.set("general.quantization_version", MetaValue::U32(2));
        w.set("whale.synth.like", MetaValue::String(preset.name.into()));
        w.set("whale.synth.seed", MetaValue::U64(spec.seed));
        for (k, v) in tokenizer {
            w.set(&k, v);
        }

        let mut mix = Mix::new(spec.ftype, model, planned.iter().map(|p| p.name.as_str()));
        let mut inits = Vec::with_capacity(planned.len());
        for p in planned {
            let ty = mix.next(&p.name, &p.dims);
            w.add_tensor(&p.name, &p.dims, ty)?;
            inits.push(p.init);
        }
        Ok(Synth { preset, layers, writer: w, inits, seed: spec.seed })
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        self.writer.tensors()
    }

    pub fn metadata(&self) -> &[(String, MetaValue)] {
        self.writer.metadata()
    }

    /// The size of the file [`Synth::write`] writes.
    pub fn file_len(&self) -> u64 {
        self.writer.file_len()
    }

    /// Writes the file, calling `progress(bytes_so_far)` after each chunk.
    pub fn write(&self, out: &mut impl Write, progress: impl FnMut(u64)) -> io::Result<u64> {
        let all: Vec<usize> = (0..self.inits.len()).collect();
        self.write_with(&self.writer, &all, out, 0, progress)
    }

    /// The parts of this file split at about `max_bytes` each (see
    /// [`GgufWriter::split`]); write part `k` with [`Synth::write_part`].
    pub fn split(&self, max_bytes: u64) -> Vec<(GgufWriter, Vec<usize>)> {
        self.writer.split(max_bytes)
    }

    /// Writes one part from [`Synth::split`]; the bytes of each tensor are the
    /// same as in the unsplit file. `done` is where progress starts counting.
    pub fn write_part(
        &self,
        part: &(GgufWriter, Vec<usize>),
        out: &mut impl Write,
        done: u64,
        progress: impl FnMut(u64),
    ) -> io::Result<u64> {
        self.write_with(&part.0, &part.1, out, done, progress)
    }

    fn write_with(
        &self,
        writer: &GgufWriter,
        index: &[usize],
        out: &mut impl Write,
        done: u64,
        mut progress: impl FnMut(u64),
    ) -> io::Result<u64> {
        // About 4 MiB at a time, in whole blocks.
        const CHUNK: u64 = 4 << 20;
        let mut buf = Vec::new();
        let mut done = done + writer.header_len();
        writer.write(out, |k, t, out| {
            let i = index[k];
            let mut rng = Rng::new(self.seed, &t.name);
            let bs = t.ty.type_size() as u64;
            let per_chunk = (CHUNK / bs).max(1) * bs;
            let mut left = t.size;
            while left > 0 {
                let n = left.min(per_chunk) as usize;
                buf.resize(n, 0);
                fill::fill(t.ty, self.inits[i], &mut rng, &mut buf);
                out.write_all(&buf)?;
                left -= n as u64;
                done += n as u64;
                progress(done);
            }
            Ok(())
        })
    }

    /// The header alone: metadata (tokenizer included) and tensor table.
    pub fn header(&self) -> Vec<u8> {
        self.writer.header()
    }

    /// The whole file in memory (for `whale bench --like`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.file_len() as usize);
        self.write(&mut v, |_| {}).expect("writing to memory cannot fail");
        v
    }
}

/// Tensors and bytes per type, largest first (for `whale synth`'s summary).
pub fn type_counts(tensors: &[TensorInfo]) -> Vec<(GgmlType, usize, u64)> {
    let mut out: Vec<(GgmlType, usize, u64)> = Vec::new();
    for t in tensors {
        match out.iter_mut().find(|(ty, _, _)| *ty == t.ty) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.size;
            }
            None => out.push((t.ty, 1, t.size)),
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.2));
    out
}
