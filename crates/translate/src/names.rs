//! Kubernetes naming rules: object names (DNS-1123 subdomains) and labels.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_NAME_LEN: usize = 63;
const MAX_LABEL_VALUE_LEN: usize = 63;
const HASH_LEN: usize = 8;

/// Lowercases and replaces every run of characters a DNS label cannot hold with one
/// `-`, trimming dashes at both ends. May return an empty string.
pub(crate) fn sanitize_dns_label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        let ch = ch.to_ascii_lowercase();
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            out.push(ch);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn is_clean_label(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_LABEL_NAME_LEN
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

/// A short hash over the parts, length-prefixed so that `["ab", "c"]` and `["a", "bc"]`
/// never hash alike.
fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..HASH_LEN / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Cuts `s` to at most `max` bytes and trims trailing separators, so that a hash
/// suffix can follow with a `-`.
fn truncate_for_suffix(s: &str, max: usize) -> &str {
    let cut = if s.len() <= max { s } else { &s[..max] };
    cut.trim_end_matches(['-', '.'])
}

/// An object name from identifying parts (registry, namespace, service, instance).
///
/// Parts that are already clean DNS labels are joined with `.`; since a clean part holds
/// no dot, distinct part lists give distinct names. When any part had to be sanitised,
/// or the result would exceed 253 characters, the sanitised name is cut short and
/// suffixed with a hash of the raw parts, so that `Orders` and `orders` (or two long
/// names with the same prefix) still get different names. The result is always a valid
/// DNS-1123 subdomain and depends only on the parts.
pub fn object_name(parts: &[&str]) -> String {
    if parts.iter().all(|p| is_clean_label(p)) {
        let joined = parts.join(".");
        if joined.len() <= MAX_NAME_LEN {
            return joined;
        }
    }
    let sanitized: Vec<String> = parts
        .iter()
        .map(|p| sanitize_dns_label(p))
        .filter(|p| !p.is_empty())
        .collect();
    let joined = sanitized.join(".");
    let hash = short_hash(parts);
    let prefix = truncate_for_suffix(&joined, MAX_NAME_LEN - HASH_LEN - 1);
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// A label value naming an object: the name itself when it fits in 63 characters,
/// otherwise a prefix and a hash of the whole name.
pub fn label_value_for_name(name: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE_LEN {
        return name.to_string();
    }
    let hash = short_hash(&[name]);
    let prefix = truncate_for_suffix(name, MAX_LABEL_VALUE_LEN - HASH_LEN - 1);
    format!("{prefix}-{hash}")
}

fn is_label_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Replaces characters a label name/value cannot hold with `_` and trims what may not
/// stand at either end.
fn sanitize_label_part(raw: &str) -> String {
    let replaced: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii() && is_label_name_char(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    replaced
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Why a registry label was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelDrop {
    InvalidKey(String),
    ValueTooLong {
        key: String,
        len: usize,
    },
    Reserved(String),
    Duplicate(String),
    /// The key names a secret (a token, a password): never published.
    Secret(String),
    /// The value carries credentials (a URL's `user:password@`): never published.
    Credentials(String),
}

impl std::fmt::Display for LabelDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelDrop::InvalidKey(k) => write!(f, "label key {k:?} cannot be made a Kubernetes label key"),
            LabelDrop::ValueTooLong { key, len } => {
                write!(
                    f,
                    "label {key:?} dropped: value of {len} bytes exceeds 63 characters"
                )
            }
            LabelDrop::Reserved(k) => write!(f, "label {k:?} dropped: the key is reserved for registry-sync"),
            LabelDrop::Duplicate(k) => {
                write!(f, "label {k:?} dropped: another key sanitises to the same label")
            }
            LabelDrop::Secret(k) => write!(
                f,
                "label {k:?} dropped: the key names a secret (see `safety.secret_keys`)"
            ),
            LabelDrop::Credentials(k) => write!(
                f,
                "label {k:?} dropped: its value carries credentials (`user:password@` in a URL)"
            ),
        }
    }
}

/// Sanitises one key: `prefix/name`, where the prefix must be a DNS subdomain and the
/// name 1–63 characters of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
fn sanitize_label_key(raw: &str) -> Option<String> {
    let (prefix, name) = match raw.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, raw),
    };
    let name = sanitize_label_part(name);
    if name.is_empty() || name.len() > MAX_LABEL_NAME_LEN {
        return None;
    }
    match prefix {
        None => Some(name),
        Some(prefix) => {
            let labels: Vec<String> = prefix.split('.').map(sanitize_dns_label).collect();
            if labels.iter().any(String::is_empty) {
                return None;
            }
            let prefix = labels.join(".");
            (prefix.len() <= MAX_NAME_LEN).then(|| format!("{prefix}/{name}"))
        }
    }
}

