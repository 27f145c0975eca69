//! A llama decoder the trainer can differentiate: its config (Hugging Face
//! `config.json` names, so the engine loads a checkpoint as any llama
//! model), its parameters in Hugging Face's tensor names and shapes, a
//! forward pass that keeps what the backward needs (a [`Tape`]), and the
//! backward pass.
//!
//! Order: config, parameters, forward, backward.

use rand::Rng;
use serde::{Deserialize, Serialize};
use whale_engine::models::ops::{Rope, RopeStyle};

use crate::ops;
use crate::TrainError;

/// `config.json` of a llama model, as transformers writes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LlamaConfig {
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub hidden_act: String,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
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
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 256,
            tie_word_embeddings: false,
            hidden_act: "silu".into(),
            bos_token_id: bos,
            eos_token_id: eos,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// What the trainer can differentiate: a llama block with SiLU, whole
    /// heads, untied output.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Unsupported(m));
        if self.model_type != "llama" {
            return bad(format!("model_type {:?}: the trainer differentiates llama models", self.model_type));
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act {:?}: only silu", self.hidden_act));
        }
        let (h, nh, nkv) = (self.hidden_size, self.num_attention_heads, self.num_key_value_heads);
        if h == 0
            || nh == 0
            || nkv == 0
            || !h.is_multiple_of(nh)
            || !nh.is_multiple_of(nkv)
            || !(h / nh).is_multiple_of(2)
        {
            return bad(format!("hidden {h}, {nh} heads, {nkv} KV heads do not make even, whole heads"));
        }
        if self.vocab_size == 0 || self.intermediate_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocabulary, intermediate size and layers must be non-zero".into());
        }
        if self.tie_word_embeddings {
            return bad("tied embeddings are not supported by the trainer".into());
        }
        Ok(())
    }
}

/// Tensors of one layer, in the order [`Params`] holds them.
const PER_LAYER: usize = 9;
const ATTN_NORM: usize = 0;
const WQ: usize = 1;
const WK: usize = 2;
const WV: usize = 3;
const WO: usize = 4;
const FFN_NORM: usize = 5;
const WG: usize = 6;
const WU: usize = 7;
const WD: usize = 8;

/// Named f32 tensors: a model's parameters, or their gradients, or an
/// optimiser's moments (same names and shapes).
#[derive(Clone, Debug)]
pub struct Params {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub data: Vec<Vec<f32>>,
}

