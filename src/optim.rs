//! Adam and SGD written with tensor ops, so that both Keras's and PyTorch's update rules are
//! available and the optimizer state (moments, step count) is ours to save and restore.
//! tch's built-in optimizers offer neither.

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::checkpoint::take;
use crate::config::{LrSchedule, Mode, OptimizerConfig, OptimizerKind, Schedule, Semantics};
use crate::metrics::{Plateau, PlateauState};
pub use crate::model::Segment;

/// Adam or SGD over one flat parameter buffer (see `model::Model::params`): every update is
/// a few element-wise ops per parameter group on its range of the buffer, whatever the
/// number of layers.
pub struct Optimizer {
    cfg: OptimizerConfig,
    /// The learning rate in force (of parameters in no group); a schedule changes it between
    /// epochs, and each group's in proportion.
    lr: f64,
    /// Updates taken so far; Adam's bias correction uses it.
    step: i64,
    /// Adam: first moments. SGD: momentum buffer (unused when momentum is 0).
    m: Tensor,
    /// Adam: second moments (empty for SGD).
    v: Tensor,
    groups: Vec<Group>,
}

/// One segment's settings and per-step scalars.
struct Group {
    start: i64,
    len: i64,
    /// The group's rate over the optimizer's (1 for parameters in no group).
    lr_scale: f64,
    weight_decay: f64,
    /// `step` as a float scalar tensor, as libtorch's fused Adam kernel reads (and advances) it.
    step_tensor: Tensor,
    /// On CUDA: the group's rate as a float scalar on the device, and the update is written
    /// so that every value that changes between steps (rate, step count, the Keras eps
    /// correction) is read from the device, as PyTorch's `capturable=True`, so that a CUDA
    /// graph can capture it (`train::graph`); a replayed step advances the host's count by
    /// `count_replayed_step`. The CPU keeps them on the host.
    lr_tensor: Option<Tensor>,
}

impl Optimizer {
    /// An optimizer for a flat parameter buffer like `params`, updating `segments` of it.
    pub fn new(cfg: &OptimizerConfig, params: &Tensor, segments: &[Segment]) -> Optimizer {
        let v = if cfg.kind == OptimizerKind::Sgd { params.zeros_like().narrow(0, 0, 0) } else { params.zeros_like() };
        let device = params.device();
        let groups = segments
            .iter()
            .map(|s| {
                let group = s.group.and_then(|g| cfg.param_groups.get(g));
                let lr = group.and_then(|g| g.lr).unwrap_or(cfg.lr);
                Group {
                    start: s.start,
                    len: s.len,
                    lr_scale: lr / cfg.lr,
                    weight_decay: group.and_then(|g| g.weight_decay).unwrap_or(cfg.weight_decay()),
                    step_tensor: Tensor::zeros([], (tch::Kind::Float, device)),
                    lr_tensor: device.is_cuda().then(|| Tensor::full([], lr, (tch::Kind::Float, device))),
                }
            })
            .collect();
        Optimizer { cfg: cfg.clone(), lr: cfg.lr, step: 0, m: params.zeros_like(), v, groups }
    }

    /// Counts a step that a CUDA graph replayed (its device state advanced on its own).
    pub fn count_replayed_step(&mut self) {
        self.step += 1;
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
        for group in &mut self.groups {
            if let Some(lr_tensor) = &mut group.lr_tensor {
                let _ = lr_tensor.fill_(lr * group.lr_scale);
            }
        }
    }

    pub fn steps(&self) -> i64 {
        self.step
    }

    /// The moment buffers for a checkpoint (`optimizer.m`, `optimizer.v`) and the step count.
    pub fn state(&self) -> (i64, Vec<(String, Tensor)>) {
        (
            self.step,
            vec![("optimizer.m".into(), self.m.shallow_clone()), ("optimizer.v".into(), self.v.shallow_clone())],
        )
    }

