//! Data files named in a config: a missing one is reported with where a relative path was
//! looked for (the working directory), and, when the file is there, that it sits beside the
//! config file instead, the usual mistake with `torchfit train other/dir/config.yaml`.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{bail, Result};

/// The folder of the config file this process trains from, once `torchfit train` has read it.
static CONFIG_DIR: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Notes the config file this process reads its data paths from, for the hint in
/// [`check_file`].
pub fn note_config_file(config: Option<&Path>) {
    let dir = config.and_then(Path::parent).map(Path::to_path_buf);
    if let Ok(mut slot) = CONFIG_DIR.write() {
        *slot = dir;
    }
}

/// Fails unless `path` (the value of config key `key`) is a file, saying where a relative
/// path was looked for. The config has made relative paths absolute by then (from the working
/// directory), so a path under the working directory is taken as one written relative.
pub fn check_file(key: &str, path: &Path) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    let what = if path.exists() { "not a file" } else { "no such file" };
    let cwd = std::env::current_dir().ok();
    let relative = match &cwd {
        _ if path.is_relative() => Some(path),
        Some(cwd) => path.strip_prefix(cwd).ok(),
        None => None,
    };
    let (Some(relative), Some(cwd)) = (relative, &cwd) else {
        bail!("{key}: {}: {what}", path.display());
    };
    let config_dir = CONFIG_DIR.read().ok().and_then(|d| d.clone()).filter(|d| !d.as_os_str().is_empty());
    let beside = config_dir.map(|d| d.join(relative)).filter(|p| p.is_file());
    let rule = format!("relative paths resolve from the working directory, {}", cwd.display());
    match beside {
        Some(there) => bail!(
            "{key}: {}: {what} ({rule}); {} exists beside the config file: give the path from the working directory, or run torchfit in the config's folder",
            path.display(),
            there.display()
        ),
        None => bail!("{key}: {}: {what} ({rule})", path.display()),
    }
}
