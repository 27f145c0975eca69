//! `whale train`: DeepSeek-R1's recipe on a small model. `sft` imitates a
//! flawed teacher (the starting policy); `grpo` runs GRPO with the task's
//! verifier (or a random reward, the control) and, unless `--init` names a
//! starting model, runs the SFT start first.

use std::path::{Path, PathBuf};

use anyhow::Context;
use whale_train::grpo::{self, GrpoSettings, LossKind, Progress, RewardKind, SftSettings};
use whale_train::tasks::Task;

#[derive(clap::Subcommand)]
pub enum TrainCommand {
    /// Imitate the task's flawed teacher (supervised fine-tuning).
    Sft(SftArgs),
    /// GRPO with rule-based rewards, rollouts through whale's engine.
    Grpo(GrpoArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub command: TrainCommand,
}

#[derive(clap::Args, Clone)]
pub struct CommonArgs {
    /// addition, multiplication, countdown or sorting.
    #[arg(long, default_value = "addition")]
    pub task: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory: checkpoint (resumed if present), log.jsonl, curves.svg.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start from this model folder (config.json + model.safetensors)
    /// instead of a new tiny model.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Print one JSON object with the results at the end.
    #[arg(long)]
    pub json: bool,
    /// Train LoRA adapters of this rank on every linear layer of --init
    /// instead of every weight (0: every weight).
    #[arg(long, default_value_t = 0)]
    pub lora_rank: usize,
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f32,
    /// Longest completion in tokens (default: the task's for a tiny model,
    /// 64 for a model that reads text).
    #[arg(long, default_value_t = 0)]
    pub max_new: usize,
    /// Held-out problems scored before and after (greedy, and 8 samples each).
    #[arg(long, default_value_t = whale_train::grpo::HELDOUT_N)]
    pub heldout: usize,
}

#[derive(clap::Args)]
pub struct SftArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, default_value_t = 600)]
    pub steps: u64,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f32,
    /// The teacher's slip probability (each carry dropped, …).
    #[arg(long, default_value_t = 0.7)]
    pub slip: f64,
    /// Width and depth of a new tiny llama.
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
}

#[derive(clap::Args)]
pub struct GrpoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Prompts a step.
    #[arg(long, default_value_t = 16)]
    pub prompts: usize,
    /// Completions a prompt (G ≥ 2).
    #[arg(short = 'G', long, default_value_t = 8)]
    pub group: usize,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f32,
    /// KL coefficient to the starting policy (k3 estimator); 0 skips it.
    #[arg(long, default_value_t = 0.0)]
    pub beta: f32,
    /// grpo, dr_grpo or dapo.
    #[arg(long, default_value = "grpo")]
    pub loss: String,
    /// Divide advantages by the group's std (default: on for grpo and dapo, off for dr_grpo).
    #[arg(long)]
    pub std_norm: Option<bool>,
    /// Drop groups whose rewards are all equal (DAPO's dynamic sampling).
    #[arg(long)]
    pub dynamic_sampling: bool,
    /// verifier, or random (the control arm).
    #[arg(long, default_value = "verifier")]
    pub reward: String,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Held-out greedy evaluation every N steps (0: only before and after).
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// SFT steps of the starting policy when no --init is given.
    #[arg(long, default_value_t = 600)]
    pub sft_steps: u64,
}

fn threads(t: Option<usize>) -> anyhow::Result<usize> {
    let t = t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!((1..=1024).contains(&t), "--threads must be between 1 and 1024, got {t}");
    Ok(t)
}

fn bar(steps: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(steps);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} {{msg}} [{{elapsed}}<{{eta}}]"
        ))
        .expect("template"),
    );
    pb
}

fn run_sft(dir: &Path, s: &SftSettings, init: Option<&Path>, threads: usize) -> anyhow::Result<PathBuf> {
    let pb = bar(s.steps, "sft ");
    let mut report = |p: &Progress| {
        pb.set_position(p.step);
        pb.set_message(format!("loss {:.3}", -p.reward));
    };
    let out = grpo::sft(dir, s, init, threads, &mut report)?;
    pb.finish_and_clear();
    Ok(out)
}

