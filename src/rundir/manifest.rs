//! `manifest.json`: the SHA-256 of every artifact of a run that ended (finished or stopped
//! early), written when training ends, after the artifacts and before summary.json says so,
//! and checked by every command that reads the run (`predict`, `evaluate`, `export`, `serve`,
//! `train --resume`). model.pt (which `predict` and `serve` run) and weights.safetensors with
//! preprocessing.json (which `evaluate` and the exports read) are written together from one
//! model; the manifest makes sure that neither changes afterwards without the other, so they
//! cannot silently compute different things.
//!
//! A run that trains again (`--resume`) loses its manifest when it starts and gets a new one
//! when it ends. A run without one (written before torchfit had manifests, or whose manifest
//! was deleted) is read with a warning.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{RunDir, BEST_CHECKPOINT, CONFIG, LAST_CHECKPOINT, MODEL, PREPROCESSING, SPLIT, TOKENIZER, WEIGHTS};
use crate::atomic;

pub const MANIFEST: &str = "manifest.json";

/// The files a manifest covers, those of them the run has: what defines its model and what
/// a resume continues from. metrics.csv, loss.png and summary.json are reports, not inputs.
pub const COVERED: &[&str] =
    &[CONFIG, PREPROCESSING, SPLIT, TOKENIZER, WEIGHTS, MODEL, LAST_CHECKPOINT, BEST_CHECKPOINT];

#[derive(Serialize, Deserialize)]
struct Manifest {
    /// Always `sha256`.
    algorithm: String,
    /// File, relative to the run directory, to its digest in lowercase hex.
    files: BTreeMap<String, String>,
}

/// The SHA-256 of a file's bytes, in lowercase hex.
pub fn sha256(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl RunDir {
    /// Writes manifest.json (atomically) for the covered files the run has now.
    pub fn write_manifest(&self) -> Result<()> {
        let mut files = BTreeMap::new();
        for name in COVERED {
            let path = self.file(name);
            if path.is_file() {
                files.insert(name.to_string(), sha256(&path)?);
            }
        }
        let manifest = Manifest { algorithm: "sha256".into(), files };
        atomic::write(&self.file(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)
    }

    /// Removes manifest.json, when a run starts training again: until it ends, its files
    /// change, and a stale manifest would be taken for a damaged run.
    pub fn remove_manifest(&self) -> Result<()> {
        match std::fs::remove_file(self.file(MANIFEST)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", self.file(MANIFEST).display()))
            }
            _ => Ok(()),
        }
    }

    /// Records the new digest of `name`, rewritten from the run's own (verified) weights by
    /// `torchfit export` without `--output`, in a manifest that lists it.
    pub fn update_manifest(&self, name: &str) -> Result<()> {
        let Some(mut manifest) = self.read_manifest()? else { return Ok(()) };
        if let Some(digest) = manifest.files.get_mut(name) {
            *digest = sha256(&self.file(name))?;
            atomic::write(&self.file(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
        }
        Ok(())
    }

    /// Checks every file manifest.json lists against its digest: an error naming the first
    /// file that changed or went missing. A run that ended without a manifest is read with a
    /// warning; one still training (or interrupted) has none yet.
    pub fn verify(&self) -> Result<()> {
        let Some(manifest) = self.read_manifest()? else {
            if self.status().is_some_and(|s| s.is_done()) {
                eprintln!(
                    "torchfit: warning: {} has no {MANIFEST} (a run from an older torchfit, or the file was deleted); \
                     its files cannot be checked for changes",
                    self.path().display()
                );
            }
            return Ok(());
        };
        let listed = self.file(MANIFEST);
        for (name, digest) in &manifest.files {
            if !COVERED.contains(&name.as_str()) {
                bail!("{} lists {name}, which is not a file of a torchfit run", listed.display());
            }
            let path = self.file(name);
            if !path.is_file() {
                bail!(
                    "{} is missing, but {} lists it: the run was changed after it ended",
                    path.display(),
                    listed.display()
                );
            }
            if sha256(&path)? != *digest {
                bail!(
                    "{} has changed since the run ended (its SHA-256 is not the one {} records); \
                     restore it or train the run again",
                    path.display(),
                    listed.display()
                );
            }
        }
        Ok(())
    }

    fn read_manifest(&self) -> Result<Option<Manifest>> {
        let path = self.file(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a torchfit manifest", path.display()))?;
        if manifest.algorithm != "sha256" {
            bail!("{}: unknown algorithm {:?} (torchfit writes sha256)", path.display(), manifest.algorithm);
        }
        Ok(Some(manifest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_or_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        std::fs::write(run.file(CONFIG), "name: x\n").unwrap();
        std::fs::write(run.file(WEIGHTS), b"\x01\x02").unwrap();
        run.write_manifest().unwrap();
        run.verify().unwrap();
        std::fs::write(run.file(WEIGHTS), b"\x01\x03").unwrap();
        let err = format!("{:#}", run.verify().unwrap_err());
        assert!(err.contains("weights.safetensors has changed since the run ended"), "{err}");
        std::fs::remove_file(run.file(WEIGHTS)).unwrap();
        let err = format!("{:#}", run.verify().unwrap_err());
        assert!(err.contains("weights.safetensors is missing"), "{err}");
        run.remove_manifest().unwrap();
        run.verify().unwrap();
    }

    #[test]
    fn sha256_is_the_standard_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(sha256(&path).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
