//! Llama: the decoder of SmolLM2 and DeepSeek-R1-Distill-Llama (and, with
//! biases on Q/K/V, of Qwen2: see `qwen2.rs`).
//!
//! Order of this file: config (as config.json spells it, then resolved), the
//! model struct with its weights and their shapes, the forward pass, loading.

use serde::Deserialize;

use crate::formats::gguf::GgufFile;
use crate::formats::names::{self, layer, name};
use crate::formats::weights::WeightStore;
use crate::models::batch::OutputRows;
use crate::models::ops::{self, Rope, RopeStyle};
use crate::models::{
    attention, batch_logits, cfg_err, embed_tokens, load_embed_output, Architecture, AttnLayout, BatchRows, BatchSeq,
    CacheType, KvCache, Linear, LoadOptions, Logits, Model, ModelError, ModelInfo,
};

/// `config.json` of a Llama or Qwen2 model, with Hugging Face's key names.
#[derive(Debug, Deserialize)]
pub struct LlamaConfigJson {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5 writes `rope_theta` and the scaling here instead.
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    pub max_position_embeddings: Option<usize>,
    pub hidden_act: Option<String>,
}

/// Resolved hyper-parameters: no options left, derived values computed.
#[derive(Clone, Debug)]
pub struct LlamaParams {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// llama3 scaling divisors, one per rotated pair.
    pub rope_freq_factors: Option<Vec<f32>>,
    pub rope_style: RopeStyle,
    pub context_length: usize,
    /// Q/K/V projections carry biases (Qwen2).
    pub qkv_bias: bool,
}

