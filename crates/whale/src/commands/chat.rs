//! `whale chat`: interactive multi-turn chat, streamed, in the model's own
//! template. The session keeps its KV cache between turns, so each turn only
//! computes the new tokens.

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
