//! `whale run`: one prompt in, text out (or JSON with ids and top logits).

use std::io::{IsTerminal, Write};

use anyhow::Context;
use serde::Serialize;
use whale_engine::serving::generate::{generate, generate_speculative, GenerateRequest, Session};
use whale_engine::serving::sampler::SamplerConfig;
use whale_engine::text::chat_template::{ChatMessage, ChatTemplate};
use whale_engine::text::reasoning::{prompt_opens_thinking, split, ReasoningParser, Segment};
use whale_engine::text::tokenizer::Tokenizer;

use super::{ModelArgs, Spec};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// GGUF file, Hugging Face folder, or catalog name.
    pub model: String,
    /// Prompt text (raw, unless --chat).
    #[arg(short, long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids (no BOS added).
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Tokens to generate (0: only tokenize).
    #[arg(short = 'n', long, default_value_t = 128)]
    pub n_predict: usize,
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop before this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Apply the model's chat template to the prompt as one user message.
    #[arg(long)]
    pub chat: bool,
    /// An image (PNG or JPEG) for a Janus-Pro model to look at (repeatable).
    /// With --chat or a plain prompt it goes before the text; with
    /// --prompt-ids its 576 rows take the positions of the image token id.
    #[arg(long)]
    pub image: Vec<std::path::PathBuf>,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// With --json: the K highest raw logits at each step.
    #[arg(long, default_value_t = 0)]
    pub top_logits: usize,
    /// Speculative decoding: `mtp[:K]` drafts K tokens a step (default 1)
    /// with the model's multi-token-prediction layer and checks them in one
    /// pass (rejection sampling: the tokens follow the model's own
    /// distribution; with --temp 0 they are the greedy ones); `none` decodes
    /// one token at a time. Default: mtp where the model has the layer.
    #[arg(long, default_value = "auto")]
    pub spec: Spec,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

#[derive(Serialize)]
struct JsonStep {
    id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    top: Option<Vec<(u32, f32)>>,
}

#[derive(Serialize)]
struct JsonOut {
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    text: String,
    /// With --chat on a reasoning model: the thinking, and the answer after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    steps: Vec<JsonStep>,
    finish_reason: &'static str,
    /// With speculative decoding: drafts a step, main passes, drafts made
    /// and accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    speculative: Option<SpecOut>,
}

impl JsonOut {
    /// What `--json` prints for a generation (`parts`: the thinking and the
    /// answer, for a reasoning model with --chat).
    fn new(
        prompt_ids: Vec<u32>,
        gen: &whale_engine::serving::generate::Generation,
        top: bool,
        parts: Option<(String, String)>,
        speculative: Option<SpecOut>,
    ) -> JsonOut {
        let (reasoning_content, content) = parts.map_or((None, None), |(r, c)| (Some(r), Some(c)));
        JsonOut {
            prompt_ids,
            generated_ids: gen.generated_ids.clone(),
            text: gen.text.clone(),
            reasoning_content,
            content,
            steps: gen.steps.iter().map(|s| JsonStep { id: s.id, top: top.then(|| s.top.clone()) }).collect(),
            finish_reason: match gen.finish {
                whale_engine::serving::generate::FinishReason::Stop => "stop",
                _ => "length",
            },
            speculative,
        }
    }
}

#[derive(Serialize)]
struct SpecOut {
    method: &'static str,
    draft_tokens: usize,
    #[serde(flatten)]
    stats: whale_engine::serving::speculative::SpecStats,
    acceptance_rate: f64,
    tokens_per_step: f64,
}

/// Render a chat and tokenize it; the template usually writes the BOS text
/// itself, in which case no second BOS is added. Returns the rendered text too
/// (it tells whether the template pre-filled `<think>`).
pub fn chat_prompt(tok: &Tokenizer, messages: &[ChatMessage]) -> anyhow::Result<(String, Vec<u32>)> {
    let src = tok.chat_template().context("the model has no chat template; run without --chat")?;
    let tpl = ChatTemplate::new(src)?;
    // What the user typed stays text (see `ChatMessage::guard`).
    let mut messages = messages.to_vec();
    messages.iter_mut().for_each(|m| m.guard(tok));
    let text = tpl.render(&messages, true, &tok.bos_token(), &tok.eos_token(), None)?;
    let bos = tok.bos_token();
    let add_bos = bos.is_empty() || !text.starts_with(&bos);
    let ids = tok.encode_guarded(&text, add_bos)?;
    Ok((text, ids))
}

/// Prints a reasoning model's output with the thinking set apart: dimmed on
/// a terminal, under a "thinking" header otherwise.
pub struct ThinkingPrinter {
    parser: ReasoningParser,
    tty: bool,
    in_reasoning: bool,
}

