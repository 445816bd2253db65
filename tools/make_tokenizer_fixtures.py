#!/usr/bin/env python3
"""Writes kiln's CLIP tokenizer asset and the fixtures its tests compare against.

Outputs (paths relative to the repository root):
- models/assets/clip_bpe_merges.txt.gz: the 48,894 merges of OpenAI's CLIP BPE (MIT licensed), taken
  from open-clip-torch's bpe_simple_vocab_16e6.txt.gz and written in diffusers' merges.txt format.
  The vocabulary (49,408 ids) follows from the merges, so only they are stored.
- tests/fixtures/tokenizer/clip_ids.json: ids from transformers' CLIPTokenizer built from that
  vocabulary (vocab.json + merges.txt written to a temporary folder, loaded with from_pretrained).
  That is the reference. open_clip's SimpleTokenizer ids are stored beside them for information only:
  open_clip also runs ftfy and unescapes HTML entities, which transformers' tokenizer does not.
- tests/fixtures/tokenizer/emphasis.json: outputs of parse_prompt_attention as written below, a port
  of AUTOMATIC1111 stable-diffusion-webui's modules/prompt_parser.py (same regular expressions, same
  bracket stacks, same merge of equal weights).
- tests/fixtures/tokenizer/chunks.json: 77-token chunks and per-token multipliers from a port of
  A1111's FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line (modules/sd_hijack_clip.py) with its
  default comma backtrack of 20, without textual-inversion embeddings, plus the SD2 padding rule of
  its process_tokens.

Usage: make_tokenizer_fixtures.py [--repo PATH]   (run with the project's venv python)
"""
import argparse
import gzip
import io
import json
import os
import re
import tempfile

import open_clip
from open_clip.tokenizer import SimpleTokenizer, bytes_to_unicode
from transformers import CLIPTokenizer

# open_clip keeps the first 49152 - 256 - 2 merges of the file; the file's first line is a header.
N_MERGES = 49152 - 256 - 2

TOKENIZER_PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "",
    "   ",
    "Hello World",
    "café crème brûlée",
    "naïve résumé Ångström ÀÉÎÕÜ",
    "cafe\u0301 (combining accent, NFC)",
    "\ufb01ne ligature",
    "İstanbul ǅ Σίσυφος",
    "東京タワー at night",
    "🐱 cat emoji 🚀🔥",
    "👩\u200d🚀 astronaut with a zero-width joiner",
    "1234567890 and 3.14159, 1e10",
    "Ⅻ ½ ² ٣ digits that are not ascii",
    "!!!??? ... --- *** ~~~",
    "don't can't won't I'm you're we've they'll he'd it's",
    "DON'T IT'S ''quoted'' 'single'",
    "tom &amp; jerry &lt;3 &quot;quoted&quot; &#39;s &nbsp;",
    "multiple    spaces\tand\ttabs\n\nnewlines\r\n",
    "  leading and trailing  ",
    "a\u200bb zero width space, a\u00a0b no-break space, a\u3000b ideographic space",
    "a\u0085b\u2028c\u1680d\u180ee\u2009f\u001cg\u000bh\u000ci",
    "xyzzyqwv supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "masterpiece, best quality, (ultra-detailed:1.2), [blurry], \\(escaped\\)",
    "<|startoftext|>hi<|endoftext|> <|ENDOFTEXT|>",
    "a_b-c.d/e\\f|g@h#i$j%k^l&m*n+o=p",
    "8k uhd, 35mm photo, f/1.8, 1girl, 2boys",
    "مرحبا שלום Привет мир",
    "ab\u0000cd\u0007control\u001fchars",
    "a,b,c,,d , e",
    "word " * 100,
    "a highly detailed matte painting of a castle on a cliff above a stormy sea, dramatic lighting, "
    "volumetric clouds, by greg rutkowski and thomas kinkade, trending on artstation, 8k, octane "
    "render, unreal engine, hyperrealistic, cinematic composition, golden hour, intricate details",
]

