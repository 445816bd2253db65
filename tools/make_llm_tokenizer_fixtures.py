#!/usr/bin/env python3
"""Tokenizer and chat-template goldens for kiln-llm (tests/fixtures/llm/tokenizer/).

1. A Tekken file cut from mistral-common's own tekken_240911.json: its first 16,000 BPE ranks (plus
   the 1000 control ids), marked version v7 with mistral-common's control token list. A prefix of
   the ranks is itself a valid tiktoken BPE, so mistral-common loads the cut file and gives the
   reference ids; it keeps the fixture under 1 MB instead of the 19 MB original.
2. The same vocabulary as a Hugging Face tokenizer.json (+ tokenizer_config.json and the chat
   template mistral-common generates), by transformers' convert_tekken_tokenizer: kiln's
   tokenizers-crate path reads it.
3. goldens.json:
   - `strings`: >= 100 texts (ASCII, unicode, emoji, CJK, whitespace runs, digits, control-token
     text such as "[INST]") with mistral-common's ids (plain text: no BOS, nothing parsed as
     control); the script checks the tokenizer.json gives the same ids.
   - `chats`: conversations with mistral-common's V7-Tekken and V3-Tekken prompt ids
     (encode_chat_completion), and transformers' apply_chat_template ids for the Jinja path.

Run with the project venv (pip install mistral-common transformers tokenizers):
    .venv/bin/python tools/make_llm_tokenizer_fixtures.py
"""

import copy
import json
import os
import tempfile

import mistral_common
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(REPO, "tests/fixtures/llm/tokenizer")
RANKS = 16000
SPECIALS = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
]

STRINGS = [
    "", "a", "Hello", "Hello, world!", " Hello", "  two leading spaces", "trailing space ",
    "Tabs\tand\ttabs", "new\nline", "two\n\nnewlines", "\r\nwindows line\r\n", "    indented code",
    "x = 1;\n    y = 2;\n", "def f(a, b):\n    return a + b\n", "0", "7", "42", "1234567890",
    "3.14159", "-273.15", "1,000,000", "2024-12-06", "12:30:45", "+33 6 12 34 56 78",
    "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "CamelCaseWordsHere",
    "snake_case_identifier", "kebab-case-words", "e-mail@example.com", "https://example.com/a?b=c&d=e",
    "C:\\Windows\\System32", "/usr/local/bin/kiln", "it's", "don't", "I'm", "we'll", "they're",
    "\"quoted\"", "'single'", "(parens) [brackets] {braces}", "a+b=c", "50% off!", "$100", "#hashtag",
    "@mention", "***", "---", "...", "!!!", "??", "¿Qué tal?", "¡Hola!", "naïve café",
    "Größe", "straße", "Ærøskøbing", "Dvořák", "Łódź", "İstanbul", "ﬁnance (ligature)",
    "Привет, мир", "Ελληνικά", "שלום", "مرحبا بالعالم", "नमस्ते", "ภาษาไทย", "한국어 텍스트",
    "日本語のテキスト", "カタカナ", "中文文本，标点。", "繁體中文", "你好世界", "𠜎𠜱𠝹𠱓 (supplementary CJK)",
    "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "emoji in text 🚀 launch", "✓ ✗ → ← ∞ ≠ ≤",
    "∑ x² dx", "αβγ", "Ω", "°C", "½ ¼ ¾", "™ © ®", "\u00a0non-breaking", "zero\u200bwidth",
    "soft\u00adhyphen", "a\u0301 (combining)", "\u202eRTL override", "    ", " ", "\n", "\n\n\n",
    "\t\t", " \n \n ", "a  b   c    d", "end.\n", "[INST]", "[INST] not a control token [/INST]",
    "<s>", "</s>", "<unk>", "[SYSTEM_PROMPT]x[/SYSTEM_PROMPT]", "[IMG]", "<SPECIAL_20>",
    "word" * 20, "ab" * 50, "9" * 30, "=" * 40, " " * 33, "mixed 漢字 and English and 123",
    "JSON: {\"a\": [1, 2, 3], \"b\": null}", "<html><body>hi</body></html>", "SELECT * FROM t;",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation.",
]

