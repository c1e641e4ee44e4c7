use super::activation::op;
use super::*;
use crate::config::Activation;
use crate::config::Loss;
use crate::metrics::{loss_grad, loss_value};
use crate::model::input::Categorical;
use crate::model::Model;

fn config(init: Init) -> ModelConfig {
    ModelConfig {
        hidden: vec![20, 5],
        activation: Activation::Relu,
        init,
        dropout: Some(0.0),
        init_from: None,
        ..ModelConfig::default()
    }
}

#[test]
fn names_and_shapes_follow_torch_sequential() {
    let _rng = crate::testing::seed(0);
    let m = Mlp::new(&config(Init::Keras), &Input::numeric_only(10), 3, Device::Cpu).unwrap();
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
    let m = Mlp::new(&config(Init::Keras), &Input::numeric_only(10), 3, Device::Cpu).unwrap();
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
    let m = Mlp::new(&config(Init::Torch), &Input::numeric_only(10), 3, Device::Cpu).unwrap();
    let bound = 1.0 / 10f64.sqrt();
    assert!(m.layers[0].weight.abs().max().double_value(&[]) <= bound);
    let b = m.layers[0].bias.abs().max().double_value(&[]);
    assert!(b > 0.0 && b <= bound);
}

#[test]
fn kaiming_inits_scale_by_fan_in() {
    let _rng = crate::testing::seed(0);
    let u = Mlp::new(&config(Init::KaimingUniform), &Input::numeric_only(10), 3, Device::Cpu).unwrap();
    assert!(u.layers[0].weight.abs().max().double_value(&[]) <= (0.6f64).sqrt());
    let n = Mlp::new(
        &ModelConfig { hidden: vec![2000], ..config(Init::KaimingNormal) },
        &Input::numeric_only(100),
        1,
        Device::Cpu,
    )
    .unwrap();
    let std = n.layers[0].weight.std(true).double_value(&[]);
    assert!((std - (2.0f64 / 100.0).sqrt()).abs() < 0.005, "{std}");
}

#[test]
fn dropout_acts_in_training_only_and_scales_what_it_keeps() {
    let _rng = crate::testing::seed(0);
    let m =
        Mlp::new(&ModelConfig { dropout: Some(0.5), ..config(Init::Torch) }, &Input::numeric_only(10), 3, Device::Cpu)
            .unwrap();
    let x = Tensor::ones([64, 10], (Kind::Float, Device::Cpu));
    assert!(m.forward(&x).equal(&m.forward(&x)));
    let (_, tape) = m.forward_train(&x, true);
    let mask = tape.masks[0].as_ref().unwrap();
    let kept = Vec::<f32>::try_from(mask.flatten(0, 1)).unwrap();
    assert!(kept.iter().all(|&v| v == 0.0 || v == 2.0) && kept.contains(&0.0) && kept.contains(&2.0));
}

