//! A body wrapper that passes every frame through unchanged while keeping a bounded prefix for
//! the recording, and reports when the body ended (or was dropped unfinished).

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// The part of a body kept for the recording.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    pub kept: BytesMut,
    pub size: u64,
    pub complete: bool,
}

/// Where a capture is read once the exchange ends; shared with the wrapper.
pub type CaptureSlot = Arc<Mutex<Captured>>;

/// Called once, when the body has ended or been dropped.
pub type OnEnd = Box<dyn FnOnce() + Send + Sync>;

/// Wraps `inner`; frames pass as they come, nothing is buffered beyond `cap` bytes of copy.
pub struct CaptureBody<B: Body> {
    inner: B,
    cap: usize,
    slot: CaptureSlot,
    on_end: Option<OnEnd>,
}

impl<B: Body> CaptureBody<B> {
    pub fn new(inner: B, cap: usize, slot: CaptureSlot, on_end: Option<OnEnd>) -> Self {
        Self { inner, cap, slot, on_end }
    }

    fn finish(&mut self, complete: bool) {
        if complete {
            self.slot.lock().unwrap_or_else(|e| e.into_inner()).complete = true;
        }
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl<B> Body for CaptureBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let cap = self.cap;
                    // The slot is only locked here and once the exchange ends; never contended.
                    let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                    slot.size += data.len() as u64;
                    let room = cap.saturating_sub(slot.kept.len());
                    slot.kept.extend_from_slice(&data[..room.min(data.len())]);
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
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

impl<B: Body> Drop for CaptureBody<B> {
    fn drop(&mut self) {
        // hyper never polls a body that is empty from the start (a 200 with Content-Length 0):
        // that one is complete. Any other body dropped before its end was cut short: the agent
        // went away, or the body was never read.
        let complete = self.inner.is_end_stream();
        if self.on_end.is_some() {
            self.finish(complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, Full};

    use super::*;

    #[tokio::test]
    async fn passes_everything_keeps_a_prefix_and_reports_the_end_once() {
        let slot = CaptureSlot::default();
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = ended.clone();
        let body = CaptureBody::new(
            Full::new(Bytes::from_static(b"hello world")),
            5,
            slot.clone(),
            Some(Box::new(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })),
        );
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"hello world");
        let captured = slot.lock().unwrap().clone();
        assert_eq!((&captured.kept[..], captured.size, captured.complete), (&b"hello"[..], 11, true));
        assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_empty_body_never_polled_is_complete() {
        let slot = CaptureSlot::default();
        drop(CaptureBody::new(Full::new(Bytes::new()), 5, slot.clone(), Some(Box::new(|| {}))));
        assert!(slot.lock().unwrap().complete);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_reports_incomplete() {
        let slot = CaptureSlot::default();
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ended.clone();
        drop(CaptureBody::new(
            Full::new(Bytes::from_static(b"x")),
            5,
            slot.clone(),
            Some(Box::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))),
        ));
        assert!(ended.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!slot.lock().unwrap().complete);
    }
}
