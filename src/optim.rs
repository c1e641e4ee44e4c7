//! Adam and SGD written with tensor ops, so that both Keras's and PyTorch's update rules are
//! available and the optimizer state (moments, step count) is ours to save and restore.
//! tch's built-in optimizers offer neither.

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::checkpoint::take;
use crate::config::{LrSchedule, Mode, OptimizerConfig, OptimizerKind, ScheduleKind, Semantics};
use crate::metrics::{Plateau, PlateauState};

pub struct Optimizer {
    cfg: OptimizerConfig,
    /// The learning rate in force; a schedule changes it between epochs.
    lr: f64,
    /// Updates taken so far; Adam's bias correction uses it.
    step: i64,
    /// Adam: first moments. SGD: momentum buffers (unused when momentum is 0).
    m: Vec<Tensor>,
    /// Adam: second moments.
    v: Vec<Tensor>,
}

impl Optimizer {
    pub fn new(cfg: &OptimizerConfig, params: &[&Tensor]) -> Optimizer {
        let zeros = || params.iter().map(|p| p.zeros_like()).collect::<Vec<_>>();
        let v = if cfg.kind == OptimizerKind::Sgd { Vec::new() } else { zeros() };
        Optimizer { cfg: cfg.clone(), lr: cfg.lr, step: 0, m: zeros(), v }
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn steps(&self) -> i64 {
        self.step
    }

    /// The moments (or momentum buffers) as named tensors for a checkpoint, parameter `i`
    /// under `names[i]`, and the step count.
    pub fn state(&self, names: &[String]) -> (i64, Vec<(String, Tensor)>) {
        let mut named = Vec::new();
        for (prefix, buffers) in [("optimizer.m", &self.m), ("optimizer.v", &self.v)] {
            named.extend(names.iter().zip(buffers).map(|(n, t)| (format!("{prefix}.{n}"), t.shallow_clone())));
        }
        (self.step, named)
    }

    /// Restores what `state` saved.
    pub fn restore(&mut self, step: i64, names: &[String], tensors: &mut HashMap<String, Tensor>) -> Result<()> {
        self.step = step;
        for (prefix, buffers) in [("optimizer.m", &mut self.m), ("optimizer.v", &mut self.v)] {
            for (name, buffer) in names.iter().zip(buffers.iter_mut()) {
                let saved = take(tensors, &format!("{prefix}.{name}"), &buffer.size())?;
                buffer.copy_(&saved.to_device(buffer.device()));
            }
        }
        Ok(())
    }

    /// Applies one update from the gradients accumulated in `params`, then zeroes them.
    pub fn step(&mut self, params: &[&Tensor]) {
        self.step += 1;
        tch::no_grad(|| {
            for (i, p) in params.iter().enumerate() {
                let mut p = p.shallow_clone();
                let g = p.grad();
                match self.cfg.kind {
                    OptimizerKind::Adam | OptimizerKind::Adamw => self.adam(i, &mut p, &g),
                    OptimizerKind::Sgd => self.sgd(i, &mut p, &g),
                }
                p.zero_grad();
            }
        });
    }

    /// Weight decay as each rule defines it: Keras always decays the weights directly
    /// (w -= w * wd * lr, before the update), as does PyTorch's AdamW; PyTorch's Adam and
    /// SGD add wd * w to the gradient (L2).
    fn decay(&self, p: &mut Tensor, g: &Tensor) -> Tensor {
        let wd = self.cfg.weight_decay();
        if wd == 0.0 {
            return g.shallow_clone();
        }
        let decoupled = self.cfg.semantics == Semantics::Keras || self.cfg.kind == OptimizerKind::Adamw;
        if decoupled {
            let _ = p.g_mul_scalar_(1.0 - wd * self.lr);
            g.shallow_clone()
        } else {
            g + &*p * wd
        }
    }

    fn adam(&mut self, i: usize, p: &mut Tensor, g: &Tensor) {
        let OptimizerConfig { beta1: b1, beta2: b2, semantics, .. } = self.cfg;
        let lr = self.lr;
        let eps = self.cfg.eps();
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let g = self.decay(p, g);
        let (m, v) = (&mut self.m[i], &mut self.v[i]);
        let _ = m.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
        let _ = v.g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
        match semantics {
            Semantics::Keras => {
                // alpha = lr * sqrt(1 - b2^t) / (1 - b1^t); w -= alpha * m / (sqrt(v) + eps)
                let alpha = lr * bc2.sqrt() / bc1;
                let _ = p.g_sub_(&(&*m * alpha / (v.sqrt() + eps)));
            }
            Semantics::Torch => {
                // w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
                let denom = v.sqrt() / bc2.sqrt() + eps;
                let _ = p.g_sub_(&(&*m * (lr / bc1) / denom));
            }
        }
    }

    fn sgd(&mut self, i: usize, p: &mut Tensor, g: &Tensor) {
        let OptimizerConfig { momentum, nesterov, .. } = self.cfg;
        let lr = self.lr;
        let g = self.decay(p, g);
        let update = if momentum > 0.0 {
            // torch.optim.SGD: buf = momentum * buf + g (buf = g on the first step).
            let buf = &mut self.m[i];
            if self.step == 1 {
                buf.copy_(&g);
            } else {
                let _ = buf.g_mul_scalar_(momentum).g_add_(&g);
            }
            // Nesterov looks ahead along the momentum: g + momentum * buf.
            if nesterov {
                &g + &*buf * momentum
            } else {
                buf.shallow_clone()
            }
        } else {
            g
        };
        let _ = p.g_sub_(&(update * lr));
    }
}

/// What a checkpoint keeps of an `LrScheduler`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub lr: f64,
    pub plateau: Option<PlateauState>,
}