    /// Restores what `state` saved.
    pub fn restore(&mut self, step: i64, tensors: &mut HashMap<String, Tensor>) -> Result<()> {
        self.step = step;
        for group in &mut self.groups {
            let _ = group.step_tensor.fill_(step as f64);
        }
        for (name, buffer) in [("optimizer.m", &mut self.m), ("optimizer.v", &mut self.v)] {
            let saved = take(tensors, name, &buffer.size())?;
            buffer.copy_(&saved.to_device(buffer.device()));
        }
        Ok(())
    }

    /// Applies one update to the flat parameters `p` from the flat gradient `g`, group by
    /// group. On the CPU everything the update needs besides tensors (the rate, the step
    /// count and the Keras eps correction that follows from it) is kept on the host; on CUDA
    /// those are device scalars (`capturable`). Either way a step never waits to read a
    /// value back.
    pub fn step(&mut self, p: &mut Tensor, g: &Tensor) -> Result<()> {
        self.step += 1;
        let sgd = self.cfg.kind == OptimizerKind::Sgd;
        for i in 0..self.groups.len() {
            let group = &self.groups[i];
            let (start, len) = (group.start, group.len);
            let mut state = Slices {
                p: p.narrow(0, start, len),
                g: g.narrow(0, start, len),
                m: self.m.narrow(0, start, len),
                v: if sgd { self.v.shallow_clone() } else { self.v.narrow(0, start, len) },
            };
            let g = self.decay(group, &mut state.p, &state.g);
            state.g = g;
            match self.cfg.kind {
                OptimizerKind::Adam | OptimizerKind::Adamw => self.adam(i, &mut state)?,
                OptimizerKind::Sgd => self.sgd(&self.groups[i], &mut state),
            }
        }
        Ok(())
    }

    /// Weight decay as each rule defines it: Keras always decays the weights directly
    /// (w -= w * wd * lr, before the update), as does PyTorch's AdamW; PyTorch's Adam and
    /// SGD add wd * w to the gradient (L2).
    fn decay(&self, group: &Group, p: &mut Tensor, g: &Tensor) -> Tensor {
        let wd = group.weight_decay;
        if wd == 0.0 {
            return g.shallow_clone();
        }
        let decoupled = self.cfg.semantics == Semantics::Keras || self.cfg.kind == OptimizerKind::Adamw;
        if decoupled {
            match &group.lr_tensor {
                Some(lr) => {
                    let _ = p.g_mul_(&(lr * -wd + 1.0));
                }
                None => {
                    let _ = p.g_mul_scalar_(1.0 - wd * self.lr * group.lr_scale);
                }
            }
            g.shallow_clone()
        } else {
            g + &*p * wd
        }
    }

    /// One Adam update of group `i` with libtorch's fused kernel, which implements PyTorch's
    /// rule: w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). Keras's rule,
    /// w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), is the same update with
    /// eps / sqrt(1 - b2^t) in place of eps (multiply PyTorch's through by sqrt(1 - b2^t)).
    fn adam(&mut self, i: usize, s: &mut Slices) -> Result<()> {
        let OptimizerConfig { beta1, beta2, semantics, .. } = self.cfg;
        let eps = self.cfg.eps();
        let lr = self.lr * self.groups[i].lr_scale;
        let group = &mut self.groups[i];
        if let (Some(lr), Semantics::Keras) = (&group.lr_tensor, semantics) {
            // The eps correction changes every step; the fused kernel takes eps as a number,
            // which a captured graph would freeze, so on CUDA Keras's rule is written out.
            let _ = group.step_tensor.g_add_scalar_(1.0);
            let _ = s.m.lerp_(&s.g, 1.0 - beta1);
            let _ = s.v.g_mul_scalar_(beta2).g_add_(&(&s.g * &s.g * (1.0 - beta2)));
            let correction1 = -Tensor::pow_scalar(beta1, &group.step_tensor) + 1.0;
            let correction2 = -Tensor::pow_scalar(beta2, &group.step_tensor) + 1.0;
            let step_size = lr * correction2.sqrt() / correction1;
            let _ = s.p.g_sub_(&(&s.m / (s.v.sqrt() + eps) * step_size));
            return Ok(());
        }
        let eps = match semantics {
            Semantics::Keras => eps / (1.0 - beta2.powi(self.step as i32)).sqrt(),
            Semantics::Torch => eps,
        };
        let lr_tensor = group.lr_tensor.as_ref();
        crate::shim::fused_adam(
            &mut s.p,
            &s.g,
            &mut s.m,
            &mut s.v,
            &mut group.step_tensor,
            lr_tensor,
            lr,
            (beta1, beta2),
            eps,
        )
    }

