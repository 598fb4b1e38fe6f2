//! Embedded sources: event lines from a file, stdin or the traffic generator.
//!
//! A source is a sequence of lines, like a topic: a run reads it once, from the start, and
//! skips, per partition, the records at or below that partition's checkpoint. Each
//! record's offset is its position among the lines of its partition — the offset a Fluvio
//! topic would give it if the same lines were produced in order.
//!
//! Every byte is read once: a file is opened once, its first lines are checked (is this
//! JSON lines at all?) and then handed on from memory, so a pipe or FIFO loses nothing.
//! The check is the same for a regular file, a FIFO and stdin, so the same bytes are
//! refused or accepted whichever way they come: it reads until the first line that is a
//! JSON object (at most [`SNIFF_LINES`] non-empty lines). A regular file is checked when
//! it is opened, before the store is touched; a pipe or stdin when its first line is asked
//! for (in the run's reader thread, so a slow writer blocks no signal handling), and
//! nothing it yields is committed before the check passes.
//! A line is never held whole above `max_line_bytes`: the rest of it is streamed through
//! a hash and dropped, and the record becomes an [`Oversize`] (its size, head and
//! SHA-256), rejected `too_large` without reaching the chain.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::PathBuf;

use onramp_schemas::REJECT_PAYLOAD_HEAD;
use sha2::{Digest, Sha256};

use crate::generator::{Generator, GeneratorConfig};

/// Where events come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A JSON-lines file (or a FIFO, or `/dev/fd/N` of a process substitution).
    File(PathBuf),
    /// JSON lines on standard input.
    Stdin,
    /// The built-in traffic generator.
    Generate(GeneratorConfig),
}

/// Lines checked to tell a JSON-lines file from something else.
pub const SNIFF_LINES: usize = 100;
/// Most lines (blank ones included) the check reads ahead before it decides: it holds them
/// in memory, so a flood of blank lines cannot grow it without bound.
pub const SNIFF_MAX_LINES: usize = 10_000;
/// Default longest line read whole, bytes; longer lines are rejected `too_large` without
/// being held in memory (Fluvio's default maximum record is about this size too).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Source errors.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file cannot be opened or read.
    #[error("cannot read input {path}: {error}")]
    Unreadable {
        /// Path.
        path: PathBuf,
        /// I/O error (in the message, not a separate cause, so it is printed once).
        error: std::io::Error,
    },
    /// The input is not JSON lines at all (a wrong file, not a few bad events).
    #[error("input {input} does not look like JSON lines: none of its first {checked} non-empty lines ({read} lines read) is a JSON object (first: {first:?}). Nothing was written to the store. Single malformed events are fine: they are rejected with a reason and counted")]
    NotJsonLines {
        /// The path, or `stdin`.
        input: String,
        /// Non-empty lines checked.
        checked: usize,
        /// Lines read, blank ones included.
        read: usize,
        /// The first line, shortened.
        first: String,
    },
    /// Reading failed midway.
    #[error("reading input failed after {lines} lines: {error}")]
    Read {
        /// Lines read before the error.
        lines: u64,
        /// I/O error (in the message, not a separate cause, so it is printed once).
        error: std::io::Error,
    },
}

/// A line longer than the source's limit: what is kept of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversize {
    /// The line's size, bytes (without its line ending).
    pub bytes: u64,
    /// Its first [`REJECT_PAYLOAD_HEAD`] bytes.
    pub head: Vec<u8>,
    /// SHA-256 of the whole line, lowercase hex.
    pub sha256: String,
}

/// One line of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line read whole (without its line ending).
    Whole(Vec<u8>),
    /// A line over the limit.
    Oversize(Oversize),
}

impl Line {
    /// Bytes this line takes in memory.
    pub fn held_bytes(&self) -> usize {
        match self {
            Line::Whole(b) => b.len(),
            Line::Oversize(o) => o.head.len(),
        }
    }
}

/// The input's lines, in order, each read once.
pub struct Lines {
    inner: LinesInner,
    /// Lines read ahead by the JSON-lines check, handed on first.
    prefetched: VecDeque<Line>,
    max_line_bytes: usize,
    read: u64,
    /// The path, or `stdin` (for errors).
    label: String,
    /// The JSON-lines check is done (or not needed: the generator).
    checked: bool,
    /// A UTF-8 byte-order mark at the start of the input was looked for (and skipped).
    bom_skipped: bool,
}

/// The UTF-8 byte-order mark some editors and Windows tools put at the start of a file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

enum LinesInner {
    Reader(Box<dyn BufRead + Send>),
    Generator(Box<Generator>),
}

