//! Config text before YAML sees it: read from a file with a size cap, a UTF-8 byte-order
//! mark dropped, and nesting bounded, so that no file makes torchfit read, or libyaml parse,
//! without end.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The largest config file read, in bytes (1 MiB). A config is a few kilobytes of YAML; a
/// device (`/dev/zero`) or a pipe that never ends is refused once past this, not read on.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The deepest nesting of flow collections (`[`, `{`) and block levels accepted. The schema
/// needs four; libyaml's time grows with the square of the depth (it rescans every open
/// level on every token), so a file of 40,000 `[` took seconds before any error.
pub const MAX_NESTING: usize = 64;

/// Reads a config file: a regular file or a pipe, at most [`MAX_CONFIG_BYTES`], UTF-8.
pub fn read_file(path: &Path) -> Result<String> {
    read_yaml_file(path, "config file")
}

/// [`read_file`] for any YAML file torchfit reads (a sweep file too), named in messages as
/// `what`.
pub fn read_yaml_file(path: &Path, what: &str) -> Result<String> {
    use std::os::unix::fs::FileTypeExt;
    let cannot = || format!("cannot read {what} {}", path.display());
    let kind = std::fs::metadata(path).with_context(cannot)?.file_type();
    if kind.is_dir() {
        bail!("cannot read {what} {}: it is a directory", path.display());
    }
    if kind.is_char_device() || kind.is_block_device() || kind.is_socket() {
        bail!("cannot read {what} {}: it is a device or socket, not a file", path.display());
    }
    let file = std::fs::File::open(path).with_context(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).with_context(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        bail!("{}: larger than {} KiB; a config is a few kilobytes of YAML", path.display(), MAX_CONFIG_BYTES >> 10);
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        anyhow::anyhow!("cannot read {what} {}: not UTF-8 text (byte {at})", path.display())
    })
}

/// The text YAML is given: without a leading byte-order mark (which editors on Windows
/// write, and which libyaml would read as the start of a second document), and checked for
/// nesting deeper than [`MAX_NESTING`].
pub fn prepare<'a>(text: &'a str, source: &str) -> Result<&'a str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.len() as u64 > MAX_CONFIG_BYTES {
        bail!("{source}: larger than {} KiB; a config is a few kilobytes of YAML", MAX_CONFIG_BYTES >> 10);
    }
    if let Some(line) = too_deep(text) {
        bail!("{source}: line {line}: nested more than {MAX_NESTING} levels deep");
    }
    Ok(text)
}

/// The line (1-based) where nesting first passes [`MAX_NESTING`], if it does. A light scan,
/// not a parser: it skips comments and quoted scalars, counts open flow brackets, and takes a
/// line's block depth from its indentation and leading `- ` / `? ` indicators (`- - - x` is
/// three sequences deep). Brackets inside plain scalars may count too: harmless below the
/// limit, which no real config comes near.
fn too_deep(text: &str) -> Option<usize> {
    let mut flow = 0usize;
    for (index, line) in text.lines().enumerate() {
        let block = line.len() - line.trim_start_matches([' ', '-', '?', '\t']).len();
        if block > MAX_NESTING * 4 {
            return Some(index + 1);
        }
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '#') if previous.is_whitespace() => break,
                (None, '\'' | '"') if previous.is_whitespace() || "[{,:".contains(previous) => quote = Some(c),
                (None, '[' | '{') => {
                    flow += 1;
                    if flow > MAX_NESTING {
                        return Some(index + 1);
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            previous = c;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_bounded_without_parsing() {
        assert_eq!(too_deep("model:\n  hidden: [[[1]]]\n"), None);
        let deep = format!("model:\n  hidden: {}1{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(too_deep(&deep), Some(2));
        // Brackets in comments and quoted text do not count.
        let quoted = format!("name: '{}'  # {}\n", "[".repeat(100), "{".repeat(100));
        assert_eq!(too_deep(&quoted), None);
        let dashes = format!("x: {}\n", "- ".repeat(300));
        assert_eq!(too_deep(&dashes), None, "not at the line's start: a plain scalar");
        let dashes = format!("{}1\n", "- ".repeat(300));
        assert_eq!(too_deep(&dashes), Some(1));
    }

    #[test]
    fn a_byte_order_mark_is_dropped() {
        assert_eq!(prepare("\u{feff}name: x\n", "t.yaml").unwrap(), "name: x\n");
    }
}
