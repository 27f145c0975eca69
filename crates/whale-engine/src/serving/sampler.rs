//! Sampling as a chain of small stages, in llama.cpp's order: penalties →
//! top-k → top-p → min-p → temperature → draw. A temperature of 0 (or below)
//! is greedy: the highest logit, lowest id on exact ties, bit-deterministic.

use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 or below: greedy.
    pub temperature: f32,
    /// 0: off.
    pub top_k: usize,
    /// 1: off.
    pub top_p: f32,
    /// 0: off. Keeps tokens whose probability is at least `min_p` × the top one's.
    pub min_p: f32,
    /// 1: off. llama.cpp's rule: positive logits divided, negative multiplied.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at (0: none).
    pub penalty_last_n: usize,
    /// OpenAI-style: logit −= presence_penalty if the token occurred.
    pub presence_penalty: f32,
    /// OpenAI-style: logit −= frequency_penalty × count.
    pub frequency_penalty: f32,
    /// Seed of the draw; `None` seeds from the clock.
    pub seed: Option<u64>,
    /// Added to these tokens' logits before anything else (OpenAI's
    /// `logit_bias`; -100 all but bans a token). Ids past the vocabulary are
    /// ignored.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            penalty_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplerConfig {
    /// Whether sampling is the plain argmax of the model's logits (greedy,
    /// no penalty or bias changes them): what speculative decoding checks
    /// drafts against.
    pub fn is_plain_argmax(&self) -> bool {
        self.temperature <= 0.0
            && self.logit_bias.is_empty()
            && (self.penalty_last_n == 0
                || (self.repeat_penalty == 1.0 && self.presence_penalty == 0.0 && self.frequency_penalty == 0.0))
    }

    pub fn greedy() -> SamplerConfig {
        SamplerConfig { temperature: 0.0, ..SamplerConfig::default() }
    }

    /// Reject values that make no sense, with a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let finite =
            |v: f32, name: &str| if v.is_finite() { Ok(()) } else { Err(format!("{name} must be a finite number")) };
        finite(self.temperature, "temperature")?;
        finite(self.top_p, "top_p")?;
        finite(self.min_p, "min_p")?;
        finite(self.repeat_penalty, "repeat_penalty")?;
        finite(self.presence_penalty, "presence_penalty")?;
        finite(self.frequency_penalty, "frequency_penalty")?;
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top_p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.repeat_penalty <= 0.0 {
            return Err(format!("repeat_penalty must be positive, got {}", self.repeat_penalty));
        }
        Ok(())
    }
}

/// Index of the largest value; the lowest index wins exact ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` highest (id, logit) pairs, highest first (lowest id first on ties).
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut c: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
    let k = k.min(c.len());
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < c.len() && k > 0 {
        c.select_nth_unstable_by(k - 1, cmp);
        c.truncate(k);
    }
    c.sort_by(cmp);
    c.truncate(k);
    c
}

pub struct Sampler {
    pub config: SamplerConfig,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let seed = config.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        Sampler { config, rng: rand::rngs::StdRng::seed_from_u64(seed) }
    }

    /// Apply the penalties to `logits` in place, given the tokens so far.
    pub fn apply_penalties(&self, logits: &mut [f32], history: &[u32]) {
        let c = &self.config;
        let active = c.repeat_penalty != 1.0 || c.presence_penalty != 0.0 || c.frequency_penalty != 0.0;
        if !active || c.penalty_last_n == 0 {
            return;
        }
        let recent = &history[history.len().saturating_sub(c.penalty_last_n)..];
        let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        for &t in recent {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &n) in &counts {
            let Some(l) = logits.get_mut(t as usize) else { continue };
            if *l > 0.0 {
                *l /= c.repeat_penalty;
            } else {
                *l *= c.repeat_penalty;
            }
            *l -= n as f32 * c.frequency_penalty + c.presence_penalty;
        }
    }

    /// Choose the next token. `logits` may be modified.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let dist = self.distribution(logits, history);
        self.draw(&dist)
    }

    /// The distribution [`Sampler::sample`] draws from: `(id, probability)`
    /// pairs, highest first, after the bias, the penalties, top-k, top-p,
    /// min-p and the temperature (greedy: the argmax with probability 1).
    /// `logits` is changed in place by the bias and penalties.
    pub fn distribution(&self, logits: &mut [f32], history: &[u32]) -> Vec<(u32, f32)> {
        for &(id, bias) in &self.config.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        self.apply_penalties(logits, history);
        let c = &self.config;
        if c.temperature <= 0.0 {
            return vec![(argmax(logits), 1.0)];
        }
        // Candidates, highest first.
        let k = if c.top_k == 0 { logits.len() } else { c.top_k };
        let mut cand = top_k(logits, k);
        // Probabilities at temperature 1 decide top-p and min-p (as llama.cpp does:
        // these stages run before temperature).
        let probs = softmax_of(&cand, 1.0);
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = cand.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= c.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        if c.min_p > 0.0 {
            let limit = probs[0] * c.min_p;
            let keep = probs.iter().take(cand.len()).take_while(|&&p| p >= limit).count();
            cand.truncate(keep.max(1));
        }
        let probs = softmax_of(&cand, c.temperature);
        cand.iter().zip(probs).map(|(&(id, _), p)| (id, p)).collect()
    }

    /// One draw from `dist` (as [`Sampler::distribution`] gives it, or any
    /// distribution of the same shape); greedy sampling takes the first
    /// candidate and uses no randomness.
    pub fn draw(&mut self, dist: &[(u32, f32)]) -> u32 {
        if self.config.temperature <= 0.0 {
            return dist.first().map_or(0, |c| c.0);
        }
        let r: f32 = self.rng.gen();
        let mut acc = 0.0;
        for &(id, p) in dist {
            acc += p;
            if r < acc {
                return id;
            }
        }
        dist.last().map_or(0, |c| c.0)
    }

    /// A uniform draw in [0, 1) from the sampler's generator.
    pub fn uniform(&mut self) -> f32 {
        self.rng.gen()
    }
}

