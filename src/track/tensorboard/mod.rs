//! TensorBoard event files, laid out as Keras's TensorBoard callback lays them out, so that a
//! run's training and validation curves overlay in one chart:
//!
//! ```text
//! <logdir>/train/events.out.tfevents.*        epoch_loss, epoch_<metric>, epoch_learning_rate
//! <logdir>/validation/events.out.tfevents.*   epoch_loss, epoch_<metric> (the val_ columns)
//! <logdir>/events.out.tfevents.*              the HParams plugin's experiment and session
//! ```
//!
//! with the epoch as the step. `<logdir>` is `<run>/tensorboard`, or `<DIR>/<run directory's
//! name>` for `logging.tensorboard: DIR`; the session's own directory holds the HParams
//! summaries, as Keras's `hp.KerasCallback` writes them, so `tensorboard --logdir` over a
//! sweep's trials compares them in the HParams tab.
//!
//! Each process writes files of its own. A resumed run first drops from the earlier files
//! every epoch after its checkpoint's (trained again now) and any record a killed process
//! left cut short, so that each epoch has exactly one value in the end; the earlier session's
//! HParams summaries go, as TensorBoard keeps a tag's first ones.

mod hparams;
mod proto;
mod record;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Ended, Started, Tracker};
use crate::config::TensorBoard;
use crate::report::EpochRecord;
use proto::{Event, Summary, SummaryValue};
use record::EventFile;

/// Keras's tag of the learning rate, in the `train` run.
const LEARNING_RATE: &str = "epoch_learning_rate";

pub struct TensorBoardTracker {
    setting: TensorBoard,
    /// Known once started.
    session: Option<Session>,
}

/// The files of a started run.
struct Session {
    /// The metrics.csv column behind each tag of the `train` and `validation` runs.
    train: Vec<(String, usize)>,
    validation: Vec<(String, usize)>,
    train_file: EventFile,
    validation_file: Option<EventFile>,
    hparams_file: EventFile,
    epochs_done: usize,
}

impl TensorBoardTracker {
    pub fn new(setting: TensorBoard) -> TensorBoardTracker {
        TensorBoardTracker { setting, session: None }
    }

    /// The directory of the run's event files. Under a shared `DIR`, the run's name with a
    /// number after it (`-2`, `-3`, ...) when another run has the name there already: two
    /// runs named alike (`--out run` in two places, two sweeps' trial `0000`) must not trim
    /// each other's files. `OWNER` in each says whose it is.
    fn logdir(&self, run: &Path) -> Result<PathBuf> {
        let TensorBoard::Dir(dir) = &self.setting else { return Ok(run.join("tensorboard")) };
        let ours = std::fs::canonicalize(run).with_context(|| format!("cannot resolve {}", run.display()))?;
        let name = run.file_name().unwrap_or(run.as_os_str()).to_string_lossy().into_owned();
        for n in 1..=MAX_NAMESAKES {
            let logdir = dir.join(if n == 1 { name.clone() } else { format!("{name}-{n}") });
            let owner = logdir.join(OWNER);
            match std::fs::read_to_string(&owner) {
                Ok(text) if Path::new(text.trim_end()) == ours => return Ok(logdir),
                Ok(_) => continue,
                Err(_) if logdir.exists() && std::fs::read_dir(&logdir).map_or(true, |mut d| d.next().is_some()) => {
                    continue
                }
                Err(_) => {
                    std::fs::create_dir_all(&logdir).with_context(|| format!("cannot create {}", logdir.display()))?;
                    let text = format!("{}\n", ours.display());
                    crate::atomic::write(&owner, text.as_bytes())?;
                    return Ok(logdir);
                }
            }
        }
        anyhow::bail!("{} holds {MAX_NAMESAKES} runs named {name} already", dir.display())
    }
}

/// In a shared `logging.tensorboard` directory, the file in each run's folder naming the run
/// directory that writes there.
const OWNER: &str = "torchfit-run.txt";

/// Runs of one name a shared `logging.tensorboard` directory takes.
const MAX_NAMESAKES: usize = 1000;

