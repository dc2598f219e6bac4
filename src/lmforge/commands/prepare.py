"""``lmforge prepare``: tokenize a corpus into token shards before training."""

from __future__ import annotations

from typing import Any

from lmforge.commands.lightning import LmforgeCLI
from lmforge.errors import UserError


class PrepareCLI(LmforgeCLI):
    """The parse, start and hand-offs of ``fit``, without a trainer: what ``lmforge prepare`` needs."""

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        return None  # preparing runs on any machine: no accelerator, logger or callbacks


def prepare(argv: list[str]) -> None:
    """``lmforge prepare -c config.yaml [...]``: tokenize a corpus into token shards now.

    It takes the same configs and options as ``lmforge fit`` and resolves the run's tokenizer
    the same way (``init_from`` weights, an explicit ``data.tokenizer.path``, or one trained on
    the corpus), so the ``fit`` that follows finds the shards ready (a mixture's: every corpus's). See
    :meth:`lmforge.data.CorpusDataModule.prepare`.
    """
    if argv and argv[0] in ("-h", "--help"):
        print(prepare.__doc__)
        return
    cli = PrepareCLI(args=argv, run=False)
    data, task = cli.datamodule, cli.model
    name = getattr(data, "name", type(data).__name__)
    if not getattr(data, "uses_shards", False) or getattr(task.objective, "sentences", False):
        raise UserError(f"{type(task).__name__} on {name} builds its examples from sentences in memory when training "
                        "starts: there is nothing to prepare.")
    if data.streaming:
        raise UserError(f"{name} is configured with `streaming: true`, which tokenizes during training and keeps no "
                        "shards: set `--data.streaming false` to prepare it.")
    for corpus in data.corpora() if hasattr(data, "corpora") else [data]:  # a mixture's, each with the run's tokenizer
        prepared = corpus.prepare()
        print(f"Prepared {corpus.name} in {prepared.folder}: {prepared.num_tokens('train'):,} train and "
              f"{prepared.num_tokens('val'):,} val tokens ({prepared.meta['dtype']}).")
