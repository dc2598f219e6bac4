"""Extractive question answering data: SQuAD-layout JSON files (v1.1, v2.0, BioASQ factoid
questions converted to it, as BioBERT fine-tunes them) or the hub sets (``rajpurkar/squad``,
``rajpurkar/squad_v2``), each question with its context cut into windows that fit the model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from jsonargparse.typing import Path_fr
from torch.utils.data import DataLoader

from lmforge.data.source import DataSource, plain_path
from lmforge.data.tokenizer import TokenizerSpec
from lmforge.errors import UserError
from lmforge.evaluation.downstream_data import DownstreamData
from lmforge.evaluation.squad_data import Question, Window, checked_questions, read_squad, snippet_group, windows

Example = dict[str, Any]


class SquadData(DownstreamData):
    """Questions over paragraphs, the answer a span of the paragraph, for fine-tuning an encoder's
    start/end head (:class:`~lmforge.evaluation.QuestionAnsweringTask`).

    Sources: SQuAD-layout ``.json`` files (``source.paths``; ``validation`` and ``test`` files)
    or a hub dataset in the hub's SQuAD columns (``id``, ``title``, ``context``, ``question``,
    ``answers``), e.g. ``rajpurkar/squad_v2`` with ``validation: validation``. Without
    ``validation``, ``val_fraction`` of the training articles (whole articles, so no context is
    in both; by question in a file of one article) is held out, drawn by ``seed``. An
    ``answer_start`` that does not point at its answer text and a question id seen twice in a
    split are refused, naming the file and the id.

    Each question and its context are framed with the tokenizer's pair template (BERT's
    ``[CLS] question [SEP] context [SEP]``); a context longer than the room ``seq_len`` leaves is
    cut into windows that share ``stride`` tokens, so none of it is ever left out (BERT's doc
    stride). Training labels are the first gold answer's first and last token in the windows that
    hold it whole, the first token (``[CLS]``, "no answer here") elsewhere and for unanswerable
    questions. Batches hold ``input_ids``, ``token_type_ids``, ``attention_mask``,
    ``start_positions``, ``end_positions``, ``offsets`` (``(B, T, 2)`` characters of each context
    token in its context, -1 elsewhere) and ``question`` (the question's number in its split,
    :meth:`questions`).

    Args:
        source: The training questions: SQuAD-layout ``.json`` files, or a hub dataset and its
            training split (``hf_split``).
        validation: The validation questions: a file (local source) or a split name (hub dataset);
            ``None`` holds out ``val_fraction`` of the training articles.
        test: The test questions for ``lmforge test``, as ``validation``.
        predict: A SQuAD-layout file whose questions ``lmforge predict`` answers (answers may be absent).
        val_fraction: Fraction of the training articles held out when there is no ``validation``.
        seed: Seed of that split; the training order follows the run's seed, or this one.
        max_documents: Use at most this many questions of each split (quick runs).
        train_size: Train on this many of the training questions (a learning curve's point), drawn
            by the run's ``seed_everything`` (else ``seed``), answerable and unanswerable keeping their shares.
        tokenizer: Only when the task brings none (from scratch): the tokenizer to load or train.
        seq_len: Longest window in tokens, special tokens included (BERT: 384).
        stride: Context tokens shared by consecutive windows of one context (BERT's doc stride: 128).
        max_question_tokens: Longer questions are cut to this many tokens (BERT: 64).
        batch_size: Windows per batch on each device.
        group_by_length: Batch training windows of similar length together.
        num_workers: DataLoader worker processes.
    """

    task_type = "question_answering"
    unit = "questions"  # what one training item is called in messages

    def __init__(
        self,
        source: DataSource = DataSource(),
        validation: Path_fr | str | None = None,
        test: Path_fr | str | None = None,
        predict: Path_fr | str | None = None,
        val_fraction: float = 0.1,
        seed: int = 1234,
        max_documents: int | None = None,
        train_size: int | None = None,
        tokenizer: TokenizerSpec = TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=2048, lowercase=True),
        seq_len: int = 384,
        stride: int = 128,
        max_question_tokens: int = 64,
        batch_size: int = 32,
        group_by_length: bool = False,
        num_workers: int = 0,
    ):
        super().__init__(source, validation, test, None, val_fraction, seed, max_documents, tokenizer, seq_len,
                         batch_size, group_by_length, num_workers, min_seq_len=8, train_size=train_size)
        if stride < 0 or max_question_tokens < 1:
            raise UserError(f"stride={stride} and max_question_tokens={max_question_tokens}: give a stride of 0 or "
                            "more and at least one question token.")
        self.predict = plain_path(predict) if predict is not None else None
        self.stride, self.max_question_tokens = stride, max_question_tokens
        self._raw: dict[str, list[Question]] | None = None
        self.windows: dict[str, list[Window]] = {}

    # -- reading ------------------------------------------------------------------------------
    def _read(self, where: str | list[str]) -> list[Question]:
        if self.source.is_local:
            files = [where] if isinstance(where, str) else where
            questions = [q for file in files for q in read_squad(file)]
            ids = Counter(q.id for q in questions)
            twice = next((q for q, n in ids.items() if n > 1), None)
            if twice is not None:  # each file was checked alone: ids must be unique across them too
                raise UserError(f"Question id '{twice}' is in more than one of {', '.join(files)}: ids must be unique "
                                "(they key the predictions).")
        else:
            questions = self._read_hub(where)
        return questions[: self.max_documents or len(questions)]

    def _read_hub(self, split: str) -> list[Question]:
        import datasets

        try:
            ds = datasets.load_dataset(self.source.hf_dataset, self.source.hf_config, split=split)
        except Exception as err:  # datasets raises many types for a wrong name, split or no network
            raise UserError(f"Could not load split '{split}' of the Hugging Face dataset '{self.name}': {err}") from err
        missing = [c for c in ("id", "question", "context", "answers") if c not in ds.column_names]
        if missing:
            raise UserError(f"'{self.name}:{split}' has no column {', '.join(missing)} (its columns: "
                            f"{', '.join(ds.column_names)}): give a dataset in SQuAD's hub layout (rajpurkar/squad_v2).")
        return checked_questions([(dict(r), r["context"], r.get("title", "")) for r in ds], f"'{self.name}:{split}'")

    def raw(self) -> dict[str, list[Question]]:
        """The questions of every split (train, val[, test]), checked."""
        if self._raw is None:
            self.source.require("questions", "SQuAD-layout .json files")
            train = self._read(self.source.paths if self.source.is_local else self.source.hf_split)
            splits = {"train": train}
            if self.validation is not None:
                splits["val"] = self._read(self.validation)
            else:
                splits["train"], splits["val"] = self._hold_out(train)
            if self.test is not None:
                splits["test"] = self._read(self.test)
            keys = ["answerable" if q.answerable else "unanswerable" for q in splits["train"]]
            splits["train"] = self.subsample_train(splits["train"], keys)
            self._raw = splits
        return self._raw

    def _hold_out(self, questions: list[Question]) -> tuple[list[Question], list[Question]]:
        """(train, validation): ``val_fraction`` of the articles, drawn by ``seed``, held out whole so
        that no context is in both; a file of one article (BioBERT's BioASQ files) by question
        (its snippets, ``<question>_<n>``, together)."""
        group = (lambda q: q.title) if len({q.title for q in questions}) > 1 else (lambda q: snippet_group(q.id))
        keys = list(dict.fromkeys(map(group, questions)))
        n_val = max(1, round(len(keys) * self.val_fraction))
        if n_val >= len(keys):
            raise UserError(f"'{self.name}' has {len(keys)} article(s) or question(s) to draw from, too few to hold "
                            f"out val_fraction={self.val_fraction} of them for validation: give `validation`.")
        held = {keys[i] for i in np.random.default_rng(self.seed).permutation(len(keys))[:n_val]}
        return [q for q in questions if group(q) not in held], [q for q in questions if group(q) in held]

    @property
    def labels(self) -> None:
        """No classes: the answer is a span."""
        return None

    @labels.setter
    def labels(self, value: list[str] | None) -> None:
        if value is not None:
            raise UserError("Question answering has no classes: leave `labels` unset.")

    def questions(self, split: str) -> list[Question]:
        """The questions of ``split`` (``train``, ``val``, ``test``, ``predict``) in the order the
        batches' ``question`` numbers them."""
        if split == "predict":
            self.setup("predict")
            return self._predict_questions
        return self.raw()[split]

    def training_texts(self) -> Iterable[str]:
        seen = set()
        for q in self.raw()["train"]:
            yield q.question
            if q.context not in seen:
                seen.add(q.context)
                yield q.context

    # -- encoding -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "predict":
            if "predict" not in self.datasets:
                if self.predict is None:
                    raise UserError("Nothing to predict: give `data.predict`, a SQuAD-layout .json of questions.")
                self._predict_questions = read_squad(self.predict)
                self.datasets["predict"] = self.encode(self._predict_questions, "predict")
            return
        if not self.datasets:
            self.datasets = {split: self.encode(questions, split) for split, questions in self.raw().items()}

    def encode(self, questions: list[Question], split: str = "train") -> list[Example]:
        """The windows of ``questions`` as examples (kept in :attr:`windows` by split)."""
        cut = windows(questions, self.tokenizer, self.seq_len, self.stride, self.max_question_tokens)
        self.windows[split] = cut
        return [{"input_ids": np.asarray(w.input_ids, dtype=np.int64),
                 "token_type_ids": np.asarray(w.token_type_ids, dtype=np.int64),
                 "offsets": np.asarray([span if span is not None else (-1, -1) for span in w.offsets], dtype=np.int64),
                 "start": w.start, "end": w.end, "question": w.question} for w in cut]

    def collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """Pad to the longest window of the batch (offsets with -1)."""
        longest = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), longest), self.pad_id, dtype=torch.long)
        types = torch.zeros(len(examples), longest, dtype=torch.long)
        mask = torch.zeros(len(examples), longest, dtype=torch.long)
        offsets = torch.full((len(examples), longest, 2), -1, dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[row, :n] = torch.from_numpy(e["input_ids"])
            types[row, :n] = torch.from_numpy(e["token_type_ids"])
            offsets[row, :n] = torch.from_numpy(e["offsets"])
            mask[row, :n] = 1
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "offsets": offsets,
                "start_positions": torch.tensor([e["start"] for e in examples]),
                "end_positions": torch.tensor([e["end"] for e in examples]),
                "question": torch.tensor([e["question"] for e in examples])}

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)
