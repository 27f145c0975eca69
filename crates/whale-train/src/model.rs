//! A llama decoder the trainer can differentiate: its config (Hugging Face
//! `config.json` names, so the engine loads a checkpoint as any llama
//! model), its parameters in Hugging Face's tensor names and shapes, a
//! forward pass that keeps what the backward needs (a [`Tape`]), and the
//! backward pass.
//!
//! Order: config, parameters, forward, backward.

use rand::Rng;
use serde::{Deserialize, Serialize};
use whale_engine::models::llama::LlamaParams;
use whale_engine::models::ops::{Rope, RopeStyle};

use crate::ops;
use crate::TrainError;

/// `config.json` of a llama or qwen2 model, as transformers writes it (the
/// keys the trainer needs; others are ignored when read).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LlamaConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Q/K/V biases (qwen2 always has them).
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_theta() -> f64 {
    10000.0
}
fn default_ctx() -> usize {
    4096
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// A small llama: `hidden` wide, `layers` deep, heads of 16.
    pub fn tiny(vocab_size: usize, hidden: usize, layers: usize, bos: u32, eos: u32) -> LlamaConfig {
        LlamaConfig {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: "llama".into(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: hidden * 3,
            num_hidden_layers: layers,
            num_attention_heads: (hidden / 16).max(1),
            num_key_value_heads: (hidden / 16).max(1),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 256,
            tie_word_embeddings: false,
            hidden_act: "silu".into(),
            attention_bias: false,
            bos_token_id: Some(bos),
            eos_token_id: Some(eos),
        }
    }

    /// From the engine's resolved hyper-parameters (a GGUF or a Hugging
    /// Face folder), for a model loaded to be fine-tuned.
    pub fn from_engine(p: &LlamaParams, qwen2: bool, tied: bool) -> LlamaConfig {
        let (model_type, arch) = if qwen2 { ("qwen2", "Qwen2ForCausalLM") } else { ("llama", "LlamaForCausalLM") };
        LlamaConfig {
            architectures: vec![arch.into()],
            model_type: model_type.into(),
            vocab_size: p.vocab_size,
            hidden_size: p.hidden_size,
            intermediate_size: p.intermediate_size,
            num_hidden_layers: p.n_layers,
            num_attention_heads: p.n_head,
            num_key_value_heads: p.n_kv_head,
            head_dim: Some(p.head_dim),
            rms_norm_eps: p.rms_norm_eps as f64,
            rope_theta: p.rope_theta as f64,
            max_position_embeddings: p.context_length,
            tie_word_embeddings: tied,
            hidden_act: "silu".into(),
            attention_bias: p.qkv_bias && !qwen2,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Q/K/V carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// What the trainer can differentiate: a llama or qwen2 block with SiLU
    /// and whole heads.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Unsupported(m));
        if self.model_type != "llama" && self.model_type != "qwen2" {
            return bad(format!("model_type {:?}: the trainer differentiates llama and qwen2 models", self.model_type));
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act {:?}: only silu", self.hidden_act));
        }
        let (nh, nkv, hd) = (self.num_attention_heads, self.num_key_value_heads, self.head_dim());
        if nh == 0 || nkv == 0 || !nh.is_multiple_of(nkv) || hd == 0 || !hd.is_multiple_of(2) {
            return bad(format!("{nh} heads of {hd} over {nkv} KV heads do not make even, whole heads"));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocabulary, width, intermediate size and layers must be non-zero".into());
        }
        Ok(())
    }
}

/// The seven linear layers of a block, in the order [`Layout`] keeps them.
pub const LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// Named f32 tensors: a model's parameters, or their gradients, or an
/// optimiser's moments, or LoRA adapters (same names and shapes).
#[derive(Clone, Debug)]
pub struct Params {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub data: Vec<Vec<f32>>,
}

/// `[out, in]` of each of [`LINEARS`].
fn linear_shapes(cfg: &LlamaConfig) -> [[usize; 2]; 7] {
    let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
    let (qd, kvd) = (cfg.num_attention_heads * cfg.head_dim(), cfg.num_key_value_heads * cfg.head_dim());
    [[qd, h], [kvd, h], [kvd, h], [h, qd], [ff, h], [ff, h], [h, ff]]
}

impl Params {
    fn empty() -> Params {
        Params { names: vec![], shapes: vec![], data: vec![] }
    }

    fn push(&mut self, name: String, shape: Vec<usize>) {
        self.data.push(vec![0f32; shape.iter().product()]);
        self.names.push(name);
        self.shapes.push(shape);
    }

    /// The tensors of `cfg`, named as transformers names them, all zero.
    pub fn zeros(cfg: &LlamaConfig) -> Params {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let shapes = linear_shapes(cfg);
        let mut p = Params::empty();
        p.push("model.embed_tokens.weight".into(), vec![v, h]);
        for l in 0..cfg.num_hidden_layers {
            let pre = format!("model.layers.{l}");
            p.push(format!("{pre}.input_layernorm.weight"), vec![h]);
            for (t, lin) in LINEARS.iter().enumerate() {
                if t == O {
                    p.push(format!("{pre}.post_attention_layernorm.weight"), vec![h]);
                }
                p.push(format!("{pre}.{lin}.weight"), shapes[t].to_vec());
                if t <= V && cfg.qkv_bias() {
                    p.push(format!("{pre}.{lin}.bias"), vec![shapes[t][0]]);
                }
            }
        }
        p.push("model.norm.weight".into(), vec![h]);
        if !cfg.tie_word_embeddings {
            p.push("lm_head.weight".into(), vec![v, h]);
        }
        p
    }

    /// Random initial weights: norms 1, biases 0, matrices uniform with
    /// standard deviation 0.02 (transformers' `initializer_range`), the
    /// output projections of each block scaled down by √(2·layers) as GPT-2
    /// does.
    pub fn init(cfg: &LlamaConfig, rng: &mut impl Rng) -> Params {
        let mut p = Params::zeros(cfg);
        let a = 0.02f32 * 3f32.sqrt();
        let resid = 1.0 / (2.0 * cfg.num_hidden_layers as f32).sqrt();
        for (name, d) in p.names.iter().zip(p.data.iter_mut()) {
            if name.ends_with("norm.weight") {
                d.fill(1.0);
            } else if name.ends_with(".weight") {
                let s =
                    if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") { a * resid } else { a };
                d.iter_mut().for_each(|x| *x = (rng.gen::<f32>() * 2.0 - 1.0) * s);
            }
        }
        p
    }

    pub fn zeros_like(&self) -> Params {
        Params {
            names: self.names.clone(),
            shapes: self.shapes.clone(),
            data: self.data.iter().map(|d| vec![0f32; d.len()]).collect(),
        }
    }

    pub fn fill(&mut self, v: f32) {
        self.data.iter_mut().for_each(|d| d.fill(v));
    }

    pub fn count(&self) -> usize {
        self.data.iter().map(Vec::len).sum()
    }

    /// √(Σ x²) over every tensor.
    pub fn norm(&self) -> f64 {
        self.data.iter().flatten().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.index(name).map(|i| &self.data[i][..])
    }
}

/// Where each tensor of a model sits in its [`Params`].
#[derive(Clone, Debug)]
struct Layout {
    embed: usize,
    layers: Vec<LayerIdx>,
    norm: usize,
    /// `None` when the output head is the embedding (tied).
    lm_head: Option<usize>,
}

#[derive(Clone, Debug)]
struct LayerIdx {
    attn_norm: usize,
    ffn_norm: usize,
    lin: [usize; 7],
    bias: [Option<usize>; 3],
}

impl Layout {
    fn of(cfg: &LlamaConfig, p: &Params) -> Result<Layout, TrainError> {
        let want = Params::zeros(cfg);
        if want.names != p.names || want.shapes != p.shapes {
            let first = (0..want.names.len().max(p.names.len()))
                .find(|&i| want.names.get(i) != p.names.get(i) || want.shapes.get(i) != p.shapes.get(i))
                .unwrap_or(0);
            return Err(TrainError::Shape(format!(
                "parameter {first} should be {:?} {:?}, found {:?} {:?}",
                want.names.get(first),
                want.shapes.get(first),
                p.names.get(first),
                p.shapes.get(first)
            )));
        }
        let at = |n: String| p.index(&n).expect("names checked");
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let pre = format!("model.layers.{l}");
                let lin = LINEARS.map(|t| at(format!("{pre}.{t}.weight")));
                let bias = [Q, K, V].map(|t| p.index(&format!("{pre}.{}.bias", LINEARS[t])));
                LayerIdx {
                    attn_norm: at(format!("{pre}.input_layernorm.weight")),
                    ffn_norm: at(format!("{pre}.post_attention_layernorm.weight")),
                    lin,
                    bias,
                }
            })
            .collect();
        Ok(Layout {
            embed: at("model.embed_tokens.weight".into()),
            layers,
            norm: at("model.norm.weight".into()),
            lm_head: p.index("lm_head.weight"),
        })
    }
}

