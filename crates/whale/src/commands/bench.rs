//! `whale bench`: prompt-processing and generation speed, printed like
//! llama-bench so the two can sit side by side.
//!
//! pp N: N prompt tokens from an empty cache, fed in chunks of the prefill
//! batch. tg N: N tokens generated one at a time from an empty cache (as
//! llama-bench does). Each test runs once to warm up, then `-r` times; the
//! figure is mean ± sample standard deviation of tokens/s. Decode is bound by
//! memory bandwidth: its bound is the bandwidth (measured here, or given with
//! --bandwidth) divided by the bytes one token reads
//! ([`Model::active_weight_bytes`]): every matrix weight of a dense model, and
//! for a Mixture-of-Experts model only the router, the shared experts and the
//! `top_k` routed experts of each layer, not the whole file.
//!
//! `--like NAME [--layers N --type T --seed S]` benchmarks a synthetic model
//! built in memory, exactly the file `whale synth` would write, so a model
//! can be measured before it is downloaded.
//!
//! [`Model::active_weight_bytes`]: whale_engine::models::Model::active_weight_bytes

use serde::Serialize;
use whale_engine::formats::storage::LoadMode;
use whale_engine::models::Logits;
use whale_engine::serving::generate::PREFILL_CHUNK;

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// GGUF file, Hugging Face folder, or catalog name (or --like instead).
    #[arg(required_unless_present = "like", conflicts_with = "like")]
    pub model: Option<String>,
    /// Benchmark a synthetic model like NAME, built in memory without a file
    /// (as `whale synth` writes it; see `whale synth --like list`).
    #[arg(long)]
    pub like: Option<String>,
    #[command(flatten)]
    pub like_args: super::synth::LikeArgs,
    /// Prompt tokens (0: skip the pp test).
    #[arg(short = 'p', long, default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens (0: skip the tg test).
    #[arg(short = 'n', long, default_value_t = 128)]
    pub n_gen: usize,
    /// Tokens already in the context before each test (as llama-bench's
    /// `-d`): prefilled, not timed, so pp and tg run at that depth.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub depth: usize,
    /// Repetitions.
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// Memory read bandwidth in GB/s (default: measured).
    #[arg(long)]
    pub bandwidth: Option<f64>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The tg test with speculative decoding, `mtp[:K]` (the model's
    /// multi-token-prediction layer drafting K tokens a step, greedy), with
    /// its acceptance rate; default `none`, one token a pass as llama-bench.
    #[arg(long, default_value = "none")]
    pub spec: super::Spec,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

#[derive(Serialize)]
struct SpecFigures {
    draft_tokens: usize,
    acceptance_rate: f64,
    /// Tokens one main-model pass yielded on average.
    tokens_per_step: f64,
}

#[derive(Serialize)]
struct Out {
    model: String,
    threads: usize,
    n_prompt: usize,
    n_gen: usize,
    depth: usize,
    pp_tok_s: f64,
    pp_std: f64,
    tg_tok_s: f64,
    tg_std: f64,
    peak_rss_bytes: u64,
    /// Size of the model file.
    weight_bytes: u64,
    /// Matrix weight bytes one decoded token reads (MoE: routed experts at top_k).
    active_bytes_per_token: u64,
    /// Whether the weights were read into memory (`LoadMode::Read`) rather
    /// than mapped from the file.
    weights_in_memory: bool,
    bandwidth_gb_s: f64,
    /// Generation speed as a fraction of bandwidth / active bytes per token.
    tg_fraction_of_bound: f64,
    /// With `--spec mtp:K`: the drafts and how many the model accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    speculative: Option<SpecFigures>,
    /// What whale may fill ([`super::memory_budget`]), when known.
    memory_budget_bytes: Option<u64>,
    /// The share of the model's bytes that fits in that memory (1 when it
    /// all fits, or nothing is known).
    fraction_in_memory: f64,
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64 } else { 0.0 };
    (m, var.sqrt())
}

