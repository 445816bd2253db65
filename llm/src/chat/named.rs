//! The chat templates a GGUF file may name instead of carrying Jinja (`tokenizer.chat_template`
//! "mistral-v7-tekken": llama.cpp's converter writes Mistral's format names for models with a
//! tekken.json or in Mistral's own format). The Tekken ones are kiln's built-in formats
//! (`MistralFormat`, as mistral-common builds them); llama.cpp's SentencePiece ones are written
//! here as Jinja that renders what llama.cpp's built-in templates (llama-chat.cpp) render: spaces
//! after `[INST]` and before replies, the system prompt at the start of its turn (v1 / v3) or in
//! `[SYSTEM_PROMPT]` (v7). BOS is not written: the tokenizer adds it, as llama.cpp does.

use super::MistralFormat;

/// What a template name stands for.
pub enum Named {
    Builtin(MistralFormat),
    Jinja(&'static str),
}

/// The template `name` stands for, if kiln knows it.
pub fn named_template(name: &str) -> Option<Named> {
    Some(match name {
        "mistral-v7-tekken" => Named::Builtin(MistralFormat::V7Tekken),
        "mistral-v3-tekken" => Named::Builtin(MistralFormat::V3Tekken),
        "mistral-v7" => Named::Jinja(MISTRAL_V7),
        "mistral-v3" => Named::Jinja(MISTRAL_V3),
        "mistral-v1" => Named::Jinja(MISTRAL_V1),
        _ => return None,
    })
}

/// Whether a `tokenizer.chat_template` value is a name rather than a template.
pub fn is_template_name(source: &str) -> bool {
    let name = source.trim();
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

const MISTRAL_V7: &str = "\
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}
{%- elif message['role'] == 'user' -%}
{{ '[INST] ' + message['content'] + '[/INST]' }}
{%- else -%}
{{ ' ' + message['content'] + '</s>' }}
{%- endif -%}
{%- endfor -%}";

const MISTRAL_V3: &str = "\
{%- set ns = namespace(inside=false) -%}
{%- for message in messages -%}
{%- if not ns.inside -%}
{{ '[INST] ' }}
{%- set ns.inside = true -%}
{%- endif -%}
{%- if message['role'] == 'system' -%}
{{ message['content'] + '\\n\\n' }}
{%- elif message['role'] == 'user' -%}
{{ message['content'] + '[/INST]' }}
{%- else -%}
{{ ' ' + message['content'] | trim + '</s>' }}
{%- set ns.inside = false -%}
{%- endif -%}
{%- endfor -%}";

const MISTRAL_V1: &str = "\
{%- set ns = namespace(inside=false) -%}
{%- for message in messages -%}
{%- if not ns.inside -%}
{{ ' [INST] ' }}
{%- set ns.inside = true -%}
{%- endif -%}
{%- if message['role'] == 'system' -%}
{{ message['content'] + '\\n\\n' }}
{%- elif message['role'] == 'user' -%}
{{ message['content'] + ' [/INST]' }}
{%- else -%}
{{ ' ' + message['content'] + '</s>' }}
{%- set ns.inside = false -%}
{%- endif -%}
{%- endfor -%}";