/// Low-rank adapters (LoRA, Hu et al. 2021) on every linear layer:
/// `W x + (α / r) · B A x` with `A` `[r, in]` and `B` `[out, r]`; `B` starts
/// at zero, so the adapted model starts as the base. Tensors are named as
/// PEFT names them (`base_model.model.<module>.lora_A.weight`).
#[derive(Clone, Debug)]
pub struct Lora {
    pub rank: usize,
    pub alpha: f32,
    pub params: Params,
    /// `[layer][linear]` → (index of A, index of B).
    idx: Vec<[(usize, usize); 7]>,
}

impl Lora {
    /// Adapters of rank `rank` on every linear layer of `cfg`; `A` uniform in
    /// ±1/√in (PEFT's Kaiming-uniform default), `B` zero.
    pub fn new(cfg: &LlamaConfig, rank: usize, alpha: f32, rng: &mut impl Rng) -> Result<Lora, TrainError> {
        if rank == 0 || rank > 1024 || !(alpha.is_finite() && alpha > 0.0) {
            return Err(TrainError::Input(format!("LoRA rank {rank} and alpha {alpha}: rank 1..=1024, alpha > 0")));
        }
        let mut lora = Lora::zeros(cfg, rank, alpha);
        for (name, d) in lora.params.names.iter().zip(lora.params.data.iter_mut()) {
            if name.ends_with("lora_A.weight") {
                let fan_in = d.len() / rank;
                let b = 1.0 / (fan_in as f32).sqrt();
                d.iter_mut().for_each(|x| *x = (rng.gen::<f32>() * 2.0 - 1.0) * b);
            }
        }
        Ok(lora)
    }

