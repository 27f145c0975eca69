//! The training loops: supervised imitation of the flawed teacher (`sft`,
//! the starting policy) and GRPO on the verifier's rewards (`grpo`), with
//! held-out evaluation.
//!
//! GRPO (DeepSeekMath §4.1; R1 eqs. 1–3): for each prompt, G completions are
//! sampled from the current policy π_old; each gets a reward r_i and the
//! group-normalised advantage A_i = (r_i − mean r) / std r (std-norm on)
//! or r_i − mean r; every token of completion i is pushed by
//! min(ρ A_i, clip(ρ, 1−ε_low, 1+ε_high) A_i) with ρ = π/π_old, minus
//! β · KL(π ‖ π_ref) estimated per token by k3 = e^{ref−lp} − (ref−lp) − 1.
//! The losses differ in how token terms are averaged: `grpo` averages over
//! each completion and then over completions; `dr_grpo` divides every sum
//! by the same constant (max tokens × completions), and does not divide by
//! the std; `dapo` averages over all tokens of the batch, clips higher
//! (ε_high 0.28) and can drop groups whose rewards are all equal.
//!
//! One policy-gradient step is taken per batch of rollouts, so π_old is the
//! trainer's own log-probabilities before the step (ρ = 1, the clipped and
//! plain objectives have the same gradient); the engine's sampling
//! log-probabilities are compared with them every step (`logp_gap`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Log, RunState};
use crate::model::{LlamaConfig, Lora, Model, Params};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::rollout::{self, Rollout};
use crate::tasks::{self, Problem, Task};
use crate::TrainError;
use whale_engine::text::chat_template::{ChatMessage, ChatTemplate};
use whale_engine::text::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    Grpo,
    DrGrpo,
    Dapo,
}

