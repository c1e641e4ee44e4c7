//! How values are spelled in YAML: the device's name, any value's name for messages, and the
//! resolved config written so that every YAML reader reads it back alike.

use std::fmt;

use anyhow::Result;
use serde::ser::SerializeMap;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml::Value;

use super::{ClassWeight, Config, DeviceChoice};

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(name: &str) -> Result<DeviceChoice, String> {
        match name {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => Ok(DeviceChoice::Cuda(index)),
                _ => Err(format!("device must be auto, cpu, cuda or cuda:N, got {other:?}")),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl From<DeviceChoice> for String {
    fn from(choice: DeviceChoice) -> String {
        choice.to_string()
    }
}

/// Parses inside the visitor, not after (as `serde(try_from)` would), so that serde_yaml
/// reports the value's own line and column rather than its section's.
impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DeviceChoice, D::Error> {
        struct Name;
        impl de::Visitor<'_> for Name {
            type Value = DeviceChoice;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto, cpu, cuda or cuda:N")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<DeviceChoice, E> {
                name.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// `training.class_weight`: `balanced`, or a mapping whose keys are class labels as the user
/// writes them, text or numbers (`{0: 1, 1: 5}` for integer labels), kept as text: labels are
/// text inside torchfit. Read inside the visitors, as the device is, so that errors carry
/// the value's own line and column.
impl<'de> Deserialize<'de> for ClassWeight {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ClassWeight, D::Error> {
        struct Weights;
        impl<'de> de::Visitor<'de> for Weights {
            type Value = ClassWeight;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`balanced` or a mapping of class label to weight")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<ClassWeight, E> {
                match name {
                    "balanced" => Ok(ClassWeight::Balanced),
                    other => Err(E::custom(format!(
                        "unknown value `{other}`, expected `balanced` or a mapping of class label to weight"
                    ))),
                }
            }

            fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<ClassWeight, M::Error> {
                let mut weights = Vec::new();
                while let Some(Label(label)) = map.next_key()? {
                    weights.push((label, map.next_value::<f64>()?));
                }
                Ok(ClassWeight::Labels(weights))
            }
        }
        deserializer.deserialize_any(Weights)
    }
}

/// A class label as a mapping key: any scalar, as its text.
struct Label(String);

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Label, D::Error> {
        struct Text;
        impl de::Visitor<'_> for Text {
            type Value = Label;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a class label (text or a number)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Label, E> {
                Ok(Label(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Label, E> {
                Ok(Label(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Label, E> {
                Ok(Label(v.to_string()))
            }

            /// `2.5` reads as "2.5"; a label written `1.0` reads as "1", as Rust prints the
            /// number (quote it to match a label "1.0" in the data).
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Label, E> {
                Ok(Label(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Label, E> {
                Ok(Label(v.to_string()))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// Written back as read: `balanced`, or the mapping with its labels as text.
impl Serialize for ClassWeight {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ClassWeight::Balanced => serializer.serialize_str("balanced"),
            ClassWeight::Labels(weights) => {
                let mut map = serializer.serialize_map(Some(weights.len()))?;
                for (label, weight) in weights {
                    map.serialize_entry(label, weight)?;
                }
                map.end()
            }
        }
    }
}

/// How `value` is written in YAML, for messages: an enum variant as the user spells it
/// (`cross_entropy`, `cosine`), never as Rust's Debug does (`CrossEntropy`, `Cosine`).
pub fn yaml_name<T: Serialize>(value: &T) -> String {
    match serde_yaml::to_value(value) {
        Ok(Value::String(name)) => name,
        Ok(other) => serde_yaml::to_string(&other).map(|text| text.trim_end().to_string()).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

impl Config {
    /// The resolved config as YAML, every default filled in.
    pub fn to_yaml(&self) -> Result<String> {
        let mut resolved = self.clone();
        resolved.resolve();
        let plain = serde_yaml::to_string(&resolved)?;
        let spelled: String = plain.lines().map(|line| spell_float(line) + "\n").collect();
        // A line inside a multi-line string (a name with a line break) is no `key: value`;
        // should one have been taken for one, serde_yaml's own text is kept.
        let same = serde_yaml::from_str::<Value>(&spelled).ok() == serde_yaml::from_str::<Value>(&plain).ok();
        Ok(if same { spelled } else { plain })
    }
}

/// YAML 1.1 readers (PyYAML) take a scalar for a float only with a dot and a signed
/// exponent; `1e-7`, as serde_yaml writes it, would read back as a string. serde_yaml writes
/// one scalar per line, after `key: ` or `- `, and quotes any string that would read as a
/// number, so an unquoted exponent form there is a float: it becomes `1.0e-7`.
fn spell_float(line: &str) -> String {
    let indent = line.len() - line.trim_start().len();
    let start = match line.find(": ") {
        Some(colon) => colon + 2,
        None if line[indent..].starts_with("- ") => indent + 2,
        None => return line.to_string(),
    };
    let (head, scalar) = line.split_at(start);
    match yaml11_float(scalar) {
        Some(float) => format!("{head}{float}"),
        None => line.to_string(),
    }
}

/// `1e-7` as `1.0e-7` and `1e20` as `1.0e+20`; `None` for anything but a number in exponent
/// form.
fn yaml11_float(scalar: &str) -> Option<String> {
    let (mantissa, exponent) = scalar.split_once(['e', 'E'])?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (minus, unsigned) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let (sign, power) = match exponent.strip_prefix('-') {
        Some(rest) => ('-', rest),
        None => ('+', exponent.strip_prefix('+').unwrap_or(exponent)),
    };
    (digits(whole) && digits(fraction) && digits(power)).then(|| format!("{minus}{whole}.{fraction}e{sign}{power}"))
}

/// The first key (dotted) whose values differ between two YAML documents (configs), with
/// its value in each (`absent` where missing): what a message about two configs names.
pub fn yaml_difference(a: &str, b: &str) -> (String, String, String) {
    let parse = |text: &str| serde_yaml::from_str::<Value>(text).unwrap_or(Value::String(text.to_string()));
    first_difference(&parse(a), &parse(b), "").unwrap_or_else(|| ("(the layout)".into(), "-".into(), "-".into()))
}

/// The first key (dotted) whose values differ between two YAML documents, with both values.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<(String, String, String)> {
    let show = |v: Option<&Value>| match v {
        None => "absent".to_string(),
        Some(v) => serde_yaml::to_string(v).map(|s| s.trim().replace('\n', " ")).unwrap_or_default(),
    };
    let join = |key: &str| if at.is_empty() { key.to_string() } else { format!("{at}.{key}") };
    match (a, b) {
        (Value::Mapping(x), Value::Mapping(y)) => {
            let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
            for key in keys {
                let name = join(key.as_str().unwrap_or("?"));
                match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => {
                        if let Some(found) = first_difference(u, v, &name) {
                            return Some(found);
                        }
                    }
                    (u, v) => return Some((name, show(u), show(v))),
                }
            }
            None
        }
        _ if a == b => None,
        _ => Some((at.to_string(), show(Some(a)), show(Some(b)))),
    }
}
