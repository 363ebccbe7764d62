#!/usr/bin/env python3
"""Reference token ids for the tokenizer parity tests (tests/tokenizer_parity.rs).

Writes two small JSON files, committed with this script:

  testdata/reference/smollm2_token_ids.json   SmolLM2-135M-Instruct, tokenizer rebuilt from the GGUF
  testdata/reference/minilm_token_ids.json    all-MiniLM-L6-v2, its shipped tokenizer.json
  testdata/reference/spm_tiny_tokenizer.json  a tiny SentencePiece BPE trained here, stored the way
                                              llama.cpp writes a `llama` GGUF vocabulary, with the
                                              ids sentencepiece itself gives

Run from the repository root after scripts/fetch_models.sh:

  python3 scripts/reference_token_ids.py

Which SmolLM2 tokenizer is the ground truth
-------------------------------------------
transformers can load a tokenizer straight from a GGUF (`AutoTokenizer.from_pretrained(dir,
gguf_file=name)`), but its converter only knows a handful of `tokenizer.ggml.pre` values
(llama3, qwen2, tekken, ...). `smollm` is not among them, so it keeps GPT2Tokenizer's default
pre-tokenizer: a bare `ByteLevel(use_regex=True)`, with no digit splitting.

The real SmolLM2 tokenizer (HF `tokenizer.json`) pre-tokenizes with
`Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, trim_offsets=True,
use_regex=True)]`. Evidence, since the HF file itself is not available offline:
  * llama.cpp maps `smollm` (convert_hf_to_gguf.py hash 855059429035d75a..., ref
    HuggingFaceTB/SmolLM-135M) to the regex list ["\\p{N}", <GPT-2 regex>]: isolate every digit,
    then the GPT-2 split -- exactly Digits(individual) followed by ByteLevel's regex;
  * the GGUF vocabulary has no token with two digits (only "0".."9"), which is what a BPE trained
    behind an individual-digit split produces.

The two pre-tokenizers give the same ids on most text (digits end up alone either way), but not
where whitespace precedes a digit: "a  1" is `a`,`ĠĠ`,`1` with the real tokenizer and
`a`,`Ġ`,`Ġ`,`1` with the converted one (GPT-2's regex glues one space to the number). This script
checks that on every text and records the disagreements. When they exist, the reference is the
converted tokenizer with its pre-tokenizer replaced by the real one (everything else -- vocab,
merges, added tokens, post-processor -- is transformers' conversion of the GGUF metadata), and
the file says so in "reference".
"""

import json
import os
import re
import sys

import tokenizers
import transformers
from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SMOL_DIR = os.path.join(ROOT, "fixtures", "smollm2")
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = os.path.join(ROOT, "fixtures", "minilm")
OUT_DIR = os.path.join(ROOT, "testdata", "reference")

TEXTS = [
    # plain English
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "A model is only as trustworthy as the data it was trained on.",
    # whitespace: leading, trailing, runs, tabs, newlines
    " leading space",
    "trailing space ",
    "   three leading spaces",
    "multiple   spaces   between",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four\n",
    "\r\nwindows line\r\n",
    "  \t \n ",
    "",
    # digits
    "12345",
    "3.14159",
    "2026-11-22",
    "x1y22z333",
    "a  1",
    "  42",
    "Total:\t  1,234,567.89 USD",
    "x = 10\n    y = 200\n",
    "phone +1 (555) 010-9999",
    # punctuation and contractions
    "Wait... what?! (Really?) [yes] {no} <maybe>",
    "don't, I'll, we're, they've, she'd, it's, I'm",
    "DON'T SHOUT, I'LL LISTEN",
    "\"quoted\" 'single' `backtick` -- em—dash … ellipsis",
    # unicode
    "café naïve résumé coöperate",
    "東京都",
    "🙂👍🏽",
    "مرحبا بالعالم",
    "e\u0301 a\u0308 n\u0303 (combining marks)",
    "Ünïcödé ÅÄÖ ß ﬁ ligature",
    "Привет, мир! Γειά σου κόσμε",
    "zero\u200bwidth\u00a0nbsp",
    # code
    "def f(x):\n    return x ** 2  # square\n",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "<div class=\"a\">&amp;</div>",
    "SELECT * FROM users WHERE id = 42;",
    # rare tokens
    " neoliberal CMOS Antim Mama ectable}/{ Brow",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    # special tokens literally in the text
    "<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|>text after eos",
    "not special: <|im_start and <im_end|>",
    "<repo_name>trojanscan<file_sep>src/lib.rs",
]

