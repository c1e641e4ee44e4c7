use super::*;
use super::activation::op;
use crate::config::Loss;
use crate::metrics::{loss_grad, loss_value};

fn config(init: Init) -> ModelConfig {
    ModelConfig { hidden: vec![20, 5], activation: Activation::Relu, init, dropout: 0.0, init_from: None }
}

#[test]
fn names_and_shapes_follow_torch_sequential() {
    let _rng = crate::testing::seed(0);
    let m = Mlp::new(&config(Init::Keras), 10, 3, Device::Cpu).unwrap();
    let named: Vec<(String, Vec<i64>)> = m.named_parameters().into_iter().map(|(n, t)| (n, t.size())).collect();
    let expected = [
        ("0.weight", vec![20, 10]),
        ("0.bias", vec![20]),
        ("2.weight", vec![5, 20]),
        ("2.bias", vec![5]),
        ("4.weight", vec![3, 5]),
        ("4.bias", vec![3]),
    ];
    assert_eq!(named, expected.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<Vec<_>>());
    assert_eq!(m.parameter_count(), 20 * 10 + 20 + 5 * 20 + 5 + 3 * 5 + 3);
    assert_eq!(m.forward(&Tensor::zeros([7, 10], (Kind::Float, Device::Cpu))).size(), vec![7, 3]);
    // The layers are views of the one flat buffer.
    let _ = m.params.shallow_clone().fill_(1.5);
    assert_eq!(m.layers[2].bias.double_value(&[0]), 1.5);
    let views = m.named_views(&m.params);
    assert_eq!(views[3].0, "2.bias");
    assert!(views[3].1.equal(&m.layers[1].bias));
}

#[test]
fn keras_init_is_glorot_uniform_with_zero_bias() {
    let _rng = crate::testing::seed(0);
    let m = Mlp::new(&config(Init::Keras), 10, 3, Device::Cpu).unwrap();
    let limit = (6.0f64 / 30.0).sqrt();
    let w = &m.layers[0].weight;
    assert!(w.abs().max().double_value(&[]) <= limit);
    // 200 draws from U(-l, l) reach beyond 0.8 l with near certainty.
    assert!(w.abs().max().double_value(&[]) > 0.8 * limit);
    assert_eq!(m.layers[0].bias.abs().sum(Kind::Float).double_value(&[]), 0.0);
}

#[test]
fn torch_init_bounds_weights_and_biases_by_fan_in() {
    let _rng = crate::testing::seed(0);
    let m = Mlp::new(&config(Init::Torch), 10, 3, Device::Cpu).unwrap();
    let bound = 1.0 / 10f64.sqrt();
    assert!(m.layers[0].weight.abs().max().double_value(&[]) <= bound);
    let b = m.layers[0].bias.abs().max().double_value(&[]);
    assert!(b > 0.0 && b <= bound);
}

#[test]
fn kaiming_inits_scale_by_fan_in() {
    let _rng = crate::testing::seed(0);
    let u = Mlp::new(&config(Init::KaimingUniform), 10, 3, Device::Cpu).unwrap();
    assert!(u.layers[0].weight.abs().max().double_value(&[]) <= (0.6f64).sqrt());
    let n =
        Mlp::new(&ModelConfig { hidden: vec![2000], ..config(Init::KaimingNormal) }, 100, 1, Device::Cpu).unwrap();
    let std = n.layers[0].weight.std(true).double_value(&[]);
    assert!((std - (2.0f64 / 100.0).sqrt()).abs() < 0.005, "{std}");
}

#[test]
fn dropout_acts_in_training_only_and_scales_what_it_keeps() {
    let _rng = crate::testing::seed(0);
    let m = Mlp::new(&ModelConfig { dropout: 0.5, ..config(Init::Torch) }, 10, 3, Device::Cpu).unwrap();
    let x = Tensor::ones([64, 10], (Kind::Float, Device::Cpu));
    assert!(m.forward(&x).equal(&m.forward(&x)));
    let (_, tape) = m.forward_train(&x, true);
    let mask = tape.masks[0].as_ref().unwrap();
    let kept = Vec::<f32>::try_from(mask.flatten(0, 1)).unwrap();
    assert!(kept.iter().all(|&v| v == 0.0 || v == 2.0) && kept.contains(&0.0) && kept.contains(&2.0));
}

/// The straightforward way: autograd through leaf copies of the same parameters.
fn autograd_grads(m: &Mlp, x: &Tensor, y: &Tensor, loss: Loss, masks: &[Option<Tensor>]) -> Vec<Tensor> {
    let leaves: Vec<Tensor> = m.parameters().iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
    let mut h = x.shallow_clone();
    let layers = leaves.len() / 2;
    for i in 0..layers {
        h = h.linear(&leaves[2 * i], Some(&leaves[2 * i + 1]));
        if i + 1 < layers {
            h = (op(m.activation).forward)(&h);
            if let Some(mask) = &masks[i] {
                h = h * mask;
            }
        }
    }
    Tensor::run_backward(&[loss_value(loss, &h, y)], &leaves, false, false)
}

#[test]
fn manual_gradients_match_autograd() {
    let _rng = crate::testing::seed(3);
    let x = Tensor::randn([16, 6], (Kind::Float, Device::Cpu));
    let values = Tensor::randn([16, 2], (Kind::Float, Device::Cpu));
    let classes = Tensor::randint(3, [16], (Kind::Int64, Device::Cpu));
    let binary = Tensor::randint(2, [16], (Kind::Int64, Device::Cpu));
    let one = Tensor::from(1.0f32);
    let cases = [
        (Loss::Mse, 2, &values),
        (Loss::Mae, 2, &values),
        (Loss::Huber, 2, &values),
        (Loss::CrossEntropy, 3, &classes),
        (Loss::Bce, 1, &binary),
    ];
    for activation in Activation::ALL {
        for (loss, outputs, y) in &cases {
            for dropout in [0.0, 0.3] {
                let cfg =
                    ModelConfig { hidden: vec![8, 7], activation, init: Init::Torch, dropout, init_from: None };
                let m = Mlp::new(&cfg, 6, *outputs, Device::Cpu).unwrap();
                let (output, tape) = m.forward_train(&x, true);
                m.backward(&tape, &loss_grad(*loss, &output, y, &one));
                let want = autograd_grads(&m, &x, y, *loss, &tape.masks);
                for ((name, got), want) in m.named_views(&m.grads).iter().zip(&want) {
                    let diff = (got - want).abs().max().double_value(&[]);
                    assert!(diff < 1e-5, "{activation:?} {loss:?} dropout {dropout}: {name} differs by {diff}");
                }
            }
        }
    }
}

#[test]
fn init_from_round_trips_and_rejects_mismatches() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let a = Mlp::new(&config(Init::Keras), 10, 3, Device::Cpu).unwrap();
    Tensor::write_safetensors(&a.named_parameters(), &path).unwrap();
    let cfg = ModelConfig { init_from: Some(path.clone()), ..config(Init::Torch) };
    let b = Mlp::new(&cfg, 10, 3, Device::Cpu).unwrap();
    assert!(a.params.equal(&b.params));
    let err = Mlp::new(&cfg, 11, 3, Device::Cpu).err().unwrap();
    assert!(format!("{err:#}").contains("`0.weight` has shape [20, 10], the model needs [20, 11]"), "{err:#}");
}

