//! The inject layer, outermost: a 2024-11-05 session's GET stream carries
//! the refusals of the calls POSTed in that session (their responses would
//! come there), queued in [`Sessions`] and sent between events, never
//! inside one.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use super::{
    inspect::{FrameResult, Inspection, Layer},
    sessions::{Sessions, StreamKey},
};
use crate::proxy::pool::BoxError;

struct Injector {
    sessions: Arc<Sessions>,
    rx: Option<mpsc::UnboundedReceiver<Bytes>>,
    registered: Option<StreamKey>,
}

/// Injects queued refusals into a 2024-11-05 GET stream once the inspector
/// has read the session's `endpoint` event; without `sessions`, frames pass.
pub(super) struct Inject<B: Layer> {
    inner: B,
    injector: Option<Injector>,
}

impl<B: Layer> Inject<B> {
    pub(super) fn new(inner: B, sessions: Option<Arc<Sessions>>) -> Inject<B> {
        Inject {
            inner,
            injector: sessions.map(|sessions| Injector {
                sessions,
                rx: None,
                registered: None,
            }),
        }
    }
}

impl<B: Layer> Layer for Inject<B> {
    fn inspection(&mut self) -> &mut Inspection {
        self.inner.inspection()
    }
}

impl<B: Layer> Drop for Inject<B> {
    fn drop(&mut self) {
        if let Some(inj) = &self.injector {
            if let Some(key) = &inj.registered {
                inj.sessions.unregister_stream(key);
            }
        }
    }
}

impl<B: Layer> Body for Inject<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let this = &mut *self;
        let Some(inj) = this.injector.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        // Injected events go out between events, never inside one.
        if this.inner.inspection().at_boundary {
            if let Some(rx) = inj.rx.as_mut() {
                if let Poll::Ready(Some(event)) = rx.poll_recv(cx) {
                    return Poll::Ready(Some(Ok(Frame::data(event))));
                }
            }
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            // The session's endpoint was just read: its stream is open to
            // refusals from now on.
            let inspection = this.inner.inspection();
            if let (Some(session), Some((_, agent, dst))) =
                (inspection.endpoint.take(), inspection.scope())
            {
                let key = (agent, dst, session);
                inj.rx = Some(inj.sessions.register_stream(key.clone()));
                inj.registered = Some(key);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
