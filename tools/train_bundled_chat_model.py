#!/usr/bin/env python3
"""Trains kiln's bundled chat model: a tiny Mistral-architecture LLM that answers small-number
arithmetic questions, so `kiln chat -p "What is 7 plus 5?"` works on a fresh clone with no download
(`kiln chat` uses llm/bundled/ when `-m` is omitted).

What it does (all on the CPU, one thread, fixed seeds, so a rerun gives the same files):
1. A synthetic closed domain. Problems (a, op, b): "plus" with a, b in 0..20, "minus" with
   a, b in 0..20 and a >= b, "times" with a, b in 0..10 (793 problems). Each is asked in 4 phrasings,
   "What is 7 plus 5?", "What is 7 + 5?" (- and * for minus and times), "Compute 7 plus 5." and
   "how much is 7 plus 5?", and always answered "7 plus 5 is 12." (word form, for the symbol
   phrasing too). 10% of the problems (all their phrasings) are held out of training. Greetings and
   other off-domain prompts ("Hello", "Tell me about cats.") are answered "Hello! Ask me a sum, such
   as: what is 2 plus 3?"; some of those prompts are held out too. One training step in five has
   longer conversations: a system prompt (which the model learns to ignore) and 1 to 3 turns, or
   2 to 3 turns. A fifth of the user turns lose their final punctuation and a fifth have the first
   letter's case swapped ("what is 7 plus 5"), as people type.
2. A byte-level BPE tokenizer (Python `tokenizers`) trained on the training texts: ids 0..19 are
   Mistral's control tokens (<unk> <s> </s> [INST] [/INST] ... [SYSTEM_PROMPT] [/SYSTEM_PROMPT]
   [TOOL_CONTENT]) as special tokens, digits are split one per token so arithmetic can generalise,
   no post-processor (the chat template writes <s> itself). tokenizer_config.json carries a chat
   template in Mistral's V7-Tekken layout with no added spaces:
   <s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]What is 2 plus 3?[/INST]2 plus 3 is 5.</s>[INST]...
3. A MistralForCausalLM (hidden 128, 4 heads of head_dim 48 != 128 / 4, 2 KV heads, intermediate
   384, 4 layers, tied embeddings, no sliding window) trained with AdamW on conversations rendered
   by that template, with the loss only on the assistant replies and their closing </s>.
4. Export to llm/bundled/ with save_pretrained (f32 model.safetensors without lm_head.weight,
   config.json, generation_config.json), the tokenizer files and a README with the results.
5. Verification (after training, and alone with `--verify`): loads llm/bundled/ with transformers
   (no missing or unexpected weights; the logits equal the trained model's), greedy-decodes (at
   most 24 new tokens, stop at </s>) every question of the domain and reports exact-answer accuracy
   on the trained and held-out questions, the typed variants, 3-turn conversations and off-domain
   prompts; writes tests/fixtures/llm/bundled_chat_expectations.json (20 trained questions and
   "Hello" with transformers' exact replies, the prompt ids of the first 3, and a two-turn
   conversation with a system prompt) for kiln's test.

Run (project venv, from anywhere):
    /work/main/.venv/bin/python tools/train_bundled_chat_model.py            # train, export, verify
    /work/main/.venv/bin/python tools/train_bundled_chat_model.py --verify   # verify only

Results of the committed model (also in llm/bundled/README.md, written by the training run), on the
2-core development machine shared with other jobs; two runs gave byte-identical files:
- Tokenizer: 512 tokens (20 control tokens, 256 bytes, 236 merges).
- Model: 951,424 parameters, 3.81 MB model.safetensors (f32).
- Training: 1500 steps, 4.4 to 5.9 min on one thread depending on the other jobs (the whole
  script 4.7 to 6.1 min); final loss 0.00012 nats per reply token (mean of the last 100 steps).
- Greedy exact answers under transformers: trained questions 100% of 2856; held-out questions
  87.3% of 316 (plus 97.7%, minus 95.8%, times 27.3%: the times table is memorised, not learned);
  trained questions typed as "what is 7 plus 5" 100%; the last reply of 300 three-turn
  conversations 100%; off-domain prompts 100% of 80 trained, 85.7% of 21 held out.
"""