    /// All-zero adapters (to read a saved adapter into).
    pub fn zeros(cfg: &LlamaConfig, rank: usize, alpha: f32) -> Lora {
        let shapes = linear_shapes(cfg);
        let mut params = Params::empty();
        let mut idx = vec![];
        for l in 0..cfg.num_hidden_layers {
            let mut row = [(0, 0); 7];
            for (t, lin) in LINEARS.iter().enumerate() {
                let base = format!("base_model.model.model.layers.{l}.{lin}");
                let [out, inp] = shapes[t];
                params.push(format!("{base}.lora_A.weight"), vec![rank, inp]);
                params.push(format!("{base}.lora_B.weight"), vec![out, rank]);
                row[t] = (params.names.len() - 2, params.names.len() - 1);
            }
            idx.push(row);
        }
        Lora { rank, alpha, params, idx }
    }

    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// `adapter_config.json` as PEFT writes it.
    pub fn peft_config(&self, base: &str) -> serde_json::Value {
        serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "bias": "none",
            "target_modules": LINEARS.iter().map(|t| t.rsplit('.').next().unwrap_or(t)).collect::<Vec<_>>(),
        })
    }
}

/// What the forward pass of one layer keeps for the backward.
struct LayerTape {
    x: Vec<f32>,
    xn1: Vec<f32>,
    r1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<Vec<f32>>,
    att: Vec<f32>,
    x2: Vec<f32>,
    xn2: Vec<f32>,
    r2: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    hmid: Vec<f32>,
    /// `x Aᵀ` of each linear layer's adapter (LoRA only).
    xa: Vec<Vec<f32>>,
}

/// A forward pass over a batch of sequences, kept for [`Model::backward`].
pub struct Tape {
    /// Row ranges of each sequence in the stacked rows.
    pub spans: Vec<std::ops::Range<usize>>,
    /// Each row's token and position.
    tokens: Vec<u32>,
    pos: Vec<usize>,
    layers: Vec<LayerTape>,
    x_last: Vec<f32>,
    /// The rows whose next-token distribution was computed, and where.
    out_rows: Vec<usize>,
    slot: Vec<Option<usize>>,
    xf: Vec<f32>,
    rf: Vec<f32>,
    vocab: usize,
    /// `[out_rows, vocab]` log-probabilities of the next token.
    pub logp: Vec<f32>,
}

impl Tape {
    fn row(&self, r: usize) -> &[f32] {
        let s = self.slot[r].expect("the forward pass was asked for this row's logits");
        &self.logp[s * self.vocab..][..self.vocab]
    }

