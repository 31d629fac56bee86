//! Request paths in one canonical form, so that what policy matches is what
//! the server routes.
//!
//! Servers disagree on paths: most decode `%2e` and remove `.`/`..`
//! segments, some merge `//`, some read `%2F` or `\` as a separator. An agent
//! that writes `/mcp/%2e%2e/admin` or `/v1//chat/completions/.` could make
//! the mesh match one path while the server routes another. So the proxy
//! forwards the canonical form it matched ([`normalize`]), and refuses the
//! spellings whose meaning depends on the server ([`PathError`]).
//!
//! Canonical form (RFC 3986 §6.2.2): percent-encoded unreserved characters
//! decoded, other escapes upper-cased, dot segments removed (§5.2.4), runs
//! of `/` merged.

/// A path whose meaning depends on the server reading it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} has a broken percent-escape")]
    BadEscape(String),
    #[error(
        "path {0:?} encodes a separator or control character (%2F, %5C, %00-%1F, %7F), \
         or has a backslash: servers disagree on what it names"
    )]
    Ambiguous(String),
    #[error("path {0:?} does not start with '/'")]
    NotAbsolute(String),
}

/// The canonical form of `path` (no query), or None when it already is.
pub fn normalize(path: &str) -> Result<Option<String>, PathError> {
    if path == "*" {
        // `OPTIONS *`.
        return Ok(None);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(path.to_owned()));
    }
    if path.contains('\\') {
        return Err(PathError::Ambiguous(path.to_owned()));
    }
    let bytes = path.as_bytes();
    let plain = !bytes.contains(&b'%')
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == "." || seg == "..");
    if plain {
        return Ok(None);
    }
    let decoded = decode_unreserved(path)?;
    let mut out = remove_dot_segments(&decoded);
    merge_slashes(&mut out);
    Ok((out != path).then_some(out))
}

/// Decodes escapes of unreserved characters, upper-cases the others, and
/// refuses escapes of separators and controls.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Everything outside escapes is copied as is; `path` is UTF-8.
            let next = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            return Err(PathError::BadEscape(path.to_owned()));
        };
        let (Some(h), Some(l)) = (hex(hi), hex(lo)) else {
            return Err(PathError::BadEscape(path.to_owned()));
        };
        let b = h << 4 | l;
        if b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f {
            return Err(PathError::Ambiguous(path.to_owned()));
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(hi.to_ascii_uppercase() as char);
            out.push(lo.to_ascii_uppercase() as char);
        }
        i += 3;
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §5.2.4 on an absolute path: `..` never climbs above the root.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path[1..].split('/').peekable();
    let mut trailing_slash = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(path: &mut String) {
    while let Some(at) = path.find("//") {
        path.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize(p).unwrap().unwrap_or_else(|| p.to_owned())
    }

    #[test]
    fn ordinary_paths_are_left_alone_without_allocating() {
        for p in [
            "/",
            "/mcp",
            "/v1/chat/completions",
            "/a/b.c/d~e",
            "*",
            "/a/.well-known/x",
        ] {
            assert_eq!(normalize(p).unwrap(), None, "{p}");
        }
    }

    #[test]
    fn dot_segments_and_escapes_take_the_form_servers_route() {
        assert_eq!(norm("/mcp/../admin"), "/admin");
        assert_eq!(norm("/mcp/%2e%2E/admin"), "/admin");
        assert_eq!(norm("/mcp/%2E/x"), "/mcp/x");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("/v1//chat/completions/."), "/v1/chat/completions/");
        assert_eq!(norm("/v1/chat/completions/x/.."), "/v1/chat/completions/");
        assert_eq!(norm("/%6Dcp"), "/mcp");
        assert_eq!(norm("/a%3ab"), "/a%3Ab");
        assert_eq!(norm("/a/%7e"), "/a/~");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("//x"), "/x");
        assert_eq!(norm("/caf%C3%A9"), "/caf%C3%A9");
    }

    #[test]
    fn spellings_servers_read_differently_are_refused() {
        for p in ["/mcp%2Fadmin", "/a%5cb", "/a\\b", "/a%00", "/a%0a", "/a%7F"] {
            assert!(matches!(normalize(p), Err(PathError::Ambiguous(_))), "{p}");
        }
        for p in ["/a%", "/a%2", "/a%zz", "/a%g0"] {
            assert!(matches!(normalize(p), Err(PathError::BadEscape(_))), "{p}");
        }
        assert!(matches!(normalize("mcp"), Err(PathError::NotAbsolute(_))));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for p in [
            "/mcp/%2e%2e/admin",
            "/v1//chat/./completions/..",
            "/a%3ab/%7e/",
        ] {
            let once = norm(p);
            assert_eq!(normalize(&once).unwrap(), None, "{p} -> {once}");
        }
    }
}
