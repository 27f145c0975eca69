//! DeepSeekMoE routing: which experts each token goes to, and with what weight.
//!
//! Two routers, exactly as transformers computes them (tag: `[hf-router]`):
//! - V3 (`noaux_tc`): s = sigmoid(logits) in f32; s + e_score_correction_bias
//!   is used only to *select*: a group's score is the sum of its two best
//!   biased scores, the best `topk_group` groups are kept (others masked to
//!   −∞), then the top-k experts; the weights are the *unbiased* s, divided by
//!   (Σ + 1e-20) when `norm_topk_prob`, then × `routed_scaling_factor`.
//! - V2: p = softmax(logits); `greedy` is plain top-k, `group_limited_greedy`
//!   ranks groups by their best p; weights = p × `routed_scaling_factor`
//!   (`norm_topk_prob` is not used by the V2 reference).

/// How experts are selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopkMethod {
    /// V2: plain top-k of softmax probabilities.
    Greedy,
    /// V2: top-k within the `topk_group` groups with the highest max probability.
    GroupLimitedGreedy,
    /// V3: sigmoid scores, bias-corrected group-limited selection.
    NoauxTc,
}

#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub n_experts: usize,
    pub top_k: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub method: TopkMethod,
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f32,
}

impl RouterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.n_experts == 0 || self.top_k == 0 || self.top_k > self.n_experts {
            return Err(format!(
                "num_experts_per_tok {} must be in 1..={} (n_routed_experts)",
                self.top_k, self.n_experts
            ));
        }
        if self.n_group == 0 || !self.n_experts.is_multiple_of(self.n_group) {
            return Err(format!("n_group {} must divide n_routed_experts {}", self.n_group, self.n_experts));
        }
        if self.topk_group == 0 || self.topk_group > self.n_group {
            return Err(format!("topk_group {} must be in 1..={} (n_group)", self.topk_group, self.n_group));
        }
        if self.method == TopkMethod::NoauxTc && self.n_experts / self.n_group < 2 {
            return Err("noaux_tc routing needs at least 2 experts per group".into());
        }
        if self.top_k > self.topk_group * (self.n_experts / self.n_group) {
            return Err(format!("{} experts cannot be chosen from {} groups", self.top_k, self.topk_group));
        }
        Ok(())
    }
}

