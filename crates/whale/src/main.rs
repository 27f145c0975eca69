//! The `whale` binary: the command line over `whale-engine`.
//!
//! Each subcommand lives in `commands/`, the HTTP server (`whale serve`) in
//! `server/`; model names are resolved (and fetched when needed) by `pull`.
//! Errors from the libraries arrive here and are printed with their chain of
//! causes, with a non-zero exit.

use clap::{Parser, Subcommand};
use whale::{commands, pull, server};

#[derive(Parser)]
#[command(
    name = "whale",
    version,
    about = "Run DeepSeek models and the R1 distills (llama, qwen2) from GGUF or safetensors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Run(commands::run::RunArgs),
    /// Chat with a model in the terminal.
    Chat(commands::chat::ChatArgs),
    /// Draw a picture from a prompt with Janus-Pro (PNG).
    Imagine(commands::imagine::ImagineArgs),
    /// Show a model's architecture, hyper-parameters, tokenizer and tensors.
    Info(commands::info::InfoArgs),
    /// Fetch a model into the local cache.
    Pull(PullArgs),
    /// Perplexity of a text file, computed the way llama.cpp's llama-perplexity does.
    Perplexity(commands::perplexity::PerplexityArgs),
    /// Prompt and generation speed, shaped like llama-bench's output.
    Bench(commands::bench::BenchArgs),
    /// Write a GGUF with a real model's shapes and tokenizer and random weights, to benchmark it before downloading it.
    Synth(commands::synth::SynthArgs),
    /// Train with DeepSeek-R1's recipe: GRPO on verifiable rewards (and the SFT start).
    Train(commands::train::TrainArgs),
    /// Write a trained model (LoRA merged) as a GGUF that run and serve load.
    Export(commands::train::ExportArgs),
    /// Serve the model over HTTP with DeepSeek's (and OpenAI's) API.
    Serve(server::ServeArgs),
}

#[derive(clap::Args)]
struct PullArgs {
    /// Catalog name, hf:OWNER/REPO[/FILE][@REV], or a URL.
    spec: Option<String>,
    /// Download again even if the file is cached.
    #[arg(long)]
    force: bool,
    /// List the catalog.
    #[arg(long)]
    list: bool,
}

fn main() {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("WHALE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Imagine(a) => commands::imagine::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
        Command::Serve(a) => server::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Synth(a) => commands::synth::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Export(a) => commands::train::export(a),
        Command::Pull(a) => {
            if a.list || a.spec.is_none() {
                pull::print_catalog();
                Ok(())
            } else {
                pull::pull(a.spec.as_deref().unwrap_or_default(), a.force).map(|_| ())
            }
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Has glibc's allocator keep the memory a forward pass frees for the next
/// one. By default a block over 32 MB is a fresh `mmap` of zeroed pages,
/// unmapped again when freed: a DeepSeek layer's prefill temporaries (at
/// V3's shapes and 512 tokens, 50-150 MB each: the queries, the absorbed
/// queries, the latent outputs, the FFN's hidden rows) were faulted in and
/// zeroed page by page in every layer, 6 % of a pp512 of the 1.58-bit V3
/// slice (`clear_page_erms` under `perf`). With no `mmap` for large blocks
/// and trimming only past 2 GiB, a freed block is reused as it is, as
/// llama.cpp keeps its compute buffers. Peak RSS moves little (the 2-layer
/// V3 slice 4.8 → 4.9 GiB, Qwen2.5-0.5B up to 490 MiB against
/// llama.cpp's 593), and memory freed after a long prompt stays with the
/// process for the next one.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