    /// The log-probability that row `r` gives the token at row `r + 1` of the
    /// same sequence (the next token).
    pub fn next_logp(&self, r: usize) -> f32 {
        self.row(r)[self.tokens[r + 1] as usize]
    }

    /// Row `r`'s log-probabilities over the vocabulary.
    pub fn logp_row(&self, r: usize) -> &[f32] {
        self.row(r)
    }

    /// The entropy (nats) of row `r`'s next-token distribution.
    pub fn entropy(&self, r: usize) -> f32 {
        -self.row(r).iter().map(|&l| l.exp() * l).sum::<f32>()
    }
}

/// A llama/qwen2 model the trainer can run forward and backward: all its
/// weights trainable, or frozen under LoRA adapters.
pub struct Model {
    pub cfg: LlamaConfig,
    pub params: Params,
    pub lora: Option<Lora>,
    layout: Layout,
    rope: Rope,
}

impl Model {
    pub fn new(cfg: LlamaConfig, params: Params) -> Result<Model, TrainError> {
        cfg.validate()?;
        let layout = Layout::of(&cfg, &params)?;
        let rope = Rope::new(RopeStyle::Halves, cfg.head_dim(), cfg.rope_theta as f32, None);
        Ok(Model { cfg, params, lora: None, layout, rope })
    }

    /// Freeze the weights and train `lora` instead.
    pub fn with_lora(mut self, lora: Lora) -> Result<Model, TrainError> {
        let want = Lora::zeros(&self.cfg, lora.rank, lora.alpha);
        if want.params.names != lora.params.names || want.params.shapes != lora.params.shapes {
            return Err(TrainError::Shape("the adapter does not fit this model".into()));
        }
        self.lora = Some(lora);
        Ok(self)
    }

    /// What the optimiser updates: the adapters under LoRA, else every weight.
    pub fn trainable(&self) -> &Params {
        self.lora.as_ref().map_or(&self.params, |l| &l.params)
    }

    pub fn trainable_mut(&mut self) -> &mut Params {
        match &mut self.lora {
            Some(l) => &mut l.params,
            None => &mut self.params,
        }
    }

    /// The weights with the adapters merged in (`W + (α/r) B A`), what the
    /// engine runs and `whale export` writes.
    pub fn merged(&self) -> Params {
        let mut p = self.params.clone();
        if let Some(lora) = &self.lora {
            let shapes = linear_shapes(&self.cfg);
            for (l, li) in self.layout.layers.iter().enumerate() {
                for (t, &[out, inp]) in shapes.iter().enumerate() {
                    let (ai, bi) = lora.idx[l][t];
                    let ba = ops::matmul(&lora.params.data[bi], out, lora.rank, &lora.params.data[ai], inp, 1);
                    for (w, d) in p.data[li.lin[t]].iter_mut().zip(&ba) {
                        *w += lora.scale() * d;
                    }
                }
            }
        }
        p
    }

    fn weight(&self, l: usize, t: usize) -> &[f32] {
        &self.params.data[self.layout.layers[l].lin[t]]
    }

    /// One linear layer of layer `l` on `x` (`[n, in]`): the output, and
    /// `x Aᵀ` when an adapter is on it.
    fn linear(&self, l: usize, t: usize, x: &[f32], n: usize, th: usize) -> (Vec<f32>, Vec<f32>) {
        let [out, inp] = linear_shapes(&self.cfg)[t];
        let mut y = ops::linear_fwd(x, n, self.weight(l, t), out, inp, th);
        if t <= V {
            if let Some(bi) = self.layout.layers[l].bias[t] {
                let b = &self.params.data[bi];
                y.chunks_exact_mut(out).for_each(|row| row.iter_mut().zip(b).for_each(|(a, c)| *a += c));
            }
        }
        let mut xa = vec![];
        if let Some(lora) = &self.lora {
            let (ai, bi) = lora.idx[l][t];
            xa = ops::linear_fwd(x, n, &lora.params.data[ai], lora.rank, inp, th);
            let d = ops::linear_fwd(&xa, n, &lora.params.data[bi], out, lora.rank, th);
            y.iter_mut().zip(&d).for_each(|(a, b)| *a += lora.scale() * b);
        }
        (y, xa)
    }

