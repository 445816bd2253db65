#!/usr/bin/env python3
"""Tool-calling prompt goldens for kiln-llm (tests/fixtures/llm/tokenizer/tool_goldens.json).

Conversations with OpenAI `tools`, assistant `tool_calls` and `tool` results, encoded by
mistral-common's own tokenizers (encode_chat_completion: normaliser, validator, then
InstructTokenizerV7 / V3) on the repo's tekken.json (marked v7) and a v3 copy of it, as
tools/make_llm_tokenizer_fixtures.py does for plain chats. Each entry keeps the request as
OpenAI JSON (`tools`, `messages`) with the reference ids; `v3` is null where mistral-common
refuses the conversation for V3 (content and tool calls in one assistant message).

Needs only mistral-common (no torch):
    python3 -m venv /tmp/venv-mc && /tmp/venv-mc/bin/pip install mistral-common
    /tmp/venv-mc/bin/python tools/make_tool_fixtures.py
"""

import json
import os
import tempfile

from mistral_common.exceptions import MistralCommonException
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(REPO, "tests/fixtures/llm/tokenizer")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
# Keys deliberately unsorted, a float, unicode and nested schemas: the prompt must keep the
# client's order and spell numbers as Python does.
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Cherche dans la documentation (résultats triés) — 検索",
        "parameters": {
            "type": "object",
            "required": ["query"],
            "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
                "threshold": {"type": "number", "default": 0.75},
                "filters": {
                    "type": "object",
                    "properties": {"lang": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
                },
            },
        },
    },
}
NO_DESC = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


PYJSON_VALUES = [
    0.1, 0.5, 1.0, -2.5, 100.0, 1e-4, 1e-5, 1.5e-7, 1e15, 1e16, 1.2345e17, 123456.789,
    0.30000000000000004, 5e-324, 1.7976931348623157e308, -0.0, 2.5e-05, 9007199254740993,
    -42, 0, 18446744073709551615,
    "tab\tquote\"back\\slash\x01\x1f\x7f/é😀", {"z": [1, {"a": None, "b": True}], "a": []},
]


def call(id_, name, arguments):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


CHATS = [
    # Tools offered, no call yet.
    {"tools": [WEATHER], "messages": [{"role": "user", "content": "What's the weather in Paris?"}]},
    # One call and its result: the model answers next.
    {
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": None,
             "tool_calls": [call("abcDEF123", "get_weather", '{"city": "Paris", "unit": "celsius"}')]},
            {"role": "tool", "tool_call_id": "abcDEF123", "content": "18 degrees, sunny"},
        ],
    },
    # System prompt, two parallel calls (compact JSON arguments, re-spelled), JSON and text
    # results, an answer, then a new user turn: tools go before the last user message only.
    {
        "tools": [WEATHER, SEARCH],
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {"role": "assistant", "content": "",
             "tool_calls": [call("call00001", "get_weather", '{"city":"Paris"}'),
                            call("call00002", "get_weather", '{"city":"東京","unit":"celsius"}')]},
            {"role": "tool", "tool_call_id": "call00001", "content": '{"temp":18,"sky":"sunny"}'},
            {"role": "tool", "tool_call_id": "call00002", "content": "22 °C, cloudy"},
            {"role": "assistant", "content": "Paris: 18 °C and sunny; Tokyo: 22 °C and cloudy."},
            {"role": "user", "content": "Find docs about umbrellas."},
        ],
    },
    # Unicode, floats, nested arguments and a tool with no description or parameters.
    {
        "tools": [SEARCH, NO_DESC],
        "messages": [
            {"role": "user", "content": "Cherche « parapluie » en français, seuil 0.5"},
            {"role": "assistant", "content": None,
             "tool_calls": [call("Zz9Yy8Xx7", "search_docs",
                                 '{"query": "parapluie \\"pliant\\"\\n", "threshold": 0.5, "limit": 3, '
                                 '"filters": {"lang": "fr", "tags": ["météo", "été"]}}')]},
            {"role": "tool", "tool_call_id": "Zz9Yy8Xx7", "content": "[]"},
            {"role": "assistant", "content": None, "tool_calls": [call("T1me00000", "get_time", "{}")]},
            {"role": "tool", "tool_call_id": "T1me00000", "content": "12:30"},
        ],
    },
    # Text and a call in one assistant message (V7 only; V3 refuses it).
    {
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "Let me check.",
             "tool_calls": [call("osloOSLO1", "get_weather", '{"city": "Oslo"}')]},
            {"role": "tool", "tool_call_id": "osloOSLO1", "content": "-3 degrees, snow"},
        ],
    },
    # A tool history but no tools offered this time.
    {
        "tools": [],
        "messages": [
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "content": None,
             "tool_calls": [call("romeROME1", "get_weather", '{"city": "Rome"}')]},
            {"role": "tool", "tool_call_id": "romeROME1", "content": "25"},
            {"role": "assistant", "content": "It is 25 degrees in Rome."},
            {"role": "user", "content": "Thanks!"},
        ],
    },
    # Two system messages in a row (no tools): V7 keeps them as two blocks.
    {
        "tools": [],
        "messages": [
            {"role": "system", "content": "Rule one."},
            {"role": "system", "content": "Rule two."},
            {"role": "user", "content": "Hi"},
        ],
    },
]


def encode(mc, chat):
    req = ChatCompletionRequest.from_openai(messages=chat["messages"], tools=chat["tools"] or None)
    return mc.encode_chat_completion(req).tokens


def main():
    tekken = os.path.join(OUT, "tekken.json")
    mc = MistralTokenizer.from_file(tekken)
    with tempfile.TemporaryDirectory() as tmp:
        v3_path = os.path.join(tmp, "tekken.json")
        with open(tekken) as f:
            v3 = json.load(f)
        v3["config"]["version"] = "v3"
        with open(v3_path, "w") as f:
            json.dump(v3, f)
        mc_v3 = MistralTokenizer.from_file(v3_path)
    print(type(mc.instruct_tokenizer).__name__, type(mc_v3.instruct_tokenizer).__name__)

    chats = []
    for chat in CHATS:
        v7 = encode(mc, chat)
        try:
            v3 = encode(mc_v3, chat)
        except (MistralCommonException, ValueError) as e:
            print("v3 refuses:", e)
            v3 = None
        chats.append({**chat, "v7": v7, "v3": v3})
    # One rendered prompt, for reading the fixture by eye.
    text = mc.decode(chats[2]["v7"], special_token_policy=SpecialTokenPolicy.KEEP)
    # Values with json.dumps' spelling: kiln's Python-style JSON writer (llm/src/chat/pyjson.rs)
    # must give the same text, floats above all.
    pyjson = [{"value": v, "python": json.dumps(v, ensure_ascii=False)} for v in PYJSON_VALUES]
    with open(os.path.join(OUT, "tool_goldens.json"), "w") as f:
        json.dump({"example_v7_text": text, "chats": chats, "pyjson": pyjson}, f,
                  ensure_ascii=False, indent=1)
    print(f"{len(chats)} chats -> {OUT}/tool_goldens.json")
    print(text)


if __name__ == "__main__":
    main()
