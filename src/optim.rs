//! Adam and SGD written with tensor ops, so that both Keras's and PyTorch's update rules are
//! available and the optimizer state (moments, step count) is ours to save and restore.
//! tch's built-in optimizers offer neither.

use tch::Tensor;

use crate::config::{OptimizerConfig, OptimizerKind, Semantics};

pub struct Optimizer {
    cfg: OptimizerConfig,
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
        let v = if cfg.kind == OptimizerKind::Adam {
            zeros()
        } else {
            Vec::new()
        };
        Optimizer {
            cfg: cfg.clone(),
            step: 0,
            m: zeros(),
            v,
        }
    }

    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Applies one update from the gradients accumulated in `params`, then zeroes them.
    pub fn step(&mut self, params: &[&Tensor]) {
        self.step += 1;
        tch::no_grad(|| {
            for (i, p) in params.iter().enumerate() {
                let mut p = p.shallow_clone();
                let g = p.grad();
                match self.cfg.kind {
                    OptimizerKind::Adam => self.adam(i, &mut p, &g),
                    OptimizerKind::Sgd => self.sgd(i, &mut p, &g),
                }
                p.zero_grad();
            }
        });
    }

    fn adam(&mut self, i: usize, p: &mut Tensor, g: &Tensor) {
        let OptimizerConfig {
            lr,
            beta1: b1,
            beta2: b2,
            weight_decay: wd,
            semantics,
            ..
        } = self.cfg;
        let eps = self.cfg.eps();
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let g = match semantics {
            // L2 penalty folded into the gradient, as torch.optim.Adam does.
            Semantics::Torch if wd > 0.0 => g + &*p * wd,
            Semantics::Keras if wd > 0.0 => {
                // Keras applies decoupled decay before the update: w -= w * wd * lr.
                let _ = p.g_mul_scalar_(1.0 - wd * lr);
                g.shallow_clone()
            }
            _ => g.shallow_clone(),
        };
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
        let OptimizerConfig {
            lr,
            weight_decay: wd,
            momentum,
            semantics,
            ..
        } = self.cfg;
        let g = match semantics {
            Semantics::Torch if wd > 0.0 => g + &*p * wd,
            Semantics::Keras if wd > 0.0 => {
                let _ = p.g_mul_scalar_(1.0 - wd * lr);
                g.shallow_clone()
            }
            _ => g.shallow_clone(),
        };
        let update = if momentum > 0.0 {
            // torch.optim.SGD: buf = momentum * buf + g (buf = g on the first step).
            let buf = &mut self.m[i];
            if self.step == 1 {
                buf.copy_(&g);
            } else {
                let _ = buf.g_mul_scalar_(momentum).g_add_(&g);
            }
            buf.shallow_clone()
        } else {
            g
        };
        let _ = p.g_sub_(&(update * lr));
    }
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
                Semantics::Keras => {
                    lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t)) * m / (v.sqrt() + eps)
                }
                Semantics::Torch => {
                    lr * (m / (1.0 - b1.powi(t))) / ((v / (1.0 - b2.powi(t))).sqrt() + eps)
                }
            };
        }
        w
    }

    fn adam(semantics: Semantics, eps: f64) -> OptimizerConfig {
        OptimizerConfig {
            lr: 0.1,
            eps: Some(eps),
            semantics,
            ..OptimizerConfig::default()
        }
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
        assert!(
            (keras - torch).abs() > 1e-3,
            "semantics should differ: {keras} {torch}"
        );
    }

    #[test]
    fn keras_weight_decay_is_decoupled_and_torch_weight_decay_is_l2() {
        // One step from w = 1, eps tiny: Keras decays first (w = 1 - lr*wd) then steps by lr;
        // torch adds wd*w to the gradient, which leaves the normalised Adam step unchanged.
        let keras = OptimizerConfig {
            weight_decay: 0.5,
            ..adam(Semantics::Keras, 1e-12)
        };
        assert!((run(&keras, 1) - (1.0 - 0.1 * 0.5 - 0.1)).abs() < 1e-9);
        let torch = OptimizerConfig {
            weight_decay: 0.5,
            ..adam(Semantics::Torch, 1e-12)
        };
        assert!((run(&torch, 1) - 0.9).abs() < 1e-9);
    }

    #[test]
    fn sgd_with_and_without_momentum() {
        let plain = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            ..OptimizerConfig::default()
        };
        // w <- w - 0.1 * 2w = 0.8 w per step.
        assert!((run(&plain, 3) - 0.8f64.powi(3)).abs() < 1e-12);
        let heavy = OptimizerConfig {
            momentum: 0.9,
            ..plain
        };
        // Step 1: buf = 2, w = 0.8. Step 2: buf = 0.9*2 + 1.6 = 3.4, w = 0.8 - 0.34 = 0.46.
        assert!((run(&heavy, 2) - 0.46).abs() < 1e-12);
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
}
