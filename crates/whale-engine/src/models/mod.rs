//! The models: what every architecture shares, then one file per
//! architecture.
//!
//! # What lives here
//! - this file: the [`Model`] trait (token ids in, logits out, state in a
//!   [`KvCache`]), [`ModelError`], [`ModelInfo`] and [`LoadOptions`];
//! - [`registry`]: the architecture list ([`Architecture`]) and loading a
//!   model file into a `Box<dyn Model>` with its tokenizer;
//! - [`kv_cache`]: the preallocated per-layer K/V rows (f16 or f32);
//! - [`linear`]: linear layers over (possibly quantized) weights, the
//!   embedding lookup and the output head;
//! - [`attention`]: causal attention over the cache, split over threads;
//! - [`batch`]: stacking several sequences' rows for one forward pass;
//! - [`ops`]: norms, activations, RoPE and YaRN; [`moe`]: DeepSeekMoE routing;
//! - one file per architecture, named after its Hugging Face `model_type`:
//!   [`llama`], [`qwen2`] (the llama path with biases) and [`deepseek_v3`]
//!   (MLA with a latent cache, DeepSeekMoE; also V2).
//!
//! # What it may call
//! [`crate::formats`] for weights and [`crate::text`] for the tokenizer a
//! model is loaded with, and the kernels crate. Never [`crate::serving`]:
//! the engine thread, sampler and generation loop sit above the models.

use crate::formats::weights::WeightError;
use crate::text::tokenizer::TokenizerError;

pub mod attention;
pub mod batch;
pub mod deepseek_v3;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod moe;
pub mod ops;
pub mod qwen2;
pub mod registry;

pub use attention::{attention, attention_into, AttnLayout};
pub use batch::{batch_spans, check_batch, BatchRows, BatchSeq};
pub use kv_cache::{CacheType, KvCache, KvRows};
pub use linear::{batch_logits, batch_logits_each, embed_tokens, final_logits, load_embed_output, Linear};
pub use registry::{load, load_gguf, load_weights, Architecture, LoadedModel};

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
    /// Mixture of experts: (experts each token is routed to, routed experts) a layer.
    pub routed_experts: Option<(usize, usize)>,
}

