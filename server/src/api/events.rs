//! GET /sdapi/v1/progress/stream: Server-Sent Events for every job: `start`, `step` (with a
//! base64 PNG `preview` every few steps) and `end` (status done, interrupted, cancelled, error).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

pub async fn stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.progress.subscribe();
    let events = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => {
                    let kind = v["event"].as_str().unwrap_or("message").to_string();
                    let event = Event::default().event(kind).data(v.to_string());
                    return Some((Ok(event), rx));
                }
                // A slow reader misses some steps rather than stalling the worker.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
