//! Globs of tool names, resource URIs, prompt names and models
//! (ARCHITECTURE.md 5.1): `*` matches any run of characters (including
//! none), `?` exactly one character; everything else is literal.
//!
//! Cgroup selectors (5.2) use the same globs on each `/`-separated segment of
//! a path, plus `**` for any number of segments: [`path_glob_matches`].
//!
//! Matching walks both strings once with a single backtrack point (the last
//! `*`), so it never allocates and runs in O(pattern × text) at worst.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

/// A validated glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob(Box<str>);

impl Glob {
    /// Checks `text`: not empty, no surrounding whitespace, no control
    /// characters, and `[` / `]` balanced. Brackets are literal in mesh
    /// globs; an unbalanced one is almost always a character class written
    /// by someone expecting shell globs, so it is refused rather than
    /// silently matched literally.
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("empty glob; expected a name or pattern such as \"get_*\"".into());
        }
        if text.trim() != text {
            return Err(format!("glob {text:?} has leading or trailing whitespace"));
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(format!(
                "glob {text:?} contains the control character {c:?}"
            ));
        }
        let mut depth = 0usize;
        for c in text.chars() {
            match c {
                '[' => depth += 1,
                ']' if depth == 0 => {
                    return Err(format!(
                        "glob {text:?} has a ']' without '[' (brackets are literal; only * and ? are special)"
                    ))
                }
                ']' => depth -= 1,
                _ => {}
            }
        }
        if depth != 0 {
            return Err(format!(
                "glob {text:?} has an unclosed '[' (brackets are literal; only * and ? are special)"
            ));
        }
        Ok(Glob(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, text: &str) -> bool {
        glob_matches(self.0.as_bytes(), text.as_bytes())
    }
}

/// Length of the UTF-8 sequence that starts with `lead`.
fn char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// `pattern` and `text` are valid UTF-8; positions in `text` only ever stop
/// on character boundaries (literal bytes match whole characters of the
/// pattern, `?` and backtracking step one whole character).
pub(super) fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // After the last `*` seen: where the pattern resumes, and where in the
    // text that `*`'s run currently ends.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                backtrack = Some((p, t));
                continue;
            }
            Some(b'?') => {
                p += 1;
                t = (t + char_len(text[t])).min(text.len());
                continue;
            }
            Some(&b) if b == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((resume, run_end)) => {
                // Let the last `*` swallow one more character and retry.
                let next = (run_end + char_len(text[run_end])).min(text.len());
                backtrack = Some((resume, next));
                p = resume;
                t = next;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether `path` (`/`-separated, with or without a leading `/`, as a cgroup
/// path relative to the cgroup root) matches `pattern`: each segment of the
/// pattern is a glob as above matched against one segment of the path (so
/// `*` and `?` never match a `/`), and a `**` segment matches any number of
/// segments (none included). Empty segments are ignored on both sides.
pub fn path_glob_matches(pattern: &str, path: &str) -> bool {
    fn segments(s: &str) -> Vec<&str> {
        s.split('/').filter(|seg| !seg.is_empty()).collect()
    }
    segments_match(&segments(pattern), &segments(path))
}

fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| segments_match(rest, &path[skip..])),
        Some((first, rest)) => path.split_first().is_some_and(|(segment, path_rest)| {
            glob_matches(first.as_bytes(), segment.as_bytes()) && segments_match(rest, path_rest)
        }),
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Glob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a glob string (* any run of characters, ? one character)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Glob, E> {
                Glob::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl schemars::JsonSchema for Glob {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Glob".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "A glob: * matches any run of characters (including none), ? one character; everything else is literal ([ and ] must be balanced)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        match Glob::parse(pattern) {
            Ok(g) => g.matches(text),
            Err(e) => panic!("{pattern}: {e}"),
        }
    }

    #[test]
    fn glob_literal_star_and_question_mark() {
        assert!(m("get_ticket", "get_ticket"));
        assert!(!m("get_ticket", "get_tickets"));
        assert!(!m("get_ticket", "get_ticke"));
        assert!(m("get_*", "get_"));
        assert!(m("get_*", "get_ticket"));
        assert!(!m("get_*", "list_tickets"));
        assert!(m("*", ""));
        assert!(m("*", "anything at all"));
        assert!(m("*_ticket", "comment_ticket"));
        assert!(!m("*_ticket", "comment_tickets"));
        assert!(m("a*b*c", "a-b-b-c"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "a-c-b"));
        assert!(m("a**b", "ab"));
        assert!(m("*a*a*a*b", "aaaaaaaaaaaaaab"));
        assert!(!m("*a*a*a*b", "aaaaaaaaaaaaaaa"));
        assert!(m("v?", "v1"));
        assert!(!m("v?", "v"));
        assert!(!m("v?", "v12"));
        assert!(m("gpt-4o*", "gpt-4o-mini"));
        assert!(m("ticket://*", "ticket://42"));
        assert!(!m("ticket://*", "tickets://42"));
        // Literal brackets, case sensitive.
        assert!(m("a[1]", "a[1]"));
        assert!(!m("a[1]", "a1"));
        assert!(!m("Get_*", "get_x"));
    }

    #[test]
    fn glob_question_mark_is_one_character_not_one_byte() {
        assert!(m("caf?", "café"));
        assert!(m("?", "é"));
        assert!(!m("??", "é"));
        assert!(m("*é", "ééé"));
        assert!(m("é*?", "éé"));
        assert!(!m("x?", "x"));
    }

    #[test]
    fn glob_invalid_patterns() {
        let err = |p: &str| Glob::parse(p).err().unwrap_or_default();
        assert_eq!(
            err(""),
            "empty glob; expected a name or pattern such as \"get_*\""
        );
        assert_eq!(
            err("get_[a"),
            "glob \"get_[a\" has an unclosed '[' (brackets are literal; only * and ? are special)"
        );
        assert_eq!(
            err("a]"),
            "glob \"a]\" has a ']' without '[' (brackets are literal; only * and ? are special)"
        );
        assert_eq!(err(" a"), "glob \" a\" has leading or trailing whitespace");
        assert_eq!(
            err("a\tb"),
            "glob \"a\\tb\" contains the control character '\\t'"
        );
        assert!(Glob::parse("[ok]").is_ok());
    }

    #[test]
    fn path_glob_question_mark_is_one_character_within_one_segment() {
        let m = path_glob_matches;
        assert!(m("/t/sel-?", "t/sel-1"));
        assert!(m("/t/sel-?", "t/sel-é"));
        assert!(!m("/t/sel-??", "t/sel-é"));
        assert!(!m("/t/sel-?", "t/sel-12"));
        assert!(!m("/t/sel?x", "t/sel/x"));
        assert!(!m("/t/*", "t/x/y"));
        assert!(m("/t/**/sel-?", "t/a/b/sel-é"));
        assert!(m("/a/**", "a"));
    }
}