impl ThinkingPrinter {
    pub fn new(in_thinking: bool) -> ThinkingPrinter {
        ThinkingPrinter {
            parser: ReasoningParser::new(in_thinking),
            tty: std::io::stdout().is_terminal(),
            in_reasoning: false,
        }
    }

    fn print(&mut self, segs: Vec<Segment>, out: &mut impl Write) {
        for s in segs {
            match s {
                Segment::Reasoning(t) => {
                    if !self.in_reasoning {
                        let _ = out.write_all(if self.tty { b"\x1b[2m" } else { b"[thinking]\n" });
                        self.in_reasoning = true;
                    }
                    let _ = out.write_all(t.as_bytes());
                }
                Segment::Content(t) => {
                    if self.in_reasoning {
                        let _ = out.write_all(if self.tty { b"\x1b[0m\n\n" } else { b"\n[answer]\n" });
                        self.in_reasoning = false;
                    }
                    let _ = out.write_all(t.as_bytes());
                }
            }
        }
        let _ = out.flush();
    }

    pub fn push(&mut self, text: &str, out: &mut impl Write) {
        let segs = self.parser.push(text);
        self.print(segs, out);
    }

    pub fn finish(&mut self, out: &mut impl Write) {
        let segs = self.parser.finish();
        self.print(segs, out);
        if self.in_reasoning && self.tty {
            let _ = out.write_all(b"\x1b[0m");
        }
    }
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let sampler = SamplerConfig {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        penalty_last_n: 64,
        presence_penalty: a.presence_penalty,
        frequency_penalty: a.frequency_penalty,
        seed: a.seed,
        logit_bias: Vec::new(),
    };
    sampler.validate().map_err(anyhow::Error::msg)?;
    if !a.image.is_empty() {
        return run_with_images(&a, sampler);
    }
    let (m, ctx) = a.model_args.load(&a.model)?;
    let tok = &m.tokenizer;
    // With --chat, whether the template left the model inside <think>.
    let mut thinking: Option<bool> = None;
    let prompt_ids = match (&a.prompt, &a.prompt_ids) {
        (_, Some(ids)) => ids.clone(),
        (Some(p), None) if a.chat => {
            let mut msgs = Vec::new();
            if let Some(s) = &a.system {
                msgs.push(ChatMessage::new("system", s));
            }
            msgs.push(ChatMessage::new("user", p));
            let (text, ids) = chat_prompt(tok, &msgs)?;
            thinking = Some(prompt_opens_thinking(&text));
            ids
        }
        (Some(p), None) => tok.encode(p, true)?,
        (None, None) => anyhow::bail!("give a prompt with --prompt TEXT or --prompt-ids 1,2,3"),
    };
    let vocab = m.model.info().vocab_size;
    if let Some(&bad) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
        anyhow::bail!("prompt token id {bad} is outside the vocabulary (size {vocab})");
    }
    anyhow::ensure!(
        prompt_ids.len() + a.n_predict <= ctx || a.n_predict == 0,
        "the prompt ({} tokens) and -n {} do not fit the context of {ctx} tokens (raise --ctx)",
        prompt_ids.len(),
        a.n_predict
    );
    let req = GenerateRequest {
        max_tokens: a.n_predict,
        sampler,
        stop: a.stop.clone(),
        stop_at_eog: !a.ignore_eos,
        top_logits: a.top_logits,
    };
    let drafter = m.model.drafter();
    let spec_k = match a.spec.drafts(drafter.is_some())? {
        // Auto turns itself off where the drafts could not be reported.
        Some(_) if a.spec == Spec::Auto && a.top_logits > 0 => None,
        Some(k) => {
            anyhow::ensure!(a.top_logits == 0, "--spec mtp does not report --top-logits; use --spec none with it");
            Some(k)
        }
        None => None,
    };
    let mut session = Session::new(m.model.as_ref(), ctx);
    let stdout = std::io::stdout();
    let t0 = std::time::Instant::now();
    let mut first_token = None;
    let mut printer = thinking.map(ThinkingPrinter::new);
    let mut spec_stats = None;
    let mut on_step = |step: &whale_engine::serving::generate::Step| {
        first_token.get_or_insert_with(std::time::Instant::now);
        if !a.json {
            let mut out = stdout.lock();
            match printer.as_mut() {
                Some(p) => p.push(&step.text, &mut out),
                None => {
                    let _ = out.write_all(step.text.as_bytes());
                    let _ = out.flush();
                }
            }
        }
        true
    };
    let gen = if prompt_ids.is_empty() && a.n_predict > 0 {
        anyhow::bail!("the prompt tokenized to nothing; give some text or --prompt-ids")
    } else if let (Some(k), Some(d)) = (spec_k, drafter) {
        let (gen, stats) = generate_speculative(m.model.as_ref(), d, tok, &prompt_ids, &req, k, ctx, &mut on_step)?;
        spec_stats = Some(SpecOut {
            method: "mtp",
            draft_tokens: k,
            stats,
            acceptance_rate: stats.acceptance_rate(),
            tokens_per_step: stats.tokens_per_step(),
        });
        gen
    } else {
        generate(m.model.as_ref(), tok, &mut session, &prompt_ids, &req, &mut on_step)?
    };
    if let Some(p) = printer.as_mut() {
        if !a.json {
            p.finish(&mut stdout.lock());
        }
    }
    let parts = thinking.map(|t| split(&gen.text, t));
    if a.json {
        let out = JsonOut::new(prompt_ids, &gen, a.top_logits > 0, parts, spec_stats);
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!();
        if let Some(ft) = first_token {
            let n = gen.generated_ids.len();
            let pp = ft.duration_since(t0).as_secs_f64();
            let tg = ft.elapsed().as_secs_f64();
            eprintln!(
                "[{} prompt tokens in {:.2}s; {} tokens generated, {:.1} tok/s]",
                prompt_ids.len(),
                pp,
                n,
                if n > 1 && tg > 0.0 { (n - 1) as f64 / tg } else { 0.0 }
            );
        } else {
            eprintln!("prompt ids: {prompt_ids:?}");
        }
    }
    Ok(())
}