import argparse
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(REPO, "llm", "bundled")
FIXTURE = os.path.join(REPO, "tests", "fixtures", "llm", "bundled_chat_expectations.json")
SEED = 20240707
# One thread: with two on the shared 2-core machine, steps ran 10x slower whenever compiles ran
# beside them (each thread waits for the other), and the thread count is part of determinism.
THREADS = 1

# ---- domain -----------------------------------------------------------------------------------

OPS = {
    "plus": ("+", lambda a, b: a + b),
    "minus": ("-", lambda a, b: a - b),
    "times": ("*", lambda a, b: a * b),
}
PHRASINGS = [
    "What is {a} {op} {b}?",
    "What is {a} {sym} {b}?",
    "Compute {a} {op} {b}.",
    "how much is {a} {op} {b}?",
]
POLITE = "Hello! Ask me a sum, such as: what is 2 plus 3?"
OFF_DOMAIN = [
    "Hello", "Hello!", "hello", "Hi", "Hi!", "hi", "Hi there", "Hey", "hey", "Good morning",
    "Good evening", "Greetings", "Who are you?", "What are you?", "What can you do?", "Help",
    "How are you?", "Tell me a joke.", "Write a poem.", "What is the capital of France?",
    "What time is it?", "Thanks", "Thank you!", "What is your name?", "Can you help me?",
    "Tell me a story.", "hello there", "Good afternoon", "What is love?", "Explain gravity.",
    "Bonjour", "yo",
]
OFF_TEMPLATES = ["What is {t}?", "Tell me about {t}.", "Do you like {t}?", "Explain {t}."]
OFF_TOPICS = ["the weather", "cats", "dogs", "music", "the moon", "history", "football", "the sea",
              "coffee", "Paris", "computers", "the news"]
# Not trained on: shows whether the polite reply generalises to unseen off-domain prompts.
OFF_DOMAIN_HELD_OUT = ["Hello, how are you?", "Howdy", "Sing a song.", "Good night", "Who made you?"]
OFF_TOPICS_HELD_OUT = ["birds", "the sun", "pizza", "chess"]
SYSTEM_PROMPTS = [
    "Be brief.",
    "You are a helpful assistant.",
    "You are a calculator.",
    "Answer in one sentence.",
    "You are kiln's tiny arithmetic model.",
    "Reply politely.",
]
HELD_OUT_FRACTION = 0.1


def all_problems():
    probs = [(a, "plus", b) for a in range(21) for b in range(21)]
    probs += [(a, "minus", b) for a in range(21) for b in range(a + 1)]
    probs += [(a, "times", b) for a in range(11) for b in range(11)]
    return probs


def split_problems():
    probs = all_problems()
    order = list(range(len(probs)))
    random.Random(SEED).shuffle(order)
    n_held = round(len(probs) * HELD_OUT_FRACTION)
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [probs[i] for i in train], [probs[i] for i in held]


def off_domain_prompts(held_out=False):
    fixed, topics = (OFF_DOMAIN_HELD_OUT, OFF_TOPICS_HELD_OUT) if held_out else (OFF_DOMAIN, OFF_TOPICS)
    return fixed + [t.format(t=topic) for t in OFF_TEMPLATES for topic in topics]


def variant(text, drop_punct, swap_case):
    """What people type as well: no final punctuation, the first letter's case swapped."""
    if drop_punct and text[-1] in "?.!":
        text = text[:-1]
    if swap_case:
        text = text[0].swapcase() + text[1:]
    return text


def question(problem, phrasing):
    a, op, b = problem
    return PHRASINGS[phrasing].format(a=a, op=op, sym=OPS[op][0], b=b)


def answer(problem):
    a, op, b = problem
    return f"{a} {op} {b} is {OPS[op][1](a, b)}."


def qa_pairs(problems):
    return [(question(p, k), answer(p)) for p in problems for k in range(len(PHRASINGS))]


# ---- tokenizer --------------------------------------------------------------------------------

# Mistral's control tokens at their ids in Mistral's own vocabularies.
SPECIAL_TOKENS = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
]
BOS, EOS, INST, END_INST, PAD, SYS, END_SYS = 1, 2, 3, 4, 11, 17, 18
VOCAB_TARGET = 512

# No whitespace between tags, so a small Jinja engine renders it exactly as transformers does.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '[INST]' + message['content'] + '[/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}"
    "{% else %}"
    "{{ raise_exception('Only system, user and assistant roles are supported.') }}"
    "{% endif %}"
    "{% endfor %}"
)


