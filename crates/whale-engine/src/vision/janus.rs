//! Janus-Pro: a llama language model with an image encoder for
//! understanding and an image-token head plus VQ decoder for generation.
//!
//! Order of this file: config (transformers' `JanusConfig` names), the model
//! and loading, understanding, generation.
//!
//! Understanding: the prompt holds `<begin_of_image>`, 576 image tokens and
//! `<end_of_image>`; the language model's input rows at the image tokens are
//! the aligner's 576 rows instead of the token's embedding.
//!
//! Generation: the prompt ends with `<begin_of_image>`; its unconditional
//! twin has every token but BOS and `<begin_of_image>` replaced by the pad
//! token. Both run as one batch of two. At each of the 576 steps the
//! image-token head (linear, GELU, linear) reads each sequence's last row
//! after the final norm, and the guided logits are
//! `uncond + cfg · (cond − uncond)` (transformers'
//! `ClassifierFreeGuidanceLogitsProcessor`). The chosen code's
//! generation embedding, through the generation aligner, is the next input
//! row of both sequences.

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::formats::weights::WeightStore;
use crate::models::llama::{Head, Llama};
use crate::models::{BatchSeq, KvCache, Linear, LoadOptions, Logits, Model, ModelError};
use crate::text::tokenizer::Tokenizer;
use crate::vision::image::{Preprocess, Rgb8};
use crate::vision::nn;
use crate::vision::siglip::{VisionConfig, VisionEncoder};
use crate::vision::vq::{VqConfig, VqDecoder};
use crate::vision::VisionError;

/// `config.json` of a Janus checkpoint (transformers' layout).
#[derive(Debug, Deserialize)]
pub struct JanusConfigJson {
    pub text_config: serde_json::Value,
    pub vision_config: VisionConfig,
    pub vq_config: VqConfig,
    /// Janus-Pro's `<image_placeholder>` (100581 in the released models).
    #[serde(default = "d_image_token")]
    pub image_token_id: u32,
}

fn d_image_token() -> u32 {
    100581
}

/// The text of Janus's image markers.
pub const IMAGE_TOKEN: &str = "<image_placeholder>";
pub const BEGIN_OF_IMAGE: &str = "<begin_of_image>";
pub const END_OF_IMAGE: &str = "<end_of_image>";

/// Guidance scales `whale imagine` and the server accept: 1 is no guidance;
/// Janus-Pro's authors use 5.
pub const CFG_RANGE: std::ops::RangeInclusive<f32> = 1.0..=20.0;

/// A loaded Janus model.
pub struct Janus {
    pub lm: Llama,
    pub vision: VisionEncoder,
    pub vq: VqDecoder,
    gen_embed: Vec<f32>,        // [codes, embed_dim]
    gen_aligner: Vec<Linear>,   // fc1 [proj, embed_dim], then [proj, proj] …
    gen_head: (Linear, Linear), // proj_out [proj, text hidden], vision_head [codes, proj]
    pub image_token_id: u32,
    pub preprocess: Preprocess,
    pub threads: usize,
}

/// Ids of the image markers in the tokenizer.
#[derive(Clone, Copy, Debug)]
pub struct ImageTokens {
    pub image: u32,
    pub begin: u32,
    pub end: u32,
}

impl ImageTokens {
    pub fn of(tok: &Tokenizer, image: u32) -> Result<ImageTokens, VisionError> {
        let find =
            |t: &str| tok.token_to_id(t).ok_or_else(|| VisionError::Config(format!("the tokenizer has no {t} token")));
        Ok(ImageTokens { image, begin: find(BEGIN_OF_IMAGE)?, end: find(END_OF_IMAGE)? })
    }
}

