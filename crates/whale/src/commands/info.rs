//! `whale info`: what a model file holds, printed before anything is checked
//! that could fail, so a truncated download still shows its header.

use anyhow::Context;
use whale_engine::formats::gguf::GgufFile;
use whale_engine::formats::weights::{HfDir, WeightStore};
use whale_engine::models::deepseek_v3::DeepseekParams;
use whale_engine::models::Architecture;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// GGUF file, Hugging Face folder, or catalog name.
    pub model: String,
    /// Print every tensor (default: the first 12 and a count).
    #[arg(long)]
    pub all_tensors: bool,
}

/// A size in decimal units (`4.68 GB`).
fn human(bytes: u64) -> String {
    indicatif::DecimalBytes(bytes).to_string()
}

/// KV-cache sizes of a DeepSeek model: the latent MLA caches against the
/// decompressed per-head K and V a naive implementation would hold.
fn mla_report(p: &DeepseekParams) {
    let lat = p.latent_width();
    let full = p.n_head * (p.qk_head_dim() + p.v_head_dim);
    let l = p.n_layers;
    println!("MLA KV cache per token ({} layers):", l);
    println!("  latent (kv_lora_rank {} + rope {}) = {lat} values per layer", p.kv_lora_rank, p.qk_rope_head_dim);
    println!(
        "    as bf16: {} bytes; as f16 (whale's default cache): {} bytes; as f32: {} bytes",
        lat * 2 * l,
        lat * 2 * l,
        lat * 4 * l
    );
    println!(
        "  decompressed per-head K/V: {} × ({} + {}) = {full} values per layer, {} bytes as bf16 ({:.1}× the latent)",
        p.n_head,
        p.qk_head_dim(),
        p.v_head_dim,
        full * 2 * l,
        full as f64 / lat as f64
    );
    weights_report(p);
}

/// What a DeepSeek model needs, from its hyper-parameters alone: weights
/// per format, bytes one token reads, and the KV cache of a few contexts.
fn weights_report(p: &DeepseekParams) {
    let c = p.parameter_counts();
    let gb = |b: f64| format!("{:.1} GB", b / 1e9);
    let bn = |n: usize| format!("{:.2} B", n as f64 / 1e9);
    let rest = (c.embedding + c.head + c.other) as f64;
    // FP8 projections at 1 byte plus a 4-byte scale per 128×128 block.
    let fp8 = |n: usize| n as f64 * (1.0 + 4.0 / 16384.0);
    println!(
        "weights: {} ({} without the {} MTP layer(s)); one decoded token reads {}",
        bn(c.total()),
        bn(c.total() - c.mtp),
        p.num_nextn_predict_layers,
        bn(c.active)
    );
    println!(
        "  FP8 as released, kept (--fp8 keep): {} ({} read per token); --fp8 q8_0: {}; --fp8 f32: {}; bf16: {}",
        gb(fp8(c.matrices + c.mtp) + 2.0 * rest),
        gb(fp8(c.active - c.head) + 2.0 * c.head as f64),
        gb((c.matrices + c.mtp) as f64 * 34.0 / 32.0 + 2.0 * rest),
        gb(4.0 * c.total() as f64),
        gb(2.0 * c.total() as f64)
    );
    let kv = p.latent_width() * p.n_layers * 2;
    print!("  KV cache (f16 latent):");
    for ctx in [4096usize, 32768, p.context_length] {
        print!(" {} for {ctx} tokens;", gb((kv * ctx) as f64));
    }
    println!();
    println!(
        "  whale maps the weights (file pages: a model larger than RAM pages from disk) and holds the KV cache in RAM"
    );
}

/// A Janus checkpoint: its three parts, after loading them (which checks
/// every tensor's shape).
fn janus_info(path: &std::path::Path) -> anyhow::Result<()> {
    use whale_engine::vision::janus::Janus;
    let store = WeightStore::open(path)?;
    let j = Janus::load(&store, whale_engine::models::LoadOptions { threads: 1, ..Default::default() })
        .with_context(|| format!("loading {}", path.display()))?;
    let (lm, v, q) = (&j.lm.params, &j.vision.cfg, &j.vq.cfg);
    println!("{} (Janus: understands and draws images)", path.display());
    println!(
        "language model: llama, {} layers, hidden {}, {} heads ({} KV), vocabulary {}, context {}",
        lm.n_layers, lm.hidden_size, lm.n_head, lm.n_kv_head, lm.vocab_size, lm.context_length
    );
    println!(
        "vision encoder: SigLIP, {} layers, hidden {}, {} heads, {}x{} images in {}-pixel patches = {} image tokens; \
         aligner of depth {} to width {}; image token id {}",
        v.num_hidden_layers,
        v.hidden_size,
        v.num_attention_heads,
        v.image_size,
        v.image_size,
        v.patch_size,
        j.image_rows(),
        v.depth,
        v.projection_dim,
        j.image_token_id
    );
    println!(
        "image generation: {} codes of a {}-entry codebook (dimension {}), head and aligner of width {}",
        j.image_codes(),
        q.num_embeddings,
        q.embed_dim,
        q.projection_dim
    );
    println!(
        "VQ decoder: {}x{} codes to {}x{} pixels, channels {} x {:?}, {} ResNet blocks a level",
        j.vq.grid,
        j.vq.grid,
        j.image_size(),
        j.image_size(),
        q.base_channels,
        q.channel_multiplier,
        q.num_res_blocks + 1
    );
    Ok(())
}

