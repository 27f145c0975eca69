//! Rollouts through whale's engine: the policy is loaded from its
//! checkpoint folder as any llama model, each prompt is prefilled once and
//! its KV cache forked G ways, and every unfinished sequence of every group
//! advances in one batched forward pass per token.

use std::path::Path;

use rand::Rng;
use whale_engine::formats::weights::WeightStore;
use whale_engine::models::{load_weights, BatchSeq, CacheType, KvCache, LoadOptions, Model};

use crate::TrainError;

/// Load a model folder with the engine (f32 cache, so its log-probabilities
/// can be compared with the trainer's).
pub fn load_policy(dir: &Path, threads: usize) -> Result<Box<dyn Model>, TrainError> {
    let store = WeightStore::open(dir).map_err(whale_engine::models::ModelError::from)?;
    let arch = match &store {
        WeightStore::Hf(h) => h.config.get("model_type").and_then(|v| v.as_str()).unwrap_or("llama").to_string(),
        WeightStore::Gguf(g) => g.architecture().unwrap_or("llama").to_string(),
    };
    let opts = LoadOptions { threads, cache_type: CacheType::F32, ..Default::default() };
    Ok(load_weights(&store, &arch, opts)?)
}

/// One sampled completion.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// Index of its prompt (its group).
    pub group: usize,
    pub completion: Vec<u32>,
    /// The engine's log-probability of each completion token, at
    /// temperature 1 (the policy's own).
    pub logp: Vec<f32>,
    /// Stopped by the length limit rather than a stop token.
    pub truncated: bool,
}

/// Log-softmax of one row, the trainer's way (f32, max subtracted).
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    crate::ops::log_softmax_rows(logits, logits.len())
}

/// Sample `g` completions of each prompt, up to `max_new` tokens, stopping
/// after any token of `stop` or when `done(completion)` says so. `temperature` 0 takes the most likely token
/// (the first on ties); otherwise tokens are drawn from the softmax of
/// logits / temperature, with no top-k or top-p, so at 1 they come from the
/// policy itself. Results are ordered by prompt, then sample.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    model: &dyn Model,
    prompts: &[Vec<u32>],
    g: usize,
    max_new: usize,
    temperature: f32,
    stop: &[u32],
    done: &dyn Fn(&[u32]) -> bool,
    rng: &mut impl Rng,
) -> Result<Vec<Rollout>, TrainError> {
    if prompts.is_empty() || g == 0 {
        return Ok(vec![]);
    }
    let mut caches: Vec<KvCache> = prompts.iter().map(|p| model.new_cache(p.len() + max_new)).collect();
    let first = {
        let mut seqs: Vec<BatchSeq<'_>> =
            caches.iter_mut().zip(prompts).map(|(cache, tokens)| BatchSeq { cache, tokens }).collect();
        model.forward_batch(&mut seqs)?
    };
    // Fork each prompt's cache g ways.
    let mut live: Vec<(usize, KvCache, Vec<f32>)> = vec![];
    let mut out: Vec<Rollout> = vec![];
    for (i, (cache, logits)) in caches.into_iter().zip(first).enumerate() {
        for _ in 0..g {
            live.push((out.len(), cache.clone(), logits.clone()));
            out.push(Rollout { group: i, completion: vec![], logp: vec![], truncated: false });
        }
    }
    while !live.is_empty() {
        let mut next: Vec<(usize, KvCache, Vec<f32>)> = Vec::with_capacity(live.len());
        for (k, cache, logits) in live {
            let lp = log_softmax(&logits);
            let tok = if temperature <= 0.0 {
                let mut best = 0;
                for (i, &v) in logits.iter().enumerate() {
                    if v > logits[best] {
                        best = i;
                    }
                }
                best
            } else {
                draw(&logits, temperature, rng)
            };
            let r = &mut out[k];
            r.completion.push(tok as u32);
            r.logp.push(lp[tok]);
            if stop.contains(&(tok as u32)) || done(&r.completion) {
                continue;
            }
            if r.completion.len() >= max_new {
                r.truncated = true;
                continue;
            }
            next.push((k, cache, vec![]));
        }
        if next.is_empty() {
            break;
        }
        let toks: Vec<[u32; 1]> =
            next.iter().map(|(k, _, _)| [*out[*k].completion.last().expect("one token")]).collect();
        let logits = {
            let mut seqs: Vec<BatchSeq<'_>> =
                next.iter_mut().zip(&toks).map(|((_, cache, _), t)| BatchSeq { cache, tokens: &t[..] }).collect();
            model.forward_batch(&mut seqs)?
        };
        for ((_, _, l), new) in next.iter_mut().zip(logits) {
            *l = new;
        }
        live = next;
    }
    Ok(out)
}

