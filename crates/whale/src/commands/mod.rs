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
        let kv = m.model.info().kv_bytes_per_token(opts.cache_type) as u64 * ctx as u64;
        if let Some((budget, from)) = memory_budget().filter(|&(b, _)| kv > b) {
            anyhow::bail!(
                "the KV cache for a context of {ctx} tokens needs {} ({} a token as {}), but {from} leaves {}; \
                 ask for a smaller --ctx (at most {}), or --cache-type f16 if it is f32",
                indicatif::DecimalBytes(kv),
                indicatif::DecimalBytes(kv / ctx as u64),
                self.cache_type.name(),
                indicatif::DecimalBytes(budget),
                budget / (kv / ctx as u64).max(1)
            );
        }
        Ok((m, ctx))
    }
}

/// The memory a KV cache may take, and where that figure comes from: the
/// smallest of the kernel's MemAvailable, what the cgroup's `memory.max`
/// leaves (a container or `systemd-run -p MemoryMax=`), and `WHALE_MEM_LIMIT`
/// (bytes, or with K, M, G) when set. Weights are file pages and not counted:
/// they can be paged out and in again; the cache cannot.
pub fn memory_budget() -> Option<(u64, &'static str)> {
    let mut best: Option<(u64, &'static str)> = None;
    let mut take = |v: Option<u64>, from: &'static str| {
        if let Some(v) = v.filter(|&v| best.is_none_or(|(b, _)| v < b)) {
            best = Some((v, from));
        }
    };
    take(meminfo("MemAvailable:"), "the memory available (MemAvailable)");
    let cg = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok()?.trim().parse::<u64>().ok();
    take(cg("memory.max").zip(cg("memory.current")).map(|(m, c)| m.saturating_sub(c)), "the cgroup's memory.max");
    take(
        std::env::var("WHALE_MEM_LIMIT").ok().and_then(|v| crate::commands::synth::parse_size(&v).ok()),
        "WHALE_MEM_LIMIT",
    );
    best
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
