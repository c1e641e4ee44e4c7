//! Reading a config: YAML text plus `--set` overrides, deserialised with
//! `deny_unknown_fields`, with serde's errors rewritten to name the key, its line and the
//! nearest valid name in the user's words.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::Value;

use super::validate::{echo, Invalid, POSITIVE_KEYS};
use crate::cell::{parse_cell, trim, Cell};

use super::{locate, read, size, Config, DataKind, Task, KERAS_EXAMPLE};

/// How many data rows of a CSV file are read to tell a label column from a numeric one.
const SNIFF_ROWS: usize = 1000;

impl Config {
    /// Reads `path` (or the embedded Keras example when `None`), applies `--set KEY=VALUE`
    /// overrides, and validates the result. Every error names the file and the key.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let (source, text) = match path {
            Some(p) => (p.display().to_string(), read::read_file(p)?),
            None => ("embedded keras_example.yaml".to_string(), KERAS_EXAMPLE.to_string()),
        };
        Config::load_text(&text, &source, overrides, path.is_none())
    }

    /// `load` of config text that did not come from a file (a sweep's `config:` mapping, or
    /// its base file read once for every trial); `source` names it in errors. `embedded`:
    /// the text is the Keras example, whose data keys a `--set data=...` replaces.
    pub fn load_text(text: &str, source: &str, overrides: &[String], embedded: bool) -> Result<Config> {
        let mut config = Config::parse(text, source, overrides)?;
        // Without a config file, a key no --set names comes from the embedded default.
        let inherited = |key: &str| embedded && !overrides.iter().any(|o| assigns(o, key));
        // The example's loss and metrics are for its own data: other data (`--set data=...`,
        // or another kind) has them derived from itself, as a config file without them does.
        if embedded && !inherited("data.kind") {
            if inherited("training.loss") {
                config.training.loss = None;
            }
            if inherited("training.metrics") {
                config.training.metrics = None;
            }
        }
        // The embedded default's keys are not the user's lines: their errors say so instead.
        let at_line = |err| match embedded {
            true => err,
            false => with_line(err, read::prepare(text, source).unwrap_or(text), source, overrides),
        };
        config.validate_settings(&inherited).map_err(at_line)?;
        config.infer_task_from_csv();
        config.resolve();
        config.validate().map_err(at_line)?;
        if let Some(available) = size::available_memory() {
            config.check_fits(available)?;
        }
        Ok(config)
    }

    /// Reads the `config.yaml` a run directory holds: torchfit wrote it, resolved. Runs of
    /// earlier torchfit versions carry data keys for every kind (`samples`, `noise`,
    /// `targets`, `features: 10` on a CSV run, `delimiter` on a generated one); they were
    /// never read, so they are dropped here rather than refused, and old runs still
    /// evaluate, export and resume.
    pub fn load_saved(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = read::read_file(path)?;
        let mut config = Config::parse(&text, &path.display().to_string(), overrides)?;
        let d = &mut config.data;
        if !d.kind.is_generated() {
            (d.samples, d.targets, d.noise) = (None, None, None);
            if matches!(d.features, Some(super::Features::Count(_))) {
                d.features = None;
            }
        }
        if d.kind != DataKind::Csv {
            d.delimiter = None;
        }
        config.validate_settings(&|_| false)?;
        config.resolve();
        config.validate()?;
        Ok(config)
    }

    /// Stage one: YAML text plus overrides into a `Config`, without value checks.
    pub fn parse(text: &str, source: &str, overrides: &[String]) -> Result<Config> {
        let text = read::prepare(text, source)?;
        if text.trim().is_empty() {
            bail!("{source}: the config file is empty");
        }
        let mut tree: Value = serde_yaml::from_str(text).map_err(|e| anyhow!("{source}: YAML syntax error: {e}"))?;
        if !tree.is_mapping() {
            bail!("{source}: expected a mapping of keys (name, data, model, training, ...) at the top level");
        }
        if overrides.is_empty() {
            // Deserialising the text itself, not the tree, keeps line and column in errors.
            let de = serde_yaml::Deserializer::from_str(text);
            return serde_path_to_error::deserialize(de).map_err(|e| anyhow!("{source}: {}", explain(&e)));
        }
        for assignment in overrides {
            apply_override(&mut tree, assignment)?;
        }
        serde_path_to_error::deserialize(tree).map_err(|e| {
            // The tree has no positions; a key that no --set touched has its line in the text.
            let key = e.path().to_string();
            match locate::line_of(text, &key).filter(|_| !overrides.iter().any(|o| assigns(o, &key))) {
                Some(line) => anyhow!("{source}:{line}: {}", explain(&e)),
                None => anyhow!("{source} with --set: {}", explain(&e)),
            }
        })
    }

    /// The README promises that the task follows from the data: a CSV target column holding
    /// text (or a Parquet one typed as text or boolean) is a classification label. Decided
    /// here, before `resolve` would settle on regression, and only where neither `task` nor
    /// `loss` decides. A file that cannot be read is left for the data loader to report.
    fn infer_task_from_csv(&mut self) {
        let d = &self.data;
        if !d.kind.is_table() || self.task.is_some() || self.training.loss.is_some() {
            return;
        }
        let (Some(path), Some(target)) = (&d.path, &d.target) else { return };
        if let [column] = target.names().as_slice() {
            let labels = match d.kind {
                DataKind::Parquet => parquet_labels(path, column),
                _ => holds_text(path, d.delimiter(), column),
            };
            if labels {
                self.task = Some(Task::Classification);
            }
        }
    }
}

