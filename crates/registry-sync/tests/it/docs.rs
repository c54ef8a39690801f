//! Every key a registry kind accepts is documented in that kind's section of the
//! reference: the keys come from the kinds' own block types, so a key added to a
//! block and left out of the docs fails here.

use std::path::Path;

/// docs/configuration.md, the reference of every key.
fn reference() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"))
        .unwrap()
}

/// The text of `heading` up to the next heading of its level or above.
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(heading)?;
    let rest = &text[start + heading.len()..];
    let end = rest
        .find("\n## ")
        .into_iter()
        .chain(rest.find("\n### "))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn every_key_of_every_registry_kind_is_documented_in_its_section() {
    let text = reference();
    let mut missing = Vec::new();
    for kind in registry_sync_sources::registry::KINDS {
        let Some(keys) = registry_sync_sources::registry::keys(kind) else {
            continue;
        };
        let Some(section) = section(&text, &format!("## The {kind} registry")) else {
            missing.push(format!("{kind}: no section \"## The {kind} registry\""));
            continue;
        };
        assert!(!keys.is_empty(), "{kind} has no keys");
        for key in keys {
            let documented = section.contains(&format!("{key}:")) || section.contains(&format!("`{key}`"));
            if !documented {
                missing.push(format!("{kind}.{key}"));
            }
        }
    }
    assert!(missing.is_empty(), "keys without documentation: {missing:?}");
}

#[test]
fn every_key_outside_the_registry_kinds_is_documented() {
    let text = reference();
    let mut missing = Vec::new();
    for (section, keys) in registry_sync::config::Config::keys() {
        assert!(!keys.is_empty(), "{section:?} has no keys");
        for key in keys {
            if !(text.contains(&format!("{key}:")) || text.contains(&format!("`{key}`"))) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(missing.is_empty(), "keys without documentation: {missing:?}");
}
