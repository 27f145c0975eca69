//! `whale perplexity`: the same procedure as llama.cpp's `llama-perplexity`, so
//! the figures can be compared directly.
//!
//! The text is tokenized once (with BOS when the model adds one) and cut into
//! chunks of `ctx` tokens. Each chunk is evaluated from an empty cache, with its
//! first token replaced by BOS when the model uses one; only the second half of
//! each chunk is scored (the first half is context), and the perplexity is
//! exp(mean negative log-likelihood) over all scored tokens.

use anyhow::Context;
use serde::Serialize;
use whale_engine::models::Logits;

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// GGUF file, Hugging Face folder, or catalog name.
    pub model: String,
    /// Text file to score.
    #[arg(short = 'f', long)]
    pub file: std::path::PathBuf,
    /// Stop after this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Print one JSON object: {"ppl", "chunks", ...}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

#[derive(Serialize)]
struct Out {
    ppl: f64,
    chunks: usize,
    ctx: usize,
    tokens_scored: usize,
    /// Running perplexity after each chunk, as llama-perplexity prints it.
    running: Vec<f64>,
}

pub fn run(a: PerplexityArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mut margs = a.model_args.clone();
    margs.ctx = Some(margs.ctx.unwrap_or(512));
    let (m, ctx) = margs.load(&a.model)?;
    anyhow::ensure!(ctx >= 4, "--ctx must be at least 4 for perplexity");
    let tok = &m.tokenizer;
    let tokens = tok.encode(&text, true)?;
    let n_chunks_all = tokens.len() / ctx;
    anyhow::ensure!(
        n_chunks_all >= 1 && tokens.len() >= 2 * ctx,
        "{} tokens are too few: perplexity needs at least 2 × ctx = {} (lower --ctx)",
        tokens.len(),
        2 * ctx
    );
    let n_chunks = a.chunks.map_or(n_chunks_all, |c| c.min(n_chunks_all));
    let vocab = m.model.info().vocab_size;
    let first = ctx / 2;
    let mut nll = 0f64;
    let mut count = 0usize;
    let mut running = Vec::new();
    let mut cache = m.model.new_cache(ctx);
    let t0 = std::time::Instant::now();
    for i in 0..n_chunks {
        let start = i * ctx;
        let mut batch = tokens[start..start + ctx].to_vec();
        if tok.add_bos() {
            if let Some(bos) = tok.bos_id() {
                batch[0] = bos;
            }
        }
        cache.truncate(0);
        let logits = m.model.forward(&mut cache, &batch, Logits::All)?; // [ctx, vocab]
        for j in first..ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let target = tokens[start + j + 1] as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            nll += lse - row[target] as f64;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        if !a.json {
            eprint!("[{}]{:.4},", i + 1, ppl);
        }
    }
    let ppl = (nll / count as f64).exp();
    if a.json {
        let out = Out { ppl, chunks: n_chunks, ctx, tokens_scored: count, running };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        eprintln!();
        println!(
            "Final estimate: PPL = {ppl:.4} ({n_chunks} chunks of {ctx} tokens, {count} scored, {:.1}s)",
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