impl LossKind {
    pub fn from_name(s: &str) -> Result<LossKind, TrainError> {
        match s {
            "grpo" => Ok(LossKind::Grpo),
            "dr_grpo" => Ok(LossKind::DrGrpo),
            "dapo" => Ok(LossKind::Dapo),
            _ => Err(TrainError::Input(format!("unknown loss {s:?}: grpo, dr_grpo or dapo"))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// The task's rule-based verifier (correctness + a small format reward).
    Verifier,
    /// A coin flip per completion, independent of it: the control arm.
    Random,
}

/// Supervised imitation of the teacher.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SftSettings {
    pub task: String,
    pub seed: u64,
    pub steps: u64,
    pub batch: usize,
    pub lr: f32,
    /// The teacher's slip probability (see [`tasks::teacher`]).
    pub slip: f64,
    /// Shape of a model trained from scratch (ignored when starting from one).
    pub hidden: usize,
    pub layers: usize,
    /// LoRA rank on every linear layer (0: train every weight).
    pub lora_rank: usize,
    pub lora_alpha: f32,
    /// Longest completion in tokens (0: the task's own for the tiny
    /// vocabulary, 64 for a model that reads text).
    pub max_new: usize,
}

impl SftSettings {
    pub fn new(task: Task, seed: u64) -> SftSettings {
        SftSettings {
            task: task.name().into(),
            seed,
            steps: 600,
            batch: 64,
            lr: 3e-3,
            slip: 0.7,
            hidden: 64,
            layers: 2,
            lora_rank: 0,
            lora_alpha: 16.0,
            max_new: 0,
        }
    }
}

/// GRPO.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GrpoSettings {
    pub task: String,
    pub seed: u64,
    pub steps: u64,
    /// Prompts a step.
    pub prompts: usize,
    /// Completions a prompt (G).
    pub group: usize,
    pub lr: f32,
    /// KL coefficient β (k3 to the starting policy); 0 skips the reference.
    pub beta: f32,
    pub eps_low: f32,
    pub eps_high: f32,
    pub loss: LossKind,
    pub std_norm: bool,
    pub dynamic_sampling: bool,
    pub reward: RewardKind,
    pub temperature: f32,
    pub max_grad_norm: f64,
    /// LoRA rank on every linear layer (0: train every weight).
    pub lora_rank: usize,
    pub lora_alpha: f32,
    /// Longest completion in tokens (0: the task's own for the tiny
    /// vocabulary, 64 for a model that reads text).
    pub max_new: usize,
}

impl GrpoSettings {
    pub fn new(task: Task, seed: u64) -> GrpoSettings {
        GrpoSettings {
            task: task.name().into(),
            seed,
            steps: 300,
            prompts: 16,
            group: 8,
            lr: 3e-4,
            beta: 0.0,
            eps_low: 0.2,
            eps_high: 0.2,
            loss: LossKind::Grpo,
            std_norm: true,
            dynamic_sampling: false,
            reward: RewardKind::Verifier,
            temperature: 1.0,
            max_grad_norm: 1.0,
            lora_rank: 0,
            lora_alpha: 16.0,
            max_new: 0,
        }
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        Task::from_name(&self.task)?;
        let bad = |m: &str| Err(TrainError::Input(m.into()));
        if self.group < 2 {
            return bad("the group size G must be at least 2: advantages compare completions of one prompt");
        }
        if self.prompts == 0 || self.group * self.prompts > 4096 {
            return bad("prompts × group must be between 2 and 4096");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be positive and finite");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0 && self.temperature <= 10.0) {
            return bad("the rollout temperature must be in (0, 10]");
        }
        let ok =
            self.beta >= 0.0 && self.beta.is_finite() && (0.0..1.0).contains(&self.eps_low) && self.eps_high >= 0.0;
        if !ok {
            return bad("beta must be ≥ 0, eps_low in [0, 1), eps_high ≥ 0");
        }
        Ok(())
    }
}

/// What the loops report as they go (the binary draws the progress bar).
#[derive(Clone, Debug)]
pub struct Progress {
    pub step: u64,
    pub steps: u64,
    pub reward: f64,
    pub accuracy: f64,
    pub heldout: Option<f64>,
}

/// Held-out scores of a policy.
#[derive(Clone, Copy, Debug, Serialize, Default)]
pub struct Eval {
    /// Greedy exact match (strict: the tagged answer).
    pub greedy: f64,
    /// Greedy, lenient (the last number counts).
    pub greedy_lenient: f64,
    /// Mean exact match of samples at temperature 1.
    pub pass1: f64,
    /// Fraction of problems with a correct answer among 8 samples.
    pub pass8: f64,
    pub n: usize,
}

/// The fixed held-out problems of a task (the same for every seed).
pub fn heldout_set(task: Task, n: usize) -> Vec<Problem> {
    let mut rng = StdRng::seed_from_u64(0x5EED_0E7A);
    let mut seen = HashSet::new();
    let mut out = vec![];
    let mut tries = 0;
    while out.len() < n && tries < n * 50 {
        tries += 1;
        let p = Problem::heldout(task, &mut rng);
        if seen.insert(p.prompt.clone()) {
            out.push(p);
        }
    }
    out
}

/// How problems become token ids and completions become text for the
/// model being trained: the tiny character vocabulary, or a real model's
/// tokenizer and chat template.
pub enum Codec {
    Tiny,
    Text { tok: Box<Tokenizer>, template: Option<Box<ChatTemplate>> },
}

impl Codec {
    /// The tiny vocabulary for a model of that size without a tokenizer of
    /// its own; else the tokenizer of the model file or folder at `path`.
    pub fn for_model(path: &Path, cfg: &LlamaConfig) -> Result<Codec, TrainError> {
        use whale_engine::formats::weights::WeightStore;
        let tok = if path.is_dir() && !path.join("tokenizer.json").exists() {
            None
        } else {
            match WeightStore::open(path).map_err(whale_engine::models::ModelError::from)? {
                WeightStore::Gguf(g) => Some(Tokenizer::from_gguf(&g).map_err(whale_engine::models::ModelError::from)?),
                WeightStore::Hf(h) => {
                    Some(Tokenizer::from_hf_dir(&h.dir).map_err(whale_engine::models::ModelError::from)?)
                }
            }
        };
        match tok {
            None if cfg.vocab_size == tasks::VOCAB.len() => Ok(Codec::Tiny),
            None => Err(TrainError::Input(format!("{} has no tokenizer.json", path.display()))),
            Some(tok) => {
                let template = match tok.chat_template() {
                    Some(src) => {
                        Some(ChatTemplate::new(src).map_err(|e| TrainError::Input(format!("chat template: {e}")))?)
                    }
                    None => None,
                };
                Ok(Codec::Text { tok: Box::new(tok), template: template.map(Box::new) })
            }
        }
    }

    pub fn prompt_ids(&self, p: &Problem) -> Result<Vec<u32>, TrainError> {
        match self {
            Codec::Tiny => Ok(p.prompt_ids()),
            Codec::Text { tok, template } => {
                let user = format!("{} Give the final answer between <answer> and </answer>.", p.question());
                let text = match template {
                    Some(t) => t
                        .render(&[ChatMessage::new("user", user)], true, &tok.bos_token(), &tok.eos_token(), None)
                        .map_err(|e| TrainError::Input(format!("chat template: {e}")))?,
                    None => format!("{user}\\n"),
                };
                // The template writes the control tokens; the question is plain text.
                tok.encode(&text, template.is_none() && tok.add_bos()).map_err(|e| TrainError::Input(e.to_string()))
            }
        }
    }