impl Tracker for TensorBoardTracker {
    fn name(&self) -> &'static str {
        "tensorboard"
    }

    fn start(&mut self, run: &Started) -> Result<()> {
        let logdir = self.logdir(run.dir.path())?;
        let (train, validation) = tags(run.columns);
        let groups: &[&str] = if validation.is_empty() { &["train"] } else { &["train", "validation"] };
        for group in groups {
            let dir = logdir.join(group);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        forget_after(&logdir, run.epochs_done)?;
        let mut hparams_file = EventFile::create(&logdir)?;
        let now = record::now();
        let values = hparams::values(super::hyperparameters(run.config_yaml)?);
        let names = |tags: &[(String, usize)]| tags.iter().map(|(tag, _)| tag.clone()).collect::<Vec<_>>();
        let mut train_tags = names(&train);
        train_tags.push(LEARNING_RATE.into());
        let experiment = hparams::experiment(&values, &train_tags, &names(&validation), now);
        let start = hparams::session_start(values, now);
        hparams_file.write(&[summary_event(0, experiment, now), summary_event(0, start, now)])?;
        self.session = Some(Session {
            train_file: EventFile::create(&logdir.join("train"))?,
            validation_file: if validation.is_empty() {
                None
            } else {
                Some(EventFile::create(&logdir.join("validation"))?)
            },
            train,
            validation,
            hparams_file,
            epochs_done: run.epochs_done,
        });
        Ok(())
    }

    fn epoch(&mut self, record: &EpochRecord) -> Result<()> {
        let Some(session) = &mut self.session else { return Ok(()) };
        if record.epoch <= session.epochs_done {
            return Ok(());
        }
        let (step, now) = (record.epoch as i64, record::now());
        let mut train = scalars(&session.train, record);
        train.push(scalar(LEARNING_RATE, record.lr));
        session.train_file.write(&[event(step, train, now)])?;
        if let Some(file) = &mut session.validation_file {
            file.write(&[event(step, scalars(&session.validation, record), now)])?;
        }
        Ok(())
    }

    fn end(&mut self, run: &Ended) -> Result<()> {
        let Some(session) = &mut self.session else { return Ok(()) };
        let now = record::now();
        let step = run.history.last().map_or(0, |r| r.epoch as i64);
        session.hparams_file.write(&[summary_event(step, hparams::session_end(run.status, now), now)])
    }
}

/// Readies the logdir of a run resuming after `epochs_done` epochs (or starting anew, after
/// none): the earlier sessions' epochs after it are trained again, so their values go, and so
/// do their HParams summaries, which the new session's replace.
fn forget_after(logdir: &Path, epochs_done: usize) -> Result<()> {
    let done = i64::try_from(epochs_done).unwrap_or(i64::MAX);
    for group in ["train", "validation"] {
        record::keep_steps_up_to(&logdir.join(group), done)?;
    }
    for old in record::event_files(logdir)? {
        std::fs::remove_file(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// Keras's tags for metrics.csv's columns: `epoch_<column>` in `train`, `epoch_<name>` in
/// `validation` for each `val_<name>`; with the column each one's value is in.
fn tags(columns: &[String]) -> (Vec<(String, usize)>, Vec<(String, usize)>) {
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for (i, column) in columns.iter().enumerate() {
        match column.strip_prefix("val_") {
            Some(name) => validation.push((format!("epoch_{name}"), i)),
            None => train.push((format!("epoch_{column}"), i)),
        }
    }
    (train, validation)
}

fn scalars(tags: &[(String, usize)], record: &EpochRecord) -> Vec<SummaryValue> {
    tags.iter().filter_map(|(tag, i)| record.values.get(*i).map(|v| scalar(tag, *v))).collect()
}

/// A scalar as TensorBoard stores one: a float32 `simple_value`.
fn scalar(tag: &str, value: f64) -> SummaryValue {
    SummaryValue { tag: tag.into(), simple_value: Some(value as f32), ..SummaryValue::default() }
}

fn event(step: i64, values: Vec<SummaryValue>, wall_time: f64) -> Event {
    Event { wall_time, step, summary: Some(Summary { value: values }), ..Event::default() }
}

fn summary_event(step: i64, value: SummaryValue, wall_time: f64) -> Event {
    event(step, vec![value], wall_time)
}
