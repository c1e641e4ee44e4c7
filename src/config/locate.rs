//! Where a key is written in config text, so that an error about its value (found after
//! deserialising, when positions are gone) names its line as a syntax error does.
//!
//! serde_yaml keeps no positions in its values, but it puts one on every error a visitor
//! raises: a walk down the key's path that raises an error at the key's value gets the
//! value's line from serde_yaml itself, with no YAML parsing of our own.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a key's path: `training`, or `[1]` in `model.hidden[1]`.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The line (1-based) of `key`'s value in `text`, a dotted path such as `training.epochs`
/// or `model.hidden[1]`; `None` where the text does not set it.
pub(super) fn line_of(text: &str, key: &str) -> Option<usize> {
    let steps = steps(key)?;
    let de = serde_yaml::Deserializer::from_str(text);
    match (Walk { steps: &steps }).deserialize(de) {
        Err(err) if err.to_string().contains(FOUND) => err.location().map(|l| l.line()),
        _ => None,
    }
}

/// The marker error raised at the key's value.
const FOUND: &str = "torchfit: the key is here";

fn steps(key: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        steps.push(Step::Key(name.to_string()));
        while let Some((index, after)) = rest.split_once(']') {
            steps.push(Step::Index(index.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(steps)
}

/// Walks down `steps`, skipping everything else; at the end, fails with [`FOUND`].
struct Walk<'a> {
    steps: &'a [Step],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.steps.is_empty() {
            // Asking for a value makes serde_yaml look at it, so the error carries its mark.
            return deserializer.deserialize_any(Here);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a sequence")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            match &self.steps[0] {
                Step::Key(name) if key.as_str() == Some(name) => {
                    return map.next_value_seed(Walk { steps: &self.steps[1..] });
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let Step::Index(wanted) = self.steps[0] else { return Ok(()) };
        for _ in 0..wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk { steps: &self.steps[1..] }).map(|_| ())
    }

    // Scalars on the way down: the path does not go on here.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// At the key's value, whatever it is: the marker error.
struct Here;

impl<'de> Visitor<'de> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_map<M: MapAccess<'de>>(self, _: M) -> Result<(), M::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<S: SeqAccess<'de>>(self, _: S) -> Result<(), S::Error> {
        Err(de::Error::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_of_a_key() {
        let text = "name: x\ntraining:\n  epochs: 0\n  optimizer:\n    lr: -1\nmodel:\n  hidden:\n    - 4\n    - 0\n";
        assert_eq!(line_of(text, "name"), Some(1));
        assert_eq!(line_of(text, "training.epochs"), Some(3));
        assert_eq!(line_of(text, "training.optimizer.lr"), Some(5));
        assert_eq!(line_of(text, "model.hidden[1]"), Some(9));
        assert_eq!(line_of(text, "training.batch_size"), None);
        assert_eq!(line_of(text, "model.hidden[5]"), None);
        assert_eq!(line_of("model: {hidden: [4, 0]}\n", "model.hidden[1]"), Some(1));
    }
}
