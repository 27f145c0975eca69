//! What `whale run --image`, `whale chat`'s `/image` and `whale imagine`
//! share: loading a Janus model and putting images into a prompt.

use std::path::Path;

use anyhow::Context;
use whale_engine::formats::weights::WeightStore;
use whale_engine::models::Logits;
use whale_engine::serving::generate::Session;
use whale_engine::text::chat_template::{ChatMessage, ChatTemplate};
use whale_engine::text::tokenizer::Tokenizer;
use whale_engine::vision::janus::{ImageTokens, Janus, IMAGE_TOKEN};

use super::ModelArgs;

/// Most images one prompt may hold (each takes 576 positions).
pub const MAX_IMAGES: usize = 8;

/// A Janus model with its tokenizer and context length.
pub struct Vision {
    pub janus: Janus,
    pub tok: Tokenizer,
    pub marks: ImageTokens,
    pub ctx: usize,
}

impl Vision {
    /// Load `spec` as a Janus model, or say why it cannot take images.
    pub fn load(spec: &str, args: &ModelArgs) -> anyhow::Result<Vision> {
        let path = crate::pull::resolve_model(spec)?;
        let cfg: serde_json::Value = std::fs::read_to_string(path.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        match cfg.get("model_type").and_then(|m| m.as_str()) {
            Some("janus") => {}
            // DeepSeek's original Janus layout: the registry's error says how to convert it.
            Some(mt @ "multi_modality") => {
                whale_engine::models::Architecture::from_name(mt)?;
            }
            _ => anyhow::bail!(
                "{spec} is a text-only model: images need a Janus-Pro model (a Hugging Face folder with model_type \"janus\")"
            ),
        }
        let opts = args.options()?;
        let store = WeightStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let janus = Janus::load(&store, opts).with_context(|| format!("loading {}", path.display()))?;
        let tok = Tokenizer::from_hf_dir(&path)?;
        let marks = ImageTokens::of(&tok, janus.image_token_id)?;
        let ctx = args.context(janus.lm.params.context_length)?;
        Ok(Vision { janus, tok, marks, ctx })
    }

    /// An image file → the aligner's 576 rows.
    pub fn image_file(&self, path: &Path) -> anyhow::Result<Vec<f32>> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let img = whale_engine::vision::image::decode(&bytes).with_context(|| format!("{}", path.display()))?;
        Ok(self.janus.image_features(&img)?)
    }

    /// Replace each image token in `ids` with a whole image:
    /// `<begin_of_image>`, 576 image tokens, `<end_of_image>`.
    pub fn expand(&self, ids: &[u32]) -> Vec<u32> {
        let mut out = Vec::with_capacity(ids.len());
        for &t in ids {
            if t == self.marks.image {
                out.extend(self.janus.image_prompt_ids(self.marks));
            } else {
                out.push(t);
            }
        }
        out
    }

    /// A chat rendered with the model's template, each user message
    /// preceded by its images (`counts[i]` for message `i`), as Janus-Pro's
    /// conversation format has them (`<image_placeholder>\n` before the
    /// text). What users typed stays text; only the markers added here
    /// become image tokens.
    pub fn chat_ids(&self, messages: &[ChatMessage], counts: &[usize]) -> anyhow::Result<Vec<u32>> {
        let src = self.tok.chat_template().context("the model has no chat template")?;
        let tpl = ChatTemplate::new(src)?;
        let mut messages = messages.to_vec();
        messages.iter_mut().for_each(|m| m.guard(&self.tok));
        for (m, &n) in messages.iter_mut().zip(counts) {
            if n > 0 {
                m.content = format!("{}{}", format!("{IMAGE_TOKEN}\n").repeat(n), m.content);
            }
        }
        let text = tpl.render(&messages, true, &self.tok.bos_token(), &self.tok.eos_token(), None)?;
        let bos = self.tok.bos_token();
        let add_bos = bos.is_empty() || !text.starts_with(&bos);
        Ok(self.expand(&self.tok.encode_guarded(&text, add_bos)?))
    }

    /// Bring `session` to hold all of `ids` but the last (which
    /// [`whale_engine::serving::generate::generate`] computes), reusing the
    /// cached prefix, with `image_rows` (every image of the prompt, in
    /// order) at the image tokens.
    pub fn prefill(&self, session: &mut Session, ids: &[u32], image_rows: &[f32]) -> anyhow::Result<()> {
        let is_img = |t: &&u32| **t == self.janus.image_token_id;
        let n = ids.len();
        anyhow::ensure!(n > 0, "the prompt is empty");
        anyhow::ensure!(!is_img(&&ids[n - 1]), "the prompt must not end with an image token");
        anyhow::ensure!(
            n < session.cache.capacity,
            "the prompt ({n} tokens) does not fit the context of {} tokens (raise --ctx)",
            session.cache.capacity
        );
        let h = self.janus.lm.params.hidden_size;
        let total = ids.iter().filter(is_img).count();
        anyhow::ensure!(
            total * h == image_rows.len(),
            "the prompt has {total} image tokens but the images give {} rows ({} an image)",
            image_rows.len() / h,
            self.janus.image_rows()
        );
        let common = session.tokens.iter().zip(ids).take_while(|(a, b)| a == b).count().min(n - 1);
        session.cache.truncate(common);
        session.tokens.truncate(common);
        if common < n - 1 {
            let before = ids[..common].iter().filter(is_img).count();
            let piece = &ids[common..n - 1];
            let k = piece.iter().filter(is_img).count();
            self.janus.forward_with_images(
                &mut session.cache,
                piece,
                &image_rows[before * h..(before + k) * h],
                Logits::Last,
            )?;
            session.tokens.extend_from_slice(piece);
        }
        Ok(())
    }
}
