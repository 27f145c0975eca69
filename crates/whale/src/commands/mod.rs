//! One module per subcommand, plus what they share: loading a model by name.

pub mod bench;
pub mod chat;
pub mod imagine;
pub mod info;
pub mod perplexity;
pub mod run;
pub mod synth;
pub mod train;
pub mod vision;

use anyhow::Context;
use whale_engine::formats::storage::LoadMode;
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
    /// keep (1 byte a weight, memory-mapped, read by the FP8 kernels with
    /// activations rounded to bf16), q8_0 (requantized at load, 1.06 bytes
    /// a weight) or f32 (exact, 4 bytes).
    #[arg(long, default_value = "keep")]
    pub fp8: whale_engine::formats::weights::Fp8Mode,
    /// Read the weights whole into memory (in 2 MiB pages where the kernel
    /// has them) rather than mapping the files. The default when the model
    /// takes at most half the memory whale may use.
    #[arg(long, conflicts_with = "mmap")]
    pub no_mmap: bool,
    /// Map the weight files (pages read as they are first touched, shared
    /// with the page cache) even when they would fit in memory.
    #[arg(long)]
    pub mmap: bool,
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
        self.context(m.model.info().context_length)
    }

    /// `--ctx`, or the model's trained context (`trained`) up to 4096.
    pub fn context(&self, trained: usize) -> anyhow::Result<usize> {
        Ok(match self.ctx {
            Some(c) => {
                anyhow::ensure!((1..=1 << 20).contains(&c), "--ctx must be between 1 and 1048576, got {c}");
                c
            }
            None => trained.clamp(1, 4096),
        })
    }

    /// Whether a model of `file` bytes is mapped or read into memory:
    /// `--mmap` or `--no-mmap` if given, else read when it takes at most
    /// half of `budget` (what [`memory_budget`] says whale may fill, which
    /// counts the page cache as free), so that the copy and the file's
    /// cached pages fit side by side with room for the KV cache; mapped
    /// otherwise, and where there is no budget to go by.
    ///
    /// Why read by default: decode streams every weight it uses once a
    /// token, and anonymous memory in 2 MiB pages streamed faster than the
    /// file's mapped pages (see `LoadMode::Read`); llama.cpp, which maps
    /// by default, copies most of its weights out of the mapping too (its
    /// CPU "repack" of Q4_K and other types). Loading then reads the whole
    /// file up front, as llama.cpp's `MAP_POPULATE` does.
    pub fn load_mode(&self, file: u64, budget: Option<(u64, &'static str)>) -> anyhow::Result<LoadMode> {
        if self.mmap {
            return Ok(LoadMode::Map);
        }
        if self.no_mmap {
            if let Some((b, from)) = budget.filter(|&(b, _)| file > b) {
                anyhow::bail!(
                    "--no-mmap: the model ({}) is larger than the memory whale may use ({}, from {from}); \
                     leave --no-mmap out to map the file instead",
                    indicatif::DecimalBytes(file),
                    indicatif::DecimalBytes(b)
                );
            }
            return Ok(LoadMode::Read);
        }
        Ok(match budget {
            Some((b, _)) if file <= b / 2 => LoadMode::Read,
            _ => LoadMode::Map,
        })
    }

    pub fn load(&self, spec: &str) -> anyhow::Result<(LoadedModel, usize)> {
        self.load_as(spec).map(|(m, ctx, _)| (m, ctx))
    }

    /// [`ModelArgs::load`], also saying how the weights were loaded.
    pub fn load_as(&self, spec: &str) -> anyhow::Result<(LoadedModel, usize, LoadMode)> {
        let path = crate::pull::resolve_model(spec)?;
        let mut opts = self.options()?;
        let file = model_file_bytes(&path);
        let budget = memory_budget();
        opts.load_mode = self.load_mode(file, budget)?;
        if let Some((budget, from)) = budget.filter(|&(b, _)| file > b) {
            opts.prefetch_experts = true;
            eprintln!(
                "note: the model ({}) is larger than the memory whale may use ({}, from {from}): \
                 its weights page in from disk as they are read, routed experts as soon as the router picks them",
                indicatif::DecimalBytes(file),
                indicatif::DecimalBytes(budget)
            );
        }
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
        Ok((m, ctx, opts.load_mode))
    }
}

