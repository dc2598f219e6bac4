"""Text augmentation: composable, seeded transforms from texts to texts.

Each transform is an :class:`Augmentation`: called with a list of texts (documents or
sentences) and a ``numpy.random.Generator``, it returns as many texts, in the same order.
A list of them is applied in order by :func:`apply_augmentations`; in a data config it is a
list of ``class_path``/``init_args`` entries::

    data:
      init_args:
        augment:
          - class_path: lmforge.data.WordDeletion
            init_args: {p: 0.1}
          - class_path: lmforge.data.SentencePermutation

Determinism: transform ``i`` of the list draws from ``numpy.random.default_rng([seed, i])``,
so the same seed, texts and list give the same output, and adding a transform at the end
leaves the draws of the ones before it unchanged.

The word-level transforms (:class:`WordDeletion`, :class:`WordSwap`, :class:`SpanMasking`)
split on whitespace and join with single spaces: punctuation stays attached to its word, and
line breaks and runs of spaces become one space. :class:`SentencePermutation` uses
:func:`lmforge.data.sentences.split_sentences`. :class:`BackTranslation` round-trips texts
through any translator, a callable ``list[str] -> list[str]``; :class:`HFTranslator` is one
built on ``transformers`` translation models.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from lmforge.data.sentences import split_sentences
from lmforge.errors import UserError

Translator = Callable[[list[str]], list[str]]


class Augmentation(ABC):
    """A seeded transform from texts to as many texts, in the same order."""

    @abstractmethod
    def __call__(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        """The transformed texts.

        Args:
            texts: Documents or sentences.
            rng: The only source of randomness of the transform.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def apply_augmentations(texts: list[str], augmentations: Sequence[Augmentation], seed: int, chunk: int = 0) -> list[str]:
    """Apply ``augmentations`` in order; transform ``i`` draws from ``default_rng([seed, i, chunk])``.

    Args:
        texts: Documents or sentences.
        augmentations: The transforms, applied first to last.
        seed: Seed of every draw (non-negative).
        chunk: Which chunk of a longer stream ``texts`` is (each gets its own draws).
    """
    for index, augmentation in enumerate(augmentations):
        out = augmentation(list(texts), np.random.default_rng([seed, index, chunk]))
        if len(out) != len(texts):
            raise UserError(
                f"{augmentation!r} returned {len(out)} texts for {len(texts)}: it must return one per text."
            )
        texts = out
    return list(texts)


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{name} must be a probability between 0 and 1, got {value}.")
    return float(value)


