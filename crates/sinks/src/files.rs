//! A directory of YAML files, one object per file: what istiod's `fs://` config source
//! and GitOps repositories read.
//!
//! The directory is shared with whatever else lives there, so this sink is defensive: it
//! only ever replaces or removes a file it read as the very object the plan names, and
//! re-reads that file right before touching it, so a file someone edited since the scan
//! is left alone instead of being clobbered.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use registry_sync_istio::{HeldObject, IstioObject, Kind, ObjectKey, RenderError, parse_held, render_object};
use registry_sync_plan::Plan;
use tracing::{debug, warn};

use crate::{ApplyReport, BoxFuture, FilesError, Sink, SinkError};

mod drift;
mod stamp;

use self::stamp::{Stamp, stamp, stamp_of};

pub struct FilesSink {
    dir: PathBuf,
    held: BTreeMap<ObjectKey, HeldObject>,
    /// The held objects whose file is not named as the sink names it ([`file_name`]):
    /// users and older layouts may have named files differently. Every other held
    /// object is in the file of its own name, which is derived from the key and read
    /// back from the name, so the sink keeps no second copy of every key and name.
    renamed: BTreeMap<ObjectKey, OsString>,
    /// `renamed` the other way round.
    by_rename: BTreeMap<OsString, ObjectKey>,
    /// What each held file looked like (size, time, inode) when it was last read or
    /// written: a file that still looks so holds what was read, so neither the check
    /// before a write nor the echo of our own write needs to read and parse it again.
    stamps: BTreeMap<OsString, Stamp>,
    /// Set by [`FilesSink::watch`].
    watch: Option<drift::DirWatch>,
}

/// What a scan of the directory found: the objects, the files of those not in the file
/// of their own name, and how each file it read looked just before it was read.
struct Scan {
    held: BTreeMap<ObjectKey, HeldObject>,
    renamed: BTreeMap<ObjectKey, OsString>,
    stamps: BTreeMap<OsString, Stamp>,
}

/// Why one object could not be written or removed. Kept per object so that one bad file
/// does not hold back the rest of a plan.
#[derive(Debug, thiserror::Error)]
enum ObjectError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(
        "{key} cannot be stored as a file: its name is empty or its name or namespace contains a path separator or NUL; fix the naming that produced it"
    )]
    UnsafeName { key: ObjectKey },
    #[error(
        "{path} already exists and does not hold {key}; registry-sync never overwrites a file it did not write, so move that file away to let {key} be written"
    )]
    Occupied { key: ObjectKey, path: PathBuf },
    #[error(
        "the plan creates {key}, but {path} already holds it; the plan was made against another view of the directory, so plan again from this sink's held objects"
    )]
    AlreadyHeld { key: ObjectKey, path: PathBuf },
    #[error(
        "{path} changed since registry-sync read it, so it was left untouched; the next plan for {key} starts from its current content"
    )]
    Changed { key: ObjectKey, path: PathBuf },
    #[error(
        "cannot write {path} (failed to {step} {tmp}): {source}; check that the output directory exists, is writable and has free space"
    )]
    Write {
        path: PathBuf,
        step: &'static str,
        tmp: PathBuf,
        source: io::Error,
    },
    #[error("cannot {action} {path}: {source}; check that the output directory exists and is writable")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// What a re-read of a held object's file found.
enum Recheck {
    /// The file still holds exactly what the sink believes.
    Same,
    /// The file is gone: whatever the plan wanted removed is already removed.
    Gone,
}