    fn sgd(&self, group: &Group, s: &mut Slices) {
        let OptimizerConfig { momentum, nesterov, .. } = self.cfg;
        let update = if momentum > 0.0 {
            // torch.optim.SGD: buf = momentum * buf + g (buf = g on the first step, which
            // this is, exactly, from buf = 0; no branch on the host's step count, so it can
            // be captured).
            let _ = s.m.g_mul_scalar_(momentum).g_add_(&s.g);
            // Nesterov looks ahead along the momentum: g + momentum * buf.
            if nesterov {
                &s.g + &s.m * momentum
            } else {
                s.m.shallow_clone()
            }
        } else {
            s.g.shallow_clone()
        };
        match &group.lr_tensor {
            Some(lr) => {
                let _ = s.p.g_sub_(&(update * lr));
            }
            None => {
                let _ = s.p.g_add_(&(update * -(self.lr * group.lr_scale)));
            }
        }
    }
}

/// One group's views of the parameters, gradient and moments.
struct Slices {
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
}

/// What a checkpoint keeps of an `LrScheduler`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub lr: f64,
    pub plateau: Option<PlateauState>,
}

/// The learning rate per epoch, from `training.lr_schedule`.
pub struct LrScheduler {
    schedule: Schedule,
    base: f64,
    epochs: usize,
    /// reduce_on_plateau: the rate in force and the monitor's history.
    lr: f64,
    plateau: Option<Plateau>,
}

impl LrScheduler {
    /// `cfg` comes from a resolved config, which names its plateau monitor; the validation
    /// flag only picks an unset monitor's default, so it changes nothing here.
    pub fn new(cfg: &LrSchedule, base: f64, epochs: usize) -> LrScheduler {
        let schedule = cfg.resolved(false);
        let plateau = match &schedule {
            Schedule::ReduceOnPlateau { monitor, min_delta, .. } => Some(Plateau::new(monitor, Mode::Auto, *min_delta)),
            _ => None,
        };
        LrScheduler { schedule, base, epochs, lr: base, plateau }
    }

