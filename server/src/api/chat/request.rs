//! OpenAI chat / text completion request bodies, checked field by field into what the engine
//! runs: the prompt ids (rendered through the model's chat template), one `GenerateOptions` per
//! choice, and how to answer (streamed or not, usage, log-probabilities). Every problem is a 400
//! naming the field; a field kiln does not implement is refused, never silently ignored.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_llm::constrain::{
    tool_specs_grammar_with, ConstraintError, Grammar, ResponseFormat, ToolCallRules,
};
use kiln_llm::sampling::SamplingParams;
use kiln_llm::vision::PromptImage;
use kiln_llm::{GenerateOptions, Message, Role, ToolCall, ToolSpec};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::body::{parse_json, Body};
use super::super::jobs::resolve_kind;
use super::super::AppState;
use super::images::{self, ImagePart};
use crate::catalog::{ModelEntry, ModelKind};
use crate::error::{ApiError, ApiResult};
use crate::llm_models::LlmInfo;

/// Fields shared by both endpoints, all optional.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SamplingFields {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    stop: Option<Stop>,
    seed: Option<i64>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    logit_bias: Option<BTreeMap<String, f32>>,
    n: Option<i64>,
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

const SAMPLING_FIELDS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "n",
    "user",
];

/// A request checked and rendered, ready to queue.
pub struct Plan {
    pub model: ModelEntry,
    pub info: Arc<LlmInfo>,
    pub prompt: Vec<u32>,
    /// The images among the prompt's positions.
    pub images: Vec<PromptImage>,
    /// One per choice.
    pub choices: Vec<GenerateOptions>,
    pub stream: bool,
    pub include_usage: bool,
    /// Report log-probabilities (chat: `logprobs`; completions: `logprobs` > 0).
    pub logprobs: bool,
    /// The tools offered (in the prompt), and how the model may use them.
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
}

/// OpenAI's `tool_choice`.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    Auto,
    /// No tool calls: the tools stay out of the prompt.
    None,
    /// The reply must be tool calls.
    Required,
    /// The reply must call this function.
    Function(String),
}

/// The body as a JSON object, refusing fields outside `known` by name.
fn object(body: Body, known: &[&[&str]]) -> ApiResult<Map<String, Value>> {
    let value: Value = parse_json(body)?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid("body", "body must be a JSON object"));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !known.iter().any(|set| set.contains(&k.as_str())))
    {
        return Err(ApiError::invalid(
            unknown,
            format!("`{unknown}` is not supported by kiln"),
        ));
    }
    Ok(map)
}

fn fields<T: serde::de::DeserializeOwned>(map: &Map<String, Value>) -> ApiResult<T> {
    let value = Value::Object(map.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::invalid(&field, format!("{field}: {}", e.inner()))
    })
}

