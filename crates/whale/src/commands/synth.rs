//! `whale synth OUT.gguf --like NAME`: a GGUF with a real model's shapes,
//! metadata and tokenizer, and random but valid weights, to benchmark a
//! model before downloading it (and to run it in llama.cpp side by side).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use whale_engine::formats::gguf::{GgufFile, MetaValue};
use whale_engine::synth::fp8::Fp8Folder;
use whale_engine::synth::mix::FileType;
use whale_engine::synth::presets::{self, Preset};
use whale_engine::synth::{self, Synth, SynthSpec};

/// What `whale synth` and `whale bench --like` share.
#[derive(clap::Args, Clone, Debug)]
pub struct LikeArgs {
    /// Layers to keep (default: all). A MoE model keeps at least one MoE layer.
    #[arg(long)]
    pub layers: Option<usize>,
    /// File type, as llama-quantize names it: f32, f16, bf16, q4_0, q4_1,
    /// q5_0, q5_1, q8_0, q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m,
    /// q5_k_s, q5_k_m, q6_k, iq1_s, iq1_m,
    /// iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq4_nl, iq4_xs, tq1_0, tq2_0; or ud-iq1_s, the mix of
    /// unsloth's 1.58-bit DeepSeek-R1. Tensor types follow llama-quantize's
    /// mix for that type. `fp8` (DeepSeek models, `whale synth` only) writes
    /// a Hugging Face folder in DeepSeek-V3's FP8 layout instead of a GGUF.
    #[arg(long = "type", default_value = "q4_k_m")]
    pub ftype: SynthType,
    /// Seed of the random weights (the same seed gives the same file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the tokenizer comes from: a GGUF file, a tokenizer.json (or the
    /// folder holding it), a catalog name, or a hub repository OWNER/REPO
    /// (its tokenizer.json and tokenizer_config.json are fetched). Default:
    /// the model's own.
    #[arg(long)]
    pub tokenizer: Option<String>,
}

/// `--type`: a GGUF file type, or DeepSeek's FP8 safetensors folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthType {
    Gguf(FileType),
    Fp8,
}

impl std::str::FromStr for SynthType {
    type Err = String;
    fn from_str(s: &str) -> Result<SynthType, String> {
        if s.eq_ignore_ascii_case("fp8") {
            return Ok(SynthType::Fp8);
        }
        s.parse::<FileType>().map(SynthType::Gguf).map_err(|e| format!("{e}, or fp8"))
    }
}