    /// A completion's ids (for imitation).
    pub fn completion_ids(&self, text: &str) -> Result<Vec<u32>, TrainError> {
        match self {
            Codec::Tiny => tasks::encode(text),
            Codec::Text { tok, .. } => {
                let mut ids = tok.encode_guarded(text, false).map_err(|e| TrainError::Input(e.to_string()))?;
                ids.extend(tok.eos_id());
                Ok(ids)
            }
        }
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Codec::Tiny => tasks::decode(ids),
            Codec::Text { tok, .. } => tok.decode_skip_special(ids),
        }
    }

    fn stops(&self) -> Vec<u32> {
        match self {
            Codec::Tiny => vec![tasks::EOS, tasks::ANSWER_CLOSE],
            Codec::Text { tok, .. } => tok.eog_ids(),
        }
    }

    /// A completion is finished once its text closes the answer.
    fn done(&self, ids: &[u32]) -> bool {
        match self {
            Codec::Tiny => false,
            Codec::Text { tok, .. } => {
                let tail = &ids[ids.len().saturating_sub(6)..];
                tok.decode(tail).contains("</answer>")
            }
        }
    }

    fn max_new(&self, task: Task, asked: usize) -> usize {
        match (asked, self) {
            (0, Codec::Tiny) => task.max_answer_tokens(),
            (0, Codec::Text { .. }) => 64,
            (n, _) => n,
        }
    }
}

/// Sample through the engine with a codec's stops.
#[allow(clippy::too_many_arguments)]
fn rollouts(
    policy: &dyn whale_engine::models::Model,
    codec: &Codec,
    prompts: &[Vec<u32>],
    g: usize,
    max_new: usize,
    temperature: f32,
    rng: &mut StdRng,
) -> Result<Vec<Rollout>, TrainError> {
    rollout::sample(policy, prompts, g, max_new, temperature, &codec.stops(), &|ids| codec.done(ids), rng)
}

/// Score a policy on held-out problems with the engine: greedy, and
/// optionally 8 samples each for pass@1 and pass@8.
pub fn evaluate(
    policy: &dyn whale_engine::models::Model,
    codec: &Codec,
    problems: &[Problem],
    max_new: usize,
    samples: bool,
) -> Result<Eval, TrainError> {
    if problems.is_empty() {
        return Ok(Eval::default());
    }
    let prompts: Vec<Vec<u32>> = problems.iter().map(|p| codec.prompt_ids(p)).collect::<Result<_, _>>()?;
    let mut rng = StdRng::seed_from_u64(0xE7A1);
    let g = rollouts(policy, codec, &prompts, 1, max_new, 0.0, &mut rng)?;
    let n = problems.len() as f64;
    let mut e = Eval { n: problems.len(), ..Default::default() };
    for (r, p) in g.iter().zip(problems) {
        let s = tasks::score(p, &codec.decode(&r.completion));
        e.greedy += s.strict as u8 as f64 / n;
        e.greedy_lenient += s.lenient as u8 as f64 / n;
    }
    if samples {
        let k = 8;
        let rs = rollouts(policy, codec, &prompts, k, max_new, 1.0, &mut rng)?;
        for (i, p) in problems.iter().enumerate() {
            let ok: Vec<bool> =
                rs[i * k..(i + 1) * k].iter().map(|r| tasks::score(p, &codec.decode(&r.completion)).strict).collect();
            e.pass1 += ok.iter().filter(|&&b| b).count() as f64 / (k as f64 * n);
            e.pass8 += ok.iter().any(|&b| b) as u8 as f64 / n;
        }
    }
    Ok(e)
}

/// The 95 % Wilson score interval of `k` successes in `n`.
pub fn wilson(p: f64, n: usize) -> (f64, f64) {
    let (z, n) = (1.959_964, n as f64);
    let d = 1.0 + z * z / n;
    let c = (p + z * z / (2.0 * n)) / d;
    let h = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / d;
    ((c - h).max(0.0), (c + h).min(1.0))
}

/// The model folder the engine samples from, rewritten every step.
fn policy_dir(run: &Path) -> PathBuf {
    run.join("policy")
}

fn settings_json<T: Serialize>(kind: &str, s: &T) -> serde_json::Value {
    serde_json::json!({ "kind": kind, "settings": s })
}