    /// Backward of [`Model::linear`]: gradients into `grads` (the weight
    /// and bias, or the adapter), returns `dx`.
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd(
        &self,
        l: usize,
        t: usize,
        x: &[f32],
        xa: &[f32],
        dy: &[f32],
        n: usize,
        grads: &mut Params,
        th: usize,
    ) -> Vec<f32> {
        let [out, inp] = linear_shapes(&self.cfg)[t];
        let li = &self.layout.layers[l];
        match &self.lora {
            None => {
                if t <= V {
                    if let Some(bi) = li.bias[t] {
                        for row in dy.chunks_exact(out) {
                            grads.data[bi].iter_mut().zip(row).for_each(|(a, b)| *a += b);
                        }
                    }
                }
                ops::linear_bwd(x, n, self.weight(l, t), out, inp, dy, &mut grads.data[li.lin[t]], th)
            }
            Some(lora) => {
                let (ai, bi) = lora.idx[l][t];
                let (r, s) = (lora.rank, lora.scale());
                let mut dx = ops::matmul(dy, n, out, self.weight(l, t), inp, th);
                let dyb = ops::matmul(dy, n, out, &lora.params.data[bi], r, th); // [n, r]
                let dxl = ops::matmul(&dyb, n, r, &lora.params.data[ai], inp, th);
                dx.iter_mut().zip(&dxl).for_each(|(a, b)| *a += s * b);
                let db = ops::matmul(&ops::transpose(dy, n, out), out, n, xa, r, th);
                grads.data[bi].iter_mut().zip(&db).for_each(|(a, b)| *a += s * b);
                let da = ops::matmul(&ops::transpose(&dyb, n, r), r, n, x, inp, th);
                grads.data[ai].iter_mut().zip(&da).for_each(|(a, b)| *a += s * b);
                dx
            }
        }
    }

    fn output_head(&self) -> &[f32] {
        &self.params.data[self.layout.lm_head.unwrap_or(self.layout.embed)]
    }

    /// Run `seqs` (each a whole sequence of token ids), stacking their rows
    /// for the products; every row's next-token log-probabilities are in
    /// the tape.
    pub fn forward(&self, seqs: &[&[u32]], threads: usize) -> Result<Tape, TrainError> {
        self.forward_rows(seqs, None, threads)
    }

