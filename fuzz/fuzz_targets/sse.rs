//! SseParser over any split of any input.
//!
//! Input: a header byte, then split offsets, then the stream.
//! - header bits 0-1: the event size limit (8, 64, 1024 or 1 MiB);
//! - bits 2-3: how many cuts (1 to 4), each a little-endian u16 that follows,
//!   taken modulo the stream's length + 1;
//! - bit 4: feed one byte at a time instead.
//!
//! Invariants checked against one `feed` of the whole stream:
//! - the events of the chunked feed are a prefix of the whole feed's;
//! - a chunked feed errs no later than the whole feed (it may hold a split
//!   line's field name and comments too, so it can reach the limit sooner);
//! - when the chunked feed succeeds, both give the same events, the same last
//!   event ID and the same `finish()`;
//! - an invalid UTF-8 error is the same error after the same events either way;
//! - after `finish()`, the parser reads the same stream again as a fresh one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_l7::sse::{SseError, SseEvent, SseParser};

const LIMITS: [usize; 4] = [8, 64, 1024, 1 << 20];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    event: Option<String>,
    data: String,
    id: Option<String>,
    retry: Option<u64>,
}

impl From<&SseEvent<'_>> for Owned {
    fn from(ev: &SseEvent<'_>) -> Self {
        Owned {
            event: ev.event.map(str::to_owned),
            data: ev.data.to_owned(),
            id: ev.id.map(str::to_owned),
            retry: ev.retry,
        }
    }
}

struct Run {
    events: Vec<Owned>,
    result: Result<(), SseError>,
}

/// Feeds `chunks` in order, stopping at the first error (as the proxy does).
fn feed_all<'a>(parser: &mut SseParser, chunks: impl IntoIterator<Item = &'a [u8]>) -> Run {
    let mut events = Vec::new();
    let mut result = Ok(());
    for chunk in chunks {
        result = parser.feed(chunk, |ev| {
            // Event fields never hold line ends; data holds only its joins.
            assert!(!ev.data.contains('\r'));
            assert!(ev.event.map_or(true, |e| !e.contains(['\r', '\n'])));
            assert!(ev.id.map_or(true, |i| !i.contains(['\r', '\n', '\0'])));
            events.push(Owned::from(ev));
        });
        if result.is_err() {
            break;
        }
    }
    if result.is_err() {
        // Poisoned: the same error again.
        assert_eq!(parser.feed(b"\n\n", |_| panic!("event after error")), result);
    }
    Run { events, result }
}

fuzz_target!(|input: &[u8]| {
    let Some((&header, rest)) = input.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from(header & 3)];
    let cuts = usize::from((header >> 2) & 3) + 1;
    let bytewise = header & 0x10 != 0;
    let offsets_len = (cuts * 2).min(rest.len());
    let (offsets, stream) = rest.split_at(offsets_len);

    let mut positions: Vec<usize> = offsets
        .chunks(2)
        .map(|p| {
            let v = u16::from_le_bytes([p[0], p.get(1).copied().unwrap_or(0)]);
            usize::from(v) % (stream.len() + 1)
        })
        .collect();
    positions.sort_unstable();
    let mut chunks: Vec<&[u8]> = Vec::new();
    if bytewise {
        chunks.extend(stream.chunks(1));
    } else {
        let mut start = 0;
        for &p in &positions {
            chunks.push(&stream[start..p]);
            start = p;
        }
        chunks.push(&stream[start..]);
    }

    let mut whole_parser = SseParser::new(limit);
    let whole = feed_all(&mut whole_parser, [stream]);
    let whole_last_id = whole_parser.last_event_id().map(str::to_owned);
    let whole_pending = whole_parser.finish();

    let mut chunked_parser = SseParser::new(limit);
    let chunked = feed_all(&mut chunked_parser, chunks.iter().copied());

    assert!(
        whole.events.starts_with(&chunked.events),
        "chunked events are not a prefix of the whole feed's:\nwhole:   {:?}\nchunked: {:?}",
        whole.events,
        chunked.events
    );
    if whole.result.is_err() {
        assert!(chunked.result.is_err(), "whole feed failed ({:?}), chunked did not", whole.result);
    }
    match &chunked.result {
        Ok(()) => {
            assert_eq!(whole.result, Ok(()));
            assert_eq!(whole.events, chunked.events);
            assert_eq!(whole_last_id.as_deref(), chunked_parser.last_event_id());
            assert_eq!(whole_pending, chunked_parser.finish());
            assert_eq!(whole_parser.events(), chunked_parser.events());
            assert_eq!(whole_parser.comments(), chunked_parser.comments());
        }
        Err(SseError::InvalidUtf8) => {
            assert_eq!(whole.result, Err(SseError::InvalidUtf8));
            assert_eq!(whole.events, chunked.events);
            chunked_parser.finish();
        }
        Err(SseError::EventTooLarge { limit: l }) => {
            assert_eq!(*l, limit);
            chunked_parser.finish();
        }
    }

    // A finished parser is ready for a new stream: it reads the stream again
    // as a fresh parser did.
    let again = feed_all(&mut whole_parser, [stream]);
    assert_eq!(again.events, whole.events);
    assert_eq!(again.result, whole.result);
    let _ = whole_parser.finish();
    let again = feed_all(&mut chunked_parser, chunks.iter().copied());
    assert_eq!(again.events, chunked.events);
    assert_eq!(again.result, chunked.result);
});