/// The memory whale may fill (a KV cache, or weights' pages), and where
/// that figure comes from: the smallest of the kernel's MemAvailable, what
/// the process's memory cgroup leaves (its limit minus its anonymous memory:
/// a container, `systemd-run -p MemoryMax=`, or a v1 `memory.limit_in_bytes`),
/// and `WHALE_MEM_LIMIT` (bytes, or with K, M, G) when set. File pages are
/// not subtracted: the kernel reclaims them when the cache needs the room.
pub fn memory_budget() -> Option<(u64, &'static str)> {
    let mut best: Option<(u64, &'static str)> = None;
    let mut take = |v: Option<u64>, from: &'static str| {
        if let Some(v) = v.filter(|&v| best.is_none_or(|(b, _)| v < b)) {
            best = Some((v, from));
        }
    };
    take(meminfo("MemAvailable:"), "the memory available (MemAvailable)");
    take(cgroup_room(), "the memory cgroup's limit");
    take(
        std::env::var("WHALE_MEM_LIMIT").ok().and_then(|v| crate::commands::synth::parse_size(&v).ok()),
        "WHALE_MEM_LIMIT",
    );
    best
}

/// The memory cgroup's limit minus its anonymous memory, cgroup v2 or v1;
/// `None` without a limit.
fn cgroup_room() -> Option<u64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let read = |dir: &str, f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
    let stat = |text: Option<String>, key: &str| -> Option<u64> {
        text?.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
    };
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        // v2 ("0::/path": memory.max, "max" when unlimited) or v1 (the
        // "memory" hierarchy: memory.limit_in_bytes).
        let (dir, limit_file, anon_key) = if controllers.is_empty() {
            (format!("/sys/fs/cgroup{path}"), "memory.max", "anon")
        } else if controllers.split(',').any(|c| c == "memory") {
            (format!("/sys/fs/cgroup/memory{path}"), "memory.limit_in_bytes", "total_rss")
        } else {
            continue;
        };
        let limit = read(&dir, limit_file).and_then(|t| t.trim().parse::<u64>().ok());
        let anon = stat(read(&dir, "memory.stat"), anon_key);
        // v1 reports "no limit" as a huge number (about 2^63).
        if let Some(limit) = limit.filter(|&l| l < 1 << 60) {
            return Some(limit.saturating_sub(anon.unwrap_or(0)));
        }
    }
    None
}

/// Bytes of a model on disk: a file, every part of a split GGUF named by
/// one of its parts, or a folder's files.
pub fn model_file_bytes(path: &std::path::Path) -> u64 {
    use whale_engine::formats::gguf::{parse_split_path, split_path};
    let len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    if path.is_dir() {
        let entries = std::fs::read_dir(path).into_iter().flatten().flatten();
        return entries.map(|e| len(&e.path())).sum();
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match parse_split_path(&name) {
        Some((prefix, _, count)) => (0..count).map(|k| len(&path.with_file_name(split_path(prefix, k, count)))).sum(),
        None => len(path),
    }
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// `--spec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    Auto,
    None,
    Mtp(usize),
}

impl Spec {
    /// Drafts a step for a model with (or without) a multi-token-prediction
    /// layer: `auto` is mtp:1 where it has one; asking for mtp without the
    /// layer is an error.
    pub fn drafts(self, has_layer: bool) -> anyhow::Result<Option<usize>> {
        match (self, has_layer) {
            (Spec::None, _) | (Spec::Auto, false) => Ok(None),
            (Spec::Auto, true) => Ok(Some(1)),
            (Spec::Mtp(_), false) => anyhow::bail!(
                "--spec mtp: this model has no multi-token-prediction layer (num_nextn_predict_layers is 0, or its \
                 tensors were dropped in conversion); use --spec none"
            ),
            (Spec::Mtp(k), true) => Ok(Some(k)),
        }
    }
}

impl std::str::FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Spec, String> {
        let bad = || format!("--spec {s:?}: use none, mtp or mtp:K with K from 1 to 8");
        match s {
            "auto" => Ok(Spec::Auto),
            "none" => Ok(Spec::None),
            "mtp" => Ok(Spec::Mtp(1)),
            _ => match s.strip_prefix("mtp:").map(str::parse::<usize>) {
                Some(Ok(k)) if (1..=8).contains(&k) => Ok(Spec::Mtp(k)),
                _ => Err(bad()),
            },
        }
    }
}
