//! OpenAI's response shapes: a whole `chat.completion` / `text_completion`, and the
//! `chat.completion.chunk` / streamed `text_completion` pieces, with usage and log-probabilities.

use kiln_llm::chat::{parse_tool_calls, tool_calls_start};
use kiln_llm::sampling::{FinishReason, Sampled};
use kiln_llm::{Generation, Tokenizer, ToolCall, ToolCallIds};
use serde_json::{json, Value};

/// One finished choice as answered: its text content and, when the model called tools, the
/// calls (then the content is what came before `[TOOL_CALLS]`).
pub struct Reply {
    pub generation: Generation,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

impl Reply {
    /// `generation` read for tool calls when `tools` were offered. Output that starts a tool call
    /// but does not parse stays plain content, so the client sees what the model wrote.
    pub fn new(tokenizer: &Tokenizer, generation: Generation, tools: bool) -> Reply {
        if tools {
            let mut ids = ToolCallIds::new(generation.seed);
            if let Ok(Some(calls)) = parse_tool_calls(tokenizer, &generation.tokens, &mut ids) {
                let start = tool_calls_start(tokenizer, &generation.tokens).unwrap_or(0);
                let content = tokenizer
                    .decode(&generation.tokens[..start], true)
                    .unwrap_or_default();
                return Reply {
                    generation,
                    content,
                    tool_calls: calls,
                };
            }
        }
        Reply {
            content: generation.text.clone(),
            generation,
            tool_calls: Vec::new(),
        }
    }

    pub fn finish_reason(&self) -> &'static str {
        if self.tool_calls.is_empty() {
            finish_reason(self.generation.finish)
        } else {
            "tool_calls"
        }
    }

    /// OpenAI's `tool_calls` list (with `index` for stream deltas).
    pub fn tool_calls_json(&self, with_index: bool) -> Vec<Value> {
        self.tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                });
                if with_index {
                    v["index"] = json!(i);
                }
                v
            })
            .collect()
    }
}

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
    pub fn complete(&self, tokenizer: &Tokenizer, replies: &[Reply], logprobs: bool) -> Value {
        let choices = replies
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let lp = logprobs.then(|| self.logprobs(tokenizer, &r.generation.sampled));
                match self.api {
                    Api::Chat => {
                        let mut message = json!({"role": "assistant", "content": r.content});
                        if !r.tool_calls.is_empty() {
                            message["tool_calls"] = Value::Array(r.tool_calls_json(false));
                            if r.content.is_empty() {
                                message["content"] = Value::Null;
                            }
                        }
                        json!({
                            "index": i,
                            "message": message,
                            "logprobs": lp,
                            "finish_reason": r.finish_reason(),
                        })
                    }
                    Api::Completion => json!({
                        "index": i,
                        "text": r.content,
                        "logprobs": lp,
                        "finish_reason": r.finish_reason(),
                    }),
                }
            })
            .collect();
        let mut out = self.wrap(false, choices);
        let generations: Vec<&Generation> = replies.iter().map(|r| &r.generation).collect();
        out["usage"] = usage(&generations);
        out
    }

    /// A streamed choice's tool calls, whole, as one delta.
    pub fn tool_calls_chunk(&self, choice: usize, reply: &Reply) -> Value {
        self.wrap(
            true,
            vec![json!({
                "index": choice,
                "delta": {"tool_calls": reply.tool_calls_json(true)},
                "logprobs": null,
                "finish_reason": null,
            })],
        )
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
    pub fn finish_chunk(&self, choice: usize, reply: &Reply) -> Value {
        let body = match self.api {
            Api::Chat => json!({
                "index": choice,
                "delta": {},
                "logprobs": null,
                "finish_reason": reply.finish_reason(),
            }),
            Api::Completion => json!({
                "index": choice,
                "text": "",
                "logprobs": null,
                "finish_reason": reply.finish_reason(),
            }),
        };
        self.wrap(true, vec![body])
    }

    /// `stream_options.include_usage`: a last chunk with no choices and the usage.
    pub fn usage_chunk(&self, generations: &[&Generation]) -> Value {
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
pub fn usage(generations: &[&Generation]) -> Value {
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
