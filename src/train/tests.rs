use std::sync::atomic::Ordering;

use tch::{Device, Kind, Tensor};

use super::early_stopping::EarlyStopper;
use super::signals::{Signal, Signals};
use super::trainer::EpochOrder;
use super::*;
use crate::config::{EarlyStopping, Loss, Metric, OptimizerConfig, OptimizerKind};
use crate::metrics::loss_value;
use crate::model::{Input, Mlp};

fn config(sets: &[&str]) -> Config {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::load(None, &sets).unwrap()
}

fn unsignalled() -> Signals {
    Signals::none()
}

#[test]
fn shuffling_is_a_per_epoch_permutation_fixed_by_the_seed() {
    let _rng = crate::testing::seed(1);
    let data = data::load(&config(&["data.samples=100"])).unwrap().train;
    let (n, limit) = (data.len() as i64, EpochOrder::COPY_LIMIT);
    let x1 = EpochOrder::new(&data, 5, 1, true, limit).x(0, n);
    let x1_again = EpochOrder::new(&data, 5, 1, true, limit).x(0, n);
    let x2 = EpochOrder::new(&data, 5, 2, true, limit).x(0, n);
    assert!(x1.equal(&x1_again));
    assert!(!x1.equal(&x2));
    // Same rows, another order.
    let sorted = |t: &Tensor| t.sum_dim_intlist(1, false, Kind::Float).sort(0, false).0;
    assert!(sorted(&x1).allclose(&sorted(&data.x), 1e-6, 1e-6, false));
    assert!(EpochOrder::new(&data, 5, 1, false, limit).x(0, n).equal(&data.x));
}

#[test]
fn a_large_part_is_gathered_batch_by_batch_into_the_same_batches() {
    let _rng = crate::testing::seed(1);
    let data = data::load(&config(&["data.samples=100"])).unwrap().train;
    // A limit of 0 bytes: every part counts as large.
    let (copied, gathered) = (EpochOrder::new(&data, 5, 3, true, i64::MAX), EpochOrder::new(&data, 5, 3, true, 0));
    assert!(copied.y.equal(&gathered.y));
    for (start, len) in [(0, 32), (32, 32), (64, 16), (80, 0)] {
        assert!(copied.x(start, len).equal(&gathered.x(start, len)), "rows {start}..{}", start + len);
    }
}

#[test]
fn epoch_loss_is_the_batch_size_weighted_mean() {
    // lr tiny: the model barely moves, so the epoch loss must equal the loss of the
    // batches it saw, weighted by their sizes (10 = 4 + 4 + 2).
    let _rng = crate::testing::seed(1);
    let mut config = config(&["data.samples=10", "training.batch_size=4", "training.shuffle=false"]);
    config.training.optimizer = OptimizerConfig { kind: OptimizerKind::Sgd, lr: 1e-30, ..Default::default() };
    config.training.metrics = Some(vec![Metric::Mae, Metric::Mse, Metric::Rmse]);
    let data = data::load(&config).unwrap();
    let mut trainer = Trainer::new(&config, &data, Device::Cpu).unwrap();
    assert!(matches!(trainer.run_epoch(1, &unsignalled(), &Group::single()).unwrap(), EpochEnd::Done));
    let values = &trainer.history.epochs[0].values;
    let (x, y) = (&data.train.x, &data.train.y);
    let batch = |s: i64, l: i64| {
        loss_value(Loss::Mse, &trainer.model.forward(&x.narrow(0, s, l)).unwrap(), &y.narrow(0, s, l)).double_value(&[])
    };
    let want = (batch(0, 4) * 4.0 + batch(4, 4) * 4.0 + batch(8, 2) * 2.0) / 10.0;
    assert!((values[0] - want).abs() < 1e-6, "{} vs {want}", values[0]);
    assert!((values[2] - want).abs() < 1e-6, "mse metric {} vs {want}", values[2]);
    assert!((values[3] - want.sqrt()).abs() < 1e-6);
    let mae = (trainer.model.forward(x).unwrap() - y).abs().mean(Kind::Float).double_value(&[]);
    assert!((values[1] - mae).abs() < 1e-6);
    assert_eq!(trainer.optimizer.steps(), 3);
}

