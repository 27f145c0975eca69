//! AdamW with bias correction and decoupled weight decay (Loshchilov &
//! Hutter), and clipping by the global gradient norm.

use serde::{Deserialize, Serialize};

use crate::model::Params;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// The optimiser's state: first and second moments and the step count.
pub struct AdamW {
    pub cfg: AdamWConfig,
    pub m: Params,
    pub v: Params,
    pub t: u64,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, like: &Params) -> AdamW {
        AdamW { cfg, m: like.zeros_like(), v: like.zeros_like(), t: 0 }
    }

    /// One update of `params` with `grads`. Norm vectors are not decayed.
    pub fn step(&mut self, params: &mut Params, grads: &Params, lr: f32) {
        self.t += 1;
        let c = self.cfg;
        let b1c = 1.0 - c.beta1.powi(self.t as i32);
        let b2c = 1.0 - c.beta2.powi(self.t as i32);
        for i in 0..params.data.len() {
            let decay = if params.shapes[i].len() == 2 { c.weight_decay } else { 0.0 };
            let (p, g, m, v) = (&mut params.data[i], &grads.data[i], &mut self.m.data[i], &mut self.v.data[i]);
            for j in 0..p.len() {
                m[j] = c.beta1 * m[j] + (1.0 - c.beta1) * g[j];
                v[j] = c.beta2 * v[j] + (1.0 - c.beta2) * g[j] * g[j];
                let mh = m[j] / b1c;
                let vh = v[j] / b2c;
                p[j] -= lr * (mh / (vh.sqrt() + c.eps) + decay * p[j]);
            }
        }
    }
}

/// Scale `grads` so that their global norm is at most `max_norm`; returns
/// the norm before clipping.
pub fn clip_grad_norm(grads: &mut Params, max_norm: f64) -> f64 {
    let norm = grads.norm();
    if norm > max_norm && norm.is_finite() {
        let s = (max_norm / norm) as f32;
        grads.data.iter_mut().flatten().for_each(|g| *g *= s);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LlamaConfig;

    /// AdamW's first step moves every weight by `lr` against its gradient's
    /// sign (m̂/√v̂ = ±1), and decays matrices only.
    #[test]
    fn first_step_is_lr_times_sign_and_clip_bounds_the_norm() {
        let cfg = LlamaConfig::tiny(5, 16, 1, 0, 1);
        let mut p = Params::zeros(&cfg);
        p.fill(1.0);
        let mut g = p.zeros_like();
        for (i, d) in g.data.iter_mut().enumerate() {
            d.iter_mut().enumerate().for_each(|(j, x)| *x = if (i + j) % 2 == 0 { 3.0 } else { -0.5 });
        }
        let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.1, ..Default::default() }, &p);
        opt.step(&mut p, &g, 0.01);
        for i in 0..p.data.len() {
            let decay = if p.shapes[i].len() == 2 { 0.01 * 0.1 } else { 0.0 };
            for j in 0..p.data[i].len() {
                let want = 1.0 - 0.01 * g.data[i][j].signum() - decay;
                assert!((p.data[i][j] - want).abs() < 1e-6, "{} {j}: {} vs {want}", p.names[i], p.data[i][j]);
            }
        }
        let before = clip_grad_norm(&mut g, 1.0);
        assert!(before > 1.0);
        assert!((g.norm() - 1.0).abs() < 1e-5);
    }
}