/// `POST /v1/chat/completions`.
pub async fn chat_plan(state: &AppState, body: Body) -> ApiResult<Plan> {
    const CHAT: &[&str] = &[
        "messages",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    ];
    let map = object(body, &[SAMPLING_FIELDS, CHAT])?;
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Chat {
        messages: Option<Vec<Value>>,
        logprobs: Option<bool>,
        top_logprobs: Option<i64>,
        tools: Option<Vec<Value>>,
        tool_choice: Option<Value>,
        parallel_tool_calls: Option<bool>,
        response_format: Option<Value>,
    }
    let chat: Chat = fields(&map)?;
    let common: SamplingFields = fields(&map)?;
    let (model, info) = chat_model(state, &common)?;
    let raw = chat
        .messages
        .ok_or_else(|| ApiError::invalid("messages", "messages is required"))?;
    if raw.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(raw.len());
    let mut image_parts = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let (message, parts) = message(i, m)?;
        messages.push(message);
        image_parts.extend(parts);
    }
    let tools = chat
        .tools
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, t)| tool(i, t))
        .collect::<ApiResult<Vec<_>>>()?;
    let tool_choice = tool_choice(chat.tool_choice.as_ref(), &tools)?;
    // Images last: every cheap check above has passed before anything is fetched or decoded.
    if !image_parts.is_empty() {
        let settings = &state.config.chat_images;
        images::check(&image_parts, settings)?;
        let first = image_parts[0].at.clone();
        let owners: Vec<usize> = image_parts.iter().map(|p| p.message).collect();
        let decoded = images::load(image_parts, settings, &state.image_client).await?;
        // After decoding, so a bad image is reported as such whichever model is asked.
        if !info.accepts_images() {
            return Err(ApiError::invalid(
                &first,
                format!(
                    "{first}: model {} has no vision encoder: it reads text only",
                    model.name
                ),
            ));
        }
        for (owner, image) in owners.into_iter().zip(decoded) {
            messages[owner].images.push(image);
        }
    }
    let offered: &[ToolSpec] = if tool_choice == ToolChoice::None {
        &[]
    } else {
        &tools
    };
    let prompt = info
        .template
        .encode_prompt(
            &info.tokenizer,
            &messages,
            offered,
            info.image_processor.as_ref(),
        )
        .map_err(|e| {
            let field = if e.to_string().contains("tools") && !offered.is_empty() {
                "tools"
            } else {
                "messages"
            };
            ApiError::invalid(field, e.to_string())
        })?;
    let top_logprobs = match chat.top_logprobs {
        None => 0,
        Some(n) if (0..=20).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs {n} must be from 0 to 20"),
            ))
        }
    };
    let logprobs = chat.logprobs.unwrap_or(false);
    if top_logprobs > 0 && !logprobs {
        return Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        ));
    }
    let format = match &chat.response_format {
        None | Some(Value::Null) => ResponseFormat::Text,
        Some(v) => ResponseFormat::from_openai(v)
            .map_err(|e| ApiError::invalid("response_format", e.to_string()))?,
    };
    let single_call = chat.parallel_tool_calls == Some(false);
    let grammar = grammar(&info, &format, &tools, &tool_choice, single_call)?;
    let mut plan = plan(model, info, prompt.ids, &common, logprobs, top_logprobs)?;
    plan.images = prompt.images;
    for options in &mut plan.choices {
        options.constraint = grammar.clone();
    }
    plan.tools = tools;
    plan.tool_choice = tool_choice;
    Ok(plan)
}

/// What the replies must follow, compiled before anything is queued so a bad schema is a 400
/// (never a 200 with unconstrained text): the tool-call grammar when a call is required (all
/// tools, or the named one), text or schema-bound calls for `auto` with `strict` tools, else the
/// response format's JSON grammar, if any.
fn grammar(
    info: &LlmInfo,
    format: &ResponseFormat,
    tools: &[ToolSpec],
    choice: &ToolChoice,
    single_call: bool,
) -> ApiResult<Option<Grammar>> {
    let calls_forced = matches!(choice, ToolChoice::Required | ToolChoice::Function(_));
    let strict_auto = *choice == ToolChoice::Auto && tools.iter().any(|t| t.strict);
    if !format.is_text() && (calls_forced || (*choice == ToolChoice::Auto && !tools.is_empty())) {
        return Err(ApiError::invalid(
            "response_format",
            "response_format cannot be combined with tools the model may call; \
             use tool_choice \"none\" or drop response_format",
        ));
    }
    if format.is_text() && !calls_forced && !strict_auto {
        return Ok(None);
    }
    let vocab = info
        .tokenizer
        .constraint_vocabulary()
        .map_err(|e| ApiError::internal(format!("cannot build the grammar vocabulary: {e}")))?;
    let rules = |or_text| ToolCallRules {
        or_text,
        single_call,
    };
    let compiled = match choice {
        ToolChoice::Required => tool_specs_grammar_with(tools, rules(false), &vocab),
        ToolChoice::Function(name) => {
            let named: Vec<ToolSpec> = tools.iter().filter(|t| &t.name == name).cloned().collect();
            tool_specs_grammar_with(&named, rules(false), &vocab)
        }
        ToolChoice::Auto if strict_auto => tool_specs_grammar_with(tools, rules(true), &vocab),
        _ => format
            .compile(&vocab)
            .and_then(|g| g.ok_or_else(|| ConstraintError::Grammar("no grammar".into()))),
    };
    let field = if format.is_text() {
        "tools"
    } else {
        "response_format"
    };
    compiled
        .map(Some)
        .map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// `tools[i]`: `{"type": "function", "function": {"name", "description"?, "parameters"?,
/// "strict"?}}`.
fn tool(i: usize, t: &Value) -> ApiResult<ToolSpec> {
    let at = format!("tools[{i}]");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            &at,
            "a tool must have \"type\": \"function\"",
        ));
    }
    let f = t
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::invalid(&format!("{at}.function"), "function is required"))?;
    if let Some(k) = f
        .keys()
        .find(|k| !["name", "description", "parameters", "strict"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            &format!("{at}.function.{k}"),
            format!("`{k}` is not supported by kiln"),
        ));
    }
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid(&format!("{at}.function.name"), "name is required"))?;
    let parameters = f.get("parameters").cloned().unwrap_or(Value::Null);
    if !matches!(parameters, Value::Object(_) | Value::Null) {
        return Err(ApiError::invalid(
            &format!("{at}.function.parameters"),
            "parameters must be a JSON schema object",
        ));
    }
    Ok(ToolSpec {
        name: name.to_string(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .map(String::from),
        parameters,
        strict: f.get("strict").and_then(Value::as_bool).unwrap_or(false),
    })
}