impl FilesSink {
    /// Scans `dir` (created if missing) for the Istio objects it holds. Files that do not
    /// parse as exactly one ServiceEntry or WorkloadEntry are not held and never touched.
    pub fn open(dir: &Path) -> Result<FilesSink, FilesError> {
        fs::create_dir_all(dir).map_err(|source| FilesError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let Scan {
            held,
            renamed,
            stamps,
        } = scan(dir)?;
        let by_rename = renamed.iter().map(|(k, n)| (n.clone(), k.clone())).collect();
        Ok(FilesSink {
            dir: dir.to_path_buf(),
            held,
            renamed,
            by_rename,
            stamps,
            watch: None,
        })
    }

    /// Watches the directory from now on, so that [`Sink::observe`] reports a file
    /// someone deleted, edited or added.
    pub fn watch(&mut self) -> Result<(), FilesError> {
        self.watch = Some(drift::DirWatch::start(&self.dir)?);
        Ok(())
    }

    /// Takes in what one file holds now; returns the keys whose held state changed.
    fn look_again(&mut self, name: &OsStr) -> Vec<ObjectKey> {
        let path = self.dir.join(name);
        let seen = stamp(&path);
        if seen.is_some() && self.stamps.get(name) == seen.as_ref() {
            // The echo of our own write, or an event that changed nothing.
            return Vec::new();
        }
        match seen {
            Some(seen) => self.stamps.insert(name.to_os_string(), seen),
            None => self.stamps.remove(name),
        };
        let now = fs::read(&path)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| parse_held(&text));
        let previous = self.key_in(name);
        let mut changed = Vec::new();
        match (previous, now) {
            (Some(key), Some(now)) if now.key == key => {
                if self.held.get(&key) != Some(&now) {
                    self.held.insert(key.clone(), now);
                    changed.push(key);
                }
            }
            (previous, now) => {
                if let Some(key) = previous {
                    self.forget(&key);
                    changed.push(key);
                }
                // A new file holding an object no other file holds is held from now on,
                // as a rescan at start would.
                if let Some(now) = now.filter(|now| !self.held.contains_key(&now.key)) {
                    self.track(now.key.clone(), name.to_os_string());
                    changed.push(now.key.clone());
                    self.held.insert(now.key.clone(), now);
                }
            }
        }
        changed
    }

    /// Scans the whole directory again; returns the keys whose held state changed.
    fn rescan(&mut self) -> Vec<ObjectKey> {
        let Ok(Scan {
            held,
            renamed,
            stamps,
        }) = scan(&self.dir)
        else {
            warn!(dir = %self.dir.display(), "cannot rescan the output directory; keeping what was known");
            return Vec::new();
        };
        let mut changed: BTreeSet<ObjectKey> = BTreeSet::new();
        for key in self.held.keys().chain(held.keys()) {
            if self.held.get(key) != held.get(key) || self.renamed.get(key) != renamed.get(key) {
                changed.insert(key.clone());
            }
        }
        self.by_rename = renamed.iter().map(|(k, n)| (n.clone(), k.clone())).collect();
        self.held = held;
        self.renamed = renamed;
        // Kept from the scan, not cleared: without them the next write of every file
        // would read and parse it again first (a directory watch overflows on every
        // cold sync of a few thousand files, so that was every file).
        self.stamps = stamps;
        changed.into_iter().collect()
    }

    /// The file that holds `key`.
    fn name_of(&self, key: &ObjectKey) -> Option<OsString> {
        if !self.held.contains_key(key) {
            return None;
        }
        self.renamed.get(key).cloned().or_else(|| file_name(key))
    }

    /// The held object in the file `name`.
    fn key_in(&self, name: &OsStr) -> Option<ObjectKey> {
        if let Some(key) = self.by_rename.get(name) {
            return Some(key.clone());
        }
        key_of_file_name(name).filter(|key| self.held.contains_key(key) && !self.renamed.contains_key(key))
    }

