//! The `file` registry end to end: real files in a temporary directory, real
//! notifications, and the events a consumer would see.

#![cfg(feature = "file")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use registry_sync_catalog::RegistrySnapshot;
use registry_sync_sources::SourceEvent;
use registry_sync_sources::file::{FileSource, FileSourceError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous: a loaded CI machine must not fail these; a working watch answers in ms.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is awaited.
const QUIET: Duration = Duration::from_millis(300);

const ONE: &str =
    "services:\n  - name: orders\n    instances:\n      - {address: 10.1.0.1, ports: {http: 8080}}\n";
const TWO: &str = "services:\n  - name: orders\n    instances:\n      - {address: 10.1.0.1, ports: {http: 8080}}\n      - {address: 10.1.0.2, ports: {http: 8080}}\n";
const BROKEN: &str = "services:\n  - name: orders\n    instances: [\n  - {address\n";

struct Watch {
    rx: mpsc::Receiver<SourceEvent>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

fn watch(path: &Path) -> Watch {
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(FileSource::new("files", path).watch(tx, cancel.clone()));
    Watch { rx, cancel, task }
}

impl Watch {
    async fn next(&mut self) -> SourceEvent {
        match tokio::time::timeout(PATIENCE, self.rx.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the watch ended without being cancelled"),
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }

    async fn snapshot(&mut self) -> RegistrySnapshot {
        match self.next().await {
            SourceEvent::Snapshot { registry, snapshot } => {
                assert_eq!(registry, "files");
                snapshot
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    async fn failure(&mut self) -> String {
        match self.next().await {
            SourceEvent::Failed { registry, error } => {
                assert_eq!(registry, "files");
                error.message
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    async fn assert_quiet(&mut self) {
        if let Ok(event) = tokio::time::timeout(QUIET, self.rx.recv()).await {
            panic!("expected no event, got {event:?}");
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the watch stops when cancelled")
            .expect("the watch task does not panic");
    }
}

fn instance_count(snapshot: &RegistrySnapshot) -> usize {
    snapshot.instance_count()
}

fn services_file(dir: &tempfile::TempDir, content: &str) -> PathBuf {
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, content).expect("write the services file");
    path
}

/// Writes the content beside the file and moves it into place, as editors and
/// deployment tools do.
fn replace_atomically(path: &Path, content: &str) {
    let temporary = path.with_extension("yaml.tmp");
    std::fs::write(&temporary, content).expect("write the temporary file");
    std::fs::rename(&temporary, path).expect("move the temporary file into place");
}

#[test]
fn loading_a_missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.yaml");
    let error = FileSource::new("files", &path).load().unwrap_err();
    assert!(matches!(error, FileSourceError::Read { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("registry \"files\""), "{message}");
}

#[test]
fn loading_a_file_that_does_not_parse_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, BROKEN);
    let message = FileSource::new("files", &path).load().unwrap_err().to_string();
    assert!(message.contains("services.yaml line 4 column 3: "), "{message}");
}

#[test]
fn loading_a_valid_file_gives_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, TWO);
    let snapshot = FileSource::new("files", &path).load().unwrap();
    assert_eq!(instance_count(&snapshot), 2);
}

#[tokio::test]
async fn a_changed_file_delivers_a_new_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let mut watch = watch(&path);
    assert_eq!(instance_count(&watch.snapshot().await), 1);

    std::fs::write(&path, TWO).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    watch.stop().await;
}

#[tokio::test]
async fn a_broken_file_delivers_a_failure_and_the_fix_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let mut watch = watch(&path);
    watch.snapshot().await;

    std::fs::write(&path, BROKEN).unwrap();
    let error = watch.failure().await;
    assert!(error.contains("line 4"), "{error}");

    std::fs::write(&path, TWO).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    watch.stop().await;
}

#[tokio::test]
async fn an_atomic_replace_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let mut watch = watch(&path);
    watch.snapshot().await;

    replace_atomically(&path, TWO);
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    watch.stop().await;
}

#[tokio::test]
async fn a_writer_that_keeps_the_file_open_is_read_after_a_short_wait() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let mut watch = watch(&path);
    watch.snapshot().await;

    // Overwritten in place without truncating (TWO is longer than ONE), so the only
    // states a read can see are the old and the new content.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    writer.write_all(TWO.as_bytes()).unwrap();
    writer.flush().unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    drop(writer);
    watch.stop().await;
}

#[tokio::test]
async fn an_identical_rewrite_delivers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let mut watch = watch(&path);
    watch.snapshot().await;

    std::fs::write(&path, ONE).unwrap();
    replace_atomically(&path, ONE);
    watch.assert_quiet().await;

    // The watch was listening all along: a real change still arrives.
    std::fs::write(&path, TWO).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    watch.stop().await;
}

#[tokio::test]
async fn the_last_good_content_after_a_failure_is_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let mut watch = watch(&path);
    watch.snapshot().await;

    std::fs::write(&path, BROKEN).unwrap();
    watch.failure().await;
    // The consumer marked the registry as failing; it must learn that it recovered.
    std::fs::write(&path, ONE).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 1);
    watch.stop().await;
}

