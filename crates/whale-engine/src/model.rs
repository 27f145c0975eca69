//! What every architecture shares: the [`Model`] trait, the KV cache, linear
//! layers over (possibly quantized) weights, attention, and loading by
//! architecture name.
//!
//! The architecture list is [`Architecture`]; each variant has one file
//! (`llama.rs`, `qwen2.rs`) with its config, blocks and loader.

use std::path::Path;

use whale_kernels::GgmlType;

use crate::ops;
use crate::storage::ByteSlice;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::weights::{TensorView, WeightError, WeightStore};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("unknown architecture {found:?}: whale runs {known}")]
    UnknownArchitecture { found: String, known: String },
    #[error("model config: {0}")]
    Config(String),
    #[error("the context is full: {needed} tokens needed but the cache holds {capacity} (raise --ctx)")]
    ContextFull { needed: usize, capacity: usize },
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("empty input: at least one token is needed")]
    EmptyInput,
}

/// The architectures whale runs, by their Hugging Face `model_type` and GGUF
/// `general.architecture` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    /// DeepSeek-V2/V3/R1 (MLA + DeepSeekMoE).
    Deepseek,
}

impl Architecture {
    pub const ALL: [Architecture; 3] = [Architecture::Llama, Architecture::Qwen2, Architecture::Deepseek];

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Deepseek => "deepseek2",
        }
    }

    /// Every name an architecture goes by: GGUF `general.architecture` first,
    /// then Hugging Face `model_type`s.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Architecture::Llama => &["llama"],
            Architecture::Qwen2 => &["qwen2"],
            Architecture::Deepseek => &["deepseek2", "deepseek_v2", "deepseek_v3"],
        }
    }

    /// From GGUF `general.architecture` or config.json `model_type`.
    pub fn from_name(name: &str) -> Result<Architecture, ModelError> {
        Architecture::ALL.into_iter().find(|a| a.aliases().contains(&name)).ok_or_else(|| {
            ModelError::UnknownArchitecture {
                found: name.to_string(),
                known: Architecture::ALL.iter().flat_map(|a| a.aliases()).copied().collect::<Vec<_>>().join(", "),
            }
        })
    }
}

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's: `[vocab]`.
    Last,
    /// Every token's: `[n_tok, vocab]`.
    All,
}

/// Facts about a loaded model, for `whale info` and for callers.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub n_layers: usize,
    /// Longest context the model was trained for.
    pub context_length: usize,
    /// Values cached per token and layer (K and V together), for sizing the cache.
    pub kv_values_per_token_layer: usize,
}

impl ModelInfo {
    /// Bytes of KV cache per token (f32 cache).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.kv_values_per_token_layer * self.n_layers * std::mem::size_of::<f32>()
    }
}

/// A causal language model: token ids in, logits out, state in a [`KvCache`].
pub trait Model: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// A cache for up to `capacity` tokens, allocated once.
    fn new_cache(&self, capacity: usize) -> KvCache;

    /// Run `tokens` at positions `cache.len ..`, append their K/V to the cache
    /// and return logits (`[vocab]` or `[n_tok, vocab]`).
    fn forward(&self, cache: &mut KvCache, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError>;
}

