//! JSON fixture helpers shared by the LLM test binaries.
// Each test binary compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use kiln_llm::{Message, Role};
use serde_json::Value;

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A JSON array of `{"role", "content"}` messages.
pub fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            Message::new(
                Role::parse(m["role"].as_str().unwrap()).unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect()
}