/// Whether the first data rows of `column` hold a value that is neither missing nor a number
/// (a word, or a boolean one: labels either way).
fn holds_text(path: &Path, delimiter: u8, column: &str) -> bool {
    let Ok(mut reader) = csv::ReaderBuilder::new().delimiter(delimiter).from_path(path) else { return false };
    let Some(at) = reader.headers().ok().and_then(|h| h.iter().position(|name| name.trim() == column)) else {
        return false;
    };
    reader.records().take(SNIFF_ROWS).map_while(Result::ok).any(|record| {
        record.get(at).is_some_and(|cell| !matches!(parse_cell(trim(cell), false), Cell::Missing | Cell::Number(_)))
    })
}

/// Whether a Parquet file's `column` is typed as labels: text (plain or dictionary-encoded)
/// or boolean, as a CSV reading of it would find words. Only the footer is read: the schema
/// settles it, where a CSV file has to be sniffed.
fn parquet_labels(path: &Path, column: &str) -> bool {
    use arrow_schema::DataType;
    fn labels(data_type: &DataType) -> bool {
        match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean => true,
            DataType::Dictionary(_, values) => labels(values),
            _ => false,
        }
    }
    let Ok(file) = std::fs::File::open(path) else { return false };
    let Ok(builder) = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file) else {
        return false;
    };
    builder.schema().fields().iter().any(|f| f.name() == column && labels(f.data_type()))
}

/// `err` with the file and line where its key is written (`keras.yaml:12: training.epochs
/// must be > 0, got 0`), when it is about a key the text sets and no `--set` replaced.
fn with_line(err: anyhow::Error, text: &str, source: &str, overrides: &[String]) -> anyhow::Error {
    let Some(invalid) = err.downcast_ref::<Invalid>() else { return err };
    if overrides.iter().any(|o| assigns(o, &invalid.key)) {
        return err;
    }
    match locate::line_of(text, &invalid.key) {
        Some(line) => anyhow!("{source}:{line}: {}", invalid.message),
        None => err,
    }
}

/// Whether the `--set` `assignment` sets `key`, itself or a section holding it.
fn assigns(assignment: &str, key: &str) -> bool {
    let set = assignment.split_once('=').map_or(assignment, |(k, _)| k).trim();
    key.strip_prefix(set).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Applies one `KEY=VALUE` (dotted key, YAML value) to the config tree. Unknown keys are
/// left for deserialisation to reject, so that they are reported like any other.
fn apply_override(tree: &mut Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment}: expected KEY=VALUE, e.g. training.epochs=5"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {assignment}: the key must be a dotted path such as training.optimizer.lr");
    }
    let value: Value = serde_yaml::from_str(raw)
        .map_err(|e| anyhow!("--set {key}: the value {} is not valid YAML: {e}", echo(raw)))?;
    let mut node = tree;
    let segments: Vec<&str> = key.split('.').collect();
    for (depth, segment) in segments.iter().enumerate() {
        let Value::Mapping(map) = node else {
            bail!("--set {key}: {} is not a section, it holds a value", segments[..depth].join("."));
        };
        let slot = Value::String((*segment).to_string());
        if depth + 1 == segments.len() {
            map.insert(slot, value);
            return Ok(());
        }
        node = map.entry(slot).or_insert_with(|| Value::Mapping(Default::default()));
    }
    Ok(())
}

/// serde's names for the types it expected, in the user's words.
const EXPECTED: [(&str, &str); 7] = [
    ("usize", "a whole number >= 0"),
    ("u64", "a whole number >= 0"),
    ("u32", "a whole number >= 0"),
    ("i64", "a whole number"),
    ("i32", "a whole number"),
    ("f64", "a number"),
    ("a boolean", "true or false"),
];