fn tool_choice(value: Option<&Value>, tools: &[ToolSpec]) -> ApiResult<ToolChoice> {
    let bad = |msg: String| ApiError::invalid("tool_choice", msg);
    let choice = match value {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(format!(
                    "tool_choice {other:?}: use auto, none, required or a function"
                )))
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                if !tools.iter().any(|t| t.name == name) {
                    return Err(bad(format!("tool_choice names {name:?}, which is not in tools")));
                }
                ToolChoice::Function(name.to_string())
            }
            _ => {
                return Err(bad(
                    "tool_choice must be a string or {\"type\": \"function\", \"function\": {\"name\"}}".into(),
                ))
            }
        },
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(bad(
            "tool_choice asks for a tool call but no tools are given".into(),
        ));
    }
    Ok(choice)
}

/// `POST /v1/completions`: a prompt string, no template.
pub fn completion_plan(state: &AppState, body: Body) -> ApiResult<Plan> {
    const COMPLETION: &[&str] = &["prompt", "logprobs"];
    let map = object(body, &[SAMPLING_FIELDS, COMPLETION])?;
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Completion {
        prompt: Option<Value>,
        logprobs: Option<i64>,
    }
    let c: Completion = fields(&map)?;
    let common: SamplingFields = fields(&map)?;
    let (model, info) = chat_model(state, &common)?;
    let text = match c.prompt {
        Some(Value::String(s)) => s,
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "prompt must be a string (or a list of one string)",
            ))
        }
        None => return Err(ApiError::invalid("prompt", "prompt is required")),
    };
    if text.is_empty() {
        return Err(ApiError::invalid("prompt", "prompt must not be empty"));
    }
    let mut prompt: Vec<u32> = info.tokenizer.bos_id().into_iter().collect();
    prompt.extend(
        info.tokenizer
            .encode(&text)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
    );
    let top = match c.logprobs {
        None => None,
        Some(n) if (0..=5).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("logprobs {n} must be from 0 to 5"),
            ))
        }
    };
    plan(
        model,
        info,
        prompt,
        &common,
        top.is_some(),
        top.unwrap_or(0),
    )
}