/// Start or resume a run in `run`: the checkpoint there if its settings
/// match, else `init()`; under LoRA (`rank > 0`) fresh adapters on it.
#[allow(clippy::too_many_arguments)]
fn start(
    run: &Path,
    settings: &serde_json::Value,
    opt_cfg: AdamWConfig,
    base: &Path,
    lora: (usize, f32),
    seed: u64,
    init: impl FnOnce() -> Result<(LlamaConfig, Params), TrainError>,
) -> Result<(Model, AdamW, RunState), TrainError> {
    std::fs::create_dir_all(run).map_err(crate::io_err(run))?;
    if let Some((model, opt, state)) = checkpoint::load_checkpoint(run, base, opt_cfg)? {
        if &state.settings != settings {
            return Err(TrainError::Input(format!(
                "{} holds a run with other settings ({}); use another --out or the same settings to resume",
                run.display(),
                state.settings
            )));
        }
        return Ok((model, opt, state));
    }
    let (cfg, params) = init()?;
    let mut model = Model::new(cfg, params)?;
    if lora.0 > 0 {
        let adapters = Lora::new(&model.cfg, lora.0, lora.1, &mut StdRng::seed_from_u64(seed ^ 0x10AA))?;
        model = model.with_lora(adapters)?;
    }
    let opt = AdamW::new(opt_cfg, model.trainable());
    let state = RunState {
        step: 0,
        settings: settings.clone(),
        heldout: vec![],
        heldout_before: None,
        rollouts: 0,
        seconds: 0.0,
    };
    Ok((model, opt, state))
}

/// Rows whose next token is a completion token: `(row mask, rows)`.
fn completion_rows(spans: &[std::ops::Range<usize>], plens: &[usize]) -> (Vec<bool>, usize) {
    let n = spans.last().map_or(0, |s| s.end);
    let mut need = vec![false; n];
    for (sp, &p) in spans.iter().zip(plens) {
        need[sp.start + p - 1..sp.end - 1].iter_mut().for_each(|x| *x = true);
    }
    (need, n)
}

fn spans_of(seqs: &[Vec<u32>]) -> Vec<std::ops::Range<usize>> {
    whale_engine::models::batch_spans(seqs.iter().map(Vec::len))
}

/// `lr` with a linear warm-up over the first 5 % of steps.
fn lr_at(lr: f32, step: u64, steps: u64) -> f32 {
    let warm = (steps / 20).max(1);
    lr * ((step + 1) as f32 / warm as f32).min(1.0)
}

/// Supervised imitation of the flawed teacher: from `init` (a model file or
/// folder, fully or with LoRA) or a new tiny model of `s.hidden × s.layers`.
/// Returns the checkpoint folder (`run/checkpoint`) and the codec.
pub fn sft(
    run: &Path,
    s: &SftSettings,
    init: Option<&Path>,
    threads: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PathBuf, TrainError> {
    let task = Task::from_name(&s.task)?;
    if s.batch == 0 || s.batch > 4096 || !(s.lr.is_finite() && s.lr > 0.0) || !(0.0..=1.0).contains(&s.slip) {
        return Err(TrainError::Input("batch must be 1..=4096, lr positive, slip in [0, 1]".into()));
    }
    if s.lora_rank > 0 && init.is_none() {
        return Err(TrainError::Input("LoRA needs a model to adapt (--init)".into()));
    }
    let settings = settings_json("sft", &(s, init.map(|p| p.display().to_string())));
    let opt_cfg = AdamWConfig { lr: s.lr, weight_decay: 0.01, ..Default::default() };
    let base = init.map(Path::to_path_buf).unwrap_or_default();
    let (mut model, mut opt, mut state) =
        start(run, &settings, opt_cfg, &base, (s.lora_rank, s.lora_alpha), s.seed, || match init {
            Some(dir) => checkpoint::load_model(dir),
            None => {
                let cfg = LlamaConfig::tiny(tasks::VOCAB.len(), s.hidden, s.layers, tasks::BOS, tasks::EOS);
                cfg.validate()?;
                let params = Params::init(&cfg, &mut StdRng::seed_from_u64(s.seed ^ 0x1417));
                Ok((cfg, params))
            }
        })?;
    let codec = match init {
        Some(p) => Codec::for_model(p, &model.cfg)?,
        None => Codec::Tiny,
    };
    let base_name = base.display().to_string();
    let mut log = Log::open(&run.join("log.jsonl"))?;
    let t0 = Instant::now();
    let seconds0 = state.seconds;
    while state.step < s.steps {
        let step = state.step;
        let mut rng = StdRng::seed_from_u64(s.seed.wrapping_mul(0x9E37_79B9).wrapping_add(step));
        let mut seqs = vec![];
        let mut plen = vec![];
        for _ in 0..s.batch {
            let p = Problem::train(task, &mut rng);
            let mut ids = codec.prompt_ids(&p)?;
            plen.push(ids.len());
            ids.extend(codec.completion_ids(&tasks::teacher(&p, s.slip, &mut rng))?);
            seqs.push(ids);
        }
        let refs: Vec<&[u32]> = seqs.iter().map(|v| &v[..]).collect();
        let (need, rows) = completion_rows(&spans_of(&seqs), &plen);
        let tape = model.forward_rows(&refs, Some(&need), threads)?;
        let n_tok = need.iter().filter(|&&b| b).count();
        let mut dlogp = vec![0f32; rows];
        let mut loss = 0f64;
        for r in (0..rows).filter(|&r| need[r]) {
            dlogp[r] = -1.0 / n_tok as f32;
            loss -= tape.next_logp(r) as f64 / n_tok as f64;
        }
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                checkpoint: checkpoint::checkpoint_dir(run).display().to_string(),
            });
        }
        if step % 100 == 0 {
            state.seconds = seconds0 + t0.elapsed().as_secs_f64();
            checkpoint::save_checkpoint(run, &model, &base_name, &opt, &state)?;
        }
        let mut grads = model.trainable().zeros_like();
        model.backward(&tape, &dlogp, &mut grads, threads);
        let gnorm = clip_grad_norm(&mut grads, 1.0);
        if !gnorm.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                checkpoint: checkpoint::checkpoint_dir(run).display().to_string(),
            });
        }
        // Cosine decay to a tenth after the warm-up.
        let frac = step as f32 / s.steps as f32;
        let lr = lr_at(s.lr, step, s.steps) * (0.1 + 0.9 * 0.5 * (1.0 + (std::f32::consts::PI * frac).cos()));
        opt.step(model.trainable_mut(), &grads, lr);
        state.step += 1;
        log.write(&serde_json::json!({"step": state.step, "loss": loss, "grad_norm": gnorm, "lr": lr}))?;
        progress(&Progress { step: state.step, steps: s.steps, reward: -loss, accuracy: f64::NAN, heldout: None });
    }
    state.seconds = seconds0 + t0.elapsed().as_secs_f64();
    checkpoint::save_checkpoint(run, &model, &base_name, &opt, &state)?;
    // The engine runs merged weights: a model folder beside the checkpoint.
    let merged = run.join("model");
    write_policy(&merged, &model, init)?;
    Ok(merged)
}