EMPHASIS_PROMPTS = [
    "normal text",
    "an (important) word",
    "(unbalanced",
    "\\(literal\\]",
    "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "((word))",
    "(((word)))",
    "[word]",
    "[[word]]",
    "(word:1.5)",
    "(word: 1.5 )",
    "(word:-0.5) (word:+2) (word:.5) (word:2.)",
    "a ) b ] c",
    "x:y (a:b) z",
    "(a:1e3)",
    "a BREAK b",
    "BREAK",
    "aBREAKb a BREAK BREAK b",
    "(a BREAK b:1.2)",
    "(B\\REAK:-1)",
    "a \\\\ b \\",
    "[a (b) c]",
    "[(a:1.2) b",
    "",
    "(a:1.2.3)",
    "((masterpiece)), best quality, [[[worst quality]]], (detailed face:1.3), ([blue] eyes)",
]

CHUNK_PROMPTS = [
    ("", "eos"),
    ("a photo of a cat", "eos"),
    ("a photo of a cat", "bang"),
    ("an (important) [word] (here:1.5)", "eos"),
    ("a BREAK b", "eos"),
    ("a BREAK BREAK b", "bang"),
    ("BREAK", "eos"),
    ("word " * 75, "eos"),
    ("word " * 76, "eos"),
    ("word " * 200, "bang"),
    # commas every few words: the split moves back to the last comma within 20 tokens
    (", ".join(["a red apple on a (wooden:1.2) table"] * 20), "eos"),
    (", ".join(f"(item{i} detail:1.1)" for i in range(60)), "bang"),
    # one comma, 30 tokens before the chunk end: too far back, so no move
    ("start, " + "word " * 100, "eos"),
    ("<|endoftext|> early end token then words", "bang"),
    ("wow!!! (so good:1.3)!", "bang"),
]


def load_openai_bpe(path):
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split(" ")) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    return {t: i for i, t in enumerate(vocab)}, merges


def write_asset(path, merges):
    text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    buf = io.BytesIO()
    # mtime 0 and no file name keep the asset byte-identical between runs
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(text.encode("utf-8"))
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def transformers_tokenizer(vocab, merges, pad_token=None):
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    if pad_token is not None:
        # as in SD 2.x's tokenizer folder
        with open(os.path.join(d, "special_tokens_map.json"), "w", encoding="utf-8") as f:
            json.dump({"pad_token": pad_token}, f)
    return CLIPTokenizer.from_pretrained(d)


def padded(tok, text):
    return tok(text, padding="max_length", max_length=77, truncation=True)["input_ids"]


# ---- port of A1111's parse_prompt_attention (modules/prompt_parser.py) ----

