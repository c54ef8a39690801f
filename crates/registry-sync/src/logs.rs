//! Text logs that registry data cannot forge: every line on stderr is one event.
//!
//! Registry strings reach log messages (a refused ZooKeeper node name, a Consul service
//! name, an address quoted in a reason), and a `\n` inside one would start what looks
//! like a new log line of any level, a `\r` would overwrite one on a terminal. The
//! formatter writes each event with one call; this writer escapes every control
//! character in it but the closing newline (and, on a terminal, the escape character
//! that starts the formatter's own colours). JSON logs escape by themselves.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Stderr, with the control characters inside an event escaped.
#[derive(Clone, Copy, Debug)]
pub struct EscapedStderr {
    /// Colours are on: the escape character is the formatter's own.
    pub ansi: bool,
}

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = EscapedWriter;

    fn make_writer(&'a self) -> EscapedWriter {
        EscapedWriter { ansi: self.ansi }
    }
}

pub struct EscapedWriter {
    ansi: bool,
}

impl Write for EscapedWriter {
    fn write(&mut self, event: &[u8]) -> io::Result<usize> {
        io::stderr().lock().write_all(&escape_event(event, self.ansi))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// One formatted event with its inner control characters written as `\n`, `\r`,
/// `\t` or `\xNN`; a trailing newline stays.
pub fn escape_event(event: &[u8], ansi: bool) -> Vec<u8> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    let mut out = Vec::with_capacity(event.len());
    for &byte in body {
        match byte {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x1b if ansi => out.push(byte),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    out.extend_from_slice(end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_one_line_whatever_it_quotes() {
        let event = b"WARN skipped: node \"a\nINFO forged\r\x07\x1b[2J\" refused\n";
        let escaped = String::from_utf8(escape_event(event, false)).unwrap();
        assert_eq!(
            escaped,
            "WARN skipped: node \"a\\nINFO forged\\r\\x07\\x1b[2J\" refused\n"
        );
        assert_eq!(escaped.lines().count(), 1);
        let coloured = escape_event(b"\x1b[33mWARN\x1b[0m a\nb\n", true);
        assert_eq!(coloured, b"\x1b[33mWARN\x1b[0m a\\nb\n");
    }
}