#[tokio::test]
async fn a_removed_file_is_a_failure_never_an_empty_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let mut watch = watch(&path);
    watch.snapshot().await;

    std::fs::remove_file(&path).unwrap();
    let error = watch.failure().await;
    assert!(error.contains(&path.display().to_string()), "{error}");

    std::fs::write(&path, TWO).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    watch.stop().await;
}

#[tokio::test]
async fn a_file_that_appears_later_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    let mut watch = watch(&path);
    watch.failure().await;

    std::fs::write(&path, ONE).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 1);
    watch.stop().await;
}

#[tokio::test]
async fn a_missing_directory_is_polled_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("later");
    let path = sub.join("services.yaml");
    let mut watch = watch(&path);
    watch.failure().await;

    std::fs::create_dir(&sub).unwrap();
    std::fs::write(&path, ONE).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 1);

    // Once the directory exists, notifications take over again from polling.
    std::fs::write(&path, TWO).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    watch.stop().await;
}

#[tokio::test]
async fn a_removed_directory_is_a_failure_and_its_return_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("config");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("services.yaml");
    std::fs::write(&path, ONE).unwrap();
    let mut watch = watch(&path);
    watch.snapshot().await;

    std::fs::remove_dir_all(&sub).unwrap();
    watch.failure().await;

    std::fs::create_dir(&sub).unwrap();
    std::fs::write(&path, TWO).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    watch.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_configmap_update_is_seen() {
    use std::os::unix::fs::symlink;

    // The layout kubelet writes: services.yaml -> ..data/services.yaml,
    // ..data -> ..<timestamp>, and an update swaps ..data atomically.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(root.join("..v1/services.yaml"), ONE).unwrap();
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/services.yaml", root.join("services.yaml")).unwrap();
    let mut watch = watch(&root.join("services.yaml"));
    assert_eq!(instance_count(&watch.snapshot().await), 1);

    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(root.join("..v2/services.yaml"), TWO).unwrap();
    symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    assert_eq!(instance_count(&watch.snapshot().await), 2);
    watch.stop().await;
}

#[tokio::test]
async fn cancelling_stops_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let mut watch = watch(&path);
    watch.snapshot().await;
    watch.stop().await;
}

#[tokio::test]
async fn dropping_the_receiver_stops_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, ONE);
    let Watch { rx, task, .. } = watch(&path);
    drop(rx);
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the watch stops when nobody listens")
        .expect("the watch task does not panic");
}

#[test]
fn a_load_is_one_read_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = services_file(&dir, TWO);
    let name = "file-requests-counted";
    FileSource::new(name, &path).load().unwrap();
    assert_eq!(registry_sync_sources::requests::Requests::of(name).total(), 1);
}