impl Lines {
    /// Opens the input. A regular file is checked to be JSON lines now (from the same open
    /// file, so nothing is read twice); a pipe, FIFO or stdin when its first line is read;
    /// the generator is not checked.
    pub fn open(input: &Input, max_line_bytes: usize) -> Result<Lines, SourceError> {
        let max_line_bytes = max_line_bytes.max(1);
        match input {
            Input::File(path) => {
                let unreadable = |error| SourceError::Unreadable {
                    path: path.clone(),
                    error,
                };
                let file = File::open(path).map_err(unreadable)?;
                let regular = file.metadata().map_err(unreadable)?.is_file();
                let mut lines = Lines::reader(Box::new(file), max_line_bytes, path.display().to_string());
                if regular {
                    lines.check_json_lines()?;
                }
                Ok(lines)
            }
            Input::Stdin => Ok(Lines::reader(
                Box::new(std::io::stdin()),
                max_line_bytes,
                "stdin".into(),
            )),
            Input::Generate(cfg) => Ok(Lines {
                inner: LinesInner::Generator(Box::new(Generator::new(cfg.clone()))),
                prefetched: VecDeque::new(),
                max_line_bytes,
                read: 0,
                label: "the generator".into(),
                checked: true,
                bom_skipped: true,
            }),
        }
    }

    fn reader(read: Box<dyn Read + Send>, max_line_bytes: usize, label: String) -> Lines {
        Lines {
            inner: LinesInner::Reader(Box::new(BufReader::with_capacity(1 << 20, read))),
            prefetched: VecDeque::new(),
            max_line_bytes,
            read: 0,
            label,
            checked: false,
            bom_skipped: false,
        }
    }