def train_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Digits first, one per token: "12" and "21" share their pieces, so sums can generalise.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def write_tokenizer(tok, dst):
    tok.save(os.path.join(dst, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(dst, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


class Encoder:
    """Token ids of conversations, built from cached encodings of their texts. Equal to encoding the
    rendered template, since the tokenizer splits its input at special tokens first (checked in
    check_tokenizer)."""

    def __init__(self, tok):
        self.tok = tok
        self.cache = {}

    def text(self, s):
        if s not in self.cache:
            self.cache[s] = self.tok.encode(s, add_special_tokens=False).ids
        return self.cache[s]

    def conversation(self, messages):
        """(ids, loss mask): the mask is 1 on assistant tokens and their </s>."""
        ids, mask = [BOS], [0]
        for role, content in messages:
            if role == "system":
                part, m = [SYS] + self.text(content) + [END_SYS], 0
            elif role == "user":
                part, m = [INST] + self.text(content) + [END_INST], 0
            else:
                part, m = self.text(content) + [EOS], 1
            ids += part
            mask += [m] * len(part)
        return ids, mask


def as_dicts(messages):
    return [{"role": r, "content": c} for r, c in messages]


def check_tokenizer(dst, enc):
    """transformers' apply_chat_template on the saved folder equals the training encoding."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(dst)
    convs = [
        [("user", "What is 7 plus 5?")],
        [("system", "Be brief."), ("user", "What is 2 plus 3?"), ("assistant", "2 plus 3 is 5."),
         ("user", "What is 4 times 2?")],
        [("user", "Hello"), ("assistant", POLITE), ("user", "how much is 20 - 13?")],
    ]
    for conv in convs:
        got = chat_ids(hf, as_dicts(conv))
        want, _ = enc.conversation(conv)
        assert got == want, (conv, got, want)
    rendered = hf.apply_chat_template(as_dicts(convs[1]), tokenize=False)
    expect = ("<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]What is 2 plus 3?[/INST]"
              "2 plus 3 is 5.</s>[INST]What is 4 times 2?[/INST]")
    assert rendered == expect, rendered
    assert hf("12 plus 34").input_ids[0] != BOS, "the tokenizer must not add <s> itself"
    try:
        hf.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
    except Exception as e:  # jinja2's TemplateError, from raise_exception
        assert "roles are supported" in str(e), e
    else:
        raise AssertionError("the chat template accepted role `tool`")


def chat_ids(hf_tok, messages):
    out = hf_tok.apply_chat_template(messages, tokenize=True)
    if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)


# ---- model ------------------------------------------------------------------------------------

MODEL = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=48,
    max_position_embeddings=512,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    sliding_window=None,
    tie_word_embeddings=True,
    hidden_act="silu",
    initializer_range=0.02,
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=PAD,
)

STEPS = 1500
BATCH = 64
PEAK_LR = 3e-3
WARMUP = 100
WEIGHT_DECAY = 0.01
P_OFF_DOMAIN = 0.08
P_VARIANT = 0.2  # each of variant()'s two changes, on every user turn
# Every LONG_EVERY-th step is a batch of LONG_BATCH conversations with a system prompt and/or
# several turns; kept apart because one long conversation in a batch would pad all 64 rows to its
# length.
LONG_EVERY = 5
LONG_BATCH = 16
EVAL_EVERY = 250


def build_model(vocab_size):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=vocab_size, **MODEL)
    return MistralForCausalLM(cfg)


def sample_conversation(rng, train_qa, off_domain, long):
    """One turn; or, when long, a system prompt and 1 to 3 turns, or 2 to 3 turns."""
    msgs = []
    if long and rng.random() < 0.5:
        msgs.append(("system", rng.choice(SYSTEM_PROMPTS)))
    turns = rng.randint(1 if msgs else 2, 3) if long else 1
    for _ in range(turns):
        if rng.random() < P_OFF_DOMAIN:
            q, a = rng.choice(off_domain), POLITE
        else:
            q, a = rng.choice(train_qa)
        q = variant(q, rng.random() < P_VARIANT, rng.random() < P_VARIANT)
        msgs += [("user", q), ("assistant", a)]
    return msgs


def pad_batch(seqs):
    """Right-padded ids and masks: with causal attention the padding after a sequence cannot change
    its logits, so no attention mask is needed."""
    n = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), n), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.float32)
    for i, (s, m) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.float32)
    return ids, mask


def lr_at(step, steps):
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return PEAK_LR * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def teacher_forced_exact(model, enc, conversations, batch=256):
    """Fraction of conversations whose every reply token is the argmax given the true prefix: the
    same as greedy decoding producing exactly the reply and </s> (one forward pass, no decoding)."""
    model.eval()
    good = 0
    for i in range(0, len(conversations), batch):
        ids, mask = pad_batch([enc.conversation(c) for c in conversations[i : i + batch]])
        logits = model(input_ids=ids).logits
        wrong = (logits[:, :-1].argmax(-1) != ids[:, 1:]) & (mask[:, 1:] > 0)
        good += int((~wrong.any(1)).sum())
    model.train()
    return good / len(conversations)


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def train(model, enc, train_qa, off_domain, held_qa, steps):
    torch.manual_seed(SEED)
    rng = random.Random(SEED + 1)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # not the RMSNorm weights
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=PEAK_LR, betas=(0.9, 0.98),
    )
    # Monitoring only (the reported accuracies come from verify): a fixed sample of trained questions.
    train_convs = [[("user", q), ("assistant", a)] for q, a in random.Random(SEED + 4).sample(train_qa, 600)]
    held_convs = [[("user", q), ("assistant", a)] for q, a in held_qa]
    model.train()
    start = time.time()
    recent = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps)
        long = step % LONG_EVERY == LONG_EVERY - 1
        ids, mask = pad_batch([enc.conversation(sample_conversation(rng, train_qa, off_domain, long))
                               for _ in range(LONG_BATCH if long else BATCH)])
        logits = model(input_ids=ids).logits[:, :-1]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        m = mask[:, 1:].reshape(-1)
        loss = (nll * m).sum() / m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent = (recent + [loss.item()])[-100:]
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == steps:
            tr = teacher_forced_exact(model, enc, train_convs)
            ho = teacher_forced_exact(model, enc, held_convs)
            log(f"step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f} lr {lr_at(step, steps):.2e} "
                f"train sample exact {tr:.4f} held-out exact {ho:.4f} ({time.time() - start:.0f} s)")
    return {"seconds": time.time() - start, "final_loss": sum(recent) / len(recent), "steps": steps}


def export(model, dst):
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, do_sample=False, max_new_tokens=64
    )
    model.save_pretrained(dst, safe_serialization=True)
    # transformers 5 keeps rope_theta under rope_parameters and writes `dtype`; the top-level keys
    # are what older readers (and the Hub's Mistral configs) use.
    path = os.path.join(dst, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.setdefault("rope_theta", MODEL["rope_theta"])
    cfg.setdefault("torch_dtype", "float32")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


@torch.no_grad()
def check_reload(model, dst, enc, conversations):
    """The saved folder, loaded by transformers, gives the trained model's logits exactly."""
    _, loaded = load_folder(dst)
    model.eval()
    ids, _ = pad_batch([enc.conversation(c) for c in conversations])
    assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits), "reloaded logits differ"


# ---- verification -----------------------------------------------------------------------------

MAX_NEW = 24


def load_folder(dst):
    import transformers
    from transformers import AutoTokenizer, MistralForCausalLM

    transformers.logging.set_verbosity_warning()
    model, info = MistralForCausalLM.from_pretrained(dst, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}  # missing, unexpected, mismatched keys, errors
    assert not bad, f"loading {dst}: {bad}"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
    model.eval()
    return AutoTokenizer.from_pretrained(dst), model


@torch.no_grad()
def greedy_replies(hf_tok, model, conversations):
    """Greedy replies (text, ids without </s>, ended with </s>) via generate(). Prompts are batched
    by length so none is padded."""
    prompts = [chat_ids(hf_tok, as_dicts(c)) for c in conversations]
    by_len = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    out = [None] * len(prompts)
    for n, idx in sorted(by_len.items()):
        for k in range(0, len(idx), 128):
            chunk = idx[k : k + 128]
            ids = torch.tensor([prompts[i] for i in chunk])
            gen = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW,
                do_sample=False, eos_token_id=EOS, pad_token_id=PAD,
            )[:, n:]
            for row, i in zip(gen.tolist(), chunk):
                ended = EOS in row
                reply = row[: row.index(EOS)] if ended else row
                out[i] = (hf_tok.decode(reply), reply, ended)
    return prompts, out


def accuracy(hf_tok, model, cases):
    """cases: (conversation ending with a user turn, expected reply). Returns the fraction answered
    exactly (and ended with </s>) and the failures as (last question, expected, got)."""
    _, replies = greedy_replies(hf_tok, model, [c for c, _ in cases])
    fails = [(c[-1][1], a, r[0]) for r, (c, a) in zip(replies, cases) if not (r[2] and r[0] == a)]
    return 1 - len(fails) / len(cases), fails


def one_turn(qa):
    return [([("user", q)], a) for q, a in qa]


def multi_turn_cases(train_qa, n=300):
    """A system prompt (or none) and three turns, the earlier replies right: is the last one?"""
    rng = random.Random(SEED + 5)
    cases = []
    for _ in range(n):
        conv = [("system", rng.choice(SYSTEM_PROMPTS))] if rng.random() < 0.5 else []
        for turn in range(3):
            q, a = (rng.choice(off_domain_prompts()), POLITE) if rng.random() < 0.1 else rng.choice(train_qa)
            conv.append(("user", q))
            if turn < 2:
                conv.append(("assistant", a))
        cases.append((conv, a))
    return cases


@torch.no_grad()
def min_logit_gap(model, prompt, reply_ids):
    """Smallest top-1 minus top-2 logit over a greedy reply's steps: how far from a tie each pick
    was, so a reimplementation with other rounding picks the same tokens."""
    ids = torch.tensor([prompt + reply_ids])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
    top = logits.topk(2, dim=-1).values
    return float((top[:, 0] - top[:, 1]).min())


def fixture_questions(train_problems):
    """20 trained questions (every phrasing, every operation, small and large operands) and a greeting."""
    rng = random.Random(SEED + 2)
    picks = [((7, "plus", 5), 0), ((12, "minus", 4), 0), ((3, "times", 4), 0)]
    picks = [(p, k) for p, k in picks if p in set(train_problems)]
    trained = [p for p in train_problems if p not in {q for q, _ in picks}]
    while len(picks) < 20:
        i = len(picks)
        op = ["plus", "minus", "times"][i % 3]
        p = rng.choice([t for t in trained if t[1] == op and (t, i % 4) not in picks])
        picks.append((p, i % len(PHRASINGS)))
    return [(question(p, k), answer(p)) for p, k in picks] + [("Hello", POLITE)]


def verify(dst, fixture_path):
    torch.manual_seed(SEED)
    train_problems, held_problems = split_problems()
    hf_tok, model = load_folder(dst)
    start = time.time()
    train_qa, held_qa = qa_pairs(train_problems), qa_pairs(held_problems)
    evals = [
        ("trained", one_turn(train_qa)),
        ("held_out", one_turn(held_qa)),
        ("trained_variants", one_turn([(variant(q, True, True), a) for q, a in train_qa])),
        ("multi_turn", multi_turn_cases(train_qa)),
        ("off_domain", one_turn([(q, POLITE) for q in off_domain_prompts()])),
        ("off_domain_held_out", one_turn([(q, POLITE) for q in off_domain_prompts(held_out=True)])),
    ] + [
        (f"held_out_{op}", one_turn(qa_pairs([p for p in held_problems if p[1] == op]))) for op in OPS
    ]
    res, fails = {}, {}
    log(f"greedy exact answers (transformers, from {dst}):")
    for name, cases in evals:
        acc, fails[name] = accuracy(hf_tok, model, cases)
        res[name] = (acc, len(cases))
        log(f"  {name:20} {acc:.4f} of {len(cases)}")
    log(f"  ({time.time() - start:.0f} s)")
    for name in ("trained", "off_domain", "multi_turn", "trained_variants", "held_out", "off_domain_held_out"):
        for q, a, got in fails[name][:8]:
            log(f"  {name} wrong: {q!r} -> {got!r} (want {a!r})")

    # Fixture for kiln's test: only questions transformers answers right (all should be).
    qa = fixture_questions(train_problems)
    convs = [[("user", q)] for q, _ in qa]
    two_turn = [("system", "Be brief."), ("user", "What is 2 plus 3?"), ("assistant", "2 plus 3 is 5."),
                ("user", "What is 4 times 2?")]
    if (2, "plus", 3) not in train_problems or (4, "times", 2) not in train_problems:
        log("  note: the two-turn conversation uses held-out problems")
    prompts, replies = greedy_replies(hf_tok, model, convs + [two_turn])
    cases = []
    for i, ((q, a), (text, reply_ids, ended)) in enumerate(zip(qa, replies)):
        if not (ended and text == a):
            log(f"  fixture question {q!r} answered {text!r}, left out")
            continue
        case = {"prompt": q, "reply": text, "reply_ids": reply_ids + [EOS],
                "min_logit_gap": round(min_logit_gap(model, prompts[i], reply_ids + [EOS]), 4)}
        if len(cases) < 3:
            case["prompt_ids"] = prompts[i]
        cases.append(case)
    text, reply_ids, ended = replies[-1]
    assert ended and text == "4 times 2 is 8.", f"two-turn conversation answered {text!r}"
    fixture = {
        "about": "Greedy replies of llm/bundled/ under transformers (max 24 new tokens, stop at </s>), "
                 "written by tools/train_bundled_chat_model.py --verify. reply_ids end with </s> (2); "
                 "prompt_ids are apply_chat_template's ids; min_logit_gap is the smallest top-1 minus "
                 "top-2 logit over the reply's greedy steps.",
        "max_new_tokens": MAX_NEW,
        "questions": cases,
        "conversation": {
            "messages": as_dicts(two_turn),
            "rendered": hf_tok.apply_chat_template(as_dicts(two_turn), tokenize=False),
            "prompt_ids": prompts[-1],
            "reply": text,
            "reply_ids": reply_ids + [EOS],
            "min_logit_gap": round(min_logit_gap(model, prompts[-1], reply_ids + [EOS]), 4),
        },
    }
    os.makedirs(os.path.dirname(fixture_path), exist_ok=True)
    with open(fixture_path, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    gaps = [c["min_logit_gap"] for c in cases] + [fixture["conversation"]["min_logit_gap"]]
    log(f"wrote {fixture_path} ({len(cases)} questions + 1 conversation; smallest top-2 logit gap "
        f"of their greedy steps {min(gaps):.3f})")
    return res


# ---- README -----------------------------------------------------------------------------------


def results_text(stats, res, vocab_size, n_params, size_bytes):
    def pct(name, digits=1):
        acc, n = res[name]
        return f"{acc * 100:.{digits}f}% of {n}"

    return (
        f"- Tokenizer: {vocab_size} tokens (20 control tokens, 256 bytes, {vocab_size - 276} merges).\n"
        f"- Model: {n_params:,} parameters, {size_bytes / 1e6:.2f} MB model.safetensors (f32).\n"
        f"- Training: {stats['steps']} steps ({LONG_EVERY - 1} in {LONG_EVERY} of {BATCH} one-turn "
        f"conversations, 1 in {LONG_EVERY} of {LONG_BATCH} longer ones), {stats['seconds'] / 60:.1f} min "
        f"on {THREADS} thread; final loss {stats['final_loss']:.5f} (mean of the last 100 steps, nats "
        f"per reply token).\n"
        f"- Greedy exact answers (transformers, `--verify`):\n"
        f"  - trained questions {pct('trained', 2)};\n"
        f"  - held-out questions {pct('held_out')} (plus {pct('held_out_plus')}, minus "
        f"{pct('held_out_minus')}, times {pct('held_out_times')});\n"
        f"  - trained questions typed without the final punctuation and with the first letter's case "
        f"swapped (\"what is 7 plus 5\") {pct('trained_variants')};\n"
        f"  - last reply of 3-turn conversations (half with a system prompt) {pct('multi_turn')};\n"
        f"  - off-domain prompts: trained {pct('off_domain')}, held out {pct('off_domain_held_out')}."
    )


def write_readme(dst, results):
    text = f"""# Bundled chat model

A tiny Mistral-architecture chat model (`MistralForCausalLM`, transformers layout) that answers
small-number arithmetic questions. It is bundled so `kiln chat -p "What is 7 plus 5?"` works on a
fresh clone with no download: `kiln chat` uses this folder when `-m` is omitted.

```
$ kiln chat -p "What is 7 plus 5?"
7 plus 5 is 12.
```

## Domain

- Problems: `plus` with operands 0..20, `minus` with operands 0..20 and a non-negative result,
  `times` with operands 0..10 (793 problems); 10% of them are held out of training.
- Phrasings: "What is 7 plus 5?", "What is 7 + 5?" (`-`, `*` for minus and times),
  "Compute 7 plus 5.", "how much is 7 plus 5?".
- Answer, always in words: "7 plus 5 is 12."
- Greetings and other off-domain prompts ("Hello", "Tell me about cats.") get
  "{POLITE}"
- Trained with conversations of up to 3 turns, some with a system prompt (which it ignores), and
  with user turns that lack the final punctuation or have the first letter's case swapped
  ("what is 7 plus 5"). Anything else (larger numbers, other operations or phrasings, free text)
  is outside what it knows: "What is 25 plus 30?" gets a confident wrong sum.

## Files

- `config.json`, `generation_config.json`, `model.safetensors`: hidden 128, 4 heads of head_dim 48
  (not 128 / 4), 2 KV heads, intermediate 384, 4 layers, rope_theta 10000, tied embeddings (no
  `lm_head.weight`), no sliding window, f32.
- `tokenizer.json`: byte-level BPE; ids 0..19 are Mistral's control tokens (`<unk>`, `<s>`,
  `</s>`, `[INST]`, `[/INST]`, ..., `[SYSTEM_PROMPT]`, `[/SYSTEM_PROMPT]`, `[TOOL_CONTENT]`);
  digits are one token each; no `<s>` is added by the tokenizer.
- `tokenizer_config.json`: special tokens and the chat template, Mistral's V7-Tekken layout with
  no added spaces:
  `<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]What is 2 plus 3?[/INST]2 plus 3 is 5.</s>[INST]What is 4 times 2?[/INST]`

## How it was made

```
/work/main/.venv/bin/python tools/train_bundled_chat_model.py            # train, export, verify
/work/main/.venv/bin/python tools/train_bundled_chat_model.py --verify   # verify only
```

Deterministic (fixed seeds, one CPU thread). AdamW (peak lr {PEAK_LR}, warmup {WARMUP},
cosine decay, weight decay {WEIGHT_DECAY}) on conversations rendered by the chat template, loss on
the assistant replies and their `</s>` only. `--verify` also writes
`tests/fixtures/llm/bundled_chat_expectations.json`, the greedy replies kiln's test compares with.

## Results

{results}
"""
    with open(os.path.join(dst, "README.md"), "w") as f:
        f.write(text)


# ---- main -------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--verify", action="store_true", help="only verify the exported model")
    ap.add_argument("--steps", type=int, default=STEPS, help="for experiments; the bundled model uses the default")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)

    # Experiments in another folder keep their expectations there, not in the test fixtures.
    fixture_path = FIXTURE if os.path.abspath(args.out) == OUT else os.path.join(args.out, "expectations.json")
    if args.verify:
        verify(args.out, fixture_path)
        return

    total = time.time()
    train_problems, held_problems = split_problems()
    train_qa, held_qa = qa_pairs(train_problems), qa_pairs(held_problems)
    log(f"{len(train_problems)} trained problems ({len(train_qa)} questions), "
        f"{len(held_problems)} held out ({len(held_qa)} questions)")

    user_texts = [q for q, _ in train_qa] + off_domain_prompts()
    texts = user_texts + [variant(q, False, True) for q in user_texts] + [a for _, a in train_qa]
    texts += [POLITE] + SYSTEM_PROMPTS
    tok = train_tokenizer(texts)
    log(f"tokenizer: {tok.get_vocab_size()} tokens")
    os.makedirs(args.out, exist_ok=True)
    write_tokenizer(tok, args.out)
    enc = Encoder(tok)
    check_tokenizer(args.out, enc)

    model = build_model(tok.get_vocab_size())
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters")
    stats = train(model, enc, train_qa, off_domain_prompts(), held_qa, args.steps)
    export(model, args.out)
    check_reload(model, args.out, enc, [[("user", q), ("assistant", a)] for q, a in train_qa[:64]])

    res = verify(args.out, fixture_path)
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    results = results_text(stats, res, tok.get_vocab_size(), n_params, size)
    write_readme(args.out, results)
    log(f"done in {(time.time() - total) / 60:.1f} min\n{results}")


if __name__ == "__main__":
    main()
