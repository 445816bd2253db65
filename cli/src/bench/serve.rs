//! `kiln bench serve`: N concurrent streamed completions against an OpenAI-compatible server
//! (kiln serve or llama-server), reporting per N the aggregate generated tokens/s over the wall
//! time, time to first token (mean, p50, p95) and the mean per-stream decode speed after the first
//! token. Prompts have the same token count (measured with the server's /tokenize) but different
//! words per stream and per run, so no stream reuses another's cached prefix; EOS is banned
//! through `logit_bias` so every reply runs to --max-tokens even on random weights.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use super::http::{request, SseParser, Url};

#[derive(Args, Debug)]
pub struct ServeBenchArgs {
    /// The server's root, e.g. http://127.0.0.1:7860 (kiln serve) or http://127.0.0.1:8080
    /// (llama-server).
    #[arg(long)]
    url: String,

    /// Concurrent stream counts to run, one after the other (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    streams: Vec<usize>,

    /// Tokens generated per stream.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,

    /// Prompt length in tokens (BOS included), matched per prompt through POST /tokenize.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,

    /// `model` field of the requests (default: none, the server's only model).
    #[arg(long)]
    model: Option<String>,

    /// Token ids given a -100 logit bias (comma-separated; default: 2, the Mistral/Llama EOS).
    #[arg(long, value_delimiter = ',', default_values_t = [2])]
    ban_tokens: Vec<u32>,

    /// A name for the server in the report (e.g. "kiln" or "llama.cpp").
    #[arg(long, default_value = "")]
    label: String,

    /// Bearer key for servers started with an API key.
    #[arg(long, env = "KILN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Seconds one request may take.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,

    /// Ask for `logprobs: 1`, so every token comes as its own chunk even when its text is held
    /// back (a token ending inside a UTF-8 sequence): TTFT and decode speed then time tokens, not
    /// text.
    #[arg(long)]
    logprobs: bool,

    /// Skip the short untimed request that first loads the model and warms the server.
    #[arg(long)]
    no_warmup: bool,

    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One stream's timings; seconds are from the moment its request was sent.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct StreamResult {
    /// `usage.prompt_tokens` as the server reported it.
    pub prompt_tokens: Option<u64>,
    /// `usage.completion_tokens`, or the text chunks counted when the server sent no usage.
    pub completion_tokens: u64,
    pub usage_reported: bool,
    /// First chunk carrying text (or log-probabilities).
    pub first_token_s: Option<f64>,
    /// Last chunk carrying text (or log-probabilities).
    pub last_token_s: Option<f64>,
    /// `[DONE]` (or the end of the response).
    pub total_s: f64,
    pub text_chunks: u64,
    pub finish_reason: Option<String>,
    /// llama-server's own `timings` object, kept as it sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_timings: Option<Value>,
}

impl StreamResult {
    /// Tokens per second after the first: (completion tokens - 1) over first to last text chunk.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        let (first, last) = (self.first_token_s?, self.last_token_s?);
        (last > first && self.completion_tokens > 1)
            .then(|| (self.completion_tokens - 1) as f64 / (last - first))
    }
}

/// What one chunk of a streamed `/v1/completions` response says.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    Done,
    Data {
        /// Carries a token: non-empty text, or log-probabilities.
        text: bool,
        finish_reason: Option<String>,
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        timings: Option<Value>,
    },
}

/// Reads one SSE event's data as an OpenAI completion chunk (or llama-server's variant: usage and
/// `timings` on the last choice chunk rather than a separate one). An `error` object is an error.
pub fn parse_chunk(data: &str) -> Result<Chunk> {
    if data.trim() == "[DONE]" {
        return Ok(Chunk::Done);
    }
    let v: Value =
        serde_json::from_str(data).with_context(|| format!("event is not JSON: {data:.200}"))?;
    if let Some(e) = v.get("error") {
        bail!("the server sent an error: {e}");
    }
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let text = choice
        .and_then(|c| c.get("text").or_else(|| c.pointer("/delta/content")))
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
        || choice
            .and_then(|c| c.get("logprobs"))
            .is_some_and(|l| !l.is_null());
    let finish_reason = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let usage = v.get("usage").filter(|u| u.is_object());
    let count = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
    Ok(Chunk::Data {
        text,
        finish_reason,
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        timings: v.get("timings").cloned(),
    })
}

