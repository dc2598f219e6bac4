"""Tagged words for token classification (named-entity recognition, BioBERT/BLURB style):
CoNLL files (one word a line, its tag in a column, a blank line between sentences) or a Hugging
Face dataset of token lists and tag lists.

Tags are read in the files' scheme (BIO, IOB1, IO, BIOES or BILOU) and turned into BIO. Each
sentence is encoded as pre-tokenized words with the tokenizer's own template (BERT ``[CLS] ...
[SEP]``), or ``<eos> words <eos>`` for a tokenizer without one; the first piece of each word
carries its tag.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import tokenizers
import torch
from jsonargparse.typing import Path_fr
from torch.utils.data import DataLoader

from lmforge.data.source import DataSource, plain_path
from lmforge.data.tokenizer import TokenizerSpec
from lmforge.errors import UserError
from lmforge.evaluation.downstream_data import DownstreamData
from lmforge.evaluation.schemes import PREFIXES, detect_scheme, entity_types, foreign_tag, mismatch, split_tag, to_bio

IGNORE = -100  # the label of pieces that are not a word's first (cross-entropy's ignore_index)
Example = dict[str, Any]


class Sentence(NamedTuple):
    words: list[str]
    tags: list[str] | None  # BIO once read by TaggedText; None in a predict file without tags
    lines: list[str]  # the original lines (predict writes them back with the predicted tag)
    origin: str = ""  # the file (or hub dataset:split) it was read from, for errors
    line: int = 0  # the line of its first word in that file; 0 for a hub dataset


def read_conll(path: str | Path, columns: tuple[int, int] = (0, -1), tagged: bool = True) -> list[Sentence]:
    """The sentences of a CoNLL file: one word a line, columns separated by tabs or by spaces
    (told apart per line: a tab means tabs), a blank line between sentences, ``-DOCSTART-``
    lines skipped.

    Args:
        path: The file.
        columns: The word's and the tag's column (negative counts from the end).
        tagged: Whether the tag column must be there (a file to predict may lack it).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CoNLL file '{path}' does not exist: check the path.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: not UTF-8 text (byte {err.start}); convert the file to UTF-8.") from err
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[str] = []
    first = 0
    for number, line in enumerate(text.splitlines() + [""], start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(Sentence(words, tags if tagged else None, lines, str(path), first))
                words, tags, lines = [], [], []
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        word_col, tag_col = (c % len(fields) if -len(fields) <= c < len(fields) else None for c in columns)
        if word_col is None or tagged and (tag_col is None or tag_col == word_col):
            raise UserError(f"{path}, line {number}: {len(fields)} column(s), too few for the word in column "
                            f"{columns[0]} and the tag in column {columns[1]}: fix the line or set `data.columns`.")
        first = first if words else number
        words.append(fields[word_col])
        tags.append(fields[tag_col] if tagged else "O")
        lines.append(line)
    if not sentences:
        raise UserError(f"'{path}' holds no sentences: it is empty.")
    return sentences


class TaggedText(DownstreamData):
    """Token classification data (named-entity recognition) for fine-tuning a pretrained encoder.

    Sources: CoNLL files (``source.paths``, with a ``validation`` file), or a Hugging Face dataset
    whose ``source.text_field`` column holds token lists and ``tag_field`` their tags (ClassLabel
    ids or strings), with a ``validation`` split; without ``validation``, ``val_fraction`` of the
    training sentences is held out, drawn by ``seed``. Tags in the files' ``scheme`` become BIO;
    ``labels`` are the BIO tags in id order, and a validation or test tag outside them is an error.

    A sentence longer than ``seq_len`` pieces is split into windows at word boundaries (preferring
    one that cuts no gold entity), each an example of its own; none is cut silently. Batches hold
    ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` (the tag id at each word's
    first piece, -100 elsewhere), ``word_index`` (the word's number in its sentence at first
    pieces, -1 elsewhere), and when predicting ``lines`` (each window's original lines),
    ``sentence`` and ``first_word`` (the window's sentence and its first word's number).

    Args:
        source: The training sentences: CoNLL files, or a hub dataset and its split (``hf_split``).
        validation: The validation sentences: a file (local source) or a split name (hub dataset);
            ``None`` holds out ``val_fraction`` of the training sentences.
        test: The test sentences for ``lmforge test``, as ``validation``.
        tag_field: Hub datasets: the column of the tags.
        columns: CoNLL files: the word's and the tag's column (negative counts from the end).
        scheme: The tagging scheme of the data: ``BIO`` (IOB2), ``IOB1``, ``IO``, ``BIOES`` (also
            spelt ``IOBES``), ``BILOU``; ``auto`` detects it from the training tags. Tags are read as
            BIO (S-/U- open an entity, E-/L- continue it); a tag of another scheme is an error.
        labels: The BIO tags in id order; ``None`` takes ``O`` then the sorted ``B-``/``I-`` tags of
            the training entity types.
        val_fraction: Fraction of the training sentences held out when there is no ``validation``.
        seed: Seed of that split; the training order follows the run's seed, or this one.
        max_documents: Use at most this many sentences of each split (quick runs).
        train_size: Train on this many of the training sentences (a learning curve's point), drawn
            at random by the run's ``seed_everything`` (else ``seed``); the tags are still those of
            the whole split. More than the split holds is refused.
        tokenizer: Only when the task brings none (from scratch): the tokenizer to load or train.
        seq_len: Longest example in pieces, special tokens included.
        batch_size: Examples per batch on each device.
        group_by_length: Batch training examples of similar length together.
        num_workers: DataLoader worker processes.
        predict: A CoNLL file to tag with ``lmforge predict`` (its tag column may be missing).
    """

    task_type = "token_classification"
    unit = "sentences"  # what one training item is called in messages

    def __init__(
        self,
        source: DataSource = DataSource(text_field="tokens"),
        validation: Path_fr | str | None = None,
        test: Path_fr | str | None = None,
        tag_field: str = "ner_tags",
        columns: tuple[int, int] = (0, -1),
        scheme: Literal["auto", "BIO", "IOB1", "IO", "BIOES", "IOBES", "BILOU"] = "auto",
        labels: list[str] | None = None,
        val_fraction: float = 0.1,
        seed: int = 1234,
        max_documents: int | None = None,
        train_size: int | None = None,
        tokenizer: TokenizerSpec = TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=2048, lowercase=True),
        seq_len: int = 128,
        batch_size: int = 32,
        group_by_length: bool = False,
        num_workers: int = 0,
        predict: Path_fr | str | None = None,
    ):
        super().__init__(source, validation, test, labels, val_fraction, seed, max_documents, tokenizer, seq_len,
                         batch_size, group_by_length, num_workers, min_seq_len=3, train_size=train_size)
        if scheme != "auto" and scheme not in PREFIXES:
            raise UserError(f"scheme={scheme!r}: use {', '.join(PREFIXES)} or auto.")
        self.predict = plain_path(predict) if predict is not None else None
        self.tag_field, self.columns, self.scheme = tag_field, tuple(columns), scheme
        self._raw: dict[str, list[Sentence]] | None = None

    # -- reading ------------------------------------------------------------------------------
    def _read(self, where: str | list[str]) -> list[Sentence]:
        if self.source.is_local:
            files = [where] if isinstance(where, str) else where
            sentences = [s for file in files for s in read_conll(file, self.columns)]
        else:
            sentences = self._read_hub(where)
        return sentences[: self.max_documents] if self.max_documents else sentences

    def _read_hub(self, split: str) -> list[Sentence]:
        import datasets

        try:
            ds = datasets.load_dataset(self.source.hf_dataset, self.source.hf_config, split=split)
        except Exception as err:  # datasets raises many types for a wrong name, split or no network
            raise UserError(f"Could not load split '{split}' of the Hugging Face dataset '{self.name}': {err}") from err
        for field in (self.source.text_field, self.tag_field):
            if field not in ds.column_names:
                raise UserError(f"'{self.name}:{split}' has no column '{field}' (columns: {', '.join(ds.column_names)}): "
                                "set data.source.text_field / data.tag_field.")
        names = getattr(getattr(ds.features[self.tag_field], "feature", None), "names", None)
        sentences = []
        for r in ds:
            words = [str(w) for w in r[self.source.text_field]]
            tags = [names[t] if names else str(t) for t in r[self.tag_field]]
            if words:
                lines = [f"{w}\t{t}" for w, t in zip(words, tags)]
                sentences.append(Sentence(words, tags, lines, f"{self.name}:{split}"))
        if not sentences:
            raise UserError(f"Split '{split}' of '{self.name}' holds no sentences: choose another split.")
        return sentences

    def raw(self) -> dict[str, list[Sentence]]:
        """The sentences of every split (train, val[, test]), their tags in BIO."""
        if self._raw is None:
            self.source.require("tagged data", "CoNLL files (a word and its tag per line)")
            train = self._read(self.source.paths if self.source.is_local else self.source.hf_split)
            raw = {"train": train}
            if self.validation is not None:
                raw["val"] = self._read(self.validation)
            else:
                order = np.random.default_rng(self.seed).permutation(len(train))
                n_val = max(1, round(len(train) * self.val_fraction))
                if n_val >= len(train):
                    raise UserError(f"'{self.name}' has {len(train)} sentences, too few to hold out "
                                    f"val_fraction={self.val_fraction}: add sentences or give `validation`.")
                raw = {"train": [train[i] for i in sorted(order[n_val:])], "val": [train[i] for i in sorted(order[:n_val])]}
            if self.test is not None:
                raw["test"] = self._read(self.test)
            scheme = detect_scheme(s.tags for s in raw["train"]) if self.scheme == "auto" else self.scheme
            raw = {split: [self._to_bio(s, scheme) for s in sentences] for split, sentences in raw.items()}
            if self.labels is None:
                types = entity_types(t for s in raw["train"] for t in s.tags)
                self.labels = ["O", *sorted(f"{p}-{t}" for t in types for p in "BI")]
            raw["train"] = self.subsample_train(raw["train"])
            self._raw = raw
        return self._raw

    @staticmethod
    def _to_bio(s: Sentence, scheme: str) -> Sentence:
        """``s`` with its tags in BIO; a tag of another scheme is an error naming its file and line."""
        bad = foreign_tag(s.tags or [], scheme)
        if bad is not None:
            where = f"line {s.line + bad}" if s.line else f"word {bad + 1} of sentence {' '.join(s.words[:6])!r}"
            raise UserError(f"'{s.origin}' {where} {mismatch(s.tags[bad], scheme)}.")
        return s._replace(tags=to_bio(s.tags, scheme))

    # -- tokenizer ----------------------------------------------------------------------------
    def training_texts(self) -> Iterable[str]:
        return (" ".join(s.words) for s in self.raw()["train"])

    # -- encoding -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "predict":
            if "predict" not in self.datasets:
                if self.predict is None:
                    raise UserError("Nothing to predict: give `data.predict`, a CoNLL file of the words to tag.")
                self.datasets["predict"] = self.encode(read_conll(self.predict, self.columns, tagged=False), "predict")
            return
        for split, sentences in self.raw().items():
            if split not in self.datasets:
                self.datasets[split] = self.encode(sentences, split)

    def _backend(self) -> tuple[tokenizers.Tokenizer, bool, bool]:
        """A copy of the tokenizer without truncation or padding, whether it has a template of
        its own, and whether words need the prefix space of byte-level BPE."""
        backend = tokenizers.Tokenizer.from_str(self.tokenizer.backend.to_str())  # the task's stays as it is
        backend.no_truncation()
        backend.no_padding()
        byte_level = "ByteLevel" in json.dumps(json.loads(backend.to_str()).get("pre_tokenizer"))
        return backend, backend.num_special_tokens_to_add(False) > 0, byte_level

    def encode(self, sentences: list[Sentence], split: str = "train") -> list[Example]:
        """The examples of ``sentences``: one per window of at most ``seq_len`` pieces."""
        backend, template, byte_level = self._backend()
        budget = self.seq_len - (backend.num_special_tokens_to_add(False) if template else 2)
        ids = {tag: i for i, tag in enumerate(self.labels or [])}
        examples: list[Example] = []
        split_count = 0
        for number, s in enumerate(sentences):
            words = [f" {w}" for w in s.words] if byte_level else s.words  # HF's is_split_into_words
            tag_ids = self._tag_ids(s, ids, split)
            pieces = np.bincount([w for w in backend.encode(words, is_pretokenized=True,
                                                            add_special_tokens=False).word_ids if w is not None],
                                 minlength=len(words))
            windows = self._windows(pieces, s.tags, budget, split, number)
            split_count += len(windows) > 1
            for start, end in windows:
                examples.append(self._example(backend, template, words[start:end], tag_ids[start:end], start, number, s))
        if split_count:
            warnings.warn(f"{split_count} {split} sentences of '{self.name}' are longer than seq_len={self.seq_len} "
                          "pieces: each is split into windows at word boundaries.", stacklevel=2)
        return examples

    def _tag_ids(self, s: Sentence, ids: dict[str, int], split: str) -> list[int]:
        if s.tags is None:
            return [IGNORE] * len(s.words)
        unknown = sorted({t for t in s.tags if t not in ids})
        if unknown:
            raise UserError(f"{split} tags {unknown} of '{self.name}' are not among the labels {self.labels}: fix "
                            "the data or list every tag in `data.labels`.")
        return [ids[t] for t in s.tags]

    def _windows(self, pieces: np.ndarray, tags: list[str] | None, budget: int, split: str,
                 number: int) -> list[tuple[int, int]]:
        """Word ranges ``[start, end)`` of at most ``budget`` pieces each, covering every word
        once; a cut inside a gold entity only where no other boundary fits."""
        if pieces.max(initial=0) > budget:
            word = int(np.argmax(pieces))
            raise UserError(f"Word {word + 1} of {split} sentence {number + 1} of '{self.name}' is {pieces[word]} "
                            f"pieces, more than seq_len={self.seq_len} allows: raise data.seq_len.")
        ends = np.cumsum(pieces)
        windows, start = [], 0
        while start < len(pieces):
            used = ends[start - 1] if start else 0
            end = int(np.searchsorted(ends, used + budget, side="right"))  # the most words that fit
            if end < len(pieces) and tags is not None:
                clean = [e for e in range(end, start, -1) if split_tag(tags[e])[0] != "I"]
                end = clean[0] if clean else end
            windows.append((start, end))
            start = end
        return windows

    def _example(self, backend: tokenizers.Tokenizer, template: bool, words: list[str], tag_ids: list[int],
                 start: int, number: int, s: Sentence) -> Example:
        if template:
            e = backend.encode(words, is_pretokenized=True, add_special_tokens=True)
            input_ids, type_ids, word_ids = e.ids, e.type_ids, e.word_ids
        else:  # <eos> words <eos>
            e = backend.encode(words, is_pretokenized=True, add_special_tokens=False)
            eos = self.tokenizer.eos_id
            input_ids, type_ids = [eos, *e.ids, eos], [0] * (len(e.ids) + 2)
            word_ids = [None, *e.word_ids, None]
        labels = np.full(len(input_ids), IGNORE, dtype=np.int64)
        word_index = np.full(len(input_ids), -1, dtype=np.int64)
        previous = None
        for position, w in enumerate(word_ids):
            if w is not None and w != previous:
                labels[position], word_index[position] = tag_ids[w], start + w
            previous = w
        example = {"input_ids": np.asarray(input_ids, dtype=np.int64),
                   "token_type_ids": np.asarray(type_ids, dtype=np.int64), "labels": labels, "word_index": word_index}
        if s.tags is None:  # predicting: the lines to write back, and where they are
            example.update(lines=s.lines[start: start + len(words)], sentence=number, first_word=start)
        return example

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        """Pad to the longest example; ``labels`` -100 and ``word_index`` -1 on padding."""
        longest = max(len(e["input_ids"]) for e in examples)
        batch = {"input_ids": torch.full((len(examples), longest), self.pad_id, dtype=torch.long),
                 "attention_mask": torch.zeros(len(examples), longest, dtype=torch.long),
                 "token_type_ids": torch.zeros(len(examples), longest, dtype=torch.long),
                 "labels": torch.full((len(examples), longest), IGNORE, dtype=torch.long),
                 "word_index": torch.full((len(examples), longest), -1, dtype=torch.long)}
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            batch["attention_mask"][row, :n] = 1
            for key in ("input_ids", "token_type_ids", "labels", "word_index"):
                batch[key][row, :n] = torch.from_numpy(e[key])
        if "lines" in examples[0]:
            batch["lines"] = [e["lines"] for e in examples]
            batch["sentence"] = torch.tensor([e["sentence"] for e in examples])
            batch["first_word"] = torch.tensor([e["first_word"] for e in examples])
        return batch

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)
