//! What a replica served, kept on disk (`sinks.mcp.state_dir`), so that a restart
//! serves istiod exactly what it served before instead of less.
//!
//! istiod deletes whatever a response lacks. A process that starts empty can offer
//! only what its registries deliver: a registry that is down, a service that could not
//! be read, a deletion its guard held or an update refused would each be missing from
//! the first answer. With the served set kept, a restarted replica answers at once
//! with the set it served last, and changes it only through the same plan and guard as
//! every other sink (the guard's memory is kept beside it).
//!
//! The file holds one record per object: a text line of tab-separated fields (kind,
//! namespace, name, version, first served in Unix milliseconds, endpoints, the
//! address's host and address, sources, labels; each escaped) and the length of the
//! encoded resource, then those bytes as they go on the wire. No serde: the bytes are
//! the wire form already, and the fields are few.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry_sync_istio::{HeldObject, Kind, LiteMap, ObjectKey};

/// The served set's file in the state directory.
pub const SERVED_FILE: &str = "served";
/// The guard's memory in the state directory.
pub const GUARD_FILE: &str = "guard";
const HEADER: &str = "registry-sync mcp served v1";

/// One served object as the state file keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub held: HeldObject,
    pub version: String,
    pub first_served: SystemTime,
    pub encoded: bytes::Bytes,
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn kind_name(kind: Kind) -> &'static str {
    kind.as_str()
}

fn kind_of(name: &str) -> Option<Kind> {
    [Kind::ServiceEntry, Kind::WorkloadEntry]
        .into_iter()
        .find(|k| k.as_str() == name)
}

/// The records as the file holds them.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    for r in records {
        let h = &r.held;
        let millis = r
            .first_served
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (vip_host, vip_address) = h.vip.clone().unwrap_or_default();
        let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let fields = [
            kind_name(h.key.kind).to_string(),
            h.key.namespace.clone(),
            h.key.name.clone(),
            r.version.clone(),
            millis.to_string(),
            h.endpoints.to_string(),
            vip_host,
            vip_address,
            h.sources.join(","),
            labels.join(";"),
            r.encoded.len().to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| escape(f)).collect();
        out.extend_from_slice(line.join("\t").as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&r.encoded);
    }
    out
}

/// The records of a file written by [`encode`]; `None` when it is not one (another
/// format, or cut short: a damaged file is not half used).
pub fn decode(bytes: &[u8]) -> Option<Vec<Record>> {
    let mut rest = bytes.strip_prefix(HEADER.as_bytes())?.strip_prefix(b"\n")?;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let end = rest.iter().position(|b| *b == b'\n')?;
        let line = std::str::from_utf8(&rest[..end]).ok()?;
        rest = &rest[end + 1..];
        let fields: Vec<String> = line.split('\t').map(unescape).collect();
        let [
            kind,
            namespace,
            name,
            version,
            millis,
            endpoints,
            vip_host,
            vip_address,
            sources,
            labels,
            len,
        ] = &fields[..]
        else {
            return None;
        };
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        let encoded = bytes::Bytes::copy_from_slice(&rest[..len]);
        rest = &rest[len..];
        let labels: LiteMap<String, String> = labels
            .split(';')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let held = HeldObject {
            key: ObjectKey {
                kind: kind_of(kind)?,
                namespace: namespace.clone(),
                name: name.clone(),
            },
            labels,
            content_hash: Some(version.clone()),
            sources: sources
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            endpoints: endpoints.parse().ok()?,
            vip: (!vip_host.is_empty()).then(|| (vip_host.clone(), vip_address.clone())),
            healthy: None,
        };
        records.push(Record {
            held,
            version: version.clone(),
            first_served: UNIX_EPOCH + Duration::from_millis(millis.parse().ok()?),
            encoded,
        });
    }
    Some(records)
}

/// Writes `name` in `dir` (created if need be) through a temporary file and a rename,
/// as the files sink writes its objects: the next start reads the old file or the new
/// one, never half of one.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    registry_sync_sinks::write_file_atomically(dir, &dir.join(name), bytes)
}

/// The state directory's files.
#[derive(Clone, Debug)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// The records kept, or none (no file yet, or one that cannot be used: said).
    pub fn load(&self) -> Vec<Record> {
        let path = self.0.join(SERVED_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "the served set kept there is damaged or of another version; starting without it");
                Vec::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read the served set kept there ({e}); starting without it");
                Vec::new()
            }
        }
    }

    pub fn held(records: &[Record]) -> BTreeMap<ObjectKey, HeldObject> {
        records
            .iter()
            .map(|r| (r.held.key.clone(), r.held.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_file_and_a_damaged_file_is_not_used() {
        let record = Record {
            held: HeldObject {
                key: ObjectKey {
                    kind: Kind::ServiceEntry,
                    namespace: "mesh".into(),
                    name: "legacy.orders".into(),
                },
                labels: [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "registry-sync".to_string(),
                )]
                .into_iter()
                .collect(),
                content_hash: Some("abc".into()),
                sources: vec!["legacy:orders\twith a tab".into(), "b:x".into()],
                endpoints: 3,
                vip: Some(("orders.legacy".into(), "240.241.0.9".into())),
                healthy: None,
            },
            version: "abc".into(),
            first_served: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            encoded: bytes::Bytes::from_static(b"\x0a\x03\x00\n\tbinary"),
        };
        let bytes = encode(std::slice::from_ref(&record));
        assert_eq!(decode(&bytes), Some(vec![record]));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None, "cut short");
        assert_eq!(decode(b"something else\n"), None);
    }
}