impl ModelInfo {
    /// Bytes of KV cache per token with a cache of type `ty`.
    pub fn kv_bytes_per_token(&self, ty: CacheType) -> usize {
        self.kv_values_per_token_layer * self.n_layers * ty.bytes()
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

    /// Run several sequences in one pass over the weights (continuous
    /// batching): sequence `i` feeds `seqs[i].tokens` at positions
    /// `cache.len ..` of its own cache. Returns each sequence's last-token
    /// logits, in order.
    ///
    /// A sequence's logits and cache are bit for bit what [`Model::forward`]
    /// of it alone gives: what else is in the batch never changes an output.
    /// On an error no cache has advanced its length. The default runs the
    /// sequences one after the other.
    fn forward_batch(&self, seqs: &mut [BatchSeq<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        check_batch(seqs)?;
        seqs.iter_mut().map(|s| self.forward(s.cache, s.tokens, Logits::Last)).collect()
    }

    /// [`Model::forward_batch`] where the positions of `image_token` in a
    /// sequence's tokens take given input rows instead of that token's
    /// embedding (a multimodal model's image features): `rows[i]` is `None`
    /// or the rows (`[k, hidden]`, in order) for the `k` image tokens of
    /// `seqs[i].tokens`. Models without image input refuse rows.
    fn forward_batch_rows(
        &self,
        seqs: &mut [BatchSeq<'_>],
        image_token: u32,
        rows: &[Option<&[f32]>],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let _ = image_token;
        if rows.iter().all(Option::is_none) {
            return self.forward_batch(seqs);
        }
        Err(ModelError::Config(format!("a {} model takes no image input", self.info().architecture.name())))
    }

    /// Bytes of matrix weights that decoding one token of one sequence
    /// reads, as held in memory (what bounds decode speed): every projection
    /// and the output head, not the embedding table (one row is looked up)
    /// unless it is the tied output head, nor norm vectors. A MoE layer
    /// counts its router, its shared experts and `top_k` routed experts:
    /// one token reads exactly `top_k` distinct ones.
    fn active_weight_bytes(&self) -> u64;

    /// The model's multi-token-prediction layers, where it has them.
    fn drafter(&self) -> Option<&dyn Drafter> {
        None
    }
}

/// One sequence's logits and hidden rows, as [`Drafter`] returns them.
pub type LogitsHidden = (Vec<f32>, Vec<f32>);

/// A model with multi-token-prediction (MTP) layers, as DeepSeek-V3 has one:
/// from the main model's last hidden state at position `i` and the token at
/// `i + 1`, it predicts the token at `i + 2`. Speculative decoding
/// ([`crate::serving::speculative`]) drafts with it and verifies with the
/// main model.
pub trait Drafter {
    /// A cache for the draft layer's own attention (one latent row a
    /// position, like a main layer's).
    fn new_draft_cache(&self, capacity: usize) -> KvCache;

    /// [`Model::forward_batch`] that also returns every row's last block
    /// output before the final norm (the draft layer's input): for each
    /// sequence, its logits (every row's, `[n, vocab]`, where `all_rows[i]`,
    /// else the last row's) and its hidden rows (`[n, hidden]`). Each
    /// sequence gets the bits it would get alone.
    fn forward_batch_hidden(
        &self,
        seqs: &mut [BatchSeq<'_>],
        all_rows: &[bool],
    ) -> Result<Vec<LogitsHidden>, ModelError>;

    /// The draft layer over several sequences at once, each on rows at
    /// positions `cache.len ..` of its draft cache: row `t` of sequence `i`
    /// takes `hidden[i][t]` (the main model's or the draft layer's own
    /// previous output, `[n, hidden]`) and `seqs[i].tokens[t]`, the token
    /// after that position. Returns, for each sequence, the logits of its
    /// last row (for the token after its last `next`) and that row's output
    /// (`[hidden]`), which can feed the draft layer again to draft further.
    fn draft_batch(&self, seqs: &mut [BatchSeq<'_>], hidden: &[&[f32]]) -> Result<Vec<LogitsHidden>, ModelError>;

    /// [`Drafter::forward_batch_hidden`] of one sequence: the logits that
    /// `logits` asks for (`[vocab]` or `[n, vocab]`) and the hidden rows.
    fn forward_with_hidden(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<LogitsHidden, ModelError> {
        let mut seqs = [BatchSeq { cache, tokens }];
        let all = matches!(logits, Logits::All);
        Ok(self.forward_batch_hidden(&mut seqs, &[all])?.pop().expect("one sequence"))
    }

    /// [`Drafter::draft_batch`] of one sequence: the last row's logits and
    /// output.
    fn draft(&self, cache: &mut KvCache, hidden: &[f32], next: &[u32]) -> Result<LogitsHidden, ModelError> {
        let mut seqs = [BatchSeq { cache, tokens: next }];
        Ok(self.draft_batch(&mut seqs, &[hidden])?.pop().expect("one sequence"))
    }
}

/// A configuration error (the shorthand every architecture file uses).
pub(crate) fn cfg_err(msg: impl Into<String>) -> ModelError {
    ModelError::Config(msg.into())
}

/// How a model should be run.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Worker threads for matrix products and attention.
    pub threads: usize,
    /// Element type of the KV caches the model makes.
    pub cache_type: CacheType,
    /// What to do with a safetensors checkpoint's FP8 weights.
    pub fp8: crate::formats::weights::Fp8Mode,
    /// The weights do not all fit in memory: MoE layers ask the kernel to
    /// read each routed expert in as soon as the router picks it, so its
    /// I/O overlaps the shared experts and the other experts' products
    /// instead of faulting page by page. Off when the model fits (the
    /// hint then costs page-cache lookups for nothing).
    pub prefetch_experts: bool,
    /// Whether the weight files are mapped or read whole into memory
    /// ([`LoadMode`]); the CLI reads them when they fit.
    pub load_mode: crate::formats::storage::LoadMode,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cache_type: CacheType::default(),
            fp8: Default::default(),
            prefetch_experts: false,
            load_mode: Default::default(),
        }
    }
}