/// Per-layer K and V rows, preallocated for `capacity` tokens.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// `[n_layers]` of `[capacity, k_width]`.
    pub k: Vec<Vec<f32>>,
    /// `[n_layers]` of `[capacity, v_width]`.
    pub v: Vec<Vec<f32>>,
    pub k_width: usize,
    pub v_width: usize,
    /// Tokens stored so far.
    pub len: usize,
    pub capacity: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, k_width: usize, v_width: usize, capacity: usize) -> KvCache {
        KvCache {
            k: vec![vec![0f32; capacity * k_width]; n_layers],
            v: vec![vec![0f32; capacity * v_width]; n_layers],
            k_width,
            v_width,
            len: 0,
            capacity,
        }
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

/// A linear layer `y = W x (+ b)` with `W` `[rows, cols]` in any stored format.
#[derive(Clone, Debug)]
pub struct Linear {
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    pub data: ByteSlice,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn from_view(t: TensorView, bias: Option<Vec<f32>>) -> Linear {
        let (rows, cols) = (t.shape[0], t.shape[1]);
        Linear { ty: t.ty, rows, cols, data: t.data, bias }
    }

    /// `x`: `[m, cols]` → `[m, rows]`.
    ///
    /// Block-quantized weights take activations quantized to 8-bit blocks
    /// (the weight type's `vec_dot_type`), exactly as llama.cpp computes: that is
    /// what makes greedy output agree with it, and integer dot products are
    /// faster. Float weights (F32/F16/BF16) take f32 activations, as the
    /// Hugging Face reference does.
    pub fn forward(&self, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.rows];
        match self.ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 if m == 1 => {
                whale_kernels::matvec(self.ty, &self.data, self.rows, self.cols, x, &mut y, threads)
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                whale_kernels::matmul(self.ty, &self.data, self.rows, self.cols, x, m, &mut y, threads)
            }
            _ => whale_kernels::matmul_q(self.ty, &self.data, self.rows, self.cols, x, m, &mut y, threads),
        }
        if let Some(b) = &self.bias {
            ops::add_bias_rows(&mut y, b);
        }
        y
    }

    /// Row `r` dequantized (an embedding lookup). `out`: `[cols]`.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let rb = self.ty.row_bytes(self.cols).expect("shape checked at load");
        whale_kernels::dequantize_row(self.ty, &self.data[r * rb..(r + 1) * rb], out).expect("shape checked at load");
    }
}

/// Where each head's keys and values sit in the cache rows.
#[derive(Clone, Copy, Debug)]
pub struct AttnLayout {
    pub n_head: usize,
    /// Heads share K/V in groups of `n_head / n_kv_head` (1: multi-query).
    pub n_kv_head: usize,
    /// Length of a query/key head vector.
    pub k_dim: usize,
    /// Length of a value head vector.
    pub v_dim: usize,
    /// Values between consecutive positions in the K and V caches.
    pub k_stride: usize,
    pub v_stride: usize,
}

/// Causal attention over the cache: scores, softmax, weighted values.
///
/// `q`: `[n_tok, n_head, k_dim]` for tokens at positions `pos0..`; the caches
/// already hold positions `0 .. pos0 + n_tok`, kv head `g` of position `p` at
/// `p * stride + g * dim`. Returns `[n_tok, n_head, v_dim]`. MLA uses it with
/// one KV head whose value is the first `v_dim` entries of the key row.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    lay: AttnLayout,
    n_tok: usize,
    pos0: usize,
    scale: f32,
    threads: usize,
) -> Vec<f32> {
    let AttnLayout { n_head, n_kv_head, k_dim, v_dim, k_stride, v_stride } = lay;
    let mut out = vec![0f32; n_tok * n_head * v_dim];
    let group = n_head / n_kv_head;
    // One (token, head) pair per work item; items split evenly across threads.
    let work = |items: std::ops::Range<usize>, out: &mut [f32]| {
        let mut scores = vec![0f32; pos0 + n_tok];
        for (slot, item) in items.enumerate() {
            let (t, h) = (item / n_head, item % n_head);
            let g = h / group;
            let qv = &q[(t * n_head + h) * k_dim..][..k_dim];
            let n_ctx = pos0 + t + 1; // causal: positions 0..=pos0+t
            for (p, s) in scores[..n_ctx].iter_mut().enumerate() {
                let kv = &k_cache[p * k_stride + g * k_dim..][..k_dim];
                *s = whale_kernels::dot_f32(qv, kv) * scale;
            }
            ops::softmax(&mut scores[..n_ctx]);
            let o = &mut out[slot * v_dim..][..v_dim];
            o.fill(0.0);
            for (p, &w) in scores[..n_ctx].iter().enumerate() {
                let vv = &v_cache[p * v_stride + g * v_dim..][..v_dim];
                for (a, &b) in o.iter_mut().zip(vv) {
                    *a += w * b;
                }
            }
        }
    };
    let items = n_tok * n_head;
    let threads = if items * (pos0 + n_tok) * k_dim < 1 << 15 { 1 } else { threads.clamp(1, items) };
    if threads == 1 {
        work(0..items, &mut out);
    } else {
        let per = items.div_ceil(threads);
        let parts: Vec<_> = out.chunks_mut(per * v_dim).enumerate().collect();
        whale_kernels::pool::run_parts(threads, parts, |(i, chunk)| {
            let start = i * per;
            work(start..(start + per).min(items), chunk)
        });
    }
    out
}

