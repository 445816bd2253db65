//! OpenAI's text APIs on chat models: `POST /v1/chat/completions` and `POST /v1/completions`,
//! answered whole or as Server-Sent Events; llama-server's `POST /tokenize` and `/detokenize`.
//!
//! A request is checked and its prompt rendered here, then queued as one job of `n` choices. A
//! streamed answer starts only after the job's first event, so a request the worker refuses is
//! still a plain 4xx/5xx, never a 200 stream holding an error.

mod error;
mod images;
mod request;
mod response;
mod tokenize;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use kiln_llm::{EngineRequest, Generation};
use serde_json::Value;
use tokio::sync::mpsc;

pub use error::{error_object, OpenAiResult};
pub use images::install_tls_provider;
pub use tokenize::{detokenize, tokenize};

use super::body::Body;
use super::jobs::{queue_full, CancelOnDrop};
use super::AppState;
use crate::chat_job::{ChatEvent, ChatJob};
use crate::error::ApiError;
use crate::metrics::RequestKind;
use crate::queue::Work;
use request::{Plan, ToolChoice};
use response::{Api, Header, Reply};

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> OpenAiResult<Response> {
    let plan = request::chat_plan(&state, body).await?;
    answer(state, plan, Api::Chat).await
}

pub async fn completions(State(state): State<Arc<AppState>>, body: Body) -> OpenAiResult<Response> {
    let plan = request::completion_plan(&state, body)?;
    answer(state, plan, Api::Completion).await
}

/// A queued job's events and what keeps it alive: dropping this cancels the job.
struct Running {
    events: mpsc::UnboundedReceiver<ChatEvent>,
    guard: CancelOnDrop,
    deadline: Option<Instant>,
}

impl Running {
    async fn next(&mut self) -> Option<ChatEvent> {
        let event = self.events.recv().await;
        if event.is_none() {
            self.guard.armed = false;
        }
        event
    }

    /// The request's `--timeout` passed (the worker stopped its replies).
    fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

fn timeout_error(state: &AppState) -> ApiError {
    let secs = state.config.timeout.map_or(0, |t| t.as_secs());
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!("the request ran past this server's --timeout of {secs} s"),
    )
}

async fn answer(state: Arc<AppState>, plan: Plan, api: Api) -> OpenAiResult<Response> {
    let (tx, rx) = mpsc::unbounded_channel();
    let deadline = state.config.timeout.map(|t| Instant::now() + t);
    let n = plan.choices.len();
    let job = ChatJob {
        model: plan.model.clone(),
        choices: plan
            .choices
            .iter()
            .map(|options| EngineRequest {
                prompt: plan.prompt.clone(),
                images: plan.images.clone(),
                options: options.clone(),
            })
            .collect(),
        events: tx,
        deadline,
    };
    let id = state
        .queue
        .submit(Work::Chat(job))
        .map_err(|e| queue_full(&state, e))?;
    state.metrics.request(match api {
        Api::Chat => RequestKind::Chat,
        Api::Completion => RequestKind::Completion,
    });
    let mut running = Running {
        events: rx,
        guard: CancelOnDrop::new(&state, id),
        deadline,
    };
    let header = Header::new(api, &plan.model.name);
    // The first event decides between an error answer and a 200.
    let first = running.next().await;
    let first = match first {
        Some(ChatEvent::Failed(e)) => return Err(e.into()),
        None => return Err(shutting_down().into()),
        Some(event) => event,
    };
    if plan.stream {
        return Ok(stream(state, plan, header, running, first, n).into_response());
    }
    let mut generations: Vec<Option<Generation>> = vec![None; n];
    let mut event = Some(first);
    while let Some(e) = event {
        match e {
            ChatEvent::Token { .. } => {}
            ChatEvent::Done { choice, generation } => generations[choice] = Some(*generation),
            ChatEvent::Failed(e) => return Err(e.into()),
        }
        if generations.iter().all(Option::is_some) {
            break;
        }
        event = running.next().await;
    }
    if running.timed_out() {
        return Err(timeout_error(&state).into());
    }
    let generations: Vec<Generation> = generations.into_iter().flatten().collect();
    if generations.len() != n {
        return Err(shutting_down().into());
    }
    running.guard.armed = false;
    let tools = plan.tools_on();
    let tokenizer = &plan.info.tokenizer;
    let replies: Vec<Reply> = generations
        .into_iter()
        .map(|g| Reply::new(tokenizer, g, tools))
        .collect();
    Ok(Json(header.complete(tokenizer, &replies, plan.logprobs)).into_response())
}