/// A token from softmax(logits / t), computed in f64.
fn draw(logits: &[f32], t: f32, rng: &mut impl Rng) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / t as f64).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, &x) in w.iter().enumerate() {
        if u < x {
            return i;
        }
        u -= x;
    }
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LlamaConfig, Model as TrainModel, Params};
    use rand::SeedableRng;

    /// The engine samples from the same model the trainer differentiates:
    /// the log-probability the engine reports for each sampled token equals
    /// the trainer's forward of the whole sequence within 1e-4 (both f32;
    /// they differ only in summation order: the engine's matvec kernels and
    /// incremental KV cache against the trainer's GEMM over whole
    /// sequences, about 1e-6 here). Groups fork one prefilled cache.
    #[test]
    fn engine_rollout_logprobs_match_the_trainer() {
        let dir = std::env::temp_dir().join(format!("whale-train-rollout-{}", std::process::id()));
        let cfg = LlamaConfig::tiny(crate::tasks::VOCAB.len(), 32, 2, 0, 1);
        let mut params = Params::init(&cfg, &mut rand::rngs::StdRng::seed_from_u64(5));
        // Sharper than the init, so samples differ between tokens.
        params.data.iter_mut().for_each(|d| d.iter_mut().for_each(|x| *x *= 20.0));
        crate::checkpoint::save_model(&dir, &cfg, &params).unwrap();
        let engine = load_policy(&dir, 2).unwrap();
        let trainer = TrainModel::new(cfg, params).unwrap();
        let prompts = vec![vec![0u32, 5, 6, 14, 7, 18], vec![0u32, 9, 9, 15, 4, 18]];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let rolls = sample(&*engine, &prompts, 4, 12, 1.0, &[1, 3], &|_| false, &mut rng).unwrap();
        assert_eq!(rolls.len(), 8);
        let distinct: std::collections::HashSet<_> = rolls.iter().map(|r| r.completion.clone()).collect();
        assert!(distinct.len() > 2, "samples of a group differ");
        let mut worst = 0f32;
        for r in &rolls {
            assert!(r.truncated || [1, 3].contains(r.completion.last().unwrap()));
            let mut seq = prompts[r.group].clone();
            seq.extend(&r.completion);
            let tape = trainer.forward(&[&seq], 1).unwrap();
            for (j, &lp) in r.logp.iter().enumerate() {
                worst = worst.max((tape.next_logp(prompts[r.group].len() - 1 + j) - lp).abs());
            }
        }
        assert!(worst < 1e-4, "largest |logp_engine - logp_train| = {worst}");
        // Greedy takes the trainer's argmax at every step.
        let g = sample(&*engine, &prompts[..1], 1, 12, 0.0, &[1, 3], &|_| false, &mut rng).unwrap();
        let mut seq = prompts[0].clone();
        seq.extend(&g[0].completion);
        let tape = trainer.forward(&[&seq], 1).unwrap();
        let v = crate::tasks::VOCAB.len();
        for j in 0..g[0].completion.len() {
            let row = &tape.logp[(prompts[0].len() - 1 + j) * v..][..v];
            let best = (0..v).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            assert_eq!(best as u32, g[0].completion[j]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