    /// Records that `key` is (about to be) held in the file `name`.
    fn track(&mut self, key: ObjectKey, name: OsString) {
        if let Some(old) = self.name_of(&key)
            && old != name
        {
            self.stamps.remove(&old);
        }
        if let Some(old) = self.renamed.remove(&key) {
            self.by_rename.remove(&old);
        }
        if file_name(&key).as_ref() != Some(&name) {
            self.renamed.insert(key.clone(), name.clone());
            self.by_rename.insert(name, key);
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads every YAML file of `dir` that holds exactly one Istio object.
fn scan(dir: &Path) -> Result<Scan, FilesError> {
    let read_dir_error = |source| FilesError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        let name = entry.map_err(read_dir_error)?.file_name();
        if is_yaml(&name) {
            names.push(name);
        }
    }
    // The first file by name wins a duplicate key, so a rescan always picks the same one.
    names.sort();

    let mut held: BTreeMap<ObjectKey, HeldObject> = BTreeMap::new();
    let mut renamed: BTreeMap<ObjectKey, OsString> = BTreeMap::new();
    let mut stamps: BTreeMap<OsString, Stamp> = BTreeMap::new();
    for name in names {
        let path = dir.join(&name);
        // Taken before the read: a file changed in between then looks changed, and is
        // read again, rather than the other way round.
        let seen = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => stamp_of(&meta),
            _ => continue,
        };
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot read a YAML file in the output directory; ignoring it");
                continue;
            }
        };
        let Some(object) = parse_held(&text) else {
            debug!(path = %path.display(), "not a single Istio object; ignoring it");
            continue;
        };
        if held.contains_key(&object.key) {
            let first = renamed
                .get(&object.key)
                .cloned()
                .or_else(|| file_name(&object.key))
                .unwrap_or_default();
            warn!(
                key = %object.key,
                path = %path.display(),
                kept = %dir.join(&first).display(),
                "two files hold the same object; using the first by name and never touching this one — remove one of them"
            );
            continue;
        }
        stamps.insert(name.clone(), seen);
        if file_name(&object.key).as_ref() != Some(&name) {
            renamed.insert(object.key.clone(), name);
        }
        held.insert(object.key.clone(), object);
    }
    Ok(Scan {
        held,
        renamed,
        stamps,
    })
}

impl FilesSink {
    /// The file that holds `key`, if the sink holds it.
    pub fn path_of(&self, key: &ObjectKey) -> Option<PathBuf> {
        self.name_of(key).map(|name| self.dir.join(name))
    }