/// The model folder the engine samples from: the weights (merged under
/// LoRA), and the base's tokenizer files when it has them.
fn write_policy(dir: &Path, model: &Model, base: Option<&Path>) -> Result<(), TrainError> {
    let merged;
    let params = if model.lora.is_some() {
        merged = model.merged();
        &merged
    } else {
        &model.params
    };
    checkpoint::save_model(dir, &model.cfg, params)?;
    if let Some(b) = base {
        checkpoint::copy_tokenizer(b, dir)?;
    }
    Ok(())
}

/// Group-normalised advantages: each reward minus its group's mean, divided
/// by the group's sample standard deviation (+1e-4) when `std_norm`; and,
/// per group, whether all its rewards were equal (no signal).
pub fn group_advantages(rewards: &[f32], g: usize, std_norm: bool) -> (Vec<f32>, Vec<bool>) {
    let mut adv = Vec::with_capacity(rewards.len());
    let mut flat = vec![];
    for chunk in rewards.chunks(g) {
        let m = chunk.iter().sum::<f32>() / chunk.len() as f32;
        let var = chunk.iter().map(|r| (r - m) * (r - m)).sum::<f32>() / (chunk.len() as f32 - 1.0).max(1.0);
        let sd = var.sqrt();
        flat.push(sd == 0.0);
        adv.extend(chunk.iter().map(|r| if std_norm { (r - m) / (sd + 1e-4) } else { r - m }));
    }
    (adv, flat)
}

/// The weight of one token's term in the loss: `grpo` averages over each
/// completion, then over the `n` completions; `dr_grpo` divides by the same
/// constant everywhere (`n · max_new`), so long and short answers weigh by
/// their length; `dapo` averages over every token of the batch.
pub fn token_weight(loss: LossKind, n: usize, len: usize, max_new: usize, total_tokens: usize) -> f32 {
    match loss {
        LossKind::Grpo => 1.0 / (n * len) as f32,
        LossKind::DrGrpo => 1.0 / (n * max_new) as f32,
        LossKind::Dapo => 1.0 / total_tokens as f32,
    }
}

