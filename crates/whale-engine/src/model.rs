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
}

/// Every sequence of a batch has tokens and room for them in its cache
/// (checked before anything runs, so a failed batch advances no cache).
pub fn check_batch(seqs: &[BatchSeq<'_>]) -> Result<(), ModelError> {
    for s in seqs {
        if s.tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        s.cache.reserve(s.tokens.len())?;
    }
    Ok(())
}

/// Where a checked batch's rows go when stacked: each sequence's row range,
/// its first position (its cache length) and all tokens in order.
pub struct BatchRows {
    pub spans: Vec<std::ops::Range<usize>>,
    pub pos0: Vec<usize>,
    pub tokens: Vec<u32>,
}

impl BatchRows {
    pub fn new(seqs: &[BatchSeq<'_>]) -> Result<BatchRows, ModelError> {
        check_batch(seqs)?;
        Ok(BatchRows {
            spans: batch_spans(seqs.iter().map(|s| s.tokens.len())),
            pos0: seqs.iter().map(|s| s.cache.len).collect(),
            tokens: seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect(),
        })
    }
}

/// One sequence's part of [`Model::forward_batch`].
pub struct BatchSeq<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
}

/// Where each sequence's rows sit when the rows of a batch are stacked.
pub fn batch_spans(lens: impl IntoIterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut at = 0;
    lens.into_iter()
        .map(|n| {
            at += n;
            at - n..at
        })
        .collect()
}

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

    /// [`Linear::forward`] of rows stacked from several sequences (`spans`,
    /// contiguous, covering `x`), such that each row's result is the same
    /// bits as when its sequence runs alone. Block-quantized weights give
    /// that for any batch (each row's dot products are independent of the
    /// others'), so all rows go in one product that reads the weights once.
    /// Float weights use a different kernel for one row than for several,
    /// so they run sequence by sequence.
    pub fn forward_spans(&self, x: &[f32], spans: &[std::ops::Range<usize>], threads: usize) -> Vec<f32> {
        let m = spans.last().map_or(0, |s| s.end);
        if spans.len() <= 1 || !matches!(self.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return self.forward(x, m, threads);
        }
        let mut y = Vec::with_capacity(m * self.rows);
        for s in spans {
            y.extend(self.forward(&x[s.start * self.cols..s.end * self.cols], s.len(), threads));
        }
        y
    }

    /// [`Linear::forward_spans`] of several matrices that read the same
    /// input (Q/K/V, gate/up): when all are block-quantized they run as one
    /// job of the worker pool, with the activations quantized once per type
    /// (same bits as one by one).
    pub fn forward_spans_many(
        lins: &[&Linear],
        x: &[f32],
        spans: &[std::ops::Range<usize>],
        threads: usize,
    ) -> Vec<Vec<f32>> {
        let float = |l: &&Linear| matches!(l.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        let Some(first) = lins.first() else { return Vec::new() };
        if lins.iter().any(float) || lins.iter().any(|l| l.cols != first.cols) {
            return lins.iter().map(|l| l.forward_spans(x, spans, threads)).collect();
        }
        let m = spans.last().map_or(0, |s| s.end);
        let mut ys: Vec<Vec<f32>> = lins.iter().map(|l| vec![0f32; m * l.rows]).collect();
        let mut products: Vec<whale_kernels::QProduct<'_>> = lins
            .iter()
            .zip(ys.iter_mut())
            .map(|(l, y)| whale_kernels::QProduct { wty: l.ty, w: &l.data, rows: l.rows, y })
            .collect();
        whale_kernels::matmul_q_many(&mut products, first.cols, x, m, threads);
        drop(products);
        for (l, y) in lins.iter().zip(ys.iter_mut()) {
            if let Some(b) = &l.bias {
                ops::add_bias_rows(y, b);
            }
        }
        ys
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
    k_cache: whale_kernels::KvSlice<'_>,
    v_cache: whale_kernels::KvSlice<'_>,
    lay: AttnLayout,
    n_tok: usize,
    pos0: usize,
    scale: f32,
    threads: usize,
) -> Vec<f32> {
    let AttnLayout { n_head, n_kv_head, k_dim, v_dim, k_stride, v_stride } = lay;
    let mut out = vec![0f32; n_tok * n_head * v_dim];
    let group = n_head / n_kv_head;
    let threads = if n_tok * n_head * (pos0 + n_tok) * k_dim < 1 << 15 { 1 } else { threads.max(1) };
    // A work item is a set of query rows that share KV heads, so each cached
    // row is read once for all of them:
    // * prefill (enough tokens for every thread): a tile of up to
    //   `ATTN_TOKEN_TILE` consecutive tokens with all their heads; the
    //   tile's tokens see the shared prefix of the cache together, each
    //   masked to its own causal length;
    // * decode: one token's heads of one KV head, the group split into
    //   `chunks` runs when there are too few items to keep every thread
    //   busy (MLA has one KV head for all heads).
    // Either way an item's outputs are contiguous in `[n_tok, n_head, v_dim]`.
    let tiled = n_tok >= 2 * threads;
    let tile = if tiled { (n_tok / (2 * threads)).clamp(1, ATTN_TOKEN_TILE) } else { 1 };
    let chunks = if tiled { 1 } else { (2 * threads).div_ceil(n_tok * n_kv_head).clamp(1, group) };
    let per = group.div_ceil(chunks);
    let chunks = group.div_ceil(per);
    let item = |i: usize| -> AttnItem {
        if tiled {
            let t0 = i * tile;
            AttnItem { t0, t1: (t0 + tile).min(n_tok), g0: 0, g1: n_kv_head, h0: 0, h1: group }
        } else {
            let (t, rest) = (i / (n_kv_head * chunks), i % (n_kv_head * chunks));
            let (g, c) = (rest / chunks, rest % chunks);
            AttnItem { t0: t, t1: t + 1, g0: g, g1: g + 1, h0: c * per, h1: ((c + 1) * per).min(group) }
        }
    };
    let items = if tiled { n_tok.div_ceil(tile) } else { n_tok * n_kv_head * chunks };
    let work = |range: std::ops::Range<usize>, out: &mut [f32]| {
        let (mut qs, mut scores, mut lens, mut o) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut at = 0;
        for i in range {
            let it = item(i);
            let nh = it.h1 - it.h0;
            let rows = (it.t1 - it.t0) * nh;
            let n_max = pos0 + it.t1; // causal: token t sees positions 0..=pos0+t
            for g in it.g0..it.g1 {
                // Query rows of this KV head, token-major.
                qs.clear();
                lens.clear();
                for t in it.t0..it.t1 {
                    let first = t * n_head + g * group + it.h0;
                    qs.extend_from_slice(&q[first * k_dim..(first + nh) * k_dim]);
                    lens.extend(std::iter::repeat_n(pos0 + t + 1, nh));
                }
                scores.resize(rows * n_max, 0.0);
                whale_kernels::attn_scores(&qs, k_dim, k_cache.tail(g * k_dim), k_stride, scale, &lens, &mut scores);
                for (row, &len) in scores.chunks_exact_mut(n_max).zip(&lens) {
                    ops::softmax(&mut row[..len]);
                }
                o.resize(rows * v_dim, 0.0);
                whale_kernels::attn_weighted_sum(
                    &scores,
                    n_max,
                    v_cache.tail(g * v_dim),
                    v_stride,
                    v_dim,
                    &lens,
                    &mut o,
                );
                // Row (t, h) goes to output row t * heads + (g - g0) * nh + h
                // of this item (`heads` per token).
                let heads = (it.g1 - it.g0) * nh;
                for (r, src) in o.chunks_exact(nh * v_dim).enumerate() {
                    let dst = at + (r * heads + (g - it.g0) * nh) * v_dim;
                    out[dst..dst + nh * v_dim].copy_from_slice(src);
                }
            }
            at += rows * (it.g1 - it.g0) * v_dim;
        }
    };
    let threads = threads.min(items);
    if threads == 1 {
        work(0..items, &mut out);
    } else {
        // Causal: token t costs pos0 + t + 1 per head, so equal item counts
        // would give the last thread most of the work. Cut where the running
        // cost reaches each thread's share.
        let cost = |i: usize| {
            let it = item(i);
            let heads = ((it.g1 - it.g0) * (it.h1 - it.h0)) as u64;
            (it.t0..it.t1).map(|t| (pos0 + t + 1) as u64).sum::<u64>() * heads
        };
        let total: u64 = (0..items).map(cost).sum();
        let mut bounds = vec![0usize];
        let mut acc = 0u64;
        for i in 0..items {
            acc += cost(i);
            if bounds.len() < threads && acc * threads as u64 >= total * bounds.len() as u64 {
                bounds.push(i + 1);
            }
        }
        if *bounds.last().expect("starts at 0") != items {
            bounds.push(items);
        }
        let size = |r: std::ops::Range<usize>| r.map(|i| item(i).rows()).sum::<usize>() * v_dim;
        let mut parts = Vec::with_capacity(bounds.len() - 1);
        let mut rest = out.as_mut_slice();
        for w in bounds.windows(2) {
            let (chunk, tail) = rest.split_at_mut(size(w[0]..w[1]));
            parts.push((w[0]..w[1], chunk));
            rest = tail;
        }
        whale_kernels::pool::run_parts(threads, parts, |(range, chunk)| work(range, chunk));
    }
    out
}

/// Consecutive prefill tokens whose queries meet each cached row together
/// in [`attention`] (the rows are read once per tile instead of once per
/// token; 8 tokens of SmolLM2's 3-head groups make 24 query rows).
const ATTN_TOKEN_TILE: usize = 8;

/// One work item of [`attention`]: tokens `t0..t1`, KV heads `g0..g1`, and
/// heads `h0..h1` of each group.
#[derive(Clone, Copy)]
struct AttnItem {
    t0: usize,
    t1: usize,
    g0: usize,
    g1: usize,
    h0: usize,
    h1: usize,
}

impl AttnItem {
    /// Query rows (token, head) of the item.
    fn rows(self) -> usize {
        (self.t1 - self.t0) * (self.g1 - self.g0) * (self.h1 - self.h0)
    }
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
    let n = x.len() / norm.len();
    let mut out = batch_logits(x, &batch_spans([n]), logits, norm, eps, output, threads);
    out.pop().expect("one sequence")
}

/// [`final_logits`] for the stacked rows of a batch: per sequence (`spans`)
/// its last row's logits or all of its rows', each the same bits as for
/// that sequence alone.
pub fn batch_logits(
    x: &[f32],
    spans: &[std::ops::Range<usize>],
    logits: Logits,
    norm: &[f32],
    eps: f32,
    output: &Linear,
    threads: usize,
) -> Vec<Vec<f32>> {
    let h = norm.len();
    let (mut rows, out_spans) = match logits {
        Logits::Last => {
            let rows: Vec<f32> = spans.iter().flat_map(|s| x[(s.end - 1) * h..s.end * h].iter().copied()).collect();
            (rows, batch_spans(spans.iter().map(|_| 1)))
        }
        Logits::All => (x.to_vec(), spans.to_vec()),
    };
    ops::rms_norm_rows(&mut rows, norm, eps);
    let y = output.forward_spans(&rows, &out_spans, threads);
    let vocab = output.rows;
    out_spans.iter().map(|s| y[s.start * vocab..s.end * vocab].to_vec()).collect()
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
    /// Element type of the KV caches the model makes.
    pub cache_type: CacheType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cache_type: CacheType::default(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive causal attention in f64, for one (token, head) at a time.
    fn reference(q: &[f32], k: &[f32], v: &[f32], lay: AttnLayout, n_tok: usize, pos0: usize, scale: f32) -> Vec<f64> {
        let group = lay.n_head / lay.n_kv_head;
        let mut out = Vec::new();
        for t in 0..n_tok {
            for h in 0..lay.n_head {
                let g = h / group;
                let qv = &q[(t * lay.n_head + h) * lay.k_dim..][..lay.k_dim];
                let n_ctx = pos0 + t + 1;
                let s: Vec<f64> = (0..n_ctx)
                    .map(|p| {
                        let kv = &k[p * lay.k_stride + g * lay.k_dim..][..lay.k_dim];
                        qv.iter().zip(kv).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale as f64
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..lay.v_dim {
                    out.push((0..n_ctx).map(|p| e[p] / z * v[p * lay.v_stride + g * lay.v_dim + d] as f64).sum());
                }
            }
        }
        out
    }

    /// The causal split of (token, head) items over threads (cut by cost)
    /// gives the same bits for any thread count, and matches an f64
    /// reference within f32 rounding of sums over at most 201 positions
    /// (|values| <= 1 and softmax weights sum to one, so 1e-5 absolute is
    /// ~100 ulps of slack).
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

    #[test]
    fn attention_is_thread_independent_and_correct() {
        let lay = AttnLayout { n_head: 6, n_kv_head: 2, k_dim: 32, v_dim: 32, k_stride: 64, v_stride: 64 };
        let mut seed = 12345u64;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        };
        // Prefill and decode (one token), GQA and one KV head for all (MLA).
        let mla = AttnLayout { n_head: 8, n_kv_head: 1, k_dim: 48, v_dim: 32, k_stride: 48, v_stride: 48 };
        for (lay, n_tok, pos0) in [(lay, 50, 30), (lay, 1, 120), (mla, 1, 200), (mla, 9, 40)] {
            let q = rnd(n_tok * lay.n_head * lay.k_dim);
            let k = rnd((pos0 + n_tok) * lay.k_stride);
            let v = rnd((pos0 + n_tok) * lay.v_stride);
            let one = attention(&q, (&k).into(), (&v).into(), lay, n_tok, pos0, 0.2, 1);
            for threads in [2, 3, 7] {
                let many = attention(&q, (&k).into(), (&v).into(), lay, n_tok, pos0, 0.2, threads);
                assert!(one.iter().zip(&many).all(|(a, b)| a.to_bits() == b.to_bits()), "threads = {threads}");
            }
            // Each token of a prefill gives the bits of decoding it alone at
            // its position (the tiled items mask each token to its length).
            let row = lay.n_head * lay.k_dim;
            let orow = lay.n_head * lay.v_dim;
            for t in 0..n_tok {
                let alone = attention(&q[t * row..(t + 1) * row], (&k).into(), (&v).into(), lay, 1, pos0 + t, 0.2, 2);
                let same = alone.iter().zip(&one[t * orow..(t + 1) * orow]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "token {t} of {n_tok} differs from decoding it alone");
            }
            let want = reference(&q, &k, &v, lay, n_tok, pos0, 0.2);
            let worst = one.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-5, "n_tok {n_tok}, {} KV heads: max |Δ| = {worst:e}", lay.n_kv_head);
        }
    }
}
