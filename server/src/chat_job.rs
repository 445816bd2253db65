//! A chat completion as the worker runs it: `n` replies (choices) to one prompt, each started in
//! an engine slot, their tokens sent to the waiting request as events as they are generated.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kiln_llm::sampling::Sampled;
use kiln_llm::{EngineEvent, EngineRequest, Flow, Generation, Sink};
use tokio::sync::mpsc;

use crate::catalog::ModelEntry;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::queue::{JobControl, Queue};

/// What the request hears about its job.
#[derive(Debug)]
pub enum ChatEvent {
    /// Choice `choice` generated a token; `text` is what became final with it (may be empty).
    Token {
        choice: usize,
        text: String,
        sampled: Sampled,
    },
    Done {
        choice: usize,
        generation: Box<Generation>,
    },
    /// The job failed; no more events follow.
    Failed(ApiError),
}

pub struct ChatJob {
    pub model: ModelEntry,
    /// One request per choice (`n`), each with its own seed.
    pub choices: Vec<EngineRequest>,
    pub events: mpsc::UnboundedSender<ChatEvent>,
    /// `--timeout`: the job stops generating at this instant.
    pub deadline: Option<Instant>,
}

/// A sink for choice `choice` of job `id`: forwards its events and ends the reply when the job is
/// cancelled, its request has gone away or its deadline has passed. The last choice to end marks
/// the job finished in the queue.
pub fn choice_sink(
    id: u64,
    choice: usize,
    job: &ChatJob,
    control: Arc<JobControl>,
    remaining: Arc<AtomicUsize>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
) -> Sink {
    let events = job.events.clone();
    let deadline = job.deadline;
    let started = Instant::now();
    let mut first = true;
    let finish = move || {
        if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            queue.finish(id);
        }
    };
    Box::new(move |event| match event {
        EngineEvent::Token { text, sampled } => {
            if first {
                metrics.first_token(started.elapsed());
                first = false;
            }
            let gone = events
                .send(ChatEvent::Token {
                    choice,
                    text: text.to_string(),
                    sampled: sampled.clone(),
                })
                .is_err();
            let late = deadline.is_some_and(|d| Instant::now() >= d);
            if gone || late || control.is_cancelled() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        }
        EngineEvent::Done(generation) => {
            metrics.reply_done(&generation);
            let _ = events.send(ChatEvent::Done {
                choice,
                generation: Box::new(generation),
            });
            finish();
            Flow::Stop
        }
        EngineEvent::Failed(e) => {
            let _ = events.send(ChatEvent::Failed(ApiError::internal(format!(
                "generation failed: {e}"
            ))));
            finish();
            Flow::Stop
        }
    })
}