/// The loop a PyTorch user would write: autograd through per-parameter leaves, Keras's
/// Adam written out per tensor. Returns the epoch losses.
fn straightforward_losses(config: &Config, data: &data::Prepared, epochs: usize) -> Vec<f64> {
    tch::manual_seed(5);
    let model = Mlp::new(&config.model, &Input::numeric_only(10), 1, Device::Cpu).unwrap();
    let params: Vec<Tensor> = model.parameters().iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
    let o = &config.training.optimizer;
    let (mut m, mut v): (Vec<Tensor>, Vec<Tensor>) = params.iter().map(|p| (p.zeros_like(), p.zeros_like())).unzip();
    let mut t = 0;
    let mut losses = Vec::new();
    for epoch in 1..=epochs {
        let order = EpochOrder::new(&data.train, config.seed, epoch, true, EpochOrder::COPY_LIMIT);
        let n = data.train.len() as i64;
        let (x, y) = (order.x(0, n), order.y);
        let mut total = 0.0;
        for start in (0..n).step_by(config.training.batch_size) {
            let len = (config.training.batch_size as i64).min(n - start);
            let mut h = x.narrow(0, start, len);
            for i in 0..params.len() / 2 {
                h = h.linear(&params[2 * i], Some(&params[2 * i + 1]));
                if i + 1 < params.len() / 2 {
                    h = h.relu();
                }
            }
            let loss = h.mse_loss(&y.narrow(0, start, len), tch::Reduction::Mean);
            total += loss.double_value(&[]) * len as f64;
            let grads = Tensor::run_backward(&[&loss], &params, false, false);
            t += 1;
            tch::no_grad(|| {
                for (i, (p, g)) in params.iter().zip(&grads).enumerate() {
                    m[i] = &m[i] * o.beta1 + g * (1.0 - o.beta1);
                    v[i] = &v[i] * o.beta2 + g.square() * (1.0 - o.beta2);
                    let alpha = o.lr * (1.0 - o.beta2.powi(t)).sqrt() / (1.0 - o.beta1.powi(t));
                    let _ = p.shallow_clone().g_sub_(&(&m[i] * alpha / (v[i].sqrt() + o.eps())));
                }
            });
        }
        losses.push(total / n as f64);
    }
    losses
}

#[test]
fn the_optimised_path_matches_the_straightforward_loop() {
    let _rng = crate::testing::seed(2);
    let config = config(&["data.samples=300", "data.kind=linear", "training.epochs=3", "model.hidden=[16, 8]"]);
    let data = data::load(&config).unwrap();
    let want = straightforward_losses(&config, &data, 3);
    tch::manual_seed(5);
    let mut trainer = Trainer::new(&config, &data, Device::Cpu).unwrap();
    for epoch in 1..=3 {
        trainer.run_epoch(epoch, &unsignalled(), &Group::single()).unwrap();
    }
    let got: Vec<f64> = trainer.history.epochs.iter().map(|r| r.values[0]).collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w.abs(), "epoch losses {got:?} vs straightforward {want:?}");
    }
    assert!(want[2] < want[0], "the reference learns: {want:?}");
}