impl Janus {
    /// Whether a model folder holds a Janus checkpoint.
    pub fn is_janus(path: &Path) -> bool {
        let Ok(text) = std::fs::read_to_string(path.join("config.json")) else { return false };
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("model_type")?.as_str().map(|m| m == "janus"))
            .unwrap_or(false)
    }

    pub fn load(store: &WeightStore, opts: LoadOptions) -> Result<Janus, VisionError> {
        let WeightStore::Hf(hf) = store else {
            return Err(VisionError::Config("a Janus model is read from a Hugging Face folder, not a GGUF".into()));
        };
        let cfg: JanusConfigJson = serde_json::from_value(hf.config.clone())
            .map_err(|e| VisionError::Config(format!("Janus config.json: {e}")))?;
        let lm = Llama::load_janus(store, opts)?;
        let text_hidden = lm.params.hidden_size;
        let grid = cfg.vision_config.image_size / cfg.vision_config.patch_size.max(1);
        let vision = VisionEncoder::load(store, cfg.vision_config, text_hidden)?;
        let vqc = cfg.vq_config;
        if vqc.hidden_act != "gelu" {
            return Err(VisionError::Config(format!(
                "vq hidden_act {:?} is not supported (only \"gelu\")",
                vqc.hidden_act
            )));
        }
        if vqc.image_token_embed_dim != text_hidden {
            return Err(VisionError::Config(format!(
                "vq image_token_embed_dim {} differs from the language model's hidden_size {text_hidden}",
                vqc.image_token_embed_dim
            )));
        }
        if vqc.projection_dim != text_hidden {
            return Err(VisionError::Config(format!(
                "the generation aligner's projection_dim {} differs from the language model's hidden_size {text_hidden}",
                vqc.projection_dim
            )));
        }
        let gen_embed = store
            .get(&nn::hf("model.generation_embeddings", "weight"), &[vqc.num_embeddings, vqc.embed_dim])?
            .to_f32()?;
        let mut gen_aligner =
            vec![nn::linear(store, "model.generation_aligner.fc1", vqc.projection_dim, vqc.embed_dim)?];
        for i in 1..vqc.num_hidden_layers {
            let p = format!("model.generation_aligner.hidden_layers.{}", i - 1);
            gen_aligner.push(nn::linear(store, &p, vqc.projection_dim, vqc.projection_dim)?);
        }
        let gen_head = (
            nn::linear(store, "model.generation_head.proj_out", vqc.projection_dim, vqc.image_token_embed_dim)?,
            nn::linear(store, "model.generation_head.vision_head", vqc.num_embeddings, vqc.projection_dim)?,
        );
        let vq = VqDecoder::load(store, vqc, grid)?;
        let pre_path = hf.dir.join("preprocessor_config.json");
        let preprocess = match std::fs::read_to_string(&pre_path) {
            Ok(t) => {
                let v: serde_json::Value = serde_json::from_str(&t)
                    .map_err(|e| VisionError::Config(format!("{}: {e}", pre_path.display())))?;
                Preprocess::from_json(&v, vision.cfg.image_size)
            }
            Err(_) => Preprocess { size: vision.cfg.image_size, ..Default::default() },
        };
        if cfg.image_token_id as usize >= lm.params.vocab_size {
            return Err(VisionError::Config(format!(
                "image_token_id {} is outside the vocabulary ({})",
                cfg.image_token_id, lm.params.vocab_size
            )));
        }
        Ok(Janus {
            lm,
            vision,
            vq,
            gen_embed,
            gen_aligner,
            gen_head,
            image_token_id: cfg.image_token_id,
            preprocess,
            threads: opts.threads.max(1),
        })
    }

    /// Rows one image takes in the prompt (576).
    pub fn image_rows(&self) -> usize {
        self.vision.n_patches()
    }

    /// Side of the images generated, in pixels (384).
    pub fn image_size(&self) -> usize {
        self.vq.image_size()
    }

    /// Codes a generated image is made of (576).
    pub fn image_codes(&self) -> usize {
        self.vq.grid * self.vq.grid
    }

    // ---- understanding ----------------------------------------------------

    /// An image → the aligner's rows `[576, text hidden]`.
    pub fn image_features(&self, img: &Rgb8) -> Result<Vec<f32>, VisionError> {
        let pixels = self.preprocess.pixel_values(img);
        self.features_of_pixels(&pixels)
    }

    /// Preprocessed pixels `[3, 384, 384]` → the aligner's rows.
    pub fn features_of_pixels(&self, pixels: &[f32]) -> Result<Vec<f32>, VisionError> {
        let enc = self.vision.encode(pixels, self.threads)?;
        Ok(self.vision.align(&enc, self.threads))
    }

    /// The language model's input rows for `ids`: token embeddings, with
    /// the image token's positions taken in order from `image_rows` (the
    /// aligner's rows of the images, `[k, hidden]` stacked; a prompt may hold
    /// part of an image when its prefill is split). The counts must agree.
    pub fn input_rows(&self, ids: &[u32], image_rows: &[f32]) -> Result<Vec<f32>, VisionError> {
        Ok(self.lm.input_rows(ids, self.image_token_id, image_rows)?)
    }

    /// Run `ids` (with `image_rows` at the image tokens) through the
    /// language model at positions `cache.len ..`, returning the logits
    /// `which` asks for.
    pub fn forward_with_images(
        &self,
        cache: &mut KvCache,
        ids: &[u32],
        image_rows: &[f32],
        which: Logits,
    ) -> Result<Vec<f32>, VisionError> {
        let x = self.input_rows(ids, image_rows)?;
        let mut seqs = [BatchSeq { cache, tokens: ids }];
        Ok(self.lm.forward_embeds(&mut seqs, x, Head::Logits(which))?.pop().expect("one sequence"))
    }

    /// The text of one image in a prompt: `<begin_of_image>`, 576 image
    /// tokens, `<end_of_image>`.
    pub fn image_prompt_ids(&self, marks: ImageTokens) -> Vec<u32> {
        let mut v = vec![marks.begin];
        v.extend(std::iter::repeat_n(marks.image, self.image_rows()));
        v.push(marks.end);
        v
    }

    // ---- generation -------------------------------------------------------

    /// The unconditional twin of a generation prompt: every token except
    /// BOS and `<begin_of_image>` becomes the pad token.
    pub fn unconditional(prompt: &[u32], bos: u32, begin: u32, pad: u32) -> Vec<u32> {
        prompt.iter().map(|&t| if t == bos || t == begin { t } else { pad }).collect()
    }

    /// The image-token head on rows `[m, hidden]` → `[m, codes]`.
    fn head(&self, rows: &[f32], m: usize) -> Vec<f32> {
        let mut y = self.gen_head.0.forward(rows, m, self.threads);
        nn::gelu(&mut y, self.threads);
        self.gen_head.1.forward(&y, m, self.threads)
    }

    /// A code's input row: its generation embedding through the generation aligner.
    fn code_row(&self, code: u32) -> Vec<f32> {
        let e = self.vq.cfg.embed_dim;
        let emb = &self.gen_embed[code as usize * e..][..e];
        let mut y = self.gen_aligner[0].forward(emb, 1, 1);
        for lin in &self.gen_aligner[1..] {
            nn::gelu(&mut y, 1);
            y = lin.forward(&y, 1, 1);
        }
        y
    }

    /// Generate one image's codes. `prompt` ends with `<begin_of_image>`;
    /// `uncond` is its unconditional twin (same length). `temperature` 0
    /// takes the highest guided logit at every step (deterministic); above
    /// 0 the code is drawn from `softmax(guided / temperature)` with `seed`.
    /// `on_step(i, guided_logits)` sees every step and returns `false` to
    /// stop (the codes so far are returned).
    pub fn generate_codes(
        &self,
        prompt: &[u32],
        uncond: &[u32],
        cfg: f32,
        temperature: f32,
        seed: u64,
        mut on_step: impl FnMut(usize, &[f32]) -> bool,
    ) -> Result<Vec<u32>, VisionError> {
        if !CFG_RANGE.contains(&cfg) {
            return Err(VisionError::Request(format!(
                "cfg {cfg} is out of range: use {} to {} (1 is no guidance; 5 is Janus-Pro's usual)",
                CFG_RANGE.start(),
                CFG_RANGE.end()
            )));
        }
        if !(temperature.is_finite() && (0.0..=10.0).contains(&temperature)) {
            return Err(VisionError::Request(format!("temperature {temperature} is out of range 0 to 10")));
        }
        if prompt.is_empty() || prompt.len() != uncond.len() {
            return Err(VisionError::Request(
                "the prompt and its unconditional twin must have the same non-zero length".into(),
            ));
        }
        let n = self.image_codes();
        let capacity = prompt.len() + n;
        if capacity > self.lm.info().context_length {
            return Err(VisionError::Request(format!(
                "a prompt of {} tokens plus {n} image codes is too long",
                prompt.len()
            )));
        }
        let (mut c_cond, mut c_uncond) = (self.lm.new_cache(capacity), self.lm.new_cache(capacity));
        let mut x = crate::models::embed_tokens(self.lm.embedding(), prompt)?;
        x.extend(crate::models::embed_tokens(self.lm.embedding(), uncond)?);
        let mut hidden = self.run_pair(&mut c_cond, &mut c_uncond, prompt, uncond, x)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut codes = Vec::with_capacity(n);
        let step_tokens = [0u32];
        for i in 0..n {
            let s = self.head(&hidden, 2); // [2, codes]
            let k = s.len() / 2;
            let guided: Vec<f32> = (0..k).map(|j| s[k + j] + (s[j] - s[k + j]) * cfg).collect();
            let code = if temperature == 0.0 { argmax(&guided) } else { sample(&guided, temperature, &mut rng) };
            codes.push(code);
            if !on_step(i, &guided) || i + 1 == n {
                break;
            }
            let row = self.code_row(code);
            let mut x = row.clone();
            x.extend(row);
            hidden = self.run_pair(&mut c_cond, &mut c_uncond, &step_tokens, &step_tokens, x)?;
        }
        Ok(codes)
    }

    /// Both sequences through the language model as one batch; their last
    /// normed rows `[2, hidden]`.
    fn run_pair(
        &self,
        c1: &mut KvCache,
        c2: &mut KvCache,
        t1: &[u32],
        t2: &[u32],
        x: Vec<f32>,
    ) -> Result<Vec<f32>, ModelError> {
        let mut seqs = [BatchSeq { cache: c1, tokens: t1 }, BatchSeq { cache: c2, tokens: t2 }];
        Ok(self.lm.forward_embeds(&mut seqs, x, Head::Normed(Logits::Last))?.concat())
    }

    /// Codes → pixels `[384, 384, 3]` (about −1 to 1).
    pub fn decode_codes(&self, codes: &[u32], progress: impl FnMut(usize, usize)) -> Result<Vec<f32>, VisionError> {
        self.vq.decode(codes, self.threads, progress)
    }
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let p: Vec<f64> = logits.iter().map(|&l| (((l - max) / temperature) as f64).exp()).collect();
    let total: f64 = p.iter().sum();
    let mut r = rng.gen::<f64>() * total;
    for (i, &w) in p.iter().enumerate() {
        if r < w {
            return i as u32;
        }
        r -= w;
    }
    argmax(logits)
}
