//! A failed command: its message, its kind (for `--json`) and its exit code.
//!
//! Exit codes: 0 success (also when stdout is closed early, as by `idem list | head -1`); 1 the
//! store failed or could not be reached; 2 bad usage (a bad argument, a bad store URL, a
//! malformed key); 3 no such key (or a key prefix that matches several), or a store without
//! idem tables; 4 `release` or `forget` refused a key whose lease is still live (pass
//! `--force`).

use std::io::Write;
use std::process::ExitCode;

use idem_runtime::Error;
use serde_json::json;

/// A failure of one command: what to say and which exit code to use.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            kind: "usage",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: 3,
            kind: "not_found",
            message: message.into(),
        }
    }

    pub(crate) fn store(err: &Error) -> Self {
        Self {
            code: 1,
            kind: "store",
            message: error_text(err),
        }
    }

    /// A live lease refused `release` or `forget` of its key.
    pub(crate) fn lease_live(message: impl Into<String>) -> Self {
        Self {
            code: 4,
            kind: "lease_live",
            message: message.into(),
        }
    }

    /// Stdout was closed by its reader (`idem list | head -1`): stop quietly.
    pub(crate) fn broken_pipe() -> Self {
        Self {
            code: 0,
            kind: "broken_pipe",
            message: String::new(),
        }
    }

    pub(crate) fn is_broken_pipe(&self) -> bool {
        self.kind == "broken_pipe"
    }

    /// Prints the failure once on stderr (and as JSON on stdout with `--json`) and gives its
    /// exit code.
    pub(crate) fn report(&self, json: bool) -> ExitCode {
        let message = self.message.strip_prefix("idem: ").unwrap_or(&self.message);
        let _ = writeln!(std::io::stderr().lock(), "idem: error: {message}");
        if json {
            // Best effort: stdout may be the closed pipe this failure is about.
            let _ = writeln!(
                std::io::stdout().lock(),
                "{}",
                json!({ "error": { "kind": self.kind, "message": message } })
            );
        }
        ExitCode::from(self.code)
    }
}

/// An error of the runtime as one line of this tool: its messages start with `idem: `, which
/// the tool's own `idem: error: ` prefix already says.
pub(crate) fn error_text(err: &Error) -> String {
    let text = err.to_string();
    match text.strip_prefix("idem: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}