/// Folds a stream's events, each with its arrival time in seconds, into its result.
pub fn fold_events<I>(events: I) -> Result<StreamResult>
where
    I: IntoIterator<Item = Result<(f64, String)>>,
{
    let mut r = StreamResult::default();
    let mut usage_tokens = None;
    let mut done = false;
    for event in events {
        let (t, data) = event?;
        r.total_s = t;
        match parse_chunk(&data)? {
            Chunk::Done => {
                done = true;
                break;
            }
            Chunk::Data {
                text,
                finish_reason,
                prompt_tokens,
                completion_tokens,
                timings,
            } => {
                if text {
                    r.first_token_s.get_or_insert(t);
                    r.last_token_s = Some(t);
                    r.text_chunks += 1;
                }
                r.finish_reason = finish_reason.or(r.finish_reason.take());
                r.prompt_tokens = prompt_tokens.or(r.prompt_tokens);
                usage_tokens = completion_tokens.or(usage_tokens);
                r.server_timings = timings.or(r.server_timings.take());
            }
        }
    }
    if !done && r.finish_reason.is_none() {
        bail!("the stream ended before [DONE] or a finish_reason");
    }
    r.usage_reported = usage_tokens.is_some();
    r.completion_tokens = usage_tokens.unwrap_or(r.text_chunks);
    Ok(r)
}

/// One N's figures.
#[derive(Serialize, Debug)]
pub struct RunReport {
    pub streams: usize,
    /// From the first request sent to the last stream done.
    pub wall_s: f64,
    pub completion_tokens: u64,
    pub prompt_tokens_mean: Option<f64>,
    /// Every stream's generated tokens over the wall time.
    pub aggregate_tokens_per_second: f64,
    pub ttft_mean_s: f64,
    pub ttft_p50_s: f64,
    pub ttft_p95_s: f64,
    /// Mean over streams of (tokens - 1) / (last - first token time).
    pub decode_tokens_per_second_mean: f64,
    pub per_stream: Vec<StreamResult>,
}

/// The `q` quantile (0..=1) of `values`, linearly interpolated between order statistics.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The run's figures from its streams and wall time.
pub fn summarize(streams: usize, wall_s: f64, per_stream: Vec<StreamResult>) -> RunReport {
    let completion_tokens: u64 = per_stream.iter().map(|s| s.completion_tokens).sum();
    let ttft: Vec<f64> = per_stream.iter().filter_map(|s| s.first_token_s).collect();
    let decode: Vec<f64> = per_stream
        .iter()
        .filter_map(StreamResult::decode_tokens_per_second)
        .collect();
    let prompts: Vec<f64> = per_stream
        .iter()
        .filter_map(|s| s.prompt_tokens.map(|p| p as f64))
        .collect();
    RunReport {
        streams,
        wall_s,
        completion_tokens,
        prompt_tokens_mean: (!prompts.is_empty()).then(|| mean(&prompts)),
        aggregate_tokens_per_second: completion_tokens as f64 / wall_s,
        ttft_mean_s: mean(&ttft),
        ttft_p50_s: percentile(&ttft, 0.5),
        ttft_p95_s: percentile(&ttft, 0.95),
        decode_tokens_per_second_mean: mean(&decode),
        per_stream,
    }
}

#[derive(Serialize)]
pub struct ServeBenchReport {
    pub tool: String,
    pub version: String,
    pub url: String,
    pub label: String,
    /// `id`s from GET /v1/models, when the server answers it.
    pub server_models: Vec<String>,
    pub model: Option<String>,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    pub banned_tokens: Vec<u32>,
    /// Whether `logprobs: 1` was asked (chunks then time tokens, not text).
    pub logprobs: bool,
    pub runs: Vec<RunReport>,
}

/// Words prompts are drawn from; common English so both sides' tokenizers see ordinary text.
const WORDS: &[&str] = &[
    "the", "river", "stone", "light", "quiet", "garden", "market", "window", "winter", "paper",
    "silver", "morning", "engine", "cloud", "forest", "bridge", "letter", "orange", "summer",
    "island", "doctor", "number", "yellow", "castle", "planet", "music", "simple", "little",
    "mountain", "ocean", "kitchen", "travel", "history", "animal", "story", "people", "water",
    "friend", "school", "money", "family", "country", "problem", "question", "night", "point",
    "house", "world", "city", "table", "answer", "father", "mother", "machine", "coffee", "street",
    "village", "harbor", "lantern", "meadow", "thunder", "candle", "mirror", "velvet",
];