#[test]
fn a_checkpoint_mid_epoch_resumes_to_the_same_numbers() {
    let _rng = crate::testing::seed(0);
    let config = config(&["data.samples=100", "training.epochs=2", "model.dropout=0.2"]);
    let data = data::load(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");

    tch::manual_seed(5);
    let mut straight = Trainer::new(&config, &data, Device::Cpu).unwrap();
    for epoch in 1..=2 {
        straight.run_epoch(epoch, &unsignalled(), &Group::single()).unwrap();
    }

    tch::manual_seed(5);
    let mut first = Trainer::new(&config, &data, Device::Cpu).unwrap();
    first.run_epoch(1, &unsignalled(), &Group::single()).unwrap();
    let signals = unsignalled();
    signals.int.store(true, Ordering::Relaxed);
    assert!(matches!(first.run_epoch(2, &signals, &Group::single()).unwrap(), EpochEnd::Interrupted(Signal::Int)));
    assert_eq!(first.position(), (1, 4));
    first.checkpoint_job(&path, None, 0.0).unwrap()().unwrap();

    // A fresh trainer (other initial weights) restored from the checkpoint.
    tch::manual_seed(99);
    let mut resumed = Trainer::new(&config, &data, Device::Cpu).unwrap();
    resumed.restore(&path).unwrap();
    assert_eq!((resumed.epoch, resumed.position()), (1, (1, 4)));
    resumed.run_epoch(2, &unsignalled(), &Group::single()).unwrap();
    assert!(straight.model.params().equal(resumed.model.params()), "weights differ");
    let rows = |t: &Trainer| t.history.epochs.iter().map(|r| r.values.clone()).collect::<Vec<_>>();
    assert_eq!(rows(&straight), rows(&resumed));
    assert_eq!(straight.optimizer.steps(), resumed.optimizer.steps());
}

#[test]
fn early_stopping_waits_patience_epochs_and_restores_the_best() {
    let _rng = crate::testing::seed(0);
    let config = config(&[]);
    let model = Mlp::new(&config.model, &Input::numeric_only(10), 1, Device::Cpu).unwrap();
    let cfg = EarlyStopping { monitor: "loss".into(), patience: 2, restore_best: true, ..Default::default() };
    let mut stopper = EarlyStopper::new(cfg);
    let best = model.layers[0].weight.copy();
    assert_eq!(stopper.observe(1, 1.0, &model).unwrap(), (true, false));
    let _ = model.layers[0].weight.shallow_clone().fill_(7.0);
    assert_eq!(stopper.observe(2, 1.5, &model).unwrap(), (false, false));
    assert_eq!(stopper.observe(3, 1.2, &model).unwrap(), (false, true), "two epochs without improvement");
    stopper.restore(&model).unwrap();
    assert!(model.layers[0].weight.equal(&best));
    assert_eq!(stopper.best_epoch, 1);
    let mut eager = EarlyStopper::new(EarlyStopping { monitor: "loss".into(), ..Default::default() });
    assert_eq!(eager.observe(1, 1.0, &model).unwrap(), (true, false));
    assert_eq!(eager.observe(2, 1.0, &model).unwrap(), (false, true), "patience 0 stops at the first non-improvement");
}

#[test]
fn explicit_run_dir_must_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (run, lock) = crate::rundir::RunDir::create("x", Some(&out)).unwrap();
    assert_eq!(run.path(), out);
    // Claimed, even while empty: another run cannot take it.
    let err = crate::rundir::RunDir::create("x", Some(&out)).err().unwrap().to_string();
    assert!(err.contains("already exists and is not empty"), "{err}");
    drop(lock);
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    assert_eq!(crate::rundir::RunDir::create("x", Some(&other)).unwrap().0.path(), other, "an empty one is taken");
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("summary.json"), "{}").unwrap();
    let err = crate::rundir::RunDir::create("x", Some(&full)).err().unwrap().to_string();
    assert!(err.contains("already exists and is not empty"), "{err}");
}

#[test]
fn resume_refuses_changes_to_data_and_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("checkpoint")).unwrap();
    std::fs::write(dir.path().join("config.yaml"), crate::config::KERAS_EXAMPLE).unwrap();
    std::fs::write(dir.path().join("checkpoint/last.safetensors"), b"").unwrap();
    let err = resume_config(dir.path(), &["model.hidden=[3]".into()]).unwrap_err().to_string();
    assert!(err.contains("--set model.hidden: a resumed run keeps its data, model, task and seed"), "{err}");
    assert!(resume_config(dir.path(), &["seed=3".into()]).is_err());
    let more = resume_config(dir.path(), &["training.epochs=200".into()]).unwrap();
    assert_eq!(more.training.epochs, 200);
    let err = resume_config(&dir.path().join("nope"), &[]).unwrap_err().to_string();
    assert!(err.contains("is not a torchfit run directory"), "{err}");
}