/// Indices of the `k` largest values, largest first (lowest index on ties).
fn top_indices(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// One token's selection: the scores that weigh, the scores that select
/// (biased, with the dropped groups at −∞), the group scores when groups
/// are ranked, and the chosen experts, best first.
struct Selection {
    scores: Vec<f32>,
    choice: Vec<f32>,
    groups: Option<(Vec<f32>, Vec<usize>)>,
    chosen: Vec<usize>,
}

/// The router's scores of one token: sigmoid (V3) or softmax (V2) of its logits.
pub fn router_scores(cfg: &RouterConfig, logits: &[f32]) -> Vec<f32> {
    match cfg.method {
        TopkMethod::NoauxTc => logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect(),
        _ => {
            let mut p = logits.to_vec();
            crate::models::ops::softmax(&mut p);
            p
        }
    }
}

fn select(cfg: &RouterConfig, logits: &[f32], bias: Option<&[f32]>) -> Selection {
    let per_group = cfg.n_experts / cfg.n_group;
    let scores = router_scores(cfg, logits);
    // Scores used for selection.
    let mut choice: Vec<f32> = match (cfg.method, bias) {
        (TopkMethod::NoauxTc, Some(b)) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        _ => scores.clone(),
    };
    let mut groups = None;
    if cfg.method != TopkMethod::Greedy && cfg.n_group > 1 {
        let group_score: Vec<f32> = choice
            .chunks_exact(per_group)
            .map(|g| match cfg.method {
                TopkMethod::NoauxTc => {
                    let t = top_indices(g, 2);
                    g[t[0]] + g[t[1]]
                }
                _ => g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            })
            .collect();
        let keep = top_indices(&group_score, cfg.topk_group);
        for (gi, g) in choice.chunks_exact_mut(per_group).enumerate() {
            if !keep.contains(&gi) {
                g.fill(f32::NEG_INFINITY);
            }
        }
        groups = Some((group_score, keep));
    }
    let chosen = top_indices(&choice, cfg.top_k);
    Selection { scores, choice, groups, chosen }
}

/// Route one token. `logits`: `[n_experts]` router logits; `bias`: the V3
/// correction bias. Returns `top_k` (expert, weight) pairs, best first.
pub fn route(cfg: &RouterConfig, logits: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
    let Selection { scores, chosen, .. } = select(cfg, logits, bias);
    let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
    if cfg.method == TopkMethod::NoauxTc && cfg.norm_topk_prob {
        let denom = weights.iter().sum::<f32>() + 1e-20;
        for w in &mut weights {
            *w /= denom;
        }
    }
    chosen.into_iter().zip(weights).map(|(e, w)| (e, w * cfg.routed_scaling_factor)).collect()
}

/// How near one token's routing came to another choice: the smallest error
/// in every expert's score (sigmoid or softmax output, as [`route`] selects
/// with it) that could change the chosen set. An expert comparison moves by
/// twice a score's error and a group comparison by four times where groups
/// are ranked by the sum of their two best (V3), twice where by their best
/// (V2), so this is the least of half the gap between the last chosen
/// expert and the best unchosen one in the kept groups, and a quarter (V3)
/// or half (V2) of the gap between the weakest kept group and the best
/// dropped one. Two engines whose scores for a token agree within less
/// than this choose the same experts; `f32::INFINITY` when nothing was
/// left out.
pub fn route_margin(cfg: &RouterConfig, logits: &[f32], bias: Option<&[f32]>) -> f32 {
    let Selection { choice, groups, chosen, .. } = select(cfg, logits, bias);
    let last = chosen.last().map_or(f32::INFINITY, |&e| choice[e]);
    let next = (0..choice.len())
        .filter(|e| !chosen.contains(e) && choice[*e] > f32::NEG_INFINITY)
        .map(|e| choice[e])
        .fold(f32::NEG_INFINITY, f32::max);
    let mut margin = (last - next) / 2.0;
    if let Some((gs, keep)) = groups {
        let weakest = keep.iter().map(|&g| gs[g]).fold(f32::INFINITY, f32::min);
        let best_dropped = (0..gs.len()).filter(|g| !keep.contains(g)).map(|g| gs[g]).fold(f32::NEG_INFINITY, f32::max);
        // A V3 group's score is the sum of two scores, a V2 group's one.
        let moves = if cfg.method == TopkMethod::NoauxTc { 4.0 } else { 2.0 };
        margin = margin.min((weakest - best_dropped) / moves);
    }
    margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(method: TopkMethod) -> RouterConfig {
        RouterConfig {
            n_experts: 4,
            top_k: 2,
            n_group: 2,
            topk_group: 1,
            method,
            norm_topk_prob: true,
            routed_scaling_factor: 2.0,
        }
    }

    #[test]
    fn v3_bias_selects_but_does_not_weigh() {
        // logits 0 → sigmoid 0.5 everywhere. Bias favours group 1 (experts 2, 3).
        let r = route(&cfg(TopkMethod::NoauxTc), &[0.0; 4], Some(&[0.0, 0.0, 0.1, 0.2]));
        // Chosen 3 then 2; unbiased weights 0.5 each, normalised to 0.5, × 2 = 1.0.
        assert_eq!(r, vec![(3, 1.0), (2, 1.0)]);
    }

    #[test]
    fn v3_group_score_is_sum_of_top_two() {
        // Group 0: biased [0.9, 0.0] sums to 0.9; group 1: [0.6, 0.6] sums to 1.2 and wins,
        // though expert 0 alone is the best.
        let logit = |p: f32| (p / (1.0 - p)).ln();
        let l = [logit(0.9), logit(0.0001), logit(0.6), logit(0.6)];
        let r = route(&cfg(TopkMethod::NoauxTc), &l, Some(&[0.0; 4]));
        let ids: Vec<usize> = r.iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![2, 3]);
    }

    #[test]
    fn margin_is_the_nearest_decision() {
        let logit = |p: f32| (p / (1.0 - p)).ln();
        // Groups [0.9, 0.1] (sum 1.0) and [0.6, 0.3] (0.9): group 0 kept by
        // 0.1, a quarter of which is 0.025; within it expert 1 (0.1) is
        // chosen second with nothing left over.
        let l = [logit(0.9), logit(0.1), logit(0.6), logit(0.3)];
        let m = route_margin(&cfg(TopkMethod::NoauxTc), &l, Some(&[0.0; 4]));
        assert!((m - 0.025).abs() < 1e-6, "{m}");
        // Two groups kept, top 2 of 4: 0.9 and 0.6 chosen, 0.3 next: half of 0.3.
        let mut c = cfg(TopkMethod::NoauxTc);
        c.topk_group = 2;
        let m = route_margin(&c, &l, Some(&[0.0; 4]));
        assert!((m - 0.15).abs() < 1e-6, "{m}");
        // The bias counts: +0.25 on expert 3 leaves 0.6 and 0.55 0.025 apart.
        let m = route_margin(&c, &l, Some(&[0.0, 0.0, 0.0, 0.25]));
        assert!((m - 0.025).abs() < 1e-6, "{m}");
        // V2's groups rank by their best: probabilities [.05, .45, .25, .25],
        // group 0 kept by .45 - .25 = .2, half of it .1; expert 0 chosen
        // with nothing else left in the kept group.
        let p = [0.05f32.ln(), 0.45f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let m = route_margin(&cfg(TopkMethod::GroupLimitedGreedy), &p, None);
        assert!((m - 0.1).abs() < 1e-6, "{m}");
        // Everything chosen: no decision to flip.
        c.top_k = 4;
        assert_eq!(route_margin(&c, &l, None), f32::INFINITY);
    }

    #[test]
    fn v2_greedy_weights_are_probabilities_times_scale() {
        // softmax([ln1, ln2, ln3, ln4]) = [.1, .2, .3, .4]
        let l = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        let mut c = cfg(TopkMethod::Greedy);
        c.routed_scaling_factor = 1.0;
        let r = route(&c, &l, None);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 2]);
        assert!((r[0].1 - 0.4).abs() < 1e-6 && (r[1].1 - 0.3).abs() < 1e-6);
    }

    #[test]
    fn v2_group_limited_uses_group_max() {
        // Probabilities [.05, .45, .25, .25]: group 0's max .45 beats group 1's .25.
        let l = [0.05f32.ln(), 0.45f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let r = route(&cfg(TopkMethod::GroupLimitedGreedy), &l, None);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 0]);
    }
}
