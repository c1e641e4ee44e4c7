//! TensorBoard's record format (TensorFlow's TFRecord): each record is its length (u64, little
//! endian), the masked CRC-32C of those 8 bytes (u32 LE), the data, and the masked CRC-32C of
//! the data (u32 LE). An event file is such records, each one `Event`, the first of which
//! names the file's version.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prost::Message;

use super::proto::Event;

/// CRC-32C (Castagnoli), TFRecord's checksum.
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Event files are named `events.out.tfevents.<seconds>.<host>...`; TensorBoard reads the
/// files whose names contain `tfevents`.
pub const PREFIX: &str = "events.out.tfevents.";

/// TFRecord's masked CRC: a CRC of data that holds CRCs is itself unlike one.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CASTAGNOLI.checksum(bytes);
    ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
}

/// Appends `data` to `out` as one record.
pub fn frame(data: &[u8], out: &mut Vec<u8>) {
    let length = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// The records of `bytes`, in order, up to the first that is cut short or fails its CRC (the
/// last record of a process killed while writing it); and whether every byte was read.
pub fn records(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut found = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(data) = first_record(rest) else { return (found, false) };
        found.push(data);
        rest = &rest[data.len() + 16..];
    }
    (found, true)
}

/// The data of the record `bytes` starts with, if it is whole and both CRCs hold.
fn first_record(bytes: &[u8]) -> Option<&[u8]> {
    let length: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let crc = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    if crc != masked_crc(&length) {
        return None;
    }
    let end = usize::try_from(u64::from_le_bytes(length)).ok()?.checked_add(12)?;
    let data = bytes.get(12..end)?;
    let crc = u32::from_le_bytes(bytes.get(end..end.checked_add(4)?)?.try_into().ok()?);
    (crc == masked_crc(data)).then_some(data)
}

/// Seconds since the epoch, as events' `wall_time`.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// An event file being written. Each `write` is one write(2) of whole records, so that a
/// process killed at any moment leaves a file TensorBoard reads up to its last whole record.
pub struct EventFile {
    path: PathBuf,
    file: File,
}

