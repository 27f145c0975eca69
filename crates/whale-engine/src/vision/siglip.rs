//! Understanding: Janus's SigLIP vision encoder and the MLP aligner.
//!
//! `[3, 384, 384]` pixels → 16×16 patches embedded by a strided convolution
//! (576 rows) plus learned positions → pre-norm transformer layers (full
//! attention, GELU MLP) → a final LayerNorm → the aligner (linear, then
//! GELU and linear `depth − 1` times) → 576 rows of the language model's
//! width.

use serde::Deserialize;

use crate::formats::weights::WeightStore;
use crate::models::Linear;
use crate::vision::nn::{self, Conv2d, LayerNorm};
use crate::vision::VisionError;

/// `vision_config` of a Janus `config.json`, with transformers' names.
#[derive(Clone, Debug, Deserialize)]
pub struct VisionConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    #[serde(default)]
    pub use_qk_norm: bool,
    #[serde(default = "d_depth")]
    pub depth: usize,
}

// transformers' JanusVisionConfig defaults (Janus-Pro-1B's values).
fn d_hidden() -> usize {
    1024
}
fn d_layers() -> usize {
    24
}
fn d_heads() -> usize {
    16
}
fn d_channels() -> usize {
    3
}
fn d_image() -> usize {
    384
}
fn d_patch() -> usize {
    16
}
fn d_act() -> String {
    "gelu".into()
}
fn d_eps() -> f64 {
    1e-6
}
fn d_ratio() -> f64 {
    4.0
}
fn d_proj() -> usize {
    2048
}
fn d_depth() -> usize {
    2
}

struct Layer {
    ln1: LayerNorm,
    q: Linear,    // [hidden, hidden]
    k: Linear,    // [hidden, hidden]
    v: Linear,    // [hidden, hidden]
    proj: Linear, // [hidden, hidden]
    ln2: LayerNorm,
    fc1: Linear, // [mlp, hidden]
    fc2: Linear, // [hidden, mlp]
}

/// The vision encoder and its aligner.
pub struct VisionEncoder {
    pub cfg: VisionConfig,
    patch: Conv2d,       // [hidden, 3, patch, patch], stride patch
    positions: Vec<f32>, // [patches, hidden]
    layers: Vec<Layer>,
    post_ln: LayerNorm,
    aligner: Vec<Linear>, // fc1 [proj, hidden], then [proj, proj] × (depth − 1)
}