impl Plan {
    /// Whether replies are read for tool calls.
    fn tools_on(&self) -> bool {
        !self.tools.is_empty() && self.tool_choice != ToolChoice::None
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down",
    )
}

/// The SSE answer: per choice a role chunk (chat), text chunks, a finish chunk; then the usage
/// chunk when asked, then `[DONE]`. Comment lines keep idle connections open.
fn stream(
    state: Arc<AppState>,
    plan: Plan,
    header: Header,
    running: Running,
    first: ChatEvent,
    n: usize,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Streaming {
        state: Arc<AppState>,
        plan: Plan,
        header: Header,
        running: Running,
        pending: Option<ChatEvent>,
        started: Vec<bool>,
        /// The choice reached `[TOOL_CALLS]`: its text is held for the tool-call delta.
        in_calls: Vec<bool>,
        /// Text sent per choice (what a tool-call reply that fails to parse still owes).
        sent: Vec<String>,
        done: Vec<Option<Generation>>,
        finished: bool,
    }
    let calls_id = plan
        .tools_on()
        .then(|| plan.info.tokenizer.token_id("[TOOL_CALLS]"))
        .flatten();
    let init = Streaming {
        state,
        plan,
        header,
        running,
        pending: Some(first),
        started: vec![false; n],
        in_calls: vec![false; n],
        sent: vec![String::new(); n],
        done: vec![None; n],
        finished: false,
    };
    let data = |v: Value| Event::default().data(v.to_string());
    let events = stream::unfold(init, move |mut s| async move {
        if s.finished {
            return None;
        }
        let event = match s.pending.take() {
            Some(e) => Some(e),
            None => s.running.next().await,
        };
        let mut out: Vec<Event> = Vec::new();
        let tokenizer = &s.plan.info.tokenizer;
        match event {
            Some(ChatEvent::Token {
                choice,
                text,
                sampled,
            }) => {
                if !s.started[choice] && s.header.api == Api::Chat {
                    out.push(data(s.header.role_chunk(choice)));
                }
                s.started[choice] = true;
                if Some(sampled.id) == calls_id {
                    s.in_calls[choice] = true;
                }
                if !s.in_calls[choice] && (!text.is_empty() || s.plan.logprobs) {
                    let lp = s.plan.logprobs.then_some(&sampled);
                    out.push(data(s.header.text_chunk(tokenizer, choice, &text, lp)));
                    s.sent[choice].push_str(&text);
                }
            }
            Some(ChatEvent::Done { choice, generation }) => {
                if !s.started[choice] && s.header.api == Api::Chat {
                    out.push(data(s.header.role_chunk(choice)));
                }
                s.started[choice] = true;
                if s.running.timed_out() {
                    let e = timeout_error(&s.state);
                    out.push(data(serde_json::json!({"error": error_object(&e)})));
                    s.finished = true;
                } else {
                    let reply = Reply::new(tokenizer, *generation, s.plan.tools_on());
                    if !reply.tool_calls.is_empty() {
                        out.push(data(s.header.tool_calls_chunk(choice, &reply)));
                    } else if let Some(rest) = reply.content.strip_prefix(s.sent[choice].as_str()) {
                        if !rest.is_empty() {
                            out.push(data(s.header.text_chunk(tokenizer, choice, rest, None)));
                        }
                    }
                    out.push(data(s.header.finish_chunk(choice, &reply)));
                    s.done[choice] = Some(reply.generation);
                }
            }
            Some(ChatEvent::Failed(e)) => {
                out.push(data(serde_json::json!({"error": error_object(&e)})));
                s.finished = true;
            }
            None => {
                let e = shutting_down();
                out.push(data(serde_json::json!({"error": error_object(&e)})));
                s.finished = true;
            }
        }
        if !s.finished && s.done.iter().all(Option::is_some) {
            let generations: Vec<&Generation> = s.done.iter().flatten().collect();
            if s.plan.include_usage {
                out.push(data(s.header.usage_chunk(&generations)));
            }
            out.push(Event::default().data("[DONE]"));
            s.running.guard.armed = false;
            s.finished = true;
        }
        Some((stream::iter(out.into_iter().map(Ok)), s))
    });
    use futures_util::StreamExt;
    Sse::new(events.flatten()).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}