/// The learning rate per epoch, from `training.lr_schedule`.
pub struct LrScheduler {
    cfg: LrSchedule,
    base: f64,
    epochs: usize,
    /// reduce_on_plateau: the rate in force and the monitor's history.
    lr: f64,
    plateau: Option<Plateau>,
}

impl LrScheduler {
    pub fn new(cfg: &LrSchedule, base: f64, epochs: usize) -> LrScheduler {
        let plateau = (cfg.kind == ScheduleKind::ReduceOnPlateau)
            .then(|| Plateau::new(cfg.monitor.as_deref().unwrap_or("loss"), Mode::Auto, cfg.min_delta.unwrap_or(1e-4)));
        LrScheduler { cfg: cfg.clone(), base, epochs, lr: base, plateau }
    }

    /// The rate for `epoch` (1-based).
    pub fn lr(&self, epoch: usize) -> f64 {
        let s = &self.cfg;
        match s.kind {
            ScheduleKind::Constant => self.base,
            ScheduleKind::Step => {
                let decays = (epoch - 1) / s.step_size.unwrap_or(10).max(1);
                self.base * s.gamma.unwrap_or(0.1).powi(decays as i32)
            }
            ScheduleKind::Cosine => {
                let (warmup, min_lr) = (s.warmup_epochs.unwrap_or(0), s.min_lr.unwrap_or(0.0));
                if epoch <= warmup {
                    return self.base * epoch as f64 / warmup as f64;
                }
                // From base at the first epoch after warm-up down to min_lr at the last.
                let span = (self.epochs - warmup).saturating_sub(1).max(1) as f64;
                let progress = (epoch - warmup - 1) as f64 / span;
                min_lr + (self.base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            ScheduleKind::ReduceOnPlateau => self.lr,
        }
    }

    /// The name of the metrics.csv column that reduce_on_plateau watches.
    pub fn monitor(&self) -> Option<&str> {
        self.plateau.as_ref().and(self.cfg.monitor.as_deref())
    }

    /// What a checkpoint keeps: the rate in force and the plateau counters.
    pub fn state(&self) -> ScheduleState {
        ScheduleState { lr: self.lr, plateau: self.plateau.as_ref().map(Plateau::state) }
    }

    pub fn restore(&mut self, state: &ScheduleState) {
        self.lr = state.lr;
        if let (Some(plateau), Some(saved)) = (&mut self.plateau, &state.plateau) {
            plateau.restore(saved);
        }
    }

    /// Feeds the end-of-epoch value of the monitor (reduce_on_plateau only): after `patience`
    /// epochs without improvement the rate is multiplied by `factor`, down to `min_lr`.
    pub fn observe(&mut self, value: f64) {
        let Some(plateau) = &mut self.plateau else { return };
        plateau.observe(value);
        if plateau.wait >= self.cfg.patience.unwrap_or(10) {
            self.lr = (self.lr * self.cfg.factor.unwrap_or(0.1)).max(self.cfg.min_lr.unwrap_or(0.0));
            plateau.wait = 0;
        }
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does, without reading the norm back to the host.
pub fn clip_grad_norm(params: &[&Tensor], max_norm: f64) {
    tch::no_grad(|| {
        let squares: Vec<Tensor> = params.iter().map(|p| p.grad().square().sum(tch::Kind::Float)).collect();
        let norm = Tensor::stack(&squares, 0).sum(tch::Kind::Float).sqrt();
        let scale = (norm + 1e-6).reciprocal().g_mul_scalar(max_norm).clamp_max(1.0);
        for p in params {
            let mut g = p.grad();
            let _ = g.g_mul_(&scale);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Minimises f(w) = w^2 (gradient 2w) from w = 1 for `steps` steps; returns w.
    fn run(cfg: &OptimizerConfig, steps: usize) -> f64 {
        let w = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let mut opt = Optimizer::new(cfg, &[&w]);
        for _ in 0..steps {
            let loss = w.square().sum(Kind::Double);
            loss.backward();
            opt.step(&[&w]);
        }
        w.double_value(&[0])
    }

    /// The same rules, worked out in plain f64.
    fn adam_by_formula(cfg: &OptimizerConfig, steps: usize) -> f64 {
        let (b1, b2, lr, eps) = (cfg.beta1, cfg.beta2, cfg.lr, cfg.eps());
        let (mut w, mut m, mut v) = (1.0f64, 0.0, 0.0);
        for t in 1..=steps as i32 {
            let g = 2.0 * w;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            w -= match cfg.semantics {
                Semantics::Keras => lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t)) * m / (v.sqrt() + eps),
                Semantics::Torch => lr * (m / (1.0 - b1.powi(t))) / ((v / (1.0 - b2.powi(t))).sqrt() + eps),
            };
        }
        w
    }

    fn adam(semantics: Semantics, eps: f64) -> OptimizerConfig {
        OptimizerConfig { lr: 0.1, eps: Some(eps), semantics, ..OptimizerConfig::default() }
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // With m = (1-b1) g and v = (1-b2) g^2 the bias-corrected step is lr * g/|g|.
        let w = run(&adam(Semantics::Keras, 1e-12), 1);
        assert!((w - 0.9).abs() < 1e-9, "{w}");
        let w = run(&adam(Semantics::Torch, 1e-12), 1);
        assert!((w - 0.9).abs() < 1e-9, "{w}");
    }

    #[test]
    fn adam_matches_the_formula_for_both_semantics() {
        for semantics in [Semantics::Keras, Semantics::Torch] {
            // A large eps makes the two semantics differ visibly.
            let cfg = adam(semantics, 0.5);
            let (got, want) = (run(&cfg, 5), adam_by_formula(&cfg, 5));
            assert!((got - want).abs() < 1e-12, "{semantics:?}: {got} vs {want}");
        }
        let keras = run(&adam(Semantics::Keras, 0.5), 5);
        let torch = run(&adam(Semantics::Torch, 0.5), 5);
        assert!((keras - torch).abs() > 1e-3, "semantics should differ: {keras} {torch}");
    }

    #[test]
    fn keras_weight_decay_is_decoupled_and_torch_weight_decay_is_l2() {
        // One step from w = 1, eps tiny: Keras decays first (w = 1 - lr*wd) then steps by lr;
        // torch adds wd*w to the gradient, which leaves the normalised Adam step unchanged.
        let keras = OptimizerConfig { weight_decay: Some(0.5), ..adam(Semantics::Keras, 1e-12) };
        assert!((run(&keras, 1) - (1.0 - 0.1 * 0.5 - 0.1)).abs() < 1e-9);
        let torch = OptimizerConfig { weight_decay: Some(0.5), ..adam(Semantics::Torch, 1e-12) };
        assert!((run(&torch, 1) - 0.9).abs() < 1e-9);
        // PyTorch's AdamW decays directly, like Keras.
        let adamw = OptimizerConfig { kind: OptimizerKind::Adamw, ..torch };
        assert!((run(&adamw, 1) - (1.0 - 0.1 * 0.5 - 0.1)).abs() < 1e-9);
    }

    #[test]
    fn sgd_with_and_without_momentum() {
        let plain = OptimizerConfig { kind: OptimizerKind::Sgd, lr: 0.1, ..OptimizerConfig::default() };
        // w <- w - 0.1 * 2w = 0.8 w per step.
        assert!((run(&plain, 3) - 0.8f64.powi(3)).abs() < 1e-12);
        let heavy = OptimizerConfig { momentum: 0.9, ..plain };
        // Step 1: buf = 2, w = 0.8. Step 2: buf = 0.9*2 + 1.6 = 3.4, w = 0.8 - 0.34 = 0.46.
        assert!((run(&heavy, 2) - 0.46).abs() < 1e-12);
        // Nesterov, step 1: buf = 2, update = 2 + 0.9 * 2 = 3.8, w = 1 - 0.38 = 0.62.
        let nesterov = OptimizerConfig { nesterov: true, ..heavy };
        assert!((run(&nesterov, 1) - 0.62).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_the_global_norm_down_only() {
        let a = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
        let b = Tensor::from_slice(&[4.0f64]).set_requires_grad(true);
        (a.square() / 2.0 + b.square() / 2.0).sum(Kind::Double).backward(); // grads 3 and 4: norm 5
        clip_grad_norm(&[&a, &b], 1.0);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5 && (b.grad().double_value(&[0]) - 0.8).abs() < 1e-5);
        clip_grad_norm(&[&a, &b], 10.0);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5, "a norm under the limit is left alone");
    }

    #[test]
    fn gradients_are_zeroed_after_a_step() {
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Optimizer::new(&OptimizerConfig::default(), &[&w]);
        w.square().sum(Kind::Float).backward();
        opt.step(&[&w]);
        assert_eq!(w.grad().abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert_eq!(opt.steps(), 1);
    }

    fn schedule(yaml: &str, epochs: usize) -> LrScheduler {
        let cfg: LrSchedule = serde_yaml::from_str(yaml).unwrap();
        let mut config = crate::config::Config::default();
        config.training.lr_schedule = cfg;
        config.resolve();
        LrScheduler::new(&config.training.lr_schedule, 0.1, epochs)
    }

    #[test]
    fn step_and_cosine_schedules() {
        let step = schedule("{kind: step, step_size: 2, gamma: 0.5}", 10);
        let rates: Vec<f64> = (1..=5).map(|e| step.lr(e)).collect();
        assert_eq!(rates, [0.1, 0.1, 0.05, 0.05, 0.025]);
        let cosine = schedule("{kind: cosine, warmup_epochs: 2, min_lr: 0.01}", 12);
        assert!((cosine.lr(1) - 0.05).abs() < 1e-12 && (cosine.lr(2) - 0.1).abs() < 1e-12);
        assert!((cosine.lr(3) - 0.1).abs() < 1e-12, "full rate right after warm-up");
        assert!((cosine.lr(12) - 0.01).abs() < 1e-12, "min_lr at the last epoch");
        assert!((cosine.lr(7) + cosine.lr(8) - 0.11).abs() < 1e-9, "symmetric about the middle");
    }

    #[test]
    fn reduce_on_plateau_cuts_after_patience() {
        let mut s = schedule("{kind: reduce_on_plateau, factor: 0.5, patience: 2, min_lr: 0.03}", 10);
        assert_eq!(s.monitor(), Some("loss"));
        for value in [1.0, 0.5, 0.6, 0.7] {
            s.observe(value);
        }
        assert!((s.lr(5) - 0.05).abs() < 1e-12);
        for value in [0.9, 0.9] {
            s.observe(value);
        }
        assert!((s.lr(7) - 0.03).abs() < 1e-12, "floored at min_lr");
    }
}