    fn write(&mut self, object: &IstioObject, create: bool) -> Result<(), ObjectError> {
        let key = object.key();
        let target = file_name(&key).ok_or_else(|| ObjectError::UnsafeName { key: key.clone() })?;
        let mut current = self.name_of(&key);
        if let Some(name) = &current {
            if create {
                return Err(ObjectError::AlreadyHeld {
                    key,
                    path: self.dir.join(name),
                });
            }
            if let Recheck::Gone = self.recheck(&key, name)? {
                current = None;
            }
        }
        let target_path = self.dir.join(&target);
        if current.as_deref() != Some(target.as_os_str()) && fs::symlink_metadata(&target_path).is_ok() {
            return Err(ObjectError::Occupied {
                key,
                path: target_path,
            });
        }

        let mut text = render_object(object)?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        write_atomically(&self.dir, &target_path, text.as_bytes())?;
        if let Some(written) = stamp(&target_path) {
            self.stamps.insert(target.clone(), written);
        }
        debug!(%key, path = %target_path.display(), "wrote object");

        let old = current.filter(|name| name.as_os_str() != target.as_os_str());
        self.track(key.clone(), target);
        self.held.insert(key.clone(), HeldObject::written(object));
        if let Some(old) = old {
            // The old file was just re-read as this object, so it is ours to remove.
            let old_path = self.dir.join(old);
            match fs::remove_file(&old_path) {
                Ok(()) => debug!(%key, path = %old_path.display(), "removed the object's previous file"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ObjectError::Io {
                        action: "remove the previous file of the object",
                        path: old_path,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Returns whether the sink held `key` (a delete of an object it never held is a
    /// no-op, not an error).
    fn remove(&mut self, key: &ObjectKey) -> Result<bool, ObjectError> {
        let Some(name) = self.name_of(key) else {
            debug!(%key, "asked to delete an object this directory does not hold; nothing to do");
            return Ok(false);
        };
        let path = self.dir.join(&name);
        if let Recheck::Same = self.recheck(key, &name)? {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ObjectError::Io {
                        action: "remove",
                        path,
                        source,
                    });
                }
            }
        }
        debug!(%key, path = %path.display(), "deleted object");
        self.forget(key);
        Ok(true)
    }

    /// Re-reads the file of a held object right before it is replaced or removed. When
    /// the file changed, the sink adopts what is there now (so the next plan sees it) and
    /// refuses the write.
    fn recheck(&mut self, key: &ObjectKey, name: &OsStr) -> Result<Recheck, ObjectError> {
        let path = self.dir.join(name);
        let seen = stamp(&path);
        if seen.is_some() && self.stamps.get(name) == seen.as_ref() {
            return Ok(Recheck::Same);
        }
        let text = match fs::read(&path) {
            Ok(bytes) => String::from_utf8(bytes).ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(key);
                return Ok(Recheck::Gone);
            }
            Err(source) => {
                return Err(ObjectError::Io {
                    action: "re-read",
                    path,
                    source,
                });
            }
        };
        let now = text.as_deref().and_then(parse_held);
        if now.as_ref() == self.held.get(key) {
            if let Some(seen) = seen {
                self.stamps.insert(name.to_os_string(), seen);
            }
            return Ok(Recheck::Same);
        }
        match now {
            Some(now) if now.key == *key => {
                self.held.insert(key.clone(), now);
            }
            // It holds something else now; the key is no longer in this file.
            _ => self.forget(key),
        }
        Err(ObjectError::Changed {
            key: key.clone(),
            path,
        })
    }

    fn forget(&mut self, key: &ObjectKey) {
        if let Some(name) = self.name_of(key) {
            self.stamps.remove(&name);
        }
        if let Some(name) = self.renamed.remove(key) {
            self.by_rename.remove(&name);
        }
        self.held.remove(key);
    }
}

/// The mass-change guard's memory, beside the objects: a dot file that no reader of
/// the directory takes for an object (istiod and the sink read only `.yaml` files).
pub const GUARD_MEMORY_FILE: &str = ".registry-sync-guard";

impl Sink for FilesSink {
    fn held(&self) -> &BTreeMap<ObjectKey, HeldObject> {
        &self.held
    }

    fn load_guard_memory(&mut self) -> Result<Option<String>, SinkError> {
        match fs::read_to_string(self.dir.join(GUARD_MEMORY_FILE)) {
            Ok(memory) => Ok(Some(memory)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError::unavailable(
                crate::Unavailability::Storage,
                format!(
                    "cannot read the mass-change guard's memory {}: {e}; check the directory's permissions",
                    self.dir.join(GUARD_MEMORY_FILE).display()
                ),
            )),
        }
    }

    fn keep_guard_memory(&mut self, memory: &str) -> Result<(), SinkError> {
        let target = self.dir.join(GUARD_MEMORY_FILE);
        if !self.dir.is_dir() {
            fs::create_dir_all(&self.dir).map_err(|e| {
                SinkError::unavailable(
                    crate::Unavailability::Storage,
                    format!("cannot create {}: {e}", self.dir.display()),
                )
            })?;
        }
        write_atomically(&self.dir, &target, memory.as_bytes()).map_err(|e| {
            SinkError::unavailable(
                crate::Unavailability::Storage,
                format!("cannot keep the mass-change guard's memory: {e}"),
            )
        })
    }

    fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, SinkError> {
        let mut report = ApplyReport::default();
        let mut touched = false;
        for object in &plan.creates {
            match self.write(object, true) {
                Ok(()) => report.created += 1,
                Err(error) => fail(&mut report, object.key(), error),
            }
            touched = true;
        }
        for object in &plan.updates {
            match self.write(object, false) {
                Ok(()) => report.updated += 1,
                Err(error) => fail(&mut report, object.key(), error),
            }
            touched = true;
        }
        for key in &plan.deletes {
            match self.remove(key) {
                Ok(true) => report.deleted += 1,
                Ok(false) => {}
                Err(error) => fail(&mut report, key.clone(), error),
            }
            touched = true;
        }
        if touched {
            sync_dir(&self.dir);
        }
        Ok(report)
    }

    fn observe(&mut self) -> BoxFuture<'_, Vec<ObjectKey>> {
        Box::pin(async move {
            let Some(watch) = &mut self.watch else {
                return std::future::pending().await;
            };
            match watch.next().await {
                drift::Seen::Everything => self.rescan(),
                drift::Seen::Files(names) => names.iter().flat_map(|name| self.look_again(name)).collect(),
            }
        })
    }
}

fn fail(report: &mut ApplyReport, key: ObjectKey, error: ObjectError) {
    warn!(%key, %error, "could not apply the object to the output directory");
    report.failed.push((key, error.to_string()));
}

/// `{namespace}.{kind}.{name}.yaml`: sorts by namespace in a listing, and cannot collide
/// between keys because namespaces (DNS labels) contain no dot. `None` for a key that
/// would escape the directory.
fn file_name(key: &ObjectKey) -> Option<OsString> {
    let unsafe_part = |s: &str| s.contains(['/', '\\', '\0']);
    if key.name.is_empty() || unsafe_part(&key.name) || unsafe_part(&key.namespace) {
        return None;
    }
    let kind = key.kind.as_str().to_ascii_lowercase();
    Some(format!("{}.{kind}.{}.yaml", key.namespace, key.name).into())
}

/// The key whose [`file_name`] is `name`, if it is one.
fn key_of_file_name(name: &OsStr) -> Option<ObjectKey> {
    let stem = name.to_str()?.strip_suffix(".yaml")?;
    let (namespace, rest) = stem.split_once('.')?;
    let (kind, object) = rest.split_once('.')?;
    let kind = [Kind::ServiceEntry, Kind::WorkloadEntry]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(kind))?;
    let key = ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: object.to_string(),
    };
    (file_name(&key).as_deref() == Some(name)).then_some(key)
}