/// Turns registry metadata into Kubernetes labels. Invalid characters are replaced;
/// keys that cannot be repaired, values longer than 63 characters (truncating would
/// invent a different value), reserved keys and keys that collide after sanitising are
/// dropped and reported — never fatal.
pub fn sanitize_labels<'a>(
    raw: impl IntoIterator<Item = (&'a String, &'a String)>,
    is_reserved: impl Fn(&str) -> bool,
) -> (BTreeMap<String, String>, Vec<LabelDrop>) {
    let mut out = BTreeMap::new();
    let mut dropped = Vec::new();
    for (raw_key, raw_value) in raw {
        let Some(key) = sanitize_label_key(raw_key) else {
            dropped.push(LabelDrop::InvalidKey(raw_key.clone()));
            continue;
        };
        if is_reserved(&key) {
            dropped.push(LabelDrop::Reserved(raw_key.clone()));
            continue;
        }
        let value = sanitize_label_part(raw_value);
        if value.len() > MAX_LABEL_VALUE_LEN {
            dropped.push(LabelDrop::ValueTooLong {
                key: raw_key.clone(),
                len: raw_value.len(),
            });
            continue;
        }
        if out.contains_key(&key) {
            dropped.push(LabelDrop::Duplicate(raw_key.clone()));
            continue;
        }
        out.insert(key, value);
    }
    (out, dropped)
}

/// True for a valid DNS-1123 subdomain, the syntax of Kubernetes object names.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// True for a valid label value (at most 63 characters).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= MAX_LABEL_VALUE_LEN
            && value.bytes().all(is_label_name_char)
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// True for a valid label key (`[prefix/]name`).
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    !name.is_empty() && is_label_value(name) && prefix.is_none_or(is_dns1123_subdomain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clean_parts_join_with_dots_unchanged() {
        assert_eq!(object_name(&["legacy", "shop", "orders"]), "legacy.shop.orders");
    }

    #[test]
    fn sanitised_parts_get_a_hash_suffix() {
        let upper = object_name(&["legacy", "Orders"]);
        let lower = object_name(&["legacy", "orders"]);
        assert_ne!(upper, lower);
        assert!(upper.starts_with("legacy.orders-"), "{upper}");
        assert_eq!(upper.len(), "legacy.orders-".len() + HASH_LEN);
    }

    #[test]
    fn over_long_names_are_cut_to_253_with_a_hash() {
        let long = "a".repeat(63);
        let parts = [long.as_str(); 5];
        let name = object_name(&parts);
        assert!(name.len() <= 253);
        assert!(is_dns1123_subdomain(&name), "{name}");
    }

    #[test]
    fn label_values_for_long_names_fit_in_63_characters() {
        let name = format!("{}.{}", "a".repeat(60), "b".repeat(60));
        let value = label_value_for_name(&name);
        assert!(value.len() <= 63 && is_label_value(&value), "{value}");
        assert_ne!(
            value,
            label_value_for_name(&format!("{}.{}", "a".repeat(60), "c".repeat(60)))
        );
        assert_eq!(label_value_for_name("short.name"), "short.name");
    }

    #[test]
    fn labels_are_sanitised_and_unrepairable_ones_dropped() {
        let raw: BTreeMap<String, String> = [
            ("version", "v1"),
            ("team name", "check out"),
            ("example.com/tier", "gold"),
            ("bad//key", "x"),
            ("___", "x"),
            ("huge", &"x".repeat(64)),
            ("registry-sync.io/service", "spoof"),
            ("team_name", "dup"),
            ("empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (labels, dropped) = sanitize_labels(&raw, |k| k.starts_with("registry-sync.io/"));
        assert_eq!(labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(labels.get("example.com/tier").map(String::as_str), Some("gold"));
        assert_eq!(labels.get("empty").map(String::as_str), Some(""));
        assert!(!labels.contains_key("huge"));
        assert!(!labels.contains_key("registry-sync.io/service"));
        // "team name" and "team_name" both become "team_name": the first in key order wins.
        assert_eq!(labels.get("team_name").map(String::as_str), Some("check_out"));
        assert_eq!(
            labels.get("bad/key").map(String::as_str),
            Some("x"),
            "a stray '/' is repaired"
        );
        assert_eq!(dropped.len(), 4, "{dropped:?}");
        assert!(labels.iter().all(|(k, v)| is_label_key(k) && is_label_value(v)));
    }

    proptest! {
        #[test]
        fn object_names_are_always_dns1123(parts in proptest::collection::vec(".{0,80}", 1..5)) {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let name = object_name(&refs);
            prop_assert!(is_dns1123_subdomain(&name), "{:?} -> {:?}", parts, name);
            prop_assert_eq!(name, object_name(&refs));
        }

        #[test]
        fn distinct_part_lists_get_distinct_names(
            a in proptest::collection::vec("[a-zA-Z0-9._-]{0,12}", 1..4),
            b in proptest::collection::vec("[a-zA-Z0-9._-]{0,12}", 1..4),
        ) {
            prop_assume!(a != b);
            let ra: Vec<&str> = a.iter().map(String::as_str).collect();
            let rb: Vec<&str> = b.iter().map(String::as_str).collect();
            prop_assert_ne!(object_name(&ra), object_name(&rb));
        }

        #[test]
        fn sanitised_labels_are_always_valid(raw in proptest::collection::btree_map(".{0,70}", ".{0,70}", 0..8)) {
            let (labels, _) = sanitize_labels(&raw, |_| false);
            for (k, v) in &labels {
                prop_assert!(is_label_key(k), "key {:?}", k);
                prop_assert!(is_label_value(v), "value {:?}", v);
            }
        }
    }
}
