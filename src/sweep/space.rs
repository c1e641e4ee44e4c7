//! The trials of a sweep: every combination of the values (grid), or `trials` draws
//! (random). A function of the resolved sweep alone, so that every worker, on any node and
//! in any later session, lists the same trials in the same order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Grid,
    Random,
}

/// One parameter's search space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum Space {
    Values { values: Vec<Value> },
    Distribution { distribution: Distribution, min: f64, max: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    Uniform,
    LogUniform,
    IntUniform,
}

/// One trial: its number and its parameter values, in the sweep file's order, less those
/// its model kind does not read.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub index: usize,
    pub values: Vec<(String, Value)>,
    /// Its expected training time, in units of one multiply-add per sample: only compared
    /// with other trials' (which to start first), never shown.
    pub cost: f64,
}

impl Trial {
    /// The trial's name, also its directory under `trials/`.
    pub fn name(&self) -> String {
        format!("{:04}", self.index)
    }

    /// The value of parameter `name`; `None` when the trial's model kind does not read it.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(key, _)| key == name).map(|(_, value)| value)
    }

    /// The parameters as `--set` assignments.
    pub fn assignments(&self) -> Vec<String> {
        self.values.iter().map(|(key, value)| assignment(key, value)).collect()
    }
}

/// `key=value` with the value in YAML's flow style, as `--set` reads it.
pub fn assignment(key: &str, value: &Value) -> String {
    format!("{key}={}", show(value))
}

/// A value on one line, in YAML's flow style: `0.003`, `[64, 64]`, `{kind: cosine}`.
pub fn show(value: &Value) -> String {
    match value {
        Value::Sequence(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
        Value::Mapping(map) => {
            let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{}: {}", show(k), show(v))).collect();
            format!("{{{}}}", pairs.join(", "))
        }
        Value::Tagged(tagged) => show(&tagged.value),
        // Plain scalars: serde_yaml writes them as YAML reads them back (quoted if needed).
        other => serde_yaml::to_string(other).map(|s| s.trim_end().to_string()).unwrap_or_default(),
    }
}

/// A drawn number as the config reads it: a whole number for `int_uniform`.
pub fn number(distribution: Distribution, x: f64) -> Value {
    match distribution {
        Distribution::IntUniform => Value::from(x as i64),
        _ => Value::from(x),
    }
}

/// An optimizer step's fixed cost (launching the layers' kernels, the optimizer's update)
/// in multiply-adds: about 57 us a step against 0.16 ns a multiply-add, measured for small
/// MLPs on one CPU thread.
const STEP_OVERHEAD: f64 = 350_000.0;

/// A trial's training time up to a constant factor: epochs x (steps per sample x a step's
/// fixed cost + multiply-adds per sample). The data's rows and features are the same for
/// every trial of most sweeps and are left out, and so are the layers of kinds other than
/// the MLP (only an order of trials depends on it).
pub fn cost(config: &Config) -> f64 {
    let mlp = crate::config::kind_reads(config.model.kind, "model.hidden");
    let hidden = if mlp { config.model.hidden.as_slice() } else { &[] };
    let inner: usize = hidden.windows(2).map(|w| w[0] * w[1]).sum();
    let outer = hidden.first().copied().unwrap_or(0) + hidden.last().copied().unwrap_or(0);
    let batch = config.training.batch_size.max(1) as f64;
    config.training.epochs as f64 * (STEP_OVERHEAD / batch + (inner + outer) as f64)
}

/// Every combination, the first parameter varying slowest (as nested loops written in the
/// file's order).
pub fn grid(parameters: &[(String, Space)]) -> Vec<Vec<(String, Value)>> {
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (name, space) in parameters {
        let Space::Values { values } = space else { continue };
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.push((name.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    combos
}

/// `trials` draws from one ChaCha stream seeded by the sweep's seed, trial by trial and
/// parameter by parameter.
pub fn random(parameters: &[(String, Space)], trials: usize, seed: u64) -> Vec<Vec<(String, Value)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..trials)
        .map(|_| {
            parameters
                .iter()
                .map(|(name, space)| {
                    let value = match space {
                        Space::Values { values } => values[rng.gen_range(0..values.len())].clone(),
                        Space::Distribution { distribution, min, max } => {
                            let x = match distribution {
                                Distribution::Uniform => rng.gen_range(*min..*max),
                                Distribution::LogUniform => rng.gen_range(min.ln()..max.ln()).exp(),
                                Distribution::IntUniform => rng.gen_range(*min as i64..=*max as i64) as f64,
                            };
                            number(*distribution, x)
                        }
                    };
                    (name.clone(), value)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(vs: &[i64]) -> Space {
        Space::Values { values: vs.iter().map(|&v| Value::from(v)).collect() }
    }

    #[test]
    fn grid_varies_the_last_parameter_fastest() {
        let params = vec![("a".to_string(), values(&[1, 2])), ("b".to_string(), values(&[3, 4, 5]))];
        let combos = grid(&params);
        assert_eq!(combos.len(), 6);
        let shown: Vec<String> =
            combos.iter().map(|c| c.iter().map(|(_, v)| show(v)).collect::<Vec<_>>().join(",")).collect();
        assert_eq!(shown, ["1,3", "1,4", "1,5", "2,3", "2,4", "2,5"]);
    }

    #[test]
    fn random_draws_are_in_range_and_repeat_for_a_seed() {
        let params = vec![
            ("lr".to_string(), Space::Distribution { distribution: Distribution::LogUniform, min: 1e-4, max: 1e-1 }),
            ("bs".to_string(), Space::Distribution { distribution: Distribution::IntUniform, min: 16.0, max: 128.0 }),
        ];
        let a = random(&params, 50, 7);
        assert_eq!(a, random(&params, 50, 7));
        assert_ne!(a, random(&params, 50, 8));
        for trial in &a {
            let lr = trial[0].1.as_f64().unwrap();
            assert!((1e-4..1e-1).contains(&lr));
            let bs = trial[1].1.as_i64().unwrap();
            assert!((16..=128).contains(&bs));
        }
    }

    #[test]
    fn values_show_in_flow_style() {
        let v: Value = serde_yaml::from_str("[64, 64]").unwrap();
        assert_eq!(show(&v), "[64, 64]");
        let v: Value = serde_yaml::from_str("{kind: cosine, warmup_epochs: 5}").unwrap();
        assert_eq!(show(&v), "{kind: cosine, warmup_epochs: 5}");
        assert_eq!(show(&Value::from(0.001)), "0.001");
        assert_eq!(assignment("a.b", &Value::from("x y")), "a.b=x y");
    }
}
