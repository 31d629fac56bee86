//! Incremental Server-Sent Events parser, after the WHATWG HTML "event stream
//! interpretation" algorithm.
//!
//! MCP Streamable HTTP, A2A streaming and every LLM provider's streaming API
//! answer with `text/event-stream`. The proxy relays those bytes as they come
//! and feeds each chunk here, so the parser must accept any split (inside a
//! UTF-8 sequence, between `\r` and `\n`), hold at most one event, and reuse
//! its buffers so a long stream costs no allocation per event.
//!
//! Where this parser differs from a browser's `EventSource`: invalid UTF-8 in a
//! field is an error ([`SseError::InvalidUtf8`]) instead of being replaced with
//! U+FFFD, because the daemon must not make decisions on text it had to guess;
//! and one event is bounded ([`SseError::EventTooLarge`]) so a hostile stream
//! cannot make the daemon buffer without end.
//!
//! [`SseEventSplitter`] and [`replace_event_data`] frame a stream into whole
//! raw events without interpreting them, so that the proxy can hold, cut or
//! rewrite one event while the others pass byte for byte.
use memchr::{memchr, memchr2};

/// The UTF-8 byte order mark, skipped once at the start of a stream.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One dispatched event. Borrows the parser's buffers: copy what must outlive
/// the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// `event:` field; None means the default type "message".
    pub event: Option<&'a str>,
    /// data lines joined with '\n' (no trailing newline); "" for a `data:` line with no value.
    pub data: &'a str,
    /// The event's own `id:` field if it had one (Some("") resets).
    pub id: Option<&'a str>,
    /// `retry:` in ms if the event set one (valid integer only).
    pub retry: Option<u64>,
}

/// Why a stream could not be parsed. Once [`SseParser::feed`] has returned an
/// error the parser is poisoned: every later `feed` returns the same error,
/// because the position in the stream is no longer known.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SseError {
    #[error("server-sent event larger than the {limit}-byte limit")]
    EventTooLarge { limit: usize },
    #[error("server-sent event field is not valid UTF-8")]
    InvalidUtf8,
}

/// Progress through the optional leading byte order mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BomState {
    /// This many bytes of the BOM were seen at the start of the stream so far.
    Matched(usize),
    /// Past the start of the stream: no BOM can follow.
    Done,
}

/// Incremental SSE parser. Feed it chunks with [`SseParser::feed`]; it calls
/// back for every complete event.
#[derive(Debug)]
pub struct SseParser {
    /// Limit on the bytes held for one event: its data, event type, id and the
    /// unfinished line (field names and `data: ` prefixes of that line count).
    max_event_bytes: usize,
    /// The unfinished line, when a chunk ended inside one.
    line: Vec<u8>,
    /// Data lines of the pending event, joined with '\n'.
    data: String,
    /// Whether the pending event had a `data` line (even an empty one): that,
    /// not a non-empty `data`, is what makes a blank line dispatch.
    has_data: bool,
    /// `event:` of the pending event; empty means "message".
    event_type: String,
    /// `id:` of the pending event, valid when `has_event_id`.
    event_id: String,
    has_event_id: bool,
    /// `retry:` of the pending event.
    retry: Option<u64>,
    /// The last event ID string: set when an event ends (a blank line) that
    /// carried an `id:`, kept across events.
    last_event_id: String,
    bom: BomState,
    /// The previous chunk ended with '\r': a '\n' starting the next chunk ends
    /// the same line, not another one.
    after_cr: bool,
    comments: u64,
    events: u64,
    /// Set by the first error; see [`SseError`].
    failed: Option<SseError>,
}

