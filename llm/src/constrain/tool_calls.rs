//! The grammar of a Mistral tool-call reply: the `[TOOL_CALLS]` control token, then a JSON array
//! of calls, `[{"name": "get_weather", "arguments": {"city": "Paris"}}]`, as V7-Tekken models
//! write it (mistral-common parses exactly this), each call's arguments valid against its tool's
//! parameter schema.

use std::sync::Arc;

use serde_json::{json, Value};

use super::grammar::prepare_schema;
use super::{ConstraintError, Grammar, Result, TokenVocabulary};
use crate::chat::ToolSpec;

/// What else a tool-call grammar allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ToolCallRules {
    /// Plain text instead of calls (OpenAI's `tool_choice: "auto"` with `strict` tools): the
    /// model decides, and once it writes `[TOOL_CALLS]` the calls are constrained. Text never
    /// contains control tokens.
    pub or_text: bool,
    /// Exactly one call (OpenAI's `parallel_tool_calls: false`); else one or more.
    pub single_call: bool,
}

/// [`tool_calls_grammar`] for the tools of a request.
pub fn tool_specs_grammar(tools: &[ToolSpec], vocab: &Arc<TokenVocabulary>) -> Result<Grammar> {
    build(&specs(tools), vocab, ToolCallRules::default())
}

/// [`tool_specs_grammar`] with `rules`.
pub fn tool_specs_grammar_with(
    tools: &[ToolSpec],
    rules: ToolCallRules,
    vocab: &Arc<TokenVocabulary>,
) -> Result<Grammar> {
    build(&specs(tools), vocab, rules)
}

/// Text, or calls that follow their schemas (see [`ToolCallRules::or_text`]).
pub fn tool_specs_or_text_grammar(
    tools: &[ToolSpec],
    vocab: &Arc<TokenVocabulary>,
) -> Result<Grammar> {
    let rules = ToolCallRules {
        or_text: true,
        single_call: false,
    };
    build(&specs(tools), vocab, rules)
}

fn specs(tools: &[ToolSpec]) -> Vec<(String, Value)> {
    tools
        .iter()
        .map(|t| (t.name.clone(), t.parameters.clone()))
        .collect()
}

/// `tools`: each tool's name and its parameters' JSON schema (`null` or `{}`: any object). The
/// reply is one or more calls.
pub fn tool_calls_grammar(
    tools: &[(String, Value)],
    vocab: &Arc<TokenVocabulary>,
) -> Result<Grammar> {
    build(tools, vocab, ToolCallRules::default())
}

fn build(
    tools: &[(String, Value)],
    vocab: &Arc<TokenVocabulary>,
    rules: ToolCallRules,
) -> Result<Grammar> {
    if tools.is_empty() {
        return Err(ConstraintError::Grammar(
            "tool calls: no tools to call".into(),
        ));
    }
    let marker = vocab.special_lark("[TOOL_CALLS]").ok_or_else(|| {
        ConstraintError::Grammar("tool calls: the tokenizer has no [TOOL_CALLS] token".into())
    })?;
    let start = if rules.or_text {
        "start: calls | text\ntext: /(?s:.+)/\n"
    } else {
        "start: calls\n"
    };
    let more = if rules.single_call {
        ""
    } else {
        " (\", \" call)*"
    };
    let mut lark = format!("{start}calls: {marker} \"[\" call{more} \"]\"\ncall: ");
    let mut rules = String::new();
    for (i, (name, parameters)) in tools.iter().enumerate() {
        // Mistral's arguments are an object: no schema (`null`, `{}`) means any object.
        let any_object = json!({"type": "object"});
        let parameters = match parameters {
            Value::Null => &any_object,
            Value::Object(map) if map.is_empty() => &any_object,
            p => p,
        };
        let schema = prepare_schema(parameters)
            .map_err(|e| ConstraintError::Grammar(format!("tool `{name}` parameters: {e}")))?;
        // The name is written as JSON writes it, then quoted again as a Lark string literal.
        let head = format!(
            "{{\"name\": {}, \"arguments\": ",
            serde_json::to_string(name).map_err(|e| {
                ConstraintError::Grammar(format!("tool `{name}`: cannot write its name: {e}"))
            })?
        );
        let head = serde_json::to_string(&head)
            .map_err(|e| ConstraintError::Grammar(format!("tool `{name}`: {e}")))?;
        if i > 0 {
            lark.push_str(" | ");
        }
        lark.push_str(&format!("call_{i}"));
        rules.push_str(&format!(
            "call_{i}: {head} args_{i} \"}}\"\nargs_{i}: %json {schema}\n"
        ));
    }
    lark.push('\n');
    lark.push_str(&rules);
    Grammar::lark(&lark, vocab).map_err(|e| match e {
        ConstraintError::Grammar(m) => ConstraintError::Grammar(format!("tool calls: {m}")),
        other => other,
    })
}
