//! `whale imagine`: text to image with Janus-Pro.
//!
//! The prompt goes through the model's chat template as one user message,
//! then `<begin_of_image>`; the model picks 576 image codes with
//! classifier-free guidance (the prompt and its unconditional twin as one
//! batch of two), and the VQ decoder turns them into a 384×384 PNG.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use whale_engine::text::chat_template::ChatMessage;
use whale_engine::vision::image::{encode_png, to_rgb8};
use whale_engine::vision::janus::{Janus, BEGIN_OF_IMAGE, CFG_RANGE};

use super::vision::Vision;
use super::ModelArgs;

/// Most images one command (or request) makes.
pub const MAX_COUNT: usize = 16;

#[derive(clap::Args, Debug)]
pub struct ImagineArgs {
    /// A Janus-Pro model folder (transformers' layout) or catalog name.
    pub model: String,
    /// What to draw.
    #[arg(short, long, required_unless_present = "from_codes")]
    pub prompt: Option<String>,
    /// Output PNG; with -n above 1, `-1`, `-2`, … are added before `.png`.
    #[arg(short, long, default_value = "whale.png")]
    pub output: PathBuf,
    /// Classifier-free guidance scale (1 is none; 5 is Janus-Pro's usual).
    #[arg(long, default_value_t = 5.0)]
    pub cfg: f32,
    /// Sampling temperature of the image codes; 0 takes the highest guided
    /// logit at each step (deterministic).
    #[arg(long, default_value_t = 1.0)]
    pub temp: f32,
    /// Seed of the first image (the k-th uses seed + k); default: from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images to make.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: usize,
    /// Print one JSON object: per image its file, seed and 576 codes.
    #[arg(long)]
    pub json: bool,
    /// Decode the codes in this JSON file (`[..576 codes..]`, `{"codes": [..]}`
    /// or this command's --json output) without running the language model.
    #[arg(long, conflicts_with = "prompt")]
    pub from_codes: Option<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

#[derive(Serialize, Deserialize)]
struct ImageOut {
    file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    seed: Option<u64>,
    codes: Vec<u32>,
    /// Seconds choosing the codes (the language model) and decoding them.
    #[serde(default)]
    codes_seconds: f64,
    #[serde(default)]
    decode_seconds: f64,
}

#[derive(Serialize)]
struct JsonOut {
    images: Vec<ImageOut>,
    seconds: f64,
}

/// The k-th output path of `count`.
fn output_path(base: &Path, k: usize, count: usize) -> PathBuf {
    if count == 1 {
        return base.to_path_buf();
    }
    let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "whale".into());
    base.with_file_name(format!("{stem}-{}.png", k + 1))
}

/// Codes from a file in any of the shapes `--from-codes` takes.
fn read_codes(path: &Path) -> anyhow::Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let list = |v: &serde_json::Value| -> Option<Vec<u32>> {
        v.as_array()?.iter().map(|x| x.as_u64().and_then(|c| u32::try_from(c).ok())).collect()
    };
    let sets = if let Some(c) = list(&v) {
        vec![c]
    } else if let Some(c) = v.get("codes").and_then(list) {
        vec![c]
    } else if let Some(imgs) = v.get("images").and_then(|i| i.as_array()) {
        imgs.iter().map(|i| i.get("codes").and_then(list)).collect::<Option<Vec<_>>>().unwrap_or_default()
    } else {
        Vec::new()
    };
    anyhow::ensure!(
        !sets.is_empty(),
        "{}: expected a list of codes, {{\"codes\": [...]}} or whale imagine --json output",
        path.display()
    );
    Ok(sets)
}

/// The generation prompt of `text` and its unconditional twin.
pub fn prompt_pair(v: &Vision, text: &str) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let mut ids = if v.tok.chat_template().is_some() {
        v.chat_ids(&[ChatMessage::new("user", text)], &[0])?
    } else {
        let mut ids: Vec<u32> = v.tok.bos_id().into_iter().collect();
        ids.extend(v.tok.encode(text, false)?);
        ids
    };
    ids.push(v.marks.begin);
    let bos = v.tok.bos_id().context("the tokenizer has no BOS token")?;
    let pad = v
        .tok
        .pad_id()
        .or_else(|| v.tok.token_to_id("<｜▁pad▁｜>"))
        .context("the tokenizer has no pad token for the unconditional prompt")?;
    let uncond = Janus::unconditional(&ids, bos, v.marks.begin, pad);
    Ok((ids, uncond))
}

pub fn run(a: ImagineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        CFG_RANGE.contains(&a.cfg),
        "--cfg {} is out of range: use {} to {} (1 is no guidance; 5 is usual)",
        a.cfg,
        CFG_RANGE.start(),
        CFG_RANGE.end()
    );
    anyhow::ensure!((0.0..=10.0).contains(&a.temp), "--temp {} is out of range 0 to 10", a.temp);
    anyhow::ensure!((1..=MAX_COUNT).contains(&a.count), "-n {} is out of range 1 to {MAX_COUNT}", a.count);
    let v = Vision::load(&a.model, &a.model_args)?;
    let t0 = std::time::Instant::now();
    let mut images = Vec::new();
    let size = v.janus.image_size();
    let quiet = a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let save = |codes: &[u32], file: &Path| -> anyhow::Result<f64> {
        let t = std::time::Instant::now();
        let px = v.janus.decode_codes(codes, |_, _| {})?;
        let seconds = t.elapsed().as_secs_f64();
        let png = encode_png(&to_rgb8(&px, size, size))?;
        std::fs::write(file, png).with_context(|| format!("writing {}", file.display()))?;
        Ok(seconds)
    };
    if let Some(path) = &a.from_codes {
        let sets = read_codes(path)?;
        for (k, codes) in sets.iter().enumerate() {
            let file = output_path(&a.output, k, sets.len());
            let decode_seconds = save(codes, &file)?;
            images.push(ImageOut { file, seed: None, codes: codes.clone(), codes_seconds: 0.0, decode_seconds });
        }
    } else {
        let text = a.prompt.as_deref().unwrap_or_default();
        let (prompt, uncond) = prompt_pair(&v, text)?;
        let seed0 = a.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        let n = v.janus.image_codes();
        for k in 0..a.count {
            let seed = seed0.wrapping_add(k as u64);
            let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(n as u64) };
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} image tokens, {per_sec}, {eta}")
                    .expect("valid template"),
            );
            bar.set_message(format!("image {}/{}", k + 1, a.count));
            let t = std::time::Instant::now();
            let codes = v.janus.generate_codes(&prompt, &uncond, a.cfg, a.temp, seed, |_, _| {
                bar.inc(1);
                true
            })?;
            bar.finish_and_clear();
            let codes_seconds = t.elapsed().as_secs_f64();
            let file = output_path(&a.output, k, a.count);
            let decode_seconds = save(&codes, &file)?;
            if !a.json {
                eprintln!(
                    "wrote {} (seed {seed}; {n} codes in {codes_seconds:.1}s, {:.1} a second; decoded in {decode_seconds:.1}s)",
                    file.display(),
                    n as f64 / codes_seconds
                );
            }
            images.push(ImageOut { file, seed: Some(seed), codes, codes_seconds, decode_seconds });
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    if a.json {
        println!("{}", serde_json::to_string(&JsonOut { images, seconds })?);
    } else {
        eprintln!(
            "[{} image(s) of {size}x{size} in {seconds:.1}s, {} after {BEGIN_OF_IMAGE}]",
            images.len(),
            v.janus.image_codes()
        );
    }
    Ok(())
}
