//! An `onramp` process that keeps running while a test talks to it: stdin and stdout
//! piped, stderr written to a log file that the test reads (the read API's address,
//! lines to wait for or count, the end of the log when something goes wrong). Killed
//! and reaped when dropped.
//!
//! ```text
//! let mut cmd = cli::command();
//! cmd.args(["run", "--input", "-", "--store", STORE, "--listen", "127.0.0.1:0"]);
//! let mut r = Running::serving(cmd, LOG);   // waits for the API address
//! r.send(&lines);                           // stdin
//! ... r.base() ... r.logged("chain restarted") ...
//! assert!(r.wait().success());              // closes stdin, waits
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What `onramp` logs once its read API accepts connections, followed by the address.
pub const LISTENING: &str = "read API listening on http://";

/// A spawned `onramp` (see the module docs).
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    /// `http://ADDR` of the read API, when waited for.
    base: Option<String>,
}

impl Running {
    /// Spawns `cmd` with stdin and stdout piped and stderr written to `log`. Its stdout is
    /// read only by [`Running::stdout`]: fine for `onramp`, which prints its summary there
    /// at the end.
    pub fn spawn(mut cmd: Command, log: impl Into<PathBuf>) -> Running {
        let log = log.into();
        let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("onramp runs");
        Running {
            stdin: child.stdin.take(),
            child,
            log,
            base: None,
        }
    }

    /// Spawns `cmd` (an onramp command serving the read API) as [`Running::spawn`] does,
    /// and waits (up to 2 minutes) for the API address it announces.
    pub fn serving(cmd: Command, log: impl Into<PathBuf>) -> Running {
        let mut r = Running::spawn(cmd, log);
        let Some(line) = r.wait_for_line(LISTENING, Duration::from_secs(120)) else {
            panic!("onramp announces its API address; its log:\n{}", r.log_text());
        };
        let addr = line[line.find(LISTENING).unwrap() + LISTENING.len()..]
            .split_whitespace()
            .next()
            .unwrap_or_default();
        r.base = Some(format!("http://{addr}"));
        r
    }

    /// `http://ADDR` of the read API.
    pub fn base(&self) -> &str {
        self.base.as_deref().expect("spawned with Running::serving")
    }

    /// `ADDR` (`host:port`) of the read API.
    pub fn addr(&self) -> &str {
        self.base().trim_start_matches("http://")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Writes `lines` to stdin, one a line, and flushes.
    pub fn send<L: AsRef<str>>(&mut self, lines: &[L]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        for l in lines {
            writeln!(stdin, "{}", l.as_ref()).unwrap();
        }
        stdin.flush().unwrap();
    }

    /// Closes stdin (the end of `--input -`).
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The log's complete lines so far (a line being written is left out).
    fn log_lines(&self) -> Vec<String> {
        let text = self.log_text();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().map(str::to_string).collect()
    }

    /// Log lines containing `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.log_lines().iter().filter(|l| l.contains(text)).count()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.log_lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits up to `limit` for a log line containing `text`: the first one, or `None` if
    /// the process ended, or the time ran out, without logging one.
    pub fn wait_for_line(&mut self, text: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            // Whether it had ended before the log is read: then the log is complete.
            let ended = self.try_wait().is_some();
            if let Some(line) = self.log_lines().into_iter().find(|l| l.contains(text)) {
                return Some(line);
            }
            if ended || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its exit status, if it has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("the process can be waited for")
    }

    /// Waits up to `limit` for it to end: its exit status, or `None` if it still runs.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Closes stdin and waits for it to end.
    pub fn wait(&mut self) -> ExitStatus {
        self.close_stdin();
        self.child.wait().expect("the process can be waited for")
    }

    /// Sends SIGINT (what Ctrl-C sends).
    pub fn interrupt(&self) {
        let sent = Command::new("kill")
            .args(["-INT", &self.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGINT could not be sent to {}", self.id());
    }

    /// Sends SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it wrote to stdout (read to the end: call it once it has ended).
    pub fn stdout(&mut self) -> String {
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out).unwrap();
        }
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