/// The result of a GRPO run, for `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct GrpoSummary {
    pub heldout_before: f64,
    pub heldout_after: f64,
    pub heldout_before_ci95: (f64, f64),
    pub heldout_after_ci95: (f64, f64),
    pub heldout_lenient_before: f64,
    pub heldout_lenient_after: f64,
    pub pass1_before: f64,
    pub pass1_after: f64,
    pub pass8_before: f64,
    pub pass8_after: f64,
    pub heldout_n: usize,
    pub steps: u64,
    pub rollouts: u64,
    pub seconds: f64,
    /// Mean train reward over the first and last 10 % of steps.
    pub reward_first10: f64,
    pub reward_last10: f64,
    pub rollout_tokens_per_s: f64,
    pub train_tokens_per_s: f64,
    pub log: String,
    pub plot: String,
    pub checkpoint: String,
    /// The trained model as a folder the engine loads (merged under LoRA).
    pub model: String,
}

/// Held-out problems evaluated per run, by default.
pub const HELDOUT_N: usize = 1000;

/// GRPO from the model `init` (a file or folder; fully or with LoRA).
/// Resumes from `run/checkpoint` when it holds a run with the same settings.
pub fn grpo(
    run: &Path,
    s: &GrpoSettings,
    init: &Path,
    threads: usize,
    eval_every: u64,
    heldout_n: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<GrpoSummary, TrainError> {
    s.validate()?;
    let task = Task::from_name(&s.task)?;
    let settings = settings_json("grpo", &(s, init.display().to_string()));
    let opt_cfg = AdamWConfig { lr: s.lr, weight_decay: 0.0, ..Default::default() };
    let (mut model, mut opt, mut state) =
        start(run, &settings, opt_cfg, init, (s.lora_rank, s.lora_alpha), s.seed, || checkpoint::load_model(init))?;
    let codec = Codec::for_model(init, &model.cfg)?;
    let reference = if s.beta > 0.0 {
        let (rc, rp) = checkpoint::load_model(init)?;
        Some(Model::new(rc, rp)?)
    } else {
        None
    };
    let base_name = init.display().to_string();
    let heldout = heldout_set(task, heldout_n);
    let max_new = codec.max_new(task, s.max_new);
    let log_path = run.join("log.jsonl");
    let mut log = Log::open(&log_path)?;
    let t0 = Instant::now();
    let seconds0 = state.seconds;
    let pdir = policy_dir(run);
    write_policy(&pdir, &model, Some(init))?;
    let before = evaluate(&*rollout::load_policy(init, threads)?, &codec, &heldout, max_new, true)?;
    if state.heldout_before.is_none() {
        state.heldout_before = Some(before.greedy);
        state.heldout.push((0, before.greedy));
    }
    let (mut rollout_s, mut train_s, mut rollout_tok, mut train_tok) = (0f64, 0f64, 0u64, 0u64);
    while state.step < s.steps {
        let step = state.step;
        let mut rng = StdRng::seed_from_u64(s.seed.wrapping_mul(0x9E37_79B9).wrapping_add(step) ^ 0x6770);
        // Rollouts through the engine, from the policy as it is now.
        let t_roll = Instant::now();
        let policy = rollout::load_policy(&pdir, threads)?;
        let problems: Vec<Problem> = (0..s.prompts).map(|_| Problem::train(task, &mut rng)).collect();
        let prompts: Vec<Vec<u32>> = problems.iter().map(|p| codec.prompt_ids(p)).collect::<Result<_, _>>()?;
        let rolls = rollouts(&*policy, &codec, &prompts, s.group, max_new, s.temperature, &mut rng)?;
        drop(policy);
        rollout_s += t_roll.elapsed().as_secs_f64();
        rollout_tok += rolls.iter().map(|r| r.completion.len() as u64).sum::<u64>();
        state.rollouts += rolls.len() as u64;
        // Rewards and group-normalised advantages.
        let scores: Vec<tasks::Score> =
            rolls.iter().map(|r| tasks::score(&problems[r.group], &codec.decode(&r.completion))).collect();
        let rewards: Vec<f32> = match s.reward {
            RewardKind::Verifier => scores.iter().map(|sc| sc.reward()).collect(),
            RewardKind::Random => rolls.iter().map(|_| rng.gen_bool(0.5) as u8 as f32).collect(),
        };
        let (adv, flat) = group_advantages(&rewards, s.group, s.std_norm);
        let zero_std = flat.iter().filter(|&&f| f).count();
        let keep: Vec<bool> = (0..rolls.len()).map(|i| !(s.dynamic_sampling && flat[i / s.group])).collect();
        // The trainer's forward on the kept sequences.
        let t_train = Instant::now();
        let idx: Vec<usize> = (0..rolls.len()).filter(|&i| keep[i]).collect();
        let seqs: Vec<Vec<u32>> = idx
            .iter()
            .map(|&i| {
                let mut v = prompts[rolls[i].group].clone();
                v.extend(&rolls[i].completion);
                v
            })
            .collect();
        let refs: Vec<&[u32]> = seqs.iter().map(|v| &v[..]).collect();
        let (mut gap_sum, mut gap_max, mut gap_n) = (0f64, 0f32, 0usize);
        let (mut kl_sum, mut ent_sum, mut loss) = (0f64, 0f64, 0f64);
        let mut gnorm = 0.0;
        if !idx.is_empty() {
            let plens: Vec<usize> = idx.iter().map(|&i| prompts[rolls[i].group].len()).collect();
            let spans = spans_of(&seqs);
            let (need, rows) = completion_rows(&spans, &plens);
            let tape = model.forward_rows(&refs, Some(&need), threads)?;
            let ref_tape = match &reference {
                Some(r) => Some(r.forward_rows(&refs, Some(&need), threads)?),
                None => None,
            };
            let mut dlogp = vec![0f32; rows];
            let total_tok: usize = idx.iter().map(|&i| rolls[i].completion.len()).sum();
            for (k, &i) in idx.iter().enumerate() {
                let r = &rolls[i];
                let len = r.completion.len();
                let w = token_weight(s.loss, idx.len(), len, max_new, total_tok);
                let a = adv[i];
                for j in 0..len {
                    let row = spans[k].start + plens[k] - 1 + j;
                    let lp = tape.next_logp(row);
                    let gap = (lp - r.logp[j]).abs();
                    gap_sum += gap as f64;
                    gap_max = gap_max.max(gap);
                    gap_n += 1;
                    ent_sum += tape.entropy(row) as f64;
                    // π_old is this forward (detached): ρ = 1.
                    let rho = 1.0f32;
                    let clipped = (a > 0.0 && rho > 1.0 + s.eps_high) || (a < 0.0 && rho < 1.0 - s.eps_low);
                    let mut c = if clipped { 0.0 } else { -a * rho };
                    loss -= (rho * a) as f64 * w as f64;
                    if let Some(rt) = &ref_tape {
                        let d = rt.next_logp(row) - lp;
                        let k3 = d.exp() - d - 1.0;
                        kl_sum += k3 as f64;
                        loss += (s.beta * k3 * w) as f64;
                        c += s.beta * (1.0 - d.exp());
                    }
                    dlogp[row] = c * w;
                }
            }
            if !loss.is_finite() || gap_sum.is_nan() {
                return Err(TrainError::NonFinite {
                    step,
                    checkpoint: checkpoint::checkpoint_dir(run).display().to_string(),
                });
            }
            // The policy that produced a finite loss is the last good one.
            state.seconds = seconds0 + t0.elapsed().as_secs_f64();
            checkpoint::save_checkpoint(run, &model, &base_name, &opt, &state)?;
            let mut grads = model.trainable().zeros_like();
            model.backward(&tape, &dlogp, &mut grads, threads);
            gnorm = clip_grad_norm(&mut grads, s.max_grad_norm);
            if !gnorm.is_finite() {
                return Err(TrainError::NonFinite {
                    step,
                    checkpoint: checkpoint::checkpoint_dir(run).display().to_string(),
                });
            }
            opt.step(model.trainable_mut(), &grads, lr_at(s.lr, step, s.steps));
            train_tok += seqs.iter().map(|v| v.len() as u64).sum::<u64>();
        }
        write_policy(&pdir, &model, None)?;
        train_s += t_train.elapsed().as_secs_f64();
        state.step += 1;
        let n = rolls.len() as f64;
        let reward = rewards.iter().map(|&r| r as f64).sum::<f64>() / n;
        let accuracy = scores.iter().filter(|s| s.strict).count() as f64 / n;
        let mut held = None;
        if eval_every > 0 && (state.step % eval_every == 0 || state.step == s.steps) {
            let e = evaluate(&*rollout::load_policy(&pdir, threads)?, &codec, &heldout, max_new, false)?;
            held = Some(e.greedy);
            state.heldout.push((state.step, e.greedy));
        }
        log.write(&serde_json::json!({
            "step": state.step,
            "reward": reward,
            "accuracy": accuracy,
            "response_length": rolls.iter().map(|r| r.completion.len()).sum::<usize>() as f64 / n,
            "kl": if gap_n > 0 { kl_sum / gap_n as f64 } else { 0.0 },
            "entropy": if gap_n > 0 { ent_sum / gap_n as f64 } else { 0.0 },
            "loss": loss,
            "grad_norm": gnorm,
            "frac_zero_std": zero_std as f64 / s.prompts as f64,
            "logp_gap_mean": if gap_n > 0 { gap_sum / gap_n as f64 } else { 0.0 },
            "logp_gap_max": gap_max,
            "heldout": held,
            "rollout_s": rollout_s,
            "train_s": train_s,
            "seconds": seconds0 + t0.elapsed().as_secs_f64(),
        }))?;
        progress(&Progress { step: state.step, steps: s.steps, reward, accuracy, heldout: held });
    }
    state.seconds = seconds0 + t0.elapsed().as_secs_f64();
    checkpoint::save_checkpoint(run, &model, &base_name, &opt, &state)?;
    let after = evaluate(&*rollout::load_policy(&pdir, threads)?, &codec, &heldout, max_new, true)?;
    // Curves from the log (a resumed run's log holds every step).
    let text = std::fs::read_to_string(&log_path).map_err(crate::io_err(&log_path))?;
    let recs: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let rewards: Vec<(f64, f64)> =
        recs.iter().filter_map(|r| Some((r.get("step")?.as_f64()?, r.get("reward")?.as_f64()?))).collect();
    let tenth = (rewards.len() / 10).max(1);
    let mean = |v: &[(f64, f64)]| v.iter().map(|p| p.1).sum::<f64>() / v.len().max(1) as f64;
    let plot_path = run.join("curves.svg");
    let held: Vec<(f64, f64)> = state.heldout.iter().map(|&(s, a)| (s as f64, a)).collect();
    let svg = checkpoint::plot_svg(
        &format!("GRPO on {} (seed {})", s.task, s.seed),
        &[("train reward", "#1f77b4", rewards.clone()), ("held-out greedy accuracy", "#d62728", held)],
    );
    std::fs::write(&plot_path, svg).map_err(crate::io_err(&plot_path))?;
    Ok(GrpoSummary {
        heldout_before: before.greedy,
        heldout_after: after.greedy,
        heldout_before_ci95: wilson(before.greedy, before.n),
        heldout_after_ci95: wilson(after.greedy, after.n),
        heldout_lenient_before: before.greedy_lenient,
        heldout_lenient_after: after.greedy_lenient,
        pass1_before: before.pass1,
        pass1_after: after.pass1,
        pass8_before: before.pass8,
        pass8_after: after.pass8,
        heldout_n: before.n,
        steps: state.step,
        rollouts: state.rollouts,
        seconds: state.seconds,
        reward_first10: mean(&rewards[..tenth.min(rewards.len())]),
        reward_last10: mean(&rewards[rewards.len().saturating_sub(tenth)..]),
        rollout_tokens_per_s: rollout_tok as f64 / rollout_s.max(1e-9),
        train_tokens_per_s: train_tok as f64 / train_s.max(1e-9),
        log: log_path.display().to_string(),
        plot: plot_path.display().to_string(),
        checkpoint: checkpoint::checkpoint_dir(run).display().to_string(),
        model: pdir.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_are_group_normalised_and_flat_groups_flagged() {
        let r = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5];
        let (a, flat) = group_advantages(&r, 4, true);
        // Group 1: mean 0.5, sample std √(1/3); group 2 has no spread.
        let sd = (1.0f32 / 3.0).sqrt() + 1e-4;
        for (x, want) in a[..4].iter().zip([0.5 / sd, -0.5 / sd, -0.5 / sd, 0.5 / sd]) {
            assert!((x - want).abs() < 1e-5);
        }
        assert_eq!(&a[4..], &[0.0; 4]);
        assert_eq!(flat, vec![false, true]);
        let (raw, _) = group_advantages(&r, 4, false);
        assert_eq!(&raw[..4], &[0.5, -0.5, -0.5, 0.5]);
    }

    /// Two completions of 2 and 6 tokens, max 8: GRPO weighs each token of
    /// the short one 3× a token of the long one, Dr. GRPO and DAPO weigh all
    /// tokens alike; each sums to the number of completions' worth its
    /// definition says.
    #[test]
    fn token_weights_follow_each_loss() {
        let w = |k, len| token_weight(k, 2, len, 8, 8);
        assert_eq!(w(LossKind::Grpo, 2) * 2.0 + w(LossKind::Grpo, 6) * 6.0, 1.0);
        assert_eq!(w(LossKind::Grpo, 2), 3.0 * w(LossKind::Grpo, 6));
        assert_eq!(w(LossKind::DrGrpo, 2), w(LossKind::DrGrpo, 6));
        assert_eq!(w(LossKind::DrGrpo, 2) * 8.0, 0.5);
        assert_eq!(w(LossKind::Dapo, 2) * 8.0, 1.0);
        assert!(LossKind::from_name("ppo").is_err());
    }

    #[test]
    fn wilson_interval_brackets_the_rate() {
        let (lo, hi) = wilson(0.5, 1000);
        assert!((lo - 0.469).abs() < 1e-3 && (hi - 0.531).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(wilson(0.0, 10).0, 0.0);
    }
}
