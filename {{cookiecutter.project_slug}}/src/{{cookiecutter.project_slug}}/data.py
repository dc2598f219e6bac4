{%- set corpus = cookiecutter._corpora[cookiecutter.corpus] -%}
"""The corpus of {{ cookiecutter.project_name }}: lmforge's {{ corpus.datamodule }} with your changes.

``configs/pretrain.yaml`` selects it (``data.class_path: {{ cookiecutter.project_slug }}.data.Corpus``).
lmforge does the rest: it splits documents into train and validation, trains the tokenizer,
prepares token shards (cached: the source of this class is part of the cache key, so an
edit here prepares the corpus again) and hands batches to the task's objective.
"""

from __future__ import annotations

from collections.abc import Iterator

from lmforge.data import {{ corpus.datamodule }}


class Corpus({{ corpus.datamodule }}):
    """{{ corpus.title[0] | upper }}{{ corpus.title[1:] }}, read by lmforge's {{ corpus.datamodule }}, each document passed through :meth:`clean`.

    Every option of ``lmforge.data.{{ corpus.datamodule }}`` (``seq_len``, ``batch_size``,
    ``tokenizer``, ``max_documents``, ...) stays an option of the config. Add your own as
    ``__init__`` arguments that you pass on with ``super().__init__(**kwargs)``.
    """

    def load_documents(self) -> Iterator[str]:
        """The documents of the corpus, cleaned, read lazily."""
        for text in super().load_documents():
            cleaned = self.clean(text)
            if cleaned:
                yield cleaned

    def clean(self, text: str) -> str | None:
        """One document as the model should see it, or None to leave it out.

        Put your cleaning and filtering here: remove boilerplate, normalise characters,
        drop documents in another language, ... The default keeps the text as it is,
        without trailing blanks.
        """
        return text.strip() or None