class WordDeletion(Augmentation):
    """Delete each whitespace-separated word with probability ``p``; a text keeps at least
    one word (a random one when every word is drawn), so no text becomes empty.

    Args:
        p: Probability that a word is deleted.
    """

    def __init__(self, p: float = 0.1):
        self.p = _probability("WordDeletion.p", p)

    def __call__(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        out = []
        for text in texts:
            words = text.split()
            if len(words) < 2:
                out.append(text)
                continue
            keep = rng.random(len(words)) >= self.p
            if not keep.any():
                keep[rng.integers(len(words))] = True
            out.append(" ".join(w for w, k in zip(words, keep) if k))
        return out


class WordSwap(Augmentation):
    """Swap two random whitespace-separated words, ``max(1, round(p * words))`` times per
    text of two words or more (EDA's random swap): the words are kept, their order changes.

    Args:
        p: Swaps per text as a fraction of its words (0 leaves texts unchanged).
    """

    def __init__(self, p: float = 0.1):
        self.p = _probability("WordSwap.p", p)

    def __call__(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        out = []
        for text in texts:
            words = text.split()
            if len(words) < 2 or self.p == 0.0:
                out.append(text)
                continue
            for _ in range(max(1, round(self.p * len(words)))):
                i, j = rng.choice(len(words), size=2, replace=False)
                words[i], words[j] = words[j], words[i]
            out.append(" ".join(words))
        return out


class SpanMasking(Augmentation):
    """Replace ``round(p * words)`` whitespace-separated words of each text by ``mask_token``,
    in contiguous spans of geometric length with mean ``mean_span`` (SpanBERT style: a span of
    k words becomes k mask tokens). Use the tokenizer's mask spelling (``<mask>`` for roberta,
    ``[MASK]`` for bert) to have it encoded as the mask special token.

    Args:
        p: Fraction of the words of each text to mask.
        mean_span: Mean span length in words (1 masks single words).
        mask_token: The text that replaces each masked word.
    """

    def __init__(self, p: float = 0.15, mean_span: float = 3.0, mask_token: str = "<mask>"):
        self.p = _probability("SpanMasking.p", p)
        if mean_span < 1:
            raise UserError(f"SpanMasking.mean_span must be at least 1 word, got {mean_span}.")
        if not mask_token.strip() or len(mask_token.split()) != 1:
            raise UserError(f"SpanMasking.mask_token must be one word without spaces, got {mask_token!r}.")
        self.mean_span = float(mean_span)
        self.mask_token = mask_token

    def __call__(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        out = []
        for text in texts:
            words = text.split()
            budget = round(self.p * len(words))
            if budget == 0:
                out.append(text)
                continue
            masked = np.zeros(len(words), dtype=bool)
            while masked.sum() < budget:
                # spans may overlap; the loop ends once the budget of masked words is spent
                length = min(int(rng.geometric(1.0 / self.mean_span)), budget - int(masked.sum()))
                start = int(rng.integers(len(words) - length + 1))
                masked[start : start + length] = True
            out.append(" ".join(self.mask_token if m else w for w, m in zip(words, masked)))
        return out


class SentencePermutation(Augmentation):
    """Shuffle the sentences of each text (BART's sentence permutation). Sentences come from
    :func:`lmforge.data.sentences.split_sentences` and are joined with single spaces, so
    paragraph breaks are not kept; a one-sentence text is unchanged.
    """

    def __call__(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        out = []
        for text in texts:
            sentences = split_sentences(text)
            if len(sentences) < 2:
                out.append(text)
                continue
            out.append(" ".join(sentences[i] for i in rng.permutation(len(sentences))))
        return out


def resolve_callable(path: str) -> Callable:
    """The function named by an import path, ``package.module.name`` or ``package.module:name``.

    Args:
        path: The import path.
    """
    module_name, sep, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    obj = None
    if sep and module_name and attribute:
        try:
            obj = importlib.import_module(module_name)
            for part in attribute.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            obj = None
    if obj is None or isinstance(obj, type) or not callable(obj):
        raise UserError(
            f"'{path}' does not name a function: give an import path such as 'my_package.module.translate' "
            "(a translator class goes in as class_path/init_args)."
        )
    return obj


class BackTranslation(Augmentation):
    """Paraphrase texts by a round trip through another language (Sennrich et al. 2016;
    UDA, Xie et al. 2020): ``translator`` takes a batch of texts and returns their round-trip
    translations, one per text, e.g. :class:`HFTranslator` or any function.

    Args:
        translator: A callable ``list[str] -> list[str]`` that does the whole round trip, or
            the import path of one (``my_package.module.round_trip``).
        p: Probability that a text is back-translated; the others stay as they are (only the
            drawn texts are sent to the translator).
    """

    def __init__(self, translator: Callable[[list[str]], list[str]] | str, p: float = 1.0):
        self.translator = resolve_callable(translator) if isinstance(translator, str) else translator
        if not callable(self.translator):
            raise UserError(
                f"BackTranslation.translator must be a callable list[str] -> list[str], got {translator!r}."
            )
        self.p = _probability("BackTranslation.p", p)

    def __call__(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        chosen = np.flatnonzero(rng.random(len(texts)) < self.p)
        if len(chosen) == 0:
            return list(texts)
        translated = list(self.translator([texts[i] for i in chosen]))
        if len(translated) != len(chosen):
            raise UserError(
                f"The translator {self.translator!r} returned {len(translated)} texts for {len(chosen)}: "
                "it must return one translation per text."
            )
        out = list(texts)
        for i, text in zip(chosen, translated):
            out[i] = text
        return out


class HFTranslator:
    """A round-trip translator on two ``transformers`` sequence-to-sequence models, e.g. the
    Marian models ``Helsinki-NLP/opus-mt-en-de`` then ``Helsinki-NLP/opus-mt-de-en``. Needs
    ``pip install transformers sentencepiece``; the models load on first use (from the hub
    or a local folder) and decode greedily or with beam search, so the output is deterministic.

    Args:
        forward_model: Model that translates from the corpus language to the pivot language.
        backward_model: Model that translates from the pivot language back.
        batch_size: Texts per generation batch.
        device: Torch device of both models (``cpu``, ``cuda``, ``cuda:1``, ...).
        max_length: Longest translation in tokens; longer inputs are truncated.
        num_beams: Beam width (1 is greedy decoding).
    """

    def __init__(
        self,
        forward_model: str = "Helsinki-NLP/opus-mt-en-de",
        backward_model: str = "Helsinki-NLP/opus-mt-de-en",
        batch_size: int = 16,
        device: str = "cpu",
        max_length: int = 512,
        num_beams: int = 1,
    ):
        if batch_size < 1 or max_length < 1 or num_beams < 1:
            raise UserError(
                f"HFTranslator needs positive batch_size, max_length and num_beams, got {batch_size}, "
                f"{max_length}, {num_beams}."
            )
        self.forward_model = forward_model
        self.backward_model = backward_model
        self.batch_size = batch_size
        self.device = device
        self.max_length = max_length
        self.num_beams = num_beams
        self._models: dict[str, tuple] = {}

    def __repr__(self) -> str:
        return f"HFTranslator({self.forward_model!r} -> {self.backward_model!r})"

    def _load(self, name: str) -> tuple:
        if name not in self._models:
            try:
                from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
            except ImportError as error:
                raise UserError(
                    "HFTranslator needs the transformers package: pip install transformers sentencepiece."
                ) from error
            model = AutoModelForSeq2SeqLM.from_pretrained(name).to(self.device).eval()
            self._models[name] = (AutoTokenizer.from_pretrained(name), model)
        return self._models[name]

    def translate(self, texts: list[str], model_name: str) -> list[str]:
        """``texts`` translated by one model, in batches.

        Args:
            texts: Texts in the model's source language.
            model_name: The model's hub name or local folder.
        """
        import torch

        tokenizer, model = self._load(model_name)
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(
                texts[start : start + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                max_length=self.max_length,
            ).to(self.device)
            with torch.no_grad():
                generated = model.generate(**batch, max_length=self.max_length, num_beams=self.num_beams)
            out.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
        return out

    def __call__(self, texts: list[str]) -> list[str]:
        return self.translate(self.translate(texts, self.forward_model), self.backward_model)