CHAT = [{"role": "user", "content": "What is 2+2?"}]


def true_smollm_pre_tokenizer():
    """The pre-tokenizer of SmolLM2's own tokenizer.json (see the module docstring)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def encode_both(encode, text):
    return {"ids": encode(text, True), "ids_no_special": encode(text, False)}


def smollm2():
    hf = AutoTokenizer.from_pretrained(SMOL_DIR, gguf_file=SMOL_FILE)
    converted = hf.backend_tokenizer
    converted_pre = json.loads(converted.to_str())["pre_tokenizer"]

    # The reference: the same converted tokenizer, with the real pre-tokenizer.
    fixed = Tokenizer.from_str(converted.to_str())
    fixed.pre_tokenizer = true_smollm_pre_tokenizer()

    def enc_converted(text, special):
        return hf(text, add_special_tokens=special)["input_ids"]

    def enc_fixed(text, special):
        return fixed.encode(text, add_special_tokens=special).ids

    # Sanity: the transformers wrapper and the raw backend agree on the converted tokenizer.
    for t in TEXTS:
        for special in (True, False):
            assert enc_converted(t, special) == converted.encode(t, add_special_tokens=special).ids, t

    chat_text = hf.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    all_texts = TEXTS + [chat_text]

    disagreements = []
    for t in all_texts:
        a, b = encode_both(enc_converted, t), encode_both(enc_fixed, t)
        if a != b:
            disagreements.append(
                {"text": t, "transformers_gguf": a["ids_no_special"], "true_tokenizer": b["ids_no_special"]}
            )

    # transformers' GGUF conversion does split "12345" into five tokens, but only because the
    # vocabulary has no multi-digit token; the pre-tokenizers differ around whitespace.
    digits_converted = enc_converted("12345", False)
    digits_fixed = enc_fixed("12345", False)
    if disagreements:
        reference = "true_tokenizer"
        encode = enc_fixed
    else:
        reference = "transformers_gguf"
        encode = enc_converted

    cases = [dict(text=t, **encode_both(encode, t)) for t in TEXTS]
    chat_ids = encode_both(encode, chat_text)

    return {
        "model": "SmolLM2-135M-Instruct",
        "source": f"fixtures/smollm2/{SMOL_FILE}",
        "produced_by": "scripts/reference_token_ids.py",
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "reference": reference,
        "reference_note": (
            "true_tokenizer = transformers' GGUF conversion with its pre-tokenizer replaced by SmolLM2's "
            "real one, Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false, "
            "trim_offsets=true, use_regex=true)]; transformers_gguf = AutoTokenizer.from_pretrained(dir, "
            "gguf_file=...) unchanged, whose pre-tokenizer for tokenizer.ggml.pre=smollm is "
            + json.dumps(converted_pre)
        ),
        "converted_splits_12345_into": len(digits_converted),
        "true_splits_12345_into": len(digits_fixed),
        "disagreements_between_converted_and_true": disagreements,
        "special_tokens": {
            "bos": hf.bos_token,
            "eos": hf.eos_token,
            "unk": hf.unk_token,
            "pad": hf.pad_token,
            "add_bos_token": getattr(hf, "add_bos_token", None),
            "add_eos_token": getattr(hf, "add_eos_token", None),
        },
        "chat_template": {
            "messages": CHAT,
            "add_generation_prompt": True,
            "text": chat_text,
            **chat_ids,
        },
        "cases": cases,
    }


MINILM_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces  ",
    "don't, I'll, it's",
    "12345 3.14159 2026-11-22",
    "café naïve résumé",
    "東京都",
    "🙂👍🏽",
    "UNAFFABLE unaffable",
    "[CLS] literal [SEP] [MASK] tokens",
    "",
]


def minilm():
    path = os.path.join(MINILM_DIR, "tokenizer.json")
    tok = Tokenizer.from_file(path)
    # The shipped tokenizer.json pads every encoding to 128 ([PAD] = 0) and truncates at 128.
    # transformers ignores both (it pads/truncates only when asked), and so does our
    # `tokenizer::from_json_file`; the reference ids are the unpadded ones.
    stored = json.loads(tok.to_str())
    tok.no_padding()
    tok.no_truncation()
    hf = AutoTokenizer.from_pretrained(MINILM_DIR)
    cases = []
    for t in MINILM_TEXTS:
        ids = tok.encode(t, add_special_tokens=True).ids
        ids_ns = tok.encode(t, add_special_tokens=False).ids
        # transformers on the same directory must agree with the raw tokenizer.json.
        assert hf(t, add_special_tokens=True)["input_ids"] == ids, t
        assert hf(t, add_special_tokens=False)["input_ids"] == ids_ns, t
        cases.append({"text": t, "ids": ids, "ids_no_special": ids_ns})
    return {
        "model": "all-MiniLM-L6-v2",
        "source": "fixtures/minilm/tokenizer.json",
        "produced_by": "scripts/reference_token_ids.py",
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "reference": (
            "tokenizer.json via the tokenizers library with its stored padding and truncation removed "
            "(checked equal to transformers' AutoTokenizer on the same directory)"
        ),
        "stored_padding": stored["padding"],
        "stored_truncation": stored["truncation"],
        "cases": cases,
    }


# A fixed corpus for the tiny SentencePiece model (kept fixed so the vocabulary is reproducible).
SPM_CORPUS = """\
A model is only as trustworthy as the data it was trained on, and the weights it ships with.
Before deploying an open-weight model, scan it for hidden triggers and check where it came from.
The tokenizer turns text into ids; the same text must always give the same ids.
Backdoors hide behind rare tokens, unusual phrases, or a single word that flips the output.
def tokenize(text):
    return [vocab[piece] for piece in text.split()]
