//! Lines for the user on stderr, each written whole.
//!
//! `eprintln!` writes each piece of its format with a write call of its own (stderr is not
//! buffered), so when a launcher such as `mpirun` forwards several ranks' output into one stream,
//! one rank's line can land in the middle of another's. [`say!`](crate::say) formats the line
//! first and writes it, newline included, with one call.

use std::io::Write;

/// `eprintln!`, with the line written in one call (see the module).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::line(&format!($($arg)*))
    };
}

/// Writes `text` and a newline to stderr in one call; a failed write is ignored, as
/// `eprintln!`'s would panic where there is nobody to tell.
pub fn line(text: &str) {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&bytes);
}
