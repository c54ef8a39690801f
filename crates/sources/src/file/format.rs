//! The `file` registry's YAML format, decoded in two layers.
//!
//! The outer layer (a mapping with one `services` list) is strict: if it is wrong, the
//! file as a whole is unusable and the last good state must be kept. The inner layer is
//! lenient: each service and instance is decoded into a loose tree and validated on its
//! own, so one typo skips one item with a reason and everything else keeps syncing.
//! Services are validated while the list is streamed, so only one service's loose tree
//! is in memory at a time, however large the estate.

use std::fmt;

use registry_sync_catalog::RegistrySnapshot;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::options::DuplicateKeyPolicy;
use serde_saphyr::{MessageFormatter, NonFiniteFloatPolicy, Spanned, UserMessageFormatter};

use super::items::Items;
use super::node::SNode;

/// Why a file could not be used at all.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unusable {
    /// Half-written files look like this; publishing them would delete every service.
    Empty,
    NotUtf8 {
        line: u64,
    },
    Yaml {
        line: Option<u64>,
        column: Option<u64>,
        message: String,
    },
}

/// Decodes a whole file. Item-level problems end up in the snapshot's `skipped`.
pub(super) fn parse(registry: &str, bytes: &[u8]) -> Result<RegistrySnapshot, Unusable> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let before = bytes.get(..e.valid_up_to()).unwrap_or_default();
        Unusable::NotUtf8 {
            line: count_lines(before),
        }
    })?;
    if text.trim_start_matches('\u{feff}').trim().is_empty() {
        return Err(Unusable::Empty);
    }
    let mut decoder = Decoder {
        items: Items::new(registry, text),
        top_level_error_at: first_content(text),
    };
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        DocumentSeed {
            decoder: &mut decoder,
        }
        .deserialize(de)
    })
    .map_err(|e| yaml_error(&e, decoder.top_level_error_at))?;
    Ok(decoder.items.into_snapshot())
}

/// Where the first node of the document starts, skipping comments, directives and
/// the document marker.
fn first_content(text: &str) -> Option<(u64, u64)> {
    text.lines().zip(1u64..).find_map(|(raw, number)| {
        let line = raw.trim_start_matches('\u{feff}');
        let content = line.trim_start();
        let content = content.strip_prefix("---").unwrap_or(content);
        let skip = content.trim().is_empty() || content.starts_with('#') || line.starts_with('%');
        let indent = line.len() - line.trim_start().len();
        (!skip).then(|| (number, u64::try_from(indent).unwrap_or(0).saturating_add(1)))
    })
}

fn count_lines(bytes: &[u8]) -> u64 {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    u64::try_from(newlines).unwrap_or(u64::MAX).saturating_add(1)
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // The defaults suit configuration files; a static estate of 100,000 instances
    // needs about fifteen nodes and events per instance.
    budget.max_nodes = 20_000_000;
    budget.max_events = 40_000_000;
    serde_saphyr::options! {
        budget: Some(budget),
        // Repeated keys reach the loose tree, so they skip one item instead of the file.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // `yes`, `on`, `007` and `1_000` stay text, as the operator most likely meant.
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        // `.inf` in one weight must skip one instance, not fail the file.
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
        with_snippet: false,
    }
}

fn yaml_error(error: &serde_saphyr::Error, fallback: Option<(u64, u64)>) -> Unusable {
    let location = error
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| (l.line(), l.column()))
        .or(fallback);
    let message: String = UserMessageFormatter
        .format_message(error.without_snippet())
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Unusable::Yaml {
        line: location.map(|(line, _)| line),
        column: location.map(|(_, column)| column),
        message,
    }
}

struct Decoder<'s> {
    items: Items<'s>,
    /// serde's custom errors carry no location; the top level records its own
    /// (line, column), starting with where the document's content begins.
    top_level_error_at: Option<(u64, u64)>,
}

struct DocumentSeed<'d, 's> {
    decoder: &'d mut Decoder<'s>,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping with a `services` list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        let mut last_key_at = None;
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            last_key_at = Some((key.referenced.line(), key.referenced.column()));
            if key.value != "services" {
                self.decoder.top_level_error_at = last_key_at;
                return Err(de::Error::custom(format_args!(
                    "unknown top-level key {:?}; the only top-level key is `services`",
                    key.value
                )));
            }
            if seen {
                self.decoder.top_level_error_at = last_key_at;
                return Err(de::Error::custom("the key `services` appears twice"));
            }
            seen = true;
            // Where an error about the list itself is reported.
            self.decoder.top_level_error_at = last_key_at;
            map.next_value_seed(ServicesSeed {
                decoder: &mut *self.decoder,
            })?;
        }
        if !seen {
            self.decoder.top_level_error_at = last_key_at.or(self.decoder.top_level_error_at);
            return Err(de::Error::custom(
                "there is no `services` list; write `services: []` to publish no services",
            ));
        }
        Ok(())
    }
}

struct ServicesSeed<'d, 's> {
    decoder: &'d mut Decoder<'s>,
}

impl<'de> DeserializeSeed<'de> for ServicesSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ServicesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of services")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(
            "`services` is empty; write `services: []` to publish no services",
        ))
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        while let Some(node) = seq.next_element::<SNode>()? {
            self.decoder.items.service(index, &node);
            index += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