pub fn run(a: InfoArgs) -> anyhow::Result<()> {
    let path = crate::pull::resolve_model(&a.model)?;
    if path.is_dir() && whale_engine::vision::janus::Janus::is_janus(&path) {
        janus_info(&path)?;
    }
    // A folder with only config.json: describe the architecture without weights.
    if path.is_dir()
        && path.join("config.json").exists()
        && !path.join("model.safetensors").exists()
        && !path.join("model.safetensors.index.json").exists()
    {
        let cfg_path = path.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", cfg_path.display()))?;
        let mt = cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        println!("{} (config.json only, no weights)", path.display());
        match Architecture::from_name(mt)? {
            Architecture::Deepseek => mla_report(&DeepseekParams::from_hf(&cfg)?),
            other => println!("architecture {}", other.name()),
        }
        return Ok(());
    }
    let store = WeightStore::open(&path)?;
    match &store {
        WeightStore::Gguf(g) => gguf_info(g, &a)?,
        WeightStore::Hf(h) => hf_info(h),
    }
    // Build the model without a tokenizer to report the cache size and to
    // surface shape errors.
    let arch = match &store {
        WeightStore::Gguf(g) => g.architecture().unwrap_or("").to_string(),
        WeightStore::Hf(h) => h.config.get("model_type").and_then(|v| v.as_str()).unwrap_or("").to_string(),
    };
    if Architecture::from_name(&arch)? == Architecture::Deepseek {
        let p = match &store {
            WeightStore::Gguf(g) => DeepseekParams::from_gguf(g)?,
            WeightStore::Hf(h) => DeepseekParams::from_hf(&h.config)?,
        };
        mla_report(&p);
    }
    let model = whale_engine::models::load_weights(&store, &arch, Default::default())?;
    let i = model.info();
    println!("model:");
    println!("  architecture       {}", i.architecture.name());
    println!("  layers             {}", i.n_layers);
    println!("  hidden size        {}", i.hidden_size);
    println!("  vocabulary         {}", i.vocab_size);
    println!("  context length     {}", i.context_length);
    println!(
        "  KV cache per token {} as f16, {} as f32 ({} values per layer)",
        human(i.kv_bytes_per_token(whale_engine::models::CacheType::F16) as u64),
        human(i.kv_bytes_per_token(whale_engine::models::CacheType::F32) as u64),
        i.kv_values_per_token_layer
    );
    Ok(())
}

fn gguf_info(g: &GgufFile, a: &InfoArgs) -> anyhow::Result<()> {
    println!(
        "GGUF version {}, {} metadata entries, {} tensors, {} bytes",
        g.version,
        g.metadata.len(),
        g.tensors.len(),
        g.file_len()
    );
    let parts = g.parts();
    if parts.len() > 1 {
        println!("split into {} parts:", parts.len());
        for (path, len) in &parts {
            println!("  {} ({len} bytes)", path.map_or("(in memory)".into(), |p| p.display().to_string()));
        }
    }
    println!("metadata:");
    for (k, v) in &g.metadata {
        if k == "tokenizer.chat_template" {
            continue;
        }
        println!("  {k:<44} {:<4} {v}", v.type_name());
    }
    match g.get_str("tokenizer.chat_template") {
        Some(t) => {
            println!("chat template ({} chars):", t.len());
            for line in t.lines().take(8) {
                println!("  | {line}");
            }
            if t.lines().count() > 8 {
                println!("  | ...");
            }
        }
        None => println!("chat template: none"),
    }
    let mut by_type: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
    for t in &g.tensors {
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    let total: u64 = g.tensors.iter().map(|t| t.size).sum();
    let n_params: u64 = g.tensors.iter().map(|t| t.n_elements()).sum();
    println!("tensors: {} ({:.3} B parameters, {})", g.tensors.len(), n_params as f64 / 1e9, human(total));
    for (ty, (n, b)) in &by_type {
        println!("  {ty:<6} {n:>5} tensors {:>12}", human(*b));
    }
    let shown = if a.all_tensors { g.tensors.len() } else { 12 };
    for t in g.tensors.iter().take(shown) {
        let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        println!("  {:<36} {:<6} [{}] {}", t.name, t.ty.name(), dims.join(", "), human(t.size));
    }
    if g.tensors.len() > shown {
        println!("  ... {} more (--all-tensors)", g.tensors.len() - shown);
    }
    // A truncated file: the header above is intact, the data is not.
    g.check_tensors()?;
    Ok(())
}

fn hf_info(h: &HfDir) {
    println!("Hugging Face folder {}", h.dir.display());
    println!("config.json:");
    if let Some(obj) = h.config.as_object() {
        for (k, v) in obj {
            println!("  {k:<32} {v}");
        }
    }
    let mut names: Vec<&str> = h.tensor_names().collect();
    names.sort();
    println!("tensors: {}", names.len());
    for n in names.iter().take(12) {
        println!("  {n}");
    }
}
