//! `whale chat`: interactive multi-turn chat, streamed, in the model's own
//! template. The session keeps its KV cache between turns, so each turn only
//! computes the new tokens. With a Janus-Pro model, `/image FILE` attaches
//! a picture to the next message.

use std::io::BufRead;

use whale_engine::serving::generate::{generate, GenerateRequest, Session};
use whale_engine::serving::sampler::SamplerConfig;
use whale_engine::text::chat_template::ChatMessage;
use whale_engine::text::reasoning::{prompt_opens_thinking, split};

use super::run::ThinkingPrinter;

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// GGUF file, Hugging Face folder, or catalog name (default: the default model).
    pub model: Option<String>,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most tokens per answer.
    #[arg(short = 'n', long, default_value_t = 1024)]
    pub n_predict: usize,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

pub fn run(a: ChatArgs) -> anyhow::Result<()> {
    let spec = a.model.clone().unwrap_or_else(|| crate::pull::DEFAULT_MODEL.to_string());
    let path = crate::pull::resolve_model(&spec)?;
    if path.is_dir() && whale_engine::vision::janus::Janus::is_janus(&path) {
        return run_vision(&a, &spec);
    }
    let (m, ctx) = a.model_args.load(&spec)?;
    let tok = &m.tokenizer;
    anyhow::ensure!(tok.chat_template().is_some(), "{spec} has no chat template; use `whale run` for raw prompts");
    let system: Vec<ChatMessage> = a.system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let mut messages = system.clone();
    let mut session = Session::new(m.model.as_ref(), ctx);
    let req = GenerateRequest {
        max_tokens: a.n_predict,
        sampler: SamplerConfig { temperature: a.temp, seed: a.seed, ..SamplerConfig::default() },
        ..GenerateRequest::default()
    };
    eprintln!("whale chat with {spec} ({} context tokens). /reset starts over, /exit quits.", ctx);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break; // end of input
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" | "/bye" => break,
            "/reset" => {
                messages = system.clone();
                session.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", line));
        let (text, ids) = super::run::chat_prompt(tok, &messages)?;
        if ids.len() + 1 >= ctx {
            eprintln!("(the conversation no longer fits the {ctx}-token context; /reset to start over)");
            messages.pop();
            continue;
        }
        let in_thinking = prompt_opens_thinking(&text);
        let mut printer = ThinkingPrinter::new(in_thinking);
        let gen = generate(m.model.as_ref(), tok, &mut session, &ids, &req, |step| {
            printer.push(&step.text, &mut stdout);
            true
        })?;
        printer.finish(&mut stdout);
        println!();
        // Earlier turns go back without their thinking, as DeepSeek's API expects.
        let (_, answer) = split(&gen.text, in_thinking);
        messages.push(ChatMessage::new("assistant", &answer));
    }
    Ok(())
}

/// Chat with a Janus-Pro model: `/image FILE` attaches a picture to the next
/// message. Images of earlier turns stay in the conversation (their rows are
/// kept, so the cached prefix is reused).
fn run_vision(a: &ChatArgs, spec: &str) -> anyhow::Result<()> {
    use super::vision::{Vision, MAX_IMAGES};
    let v = Vision::load(spec, &a.model_args)?;
    let model: &dyn whale_engine::models::Model = &v.janus.lm;
    let system: Vec<ChatMessage> = a.system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let (mut messages, mut counts) = (system.clone(), vec![0; system.len()]);
    let (mut rows, mut pending): (Vec<f32>, Vec<Vec<f32>>) = (Vec::new(), Vec::new());
    let mut session = Session::new(model, v.ctx);
    let req = GenerateRequest {
        max_tokens: a.n_predict,
        sampler: SamplerConfig { temperature: a.temp, seed: a.seed, ..SamplerConfig::default() },
        ..GenerateRequest::default()
    };
    eprintln!(
        "whale chat with {spec} ({} context tokens, {} an image). /image FILE attaches a picture, /reset starts over, /exit quits.",
        v.ctx,
        v.janus.image_rows() + 2
    );
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" | "/bye" => break,
            "/reset" => {
                (messages, counts) = (system.clone(), vec![0; system.len()]);
                rows.clear();
                pending.clear();
                session.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        if let Some(file) = line.trim().strip_prefix("/image ") {
            let total = counts.iter().sum::<usize>() + pending.len();
            if total >= MAX_IMAGES {
                eprintln!("(at most {MAX_IMAGES} images in a conversation; /reset to start over)");
                continue;
            }
            match v.image_file(std::path::Path::new(file.trim())) {
                Ok(r) => {
                    pending.push(r);
                    eprintln!("(image attached to your next message)");
                }
                Err(e) => eprintln!("(image not attached: {e:#})"),
            }
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        counts.push(pending.len());
        let before = rows.len();
        rows.extend(pending.drain(..).flatten());
        let ids = v.chat_ids(&messages, &counts)?;
        if ids.len() + 1 >= v.ctx {
            eprintln!("(the conversation no longer fits the {}-token context; /reset to start over)", v.ctx);
            messages.pop();
            counts.pop();
            rows.truncate(before);
            continue;
        }
        v.prefill(&mut session, &ids, &rows)?;
        let gen = generate(model, &v.tok, &mut session, &ids, &req, |step| {
            use std::io::Write;
            let _ = stdout.write_all(step.text.as_bytes());
            let _ = stdout.flush();
            true
        })?;
        println!();
        messages.push(ChatMessage::new("assistant", &gen.text));
        counts.push(0);
    }
    Ok(())
}