    /// Skips a UTF-8 byte-order mark at the very start of the input (once, before the first
    /// line is read), so that the first event is not rejected as `invalid_json` for it.
    fn skip_bom(&mut self) -> std::io::Result<()> {
        if std::mem::replace(&mut self.bom_skipped, true) {
            return Ok(());
        }
        if let LinesInner::Reader(r) = &mut self.inner {
            let buf = loop {
                match r.fill_buf() {
                    Ok(buf) => break buf,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if buf.starts_with(UTF8_BOM) {
                r.consume(UTF8_BOM.len());
            }
        }
        Ok(())
    }

    /// Reads up to [`SNIFF_LINES`] non-empty lines, keeping them for the caller, and fails
    /// when none is a JSON object. Once per input.
    fn check_json_lines(&mut self) -> Result<(), SourceError> {
        if std::mem::replace(&mut self.checked, true) {
            return Ok(());
        }
        let label = self.label.clone();
        let unreadable = |error| SourceError::Unreadable {
            path: PathBuf::from(&label),
            error,
        };
        self.skip_bom().map_err(unreadable)?;
        let LinesInner::Reader(reader) = &mut self.inner else {
            return Ok(());
        };
        let mut checked = 0;
        let mut first = None;
        while checked < SNIFF_LINES && self.prefetched.len() < SNIFF_MAX_LINES {
            let Some(line) = read_line(reader.as_mut(), self.max_line_bytes).map_err(unreadable)? else {
                break;
            };
            let bytes: &[u8] = match &line {
                Line::Whole(b) => b,
                Line::Oversize(o) => &o.head,
            };
            let blank = bytes.iter().all(u8::is_ascii_whitespace);
            let object = !blank
                && matches!(&line, Line::Whole(b) if matches!(
                    serde_json::from_slice::<serde_json::Value>(b),
                    Ok(serde_json::Value::Object(_))
                ));
            if !blank {
                checked += 1;
                first.get_or_insert_with(|| String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned());
            }
            self.prefetched.push_back(line);
            if object {
                return Ok(());
            }
        }
        let read = self.prefetched.len();
        if checked == 0 && read < SNIFF_MAX_LINES {
            return Ok(()); // an empty (or blank) input is a valid, empty stream
        }
        Err(SourceError::NotJsonLines {
            input: label,
            checked,
            read,
            first: first.unwrap_or_default(),
        })
    }
}

impl Iterator for Lines {
    type Item = Result<Line, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.check_json_lines() {
            return Some(Err(e));
        }
        if let Err(error) = self.skip_bom() {
            return Some(Err(SourceError::Read { lines: 0, error }));
        }
        let item = match self.prefetched.pop_front() {
            Some(line) => Some(Ok(line)),
            None => match &mut self.inner {
                LinesInner::Generator(g) => g.next().map(|l| Ok(Line::Whole(l.into_bytes()))),
                LinesInner::Reader(r) => read_line(r.as_mut(), self.max_line_bytes)
                    .map_err(|error| SourceError::Read {
                        lines: self.read,
                        error,
                    })
                    .transpose(),
            },
        };
        if let Some(Ok(_)) = item {
            self.read += 1;
        }
        item
    }
}

/// Reads one line (without `\n` or `\r\n`), holding at most `max` bytes of it; `None` at
/// the end of the input.
fn read_line(r: &mut dyn BufRead, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut hasher: Option<Sha256> = None;
    let mut total: u64 = 0;
    let mut any = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        any = true;
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        total += chunk.len() as u64;
        match &mut hasher {
            None if line.len() + chunk.len() > max + 1 => {
                // Over the limit (one byte of slack for a `\r` before the `\n`): from here
                // on only the head and a hash of the whole line are kept.
                let mut h = Sha256::new();
                h.update(&line);
                h.update(chunk);
                line.truncate(REJECT_PAYLOAD_HEAD);
                let room = REJECT_PAYLOAD_HEAD.saturating_sub(line.len());
                line.extend_from_slice(&chunk[..room.min(chunk.len())]);
                hasher = Some(h);
            }
            None => line.extend_from_slice(chunk),
            Some(h) => {
                h.update(chunk);
                let room = REJECT_PAYLOAD_HEAD.saturating_sub(line.len());
                line.extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
        }
        r.consume(used);
        if done {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(match hasher {
        Some(h) => Line::Oversize(Oversize {
            bytes: total,
            head: line,
            sha256: hex(&h.finalize()),
        }),
        None => {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > max {
                let sha256 = hex(&Sha256::digest(&line));
                let bytes = line.len() as u64;
                line.truncate(REJECT_PAYLOAD_HEAD);
                Line::Oversize(Oversize {
                    bytes,
                    head: line,
                    sha256,
                })
            } else {
                Line::Whole(line)
            }
        }
    }))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the check holds at most [`SNIFF_MAX_LINES`] lines: a flood of blank lines
    /// before anything else is refused once that many are read, while a few blank lines
    /// alone are an empty stream.
    #[test]
    fn a_flood_of_blank_lines_is_refused_at_the_read_ahead_bound() {
        let mut flood = b"\n".repeat(SNIFF_MAX_LINES + 5);
        flood.extend_from_slice(b"junk\n");
        let mut l = Lines::reader(Box::new(std::io::Cursor::new(flood)), 1 << 20, "stdin".into());
        match l.next() {
            Some(Err(SourceError::NotJsonLines { checked: 0, read, .. })) => assert_eq!(read, SNIFF_MAX_LINES),
            other => panic!("expected a refusal, got {:?}", other.map(|r| r.map(|_| ()))),
        }
        let mut few = Lines::reader(
            Box::new(std::io::Cursor::new(b"\n \n".to_vec())),
            1 << 20,
            "stdin".into(),
        );
        assert!(matches!(few.next(), Some(Ok(_))), "blank lines alone are fine");
    }

    /// Proves a byte-order mark at the start of the input is skipped, and only there.
    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let data = b"\xEF\xBB\xBF{\"a\":1}\n\xEF\xBB\xBF{\"b\":2}\n".to_vec();
        let l = Lines::reader(Box::new(std::io::Cursor::new(data)), 1 << 20, "stdin".into());
        let got: Vec<Vec<u8>> = l
            .map(|line| match line.unwrap() {
                Line::Whole(b) => b,
                Line::Oversize(_) => panic!("oversize"),
            })
            .collect();
        assert_eq!(got, vec![b"{\"a\":1}".to_vec(), b"\xEF\xBB\xBF{\"b\":2}".to_vec()]);
    }

    fn lines(data: &[u8], max: usize) -> Vec<Line> {
        let mut r: &[u8] = data;
        let mut out = Vec::new();
        while let Some(l) = read_line(&mut r, max).unwrap() {
            out.push(l);
        }
        out
    }

    /// Proves lines are split on `\n`, lose `\r\n`, and a last line without a newline
    /// counts.
    #[test]
    fn splits_lines() {
        assert_eq!(
            lines(b"a\r\nbb\n\nc", 10),
            vec![
                Line::Whole(b"a".to_vec()),
                Line::Whole(b"bb".to_vec()),
                Line::Whole(Vec::new()),
                Line::Whole(b"c".to_vec())
            ]
        );
    }

    /// Proves a line over the limit keeps only its head, its size and the hash of all of
    /// it, and the next line is read normally.
    #[test]
    fn an_oversize_line_is_not_held_whole() {
        let big = vec![b'x'; 5_000];
        let mut data = big.clone();
        data.extend_from_slice(b"\n{}\n");
        let mut r = BufReader::with_capacity(64, &data[..]);
        let Some(Line::Oversize(o)) = read_line(&mut r, 100).unwrap() else {
            panic!("not oversize")
        };
        assert_eq!(o.bytes, 5_000);
        assert_eq!(o.head.len(), REJECT_PAYLOAD_HEAD);
        assert_eq!(o.sha256, hex(&Sha256::digest(&big)));
        assert_eq!(read_line(&mut r, 100).unwrap(), Some(Line::Whole(b"{}".to_vec())));
        assert_eq!(read_line(&mut r, 100).unwrap(), None);
    }

    /// Proves a line of exactly the limit is whole and one byte more is oversize.
    #[test]
    fn the_limit_is_exact() {
        assert!(matches!(&lines(&[b'y'; 100], 100)[0], Line::Whole(b) if b.len() == 100));
        assert!(matches!(&lines(&[b'y'; 101], 100)[0], Line::Oversize(o) if o.bytes == 101));
        assert!(matches!(&lines(b"yy\r\n", 2)[0], Line::Whole(b) if b == b"yy"));
    }
}