/// `whale run` with `--image`: a Janus-Pro model reads the images with the prompt.
fn run_with_images(a: &RunArgs, sampler: SamplerConfig) -> anyhow::Result<()> {
    use super::vision::{Vision, MAX_IMAGES};
    anyhow::ensure!(a.image.len() <= MAX_IMAGES, "{} images given; at most {MAX_IMAGES} fit one prompt", a.image.len());
    anyhow::ensure!(matches!(a.spec, Spec::Auto | Spec::None), "--spec mtp does not apply to Janus models");
    let v = Vision::load(&a.model, &a.model_args)?;
    let mut rows = Vec::new();
    let t_img = std::time::Instant::now();
    for path in &a.image {
        rows.extend(v.image_file(path)?);
    }
    let image_seconds = t_img.elapsed().as_secs_f64();
    let prompt_ids = match (&a.prompt, &a.prompt_ids) {
        (_, Some(ids)) => ids.clone(),
        (Some(p), None) if a.chat => {
            let mut msgs = Vec::new();
            let mut counts = Vec::new();
            if let Some(s) = &a.system {
                msgs.push(ChatMessage::new("system", s));
                counts.push(0);
            }
            msgs.push(ChatMessage::new("user", p));
            counts.push(a.image.len());
            v.chat_ids(&msgs, &counts)?
        }
        (Some(p), None) => {
            let text = v.tok.encode(p, false)?;
            let mut ids: Vec<u32> = v.tok.bos_id().filter(|_| v.tok.add_bos()).into_iter().collect();
            for _ in &a.image {
                ids.extend(v.janus.image_prompt_ids(v.marks));
            }
            ids.extend(text);
            ids
        }
        (None, None) => anyhow::bail!("give a prompt with --prompt TEXT or --prompt-ids 1,2,3"),
    };
    let vocab = v.janus.lm.params.vocab_size;
    if let Some(&bad) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
        anyhow::bail!("prompt token id {bad} is outside the vocabulary (size {vocab})");
    }
    anyhow::ensure!(
        prompt_ids.len() + a.n_predict <= v.ctx,
        "the prompt ({} tokens, {} per image) and -n {} do not fit the context of {} tokens (raise --ctx)",
        prompt_ids.len(),
        v.janus.image_rows(),
        a.n_predict,
        v.ctx
    );
    let model: &dyn whale_engine::models::Model = &v.janus.lm;
    let mut session = Session::new(model, v.ctx);
    let t0 = std::time::Instant::now();
    v.prefill(&mut session, &prompt_ids, &rows)?;
    let req = GenerateRequest {
        max_tokens: a.n_predict,
        sampler,
        stop: a.stop.clone(),
        stop_at_eog: !a.ignore_eos,
        top_logits: a.top_logits,
    };
    let stdout = std::io::stdout();
    let gen = generate(model, &v.tok, &mut session, &prompt_ids, &req, |step| {
        if !a.json {
            let mut out = stdout.lock();
            let _ = out.write_all(step.text.as_bytes());
            let _ = out.flush();
        }
        true
    })?;
    if a.json {
        let out = JsonOut::new(prompt_ids.clone(), &gen, a.top_logits > 0, None, None);
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!();
        eprintln!(
            "[{} image(s) read in {image_seconds:.2}s; {} prompt tokens, {} tokens generated in {:.2}s]",
            a.image.len(),
            prompt_ids.len(),
            gen.generated_ids.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