    /// [`Model::forward`], computing the output head only for the rows where
    /// `need[row]` (the rows a loss reads; the head is most of a small real
    /// model's work).
    pub fn forward_rows(&self, seqs: &[&[u32]], need: Option<&[bool]>, threads: usize) -> Result<Tape, TrainError> {
        let c = &self.cfg;
        let (h, nh, nkv, hd, vocab) =
            (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim(), c.vocab_size);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let eps = c.rms_norm_eps as f32;
        let mut spans = Vec::with_capacity(seqs.len());
        let (mut tokens, mut pos) = (vec![], vec![]);
        for s in seqs {
            if s.len() > c.max_position_embeddings {
                return Err(TrainError::Input(format!(
                    "a sequence of {} tokens is longer than the model's {}",
                    s.len(),
                    c.max_position_embeddings
                )));
            }
            spans.push(tokens.len()..tokens.len() + s.len());
            for (i, &t) in s.iter().enumerate() {
                if t as usize >= vocab {
                    return Err(TrainError::Input(format!("token {t} is outside the vocabulary ({vocab})")));
                }
                tokens.push(t);
                pos.push(i);
            }
        }
        let n = tokens.len();
        let p = &self.params.data;
        let mut x = vec![0f32; n * h];
        for (row, &t) in x.chunks_exact_mut(h).zip(&tokens) {
            row.copy_from_slice(&p[self.layout.embed][t as usize * h..][..h]);
        }
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for (l, li) in self.layout.layers.iter().enumerate() {
            let (xn1, r1) = ops::rms_norm_fwd(&x, &p[li.attn_norm], eps);
            let mut xa = vec![vec![]; 7];
            let (mut q, a) = self.linear(l, Q, &xn1, n, threads);
            xa[Q] = a;
            let (mut k, a) = self.linear(l, K, &xn1, n, threads);
            xa[K] = a;
            let (v, a) = self.linear(l, V, &xn1, n, threads);
            xa[V] = a;
            ops::rope_fwd(&self.rope, &mut q, nh, hd, &pos);
            ops::rope_fwd(&self.rope, &mut k, nkv, hd, &pos);
            let mut att = vec![0f32; n * qd];
            let mut probs = Vec::with_capacity(spans.len());
            for sp in &spans {
                let (o, pr) = ops::attention_fwd(
                    &q[sp.start * qd..sp.end * qd],
                    &k[sp.start * kvd..sp.end * kvd],
                    &v[sp.start * kvd..sp.end * kvd],
                    sp.len(),
                    nh,
                    nkv,
                    hd,
                );
                att[sp.start * qd..sp.end * qd].copy_from_slice(&o);
                probs.push(pr);
            }
            let (o, a) = self.linear(l, O, &att, n, threads);
            xa[O] = a;
            let x2: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
            let (xn2, r2) = ops::rms_norm_fwd(&x2, &p[li.ffn_norm], eps);
            let (g, a) = self.linear(l, GATE, &xn2, n, threads);
            xa[GATE] = a;
            let (u, a) = self.linear(l, UP, &xn2, n, threads);
            xa[UP] = a;
            let hmid = ops::swiglu_fwd(&g, &u);
            let (d, a) = self.linear(l, DOWN, &hmid, n, threads);
            xa[DOWN] = a;
            let x3: Vec<f32> = x2.iter().zip(&d).map(|(a, b)| a + b).collect();
            layers.push(LayerTape { x, xn1, r1, q, k, v, probs, att, x2, xn2, r2, g, u, hmid, xa });
            x = x3;
        }
        let out_rows: Vec<usize> = (0..n).filter(|&r| need.is_none_or(|m| m[r])).collect();
        let mut slot = vec![None; n];
        let mut xo = Vec::with_capacity(out_rows.len() * h);
        for (s, &r) in out_rows.iter().enumerate() {
            slot[r] = Some(s);
            xo.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
        let (xf, rf) = ops::rms_norm_fwd(&xo, &p[self.layout.norm], eps);
        let logits = ops::linear_fwd(&xf, out_rows.len(), self.output_head(), vocab, h, threads);
        let logp = ops::log_softmax_rows(&logits, vocab);
        Ok(Tape { spans, tokens, pos, layers, x_last: x, out_rows, slot, xf, rf, vocab, logp })
    }

    /// Backward of a loss that depends on the log-probabilities of the next
    /// tokens: `dlogp[r]` is ∂loss/∂log p(token at r+1 | rows ..= r) (zero
    /// where a row has no next token or does not count; non-zero only on
    /// rows the forward computed). Adds the gradients of
    /// [`Model::trainable`] into `grads`.
    pub fn backward(&self, tape: &Tape, dlogp: &[f32], grads: &mut Params, threads: usize) {
        let c = &self.cfg;
        let (h, nh, nkv, hd, vocab) =
            (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim(), c.vocab_size);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let n = tape.tokens.len();
        let m = tape.out_rows.len();
        let full = self.lora.is_none();
        let p = &self.params.data;
        // ∂loss/∂logits_r = c_r (onehot(next) − softmax_r).
        let mut dlogits = vec![0f32; m * vocab];
        for (s, &r) in tape.out_rows.iter().enumerate() {
            let cr = dlogp[r];
            if cr == 0.0 {
                continue;
            }
            let row = &mut dlogits[s * vocab..][..vocab];
            for (d, &l) in row.iter_mut().zip(&tape.logp[s * vocab..][..vocab]) {
                *d = -cr * l.exp();
            }
            row[tape.tokens[r + 1] as usize] += cr;
        }
        let mut scratch_h = vec![0f32; h];
        let head = self.layout.lm_head.unwrap_or(self.layout.embed);
        let dxf = if full {
            ops::linear_bwd(&tape.xf, m, self.output_head(), vocab, h, &dlogits, &mut grads.data[head], threads)
        } else {
            ops::matmul(&dlogits, m, vocab, self.output_head(), h, threads)
        };
        let xo: Vec<f32> =
            tape.out_rows.iter().flat_map(|&r| tape.x_last[r * h..(r + 1) * h].iter().copied()).collect();
        let norm_dw = if full { &mut grads.data[self.layout.norm] } else { &mut scratch_h };
        let dxo = ops::rms_norm_bwd(&xo, &p[self.layout.norm], &tape.rf, &dxf, norm_dw);
        let mut dx = vec![0f32; n * h];
        for (s, &r) in tape.out_rows.iter().enumerate() {
            dx[r * h..(r + 1) * h].copy_from_slice(&dxo[s * h..(s + 1) * h]);
        }
        for l in (0..c.num_hidden_layers).rev() {
            let t = &tape.layers[l];
            let li = &self.layout.layers[l];
            // x3 = x2 + down(swiglu(gate(xn2), up(xn2)))
            let dh = self.linear_bwd(l, DOWN, &t.hmid, &t.xa[DOWN], &dx, n, grads, threads);
            let (dg, du) = ops::swiglu_bwd(&t.g, &t.u, &dh);
            let mut dxn2 = self.linear_bwd(l, GATE, &t.xn2, &t.xa[GATE], &dg, n, grads, threads);
            let part = self.linear_bwd(l, UP, &t.xn2, &t.xa[UP], &du, n, grads, threads);
            dxn2.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            let dw = if full { &mut grads.data[li.ffn_norm] } else { &mut scratch_h };
            let dx2n = ops::rms_norm_bwd(&t.x2, &p[li.ffn_norm], &t.r2, &dxn2, dw);
            let dx2: Vec<f32> = dx.iter().zip(&dx2n).map(|(a, b)| a + b).collect();
            // x2 = x + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1)))
            let datt = self.linear_bwd(l, O, &t.att, &t.xa[O], &dx2, n, grads, threads);
            let (mut dq, mut dk, mut dv) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
            for (sp, pr) in tape.spans.iter().zip(&t.probs) {
                let (a, b) = (sp.start, sp.end);
                let (q, k, v) = ops::attention_bwd(
                    &t.q[a * qd..b * qd],
                    &t.k[a * kvd..b * kvd],
                    &t.v[a * kvd..b * kvd],
                    pr,
                    &datt[a * qd..b * qd],
                    sp.len(),
                    nh,
                    nkv,
                    hd,
                );
                dq[a * qd..b * qd].copy_from_slice(&q);
                dk[a * kvd..b * kvd].copy_from_slice(&k);
                dv[a * kvd..b * kvd].copy_from_slice(&v);
            }
            ops::rope_bwd(&self.rope, &mut dq, nh, hd, &tape.pos);
            ops::rope_bwd(&self.rope, &mut dk, nkv, hd, &tape.pos);
            let mut dxn1 = self.linear_bwd(l, Q, &t.xn1, &t.xa[Q], &dq, n, grads, threads);
            for (ti, dd) in [(K, &dk), (V, &dv)] {
                let part = self.linear_bwd(l, ti, &t.xn1, &t.xa[ti], dd, n, grads, threads);
                dxn1.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            }
            let dw = if full { &mut grads.data[li.attn_norm] } else { &mut scratch_h };
            let dxn = ops::rms_norm_bwd(&t.x, &p[li.attn_norm], &t.r1, &dxn1, dw);
            dx = dx2.iter().zip(&dxn).map(|(a, b)| a + b).collect();
        }
        if full {
            // Embedding: scatter-add each row's gradient into its token's row.
            for (row, &tok) in dx.chunks_exact(h).zip(&tape.tokens) {
                let e = &mut grads.data[self.layout.embed][tok as usize * h..][..h];
                e.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tests::{check_grad, randn};
    use rand::SeedableRng;

    /// Two sequences of different lengths; every row but the last of each
    /// counts with a random weight, and one row is left out of the output
    /// head entirely (as the loops do with prompt rows).
    fn case(rng: &mut impl Rng) -> (Vec<Vec<u32>>, Vec<f32>, Vec<bool>) {
        let seqs: Vec<Vec<u32>> = vec![vec![0, 3, 5, 7, 2], vec![0, 9, 4]];
        let mut dlogp = randn(rng, 8, 1.0);
        dlogp[4] = 0.0; // last row of each sequence has no next token
        dlogp[7] = 0.0;
        dlogp[0] = 0.0;
        let need: Vec<bool> = dlogp.iter().map(|&c| c != 0.0).collect();
        (seqs, dlogp, need)
    }

    fn loss(m: &Model, seqs: &[Vec<u32>], dlogp: &[f32], need: &[bool]) -> f64 {
        let refs: Vec<&[u32]> = seqs.iter().map(|s| &s[..]).collect();
        let t = m.forward_rows(&refs, Some(need), 1).unwrap();
        (0..8).filter(|&r| dlogp[r] != 0.0).map(|r| dlogp[r] as f64 * t.next_logp(r) as f64).sum()
    }

    /// Finite differences on up to 12 coordinates of every trainable tensor.
    fn check_model(model: Model, rng: &mut impl Rng) {
        let (seqs, dlogp, need) = case(rng);
        let refs: Vec<&[u32]> = seqs.iter().map(|s| &s[..]).collect();
        let tape = model.forward_rows(&refs, Some(&need), 1).unwrap();
        let mut grads = model.trainable().zeros_like();
        model.backward(&tape, &dlogp, &mut grads, 1);
        let trainable = model.trainable().clone();
        let model = std::cell::RefCell::new(model);
        for ti in 0..trainable.data.len() {
            let len = trainable.data[ti].len();
            let idx: Vec<usize> = (0..12.min(len)).map(|i| i * len / 12.min(len)).collect();
            let x: Vec<f32> = idx.iter().map(|&i| trainable.data[ti][i]).collect();
            let g: Vec<f32> = idx.iter().map(|&i| grads.data[ti][i]).collect();
            check_grad(&trainable.names[ti], &x, &g, |xs| {
                let mut m = model.borrow_mut();
                for (&i, &v) in idx.iter().zip(xs) {
                    m.trainable_mut().data[ti][i] = v;
                }
                let l = loss(&m, &seqs, &dlogp, &need);
                m.trainable_mut().data[ti] = trainable.data[ti].clone();
                l
            });
        }
        // The gradient is not trivially zero anywhere.
        for (name, d) in grads.names.iter().zip(&grads.data) {
            assert!(d.iter().any(|&x| x != 0.0), "{name} has no gradient");
        }
    }

    /// Larger weights than the init, so every path carries signal; the
    /// embedding at unit scale, so that a finite-difference step of 1e-2 is
    /// small next to the rows RMSNorm divides by.
    fn strong(cfg: &LlamaConfig, rng: &mut impl Rng) -> Params {
        let mut params = Params::init(cfg, rng);
        for (name, d) in params.names.iter().zip(params.data.iter_mut()) {
            if name.ends_with("bias") {
                d.iter_mut().for_each(|x| *x = rng.gen::<f32>() - 0.5);
                continue;
            }
            let s = if name.contains("embed") { 30.0 } else { 4.0 };
            d.iter_mut().for_each(|x| *x *= s);
        }
        params
    }

    fn small(model_type: &str, tied: bool) -> LlamaConfig {
        let mut cfg = LlamaConfig::tiny(11, 16, 2, 0, 1);
        cfg.model_type = model_type.into();
        cfg.num_attention_heads = 4;
        cfg.num_key_value_heads = 2;
        cfg.intermediate_size = 24;
        cfg.tie_word_embeddings = tied;
        cfg
    }

    /// A whole 2-layer llama (grouped KV heads, untied head) against finite
    /// differences of a weighted next-token loss.
    #[test]
    fn whole_model_backward_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cfg = small("llama", false);
        let params = strong(&cfg, &mut rng);
        check_model(Model::new(cfg, params).unwrap(), &mut rng);
    }

    /// Qwen2's Q/K/V biases and a tied output head (the embedding gets both
    /// gradients).
    #[test]
    fn qwen2_biases_and_tied_head_backward_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let cfg = small("qwen2", true);
        let params = strong(&cfg, &mut rng);
        assert!(params.index("lm_head.weight").is_none());
        assert!(params.index("model.layers.1.self_attn.v_proj.bias").is_some());
        check_model(Model::new(cfg, params).unwrap(), &mut rng);
    }

    /// LoRA: only the adapters train, their gradients match finite
    /// differences (B is made non-zero so A's gradient is too), and merging
    /// them into the weights gives the same outputs as running them beside.
    #[test]
    fn lora_backward_matches_finite_differences_and_merges() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let cfg = small("llama", true);
        let params = strong(&cfg, &mut rng);
        let mut lora = Lora::new(&cfg, 3, 6.0, &mut rng).unwrap();
        for (name, d) in lora.params.names.iter().zip(lora.params.data.iter_mut()) {
            if name.ends_with("lora_B.weight") {
                assert!(d.iter().all(|&x| x == 0.0), "B starts at zero");
                d.iter_mut().for_each(|x| *x = (rng.gen::<f32>() - 0.5) * 0.2);
            }
        }
        let model = Model::new(cfg.clone(), params).unwrap().with_lora(lora).unwrap();
        assert_eq!(model.trainable().names.len(), 2 * 7 * 2);
        assert!(model.trainable().names[0].starts_with("base_model.model.model.layers.0.self_attn.q_proj.lora_A"));
        let (seqs, _, _) = case(&mut rng);
        let refs: Vec<&[u32]> = seqs.iter().map(|s| &s[..]).collect();
        let with = model.forward(&refs, 1).unwrap();
        let merged = Model::new(cfg, model.merged()).unwrap().forward(&refs, 1).unwrap();
        let d = with.logp.iter().zip(&merged.logp).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d < 1e-4, "merged and unmerged differ by {d}");
        check_model(model, &mut rng);
    }
}
