//! How a file looked when the sink last read or wrote it: a file that still looks so
//! holds what the sink knows, so neither the check before a write nor the echo of the
//! sink's own write needs to read and parse it again.

use std::fs;
use std::path::Path;

/// A file's size, modification time and inode: a rename-based edit changes the inode,
/// an in-place one the time (nanoseconds) and usually the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

pub(super) fn stamp(path: &Path) -> Option<Stamp> {
    Some(stamp_of(&fs::metadata(path).ok()?))
}

pub(super) fn stamp_of(meta: &fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    }
}
