"""Where a run starts: the one owner of its weights and tokenizer.

A run starts from a checkpoint it resumes (``--ckpt_path``), from pretrained weights
(``--model.init_from``: an lmforge ``.ckpt``, a Hugging Face folder, ``hf:<folder>`` or
``hf:<id>``), from an explicit tokenizer (``data.tokenizer.path``), or fresh (the data module
trains a tokenizer on its corpus). A command resolves its :class:`RunStart` once, opening each
source once (:func:`open_start`), and hands the pieces down (:func:`connect`). Hugging Face
folders are read and written by one adapter per family (:mod:`lmforge.start.hf`).
"""

from lmforge.start.handoff import RunStart, connect
from lmforge.start.starting_point import Start, import_class, load_tokenizer, open_start

__all__ = ["RunStart", "Start", "connect", "import_class", "load_tokenizer", "open_start"]