impl SynthType {
    pub fn name(self) -> &'static str {
        match self {
            SynthType::Gguf(t) => t.name(),
            SynthType::Fp8 => "fp8",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// The GGUF file to write, or with `--type fp8` the folder (not needed
    /// with `--like list`).
    pub out: Option<PathBuf>,
    /// The model to imitate; `--like list` prints the known ones.
    #[arg(long)]
    pub like: String,
    /// Print what would be written (types, sizes) without writing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Split into parts of at most this much tensor data each (bytes, or
    /// with K, M, G: `--split-max-size 4G`), named as llama.cpp's gguf-split
    /// names them: OUT-00001-of-0000N.gguf, ...
    #[arg(long, value_parser = parse_size)]
    pub split_max_size: Option<u64>,
    #[command(flatten)]
    pub like_args: LikeArgs,
}

/// The `tokenizer.*` keys from `spec` (or the preset's default source).
fn tokenizer_keys(spec: Option<&str>, p: &Preset) -> anyhow::Result<Vec<(String, MetaValue)>> {
    let spec = spec.unwrap_or(p.tokenizer);
    let vocab = p.vocab_size();
    let path = Path::new(spec);
    let hf = |dir: &Path| synth::tokenizer::from_hf_dir(dir, p.pre_tokenizer, vocab).map_err(anyhow::Error::from);
    if path.is_dir() {
        return hf(path);
    }
    if path.is_file() && spec.ends_with(".json") {
        return hf(path.parent().unwrap_or(Path::new(".")));
    }
    let looks_like_repo = !path.exists() && spec.split('/').count() == 2 && !spec.contains(':');
    if looks_like_repo {
        let tj = crate::pull::resolve_model(&format!("hf:{spec}/tokenizer.json"))?;
        // Optional: some repositories have no tokenizer_config.json.
        if let Err(e) = crate::pull::resolve_model(&format!("hf:{spec}/tokenizer_config.json")) {
            eprintln!("note: no tokenizer_config.json from {spec} ({e:#}); BOS/EOS and the chat template are left out");
        }
        return hf(tj.parent().unwrap_or(Path::new(".")));
    }
    let file = crate::pull::resolve_model(spec)?;
    let g = GgufFile::open(&file).with_context(|| format!("reading the tokenizer from {}", file.display()))?;
    let keys = synth::tokenizer::from_gguf(&g);
    if keys.is_empty() {
        bail!("{} has no tokenizer.* keys", file.display());
    }
    Ok(keys)
}

fn list() {
    println!("{:<32} {:>7}  shapes from", "model", "layers");
    for p in presets::PRESETS {
        let aka = if p.aliases.is_empty() { String::new() } else { format!(" (also {})", p.aliases.join(", ")) };
        println!("{:<32} {:>7}  {}{aka}", p.name, p.num_hidden_layers(), p.hf_repo);
    }
    for j in synth::janus::JANUS_SHAPES {
        println!(
            "{:<32} {:>7}  a Hugging Face folder (transformers' Janus layout, bf16): --tokenizer DIR",
            j.name, j.layers
        );
    }
}

/// `--like janus-pro-1b|7b`: a Janus folder at the real shapes, bf16, with
/// the tokenizer of `--tokenizer DIR` (a folder with Janus's image tokens,
/// such as the tiny test model's).
fn run_janus(out: &Path, shape: &synth::janus::JanusShape, a: &SynthArgs) -> anyhow::Result<()> {
    let dir = a.like_args.tokenizer.as_deref().context(
        "--tokenizer DIR is needed for a Janus folder: a folder whose tokenizer.json has <image_placeholder>, \
         <begin_of_image> and <end_of_image> (for example crates/whale-engine/tests/data/janus/tiny)",
    )?;
    let tok = whale_engine::text::tokenizer::Tokenizer::from_hf_dir(Path::new(dir))?;
    let image = tok.token_to_id("<image_placeholder>").context("the tokenizer has no <image_placeholder>")?;
    let bytes = synth::janus::write_janus(out, shape, a.like_args.layers, Path::new(dir), image, a.like_args.seed)?;
    eprintln!("wrote {} ({}, {} of bf16 weights)", out.display(), shape.name, indicatif::DecimalBytes(bytes));
    Ok(())
}

/// Plans the synthetic model `like` with `a`.
pub fn plan(like: &str, a: &LikeArgs) -> anyhow::Result<Synth> {
    let SynthType::Gguf(ftype) = a.ftype else {
        bail!("--type fp8 writes a Hugging Face folder: whale synth OUT_DIR --like {like} --type fp8, then use OUT_DIR")
    };
    let preset = presets::find(like).ok_or_else(|| synth::SynthError::UnknownModel(like.to_string()))?;
    // Checked before the tokenizer is fetched, so a typo costs no download.
    let max = preset.num_hidden_layers();
    if let Some(l) = a.layers.filter(|&l| l == 0 || l > max) {
        return Err(synth::SynthError::BadLayers { model: preset.name, asked: l, max }.into());
    }
    let tok = tokenizer_keys(a.tokenizer.as_deref(), preset)?;
    let n_tok =
        tok.iter().find(|(k, _)| k == "tokenizer.ggml.tokens").and_then(|(_, v)| v.as_array()).map_or(0, |a| a.len());
    if n_tok != 0 && n_tok != preset.vocab_size() {
        eprintln!(
            "note: the tokenizer has {n_tok} tokens, {} has {}; the embedding follows the tokenizer",
            preset.name,
            preset.vocab_size()
        );
    }
    let spec = SynthSpec { like: like.to_string(), layers: a.layers, ftype, seed: a.seed };
    Ok(Synth::plan(&spec, tok)?)
}

pub fn run(a: SynthArgs) -> anyhow::Result<()> {
    if a.like == "list" {
        list();
        return Ok(());
    }
    let Some(out_path) = a.out.clone() else { bail!("give the GGUF file to write: whale synth OUT.gguf --like NAME") };
    if let Some(shape) = synth::janus::JANUS_SHAPES.iter().find(|s| s.name == a.like) {
        return run_janus(&out_path, shape, &a);
    }
    if a.like_args.ftype == SynthType::Fp8 {
        return run_fp8(&out_path, &a);
    }
    let s = plan(&a.like, &a.like_args)?;
    if a.dry_run {
        summary(&out_path, &s, &a.like_args, "would be");
        return Ok(());
    }
    let total = s.file_len();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    let written = match a.split_max_size {
        None => write_one(&out_path, |w| s.write(w, |n| bar.set_position(n))).map(|_| vec![out_path.clone()]),
        Some(max) => {
            let stem = out_path.to_string_lossy();
            let prefix = stem.strip_suffix(".gguf").unwrap_or(&stem).to_string();
            let parts = s.split(max);
            let paths: Vec<PathBuf> = (0..parts.len())
                .map(|k| PathBuf::from(whale_engine::formats::gguf::split_path(&prefix, k as u64, parts.len() as u64)))
                .collect();
            let mut done = 0;
            let mut result = Ok(());
            for (part, path) in parts.iter().zip(&paths) {
                match write_one(path, |w| s.write_part(part, w, done, |n| bar.set_position(n))) {
                    Ok(n) => done += n,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_err() {
                for p in &paths {
                    let _ = std::fs::remove_file(p);
                }
            }
            result.map(|_| paths)
        }
    };
    bar.finish_and_clear();
    let paths = written?;
    summary(&out_path, &s, &a.like_args, "written:");
    if paths.len() > 1 {
        println!("  in {} parts: {} … {}", paths.len(), paths[0].display(), paths[paths.len() - 1].display());
    }
    Ok(())
}

/// Where a Hugging Face tokenizer comes from: a folder, a tokenizer.json,
/// or a hub repository OWNER/REPO (fetched as `whale pull` does).
fn tokenizer_dir(spec: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.is_file() && spec.ends_with(".json") {
        return Ok(path.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    let tj = crate::pull::resolve_model(&format!("hf:{spec}/tokenizer.json"))
        .with_context(|| format!("--type fp8 needs a tokenizer.json (folder, file or OWNER/REPO); {spec:?}"))?;
    if let Err(e) = crate::pull::resolve_model(&format!("hf:{spec}/tokenizer_config.json")) {
        eprintln!("note: no tokenizer_config.json from {spec} ({e:#})");
    }
    Ok(tj.parent().unwrap_or(Path::new(".")).to_path_buf())
}

/// `whale synth OUT_DIR --like NAME --type fp8`: DeepSeek's FP8 folder.
/// Shards are written through `.partial` files; config.json comes last, so
/// a folder cut short by a full disk or a kill does not load as a model.
fn run_fp8(out: &Path, a: &SynthArgs) -> anyhow::Result<()> {
    let la = &a.like_args;
    let preset = presets::find(&a.like).ok_or_else(|| synth::SynthError::UnknownModel(a.like.clone()))?;
    let f = Fp8Folder::plan(preset, la.layers, la.seed)?;
    let shards = f.shards(a.split_max_size.unwrap_or(4_000_000_000));
    let (all, f8) = f.weight_counts();
    let report = |what: &str| {
        println!(
            "{}: {what} like {} ({} of {} layers), DeepSeek FP8 safetensors, {:.2} GiB in {} shard(s), seed {}",
            out.display(),
            preset.name,
            f.layers,
            preset.num_hidden_layers(),
            gib(f.data_bytes()),
            shards.len(),
            la.seed
        );
        println!("  {f8} of {all} weights in float8 e4m3 with 128x128 block scales; the rest bf16 (embedding, head, norms, router)");
    };
    if a.dry_run {
        report("would be");
        return Ok(());
    }
    let tok = tokenizer_dir(la.tokenizer.as_deref().unwrap_or(preset.tokenizer))?;
    if out.join("config.json").exists() {
        bail!("{} already holds a model (config.json); choose another folder", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let src = tok.join(name);
        if src.exists() {
            std::fs::copy(&src, out.join(name)).with_context(|| format!("copying {}", src.display()))?;
        } else if name == "tokenizer.json" {
            bail!("{} has no tokenizer.json", tok.display());
        }
    }
    let bar = indicatif::ProgressBar::new(f.data_bytes());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    let names = Fp8Folder::shard_names(shards.len());
    let mut done = 0u64;
    for (r, name) in shards.iter().zip(&names) {
        let n = write_one(&out.join(name), |w| {
            let mut here = 0;
            f.write_shard(r.clone(), w, |n| {
                here += n;
                bar.set_position(done + here);
            })
            .map(|_| here)
        })?;
        done += n;
    }
    bar.finish_and_clear();
    if shards.len() > 1 {
        std::fs::write(out.join("model.safetensors.index.json"), f.index_json(&shards))?;
    }
    std::fs::write(out.join("config.json"), f.config())?;
    report("written:");
    Ok(())
}

/// Writes one file through `<path>.partial`, renamed when complete: no half
/// file keeps the name, and a full disk leaves nothing behind.
fn write_one(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<u64>,
) -> anyhow::Result<u64> {
    let partial = path.with_extension(format!("{}.partial", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let file = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let n = match write(&mut w).and_then(|n| w.flush().map(|_| n)) {
        Ok(n) => n,
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(&partial);
            return Err(e).with_context(|| format!("writing {}", partial.display()));
        }
    };
    std::fs::rename(&partial, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(n)
}

/// `4G`, `500M`, `64K` or plain bytes; decimal units, as gguf-split's.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1_000),
        Some((i, 'M' | 'm')) => (&t[..i], 1_000_000),
        Some((i, 'G' | 'g')) => (&t[..i], 1_000_000_000),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (bytes, or a number with K, M or G)"))?;
    n.checked_mul(mul).filter(|&b| b > 0).ok_or_else(|| format!("{s:?}: the size must be between 1 byte and 16 EB"))
}

fn summary(path: &Path, s: &Synth, a: &LikeArgs, what: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}: {what} like {} ({} of {} layers), {}, {:.2} GiB, seed {}",
        path.display(),
        s.preset.name,
        s.layers,
        s.preset.num_hidden_layers(),
        a.ftype.name(),
        gib(s.file_len()),
        a.seed
    );
    for (ty, n, bytes) in synth::type_counts(s.tensors()) {
        let _ = writeln!(out, "  {:<5} {n:>5} tensors {:>10.2} MiB", ty.name(), bytes as f64 / (1 << 20) as f64);
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}
