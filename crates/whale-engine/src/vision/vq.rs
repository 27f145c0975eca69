//! Generation's last step: Janus's VQ decoder, image codes → pixels.
//!
//! Codes `[24·24]` → codebook rows, L2-normalised (`[24, 24, embed_dim]`) →
//! `post_quant_conv` (1×1) → `conv_in` (3×3) → a middle block (ResNet,
//! attention, ResNet) → one level per channel multiplier, from the coarsest:
//! `num_res_blocks + 1` ResNet blocks (with attention after each at the
//! coarsest level), then 2× nearest upsampling and a 3×3 convolution except
//! after the last → GroupNorm, SiLU, `conv_out` → `[384, 384, 3]` in about
//! [−1, 1]. Every map is channel-last (see [`crate::vision::nn`]).

use serde::Deserialize;

use crate::formats::weights::WeightStore;
use crate::vision::nn::{self, Conv2d, GroupNorm};
use crate::vision::VisionError;

/// `vq_config` of a Janus `config.json`, with transformers' names.
#[derive(Clone, Debug, Deserialize)]
pub struct VqConfig {
    #[serde(default = "d_embed")]
    pub embed_dim: usize,
    #[serde(default = "d_codes")]
    pub num_embeddings: usize,
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    #[serde(default = "d_base")]
    pub base_channels: usize,
    #[serde(default = "d_mult")]
    pub channel_multiplier: Vec<usize>,
    #[serde(default = "d_blocks")]
    pub num_res_blocks: usize,
    #[serde(default = "d_out")]
    pub out_channels: usize,
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_proj")]
    pub image_token_embed_dim: usize,
}

// transformers' JanusVQVAEConfig defaults (Janus-Pro's values).
fn d_embed() -> usize {
    8
}
fn d_codes() -> usize {
    16384
}
fn d_latent() -> usize {
    256
}
fn d_base() -> usize {
    128
}
fn d_mult() -> Vec<usize> {
    vec![1, 1, 2, 2, 4]
}
fn d_blocks() -> usize {
    2
}
fn d_out() -> usize {
    3
}
fn d_proj() -> usize {
    2048
}
fn d_layers() -> usize {
    2
}
fn d_act() -> String {
    "gelu".into()
}

struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>, // 1×1 when the channel count changes
}