/// The chat model named by `model` (or the only one served).
fn chat_model(state: &AppState, f: &SamplingFields) -> ApiResult<(ModelEntry, Arc<LlmInfo>)> {
    let entry = match f.model.as_deref().filter(|m| !m.is_empty()) {
        Some(name) => resolve_kind(state, name, "model", ModelKind::Llm)?,
        None => {
            let llms = state.catalog.list_kind(ModelKind::Llm);
            match &llms[..] {
                [one] => one.clone(),
                [] => return Err(ApiError::invalid("model", "this server has no chat model")),
                _ => {
                    return Err(ApiError::invalid(
                        "model",
                        "model is required: this server has several chat models",
                    ))
                }
            }
        }
    };
    let info = state.llms.get(&entry)?;
    Ok((entry, info))
}

/// One message: role system / user / assistant / tool, content a string or a list of text parts
/// (and, in a user message, `image_url` parts: returned to be fetched and decoded, in order);
/// an assistant message may carry `tool_calls` (content then may be null), a tool message its
/// `tool_call_id`.
fn message(i: usize, m: &Value) -> ApiResult<(Message, Vec<ImagePart>)> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Some(obj) = m.as_object() else {
        return Err(ApiError::invalid(
            &format!("messages[{i}]"),
            "each message must be an object with role and content",
        ));
    };
    const FIELDS: &[&str] = &["role", "content", "name", "tool_calls", "tool_call_id"];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            &at(k),
            format!("message field `{k}` is not supported by kiln"),
        ));
    }
    let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            &at("role"),
            "role is required: system, user, assistant or tool",
        )
    })?;
    let role = Role::parse(role).ok_or_else(|| {
        ApiError::invalid(
            &at("role"),
            format!("unknown role {role:?}: use system, user, assistant or tool"),
        )
    })?;
    let calls = match obj.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) if role != Role::Assistant => {
            return Err(ApiError::invalid(
                &at("tool_calls"),
                "only assistant messages carry tool_calls",
            ))
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(j, c)| tool_call(&format!("messages[{i}].tool_calls[{j}]"), c))
            .collect::<ApiResult<Vec<_>>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                &at("tool_calls"),
                "tool_calls must be a list",
            ))
        }
    };
    let mut image_parts = Vec::new();
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let field = format!("messages[{i}].content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => match part.get("text").and_then(Value::as_str) {
                        Some(t) => text.push_str(t),
                        None => return Err(ApiError::invalid(&field, "a text part needs `text`")),
                    },
                    Some("image_url") if role != Role::User => {
                        return Err(ApiError::invalid(
                            &field,
                            format!(
                                "{field}: images are accepted only in user messages, and this \
                                 message's role is {}",
                                role.as_str()
                            ),
                        ))
                    }
                    Some("image_url") => image_parts.push(images::part(&field, i, part)?),
                    other => {
                        return Err(ApiError::invalid(
                            &field,
                            format!("unsupported content part type {other:?}"),
                        ))
                    }
                }
            }
            text
        }
        None | Some(Value::Null) if !calls.is_empty() => String::new(),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(&at("content"), "content is required"))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                &at("content"),
                "content must be a string or a list of parts",
            ))
        }
    };
    let mut message = Message::new(role, content);
    message.tool_calls = calls;
    match (role, obj.get("tool_call_id")) {
        (Role::Tool, Some(Value::String(id))) => message.tool_call_id = Some(id.clone()),
        (Role::Tool, _) => {
            return Err(ApiError::invalid(
                &at("tool_call_id"),
                "a tool message needs the tool_call_id it answers",
            ))
        }
        (_, None | Some(Value::Null)) => {}
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                &at("tool_call_id"),
                "only tool messages carry tool_call_id",
            ))
        }
    }
    Ok((message, image_parts))
}

/// An assistant's earlier call: `{"id", "type": "function", "function": {"name", "arguments"}}`.
fn tool_call(at: &str, c: &Value) -> ApiResult<ToolCall> {
    let field = |f: &str| format!("{at}.{f}");
    let text = |v: Option<&Value>, f: &str| {
        v.and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| ApiError::invalid(&field(f), format!("{f} must be a string")))
    };
    Ok(ToolCall {
        id: text(c.get("id"), "id")?,
        name: text(c.pointer("/function/name"), "function.name")?,
        arguments: text(c.pointer("/function/arguments"), "function.arguments")?,
    })
}

