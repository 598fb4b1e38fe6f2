//! Embedded sources: event lines from a file, stdin or the traffic generator.
//!
//! A source is a replayable sequence of lines, like a topic: a run always reads it from
//! the start and skips, per partition, the records at or below that partition's
//! checkpoint. Each record's offset is its position among the lines of its partition —
//! the offset a Fluvio topic would give it if the same lines were produced in order.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use crate::generator::{Generator, GeneratorConfig};

/// Where events come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A JSON-lines file.
    File(PathBuf),
    /// JSON lines on standard input.
    Stdin,
    /// The built-in traffic generator.
    Generate(GeneratorConfig),
}

/// Lines checked to tell a JSON-lines file from something else.
pub const SNIFF_LINES: usize = 100;

/// Source errors.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file cannot be opened or read.
    #[error("cannot read input {path}: {source}")]
    Unreadable {
        /// Path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON lines at all (a wrong file, not a few bad events).
    #[error("input {path} does not look like JSON lines: none of its first {checked} non-empty lines is a JSON object (first: {first:?}). Nothing was written to the store. Single malformed events are fine: they are rejected with a reason and counted")]
    NotJsonLines {
        /// Path.
        path: PathBuf,
        /// Lines checked.
        checked: usize,
        /// The first line, shortened.
        first: String,
    },
    /// Reading failed midway.
    #[error("reading input failed after {lines} lines: {source}")]
    Read {
        /// Lines read before the error.
        lines: u64,
        /// I/O error.
        source: std::io::Error,
    },
}

/// Checks, before anything is written, that a file input is readable and is JSON lines.
pub fn precheck(input: &Input) -> Result<(), SourceError> {
    let Input::File(path) = input else { return Ok(()) };
    let unreadable = |source| SourceError::Unreadable {
        path: path.clone(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(unreadable)?);
    let mut checked = 0;
    let mut first = None;
    let mut line = Vec::new();
    while checked < SNIFF_LINES {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(unreadable)? == 0 {
            break;
        }
        let trimmed = trim_line(&line);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        checked += 1;
        first.get_or_insert_with(|| String::from_utf8_lossy(&trimmed[..trimmed.len().min(60)]).into_owned());
        if matches!(
            serde_json::from_slice::<serde_json::Value>(trimmed),
            Ok(serde_json::Value::Object(_))
        ) {
            return Ok(());
        }
    }
    if checked == 0 {
        return Ok(()); // an empty file is a valid, empty stream
    }
    Err(SourceError::NotJsonLines {
        path: path.clone(),
        checked,
        first: first.unwrap_or_default(),
    })
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// An iterator over the input's lines (without line endings).
pub struct Lines {
    inner: LinesInner,
    read: u64,
}

enum LinesInner {
    Reader(Box<dyn BufRead + Send>),
    Generator(Box<Generator>),
}

impl Lines {
    /// Opens the input.
    pub fn open(input: &Input) -> Result<Lines, SourceError> {
        let inner = match input {
            Input::File(path) => {
                let file = File::open(path).map_err(|source| SourceError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
                LinesInner::Reader(Box::new(BufReader::with_capacity(1 << 20, file)))
            }
            Input::Stdin => {
                let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
                LinesInner::Reader(Box::new(BufReader::with_capacity(1 << 20, stdin)))
            }
            Input::Generate(cfg) => LinesInner::Generator(Box::new(Generator::new(cfg.clone()))),
        };
        Ok(Lines { inner, read: 0 })
    }
}

impl Iterator for Lines {
    type Item = Result<Vec<u8>, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match &mut self.inner {
            LinesInner::Generator(g) => g.next().map(|l| Ok(l.into_bytes())),
            LinesInner::Reader(r) => {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) => None,
                    Ok(_) => {
                        let len = trim_line(&line).len();
                        line.truncate(len);
                        Some(Ok(line))
                    }
                    Err(source) => Some(Err(SourceError::Read {
                        lines: self.read,
                        source,
                    })),
                }
            }
        };
        if let Some(Ok(_)) = item {
            self.read += 1;
        }
        item
    }
}