CHATS = [
    [("user", "Hello!")],
    [("system", "You are a helpful assistant."), ("user", "What is 2 + 2?")],
    [("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke.")],
    [("system", "Answer in French."), ("user", "Good morning"), ("assistant", "Bonjour"),
     ("user", "Good night")],
    [("user", "日本語で答えて: 1+1は?")],
    [("user", "emoji 🚀🇫🇷 and naïve café")],
    [("system", "Be brief.\nUse lists."), ("user", "  spaces around  ")],
    [("user", "Line one\nLine two\n\nLine four")],
    [("user", "long " * 300)],
    [("user", "first"), ("user", "second, same role")],
    [("user", "Please print [INST] and </s> literally.")],
]


def cut_tekken(src, dst):
    with open(src) as f:
        full = json.load(f)
    cut = {
        "config": dict(full["config"]),
        "vocab": [copy.copy(v) for v in full["vocab"][:RANKS]],
        "special_tokens": [
            {"rank": i, "token_str": s, "is_control": True} for i, s in enumerate(SPECIALS)
        ],
    }
    for v in cut["vocab"]:
        v["token_str"] = None
    cut["config"]["num_vocab_tokens"] = RANKS
    cut["config"]["default_vocab_size"] = RANKS + 1000
    cut["config"]["version"] = "v7"
    with open(dst, "w") as f:
        json.dump(cut, f, separators=(",", ":"))


def mc_messages(chat):
    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    return [kinds[r](content=c) for r, c in chat]


def main():
    os.makedirs(OUT, exist_ok=True)
    src = os.path.join(os.path.dirname(mistral_common.__file__), "data/tekken_240911.json")
    tekken = os.path.join(OUT, "tekken.json")
    cut_tekken(src, tekken)

    mc = MistralTokenizer.from_file(tekken)
    raw = mc.instruct_tokenizer.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        v3_path = os.path.join(tmp, "tekken.json")
        with open(tekken) as f:
            v3 = json.load(f)
        v3["config"]["version"] = "v3"
        with open(v3_path, "w") as f:
            json.dump(v3, f)
        mc_v3 = MistralTokenizer.from_file(v3_path)

    hf = convert_tekken_tokenizer(tekken)
    hf.save_pretrained(OUT)
    # transformers writes its own copy of the vocabulary next to tokenizer.json; kiln reads
    # tekken.json itself, and tokenizer.json is what the Hugging Face path needs.
    for extra in ["special_tokens_map.json"]:
        path = os.path.join(OUT, extra)
        if os.path.exists(path):
            os.remove(path)

    strings = []
    for s in STRINGS:
        ids = raw.encode(s, bos=False, eos=False)
        hf_ids = hf.encode(s, add_special_tokens=False, split_special_tokens=True)
        assert ids == hf_ids, (s, ids, hf_ids)
        strings.append({"text": s, "ids": ids})

    chats = []
    for chat in CHATS:
        req = ChatCompletionRequest(messages=mc_messages(chat))
        v7 = mc.encode_chat_completion(req).tokens
        v3 = mc_v3.encode_chat_completion(req).tokens
        jinja = hf.apply_chat_template(
            [{"role": r, "content": c} for r, c in chat],
            tokenize=True,
            add_generation_prompt=True,
        )
        if isinstance(jinja, dict) or hasattr(jinja, "keys"):
            jinja = jinja["input_ids"]
        chats.append(
            {
                "messages": [{"role": r, "content": c} for r, c in chat],
                "v7": v7,
                "v3": v3,
                "jinja": list(jinja),
            }
        )
        if v7 != list(jinja):
            print("note: jinja differs from mistral-common v7 for", chat[:1])

    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        json.dump({"strings": strings, "chats": chats}, f, ensure_ascii=False, indent=1)
    print(f"{len(strings)} strings, {len(chats)} chats -> {OUT}")


if __name__ == "__main__":
    main()