/// xorshift64*: a seeded word sequence, no dependency needed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn words(seed: u64, n: usize) -> String {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

struct Client {
    url: Url,
    api_key: Option<String>,
    timeout: Duration,
    model: Option<String>,
    logprobs: bool,
}

impl Client {
    fn post(&self, path: &str, body: &Value) -> Result<super::http::Response> {
        request(
            &self.url,
            "POST",
            path,
            Some(body),
            self.api_key.as_deref(),
            self.timeout,
        )
    }

    /// Prompt tokens of `text` as a completion would count them (BOS included), via /tokenize.
    fn count_tokens(&self, text: &str) -> Result<usize> {
        let mut body = json!({"content": text, "add_special": true});
        if let Some(m) = &self.model {
            body["model"] = json!(m);
        }
        let v = self.post("/tokenize", &body)?.json()?;
        v.get("tokens")
            .and_then(Value::as_array)
            .map(Vec::len)
            .ok_or_else(|| anyhow!("/tokenize answered without `tokens`: {v:.200}"))
    }

    /// A prompt of `target` tokens from the words of `seed`: the most words that fit, then
    /// single characters to fill the last few tokens where a word would overshoot.
    fn prompt(&self, seed: u64, target: usize) -> Result<String> {
        let count = |n: usize| self.count_tokens(&words(seed, n));
        let (mut lo, mut hi) = (1, 2);
        if count(lo)? > target {
            bail!("--prompt-tokens {target} is shorter than one word");
        }
        while count(hi)? <= target {
            lo = hi;
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if count(mid)? <= target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut text = words(seed, lo);
        let mut have = self.count_tokens(&text)?;
        for c in ['.', ',', ';', '!', '?', ':', '-', '.'] {
            if have >= target {
                break;
            }
            let longer = format!("{text}{c}");
            let n = self.count_tokens(&longer)?;
            if n <= target {
                text = longer;
                have = n;
            }
        }
        Ok(text)
    }

    fn completion_body(&self, prompt: &str, max_tokens: usize, ban: &[u32]) -> Value {
        let bias: serde_json::Map<String, Value> =
            ban.iter().map(|id| (id.to_string(), json!(-100))).collect();
        let mut body = json!({
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": 1,
            "stream": true,
            "stream_options": {"include_usage": true},
            "logit_bias": bias,
        });
        if let Some(m) = &self.model {
            body["model"] = json!(m);
        }
        if self.logprobs {
            body["logprobs"] = json!(1);
        }
        body
    }

    /// One streamed completion, timed from the moment it is sent.
    fn stream(&self, body: &Value) -> Result<StreamResult> {
        let start = Instant::now();
        let resp = self.post("/v1/completions", body)?;
        if !(200..300).contains(&resp.status) {
            let status = resp.status;
            bail!("HTTP {status}: {}", resp.text()?.trim());
        }
        let mut parser = SseParser::default();
        let mut lines = resp.body.lines();
        let events = std::iter::from_fn(move || loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(data) = parser.push_line(&line) {
                        return Some(Ok((start.elapsed().as_secs_f64(), data)));
                    }
                }
                Some(Err(e)) => return Some(Err(anyhow::Error::from(e))),
                None => {
                    return parser
                        .finish()
                        .map(|d| Ok((start.elapsed().as_secs_f64(), d)))
                }
            }
        });
        fold_events(events)
    }
}

