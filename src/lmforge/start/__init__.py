"""Where a run starts: the one owner of its weights and tokenizer.

A run starts from a checkpoint it resumes (``--ckpt_path``), from pretrained weights
(``--model.init_from``: an lmforge ``.ckpt``, a Hugging Face folder, ``hf:<folder>`` or
``hf:<id>``), from an explicit tokenizer (``data.tokenizer.path``), or fresh (the data module
trains a tokenizer on its corpus). :func:`open_start` resolves and reads a source once per
process; :func:`run_tokenizer` decides the run's tokenizer; :func:`connect` hands the pieces
over between a task and its data module. The Hugging Face name tables (import and export)
live in :mod:`lmforge.start.hf`.
"""

from lmforge.start.handoff import connect, run_tokenizer
from lmforge.start.source import Start, import_class, load_tokenizer, open_start

__all__ = ["Start", "connect", "import_class", "load_tokenizer", "open_start", "run_tokenizer"]