/// The straightforward way: autograd through leaf copies of the same parameters, the
/// categorical features gathered with `index_select` (whose backward is `index_add`, not the
/// embedding kernel that `Mlp::backward` uses).
fn autograd_grads(m: &Mlp, x: &Tensor, y: &Tensor, loss: Loss, masks: &[Option<Tensor>]) -> Vec<Tensor> {
    let leaves: Vec<Tensor> = m.parameters().iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
    let layers = m.layers.len();
    let numeric = m.input.numeric as i64;
    let mut parts = vec![x.narrow(1, 0, numeric)];
    let mut tables = leaves[2 * layers..].iter();
    for (j, c) in m.input.categorical.iter().enumerate() {
        let code = x.select(1, numeric + j as i64).to_kind(Kind::Int64);
        parts.push(match c.embedding {
            Some(_) => tables.next().unwrap().index_select(0, &code),
            None => code.one_hot(c.levels as i64).to_kind(Kind::Float),
        });
    }
    assert!(tables.next().is_none(), "one leaf per embedding table");
    let mut h = Tensor::cat(&parts, 1);
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

/// An encoded input for `input`: standard normal numeric columns, then uniformly drawn level
/// indices (as floats), with every feature's levels repeated across the rows so that
/// embedding rows collect gradients from several rows.
fn encoded(input: &Input, rows: i64) -> Tensor {
    let mut columns = vec![Tensor::randn([rows, input.numeric as i64], (Kind::Float, Device::Cpu))];
    for c in &input.categorical {
        columns.push(Tensor::randint(c.levels as i64, [rows, 1], (Kind::Float, Device::Cpu)));
    }
    Tensor::cat(&columns, 1)
}

fn categorical(levels: usize, embedding: Option<usize>) -> Categorical {
    Categorical { levels, embedding }
}

#[test]
fn manual_gradients_match_autograd() {
    let _rng = crate::testing::seed(3);
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
    let inputs = [
        Input::numeric_only(6),
        // One-hot, then two embeddings of 5 and 2 levels over 16 rows: rows share levels.
        Input {
            numeric: 3,
            categorical: vec![categorical(3, None), categorical(5, Some(4)), categorical(2, Some(1))],
            text: None,
        },
        // Categorical features only, the embedding first.
        Input { numeric: 0, categorical: vec![categorical(4, Some(3)), categorical(6, None)], text: None },
    ];
    for input in &inputs {
        let x = encoded(input, 16);
        for activation in Activation::ALL {
            for (loss, outputs, y) in &cases {
                for dropout in [0.0, 0.3] {
                    let cfg = ModelConfig {
                        hidden: vec![8, 7],
                        activation,
                        init: Init::Torch,
                        dropout: Some(dropout),
                        init_from: None,
                        ..ModelConfig::default()
                    };
                    let m = Mlp::new(&cfg, input, *outputs, Device::Cpu).unwrap();
                    // Stale values in the gradient buffer must not survive a backward pass.
                    let _ = m.grads.shallow_clone().fill_(f64::NAN);
                    let (output, tape) = m.forward_train(&x, true);
                    m.backward(&tape, &loss_grad(*loss, &output, y, &one));
                    let want = autograd_grads(&m, &x, y, *loss, &tape.masks);
                    let got = m.named_views(&m.grads);
                    assert_eq!(got.len(), want.len());
                    for ((name, got), want) in got.iter().zip(&want) {
                        let diff = (got - want).abs().max().double_value(&[]);
                        assert!(
                            diff < 1e-5,
                            "{input:?} {activation:?} {loss:?} dropout {dropout}: {name} differs by {diff}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn categorical_features_are_one_hot_or_embedded_after_the_numeric_ones() {
    let _rng = crate::testing::seed(0);
    let input = Input { numeric: 2, categorical: vec![categorical(3, None), categorical(4, Some(2))], text: None };
    assert_eq!((input.width(), input.columns()), (2 + 3 + 2, 4));
    let m = Mlp::new(&config(Init::Keras), &input, 1, Device::Cpu).unwrap();
    let named: Vec<(String, Vec<i64>)> = m.named_parameters().into_iter().map(|(n, t)| (n, t.size())).collect();
    assert_eq!(named[0], ("0.weight".to_string(), vec![20, 7]));
    // The table comes last in the flat buffer, named after its feature's index (1).
    assert_eq!(named.last().unwrap(), &("embeddings.1.weight".to_string(), vec![4, 2]));
    assert_eq!(named.len(), 7);
    assert_eq!(m.parameter_count(), 20 * 7 + 20 + 5 * 20 + 5 + 5 + 1 + 4 * 2);
    let table = m.embeddings[1].as_ref().unwrap();
    assert!(m.embeddings[0].is_none());
    assert!(m.params.narrow(0, m.parameter_count() - 8, 8).view([4, 2]).equal(table));
    // h0 = [numeric, one_hot(code 0), embedding row of code 1].
    let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 3.0, 1.5, 0.25, 0.0, 1.0]).view([2, 4]);
    let (_, tape) = m.forward_train(&x, false);
    let h0 = &tape.inputs[0];
    let want0 = Tensor::cat(&[Tensor::from_slice(&[0.5f32, -1.0, 0.0, 0.0, 1.0]), table.get(3)], 0);
    let want1 = Tensor::cat(&[Tensor::from_slice(&[1.5f32, 0.25, 1.0, 0.0, 0.0]), table.get(1)], 0);
    assert!(h0.equal(&Tensor::stack(&[want0, want1], 0)), "{h0}");
    assert_eq!(m.forward(&x).size(), vec![2, 1]);
}

#[test]
fn a_numeric_only_input_is_x_itself() {
    let _rng = crate::testing::seed(0);
    let m = Mlp::new(&config(Init::Keras), &Input::numeric_only(10), 3, Device::Cpu).unwrap();
    let x = Tensor::randn([4, 10], (Kind::Float, Device::Cpu));
    let (_, tape) = m.forward_train(&x, false);
    // The same storage: no copy, no op.
    assert_eq!(tape.inputs[0].data_ptr(), x.data_ptr());
    assert!(tape.codes.is_none());
    assert!(m.embeddings.is_empty());
}

#[test]
fn embeddings_start_standard_normal() {
    let _rng = crate::testing::seed(0);
    let input = Input { numeric: 1, categorical: vec![categorical(1000, Some(20))], text: None };
    let m = Mlp::new(&config(Init::Keras), &input, 1, Device::Cpu).unwrap();
    let table = m.embeddings[0].as_ref().unwrap();
    // 20 000 draws: the mean's standard error is 0.007 and the std's 0.005.
    let (mean, std) = (table.mean(Kind::Float).double_value(&[]), table.std(true).double_value(&[]));
    assert!(mean.abs() < 0.03 && (std - 1.0).abs() < 0.03, "mean {mean} std {std}");
}

#[test]
fn inputs_no_data_can_fill_are_refused() {
    let cfg = config(Init::Keras);
    let empty = Input { numeric: 2, categorical: vec![categorical(3, None), categorical(0, None)], text: None };
    let err = Mlp::new(&cfg, &empty, 1, Device::Cpu).err().unwrap();
    assert_eq!(err.to_string(), "categorical feature 1 has no levels");
    let narrow = Input { numeric: 2, categorical: vec![categorical(3, Some(0))], text: None };
    let err = Mlp::new(&cfg, &narrow, 1, Device::Cpu).err().unwrap();
    assert_eq!(err.to_string(), "categorical feature 0 has an embedding of width 0");
}

#[test]
fn init_from_covers_embeddings() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let input = Input { numeric: 2, categorical: vec![categorical(3, None), categorical(4, Some(2))], text: None };
    let a = Mlp::new(&config(Init::Keras), &input, 1, Device::Cpu).unwrap();
    Tensor::write_safetensors(&a.named_parameters(), &path).unwrap();
    let cfg = ModelConfig { init_from: Some(path.clone()), ..config(Init::Keras) };
    let b = Mlp::new(&cfg, &input, 1, Device::Cpu).unwrap();
    assert!(a.params.equal(&b.params));
    let wider = Input { numeric: 2, categorical: vec![categorical(3, None), categorical(4, Some(3))], text: None };
    let err = Mlp::new(&cfg, &wider, 1, Device::Cpu).err().unwrap();
    assert!(format!("{err:#}").contains("`0.weight` has shape [20, 7], the model needs [20, 8]"), "{err:#}");
    let err = Mlp::new(&cfg, &Input::numeric_only(7), 1, Device::Cpu).err().unwrap();
    assert!(format!("{err:#}").contains("has a tensor `embeddings.1.weight` that this model does not have"), "{err:#}");
}

#[test]
fn init_from_round_trips_and_rejects_mismatches() {
    let _rng = crate::testing::seed(0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let a = Mlp::new(&config(Init::Keras), &Input::numeric_only(10), 3, Device::Cpu).unwrap();
    Tensor::write_safetensors(&a.named_parameters(), &path).unwrap();
    let cfg = ModelConfig { init_from: Some(path.clone()), ..config(Init::Torch) };
    let b = Mlp::new(&cfg, &Input::numeric_only(10), 3, Device::Cpu).unwrap();
    assert!(a.params.equal(&b.params));
    let err = Mlp::new(&cfg, &Input::numeric_only(11), 3, Device::Cpu).err().unwrap();
    assert!(format!("{err:#}").contains("`0.weight` has shape [20, 10], the model needs [20, 11]"), "{err:#}");
}
