//! YAML plumbing shared by policy files and the daemon config: located
//! errors, strict multi-document parsing, and finding where a key's value is.
//!
//! serde_yaml_ng attaches a position to an error only when the error is raised
//! inside one of its `deserialize_*` calls, so every validating type in this
//! crate checks its input inside a `Visitor` (see `model.rs`, `egress.rs`).
//! Two further quirks are handled here:
//! - after a syntax error its document iterator yields the same error forever,
//!   so a first pass walks the documents untyped and stops at the first one;
//! - serde's derive reports a duplicate key at the start of the mapping, so the
//!   first pass also detects duplicate keys itself, at the key.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer as _, Visitor};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// A problem at a place in a YAML text (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses every document of `text` as `T`. Empty documents (nothing, or only
/// comments, or `~`) come back as `None` so that the caller decides whether an
/// empty file is acceptable. Errors of all documents are collected; a syntax
/// error ends the file (the parser cannot resynchronise after one).
pub fn documents<T: DeserializeOwned>(text: &str) -> Vec<(usize, Result<Option<T>, YamlError>)> {
    let text = without_bom(text);
    let (clean, syntax_error) = check_syntax(text);
    let mut out = Vec::with_capacity(clean + 1);
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text)
        .take(clean)
        .enumerate()
    {
        let parsed =
            <Option<T> as serde::Deserialize>::deserialize(doc).map_err(|e| convert(&e, None));
        out.push((index, parsed));
    }
    if let Some(err) = syntax_error {
        out.push((clean, Err(err)));
    }
    out
}

/// Location (1-based line, column) of the value of the top-level `key` in
/// document `doc_index` of `text`, if the key is there. Used to point at a
/// value that was parsed fine but conflicts with something else.
pub fn locate_key(text: &str, doc_index: usize, key: &str) -> Option<(usize, usize)> {
    let doc = serde_yaml_ng::Deserializer::from_str(without_bom(text)).nth(doc_index)?;
    match doc.deserialize_map(LocateVisitor { key }) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| (l.line(), l.column())),
    }
}

/// One step of a path into a YAML document: a mapping key or a sequence index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Location (1-based line, column) of the value at `path` in document
/// `doc_index` of `text`, if it is there. For checks that relate several
/// values and so run after parsing (duplicate names, cross-field limits).
pub(crate) fn locate(text: &str, doc_index: usize, path: &[Seg<'_>]) -> Option<(usize, usize)> {
    let doc = serde_yaml_ng::Deserializer::from_str(without_bom(text)).nth(doc_index)?;
    match (LocatePath { path }).deserialize(doc) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| (l.line(), l.column())),
    }
}

/// Descends along `path`, then fails on the value there on purpose: the
/// failure carries the value's position.
struct LocatePath<'p, 'a> {
    path: &'p [Seg<'a>],
}

impl<'de> DeserializeSeed<'de> for LocatePath<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.first() {
            None => Fail.deserialize(d),
            Some(Seg::Key(_)) => d.deserialize_map(self),
            Some(Seg::Index(_)) => d.deserialize_seq(self),
        }
    }
}

impl<'de> Visitor<'de> for LocatePath<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping or sequence (locating a value)")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(key), rest)) = self.path.split_first() else {
            return Ok(());
        };
        while let Some(k) = map.next_key::<serde_yaml_ng::Value>()? {
            if k.as_str() == Some(*key) {
                return map.next_value_seed(LocatePath { path: rest });
            }
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(index), rest)) = self.path.split_first() else {
            return Ok(());
        };
        for _ in 0..*index {
            if seq.next_element::<de::IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(LocatePath { path: rest })?;
        Ok(())
    }
}

/// Editors on some systems start files with a byte order mark, which the
/// parser would take as content.
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Turns a serde_yaml_ng error into a located message without the crate's
/// own " at line L column C" decoration and without its path prefix (the
/// location already says where).
fn convert(e: &serde_yaml_ng::Error, own_message: Option<String>) -> YamlError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    if let Some(message) = own_message {
        return YamlError {
            line,
            column,
            message,
        };
    }
    let mut message = e.to_string();
    let decoration = format!(" at line {line} column {column}");
    if let Some(at) = message.find(&decoration) {
        message.replace_range(at..at + decoration.len(), "");
    }
    YamlError {
        line,
        column,
        message: strip_path(message),
    }
}

/// serde_yaml_ng prefixes messages with the path of the value
/// (`egress.allow[1]: ...`, `prices.gpt-4o.input: ...`). A path has no
/// whitespace or quotes, unlike the start of every message of ours and serde's.
fn strip_path(message: String) -> String {
    if let Some((prefix, rest)) = message.split_once(": ") {
        let is_path = !prefix.is_empty()
            && !prefix
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '"' | '`' | '\''));
        if is_path {
            return rest.to_owned();
        }
    }
    message
}