for i in range(10):
    print(i, i * i, "squares")
Numbers like 3.14159, 2026-11-22 and 1,234,567 appear in reports and logs.
She said: "don't trust, verify" -- and they've been verifying ever since.
Tabs\tand  double  spaces   and   triple   spaces   are   whitespace   too.
The quick brown fox jumps over the lazy dog; the lazy dog sleeps on.
Spectral signatures and activation clustering find poisoned training examples.
Weight forensics compares a model against its base, tensor by tensor.
"""

SPM_TEXTS = [
    "Hello world",
    "The tokenizer turns text into ids.",
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "multiple   spaces   between",
    "tab\tseparated\nnew line",
    "12345 3.14159 2026-11-22",
    "don't, I'll, we're",
    "café naïve résumé",
    "東京都 🙂",
    "Backdoors hide behind rare tokens",
    "def f(x):\n    return x ** 2\n",
    "<s>literal bos</s> and eos",
    "a<unk>b",
    "",
]


def sentencepiece_tiny():
    """A SentencePiece BPE vocabulary stored as llama.cpp stores a `llama` GGUF tokenizer.

    Options as Llama 2's tokenizer: BPE, identity normalization, dummy prefix, byte fallback,
    split digits. The reference ids are sentencepiece's own (the real tokenizer of such a
    model), with BOS first as `add_bos_token` says; text is cut at control tokens first and
    each piece encoded on its own, as llama.cpp and HF's Llama tokenizer.json do.

    transformers' GGUF conversion (Metaspace with prepend_scheme="first") does not add the
    dummy prefix to text that already starts with a space; the disagreements are recorded.
    """
    import io
    import re as _re
    import tempfile

    import gguf
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_CORPUS.splitlines()),
        model_writer=buf,
        vocab_size=420,
        model_type="bpe",
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())

    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        # llama.cpp's token types, as convert_hf_to_gguf.py assigns them.
        types.append(
            2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i) else 1
        )
    control = [t for t, ty in zip(tokens, types) if ty in (2, 3)]
    split = _re.compile("(" + "|".join(_re.escape(t) for t in control) + ")")

    def encode(text, special):
        ids = [sp.piece_to_id("<s>")] if special else []
        for piece in split.split(text):
            if piece in control:
                ids.append(sp.piece_to_id(piece))
            elif piece:
                ids.extend(sp.encode(piece))
        return ids

    cases = [dict(text=t, ids=encode(t, True), ids_no_special=encode(t, False)) for t in SPM_TEXTS]

    # What transformers makes of the same vocabulary stored in a GGUF.
    with tempfile.TemporaryDirectory() as d:
        w = gguf.GGUFWriter(os.path.join(d, "tiny.gguf"), "llama")
        w.add_context_length(64)
        w.add_embedding_length(8)
        w.add_block_count(1)
        w.add_feed_forward_length(8)
        w.add_head_count(1)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_add_space_prefix(True)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        hf = AutoTokenizer.from_pretrained(d, gguf_file="tiny.gguf")
        disagreements = [
            {"text": c["text"], "transformers_gguf": hf(c["text"])["input_ids"], "sentencepiece": c["ids"]}
            for c in cases
            if hf(c["text"])["input_ids"] != c["ids"]
        ]

    return {
        "model": "tiny SentencePiece BPE trained by scripts/reference_token_ids.py",
        "produced_by": "scripts/reference_token_ids.py",
        "sentencepiece_version": spm.__version__,
        "transformers_version": transformers.__version__,
        "reference": "sentencepiece (BOS first; text cut at control tokens, each piece encoded alone)",
        "disagreements_with_transformers_gguf": disagreements,
        "metadata": {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0,
            "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_eos_token": False,
            "tokenizer.ggml.add_space_prefix": True,
        },
        "cases": cases,
    }


def write(name, data):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    text = json.dumps(data, ensure_ascii=False, indent=1)
    # One line per id list, so a diff shows which text changed.
    number = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
    text = re.sub(
        rf"\[\s*({number}(?:,\s*{number})*)\s*\]",
        lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]",
        text,
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


def main():
    if not os.path.exists(os.path.join(SMOL_DIR, SMOL_FILE)) or not os.path.exists(
        os.path.join(MINILM_DIR, "tokenizer.json")
    ):
        sys.exit("fixtures missing: run scripts/fetch_models.sh first")
    smol = smollm2()
    print(
        f"smollm2: reference={smol['reference']}, "
        f"{len(smol['disagreements_between_converted_and_true'])} texts where transformers' GGUF "
        f"conversion disagrees with the true tokenizer"
    )
    for d in smol["disagreements_between_converted_and_true"]:
        print(f"  {d['text']!r}: gguf={d['transformers_gguf']} true={d['true_tokenizer']}")
    write("smollm2_token_ids.json", smol)
    write("minilm_token_ids.json", minilm())
    tiny = sentencepiece_tiny()
    print(
        f"spm_tiny: {len(tiny['disagreements_with_transformers_gguf'])} of {len(tiny['cases'])} texts where "
        "transformers' GGUF conversion disagrees with sentencepiece"
    )
    for d in tiny["disagreements_with_transformers_gguf"]:
        print(f"  {d['text']!r}: gguf={d['transformers_gguf']} sentencepiece={d['sentencepiece']}")
    write("spm_tiny_tokenizer.json", tiny)


if __name__ == "__main__":
    main()
