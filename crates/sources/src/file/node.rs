//! A loose YAML tree for one service at a time.
//!
//! serde stops at the first error, so a typed struct per service would turn one bad
//! instance into a failed file. Decoding each service into this tree first accepts
//! anything that is valid YAML; validation then rejects items one by one, with the line
//! of the offending node.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A YAML node with the location it was found at.
pub(super) type SNode = Spanned<Node>;

#[derive(Debug)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    /// A `!!binary` scalar: never valid in this format, kept only to be reported.
    Bytes,
    Seq(Vec<SNode>),
    /// Entries in document order; repeated keys are kept so they can be reported.
    Map(Vec<(SNode, SNode)>),
}

impl Node {
    /// How a reason names what was found instead of what was expected.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "nothing (null)",
            Node::Bool(_) => "true/false",
            Node::Int(_) | Node::UInt(_) => "a whole number",
            Node::Float(_) => "a decimal number",
            Node::Str(_) => "text",
            Node::Bytes => "binary data",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// The line an operator should look at for this node (for an alias, the alias itself).
pub(super) fn line(node: &SNode) -> u64 {
    node.referenced.line()
}

/// A scalar as it is written in the file.
///
/// YAML reads `version: 1.10` as the number 1.1; metadata must keep what the operator
/// wrote, so non-text scalars are taken from the source text whenever the span is known.
pub(super) fn scalar_text(source: &str, node: &SNode) -> Option<String> {
    let from_source = || {
        let span = node.defined.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        let raw = source.get(start..start.checked_add(len)?)?.trim();
        (!raw.is_empty()).then(|| raw.to_string())
    };
    match &node.value {
        Node::Str(s) => Some(s.clone()),
        Node::Bool(b) => Some(from_source().unwrap_or_else(|| b.to_string())),
        Node::Int(i) => Some(from_source().unwrap_or_else(|| i.to_string())),
        Node::UInt(u) => Some(from_source().unwrap_or_else(|| u.to_string())),
        Node::Float(f) => Some(from_source().unwrap_or_else(|| f.to_string())),
        Node::Null | Node::Bytes | Node::Seq(_) | Node::Map(_) => None,
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => Node::Int(i),
            (_, Ok(u)) => Node::UInt(u),
            // Only its source text matters: too large for any field here.
            _ => Node::Float(v as f64),
        })
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(u64::try_from(v).map_or(Node::Float(v as f64), Node::UInt))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}