    /// The rate for `epoch` (1-based).
    pub fn lr(&self, epoch: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.base,
            Schedule::Step { step_size, gamma } => {
                let decays = (epoch - 1) / step_size.max(1);
                self.base * gamma.powi(decays as i32)
            }
            Schedule::Cosine { warmup_epochs: warmup, min_lr } => {
                if epoch <= warmup {
                    return self.base * epoch as f64 / warmup as f64;
                }
                // From base at the first epoch after warm-up down to min_lr at the last.
                let span = (self.epochs - warmup).saturating_sub(1).max(1) as f64;
                let progress = (epoch - warmup - 1) as f64 / span;
                min_lr + (self.base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::ReduceOnPlateau { .. } => self.lr,
        }
    }

    /// The name of the metrics.csv column that reduce_on_plateau watches.
    pub fn monitor(&self) -> Option<&str> {
        match &self.schedule {
            Schedule::ReduceOnPlateau { monitor, .. } => Some(monitor),
            _ => None,
        }
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
        let (Some(plateau), Schedule::ReduceOnPlateau { factor, patience, min_lr, .. }) =
            (&mut self.plateau, &self.schedule)
        else {
            return;
        };
        plateau.observe(value);
        if plateau.wait >= *patience {
            self.lr = (self.lr * factor).max(*min_lr);
            plateau.wait = 0;
        }
    }
}

/// Scales a flat gradient so that its L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does over all parameters, without reading the norm back
/// to the host.
pub fn clip_grad_norm(grads: &mut Tensor, max_norm: f64) {
    let scale = (grads.norm() + 1e-6).reciprocal().g_mul_scalar(max_norm).clamp_max(1.0);
    let _ = grads.g_mul_(&scale);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Minimises f(w) = w^2 (gradient 2w) from w = 1 for `steps` steps; returns w.
    fn run(cfg: &OptimizerConfig, steps: usize) -> f64 {
        let mut w = Tensor::from_slice(&[1.0f64]);
        let mut opt = Optimizer::new(cfg, &w, &Segment::whole(1));
        for _ in 0..steps {
            let g = &w * 2.0;
            opt.step(&mut w, &g).unwrap();
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
    fn param_groups_update_their_ranges_with_their_own_rate_and_decay() {
        // SGD on f(w) = sum(w^2): one step is w -= lr * (2w + wd * w) (PyTorch's L2 decay).
        let groups = vec![
            crate::config::ParamGroup {
                params: crate::config::Columns::One("a".into()),
                lr: Some(0.2),
                weight_decay: None,
            },
            crate::config::ParamGroup {
                params: crate::config::Columns::One("b".into()),
                lr: None,
                weight_decay: Some(1.0),
            },
        ];
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            semantics: Semantics::Torch,
            param_groups: groups,
            ..OptimizerConfig::default()
        };
        let mut w = Tensor::ones([5], (Kind::Float, Device::Cpu));
        // w[0..2] in no group, w[2..3] in group 0, w[3] frozen (in no segment), w[4] in group 1.
        let segments = [
            Segment { start: 0, len: 2, group: None },
            Segment { start: 2, len: 1, group: Some(0) },
            Segment { start: 4, len: 1, group: Some(1) },
        ];
        let mut opt = Optimizer::new(&cfg, &w, &segments);
        opt.set_lr(0.05); // a schedule halves every group's rate
        let g = &w * 2.0;
        opt.step(&mut w, &g).unwrap();
        let got = Vec::<f32>::try_from(&w).unwrap();
        let want = [1.0 - 0.05 * 2.0, 1.0 - 0.05 * 2.0, 1.0 - 0.1 * 2.0, 1.0, 1.0 - 0.05 * 3.0];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn clipping_scales_the_global_norm_down_only() {
        let mut g = Tensor::from_slice(&[3.0f32, 4.0]); // norm 5
        clip_grad_norm(&mut g, 1.0);
        assert!((g.double_value(&[0]) - 0.6).abs() < 1e-5 && (g.double_value(&[1]) - 0.8).abs() < 1e-5);
        clip_grad_norm(&mut g, 10.0);
        assert!((g.double_value(&[0]) - 0.6).abs() < 1e-5, "a norm under the limit is left alone");
    }

    #[test]
    fn state_round_trips() {
        let mut w = Tensor::ones([3], (Kind::Float, Device::Cpu));
        let mut opt = Optimizer::new(&OptimizerConfig::default(), &w, &Segment::whole(3));
        opt.step(&mut w, &Tensor::ones([3], (Kind::Float, Device::Cpu))).unwrap();
        let (steps, named) = opt.state();
        let mut fresh = Optimizer::new(&OptimizerConfig::default(), &w, &Segment::whole(3));
        let mut map: HashMap<String, Tensor> = named.into_iter().map(|(n, t)| (n, t.copy())).collect();
        fresh.restore(steps, &mut map).unwrap();
        assert_eq!(fresh.steps(), 1);
        assert_eq!(fresh.groups[0].step_tensor.double_value(&[]), 1.0);
        assert!(fresh.m.equal(&opt.m) && fresh.v.equal(&opt.v));
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
