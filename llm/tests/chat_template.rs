//! Chat prompts against mistral-common and transformers (tests/fixtures/llm/tokenizer, from
//! tools/make_llm_tokenizer_fixtures.py): the built-in V7-Tekken and V3-Tekken formatters give
//! mistral-common's ids id for id (system prompts, multi-turn, same-role runs, unicode, a
//! 300-word message, control-token text typed by a user); the Jinja path renders the template
//! transformers generates for the same vocabulary and gives its ids, except that control-token
//! text inside a message stays text (as mistral-common has it, unlike transformers).

use std::path::{Path, PathBuf};

use kiln_llm::chat::{ChatTemplate, Message};
use kiln_llm::Tokenizer;
use serde_json::Value;

mod common;
use common::ids;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/tokenizer")
}

struct Chat {
    messages: Vec<Message>,
    v7: Vec<u32>,
    v3: Vec<u32>,
    jinja: Vec<u32>,
}

fn chats() -> Vec<Chat> {
    let text = std::fs::read_to_string(dir().join("goldens.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Chat {
            messages: common::messages(&c["messages"]),
            v7: ids(&c["v7"]),
            v3: ids(&c["v3"]),
            jinja: ids(&c["jinja"]),
        })
        .collect()
}

#[test]
fn built_in_formats_match_mistral_common() {
    let t = Tokenizer::from_file(&dir().join("tekken.json")).unwrap();
    let v7 = ChatTemplate::named("mistral-v7", &t).unwrap();
    let v3 = ChatTemplate::named("mistral-v3", &t).unwrap();
    for chat in chats() {
        assert_eq!(
            v7.encode(&t, &chat.messages).unwrap(),
            chat.v7,
            "v7 {:?}",
            chat.messages
        );
        assert_eq!(
            v3.encode(&t, &chat.messages).unwrap(),
            chat.v3,
            "v3 {:?}",
            chat.messages
        );
    }
}

#[test]
fn a_v7_tekken_file_without_a_template_gets_v7() {
    let t = Tokenizer::from_file(&dir().join("tekken.json")).unwrap();
    let empty = std::env::temp_dir().join(format!("kiln-chat-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let template = ChatTemplate::for_model(&empty, &t).unwrap();
    assert_eq!(template.describe(), "built-in mistral-v7-tekken");
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn jinja_template_matches_transformers_and_keeps_typed_controls_as_text() {
    let t = Tokenizer::from_file(&dir().join("tokenizer.json")).unwrap();
    let template = ChatTemplate::for_model(&dir(), &t).unwrap();
    assert!(
        template.describe().contains("chat_template.jinja"),
        "{}",
        template.describe()
    );
    let mut differing = 0;
    for chat in chats() {
        let got = template.encode(&t, &chat.messages).unwrap();
        if chat.jinja == chat.v7 {
            assert_eq!(got, chat.jinja, "{:?}", chat.messages);
        } else {
            // transformers parsed "[INST]" typed in a message as the control token.
            differing += 1;
            assert_eq!(got, chat.v7, "{:?}", chat.messages);
        }
    }
    assert_eq!(differing, 1);
}

#[test]
fn templates_that_fail_are_named() {
    let t = Tokenizer::from_file(&dir().join("tekken.json")).unwrap();
    let tmp = std::env::temp_dir().join(format!("kiln-tmpl-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let broken = tmp.join("broken.jinja");
    std::fs::write(&broken, "{% for m in messages %}{{ m.content }").unwrap();
    let err = ChatTemplate::named(broken.to_str().unwrap(), &t)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("broken.jinja") && err.contains("does not compile"),
        "{err}"
    );

    let raising = tmp.join("raising.jinja");
    std::fs::write(
        &raising,
        "{% if messages[0].role == 'system' %}{{ raise_exception('no system role here') }}{% endif %}",
    )
    .unwrap();
    let template = ChatTemplate::named(raising.to_str().unwrap(), &t).unwrap();
    let err = template
        .encode(&t, &[Message::system("x"), Message::user("y")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("raising.jinja") && err.contains("no system role here"),
        "{err}"
    );

    let v7 = ChatTemplate::named("mistral-v7", &t).unwrap();
    assert!(v7.encode(&t, &[]).is_err());
    assert!(v7
        .encode(&t, &[Message::user("a"), Message::assistant("b")])
        .is_err());
    assert!(ChatTemplate::named("no-such-template", &t).is_err());
    std::fs::remove_dir_all(&tmp).unwrap();
}