impl ResBlock {
    fn load(store: &WeightStore, p: &str, c_in: usize, c_out: usize) -> Result<ResBlock, VisionError> {
        Ok(ResBlock {
            norm1: GroupNorm::load(store, &format!("{p}.norm1"), c_in)?,
            conv1: Conv2d::load(store, &format!("{p}.conv1"), c_in, c_out, 3, 1, (1, 1))?,
            norm2: GroupNorm::load(store, &format!("{p}.norm2"), c_out)?,
            conv2: Conv2d::load(store, &format!("{p}.conv2"), c_out, c_out, 3, 1, (1, 1))?,
            shortcut: if c_in != c_out {
                Some(Conv2d::load(store, &format!("{p}.nin_shortcut"), c_in, c_out, 1, 1, (0, 0))?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: Vec<f32>, h: usize, w: usize, th: usize) -> Vec<f32> {
        let mut y = x.clone();
        self.norm1.forward(&mut y);
        nn::silu(&mut y);
        let (mut y, _, _) = self.conv1.forward(&y, h, w, th);
        self.norm2.forward(&mut y);
        nn::silu(&mut y);
        let (mut y, _, _) = self.conv2.forward(&y, h, w, th);
        let residual = match &self.shortcut {
            Some(s) => s.forward(&x, h, w, th).0,
            None => x,
        };
        crate::models::ops::add_assign(&mut y, &residual);
        y
    }
}

/// Single-head attention over all pixels, with 1×1 convolutions for q, k,
/// v and the output.
struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn load(store: &WeightStore, p: &str, c: usize) -> Result<AttnBlock, VisionError> {
        let conv = |n: &str| Conv2d::load(store, &format!("{p}.{n}"), c, c, 1, 1, (0, 0));
        Ok(AttnBlock {
            norm: GroupNorm::load(store, &format!("{p}.norm"), c)?,
            q: conv("q")?,
            k: conv("k")?,
            v: conv("v")?,
            proj_out: conv("proj_out")?,
        })
    }

    fn forward(&self, mut x: Vec<f32>, h: usize, w: usize, th: usize) -> Vec<f32> {
        let c = self.q.c_out;
        let mut y = x.clone();
        self.norm.forward(&mut y);
        let (q, k, v) =
            (self.q.forward(&y, h, w, th).0, self.k.forward(&y, h, w, th).0, self.v.forward(&y, h, w, th).0);
        let a = nn::full_attention(&q, &k, &v, h * w, 1, c, th);
        crate::models::ops::add_assign(&mut x, &self.proj_out.forward(&a, h, w, th).0);
        x
    }
}

struct Level {
    blocks: Vec<ResBlock>,
    attns: Vec<AttnBlock>,
    upsample: Option<Conv2d>,
}

/// The decoder, with the codebook and `post_quant_conv` before it.
pub struct VqDecoder {
    pub cfg: VqConfig,
    /// Codes a side (24 for 384-pixel images with 16× upsampling).
    pub grid: usize,
    codebook: Vec<f32>, // [codes, embed_dim]
    post_quant: Conv2d,
    conv_in: Conv2d,
    mid: (ResBlock, AttnBlock, ResBlock),
    levels: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VqDecoder {
    pub fn load(store: &WeightStore, cfg: VqConfig, grid: usize) -> Result<VqDecoder, VisionError> {
        let c = &cfg;
        let n = c.channel_multiplier.len();
        if n == 0 || n > 8 || c.base_channels == 0 || grid == 0 || grid > 256 {
            return Err(VisionError::Config(format!(
                "vq_config: channel_multiplier {:?}, base_channels {}, grid {grid}",
                c.channel_multiplier, c.base_channels
            )));
        }
        let p = "model.vqmodel";
        let codebook = store
            .get(&nn::hf(&format!("{p}.quantize.embedding"), "weight"), &[c.num_embeddings, c.embed_dim])?
            .to_f32()?;
        let d = format!("{p}.decoder");
        let mut block_in = c.base_channels * c.channel_multiplier[n - 1];
        let conv_in = Conv2d::load(store, &format!("{d}.conv_in"), c.latent_channels, block_in, 3, 1, (1, 1))?;
        let mid = (
            ResBlock::load(store, &format!("{d}.mid.block_1"), block_in, block_in)?,
            AttnBlock::load(store, &format!("{d}.mid.attn_1"), block_in)?,
            ResBlock::load(store, &format!("{d}.mid.block_2"), block_in, block_in)?,
        );
        let mut levels = Vec::with_capacity(n);
        // up.0 is the coarsest level (the last multiplier).
        for i in 0..n {
            let block_out = c.base_channels * c.channel_multiplier[n - 1 - i];
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for j in 0..=c.num_res_blocks {
                blocks.push(ResBlock::load(store, &format!("{d}.up.{i}.block.{j}"), block_in, block_out)?);
                block_in = block_out;
                if i == 0 {
                    attns.push(AttnBlock::load(store, &format!("{d}.up.{i}.attn.{j}"), block_in)?);
                }
            }
            let upsample = if i != n - 1 {
                Some(Conv2d::load(store, &format!("{d}.up.{i}.upsample.conv"), block_in, block_in, 3, 1, (1, 1))?)
            } else {
                None
            };
            levels.push(Level { blocks, attns, upsample });
        }
        Ok(VqDecoder {
            post_quant: Conv2d::load(
                store,
                &format!("{p}.post_quant_conv"),
                c.embed_dim,
                c.latent_channels,
                1,
                1,
                (0, 0),
            )?,
            conv_in,
            mid,
            levels,
            norm_out: GroupNorm::load(store, &format!("{d}.norm_out"), block_in)?,
            conv_out: Conv2d::load(store, &format!("{d}.conv_out"), block_in, c.out_channels, 3, 1, (1, 1))?,
            codebook,
            grid,
            cfg,
        })
    }

    /// Side of the decoded image in pixels.
    pub fn image_size(&self) -> usize {
        self.grid << (self.cfg.channel_multiplier.len() - 1)
    }

    /// `codes` (`grid²`, row-major) → pixels `[size, size, out_channels]`,
    /// about −1 (black) to 1 (white). `progress` is called after each level.
    pub fn decode(
        &self,
        codes: &[u32],
        threads: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<f32>, VisionError> {
        let (g, e) = (self.grid, self.cfg.embed_dim);
        if codes.len() != g * g {
            return Err(VisionError::Request(format!(
                "{} image codes given, {} ({g}×{g}) expected",
                codes.len(),
                g * g
            )));
        }
        let mut z = vec![0f32; g * g * e]; // [g, g, embed_dim]
        for (t, &code) in codes.iter().enumerate() {
            if code as usize >= self.cfg.num_embeddings {
                return Err(VisionError::Request(format!(
                    "image code {code} at position {t} is outside the codebook (0..{})",
                    self.cfg.num_embeddings
                )));
            }
            let row = &self.codebook[code as usize * e..][..e];
            let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
            for (dst, &v) in z[t * e..][..e].iter_mut().zip(row) {
                *dst = (v as f64 / norm) as f32;
            }
        }
        let th = threads;
        let (z, _, _) = self.post_quant.forward(&z, g, g, th);
        let (mut x, mut h, mut w) = self.conv_in.forward(&z, g, g, th);
        x = self.mid.0.forward(x, h, w, th);
        x = self.mid.1.forward(x, h, w, th);
        x = self.mid.2.forward(x, h, w, th);
        let total = self.levels.len();
        for (i, level) in self.levels.iter().enumerate() {
            for (j, b) in level.blocks.iter().enumerate() {
                x = b.forward(x, h, w, th);
                if let Some(a) = level.attns.get(j) {
                    x = a.forward(x, h, w, th);
                }
            }
            if let Some(up) = &level.upsample {
                let c = up.c_in;
                let u = nn::upsample2(&x, h, w, c);
                (h, w) = (2 * h, 2 * w);
                x = up.forward(&u, h, w, th).0;
            }
            progress(i + 1, total);
        }
        self.norm_out.forward(&mut x);
        nn::silu(&mut x);
        Ok(self.conv_out.forward(&x, h, w, th).0)
    }
}
