//! From the engine's blocking [`EventStream`] to async code, and from a
//! sequence of JSON chunks to a Server-Sent Events response.
//!
//! The engine thread calls a waker after each event it sends; here the waker
//! is a [`Notify`] permit, so a task waiting for the next event sleeps until
//! there is one (no thread per request, no polling). Dropping [`AsyncEvents`]
//! drops the stream, which cancels the request: when a client disconnects,
//! hyper drops the response body, and with it this.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::Notify;
use whale_engine::serving::engine::{EngineHandle, Event, EventStream, SubmitError, TryNext, ValidRequest};

use super::metrics::Metrics;

/// A submitted request's events, awaited.
pub struct AsyncEvents {
    stream: EventStream,
    notify: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl AsyncEvents {
    pub fn submit(engine: &EngineHandle, metrics: Arc<Metrics>, req: ValidRequest) -> Result<AsyncEvents, SubmitError> {
        let notify = Arc::new(Notify::new());
        let waker = notify.clone();
        let stream = engine.submit(req, Some(Arc::new(move || waker.notify_one())))?;
        Ok(AsyncEvents { stream, notify, metrics })
    }

    /// The next event; `None` once the engine has nothing more to send.
    /// Queue time and the request's speeds go to the metrics on the way.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.stream.try_next() {
                TryNext::Event(e) => {
                    match &e {
                        Event::Started { queued, .. } => self.metrics.observe_queued(*queued),
                        Event::Done(d) => self.metrics.observe_done(d),
                        _ => {}
                    }
                    return Some(e);
                }
                TryNext::Closed => return None,
                TryNext::Empty => self.notify.notified().await,
            }
        }
    }
}

/// Turns engine events into SSE `data:` payloads (JSON text, or `[DONE]`).
pub trait ChunkWriter: Send + 'static {
    fn on_event(&mut self, ev: Event) -> Vec<String>;
    /// The engine closed the stream (after `Done`, or because it failed).
    fn on_close(&mut self) -> Vec<String>;
}

/// The payloads a writer makes from a request's events, as a stream.
pub fn chunks<W: ChunkWriter>(events: AsyncEvents, writer: W) -> impl Stream<Item = String> + Send {
    struct St<W> {
        events: AsyncEvents,
        writer: W,
        queue: VecDeque<String>,
        closed: bool,
    }
    let st = St { events, writer, queue: VecDeque::new(), closed: false };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(s) = st.queue.pop_front() {
                return Some((s, st));
            }
            if st.closed {
                return None;
            }
            match st.events.next().await {
                Some(ev) => {
                    let out = st.writer.on_event(ev);
                    st.queue.extend(out);
                }
                None => {
                    let out = st.writer.on_close();
                    st.queue.extend(out);
                    st.closed = true;
                }
            }
        }
    })
}

/// An SSE response of `data:` payloads, with `: keep-alive` comments whenever
/// nothing was sent for `keep_alive` (while the request waits in the queue,
/// or a long prompt is read).
pub fn sse_response(payloads: impl Stream<Item = String> + Send + 'static, keep_alive: Duration) -> Response {
    use futures_util::StreamExt;
    let events = payloads.map(|data| Ok::<_, Infallible>(SseEvent::default().data(data)));
    Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive")).into_response()
}