impl EventFile {
    /// A new event file in `dir` (which must exist), named as TensorFlow names them
    /// (`events.out.tfevents.<seconds>.<host>`), with the process id and a count after it so
    /// that a run resumed within the same second starts a file of its own.
    pub fn create(dir: &Path) -> Result<EventFile> {
        let secs = now() as u64;
        let (host, pid) = (hostname(), std::process::id());
        for n in 0..1000 {
            let path = dir.join(format!("{PREFIX}{secs}.{host}.{pid}.{n}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let mut file = EventFile { path, file };
                    let version =
                        Event { wall_time: now(), file_version: Some("brain.Event:2".into()), ..Event::default() };
                    file.write(&[version])?;
                    return Ok(file);
                }
                Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        anyhow::bail!("cannot create an event file in {}: 1000 names taken", dir.display())
    }

    /// Appends `events`.
    pub fn write(&mut self, events: &[Event]) -> Result<()> {
        let mut bytes = Vec::new();
        for event in events {
            frame(&event.encode_to_vec(), &mut bytes);
        }
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// Drops from the event files directly in `dir` every event of a step after `steps` (and a
/// record cut short), rewriting each file that held one atomically; events without a summary
/// (the file version) stay. A file left with no summary is removed. Returns how many files
/// changed.
pub fn keep_steps_up_to(dir: &Path, steps: i64) -> Result<usize> {
    let mut changed = 0;
    for path in event_files(dir)? {
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let (found, whole) = records(&bytes);
        let kept: Vec<&[u8]> = found
            .iter()
            .copied()
            .filter(|data| Event::decode(*data).is_ok_and(|e| e.summary.is_none() || e.step <= steps))
            .collect();
        if whole && kept.len() == found.len() {
            continue;
        }
        changed += 1;
        let summaries = kept.iter().filter(|data| Event::decode(**data).is_ok_and(|e| e.summary.is_some())).count();
        if summaries == 0 {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            continue;
        }
        let mut out = Vec::with_capacity(bytes.len());
        kept.iter().for_each(|data| frame(data, &mut out));
        crate::atomic::write(&path, &out)?;
    }
    Ok(changed)
}

/// The event files directly in `dir` (none when it does not exist).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let is_events = entry.file_name().to_string_lossy().starts_with(PREFIX);
        if is_events && entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The machine's name, as event files are named by it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(|c: char| c.is_whitespace() || c == '/'))
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Summary, SummaryValue};
    use super::*;

    /// What tensorboard 2.21.0's own RecordWriter wrote for the same two events
    /// (`Event(wall_time=1700000000.5, file_version='brain.Event:2')`, then
    /// `Event(wall_time=1700000001.25, step=3, summary=Summary(value=[Value(tag='epoch_loss',
    /// simple_value=0.125)]))`).
    const TENSORBOARD_BYTES: &str =
        "1800000000000000a37f4b220900002040fc54d9411a0d627261696e2e4576656e743a322b35311020\
        0000000000000029eda9500900005040fc54d94110032a130a110a0a65706f63685f6c6f7373150000003ef77734e1";

    fn events() -> Vec<Event> {
        let loss = SummaryValue { tag: "epoch_loss".into(), simple_value: Some(0.125), ..SummaryValue::default() };
        vec![
            Event { wall_time: 1700000000.5, file_version: Some("brain.Event:2".into()), ..Event::default() },
            Event {
                wall_time: 1700000001.25,
                step: 3,
                summary: Some(Summary { value: vec![loss] }),
                ..Event::default()
            },
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn frames_events_as_tensorboard_writes_them() {
        let mut bytes = Vec::new();
        events().iter().for_each(|e| frame(&e.encode_to_vec(), &mut bytes));
        assert_eq!(hex(&bytes), TENSORBOARD_BYTES);
        // The CRC-32C check value of "123456789" (RFC 3720), masked by hand.
        let crc = 0xe306_9283u32;
        assert_eq!(masked_crc(b"123456789"), ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn reads_records_back_up_to_a_cut_or_corrupt_one() {
        let mut bytes = Vec::new();
        events().iter().for_each(|e| frame(&e.encode_to_vec(), &mut bytes));
        let (found, whole) = records(&bytes);
        assert!(whole);
        let decoded: Vec<Event> = found.iter().map(|d| Event::decode(*d).unwrap()).collect();
        assert_eq!(decoded, events());
        for cut in [1, 8, 20, bytes.len() - 40, bytes.len() - 1] {
            let (found, whole) = records(&bytes[..cut]);
            assert!(!whole && found.len() == usize::from(cut > 40), "cut at {cut}");
        }
        let first = found[0].to_vec();
        let last = bytes.len() - 5;
        bytes[last] ^= 1;
        assert_eq!(records(&bytes), (vec![first.as_slice()], false));
    }

    #[test]
    fn keeps_the_steps_up_to_the_checkpoint_and_drops_a_cut_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = EventFile::create(dir.path()).unwrap();
        let step = |s: i64| Event {
            step: s,
            summary: Some(Summary {
                value: vec![SummaryValue {
                    tag: "epoch_loss".into(),
                    simple_value: Some(s as f32),
                    ..SummaryValue::default()
                }],
            }),
            ..Event::default()
        };
        file.write(&(1..=5).map(step).collect::<Vec<_>>()).unwrap();
        let path = file.path.clone();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[7, 0, 0]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(keep_steps_up_to(dir.path(), 3).unwrap(), 1);
        let bytes = std::fs::read(&path).unwrap();
        let (found, whole) = records(&bytes);
        let steps: Vec<i64> = found.iter().map(|d| Event::decode(*d).unwrap().step).collect();
        assert!(whole);
        assert_eq!(steps, [0, 1, 2, 3]);
        assert_eq!(keep_steps_up_to(dir.path(), 3).unwrap(), 0);
        assert_eq!(keep_steps_up_to(dir.path(), 0).unwrap(), 1);
        assert!(event_files(dir.path()).unwrap().is_empty());
    }
}