/// First pass: how many leading documents are syntactically clean, and the
/// error that stopped the scan (syntax error or duplicate key), if any.
fn check_syntax(text: &str) -> (usize, Option<YamlError>) {
    let mut clean = 0;
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let dup = RefCell::new(None);
        match (Walk { dup: &dup }).deserialize(doc) {
            Ok(()) => clean += 1,
            Err(e) => {
                let own = dup.into_inner();
                let mut err = convert(&e, own.clone());
                if own.is_none() {
                    err.message = format!("YAML syntax error: {}", err.message);
                }
                return (clean, Some(err));
            }
        }
    }
    (clean, None)
}

/// Walks any YAML value, failing at the first repeated key of a mapping.
/// `dup` carries our own message out, free of the crate's path prefix.
#[derive(Clone, Copy)]
struct Walk<'a> {
    dup: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while map
            .next_key_seed(Key {
                walk: self,
                seen: &mut seen,
            })?
            .is_some()
        {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag value`): walk the value.
        use de::VariantAccess;
        let (_, variant) = data.variant::<de::IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }
}

/// A mapping key: remembered, and refused when seen before in the same mapping.
struct Key<'a, 'b> {
    walk: Walk<'a>,
    seen: &'b mut HashSet<String>,
}

impl Key<'_, '_> {
    fn check<E: de::Error>(self, key: String) -> Result<(), E> {
        if self.seen.contains(&key) {
            let message = format!("duplicate key `{key}`: each key may appear once in a mapping");
            *self.walk.dup.borrow_mut() = Some(message.clone());
            return Err(E::custom(message));
        }
        self.seen.insert(key);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.check(v.to_owned())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.check(String::from_utf8_lossy(v).into_owned())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.check("null".to_owned())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.check("null".to_owned())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self.walk)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.walk.visit_seq(seq)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.walk.visit_map(map)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        self.walk.visit_enum(data)
    }
}

/// Skips the document's top-level entries until `key`, then fails on its
/// value on purpose: the failure carries the value's position.
struct LocateVisitor<'k> {
    key: &'k str,
}

impl<'de> Visitor<'de> for LocateVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<serde_yaml_ng::Value>()? {
            if k.as_str() == Some(self.key) {
                return map.next_value_seed(Fail);
            }
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Refuses whatever it is given (every `visit_*` keeps serde's default error).
struct Fail;

impl<'de> DeserializeSeed<'de> for Fail {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fail {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("nothing (locating a value)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        a: u32,
    }

    #[test]
    fn yaml_syntax_error_stops_the_file_after_good_documents() {
        let docs = documents::<Doc>("a: 1\n---\na: 2\n\tb: 3\n");
        assert_eq!(docs.len(), 2);
        assert!(docs[0].1.is_ok());
        let err = docs[1].1.as_ref().err().cloned();
        assert_eq!(
            err,
            Some(YamlError {
                line: 4,
                column: 1,
                message: "YAML syntax error: found a tab character that violates indentation, \
                          while scanning a plain scalar at line 3 column 4"
                    .into()
            })
        );
    }

    #[test]
    fn yaml_duplicate_key_is_reported_at_the_key() {
        let docs = documents::<Doc>("a: 1\nx:\n  y: 1\n  y: 2\n");
        let err = docs[0].1.as_ref().err().cloned();
        assert_eq!(
            err,
            Some(YamlError {
                line: 4,
                column: 3,
                message: "duplicate key `y`: each key may appear once in a mapping".into()
            })
        );
    }

    #[test]
    fn yaml_locate_key_finds_value_in_nth_document() {
        let text = "a: 1\n---\nb: 2\na:   [3]\n";
        assert_eq!(locate_key(text, 0, "a"), Some((1, 4)));
        assert_eq!(locate_key(text, 1, "a"), Some((4, 6)));
        assert_eq!(locate_key(text, 1, "c"), None);
    }

    #[test]
    fn yaml_locate_path_finds_nested_values() {
        let text = "a: 1\n---\nmcp:\n  - server: x\n  - { server: y, when: [a, 'b'] }\n";
        let at = |path: &[Seg]| locate(text, 1, path);
        assert_eq!(at(&[Seg::Key("mcp")]), Some((4, 3)));
        assert_eq!(
            at(&[Seg::Key("mcp"), Seg::Index(1), Seg::Key("server")]),
            Some((5, 15))
        );
        assert_eq!(
            at(&[
                Seg::Key("mcp"),
                Seg::Index(1),
                Seg::Key("when"),
                Seg::Index(1)
            ]),
            Some((5, 28))
        );
        assert_eq!(at(&[Seg::Key("mcp"), Seg::Index(2)]), None);
        assert_eq!(at(&[Seg::Key("nope")]), None);
    }

    #[test]
    fn yaml_byte_order_mark_is_ignored() {
        let docs = documents::<Doc>("\u{feff}a: 1\n");
        assert!(
            matches!(docs.as_slice(), [(0, Ok(Some(Doc { a: 1 })))]),
            "{docs:?}"
        );
        assert_eq!(locate_key("\u{feff}a: 1\n", 0, "a"), Some((1, 4)));
    }

    #[test]
    fn yaml_empty_documents_are_none() {
        let docs = documents::<Doc>("# nothing\n");
        assert_eq!(docs.len(), 1);
        assert!(matches!(docs[0].1, Ok(None)));
    }
}