/// Rewrites a serde error as `key: problem at line L column C`, naming the nearest valid key
/// or value when the problem is an unknown one.
fn explain(err: &serde_path_to_error::Error<serde_yaml::Error>) -> String {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = err.inner();
    let at = inner.location().map(|l| format!(" at line {} column {}", l.line(), l.column())).unwrap_or_default();
    // serde_yaml puts the enclosing path in front and the location at the end; both are
    // reported by us instead.
    let mut message = inner.to_string();
    if let Some(stripped) = message.strip_suffix(&at) {
        message = stripped.to_string();
    }
    let parent = path.rsplit_once('.').map(|(p, _)| p.to_string()).unwrap_or_default();
    for prefix in [&path, &parent] {
        if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
            message = rest.to_string();
            break;
        }
    }
    let suggestion = nearest_name(&message);
    if message.starts_with("unknown field") {
        let suggestion = suggestion
            .map(|s| if parent.is_empty() { s } else { format!("{parent}.{s}") })
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return shorten_quoted(&format!("unknown key `{path}`{at}{suggestion}"));
    }
    if let (true, Some(s)) = (message.starts_with("unknown variant"), suggestion) {
        let bad = backticked(&message).into_iter().next().unwrap_or_default();
        return shorten_quoted(&format!("{path}: unknown value `{bad}`{at}; did you mean `{s}`? ({message})"));
    }
    if message.contains("untagged enum Features") {
        message = "expected a number of features or a list of column names".into();
    } else if message.contains("untagged enum Columns") {
        message = "expected a column name or a list of column names".into();
    }
    // "expected struct TrainingConfig" names a Rust type; the user wrote YAML.
    if let Some(i) = message.find("expected struct ") {
        message = format!("{}expected a mapping of keys", &message[..i]);
    }
    if let Some((problem, wanted)) = message.rsplit_once(", expected ") {
        if let Some((_, words)) = EXPECTED.iter().find(|(rust, _)| *rust == wanted) {
            // Said as validation says it of the same key: "must be > 0".
            let words = if words.ends_with(">= 0") && POSITIVE_KEYS.contains(&any_index(&path).as_str()) {
                "a whole number > 0"
            } else {
                words
            };
            message = format!("{problem}, expected {words}");
        }
    }
    message = message.replacen("invalid type: unit value", "invalid type: an empty value", 1);
    message = message.replacen("unknown variant", "unknown value", 1);
    message = shorten_quoted(&message);
    // A value's own check (device's) already names its key.
    if path.is_empty() || message.starts_with(&format!("{path} ")) {
        format!("{message}{at}")
    } else {
        format!("{path}: {message}{at}")
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" messages: the expected name
/// closest to `x`.
pub fn nearest_name(message: &str) -> Option<String> {
    let names = backticked(message);
    let (bad, expected) = names.split_first()?;
    nearest(bad, expected).cloned()
}

/// The one of `candidates` nearest `name` in edit distance. Edit distance takes time in the
/// product of the lengths, and no key, value or column name a user mistypes is long: a name
/// over 64 bytes has none, and candidates over twice that are passed over.
pub fn nearest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a String> {
    if name.len() > 64 {
        return None;
    }
    let short = candidates.iter().filter(|candidate| candidate.len() <= 2 * 64);
    short.min_by_key(|candidate| strsim::levenshtein(name, candidate))
}

fn backticked(message: &str) -> Vec<String> {
    message.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// `model.hidden[3]` as `model.hidden[]`, the spelling of `POSITIVE_KEYS`.
fn any_index(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut inside = false;
    for c in path.chars() {
        match c {
            '[' => inside = true,
            ']' => inside = false,
            _ if inside => continue,
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The message with every quoted (`"..."`) or backticked part that echoes a long input cut
/// to a readable length, saying how long it was.
fn shorten_quoted(message: &str) -> String {
    let mut text = message.to_string();
    for delimiter in ['`', '"'] {
        let parts: Vec<&str> = text.split(delimiter).collect();
        if parts.len() < 3 {
            continue;
        }
        let mut out = String::with_capacity(text.len().min(4096));
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push(delimiter);
            }
            // Odd parts are inside a pair of delimiters (the last one only if closed).
            match part.char_indices().nth(60) {
                Some((end, _)) if i % 2 == 1 && i + 1 < parts.len() => {
                    out.push_str(&part[..end]);
                    out.push_str(&format!("...({} bytes)", part.len()));
                }
                _ => out.push_str(part),
            }
        }
        text = out;
    }
    text
}
