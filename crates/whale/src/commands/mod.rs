//! One module per subcommand, plus what they share: loading a model by name.

pub mod bench;
pub mod chat;
pub mod info;
pub mod perplexity;
pub mod run;
pub mod synth;

use anyhow::Context;
use whale_engine::models::{LoadOptions, LoadedModel};

/// Options every model-running command takes.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Context size in tokens (default: the model's, at most 4096).
    #[arg(short = 'c', long)]
    pub ctx: Option<usize>,
    /// KV cache element type: f16 (as llama.cpp, half the memory) or f32
    /// (keys and values exact, as Hugging Face transformers keeps them).
    #[arg(long, default_value = "f16")]
    pub cache_type: whale_engine::models::CacheType,
    /// FP8 weights of a safetensors checkpoint (DeepSeek-V3/R1 as released):
    /// keep (1 byte a weight, memory-mapped, read by the FP8 kernels), q8_0
    /// (requantized at load, 1.06 bytes a weight) or f32 (exact, 4 bytes).
    #[arg(long, default_value = "keep")]
    pub fp8: whale_engine::formats::weights::Fp8Mode,
}

impl ModelArgs {
    /// The load options these arguments ask for.
    pub fn options(&self) -> anyhow::Result<LoadOptions> {
        let mut opts = LoadOptions { cache_type: self.cache_type, fp8: self.fp8, ..LoadOptions::default() };
        if let Some(t) = self.threads {
            anyhow::ensure!((1..=1024).contains(&t), "--threads must be between 1 and 1024, got {t}");
            opts.threads = t;
        }
        Ok(opts)
    }

    /// The context size: `--ctx`, else the model's, at most 4096.
    pub fn context_for(&self, m: &LoadedModel) -> anyhow::Result<usize> {
        Ok(match self.ctx {
            Some(c) => {
                anyhow::ensure!((1..=1 << 20).contains(&c), "--ctx must be between 1 and 1048576, got {c}");
                c
            }
            None => m.model.info().context_length.clamp(1, 4096),
        })
    }

    pub fn load(&self, spec: &str) -> anyhow::Result<(LoadedModel, usize)> {
        let path = crate::pull::resolve_model(spec)?;
        let opts = self.options()?;
        let m = whale_engine::models::load(&path, opts).with_context(|| format!("loading {}", path.display()))?;
        let ctx = self.context_for(&m)?;
        Ok((m, ctx))
    }
}