impl SseParser {
    /// A parser that refuses events holding more than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event_type: String::new(),
            event_id: String::new(),
            has_event_id: false,
            retry: None,
            last_event_id: String::new(),
            bom: BomState::Matched(0),
            after_cr: false,
            comments: 0,
            events: 0,
            failed: None,
        }
    }

    /// Feed the next chunk of the stream (any split, including in the middle of a
    /// UTF-8 sequence or between \r and \n). Calls `on_event` for every complete event.
    ///
    /// On error, events completed earlier in the same chunk have already been
    /// delivered, and the parser is poisoned (see [`SseError`]).
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(&SseEvent<'_>),
    ) -> Result<(), SseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.feed_chunk(chunk, &mut on_event);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// The stream ended: per spec an incomplete trailing event is discarded. Returns true if
    /// bytes of an unfinished event were pending (so the caller can say the stream was cut).
    ///
    /// The parser is ready for a new stream afterwards (the last event ID and
    /// the counters are kept, as a reconnecting client keeps them).
    pub fn finish(&mut self) -> bool {
        let pending = !self.line.is_empty()
            || self.has_data
            || !self.event_type.is_empty()
            || self.has_event_id
            || self.retry.is_some()
            || matches!(self.bom, BomState::Matched(n) if n > 0);
        self.line.clear();
        self.reset_event();
        self.bom = BomState::Matched(0);
        self.after_cr = false;
        self.failed = None;
        pending
    }

    /// Last event ID seen (persists across events, as the spec says).
    ///
    /// None until an event carrying an `id:` has ended, and after an event
    /// reset it with an empty `id:` (there is then no ID to resume from).
    pub fn last_event_id(&self) -> Option<&str> {
        (!self.last_event_id.is_empty()).then_some(self.last_event_id.as_str())
    }

    /// Comment lines seen (`:` lines, e.g. keep-alives).
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Events dispatched.
    pub fn events(&self) -> u64 {
        self.events
    }

    fn feed_chunk(
        &mut self,
        chunk: &[u8],
        on_event: &mut dyn FnMut(&SseEvent<'_>),
    ) -> Result<(), SseError> {
        let mut rest = self.skip_bom(chunk)?;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some((b'\n', after)) = rest.split_first() {
                rest = after;
            }
        }
        while !rest.is_empty() {
            let Some(end) = memchr2(b'\r', b'\n', rest) else {
                // No line end in what is left: keep it for the next chunk.
                self.ensure_room(self.line.len() + rest.len())?;
                self.line.extend_from_slice(rest);
                return Ok(());
            };
            let (content, terminator_and_after) = rest.split_at(end);
            let Some((&terminator, after)) = terminator_and_after.split_first() else {
                // Unreachable: memchr2 found a byte at `end`.
                return Ok(());
            };
            rest = after;
            if terminator == b'\r' {
                match rest.split_first() {
                    Some((b'\n', after_lf)) => rest = after_lf,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                // The whole line is in this chunk: no copy.
                self.process_line(content, on_event)?;
            } else {
                self.ensure_room(self.line.len() + content.len())?;
                self.line.extend_from_slice(content);
                // Taken out and put back so its capacity is reused.
                let line = std::mem::take(&mut self.line);
                let result = self.process_line(&line, on_event);
                self.line = line;
                self.line.clear();
                result?;
            }
        }
        Ok(())
    }

    /// Skips the byte order mark at the very start of the stream, which may
    /// arrive split over chunks. Bytes that looked like its start but were not
    /// are kept as the beginning of the first line.
    fn skip_bom<'c>(&mut self, chunk: &'c [u8]) -> Result<&'c [u8], SseError> {
        let BomState::Matched(mut matched) = self.bom else {
            return Ok(chunk);
        };
        let mut rest = chunk;
        while matched < BOM.len() {
            match rest.split_first() {
                None => {
                    self.bom = BomState::Matched(matched);
                    return Ok(rest);
                }
                Some((&byte, after)) if Some(&byte) == BOM.get(matched) => {
                    matched += 1;
                    rest = after;
                }
                Some(_) => {
                    self.bom = BomState::Done;
                    let seen = BOM.get(..matched).unwrap_or_default();
                    self.ensure_room(seen.len())?;
                    self.line.extend_from_slice(seen);
                    return Ok(rest);
                }
            }
        }
        self.bom = BomState::Done;
        Ok(rest)
    }

    /// Bytes held for the pending event, besides the unfinished line.
    fn held(&self) -> usize {
        self.data.len() + self.event_type.len() + self.event_id.len()
    }

    /// Refuses to hold `additional` more bytes if that passes the limit.
    fn ensure_room(&self, additional: usize) -> Result<(), SseError> {
        if self.held().saturating_add(additional) > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// One complete line, without its line end.
    fn process_line(
        &mut self,
        line: &[u8],
        on_event: &mut dyn FnMut(&SseEvent<'_>),
    ) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line.first() == Some(&b':') {
            // Comments are not decoded: they carry nothing the daemon reads.
            self.comments += 1;
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (name, value) = match memchr(b':', line.as_bytes()) {
            Some(colon) => {
                let (name, colon_and_value) = line.split_at(colon);
                let value = colon_and_value.get(1..).unwrap_or_default();
                (name, value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match name {
            "event" => {
                self.ensure_room(value.len().saturating_sub(self.event_type.len()))?;
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "data" => {
                let separator = usize::from(self.has_data);
                self.ensure_room(separator + value.len())?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // An id with NUL is ignored (it could not be sent back in a header).
            "id" if !value.contains('\0') => {
                self.ensure_room(value.len().saturating_sub(self.event_id.len()))?;
                self.event_id.clear();
                self.event_id.push_str(value);
                self.has_event_id = true;
            }
            // Only ASCII digits; too many for a u64 is not a valid integer either.
            "retry" if value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A blank line: the pending event ends, and is dispatched if it had data.
    fn dispatch(&mut self, on_event: &mut dyn FnMut(&SseEvent<'_>)) {
        if self.has_event_id {
            self.last_event_id.clear();
            self.last_event_id.push_str(&self.event_id);
        }
        if self.has_data {
            self.events += 1;
            let event = SseEvent {
                event: (!self.event_type.is_empty()).then_some(self.event_type.as_str()),
                data: &self.data,
                id: self.has_event_id.then_some(self.event_id.as_str()),
                retry: self.retry,
            };
            on_event(&event);
        }
        self.reset_event();
    }

    /// Forgets the pending event, keeping buffer capacity.
    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event_type.clear();
        self.event_id.clear();
        self.has_event_id = false;
        self.retry = None;
    }
}

/// Splits a byte stream of server-sent events into whole events (each with
/// the blank line that ends it), so that one can be replaced while the
/// others are passed as they came. Bytes are held only until their event
/// ends.
#[derive(Debug, Default)]
pub struct SseEventSplitter {
    buf: Vec<u8>,
    /// Where the scan for the end of the current event resumes.
    scanned: usize,
    /// The last byte scanned ended a line (or the stream just started).
    at_line_start: bool,
    started: bool,
}

impl SseEventSplitter {
    pub fn new() -> SseEventSplitter {
        SseEventSplitter {
            at_line_start: true,
            ..SseEventSplitter::default()
        }
    }

    /// Adds bytes; calls `on_event` with each event completed by them.
    pub fn push(&mut self, data: &[u8], mut on_event: impl FnMut(&[u8])) {
        self.started = true;
        self.buf.extend_from_slice(data);
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buf.len() {
            match self.buf[i] {
                b'\n' | b'\r' => {
                    let crlf = self.buf[i] == b'\r' && self.buf.get(i + 1) == Some(&b'\n');
                    if self.buf[i] == b'\r' && i + 1 == self.buf.len() {
                        // A lone '\r' at the end: wait for the next byte to
                        // know whether '\n' follows.
                        break;
                    }
                    let end = if crlf { i + 2 } else { i + 1 };
                    if self.at_line_start {
                        // A blank line: the event ends here.
                        on_event(&self.buf[start..end]);
                        start = end;
                    }
                    self.at_line_start = true;
                    i = end;
                }
                _ => {
                    self.at_line_start = false;
                    i += 1;
                }
            }
        }
        self.buf.drain(..start);
        self.scanned = i - start;
    }

    /// The stream ended: whatever is held (an unfinished event).
    pub fn finish(&mut self) -> Vec<u8> {
        self.scanned = 0;
        self.at_line_start = true;
        std::mem::take(&mut self.buf)
    }

    /// Bytes held for an unfinished event.
    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

/// Rewrites one raw SSE event so that its data is `data` (one line): every
/// other line (`event:`, `id:`, `retry:`, comments) is kept as it was, the
/// first `data` line is replaced and the other `data` lines dropped.
pub fn replace_event_data(event: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + data.len());
    let mut replaced = false;
    for line in raw_lines(event) {
        let content = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .or_else(|| line.strip_suffix(b"\r"))
            .unwrap_or(line);
        let field = content
            .iter()
            .position(|&b| b == b':')
            .map_or(content, |p| &content[..p]);
        if field == b"data" {
            if !replaced {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(data);
                out.push(b'\n');
                replaced = true;
            }
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Lines with their terminators (`\r\n`, `\n` or `\r`).
fn raw_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(p) if rest[p] == b'\r' && rest.get(p + 1) == Some(&b'\n') => p + 2,
            Some(p) => p + 1,
            None => rest.len(),
        };
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned copy of an [`SseEvent`], to compare after the callback.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Owned {
        event: Option<String>,
        data: String,
        id: Option<String>,
        retry: Option<u64>,
    }

    impl From<&SseEvent<'_>> for Owned {
        fn from(e: &SseEvent<'_>) -> Self {
            Owned {
                event: e.event.map(str::to_owned),
                data: e.data.to_owned(),
                id: e.id.map(str::to_owned),
                retry: e.retry,
            }
        }
    }

    fn ev(event: Option<&str>, data: &str, id: Option<&str>, retry: Option<u64>) -> Owned {
        Owned {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
            retry,
        }
    }

    /// Feeds `chunks` in order; returns the events, and the result of the
    /// first failing feed.
    fn parse_chunks(
        parser: &mut SseParser,
        chunks: &[&[u8]],
    ) -> (Vec<Owned>, Result<(), SseError>) {
        let mut events = Vec::new();
        for chunk in chunks {
            if let Err(e) = parser.feed(chunk, |e| events.push(Owned::from(e))) {
                return (events, Err(e));
            }
        }
        (events, Ok(()))
    }

    fn parse(input: &[u8]) -> Vec<Owned> {
        let mut parser = SseParser::new(1 << 16);
        let (events, result) = parse_chunks(&mut parser, &[input]);
        assert_eq!(result, Ok(()));
        events
    }

    /// Every field kind, every line end, a BOM, comments and a multi-byte
    /// character, so the split tests cross all of them.
    const STREAM: &[u8] = b"\xEF\xBB\xBF: keep-alive\r\n\
        id: 1\r\n\
        data:\r\n\
        \r\n\
        event: message\n\
        data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\
        retry: 1500\n\
        \n\
        event:progress\r\
        data: first\r\
        data:  second \xC3\xA9\xF0\x9F\x98\x80\r\
        id: 2\r\
        \r\
        :ping\n\
        data: no type\n\
        \n\
        id\n\
        data\n\
        \r\n";

    fn stream_events() -> Vec<Owned> {
        vec![
            ev(None, "", Some("1"), None),
            ev(
                Some("message"),
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}",
                None,
                Some(1500),
            ),
            ev(
                Some("progress"),
                "first\n second \u{e9}\u{1F600}",
                Some("2"),
                None,
            ),
            ev(None, "no type", None, None),
            ev(None, "", Some(""), None),
        ]
    }

    #[test]
    fn whole_stream() {
        let mut parser = SseParser::new(1 << 16);
        let (events, result) = parse_chunks(&mut parser, &[STREAM]);
        assert_eq!(result, Ok(()));
        assert_eq!(events, stream_events());
        assert_eq!(parser.events(), 5);
        assert_eq!(parser.comments(), 2);
        // The last event reset the ID with an empty `id`.
        assert_eq!(parser.last_event_id(), None);
        assert!(!parser.finish());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let expected = stream_events();
        for split in 0..=STREAM.len() {
            let (first, second) = STREAM.split_at(split);
            let mut parser = SseParser::new(1 << 16);
            let (events, result) = parse_chunks(&mut parser, &[first, second]);
            assert_eq!(result, Ok(()), "split at {split}");
            assert_eq!(events, expected, "split at {split}");
            assert_eq!(parser.comments(), 2, "split at {split}");
            assert!(!parser.finish(), "split at {split}");
        }
    }

    #[test]
    fn every_pair_of_split_points_gives_the_same_events() {
        let expected = stream_events();
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                let mut parser = SseParser::new(1 << 16);
                let chunks = [&STREAM[..a], &STREAM[a..b], &STREAM[b..]];
                let (events, result) = parse_chunks(&mut parser, &chunks);
                assert_eq!(result, Ok(()), "split at {a}, {b}");
                assert_eq!(events, expected, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte_gives_the_same_events() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        let mut parser = SseParser::new(1 << 16);
        let (events, result) = parse_chunks(&mut parser, &chunks);
        assert_eq!(result, Ok(()));
        assert_eq!(events, stream_events());
        assert_eq!(parser.comments(), 2);
        assert_eq!(parser.events(), 5);
    }

    #[test]
    fn empty_chunks_change_nothing() {
        let mut parser = SseParser::new(1 << 16);
        let (events, result) = parse_chunks(
            &mut parser,
            &[b"", b"data: a\r", b"", b"\n", b"", b"\n", b""],
        );
        assert_eq!(result, Ok(()));
        assert_eq!(events, vec![ev(None, "a", None, None)]);
    }

    #[test]
    fn line_ends_cr_lf_crlf() {
        let expected = vec![ev(None, "a\nb", None, None)];
        assert_eq!(parse(b"data: a\ndata: b\n\n"), expected);
        assert_eq!(parse(b"data: a\rdata: b\r\r"), expected);
        assert_eq!(parse(b"data: a\r\ndata: b\r\n\r\n"), expected);
        assert_eq!(parse(b"data: a\r\ndata: b\r\r\n"), expected);
        // "\n\r" is two line ends: the second ends the event.
        assert_eq!(parse(b"data: a\ndata: b\n\r"), expected);
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end() {
        let mut parser = SseParser::new(1 << 16);
        // Were "\r" + "\n" two line ends, "data: a" would dispatch alone.
        let (events, result) =
            parse_chunks(&mut parser, &[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(result, Ok(()));
        assert_eq!(events, vec![ev(None, "a\nb", None, None)]);
    }

    #[test]
    fn bom_only_skipped_at_start() {
        assert_eq!(
            parse(b"\xEF\xBB\xBFdata: x\n\n"),
            vec![ev(None, "x", None, None)]
        );
        // A second BOM is part of the field name, which is then unknown.
        assert_eq!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"), vec![]);
        // A BOM split over chunks.
        let mut parser = SseParser::new(1 << 16);
        let (events, result) =
            parse_chunks(&mut parser, &[b"\xEF", b"\xBB", b"\xBF", b"data: y\n\n"]);
        assert_eq!(result, Ok(()));
        assert_eq!(events, vec![ev(None, "y", None, None)]);
    }

    #[test]
    fn partial_bom_is_kept_as_line_bytes() {
        // "\xEF\xBB" then "d": not a BOM, and not UTF-8 either.
        let mut parser = SseParser::new(1 << 16);
        let (events, result) = parse_chunks(&mut parser, &[b"\xEF\xBB", b"data: y\n\n"]);
        assert_eq!(events, vec![]);
        assert_eq!(result, Err(SseError::InvalidUtf8));
    }

    #[test]
    fn comments_are_counted_not_dispatched() {
        let mut parser = SseParser::new(1 << 16);
        let (events, result) = parse_chunks(&mut parser, &[b": ping\n\n:\n\n: ping\n\n"]);
        assert_eq!(result, Ok(()));
        assert!(events.is_empty());
        assert_eq!(parser.comments(), 3);
        assert_eq!(parser.events(), 0);
    }

    #[test]
    fn field_value_parsing() {
        // One leading space stripped, not two; no space is fine.
        assert_eq!(parse(b"data:  two\n\n"), vec![ev(None, " two", None, None)]);
        assert_eq!(parse(b"data:x\n\n"), vec![ev(None, "x", None, None)]);
        // Only the first colon separates.
        assert_eq!(
            parse(b"data: a:b: c\n\n"),
            vec![ev(None, "a:b: c", None, None)]
        );
        // A line without colon is a field with an empty value.
        assert_eq!(parse(b"data\ndata\n\n"), vec![ev(None, "\n", None, None)]);
        // Unknown fields and names differing in case are ignored.
        assert_eq!(
            parse(b"foo: bar\nDATA: x\ndata: y\n\n"),
            vec![ev(None, "y", None, None)]
        );
        // An empty `event:` means the default type.
        assert_eq!(
            parse(b"event:\ndata: x\n\n"),
            vec![ev(None, "x", None, None)]
        );
        // The last `event:` wins.
        assert_eq!(
            parse(b"event: a\nevent: b\ndata: x\n\n"),
            vec![ev(Some("b"), "x", None, None)]
        );
    }

    #[test]
    fn retry_only_when_an_integer() {
        assert_eq!(
            parse(b"retry: 3000\ndata: x\n\n"),
            vec![ev(None, "x", None, Some(3000))]
        );
        for bad in [
            &b"retry: 3s\ndata: x\n\n"[..],
            b"retry: -1\ndata: x\n\n",
            b"retry:\ndata: x\n\n",
            b"retry:  30\ndata: x\n\n",
            b"retry: 99999999999999999999999\ndata: x\n\n",
        ] {
            assert_eq!(parse(bad), vec![ev(None, "x", None, None)]);
        }
        // Per event: not carried over to the next.
        assert_eq!(
            parse(b"retry: 10\ndata: a\n\ndata: b\n\n"),
            vec![ev(None, "a", None, Some(10)), ev(None, "b", None, None)]
        );
    }

    #[test]
    fn priming_event_and_id_only_blocks() {
        let mut parser = SseParser::new(1 << 16);
        // MCP priming event: an id and an empty data line.
        let (events, _) = parse_chunks(&mut parser, &[b"id: prime-1\ndata:\n\n"]);
        assert_eq!(events, vec![ev(None, "", Some("prime-1"), None)]);
        assert_eq!(parser.last_event_id(), Some("prime-1"));

        // An id without data dispatches nothing but moves the last event ID.
        let (events, _) = parse_chunks(&mut parser, &[b"id: x\n\n"]);
        assert!(events.is_empty());
        assert_eq!(parser.last_event_id(), Some("x"));

        // An event without id keeps the last event ID, and has no own id.
        let (events, _) = parse_chunks(&mut parser, &[b"data: y\n\n"]);
        assert_eq!(events, vec![ev(None, "y", None, None)]);
        assert_eq!(parser.last_event_id(), Some("x"));

        // An id with NUL is ignored.
        let (events, _) = parse_chunks(&mut parser, &[b"id: a\0b\ndata: z\n\n"]);
        assert_eq!(events, vec![ev(None, "z", None, None)]);
        assert_eq!(parser.last_event_id(), Some("x"));

        // An empty id resets.
        let (events, _) = parse_chunks(&mut parser, &[b"id\n\n"]);
        assert!(events.is_empty());
        assert_eq!(parser.last_event_id(), None);
        assert_eq!(parser.events(), 3);
    }

    #[test]
    fn blank_lines_without_fields_dispatch_nothing() {
        assert!(parse(b"\n\n\r\n\r\r").is_empty());
        // The event type does not leak into the next event.
        assert_eq!(
            parse(b"event: a\n\ndata: x\n\n"),
            vec![ev(None, "x", None, None)]
        );
    }

    #[test]
    fn multi_line_data() {
        assert_eq!(
            parse(b"data: {\ndata:   \"a\": 1\ndata: }\n\n"),
            vec![ev(None, "{\n  \"a\": 1\n}", None, None)]
        );
        // An empty data line in the middle keeps its line.
        assert_eq!(
            parse(b"data: a\ndata:\ndata: b\n\n"),
            vec![ev(None, "a\n\nb", None, None)]
        );
    }

    #[test]
    fn size_limit() {
        // 16 bytes of data fit a 16-byte limit when the line is whole in one chunk.
        let mut parser = SseParser::new(16);
        let (events, result) = parse_chunks(&mut parser, &[b"data: 0123456789abcdef\n\n"]);
        assert_eq!(result, Ok(()));
        assert_eq!(events.len(), 1);
        // Buffers are emptied between events: another one fits.
        let (events, result) = parse_chunks(&mut parser, &[b"data: 0123456789abcdef\n\n"]);
        assert_eq!(result, Ok(()));
        assert_eq!(events.len(), 1);

        // Many data lines of one event add up.
        let mut parser = SseParser::new(16);
        let (events, result) = parse_chunks(&mut parser, &[b"data: 01234567\ndata: 89abcdef\n\n"]);
        assert!(events.is_empty());
        assert_eq!(result, Err(SseError::EventTooLarge { limit: 16 }));
        // Poisoned afterwards.
        let (_, result) = parse_chunks(&mut parser, &[b"data: a\n\n"]);
        assert_eq!(result, Err(SseError::EventTooLarge { limit: 16 }));

        // A line without end is bounded too.
        let mut parser = SseParser::new(16);
        let (_, result) = parse_chunks(&mut parser, &[b"data: 0123", b"456789", b"abcdef"]);
        assert_eq!(result, Err(SseError::EventTooLarge { limit: 16 }));

        // Long comments split over chunks count, so keep-alives stay short.
        let mut parser = SseParser::new(16);
        let (_, result) = parse_chunks(&mut parser, &[b": 0123456789", b"abcdefgh\n"]);
        assert_eq!(result, Err(SseError::EventTooLarge { limit: 16 }));
    }

    #[test]
    fn events_before_an_error_are_delivered() {
        let mut parser = SseParser::new(8);
        let (events, result) = parse_chunks(&mut parser, &[b"data: a\n\ndata: 0123456789\n\n"]);
        assert_eq!(events, vec![ev(None, "a", None, None)]);
        assert_eq!(result, Err(SseError::EventTooLarge { limit: 8 }));
    }

    #[test]
    fn finish_reports_a_cut_event() {
        let mut parser = SseParser::new(1 << 16);
        let (events, _) = parse_chunks(&mut parser, &[b"data: a\n\ndata: part"]);
        assert_eq!(events, vec![ev(None, "a", None, None)]);
        assert!(parser.finish());

        // A complete data line without the blank line is still cut.
        let (events, _) = parse_chunks(&mut parser, &[b"data: b\n"]);
        assert!(events.is_empty());
        assert!(parser.finish());

        // finish() discards: a new stream starts clean.
        let (events, _) = parse_chunks(&mut parser, &[b"\ndata: c\n\n"]);
        assert_eq!(events, vec![ev(None, "c", None, None)]);
        assert!(!parser.finish());
        assert!(!parser.finish());

        // An id-only block cut before its blank line does not move the ID.
        let (_, _) = parse_chunks(&mut parser, &[b"id: 7\n"]);
        assert!(parser.finish());
        assert_eq!(parser.last_event_id(), None);
    }

    #[test]
    fn invalid_utf8() {
        for input in [
            &b"data: \xFF\n\n"[..],
            b"event: \xC3\n\ndata: x\n\n",
            b"\xC3\x28: x\n\n",
            b"id: \xED\xA0\x80\n\n",
        ] {
            let mut parser = SseParser::new(1 << 16);
            let (events, result) = parse_chunks(&mut parser, &[input]);
            assert!(events.is_empty(), "{input:?}");
            assert_eq!(result, Err(SseError::InvalidUtf8), "{input:?}");
        }
        // Invalid UTF-8 in a comment is not an error: comments are not read.
        assert_eq!(
            parse(b": \xFF\ndata: ok\n\n"),
            vec![ev(None, "ok", None, None)]
        );
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let text = "data: h\u{e9}llo \u{1F600}\n\n".as_bytes();
        for split in 0..=text.len() {
            let mut parser = SseParser::new(1 << 16);
            let (events, result) = parse_chunks(&mut parser, &[&text[..split], &text[split..]]);
            assert_eq!(result, Ok(()), "split at {split}");
            assert_eq!(events, vec![ev(None, "h\u{e9}llo \u{1F600}", None, None)]);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic generator over a byte alphabet rich in
        // separators, plus random bytes.
        let alphabet = b"data:event:id:retry: \r\n\r\n:\0\xEF\xBB\xBF\xFF0123";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        r as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let mut parser = SseParser::new(32);
            for chunk in bytes.chunks(1 + (next() % 5) as usize) {
                let _ = parser.feed(chunk, |_| {});
            }
            let _ = parser.finish();
        }
    }

    #[test]
    fn the_splitter_yields_whole_events_across_any_split() {
        let stream = b"event: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n: ping\n\nevent: message\rdata: x\r\rdata: y\n\n";
        let expected: Vec<&[u8]> = vec![
            b"event: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n",
            b": ping\n\n",
            b"event: message\rdata: x\r\r",
            b"data: y\n\n",
        ];
        for split in 0..stream.len() {
            for step in [1, 3, stream.len()] {
                let mut s = SseEventSplitter::new();
                let mut events: Vec<Vec<u8>> = Vec::new();
                s.push(&stream[..split], |e| events.push(e.to_vec()));
                for chunk in stream[split..].chunks(step) {
                    s.push(chunk, |e| events.push(e.to_vec()));
                }
                assert_eq!(events, expected, "split {split} step {step}");
                assert!(s.finish().is_empty());
            }
        }
        let mut s = SseEventSplitter::new();
        s.push(b"data: partial", |_| panic!("not an event yet"));
        assert_eq!(s.held(), 13);
        assert_eq!(s.finish(), b"data: partial");
    }

    #[test]
    fn replacing_data_keeps_the_other_fields() {
        let event = b"event: message\r\nid: 7\r\ndata: {\"old\":\r\ndata: 1}\r\nretry: 5\r\n\r\n";
        assert_eq!(
            replace_event_data(event, b"{\"new\":2}"),
            b"event: message\r\nid: 7\r\ndata: {\"new\":2}\nretry: 5\r\n\r\n".to_vec()
        );
    }
}