fn plan(
    model: ModelEntry,
    info: Arc<LlmInfo>,
    prompt: Vec<u32>,
    f: &SamplingFields,
    logprobs: bool,
    top_logprobs: usize,
) -> ApiResult<Plan> {
    let mut p = SamplingParams::openai();
    if let Some(t) = f.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature {t} must be from 0 to 2"),
            ));
        }
        p.temperature = t;
    }
    if let Some(v) = f.top_p {
        p.top_p = v;
    }
    if let Some(k) = f.top_k {
        p.top_k = usize::try_from(k)
            .map_err(|_| ApiError::invalid("top_k", format!("top_k {k} must be >= 0 (0 = off)")))?;
    }
    if let Some(v) = f.min_p {
        p.min_p = v;
    }
    if let Some(v) = f.frequency_penalty {
        p.frequency_penalty = v;
    }
    if let Some(v) = f.presence_penalty {
        p.presence_penalty = v;
    }
    if let Some(v) = f.repetition_penalty {
        p.repetition_penalty = v;
    }
    if let Some(bias) = &f.logit_bias {
        for (k, &v) in bias {
            let id: u32 = k.parse().map_err(|_| {
                ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias key {k:?} is not a token id"),
                )
            })?;
            p.logit_bias.insert(id, v);
        }
    }
    p.seed = match f.seed {
        None => None,
        Some(s) if s >= 0 => Some(s as u64),
        Some(s) => return Err(ApiError::invalid("seed", format!("seed {s} must be >= 0"))),
    };
    p.logprobs = logprobs;
    p.top_logprobs = top_logprobs;
    p.validate_for_vocab(info.config.vocab_size)
        .map_err(|e| match &e {
            kiln_llm::sampling::SamplingError::InvalidParam { field, .. } => {
                ApiError::invalid(field, e.to_string())
            }
            _ => ApiError::invalid("logit_bias", e.to_string()),
        })?;

    let max_tokens = match (f.max_completion_tokens, f.max_tokens) {
        (Some(n), _) | (None, Some(n)) => {
            let field = if f.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            if n < 1 {
                return Err(ApiError::invalid(
                    field,
                    format!("{field} {n} must be at least 1"),
                ));
            }
            Some((field, n as usize))
        }
        (None, None) => None,
    };
    let context = info.context;
    if prompt.len() >= context {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the prompt has {} tokens; this server's context per slot is {context} tokens",
                prompt.len()
            ),
        )
        .code("context_length_exceeded"));
    }
    if let Some((field, n)) = max_tokens {
        if prompt.len() + n > context {
            return Err(ApiError::invalid(
                field,
                format!(
                    "the prompt's {} tokens plus {field} {n} exceed this server's context of \
                     {context} tokens per slot",
                    prompt.len()
                ),
            )
            .code("context_length_exceeded"));
        }
    }
    let stop = match &f.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(list)) => list.clone(),
    };
    if stop.len() > 16 || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "stop must be a non-empty string or a list of at most 16 of them",
        ));
    }
    let n = match f.n {
        None => 1,
        Some(n) if (1..=16).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("n {n} must be from 1 to 16"),
            ))
        }
    };
    let choices = (0..n)
        .map(|i| {
            let mut sampling = p.clone();
            // Choice i of a seeded request is reproducible on its own: seed + i.
            sampling.seed = p.seed.map(|s| s.wrapping_add(i as u64));
            GenerateOptions {
                sampling,
                max_tokens: max_tokens.map(|(_, n)| n),
                stop: stop.clone(),
                constraint: None,
            }
        })
        .collect();
    Ok(Plan {
        model,
        info,
        prompt,
        images: Vec::new(),
        choices,
        stream: f.stream.unwrap_or(false),
        include_usage: f.stream_options.as_ref().is_some_and(|o| o.include_usage),
        logprobs,
        tools: Vec::new(),
        tool_choice: ToolChoice::None,
    })
}