impl LlamaParams {
    /// From a Hugging Face config. Hugging Face checkpoints rotate halves.
    pub fn from_hf(cfg: &serde_json::Value, qkv_bias: bool) -> Result<LlamaParams, ModelError> {
        let c: LlamaConfigJson =
            serde_json::from_value(cfg.clone()).map_err(|e| cfg_err(format!("config.json: {e}")))?;
        if let Some(act) = &c.hidden_act {
            if act != "silu" {
                return Err(cfg_err(format!("hidden_act {act:?} is not supported (only \"silu\")")));
            }
        }
        if c.num_attention_heads == 0 {
            return Err(cfg_err("num_attention_heads is 0"));
        }
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads);
        let rp = c.rope_parameters.as_ref().filter(|v| v.is_object());
        let theta = c.rope_theta.or_else(|| rp.and_then(|v| v.get("rope_theta")?.as_f64())).unwrap_or(10000.0) as f32;
        let mut rope_freq_factors = None;
        if let Some(rs) = c.rope_scaling.as_ref().filter(|v| !v.is_null()).or(rp) {
            let ty = rs.get("rope_type").or_else(|| rs.get("type")).and_then(|v| v.as_str()).unwrap_or("");
            let num = |k: &str| rs.get(k).and_then(|v| v.as_f64()).map(|v| v as f32);
            match ty {
                "llama3" => {
                    let (Some(f), Some(lo), Some(hi), Some(orig)) = (
                        num("factor"),
                        num("low_freq_factor"),
                        num("high_freq_factor"),
                        num("original_max_position_embeddings"),
                    ) else {
                        return Err(cfg_err("rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor, original_max_position_embeddings"));
                    };
                    rope_freq_factors = Some(ops::llama3_freq_factors(head_dim, theta, f, lo, hi, orig));
                }
                "default" | "" => {}
                other => return Err(cfg_err(format!("rope_scaling type {other:?} is not supported for llama/qwen2"))),
            }
        }
        let p = LlamaParams {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            n_layers: c.num_hidden_layers,
            n_head: c.num_attention_heads,
            n_kv_head: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim,
            rms_norm_eps: c.rms_norm_eps as f32,
            rope_theta: theta,
            rope_freq_factors,
            rope_style: RopeStyle::Halves,
            context_length: c.max_position_embeddings.unwrap_or(4096),
            qkv_bias: qkv_bias || c.attention_bias,
        };
        p.validate()
    }

    /// From GGUF metadata (`{arch}.*` keys as llama.cpp writes them).
    pub fn from_gguf(
        g: &GgufFile,
        arch: &str,
        rope_style: RopeStyle,
        qkv_bias: bool,
    ) -> Result<LlamaParams, ModelError> {
        let req = |k: &str| {
            let key = format!("{arch}.{k}");
            g.get_u64(&key).map(|v| v as usize).ok_or_else(|| cfg_err(format!("GGUF is missing {key}")))
        };
        let hidden_size = req("embedding_length")?;
        let n_head = req("attention.head_count")?;
        if n_head == 0 {
            return Err(cfg_err(format!("{arch}.attention.head_count is 0")));
        }
        let head_dim = g.get_u64(&format!("{arch}.attention.key_length")).map_or(hidden_size / n_head, |v| v as usize);
        let (vocab_size, _) = match g.tensor(names::TOKEN_EMBD.0) {
            Some(t) if t.dims.len() == 2 => (t.dims[1] as usize, t.dims[0] as usize),
            _ => return Err(cfg_err("GGUF has no 2-D token_embd.weight")),
        };
        let p = LlamaParams {
            vocab_size,
            hidden_size,
            intermediate_size: req("feed_forward_length")?,
            n_layers: req("block_count")?,
            n_head,
            n_kv_head: g.get_u64(&format!("{arch}.attention.head_count_kv")).map_or(n_head, |v| v as usize),
            head_dim,
            rms_norm_eps: g.get_f64(&format!("{arch}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f32,
            rope_theta: g.get_f64(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0) as f32,
            // llama.cpp's converter stores llama3 scaling as the rope_freqs tensor; read at load.
            rope_freq_factors: None,
            rope_style,
            context_length: req("context_length").unwrap_or(4096),
            qkv_bias,
        };
        p.validate()
    }

    fn validate(self) -> Result<LlamaParams, ModelError> {
        let p = self;
        if p.n_kv_head == 0 || !p.n_head.is_multiple_of(p.n_kv_head) {
            return Err(cfg_err(format!(
                "{} attention heads cannot be grouped over {} KV heads",
                p.n_head, p.n_kv_head
            )));
        }
        if p.head_dim == 0 || !p.head_dim.is_multiple_of(2) {
            return Err(cfg_err(format!("head dimension {} must be even and non-zero", p.head_dim)));
        }
        if p.n_layers == 0 || p.hidden_size == 0 || p.vocab_size == 0 || p.intermediate_size == 0 {
            return Err(cfg_err("hidden size, layers, vocabulary and intermediate size must be non-zero"));
        }
        if p.n_layers > 1024 || p.hidden_size > 1 << 17 || p.n_head > 1024 {
            return Err(cfg_err(format!(
                "implausible sizes: {} layers, hidden {}, {} heads",
                p.n_layers, p.hidden_size, p.n_head
            )));
        }
        Ok(p)
    }
}

/// One decoder block.
struct Block {
    attn_norm: Vec<f32>, // [hidden]
    wq: Linear,          // [n_head * head_dim, hidden]
    wk: Linear,          // [n_kv_head * head_dim, hidden]
    wv: Linear,          // [n_kv_head * head_dim, hidden]
    wo: Linear,          // [hidden, n_head * head_dim]
    ffn_norm: Vec<f32>,  // [hidden]
    w_gate: Linear,      // [intermediate, hidden]
    w_up: Linear,        // [intermediate, hidden]
    w_down: Linear,      // [hidden, intermediate]
}

pub struct Llama {
    pub params: LlamaParams,
    info: ModelInfo,
    embed: Linear, // [vocab, hidden]
    blocks: Vec<Block>,
    norm: Vec<f32>, // [hidden]
    output: Linear, // [vocab, hidden], the embedding itself when tied
    rope: Rope,
    threads: usize,
    cache_type: CacheType,
}

impl Model for Llama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_cache(&self, capacity: usize) -> KvCache {
        let kv = self.params.n_kv_head * self.params.head_dim;
        KvCache::new(self.params.n_layers, kv, kv, capacity, self.cache_type)
    }

    fn forward(&self, cache: &mut KvCache, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError> {
        let mut seqs = [BatchSeq { cache, tokens }];
        let mut out = self.run(&mut seqs, None, Head::Logits(logits))?;
        Ok(out.pop().expect("one sequence"))
    }

    fn active_weight_bytes(&self) -> u64 {
        let block = |b: &Block| {
            [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down].iter().map(|l| l.bytes()).sum::<u64>()
        };
        self.blocks.iter().map(block).sum::<u64>() + self.output.bytes()
    }

    fn forward_batch(&self, seqs: &mut [BatchSeq<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.run(seqs, None, Head::Logits(Logits::Last))
    }

    fn forward_batch_rows(
        &self,
        seqs: &mut [BatchSeq<'_>],
        image_token: u32,
        rows: &[Option<&[f32]>],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut x = Vec::new();
        for (s, r) in seqs.iter().zip(rows.iter().chain(std::iter::repeat(&None))) {
            x.extend(self.input_rows(s.tokens, image_token, r.unwrap_or(&[]))?);
        }
        self.run(seqs, Some(x), Head::Logits(Logits::Last))
    }
}

/// What the last layer's rows become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Logits over the vocabulary (the last row of each sequence, or all).
    Logits(Logits),
    /// The rows after the final norm, before the output projection
    /// (`[hidden]` each): what another head (Janus's image-token head) reads.
    Normed(Logits),
}

impl Llama {
    /// The forward pass on rows of input embeddings instead of token ids
    /// (Janus puts image features and image-code embeddings there).
    /// `embeds` is `[Σ tokens, hidden]`, the rows of `seqs` stacked in
    /// order; each sequence's `tokens` give only its row count.
    pub fn forward_embeds(
        &self,
        seqs: &mut [BatchSeq<'_>],
        embeds: Vec<f32>,
        head: Head,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let rows: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        if embeds.len() != rows * self.params.hidden_size {
            return Err(cfg_err(format!(
                "{} embedding values given for {rows} rows of {}",
                embeds.len(),
                self.params.hidden_size
            )));
        }
        self.run(seqs, Some(embeds), head)
    }

    /// The input rows of `tokens` (`[n, hidden]`): their embeddings, with
    /// the positions of `image_token` taken in order from `rows` (`[k,
    /// hidden]` for its `k` occurrences; the counts must agree).
    pub fn input_rows(&self, tokens: &[u32], image_token: u32, rows: &[f32]) -> Result<Vec<f32>, ModelError> {
        let h = self.params.hidden_size;
        let mut x = embed_tokens(&self.embed, tokens)?; // [n, hidden]
        let slots: Vec<usize> = (0..tokens.len()).filter(|&t| tokens[t] == image_token).collect();
        if slots.len() * h != rows.len() {
            return Err(cfg_err(format!(
                "{} image tokens but {} image rows of {h} values",
                slots.len(),
                rows.len() as f64 / h as f64
            )));
        }
        for (&t, row) in slots.iter().zip(rows.chunks_exact(h)) {
            x[t * h..(t + 1) * h].copy_from_slice(row);
        }
        Ok(x)
    }

    /// The token embedding table `[vocab, hidden]`.
    pub fn embedding(&self) -> &Linear {
        &self.embed
    }
}

impl Llama {
    /// The forward pass of a batch of sequences (one is the plain forward):
    /// their rows are stacked so each weight matrix is read once for all;
    /// RoPE, the cache writes and attention are per sequence.
    fn run(
        &self,
        seqs: &mut [BatchSeq<'_>],
        embeds: Option<Vec<f32>>,
        head: Head,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let p = &self.params;
        let (h, th) = (p.hidden_size, self.threads);
        let BatchRows { spans, pos0, tokens } = BatchRows::new(seqs)?;
        let (qd, kvd) = (p.n_head * p.head_dim, p.n_kv_head * p.head_dim);
        let scale = 1.0 / (p.head_dim as f32).sqrt();
        let lay = AttnLayout {
            n_head: p.n_head,
            n_kv_head: p.n_kv_head,
            k_dim: p.head_dim,
            v_dim: p.head_dim,
            k_stride: kvd,
            v_stride: kvd,
        };

        let n = tokens.len();
        let mut x = match embeds {
            Some(x) => x,
            None => embed_tokens(&self.embed, &tokens)?,
        }; // [n, hidden]
        let mut xn = vec![0f32; n * h];
        // Only the last row of each sequence reaches the head: the last
        // block finishes those rows alone (see `OutputRows`).
        let last_only = matches!(head, Head::Logits(Logits::Last) | Head::Normed(Logits::Last));
        let kept = if last_only { OutputRows::last_of(&spans) } else { None };
        for (l, b) in self.blocks.iter().enumerate() {
            let keep = kept.as_ref().filter(|_| l + 1 == self.blocks.len());
            // Attention.
            for (src, dst) in x.chunks_exact(h).zip(xn.chunks_exact_mut(h)) {
                ops::rms_norm(src, &b.attn_norm, p.rms_norm_eps, dst);
            }
            let [mut q, mut k, v]: [Vec<f32>; 3] =
                Linear::forward_spans_many(&[&b.wq, &b.wk, &b.wv], &xn, &spans, th).try_into().expect("three products");
            // q: [n, n_head, head_dim]; k, v: [n, n_kv_head, head_dim]
            let mut attn = Vec::with_capacity(keep.map_or(n, |k| k.rows.len()) * qd);
            for ((s, span), &p0) in seqs.iter_mut().zip(&spans).zip(&pos0) {
                let (t0, t1) = (span.start, span.end);
                let qs = &mut q[t0 * qd..t1 * qd];
                let ks = &mut k[t0 * kvd..t1 * kvd];
                self.rope.apply_rows(qs, p.n_head, p.head_dim, p0);
                self.rope.apply_rows(ks, p.n_kv_head, p.head_dim, p0);
                s.cache.k[l].write(p0 * kvd, ks);
                s.cache.v[l].write(p0 * kvd, &v[t0 * kvd..t1 * kvd]);
                // The queries that go on: all, or the last.
                let first = if keep.is_some() { span.len() - 1 } else { 0 };
                let qs = &qs[first * qd..];
                let (k_c, v_c) = (s.cache.k[l].view(), s.cache.v[l].view());
                attn.extend(attention(qs, k_c, v_c, lay, span.len() - first, p0 + first, scale, th));
            }
            let spans = keep.map_or(&spans[..], |k| &k.spans[..]);
            if let Some(k) = keep {
                x = k.gather(&x, h);
                xn.truncate(k.rows.len() * h);
            }
            let o = b.wo.forward_spans(&attn, spans, th); // [n, hidden]
            ops::add_assign(&mut x, &o);
            // Feed-forward (SwiGLU).
            for (src, dst) in x.chunks_exact(h).zip(xn.chunks_exact_mut(h)) {
                ops::rms_norm(src, &b.ffn_norm, p.rms_norm_eps, dst);
            }
            let d = Linear::swiglu_ffn(&b.w_gate, &b.w_up, &b.w_down, &xn, spans, th); // [n, hidden]
            ops::add_assign(&mut x, &d);
        }
        for (s, span) in seqs.iter_mut().zip(&spans) {
            s.cache.len += span.len();
        }
        let spans = kept.map_or(spans, |k| k.spans);
        Ok(match head {
            Head::Logits(logits) => batch_logits(&x, &spans, logits, &self.norm, p.rms_norm_eps, &self.output, th),
            Head::Normed(rows) => spans
                .iter()
                .map(|s| {
                    let r = if rows == Logits::Last { s.end - 1..s.end } else { s.clone() };
                    let mut y = x[r.start * h..r.end * h].to_vec();
                    ops::rms_norm_rows(&mut y, &self.norm, p.rms_norm_eps);
                    y
                })
                .collect(),
        })
    }
    /// Load from either format. `arch` selects the GGUF key prefix and the
    /// RoPE pairing: llama.cpp's converter permutes llama's Q/K so that adjacent
    /// pairs rotate, while Hugging Face files and qwen2 rotate halves.
    pub fn load(store: &WeightStore, arch: Architecture, opts: LoadOptions) -> Result<Llama, ModelError> {
        let qkv_bias = arch == Architecture::Qwen2;
        let mut params = match store {
            WeightStore::Gguf(g) => {
                let style = if arch == Architecture::Llama { RopeStyle::Interleaved } else { RopeStyle::Halves };
                LlamaParams::from_gguf(g, arch.name(), style, qkv_bias)?
            }
            WeightStore::Hf(hf) => LlamaParams::from_hf(&hf.config, qkv_bias)?,
        };
        if params.rope_freq_factors.is_none() {
            params.rope_freq_factors = store.optional_vector(&name(names::ROPE_FREQS), params.head_dim / 2)?;
        }
        Self::from_params(store, params, arch, opts)
    }

    /// The language model of a Janus checkpoint in transformers' layout:
    /// `text_config` holds its config and its tensors sit under
    /// `model.language_model.` (the head stays `lm_head.weight`).
    pub fn load_janus(store: &WeightStore, opts: LoadOptions) -> Result<Llama, ModelError> {
        let WeightStore::Hf(hf) = store else {
            return Err(cfg_err("a Janus model is read from a Hugging Face folder, not a GGUF"));
        };
        let text =
            hf.config.get("text_config").cloned().ok_or_else(|| cfg_err("Janus config.json has no text_config"))?;
        if let Some(mt) = text.get("model_type").and_then(|v| v.as_str()).filter(|&m| m != "llama") {
            return Err(cfg_err(format!("Janus text_config model_type {mt:?}: only \"llama\" is supported")));
        }
        let params = LlamaParams::from_hf(&text, false)?;
        let sub = WeightStore::Hf(hf.sub_model("model.language_model.", "model.", text));
        Self::from_params(&sub, params, Architecture::Janus, opts)
    }

    pub(crate) fn from_params(
        store: &WeightStore,
        p: LlamaParams,
        arch: Architecture,
        opts: LoadOptions,
    ) -> Result<Llama, ModelError> {
        let (h, qd, kvd, ff) = (p.hidden_size, p.n_head * p.head_dim, p.n_kv_head * p.head_dim, p.intermediate_size);
        let lin = |pair, i, shape: [usize; 2], bias: Option<(&str, &str)>| -> Result<Linear, ModelError> {
            let w = store.get(&layer(pair, i), &shape)?;
            let b = match bias {
                Some(bp) => Some(store.vector(&layer(bp, i), shape[0])?),
                None => None,
            };
            Ok(Linear::from_view(w, b))
        };
        let bias = |pair| if p.qkv_bias { Some(pair) } else { None };
        let mut blocks = Vec::with_capacity(p.n_layers);
        for i in 0..p.n_layers {
            blocks.push(Block {
                attn_norm: store.vector(&layer(names::ATTN_NORM, i), h)?,
                wq: lin(names::ATTN_Q, i, [qd, h], bias(names::ATTN_Q_BIAS))?,
                wk: lin(names::ATTN_K, i, [kvd, h], bias(names::ATTN_K_BIAS))?,
                wv: lin(names::ATTN_V, i, [kvd, h], bias(names::ATTN_V_BIAS))?,
                wo: lin(names::ATTN_OUT, i, [h, qd], None)?,
                ffn_norm: store.vector(&layer(names::FFN_NORM, i), h)?,
                w_gate: lin(names::FFN_GATE, i, [ff, h], None)?,
                w_up: lin(names::FFN_UP, i, [ff, h], None)?,
                w_down: lin(names::FFN_DOWN, i, [h, ff], None)?,
            });
        }
        let (embed, output) = load_embed_output(store, p.vocab_size, h)?;
        let rope = Rope::new(p.rope_style, p.head_dim, p.rope_theta, p.rope_freq_factors.as_deref());
        let info = ModelInfo {
            architecture: arch,
            vocab_size: p.vocab_size,
            hidden_size: h,
            n_layers: p.n_layers,
            context_length: p.context_length,
            kv_values_per_token_layer: 2 * kvd,
            routed_experts: None,
        };
        Ok(Llama {
            info,
            embed,
            blocks,
            norm: store.vector(&name(names::OUTPUT_NORM), h)?,
            output,
            rope,
            threads: opts.threads.max(1),
            cache_type: opts.cache_type,
            params: p,
        })
    }
}