/// `--init`: a path, or a catalog name / hub spec as `whale run` takes.
fn resolve_init(init: &Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    match init {
        Some(p) if p.exists() => Ok(Some(p.clone())),
        Some(p) => Ok(Some(crate::pull::resolve_model(&p.to_string_lossy())?)),
        None => Ok(None),
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    match args.command {
        TrainCommand::Sft(mut a) => {
            a.common.init = resolve_init(&a.common.init)?;
            let c = &a.common;
            let task = Task::from_name(&c.task)?;
            let th = threads(c.threads)?;
            let out = c.out.clone().unwrap_or_else(|| format!("runs/sft-{}-{}", c.task, c.seed).into());
            let s = SftSettings {
                steps: a.steps,
                batch: a.batch,
                lr: a.lr,
                slip: a.slip,
                hidden: a.hidden,
                layers: a.layers,
                lora_rank: c.lora_rank,
                lora_alpha: c.lora_alpha,
                max_new: c.max_new,
                ..SftSettings::new(task, c.seed)
            };
            let t0 = std::time::Instant::now();
            let model = run_sft(&out, &s, c.init.as_deref(), th)?;
            let policy = whale_train::rollout::load_policy(&model, th)?;
            let codec = match &c.init {
                Some(p) => grpo::Codec::for_model(p, &whale_train::checkpoint::load_model(&model)?.0)?,
                None => grpo::Codec::Tiny,
            };
            let max_new = if c.max_new > 0 {
                c.max_new
            } else if matches!(codec, grpo::Codec::Tiny) {
                task.max_answer_tokens()
            } else {
                64
            };
            let e = grpo::evaluate(&*policy, &codec, &grpo::heldout_set(task, c.heldout), max_new, true)?;
            if c.json {
                let v = serde_json::json!({"model": model, "heldout": e.greedy, "heldout_lenient": e.greedy_lenient,
                    "pass1": e.pass1, "pass8": e.pass8, "heldout_n": e.n, "steps": a.steps, "seconds": t0.elapsed().as_secs_f64()});
                println!("{v}");
            } else {
                println!(
                    "model: {}\nheld-out greedy exact match {:.3} (n={}), pass@1 {:.3}, pass@8 {:.3}",
                    model.display(),
                    e.greedy,
                    e.n,
                    e.pass1,
                    e.pass8
                );
            }
            Ok(())
        }
        TrainCommand::Grpo(mut a) => {
            a.common.init = resolve_init(&a.common.init)?;
            let c = &a.common;
            let task = Task::from_name(&c.task)?;
            let th = threads(c.threads)?;
            let loss = LossKind::from_name(&a.loss)?;
            let reward = match a.reward.as_str() {
                "verifier" => RewardKind::Verifier,
                "random" => RewardKind::Random,
                other => anyhow::bail!("unknown --reward {other:?}: verifier or random"),
            };
            let s = GrpoSettings {
                steps: a.steps,
                prompts: a.prompts,
                group: a.group,
                lr: a.lr,
                beta: a.beta,
                eps_high: if loss == LossKind::Dapo { 0.28 } else { 0.2 },
                loss,
                std_norm: a.std_norm.unwrap_or(loss != LossKind::DrGrpo),
                dynamic_sampling: a.dynamic_sampling,
                reward,
                temperature: a.temperature,
                lora_rank: c.lora_rank,
                lora_alpha: c.lora_alpha,
                max_new: c.max_new,
                ..GrpoSettings::new(task, c.seed)
            };
            s.validate()?;
            let out = c.out.clone().unwrap_or_else(|| format!("runs/grpo-{}-{}-{}", c.task, c.seed, a.reward).into());
            let init = match &c.init {
                Some(d) => d.clone(),
                None => {
                    let sft = SftSettings { steps: a.sft_steps, ..SftSettings::new(task, c.seed) };
                    run_sft(&out.join("sft"), &sft, None, th).context("the SFT start")?
                }
            };
            let pb = bar(s.steps, "grpo");
            let mut report = |p: &Progress| {
                pb.set_position(p.step);
                let held = p.heldout.map_or(String::new(), |h| format!(" held-out {h:.3}"));
                pb.set_message(format!("reward {:.3} acc {:.3}{held}", p.reward, p.accuracy));
            };
            let r = grpo::grpo(&out.join("grpo"), &s, &init, th, a.eval_every, c.heldout, &mut report)?;
            pb.finish_and_clear();
            if c.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "held-out greedy exact match {:.3} -> {:.3} (n={}), pass@8 {:.3} -> {:.3}\n{} steps, {} rollouts, {:.0} s\nlog {}\nplot {}\ncheckpoint {}\nmodel {}",
                    r.heldout_before, r.heldout_after, r.heldout_n, r.pass8_before, r.pass8_after, r.steps, r.rollouts, r.seconds, r.log, r.plot, r.checkpoint, r.model
                );
            }
            Ok(())
        }
    }
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A trained model folder, or a LoRA checkpoint (adapter_config.json).
    pub model: PathBuf,
    /// The GGUF file to write.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// The base model a LoRA checkpoint adapts, and whose tokenizer the
    /// GGUF carries (default: the adapter's base_model_name_or_path).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Matrix type: f32 or f16 (vectors stay f32).
    #[arg(long, default_value = "f16")]
    pub r#type: String,
}

/// `whale export`: merge LoRA and write a GGUF that `whale run` and
/// `whale serve` load.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    use whale_train::checkpoint;
    use whale_train::export::{self, ExportType};
    let ty = match a.r#type.as_str() {
        "f32" => ExportType::F32,
        "f16" => ExportType::F16,
        other => anyhow::bail!("unknown --type {other:?}: f32 or f16"),
    };
    let adapter = checkpoint::adapter_config(&a.model)?;
    let mut base = a.base.clone();
    let model = if adapter.is_some() {
        if base.is_none() {
            let text = std::fs::read_to_string(a.model.join("adapter_config.json"))?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            base = v["base_model_name_or_path"].as_str().filter(|s| !s.is_empty()).map(PathBuf::from);
        }
        let b = base.as_ref().context("a LoRA checkpoint needs its base model (--base)")?;
        let (cfg, params) = checkpoint::load_model(b).with_context(|| format!("loading the base {}", b.display()))?;
        checkpoint::load_adapter(&a.model, whale_train::model::Model::new(cfg, params)?)?
    } else {
        let (cfg, params) = checkpoint::load_model(&a.model)?;
        whale_train::model::Model::new(cfg, params)?
    };
    // A folder with its own tokenizer (a full fine-tune of a real model) is its own base.
    if base.is_none() && a.model.join("tokenizer.json").exists() {
        base = Some(a.model.clone());
    }
    let tok = export::tokenizer_metadata(base.as_deref(), model.cfg.vocab_size)?;
    let name = a.model.file_name().map_or("whale-trained".into(), |n| n.to_string_lossy().into_owned());
    let n = export::write_gguf(&model, tok, &name, ty, &a.out)?;
    println!(
        "wrote {} ({} bytes, {} parameters{})",
        a.out.display(),
        n,
        model.params.count(),
        if model.lora.is_some() { ", LoRA merged" } else { "" }
    );
    Ok(())
}