/// A configuration error (the shorthand every architecture file uses).
pub(crate) fn cfg_err(msg: impl Into<String>) -> ModelError {
    ModelError::Config(msg.into())
}

/// Look up the embedding rows of `tokens`: `[n_tok, hidden]`.
pub fn embed_tokens(embed: &Linear, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
    let h = embed.cols;
    let mut x = vec![0f32; tokens.len() * h];
    for (t, &id) in tokens.iter().enumerate() {
        if id as usize >= embed.rows {
            return Err(ModelError::TokenOutOfRange { id, vocab: embed.rows });
        }
        embed.row(id as usize, &mut x[t * h..(t + 1) * h]);
    }
    Ok(x)
}

/// Final RMSNorm and output projection of the hidden states `x`
/// (`[n_tok, hidden]`), for the last row or all rows: `[m, vocab]`.
pub fn final_logits(x: &[f32], logits: Logits, norm: &[f32], eps: f32, output: &Linear, threads: usize) -> Vec<f32> {
    let h = norm.len();
    let rows: &[f32] = match logits {
        Logits::Last => &x[x.len() - h..],
        Logits::All => x,
    };
    let mut normed = rows.to_vec();
    ops::rms_norm_rows(&mut normed, norm, eps);
    output.forward(&normed, rows.len() / h, threads)
}

/// The token embedding `[vocab, hidden]` and the output projection, which is
/// the embedding itself when the file has none (tied embeddings).
pub fn load_embed_output(store: &WeightStore, vocab: usize, h: usize) -> Result<(Linear, Linear), ModelError> {
    let embed = Linear::from_view(store.get(&crate::names::name(crate::names::TOKEN_EMBD), &[vocab, h])?, None);
    let output = match store.optional(&crate::names::name(crate::names::OUTPUT), &[vocab, h])? {
        Some(t) => Linear::from_view(t, None),
        None => embed.clone(),
    };
    Ok((embed, output))
}

/// How a model should be run.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Worker threads for matrix products and attention.
    pub threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { threads: std::thread::available_parallelism().map_or(1, |n| n.get()) }
    }
}

/// A model ready to run, with its tokenizer.
pub struct LoadedModel {
    pub model: Box<dyn Model>,
    pub tokenizer: Tokenizer,
}

/// Open a GGUF file or Hugging Face folder and build the model it holds.
pub fn load(path: &Path, opts: LoadOptions) -> Result<LoadedModel, ModelError> {
    let store = WeightStore::open(path)?;
    let (arch_name, tokenizer) = match &store {
        WeightStore::Gguf(g) => {
            let arch = g.architecture().ok_or_else(|| ModelError::Config("GGUF has no general.architecture".into()))?;
            (arch.to_string(), Tokenizer::from_gguf(g)?)
        }
        WeightStore::Hf(h) => {
            let mt = h.config.get("model_type").and_then(|v| v.as_str());
            let mt = mt.ok_or_else(|| ModelError::Config("config.json has no \"model_type\"".into()))?;
            (mt.to_string(), Tokenizer::from_hf_dir(&h.dir)?)
        }
    };
    let model = load_weights(&store, &arch_name, opts)?;
    Ok(LoadedModel { model, tokenizer })
}

/// Build the model from already-opened weights (no tokenizer needed).
pub fn load_weights(store: &WeightStore, arch_name: &str, opts: LoadOptions) -> Result<Box<dyn Model>, ModelError> {
    Ok(match Architecture::from_name(arch_name)? {
        Architecture::Llama => Box::new(crate::llama::Llama::load(store, Architecture::Llama, opts)?),
        Architecture::Qwen2 => Box::new(crate::qwen2::load(store, opts)?),
        Architecture::Deepseek => Box::new(crate::deepseek_v3::Deepseek::load(store, opts)?),
    })
}
