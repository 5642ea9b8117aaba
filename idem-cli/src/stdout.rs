//! Writing to stdout without panicking when its reader has gone away.

use std::fmt;
use std::io::Write;

use crate::failure::Failure;

/// Writes one line to stdout. A reader that went away (`| head -1`) ends the command quietly
/// instead of a panic; any other write error is a failure.
pub(crate) fn emit(line: impl fmt::Display) -> Result<(), Failure> {
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::broken_pipe()),
        Err(e) => Err(Failure {
            code: 1,
            kind: "output",
            message: format!("cannot write to stdout: {e}"),
        }),
    }
}

/// `println!` that returns [`Failure`] instead of panicking on a closed stdout.
macro_rules! say {
    () => { $crate::stdout::emit("")? };
    ($($arg:tt)*) => { $crate::stdout::emit(format_args!($($arg)*))? };
}

pub(crate) use say;