impl VisionEncoder {
    pub fn load(store: &WeightStore, cfg: VisionConfig, text_hidden: usize) -> Result<VisionEncoder, VisionError> {
        let c = &cfg;
        if c.hidden_act != "gelu" {
            return Err(VisionError::Config(format!(
                "vision hidden_act {:?} is not supported (only \"gelu\")",
                c.hidden_act
            )));
        }
        if c.use_qk_norm {
            return Err(VisionError::Config("vision use_qk_norm is not supported".into()));
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(VisionError::Config(format!(
                "vision hidden_size {} is not a multiple of its {} heads",
                c.hidden_size, c.num_attention_heads
            )));
        }
        if c.patch_size == 0 || !c.image_size.is_multiple_of(c.patch_size) || c.image_size > 4096 {
            return Err(VisionError::Config(format!(
                "vision image_size {} with patch_size {}",
                c.image_size, c.patch_size
            )));
        }
        if c.projection_dim != text_hidden {
            return Err(VisionError::Config(format!(
                "the aligner's projection_dim {} differs from the language model's hidden_size {text_hidden}",
                c.projection_dim
            )));
        }
        let h = c.hidden_size;
        let mlp = (h as f64 * c.mlp_ratio) as usize;
        let eps = c.layer_norm_eps as f32;
        let pre = "model.vision_model";
        let patches = (c.image_size / c.patch_size).pow(2);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = format!("{pre}.encoder.layers.{i}");
            layers.push(Layer {
                ln1: LayerNorm::load(store, &format!("{l}.layer_norm1"), h, eps)?,
                q: nn::linear(store, &format!("{l}.self_attn.q_proj"), h, h)?,
                k: nn::linear(store, &format!("{l}.self_attn.k_proj"), h, h)?,
                v: nn::linear(store, &format!("{l}.self_attn.v_proj"), h, h)?,
                proj: nn::linear(store, &format!("{l}.self_attn.projection_layer"), h, h)?,
                ln2: LayerNorm::load(store, &format!("{l}.layer_norm2"), h, eps)?,
                fc1: nn::linear(store, &format!("{l}.mlp.fc1"), mlp, h)?,
                fc2: nn::linear(store, &format!("{l}.mlp.fc2"), h, mlp)?,
            });
        }
        let mut aligner = vec![nn::linear(store, "model.aligner.fc1", c.projection_dim, h)?];
        for i in 1..c.depth {
            let p = format!("model.aligner.hidden_layers.{}", i - 1);
            aligner.push(nn::linear(store, &p, c.projection_dim, c.projection_dim)?);
        }
        Ok(VisionEncoder {
            patch: Conv2d::load(
                store,
                &format!("{pre}.embeddings.patch_embedding"),
                c.num_channels,
                h,
                c.patch_size,
                c.patch_size,
                (0, 0),
            )?,
            positions: store
                .get(&nn::hf(&format!("{pre}.embeddings.position_embedding"), "weight"), &[patches, h])?
                .to_f32()?,
            layers,
            post_ln: LayerNorm::load(store, &format!("{pre}.post_layernorm"), h, eps)?,
            aligner,
            cfg,
        })
    }

    /// Rows an image becomes (576 for Janus).
    pub fn n_patches(&self) -> usize {
        (self.cfg.image_size / self.cfg.patch_size).pow(2)
    }

    /// The encoder: `pixels` `[3, size, size]` (channel-first, as the
    /// processor makes them) → `[patches, hidden]` after the final norm.
    pub fn encode(&self, pixels: &[f32], threads: usize) -> Result<Vec<f32>, VisionError> {
        let (s, ch, h) = (self.cfg.image_size, self.cfg.num_channels, self.cfg.hidden_size);
        if pixels.len() != ch * s * s {
            return Err(VisionError::Request(format!("{} pixel values given, {ch}×{s}×{s} expected", pixels.len())));
        }
        // Channel-first → channel-last for the patch convolution.
        let mut hwc = vec![0f32; s * s * ch];
        for c in 0..ch {
            for (p, &v) in pixels[c * s * s..(c + 1) * s * s].iter().enumerate() {
                hwc[p * ch + c] = v;
            }
        }
        let (mut x, _, _) = self.patch.forward(&hwc, s, s, threads); // [patches, hidden]
        nn_add(&mut x, &self.positions);
        let n = self.n_patches();
        let heads = self.cfg.num_attention_heads;
        let d = h / heads;
        for l in &self.layers {
            let mut y = x.clone();
            l.ln1.forward(&mut y);
            let (q, k, v) = (l.q.forward(&y, n, threads), l.k.forward(&y, n, threads), l.v.forward(&y, n, threads));
            let a = nn::full_attention(&q, &k, &v, n, heads, d, threads);
            nn_add(&mut x, &l.proj.forward(&a, n, threads));
            let mut y = x.clone();
            l.ln2.forward(&mut y);
            let mut m = l.fc1.forward(&y, n, threads);
            nn::gelu(&mut m, threads);
            nn_add(&mut x, &l.fc2.forward(&m, n, threads));
        }
        self.post_ln.forward(&mut x);
        Ok(x)
    }

    /// The aligner: `[patches, hidden]` → `[patches, text hidden]`.
    pub fn align(&self, x: &[f32], threads: usize) -> Vec<f32> {
        let n = x.len() / self.cfg.hidden_size;
        let mut y = self.aligner[0].forward(x, n, threads);
        for lin in &self.aligner[1..] {
            nn::gelu(&mut y, threads);
            y = lin.forward(&y, n, threads);
        }
        y
    }
}

fn nn_add(x: &mut [f32], y: &[f32]) {
    crate::models::ops::add_assign(x, y)
}
