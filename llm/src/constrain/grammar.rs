//! A compiled grammar: a JSON schema or a Lark grammar turned into llguidance's parser for one
//! vocabulary. Compiling checks the whole schema, so an unsupported or broken one is refused
//! before generation; starting a sequence from it is a cheap clone.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::TokenParser;
use serde_json::{json, Map, Value};

use super::{ConstraintError, GrammarConstraint, ResponseFormat, Result, TokenVocabulary};

#[derive(Clone)]
pub struct Grammar {
    vocab: Arc<TokenVocabulary>,
    parser: TokenParser,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar")
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl Grammar {
    /// The grammar of a response format. `Text` has none and is an error here; see
    /// [`ResponseFormat::compile`] for the optional form.
    pub fn compile(format: &ResponseFormat, vocab: &Arc<TokenVocabulary>) -> Result<Grammar> {
        match format {
            ResponseFormat::Text => Err(ConstraintError::Grammar(
                "response_format text: free text has no grammar".into(),
            )),
            ResponseFormat::JsonObject => Grammar::json_object(vocab),
            ResponseFormat::JsonSchema { name, schema, .. } => Grammar::json_schema(schema, vocab)
                .map_err(|e| match e {
                    ConstraintError::Grammar(m) => {
                        ConstraintError::Grammar(format!("json_schema `{name}`: {m}"))
                    }
                    other => other,
                }),
        }
    }

    /// Any JSON object.
    pub fn json_object(vocab: &Arc<TokenVocabulary>) -> Result<Grammar> {
        Grammar::json_schema(&json!({"type": "object"}), vocab)
    }

    /// JSON valid against `schema` (draft 2020-12 and older; `$ref` within the document).
    pub fn json_schema(schema: &Value, vocab: &Arc<TokenVocabulary>) -> Result<Grammar> {
        let schema = prepare_schema(schema)?;
        Grammar::build(
            TopLevelGrammar::from_json_schema(schema),
            vocab,
            "JSON schema",
        )
    }

    /// A grammar in llguidance's Lark syntax (`start: ...`; control tokens as `<[id]>`, see
    /// [`TokenVocabulary::special_lark`]; `%json { schema }` embeds a JSON schema).
    pub fn lark(grammar: &str, vocab: &Arc<TokenVocabulary>) -> Result<Grammar> {
        Grammar::build(
            TopLevelGrammar::from_lark(grammar.to_string()),
            vocab,
            "Lark grammar",
        )
    }

    fn build(top: TopLevelGrammar, vocab: &Arc<TokenVocabulary>, what: &str) -> Result<Grammar> {
        // Schemas come from clients: a panic inside the compiler must not take a server down.
        let created = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            vocab.factory().create_parser(top)
        }))
        .map_err(|_| ConstraintError::Grammar(format!("the {what} crashed the compiler")))?;
        let parser =
            created.map_err(|e| ConstraintError::Grammar(format!("invalid {what}: {e}")))?;
        Ok(Grammar {
            vocab: vocab.clone(),
            parser,
        })
    }

    /// The matcher of one sequence, at the grammar's start.
    pub fn start(&self) -> GrammarConstraint {
        GrammarConstraint::new(self.parser.clone(), self.vocab.clone())
    }

    pub fn vocabulary(&self) -> &Arc<TokenVocabulary> {
        &self.vocab
    }
}

impl ResponseFormat {
    /// The grammar this format needs: none for `Text`.
    pub fn compile(&self, vocab: &Arc<TokenVocabulary>) -> Result<Option<Grammar>> {
        match self {
            ResponseFormat::Text => Ok(None),
            _ => Grammar::compile(self, vocab).map(Some),
        }
    }
}

/// How kiln writes JSON: the separators of Python's `json.dumps` and no other whitespace, so the
/// grammar never lets a model pad a reply with blanks until `max_tokens`.
pub(crate) fn json_options() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// The schema as compiled: kiln's JSON options set (replacing any `x-guidance` of the caller's)
/// and objects closed (see `close_objects`).
pub(crate) fn prepare_schema(schema: &Value) -> Result<Value> {
    let mut schema = match schema {
        Value::Object(_) => schema.clone(),
        Value::Bool(true) => Value::Object(Map::new()),
        Value::Bool(false) => {
            return Err(ConstraintError::Grammar(
                "the schema `false` accepts no value".into(),
            ))
        }
        other => {
            return Err(ConstraintError::Grammar(format!(
                "a schema must be a JSON object or boolean, not {}",
                kind(other)
            )))
        }
    };
    close_objects(&mut schema, 0)?;
    if let Value::Object(map) = &mut schema {
        map.insert("x-guidance".into(), json_options());
    }
    Ok(schema)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Schemas nest deeper than this only by mistake (or to exhaust the stack).
/// (`close_objects` also bounds integers; see there.)
const MAX_DEPTH: usize = 64;

/// An object schema that names its `properties` but says nothing of others gets
/// `additionalProperties: false`: replies still validate against the caller's schema (they are a
/// subset of what it allows), but a weak model cannot invent keys without end. Not applied under
/// `allOf` or next to `$ref`, where closing one part would reject the other's keys.
fn close_objects(schema: &mut Value, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(ConstraintError::Grammar(format!(
            "the schema nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let Value::Object(map) = schema else {
        return Ok(());
    };
    let open = map.contains_key("properties")
        && !map.contains_key("additionalProperties")
        && !map.contains_key("patternProperties")
        && !map.contains_key("unevaluatedProperties")
        && !map.contains_key("allOf")
        && !map.contains_key("$ref");
    if open {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    // An unbounded integer lets a weak model write digits until max_tokens, as free whitespace
    // would: bound it to the integers every JSON reader holds exactly (|n| < 2^53).
    if map.get("type").and_then(Value::as_str) == Some("integer") {
        const SAFE: i64 = (1 << 53) - 1;
        if !map.contains_key("minimum") && !map.contains_key("exclusiveMinimum") {
            map.insert("minimum".into(), Value::from(-SAFE));
        }
        if !map.contains_key("maximum") && !map.contains_key("exclusiveMaximum") {
            map.insert("maximum".into(), Value::from(SAFE));
        }
    }
    for key in ["properties", "patternProperties", "$defs", "definitions"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            for child in children.values_mut() {
                close_objects(child, depth + 1)?;
            }
        }
    }
    for key in ["anyOf", "oneOf", "prefixItems"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            for child in children {
                close_objects(child, depth + 1)?;
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get_mut(key) {
            close_objects(child, depth + 1)?;
        }
    }
    Ok(())
}
