//! Counters for `GET /metrics` (Prometheus text format, as llama-server's `--metrics`): requests,
//! prompt and generated tokens, time to first token, decode time, and the queue.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kiln_llm::Generation;

use crate::catalog::ModelKind;

#[derive(Default)]
pub struct Metrics {
    chat_requests: AtomicU64,
    completion_requests: AtomicU64,
    image_requests: AtomicU64,
    prompt_tokens: AtomicU64,
    prefilled_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    replies: AtomicU64,
    first_tokens: AtomicU64,
    first_token_micros: AtomicU64,
    decode_micros: AtomicU64,
    prefill_micros: AtomicU64,
    /// The models in memory now (image, LLM), by path: `/health` reports them so a load
    /// balancer can route to a replica that has the model loaded.
    loaded: Mutex<(Option<PathBuf>, Option<PathBuf>)>,
}

/// Which API a request came through.
#[derive(Clone, Copy)]
pub enum RequestKind {
    Chat,
    Completion,
    Image,
}

impl Metrics {
    /// The worker loaded (`Some`) or freed (`None`) its model of `kind`.
    pub fn set_loaded(&self, kind: ModelKind, path: Option<&Path>) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match kind {
            ModelKind::Image => &mut loaded.0,
            ModelKind::Llm => &mut loaded.1,
        };
        *slot = path.map(Path::to_path_buf);
    }

    pub fn loaded(&self, kind: ModelKind) -> Option<PathBuf> {
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            ModelKind::Image => loaded.0.clone(),
            ModelKind::Llm => loaded.1.clone(),
        }
    }

    pub fn request(&self, kind: RequestKind) {
        let counter = match kind {
            RequestKind::Chat => &self.chat_requests,
            RequestKind::Completion => &self.completion_requests,
            RequestKind::Image => &self.image_requests,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A reply's first token arrived `after` its job started (prefill included).
    pub fn first_token(&self, after: Duration) {
        self.first_tokens.fetch_add(1, Ordering::Relaxed);
        self.first_token_micros
            .fetch_add(after.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn reply_done(&self, g: &Generation) {
        let add = |c: &AtomicU64, v: u64| c.fetch_add(v, Ordering::Relaxed);
        add(&self.replies, 1);
        add(&self.prompt_tokens, g.prompt_tokens as u64);
        add(&self.prefilled_tokens, g.prefilled as u64);
        add(&self.generated_tokens, g.sampled.len() as u64);
        add(&self.decode_micros, g.decode_time.as_micros() as u64);
        add(&self.prefill_micros, g.prefill_time.as_micros() as u64);
    }

    /// The Prometheus exposition text; `waiting` and `running` are the queue's gauges now.
    pub fn render(&self, waiting: usize, running: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let secs = |c: &AtomicU64| get(c) as f64 / 1e6;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP kiln_{name} {help}");
            let _ = writeln!(out, "# TYPE kiln_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "kiln_{name}{labels} {v}");
            }
        };
        metric(
            "requests_total",
            "counter",
            "Requests accepted, by API.",
            &[
                ("{api=\"chat\"}", get(&self.chat_requests) as f64),
                (
                    "{api=\"completion\"}",
                    get(&self.completion_requests) as f64,
                ),
                ("{api=\"image\"}", get(&self.image_requests) as f64),
            ],
        );
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of finished replies.",
            &[("", get(&self.prompt_tokens) as f64)],
        );
        metric(
            "prompt_tokens_prefilled_total",
            "counter",
            "Prompt tokens run (the rest came from a slot's cache).",
            &[("", get(&self.prefilled_tokens) as f64)],
        );
        metric(
            "tokens_generated_total",
            "counter",
            "Tokens generated.",
            &[("", get(&self.generated_tokens) as f64)],
        );
        metric(
            "replies_total",
            "counter",
            "Replies finished.",
            &[("", get(&self.replies) as f64)],
        );
        metric(
            "time_to_first_token_seconds",
            "summary",
            "From a reply's start in a slot to its first token.",
            &[
                ("_sum", secs(&self.first_token_micros)),
                ("_count", get(&self.first_tokens) as f64),
            ],
        );
        metric(
            "prefill_seconds_total",
            "counter",
            "Time spent running prompts.",
            &[("", secs(&self.prefill_micros))],
        );
        metric(
            "decode_seconds_total",
            "counter",
            "Time replies spent decoding (overlapping replies each count theirs).",
            &[("", secs(&self.decode_micros))],
        );
        let per_stream = get(&self.generated_tokens) as f64 / secs(&self.decode_micros).max(1e-9);
        metric(
            "decode_tokens_per_second",
            "gauge",
            "Generated tokens per second of decoding, per stream, over all replies.",
            &[(
                "",
                if get(&self.decode_micros) > 0 {
                    per_stream
                } else {
                    0.0
                },
            )],
        );
        metric(
            "queue_waiting",
            "gauge",
            "Jobs waiting in the queue.",
            &[("", waiting as f64)],
        );
        metric(
            "jobs_running",
            "gauge",
            "Jobs running.",
            &[("", running as f64)],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request(RequestKind::Chat);
        m.request(RequestKind::Chat);
        m.first_token(Duration::from_millis(250));
        let text = m.render(3, 1);
        assert!(
            text.contains("kiln_requests_total{api=\"chat\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("kiln_time_to_first_token_seconds_sum 0.25\n"));
        assert!(text.contains("kiln_time_to_first_token_seconds_count 1\n"));
        assert!(text.contains("kiln_queue_waiting 3\n"));
        assert!(text.contains("# TYPE kiln_tokens_generated_total counter\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("kiln_"), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
}