pub fn run(args: &ServeBenchArgs) -> Result<()> {
    let url = Url::parse(&args.url)?;
    if args.streams.is_empty() || args.streams.contains(&0) {
        bail!("--streams needs counts of at least 1");
    }
    if args.max_tokens < 2 {
        bail!("--max-tokens must be at least 2 (decode speed is timed after the first token)");
    }
    let client = Client {
        url,
        api_key: args.api_key.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        model: args.model.clone(),
        logprobs: args.logprobs,
    };
    let server_models = request(
        &client.url,
        "GET",
        "/v1/models",
        None,
        client.api_key.as_deref(),
        client.timeout,
    )
    .and_then(|r| r.json())
    .with_context(|| format!("is a server running at {}?", client.url))?
    .get("data")
    .and_then(Value::as_array)
    .map(|d| {
        d.iter()
            .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
            .collect()
    })
    .unwrap_or_default();

    // Runs (and this invocation) draw different words, so no prompt prefix is cached from before.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    if !args.no_warmup {
        let prompt = client.prompt(nonce ^ 0xffff, args.prompt_tokens)?;
        client
            .stream(&client.completion_body(&prompt, 2, &args.ban_tokens))
            .context("warm-up request")?;
    }
    let mut runs = Vec::new();
    for &n in &args.streams {
        let prompts = (0..n)
            .map(|i| client.prompt(nonce ^ ((n as u64) << 32 | i as u64), args.prompt_tokens))
            .collect::<Result<Vec<_>>>()?;
        let bodies: Vec<Value> = prompts
            .iter()
            .map(|p| client.completion_body(p, args.max_tokens, &args.ban_tokens))
            .collect();
        let barrier = Barrier::new(n);
        let outcomes: Vec<Result<(Instant, StreamResult, Instant)>> = std::thread::scope(|s| {
            let handles: Vec<_> = bodies
                .iter()
                .map(|body| {
                    let (client, barrier) = (&client, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let start = Instant::now();
                        let r = client.stream(body)?;
                        Ok((start, r, Instant::now()))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a stream's thread panicked")))
                })
                .collect()
        });
        let mut per_stream = Vec::with_capacity(n);
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        for (i, o) in outcomes.into_iter().enumerate() {
            let (start, r, end) = o.with_context(|| format!("{n} streams: stream {i}"))?;
            first = Some(first.map_or(start, |f| f.min(start)));
            last = Some(last.map_or(end, |l| l.max(end)));
            per_stream.push(r);
        }
        let wall = match (first, last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64(),
            _ => unreachable!("at least one stream ran"),
        };
        let report = summarize(n, wall, per_stream);
        print_run(&report, args.max_tokens);
        runs.push(report);
    }
    let report = ServeBenchReport {
        tool: "kiln bench serve".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        url: client.url.to_string(),
        label: args.label.clone(),
        server_models,
        model: args.model.clone(),
        prompt_tokens: args.prompt_tokens,
        max_tokens: args.max_tokens,
        banned_tokens: args.ban_tokens.clone(),
        logprobs: args.logprobs,
        runs,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_run(r: &RunReport, max_tokens: usize) {
    let prompt = r
        .prompt_tokens_mean
        .map_or("?".to_string(), |p| format!("{p:.0}"));
    println!(
        "{:>3} streams: {:>8.2} tok/s aggregate ({} tokens in {:.2} s); TTFT mean {:.2} s, \
         p50 {:.2} s, p95 {:.2} s; per-stream decode {:.2} tok/s (prompt {prompt} tokens)",
        r.streams,
        r.aggregate_tokens_per_second,
        r.completion_tokens,
        r.wall_s,
        r.ttft_mean_s,
        r.ttft_p50_s,
        r.ttft_p95_s,
        r.decode_tokens_per_second_mean
    );
    let short = r
        .per_stream
        .iter()
        .filter(|s| s.completion_tokens < max_tokens as u64)
        .count();
    if short > 0 {
        eprintln!(
            "warning: {short} of {} streams stopped before {max_tokens} tokens (finish reasons: {:?})",
            r.streams,
            r.per_stream
                .iter()
                .map(|s| s.finish_reason.as_deref().unwrap_or("?"))
                .collect::<Vec<_>>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: f64, s: &str) -> Result<(f64, String)> {
        Ok((t, s.to_string()))
    }

    #[test]
    fn kiln_style_stream() {
        // Text chunks, an empty-text finish chunk, a separate usage chunk, then [DONE].
        let events = vec![
            ev(
                0.5,
                r#"{"choices":[{"index":0,"text":"a","finish_reason":null}]}"#,
            ),
            ev(
                0.6,
                r#"{"choices":[{"index":0,"text":"","finish_reason":null}]}"#,
            ),
            ev(
                0.7,
                r#"{"choices":[{"index":0,"text":"b","finish_reason":null}]}"#,
            ),
            ev(
                0.9,
                r#"{"choices":[{"index":0,"text":"c","finish_reason":null}]}"#,
            ),
            ev(
                0.95,
                r#"{"choices":[{"index":0,"text":"","finish_reason":"length"}]}"#,
            ),
            ev(
                0.96,
                r#"{"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":5}}"#,
            ),
            ev(0.97, "[DONE]"),
        ];
        let r = fold_events(events).unwrap();
        assert_eq!(r.completion_tokens, 5);
        assert!(r.usage_reported);
        assert_eq!(r.prompt_tokens, Some(8));
        assert_eq!(r.text_chunks, 3);
        assert_eq!((r.first_token_s, r.last_token_s), (Some(0.5), Some(0.9)));
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        assert!((r.decode_tokens_per_second().unwrap() - 4.0 / 0.4).abs() < 1e-9);
        assert_eq!(r.total_s, 0.97);
    }

    #[test]
    fn llama_server_style_stream() {
        // Usage and timings ride on the last choice chunk.
        let events = vec![
            ev(
                1.0,
                r#"{"choices":[{"text":"x","index":0,"finish_reason":null}],"object":"text_completion"}"#,
            ),
            ev(
                2.0,
                r#"{"choices":[{"text":"y","index":0,"finish_reason":null}]}"#,
            ),
            ev(
                2.1,
                r#"{"choices":[{"text":"","index":0,"finish_reason":"length"}],"usage":{"completion_tokens":2,"prompt_tokens":4,"total_tokens":6},"timings":{"predicted_per_second":1.5}}"#,
            ),
            ev(2.2, "[DONE]"),
        ];
        let r = fold_events(events).unwrap();
        assert_eq!((r.completion_tokens, r.prompt_tokens), (2, Some(4)));
        assert_eq!(r.server_timings, Some(json!({"predicted_per_second": 1.5})));
        assert_eq!(r.decode_tokens_per_second(), Some(1.0));
    }

    #[test]
    fn without_usage_counts_chunks_and_errors_fail() {
        let r = fold_events(vec![
            ev(0.1, r#"{"choices":[{"text":"a"}]}"#),
            ev(
                0.2,
                r#"{"choices":[{"text":"b","finish_reason":"length"}]}"#,
            ),
        ])
        .unwrap();
        assert_eq!((r.completion_tokens, r.usage_reported), (2, false));
        let e = fold_events(vec![ev(0.1, r#"{"error":{"message":"boom"}}"#)]).unwrap_err();
        assert!(e.to_string().contains("boom"));
        assert!(fold_events(vec![ev(0.1, r#"{"choices":[{"text":"a"}]}"#)]).is_err());
        assert!(fold_events(vec![ev(0.1, "not json")]).is_err());
    }

    #[test]
    fn logprobs_mark_tokens_whose_text_is_held() {
        let events = vec![
            ev(
                0.5,
                r#"{"choices":[{"text":"","logprobs":{"tokens":["\u00e2"]}}]}"#,
            ),
            ev(0.7, r#"{"choices":[{"text":"x","logprobs":null}]}"#),
            ev(
                0.8,
                r#"{"choices":[{"text":"","logprobs":null,"finish_reason":"length"}]}"#,
            ),
        ];
        let r = fold_events(events).unwrap();
        assert_eq!(
            (r.first_token_s, r.last_token_s, r.text_chunks),
            (Some(0.5), Some(0.7), 2)
        );
    }

    #[test]
    fn statistics() {
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 0.95) - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
        let stream = |first, last, tokens| StreamResult {
            first_token_s: Some(first),
            last_token_s: Some(last),
            completion_tokens: tokens,
            prompt_tokens: Some(10),
            ..Default::default()
        };
        let r = summarize(2, 4.0, vec![stream(1.0, 3.0, 9), stream(2.0, 4.0, 5)]);
        assert_eq!(r.completion_tokens, 14);
        assert_eq!(r.aggregate_tokens_per_second, 3.5);
        assert_eq!(r.ttft_mean_s, 1.5);
        assert_eq!(r.ttft_p50_s, 1.5);
        assert_eq!(r.decode_tokens_per_second_mean, (4.0 + 2.0) / 2.0);
        assert_eq!(r.prompt_tokens_mean, Some(10.0));
    }

    #[test]
    fn prompts_differ_by_seed() {
        assert_ne!(words(1, 20), words(2, 20));
        assert_eq!(words(3, 5), words(3, 5));
        assert_eq!(words(3, 5).split(' ').count(), 5);
    }
}