/// MemAvailable from /proc/meminfo, `None` where there is none.
fn mem_available() -> Option<u64> {
    super::meminfo("MemAvailable:")
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 if unknown.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// Sets the peak RSS (`VmHWM`) back to the current RSS (Linux's
/// `/proc/self/clear_refs`); false where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Read bandwidth with `threads` threads streaming over a 1 GiB buffer with
/// the kernels' loads (`sum_words`): best of 3. `whale bench` measures it
/// before it loads the model and again after the runs, and takes the
/// better: once a large model is in memory the buffer may no longer get
/// 2 MiB pages (a V3-shaped file of 8.6 GiB read into 24 GiB beside its
/// page cache: 25.1–28.8 GB/s after, 34.8 before; the Intel Xeon of stop
/// 50), and the bound with it came out below what decode reached.
fn measure_bandwidth(threads: usize) -> f64 {
    let n = (1usize << 30) / 8;
    // A mapping of its own, not the heap, whose freed blocks whale keeps
    // (`main.rs`): the probe's gigabyte must leave the resident set.
    // In 2 MiB pages, as the weights read into memory get (`LoadMode::Read`):
    // the bound is what the best pages stream at, not 4 KiB pages' slower
    // rate (28 against 35 GB/s on the Xeon of stop 36).
    let Ok(mut map) = whale_engine::formats::storage::anon_huge(n * 8) else { return 0.0 };
    let buf: &mut [u64] = bytemuck::cast_slice_mut(&mut map[..]);
    for (i, w) in buf.iter_mut().enumerate() {
        *w = i as u64;
    }
    let buf = &*buf;
    let per = n.div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = buf.chunks(per).map(|c| s.spawn(move || whale_kernels::matmul::sum_words(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).fold(0u64, |a, b| a.wrapping_add(b))
        });
        std::hint::black_box(total);
        best = best.max((n * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    best
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.reps >= 1, "-r must be at least 1");
    let threads = a.model_args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The bandwidth is measured before the model takes its memory too
    // (where the peak RSS can be set back after it, so that the probe's
    // buffer is not counted as the model's).
    let early_bw = (a.bandwidth.is_none() && a.n_gen > 0 && reset_peak_rss()).then(|| {
        let bw = measure_bandwidth(threads);
        reset_peak_rss();
        bw
    });
    let mut margs = a.model_args.clone();
    let need = a.depth.saturating_add(a.n_prompt.max(a.n_gen)).saturating_add(1);
    margs.ctx = Some(margs.ctx.unwrap_or(a.depth + a.n_prompt + a.n_gen + 1).max(need));
    let (m, ctx, name, weight_bytes, in_memory) = match (&a.model, &a.like) {
        (Some(spec), _) => {
            let path = crate::pull::resolve_model(spec)?;
            let weight_bytes = super::model_file_bytes(&path);
            let (m, ctx, mode) = margs.load_as(spec)?;
            let name = path.file_name().map_or(spec.clone(), |f| f.to_string_lossy().into_owned());
            (m, ctx, name, weight_bytes, mode == LoadMode::Read)
        }
        (None, Some(like)) => {
            let s = super::synth::plan(like, &a.like_args)?;
            let need = s.file_len();
            if let Some(avail) = mem_available().filter(|&m| need > m / 10 * 9) {
                anyhow::bail!(
                    "a synthetic {} of {} layers needs {:.1} GiB in memory but {:.1} GiB is available: \
                     ask for fewer --layers, or write it with `whale synth` and bench the file",
                    s.preset.name,
                    s.layers,
                    need as f64 / (1u64 << 30) as f64,
                    avail as f64 / (1u64 << 30) as f64
                );
            }
            let g = whale_engine::formats::gguf::GgufFile::from_bytes(s.to_bytes())?;
            let m = whale_engine::models::load_gguf(g, margs.options()?)?;
            let ctx = margs.context_for(&m)?;
            let name = format!("{like} synth {}L {}", s.layers, a.like_args.ftype.name());
            (m, ctx, name, need, true)
        }
        (None, None) => anyhow::bail!("give a MODEL or --like NAME"),
    };
    let model = m.model.as_ref();
    let active = model.active_weight_bytes();
    let vocab = model.info().vocab_size as u32;
    // Token ids spread over the vocabulary, fixed so runs compare.
    let prompt: Vec<u32> = (0..a.n_prompt as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let mut cache = model.new_cache(ctx);
    // The context of depth `-d`, prefilled once; each test truncates back to it.
    let context: Vec<u32> = (0..a.depth as u32).map(|i| (i * 104_729 + 7) % vocab).collect();
    for chunk in context.chunks(PREFILL_CHUNK) {
        model.forward(&mut cache, chunk, Logits::Last)?;
    }
    let spec_k = match a.spec {
        super::Spec::None | super::Spec::Auto => None,
        super::Spec::Mtp(k) => {
            anyhow::ensure!(model.drafter().is_some(), "--spec mtp: this model has no multi-token-prediction layer");
            anyhow::ensure!(a.depth == 0, "--spec mtp runs the tg test from an empty context: leave out -d");
            Some(k)
        }
    };
    let mut spec_total = whale_engine::serving::speculative::SpecStats::default();
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for rep in 0..=a.reps {
        if a.n_prompt > 0 {
            cache.truncate(a.depth);
            let t0 = std::time::Instant::now();
            for chunk in prompt.chunks(PREFILL_CHUNK) {
                model.forward(&mut cache, chunk, Logits::Last)?;
            }
            let s = a.n_prompt as f64 / t0.elapsed().as_secs_f64();
            if rep > 0 {
                pp.push(s);
            }
        }
        if let (true, Some(k), Some(d)) = (a.n_gen > 0, spec_k, model.drafter()) {
            let t0 = std::time::Instant::now();
            let (_, st) =
                whale_engine::serving::speculative::greedy(model, d, &[1 % vocab], a.n_gen, k, ctx, &mut |_| false)?;
            let s = a.n_gen as f64 / t0.elapsed().as_secs_f64();
            if rep > 0 {
                tg.push(s);
                spec_total.steps += st.steps;
                spec_total.drafted += st.drafted;
                spec_total.accepted += st.accepted;
            }
        } else if a.n_gen > 0 {
            cache.truncate(a.depth);
            let mut tok = 1 % vocab;
            let t0 = std::time::Instant::now();
            for _ in 0..a.n_gen {
                let logits = model.forward(&mut cache, &[tok], Logits::Last)?;
                tok = whale_engine::serving::sampler::argmax(&logits);
            }
            let s = a.n_gen as f64 / t0.elapsed().as_secs_f64();
            if rep > 0 {
                tg.push(s);
            }
        }
    }
    let (pp_m, pp_s) = mean_std(&pp);
    let (tg_m, tg_s) = mean_std(&tg);
    // Read before the bandwidth probe, whose 1 GiB buffer is not the model's.
    let peak_rss_bytes = peak_rss();
    let bw = match a.bandwidth {
        Some(b) => b,
        None if a.n_gen > 0 => measure_bandwidth(threads).max(early_bw.unwrap_or(0.0)),
        None => 0.0,
    };
    let bound = if active > 0 { bw * 1e9 / active as f64 } else { 0.0 };
    let budget = super::memory_budget();
    let frac = if bound > 0.0 { tg_m / bound } else { 0.0 };
    let out = Out {
        model: name.clone(),
        threads,
        n_prompt: a.n_prompt,
        n_gen: a.n_gen,
        depth: a.depth,
        pp_tok_s: pp_m,
        pp_std: pp_s,
        tg_tok_s: tg_m,
        tg_std: tg_s,
        peak_rss_bytes,
        weight_bytes,
        active_bytes_per_token: active,
        weights_in_memory: in_memory,
        bandwidth_gb_s: bw,
        tg_fraction_of_bound: frac,
        memory_budget_bytes: budget.map(|b| b.0),
        fraction_in_memory: budget.map_or(1.0, |(b, _)| (b as f64 / weight_bytes.max(1) as f64).min(1.0)),
        speculative: spec_k.map(|k| SpecFigures {
            draft_tokens: k,
            acceptance_rate: spec_total.acceptance_rate(),
            tokens_per_step: spec_total.tokens_per_step(),
        }),
    };
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    let at = if a.depth > 0 { format!(" @ d{}", a.depth) } else { String::new() };
    let size = format!("{:.2} MiB", weight_bytes as f64 / (1 << 20) as f64);
    println!("| model                          |       size | backend | threads |  test |              t/s |");
    println!("| ------------------------------ | ---------: | ------- | ------: | ----: | ---------------: |");
    if a.n_prompt > 0 {
        let test = format!("pp{}{at}", a.n_prompt);
        println!("| {name:<30} | {size:>10} | CPU     | {threads:>7} | {test:<5} | {pp_m:>8.2} ± {pp_s:>5.2} |");
    }
    if a.n_gen > 0 {
        let test = format!("tg{}{at}", a.n_gen);
        println!("| {name:<30} | {size:>10} | CPU     | {threads:>7} | {test:<5} | {tg_m:>8.2} ± {tg_s:>5.2} |");
        println!();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let what = match model.info().routed_experts {
            Some((used, all)) => format!("weights one token reads: {used} of {all} routed experts a layer"),
            None => "weights one token reads".to_string(),
        };
        println!(
            "decode bound {bound:.1} tok/s ({bw:.1} GB/s ÷ {:.2} MiB of {what}); tg is {:.0} % of it; peak RSS {:.1} MiB; \
             weights {}",
            mib(active),
            frac * 100.0,
            mib(out.peak_rss_bytes),
            if in_memory { "read into memory" } else { "mapped from the file (--mmap, or too large to read in)" }
        );
        if let Some(sp) = &out.speculative {
            println!(
                "speculative: mtp:{} (greedy), {:.0} % of drafts accepted, {:.2} tokens a main pass",
                sp.draft_tokens,
                sp.acceptance_rate * 100.0,
                sp.tokens_per_step
            );
        }
        if let Some((b, from)) = budget.filter(|_| out.fraction_in_memory < 1.0) {
            println!(
                "memory: the model is {:.0} MiB and whale may use {:.0} MiB ({from}): {:.0} % of it fits, \
                 the rest pages in from disk (the bound above assumes memory)",
                mib(weight_bytes),
                mib(b),
                out.fraction_in_memory * 100.0
            );
        }
    }
    Ok(())
}