fn softmax_of(cand: &[(u32, f32)], temperature: f32) -> Vec<f32> {
    let max = cand.first().map_or(0.0, |c| c.1);
    let mut p: Vec<f32> = cand.iter().map(|&(_, l)| ((l - max) / temperature).exp()).collect();
    let sum: f32 = p.iter().sum();
    for v in &mut p {
        *v /= sum;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let cfg = SamplerConfig { temperature: 5.0, top_k: 1, seed: Some(1), ..SamplerConfig::default() };
        let mut s = Sampler::new(cfg);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 0.5, 0.4], &[]), 1);
        }
    }

    #[test]
    fn seeded_draws_repeat_and_follow_probabilities() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(7),
            ..SamplerConfig::default()
        };
        // logits ln(1), ln(3): probabilities 1/4 and 3/4.
        let logits = [0.0, 3f32.ln()];
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig { seed: Some(seed), ..cfg.clone() });
            (0..4000).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        // Binomial sd = sqrt(.75*.25/4000) ≈ 0.007; 0.04 is more than 5 sd.
        assert!((ones - 0.75).abs() < 0.04, "{ones}");
    }

    #[test]
    fn logit_bias_moves_and_bans_tokens() {
        let logits = [2.0, 1.0, 0.0];
        // +5 makes token 2 the greedy choice; an id past the vocabulary is ignored.
        let mut s = Sampler::new(SamplerConfig { logit_bias: vec![(2, 5.0), (9, 100.0)], ..SamplerConfig::greedy() });
        assert_eq!(s.sample(&mut logits.clone(), &[]), 2);
        // -100 on the top two: sampling at temperature 1 only ever draws token 2.
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(1),
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(SamplerConfig { logit_bias: vec![(0, -100.0), (1, -100.0)], ..cfg.clone() });
        assert!((0..300).all(|_| s.sample(&mut logits.clone(), &[]) == 2));
        let mut s = Sampler::new(cfg);
        assert!((0..300).any(|_| s.sample(&mut logits.clone(), &[]) != 2));
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // probabilities ≈ [0.665, 0.245, 0.090]: top_p 0.6 keeps only the first.
        let logits = [2.0, 1.0, 0.0];
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.6,
            min_p: 0.0,
            seed: Some(3),
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg.clone());
        assert!((0..200).all(|_| s.sample(&mut logits.clone(), &[]) == 0));
        // min_p 0.2: 0.090 < 0.2 × 0.665 is cut, 0.245 stays.
        let mut s = Sampler::new(SamplerConfig { top_p: 1.0, min_p: 0.2, ..cfg });
        let seen: std::collections::HashSet<u32> = (0..500).map(|_| s.sample(&mut logits.clone(), &[])).collect();
        assert_eq!(seen, [0, 1].into_iter().collect());
    }

    #[test]
    fn penalties_by_hand() {
        let cfg = SamplerConfig {
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplerConfig::greedy()
        };
        let s = Sampler::new(cfg);
        let mut l = [4.0, -4.0, 1.0];
        s.apply_penalties(&mut l, &[0, 0, 1]);
        // token 0: 4/2 - 0.5 - 2×0.25 = 1.0; token 1: -4×2 - 0.5 - 0.25 = -8.75.
        assert_eq!(l, [1.0, -8.75, 1.0]);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = SamplerConfig { top_p: 1.5, ..SamplerConfig::default() };
        assert!(bad.validate().unwrap_err().contains("top_p"));
        let bad = SamplerConfig { temperature: f32::NAN, ..SamplerConfig::default() };
        assert!(bad.validate().unwrap_err().contains("temperature"));
    }
}