fn is_yaml(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// [`write_atomically`] for a file beside the objects that is none (a sink's own
/// state), the error in words.
pub fn write_file_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomically(dir, target, bytes).map_err(|e| e.to_string())
}

/// Writes through a temporary file in the same directory and renames it over the target,
/// so a reader (istiod, git, a crash) sees the old file or the new one, never half of one.
fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), ObjectError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Short and independent of the target's name, so a long object name cannot push the
    // temporary name past the file system's limit.
    let tmp = dir.join(format!(".registry-sync.{}.{n}.tmp", std::process::id()));
    let attempt = || -> Result<(), (&'static str, io::Error)> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ("create the temporary file", e))?;
        file.write_all(bytes)
            .map_err(|e| ("write the temporary file", e))?;
        file.sync_all()
            .map_err(|e| ("flush to disk the temporary file", e))?;
        drop(file);
        fs::rename(&tmp, target).map_err(|e| ("rename into place the temporary file", e))
    };
    attempt().map_err(|(step, source)| {
        let _ = fs::remove_file(&tmp);
        ObjectError::Write {
            path: target.to_path_buf(),
            step,
            tmp,
            source,
        }
    })
}

/// Makes renames and removals durable. A failure here leaves the files correct but maybe
/// not yet on disk, which is worth a warning and not a failed apply.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(path = %dir.display(), %error, "cannot flush the output directory to disk; a crash now may lose the latest writes");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_reads_back_as_the_key_it_was_made_from_and_nothing_else_does() {
        let key = |kind, namespace: &str, name: &str| ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        };
        for key in [
            key(Kind::ServiceEntry, "mesh", "legacy.orders"),
            key(Kind::WorkloadEntry, "mesh", "legacy.orders.10-0-0-1"),
            key(Kind::ServiceEntry, "", "orders"),
        ] {
            let name = file_name(&key).unwrap();
            assert_eq!(key_of_file_name(&name), Some(key));
        }
        for other in [
            "orders.yaml",
            "mesh.serviceentry.orders.yml",
            "mesh.gateway.orders.yaml",
            "mesh.ServiceEntry.orders.yaml",
        ] {
            assert_eq!(key_of_file_name(OsStr::new(other)), None, "{other}");
        }
    }
}
