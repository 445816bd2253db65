//! OpenAI's response shapes: a whole `chat.completion` / `text_completion`, and the
//! `chat.completion.chunk` / streamed `text_completion` pieces, with usage and log-probabilities.

use kiln_llm::sampling::{FinishReason, Sampled};
use kiln_llm::{Generation, Tokenizer};
use serde_json::{json, Value};

/// Which endpoint is answering.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completion,
}

/// What identifies every piece of one response.
pub struct Header {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Header {
    pub fn new(api: Api, model: &str) -> Header {
        let prefix = match api {
            Api::Chat => "chatcmpl",
            Api::Completion => "cmpl",
        };
        Header {
            api,
            id: format!(
                "{prefix}-{:016x}",
                super::super::random_seed() << 32 | super::super::random_seed()
            ),
            created: unix_now(),
            model: model.to_string(),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Completion, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("kiln-", env!("CARGO_PKG_VERSION")),
            "choices": choices,
        })
    }

    /// The whole answer: one choice per generation, in order.
    pub fn complete(
        &self,
        tokenizer: &Tokenizer,
        generations: &[Generation],
        logprobs: bool,
    ) -> Value {
        let choices = generations
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let lp = logprobs.then(|| self.logprobs(tokenizer, &g.sampled));
                match self.api {
                    Api::Chat => json!({
                        "index": i,
                        "message": {"role": "assistant", "content": g.text},
                        "logprobs": lp,
                        "finish_reason": finish_reason(g.finish),
                    }),
                    Api::Completion => json!({
                        "index": i,
                        "text": g.text,
                        "logprobs": lp,
                        "finish_reason": finish_reason(g.finish),
                    }),
                }
            })
            .collect();
        let mut out = self.wrap(false, choices);
        out["usage"] = usage(generations);
        out
    }

    /// The first chunk of a streamed chat choice: the role, no text.
    pub fn role_chunk(&self, choice: usize) -> Value {
        self.wrap(
            true,
            vec![json!({
                "index": choice,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            })],
        )
    }

    /// A streamed piece of text for `choice`, with the token's log-probabilities when asked.
    pub fn text_chunk(
        &self,
        tokenizer: &Tokenizer,
        choice: usize,
        text: &str,
        sampled: Option<&Sampled>,
    ) -> Value {
        let lp = sampled.map(|s| self.logprobs(tokenizer, std::slice::from_ref(s)));
        let body = match self.api {
            Api::Chat => json!({
                "index": choice,
                "delta": {"content": text},
                "logprobs": lp,
                "finish_reason": null,
            }),
            Api::Completion => json!({
                "index": choice,
                "text": text,
                "logprobs": lp,
                "finish_reason": null,
            }),
        };
        self.wrap(true, vec![body])
    }

    /// The last chunk of a streamed choice: no text, the finish reason.
    pub fn finish_chunk(&self, choice: usize, g: &Generation) -> Value {
        let body = match self.api {
            Api::Chat => json!({
                "index": choice,
                "delta": {},
                "logprobs": null,
                "finish_reason": finish_reason(g.finish),
            }),
            Api::Completion => json!({
                "index": choice,
                "text": "",
                "logprobs": null,
                "finish_reason": finish_reason(g.finish),
            }),
        };
        self.wrap(true, vec![body])
    }

    /// `stream_options.include_usage`: a last chunk with no choices and the usage.
    pub fn usage_chunk(&self, generations: &[Generation]) -> Value {
        let mut out = self.wrap(true, Vec::new());
        out["usage"] = usage(generations);
        out
    }

    /// OpenAI's log-probability object for `sampled` tokens (chat: `content` entries with
    /// bytes and top alternatives; completions: the legacy parallel lists).
    fn logprobs(&self, tokenizer: &Tokenizer, sampled: &[Sampled]) -> Value {
        let piece = |id: u32| tokenizer.decode(&[id], false).unwrap_or_default();
        match self.api {
            Api::Chat => {
                let entry = |id: u32, logprob: f32| {
                    let token = piece(id);
                    json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()})
                };
                let content: Vec<Value> = sampled
                    .iter()
                    .map(|s| {
                        let mut e = entry(s.id, s.logprob.unwrap_or(0.0));
                        e["top_logprobs"] = s
                            .top_logprobs
                            .iter()
                            .map(|&(id, lp)| entry(id, lp))
                            .collect();
                        e
                    })
                    .collect();
                json!({"content": content, "refusal": null})
            }
            Api::Completion => {
                let tokens: Vec<String> = sampled.iter().map(|s| piece(s.id)).collect();
                let mut offset = 0;
                let offsets: Vec<usize> = tokens
                    .iter()
                    .map(|t| {
                        let at = offset;
                        offset += t.len();
                        at
                    })
                    .collect();
                let top: Vec<Value> = sampled
                    .iter()
                    .map(|s| {
                        let map: serde_json::Map<String, Value> = s
                            .top_logprobs
                            .iter()
                            .map(|&(id, lp)| (piece(id), json!(lp)))
                            .collect();
                        Value::Object(map)
                    })
                    .collect();
                json!({
                    "tokens": tokens,
                    "token_logprobs": sampled.iter().map(|s| s.logprob.unwrap_or(0.0)).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }
}

pub fn finish_reason(f: FinishReason) -> &'static str {
    f.as_str()
}

/// Prompt tokens once (every choice shares the prompt), completion tokens over all choices: every
/// sampled token, the end-of-sequence token included, as llama-server counts them.
pub fn usage(generations: &[Generation]) -> Value {
    let prompt = generations.first().map_or(0, |g| g.prompt_tokens);
    let completion: usize = generations.iter().map(|g| g.sampled.len()).sum();
    let cached = generations
        .first()
        .map_or(0, |g| g.prompt_tokens - g.prefilled);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