#[test]
fn a_step_updates_or_skips_a_non_finite_batch() {
    let _rng = crate::testing::seed(0);
    let config = config(&["data.samples=64", "training.on_nan=skip_batch"]);
    let data = data::load(&config).unwrap();
    let mut trainer = Trainer::new(&config, &data, Device::Cpu).unwrap();
    let group = Group::single();
    let batch = |x: Tensor| step::Batch {
        y: data.train.y.narrow(0, 0, 8),
        output: Tensor::zeros([8, 1], (Kind::Float, Device::Cpu)),
        x,
        share: 1.0,
        dropout_seed: None,
    };
    let before = trainer.model.params().copy();
    let good = batch(data.train.x.narrow(0, 0, 8));
    assert_eq!(trainer.step(&good, &group).unwrap(), step::StepOutcome::Updated);
    assert!(!trainer.model.params().equal(&before), "an update moves the weights");
    let after = trainer.model.params().copy();
    let bad = batch(data.train.x.narrow(0, 0, 8).fill(f64::NAN));
    assert_eq!(trainer.step(&bad, &group).unwrap(), step::StepOutcome::Skipped);
    assert!(trainer.model.params().equal(&after), "a skipped step leaves the weights alone");
    assert_eq!(trainer.optimizer.steps(), 1);
}

/// Trains `steps` steps of `config` through the trainer, returning each step's loss and the
/// weights after it.
fn steps_of(config: &Config, data: &data::Prepared, steps: i64) -> Vec<(f64, Tensor)> {
    tch::manual_seed(5);
    let mut trainer = Trainer::new(config, data, Device::Cpu).unwrap();
    let batch = config.training.batch_size as i64;
    (0..steps)
        .map(|step| {
            let (x, y) = (data.train.x.narrow(0, step * batch, batch), data.train.y.narrow(0, step * batch, batch));
            let output = Tensor::zeros([batch, trainer.outputs as i64], (Kind::Float, Device::Cpu));
            let dropout_seed = Some(1000 + step);
            let b = step::Batch { x, y: y.shallow_clone(), output: output.shallow_clone(), share: 1.0, dropout_seed };
            trainer.step(&b, &Group::single()).unwrap();
            (loss_value(config.loss(), &output, &y).double_value(&[]), trainer.model.params().copy())
        })
        .collect()
}

#[test]
fn autograd_trains_the_mlp_as_the_hand_written_backward_does() {
    let _rng = crate::testing::seed(3);
    for sets in [
        &["data.kind=linear", "model.hidden=[16, 8]", "model.activation=gelu", "model.dropout=0.3"][..],
        &[
            "data.kind=moons",
            "data.features=2",
            "model.hidden=[12, 12, 6]",
            "model.activation=tanh",
            "training.optimizer.kind=sgd",
        ][..],
    ] {
        let mut sets: Vec<&str> = sets.to_vec();
        sets.extend(["data.samples=400", "training.batch_size=20", "training.gradient_clip=1.0"]);
        let manual = config(&sets);
        let data = data::load(&manual).unwrap();
        sets.push("model.backward=autograd");
        let autograd = config(&sets);
        let (a, b) = (steps_of(&manual, &data, 15), steps_of(&autograd, &data, 15));
        for (step, ((la, wa), (lb, wb))) in a.iter().zip(&b).enumerate() {
            assert!((la - lb).abs() <= 1e-6 * la.abs().max(1.0), "{sets:?} step {step}: loss {la} vs {lb}");
            let diff = (wa - wb).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "{sets:?} step {step}: weights differ by {diff}");
        }
        assert!(a[0].1.ne_tensor(&a[14].1).any().int64_value(&[]) == 1, "the weights move");
    }
}