RE_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    res = []
    round_open = []
    square_open = []

    def scale_from(start, factor):
        for p in range(start, len(res)):
            res[p][1] *= factor

    for m in RE_ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(res))
        elif piece == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            scale_from(round_open.pop(), float(weight))
        elif piece == ")" and round_open:
            scale_from(round_open.pop(), 1.1)
        elif piece == "]" and square_open:
            scale_from(square_open.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(RE_BREAK.split(piece)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_open:
        scale_from(pos, 1.1)
    for pos in square_open:
        scale_from(pos, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


# ---- port of A1111's tokenize_line (modules/sd_hijack_clip.py), no embeddings ----


def tokenize_line(tok, line, pad_id, chunk_length=75, backtrack=20):
    # A1111 tokenizes SD2 prompts with open_clip's tokenizer; this uses transformers' (as kiln
    # does, following diffusers), with A1111's chunking and padding rules.
    parsed = parse_prompt_attention(line)
    tokenized = tok([t for t, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]
    bos, eos = tok.bos_token_id, tok.eos_token_id
    comma = tok.get_vocab()[",</w>"]
    chunks = []
    cur_tokens, cur_mults = [], []
    state = {"count": 0, "last_comma": -1}

    def close(is_last=False):
        nonlocal cur_tokens, cur_mults
        state["count"] += len(cur_tokens) if is_last else chunk_length
        fill = chunk_length - len(cur_tokens)
        if fill > 0:
            cur_tokens += [eos] * fill
            cur_mults += [1.0] * fill
        chunks.append(([bos] + cur_tokens + [eos], [1.0] + cur_mults + [1.0]))
        state["last_comma"] = -1
        cur_tokens, cur_mults = [], []

    for tokens, (text, weight) in zip(tokenized, parsed):
        if text == "BREAK" and weight == -1:
            close()
            continue
        for token in tokens:
            if token == comma:
                state["last_comma"] = len(cur_tokens)
            elif (
                backtrack != 0
                and len(cur_tokens) == chunk_length
                and state["last_comma"] != -1
                and len(cur_tokens) - state["last_comma"] <= backtrack
            ):
                cut = state["last_comma"] + 1
                moved_t, moved_m = cur_tokens[cut:], cur_mults[cut:]
                cur_tokens, cur_mults = cur_tokens[:cut], cur_mults[:cut]
                close()
                cur_tokens, cur_mults = moved_t, moved_m
            if len(cur_tokens) == chunk_length:
                close()
            cur_tokens.append(token)
            cur_mults.append(weight)
    if cur_tokens or not chunks:
        close(is_last=True)

    # process_tokens: when pad != EOS, everything after the first EOS of a chunk becomes pad
    if pad_id != eos:
        for ids, _ in chunks:
            first = ids.index(eos)
            ids[first + 1 :] = [pad_id] * (len(ids) - first - 1)
    return chunks, state["count"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(__file__), ".."))
    args = ap.parse_args()
    repo = os.path.abspath(args.repo)

    bpe_path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    vocab, merges = load_openai_bpe(bpe_path)
    write_asset(os.path.join(repo, "models", "assets", "clip_bpe_merges.txt.gz"), merges)

    tok = transformers_tokenizer(vocab, merges)
    # SD2's tokenizer folder sets pad_token "!" (id 0); SD1's pads with EOS. transformers also
    # makes "!" a special token then, so "wow!!" tokenizes differently: padded_bang shows it.
    tok_bang = transformers_tokenizer(vocab, merges, pad_token="!")
    assert tok_bang.pad_token_id == 0
    oc = SimpleTokenizer()
    out_dir = os.path.join(repo, "tests", "fixtures", "tokenizer")
    os.makedirs(out_dir, exist_ok=True)

    cases = []
    for text in TOKENIZER_PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        oc_ids = oc.encode(text)
        cases.append(
            {
                "text": text,
                "ids": ids,
                "padded_eos": padded(tok, text),
                "padded_bang": padded(tok_bang, text),
                "open_clip_ids": oc_ids,
            }
        )
    # check that the tokenizer agrees with the vocabulary we derived (specials, comma)
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407
    assert tok.get_vocab()[",</w>"] == 267
    dump(
        os.path.join(out_dir, "clip_ids.json"),
        {
            "reference": "transformers CLIPTokenizer (tokenizers backend) from OpenAI CLIP's bpe_simple_vocab_16e6",
            "transformers_version": __import__("transformers").__version__,
            "tokenizers_version": __import__("tokenizers").__version__,
            "cases": cases,
        },
    )

    emphasis = []
    for text in EMPHASIS_PROMPTS:
        try:
            emphasis.append({"text": text, "parsed": parse_prompt_attention(text)})
        except ValueError as e:
            # A1111 raises here (float() of the weight); kiln returns an error
            emphasis.append({"text": text, "error": str(e)})
    dump(
        os.path.join(out_dir, "emphasis.json"),
        {"reference": "port of A1111 modules/prompt_parser.py parse_prompt_attention", "cases": emphasis},
    )

    chunk_cases = []
    for text, pad in CHUNK_PROMPTS:
        t = tok if pad == "eos" else tok_bang
        chunks, count = tokenize_line(t, text, t.pad_token_id)
        chunk_cases.append(
            {
                "text": text,
                "pad": pad,
                "token_count": count,
                "ids": [c[0] for c in chunks],
                "weights": [c[1] for c in chunks],
            }
        )
    dump(
        os.path.join(out_dir, "chunks.json"),
        {
            "reference": "port of A1111 modules/sd_hijack_clip.py tokenize_line, comma backtrack 20",
            "cases": chunk_cases,
        },
    )


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        # one case per line keeps the files small and their diffs readable
        f.write(json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace(',{"text"', ',\n{"text"'))
        f.write("\n")


if __name__ == "__main__":
    main()