impl Params {
    /// The tensors of `cfg`, named as transformers names them, all zero.
    pub fn zeros(cfg: &LlamaConfig) -> Params {
        let (h, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let kv = cfg.num_key_value_heads * cfg.head_dim();
        let mut p = Params { names: vec![], shapes: vec![], data: vec![] };
        let mut add = |name: String, shape: Vec<usize>| {
            p.data.push(vec![0f32; shape.iter().product()]);
            p.names.push(name);
            p.shapes.push(shape);
        };
        add("model.embed_tokens.weight".into(), vec![v, h]);
        for l in 0..cfg.num_hidden_layers {
            let pre = format!("model.layers.{l}");
            add(format!("{pre}.input_layernorm.weight"), vec![h]);
            add(format!("{pre}.self_attn.q_proj.weight"), vec![h, h]);
            add(format!("{pre}.self_attn.k_proj.weight"), vec![kv, h]);
            add(format!("{pre}.self_attn.v_proj.weight"), vec![kv, h]);
            add(format!("{pre}.self_attn.o_proj.weight"), vec![h, h]);
            add(format!("{pre}.post_attention_layernorm.weight"), vec![h]);
            add(format!("{pre}.mlp.gate_proj.weight"), vec![ff, h]);
            add(format!("{pre}.mlp.up_proj.weight"), vec![ff, h]);
            add(format!("{pre}.mlp.down_proj.weight"), vec![h, ff]);
        }
        add("model.norm.weight".into(), vec![h]);
        add("lm_head.weight".into(), vec![v, h]);
        p
    }

    /// Random initial weights: norms 1, matrices uniform with standard
    /// deviation 0.02 (transformers' `initializer_range`), the output
    /// projections of each block scaled down by √(2·layers) as GPT-2 does.
    pub fn init(cfg: &LlamaConfig, rng: &mut impl Rng) -> Params {
        let mut p = Params::zeros(cfg);
        let a = 0.02f32 * 3f32.sqrt();
        let resid = 1.0 / (2.0 * cfg.num_hidden_layers as f32).sqrt();
        for (name, d) in p.names.iter().zip(p.data.iter_mut()) {
            if name.ends_with("norm.weight") || name.ends_with("layernorm.weight") {
                d.fill(1.0);
                continue;
            }
            let s = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") { a * resid } else { a };
            d.iter_mut().for_each(|x| *x = (rng.gen::<f32>() * 2.0 - 1.0) * s);
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

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.names.iter().position(|n| n == name).map(|i| &self.data[i][..])
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
    xf: Vec<f32>,
    rf: Vec<f32>,
    /// `[rows, vocab]` log-probabilities of the next token.
    pub logp: Vec<f32>,
}

impl Tape {
    /// The log-probability that row `r` gives the token at row `r + 1` of the
    /// same sequence (the next token), for `r` in `span` except its last row.
    pub fn next_logp(&self, r: usize) -> f32 {
        let v = self.logp.len() / self.tokens.len();
        self.logp[r * v + self.tokens[r + 1] as usize]
    }

    /// The entropy (nats) of row `r`'s next-token distribution.
    pub fn entropy(&self, r: usize) -> f32 {
        let v = self.logp.len() / self.tokens.len();
        -self.logp[r * v..][..v].iter().map(|&l| l.exp() * l).sum::<f32>()
    }
}

/// A llama model the trainer can run forward and backward.
pub struct Model {
    pub cfg: LlamaConfig,
    pub params: Params,
    rope: Rope,
}

impl Model {
    pub fn new(cfg: LlamaConfig, params: Params) -> Result<Model, TrainError> {
        cfg.validate()?;
        let want = Params::zeros(&cfg);
        for (i, name) in want.names.iter().enumerate() {
            if params.names.get(i) != Some(name) || params.shapes[i] != want.shapes[i] {
                return Err(TrainError::Shape(format!(
                    "parameter {i} should be {name} {:?}, found {:?} {:?}",
                    want.shapes[i],
                    params.names.get(i),
                    params.shapes.get(i)
                )));
            }
        }
        let rope = Rope::new(RopeStyle::Halves, cfg.head_dim(), cfg.rope_theta as f32, None);
        Ok(Model { cfg, params, rope })
    }

    /// Run `seqs` (each a whole sequence of token ids), stacking their rows
    /// for the products. Every row's next-token log-probabilities are in
    /// `tape.logp`.
    pub fn forward(&self, seqs: &[&[u32]], threads: usize) -> Result<Tape, TrainError> {
        let c = &self.cfg;
        let (h, nh, nkv, hd, ff, vocab) = (
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim(),
            c.intermediate_size,
            c.vocab_size,
        );
        let kvd = nkv * hd;
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
            row.copy_from_slice(&p[0][t as usize * h..][..h]);
        }
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let w = |j: usize| &p[1 + l * PER_LAYER + j][..];
            let (xn1, r1) = ops::rms_norm_fwd(&x, w(ATTN_NORM), eps);
            let mut q = ops::linear_fwd(&xn1, n, w(WQ), h, h, threads);
            let mut k = ops::linear_fwd(&xn1, n, w(WK), kvd, h, threads);
            let v = ops::linear_fwd(&xn1, n, w(WV), kvd, h, threads);
            ops::rope_fwd(&self.rope, &mut q, nh, hd, &pos);
            ops::rope_fwd(&self.rope, &mut k, nkv, hd, &pos);
            let mut att = vec![0f32; n * h];
            let mut probs = Vec::with_capacity(spans.len());
            for sp in &spans {
                let t = sp.len();
                let (o, pr) = ops::attention_fwd(
                    &q[sp.start * h..sp.end * h],
                    &k[sp.start * kvd..sp.end * kvd],
                    &v[sp.start * kvd..sp.end * kvd],
                    t,
                    nh,
                    nkv,
                    hd,
                );
                att[sp.start * h..sp.end * h].copy_from_slice(&o);
                probs.push(pr);
            }
            let o = ops::linear_fwd(&att, n, w(WO), h, h, threads);
            let x2: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
            let (xn2, r2) = ops::rms_norm_fwd(&x2, w(FFN_NORM), eps);
            let g = ops::linear_fwd(&xn2, n, w(WG), ff, h, threads);
            let u = ops::linear_fwd(&xn2, n, w(WU), ff, h, threads);
            let hmid = ops::swiglu_fwd(&g, &u);
            let d = ops::linear_fwd(&hmid, n, w(WD), h, ff, threads);
            let x3: Vec<f32> = x2.iter().zip(&d).map(|(a, b)| a + b).collect();
            layers.push(LayerTape { x, xn1, r1, q, k, v, probs, att, x2, xn2, r2, g, u, hmid });
            x = x3;
        }
        let nl = c.num_hidden_layers;
        let (xf, rf) = ops::rms_norm_fwd(&x, &p[1 + nl * PER_LAYER], eps);
        let logits = ops::linear_fwd(&xf, n, &p[2 + nl * PER_LAYER], vocab, h, threads);
        let logp = ops::log_softmax_rows(&logits, vocab);
        Ok(Tape { spans, tokens, pos, layers, x_last: x, xf, rf, logp })
    }

    /// Backward of a loss that depends on the log-probabilities of the next
    /// tokens: `dlogp[r]` is ∂loss/∂log p(token at r+1 | rows ..= r) (zero
    /// where a row has no next token or does not count). Adds the gradients
    /// into `grads`.
    pub fn backward(&self, tape: &Tape, dlogp: &[f32], grads: &mut Params, threads: usize) {
        let c = &self.cfg;
        let (h, nh, nkv, hd, ff, vocab) = (
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim(),
            c.intermediate_size,
            c.vocab_size,
        );
        let kvd = nkv * hd;
        let nl = c.num_hidden_layers;
        let n = tape.tokens.len();
        let p = &self.params.data;
        // ∂loss/∂logits_r = c_r (onehot(next) − softmax_r).
        let mut dlogits = vec![0f32; n * vocab];
        for r in 0..n {
            let cr = dlogp[r];
            if cr == 0.0 {
                continue;
            }
            let row = &mut dlogits[r * vocab..][..vocab];
            for (d, &l) in row.iter_mut().zip(&tape.logp[r * vocab..][..vocab]) {
                *d = -cr * l.exp();
            }
            row[tape.tokens[r + 1] as usize] += cr;
        }
        let dxf = ops::linear_bwd(
            &tape.xf,
            n,
            &p[2 + nl * PER_LAYER],
            vocab,
            h,
            &dlogits,
            &mut grads.data[2 + nl * PER_LAYER],
            threads,
        );
        let mut dx = ops::rms_norm_bwd(
            &tape.x_last,
            &p[1 + nl * PER_LAYER],
            &tape.rf,
            &dxf,
            &mut grads.data[1 + nl * PER_LAYER],
        );
        for l in (0..nl).rev() {
            let t = &tape.layers[l];
            let base = 1 + l * PER_LAYER;
            let w = |j: usize| &p[base + j][..];
            let gd = &mut grads.data;
            // x3 = x2 + down(swiglu(gate(xn2), up(xn2)))
            let dh = ops::linear_bwd(&t.hmid, n, w(WD), h, ff, &dx, &mut gd[base + WD], threads);
            let (dg, du) = ops::swiglu_bwd(&t.g, &t.u, &dh);
            let mut dxn2 = ops::linear_bwd(&t.xn2, n, w(WG), ff, h, &dg, &mut gd[base + WG], threads);
            let dxn2u = ops::linear_bwd(&t.xn2, n, w(WU), ff, h, &du, &mut gd[base + WU], threads);
            dxn2.iter_mut().zip(&dxn2u).for_each(|(a, b)| *a += b);
            let dx2n = ops::rms_norm_bwd(&t.x2, w(FFN_NORM), &t.r2, &dxn2, &mut gd[base + FFN_NORM]);
            let dx2: Vec<f32> = dx.iter().zip(&dx2n).map(|(a, b)| a + b).collect();
            // x2 = x + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1)))
            let datt = ops::linear_bwd(&t.att, n, w(WO), h, h, &dx2, &mut gd[base + WO], threads);
            let (mut dq, mut dk, mut dv) = (vec![0f32; n * h], vec![0f32; n * kvd], vec![0f32; n * kvd]);
            for (sp, pr) in tape.spans.iter().zip(&t.probs) {
                let (a, b) = (sp.start, sp.end);
                let (q, k, v) = ops::attention_bwd(
                    &t.q[a * h..b * h],
                    &t.k[a * kvd..b * kvd],
                    &t.v[a * kvd..b * kvd],
                    pr,
                    &datt[a * h..b * h],
                    sp.len(),
                    nh,
                    nkv,
                    hd,
                );
                dq[a * h..b * h].copy_from_slice(&q);
                dk[a * kvd..b * kvd].copy_from_slice(&k);
                dv[a * kvd..b * kvd].copy_from_slice(&v);
            }
            ops::rope_bwd(&self.rope, &mut dq, nh, hd, &tape.pos);
            ops::rope_bwd(&self.rope, &mut dk, nkv, hd, &tape.pos);
            let mut dxn1 = ops::linear_bwd(&t.xn1, n, w(WQ), h, h, &dq, &mut gd[base + WQ], threads);
            for (wi, dd) in [(WK, &dk), (WV, &dv)] {
                let part = ops::linear_bwd(&t.xn1, n, w(wi), kvd, h, dd, &mut gd[base + wi], threads);
                dxn1.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            }
            let dxn = ops::rms_norm_bwd(&t.x, w(ATTN_NORM), &t.r1, &dxn1, &mut gd[base + ATTN_NORM]);
            dx = dx2.iter().zip(&dxn).map(|(a, b)| a + b).collect();
        }
        // Embedding: scatter-add each row's gradient into its token's row.
        for (row, &tok) in dx.chunks_exact(h).zip(&tape.tokens) {
            let e = &mut grads.data[0][tok as usize * h..][..h];
            e.iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tests::{check_grad, randn};
    use rand::SeedableRng;

    /// A whole 2-layer model (grouped KV heads, two sequences of different
    /// lengths) against finite differences of a weighted next-token loss, on
    /// a sample of coordinates of every tensor.
    #[test]
    fn whole_model_backward_matches_finite_differences() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut cfg = LlamaConfig::tiny(11, 16, 2, 0, 1);
        cfg.num_attention_heads = 4;
        cfg.num_key_value_heads = 2;
        cfg.intermediate_size = 24;
        let mut params = Params::init(&cfg, &mut rng);
        // Larger weights than the init, so every path carries signal; the
        // embedding at unit scale, so that a finite-difference step of 1e-2
        // is small next to the rows RMSNorm divides by.
        for (name, d) in params.names.iter().zip(params.data.iter_mut()) {
            let s = if name.contains("embed") { 30.0 } else { 4.0 };
            d.iter_mut().for_each(|x| *x *= s);
        }
        let seqs: Vec<Vec<u32>> = vec![vec![0, 3, 5, 7, 2], vec![0, 9, 4]];
        let refs: Vec<&[u32]> = seqs.iter().map(|s| &s[..]).collect();
        let coef = randn(&mut rng, 8, 1.0);
        let mut dlogp = coef.clone();
        dlogp[4] = 0.0; // last row of each sequence has no next token
        dlogp[7] = 0.0;
        let loss = |m: &Model| -> f64 {
            let t = m.forward(&refs, 1).unwrap();
            (0..8).filter(|&r| dlogp[r] != 0.0).map(|r| dlogp[r] as f64 * t.next_logp(r) as f64).sum()
        };
        let model = Model::new(cfg.clone(), params.clone()).unwrap();
        let tape = model.forward(&refs, 1).unwrap();
        let mut grads = params.zeros_like();
        model.backward(&tape, &dlogp, &mut grads, 1);
        for ti in 0..params.data.len() {
            // Up to 12 coordinates of each tensor, spread over it.
            let len = params.data[ti].len();
            let idx: Vec<usize> = (0..12.min(len)).map(|i| i * len / 12.min(len)).collect();
            let x: Vec<f32> = idx.iter().map(|&i| params.data[ti][i]).collect();
            let g: Vec<f32> = idx.iter().map(|&i| grads.data[ti][i]).collect();
            check_grad(&params.names[ti], &x, &g, |xs| {
                let mut p = params.clone();
                for (&i, &v) in idx.iter().zip(xs) {
                    p.data[ti][i] = v;
                }
                loss(&Model::new(cfg.clone(), p).unwrap())
            });
        }
        // The gradient is not trivially zero anywhere.
        assert!(grads.data.iter().all(|d| d.iter().any(|&x| x != 0.0)));
        let _ = &mut params;
    }
}
