"""Names that changed, so that what users already have keeps working: checkpoints, and the
``config.yaml`` a run saved, are translated when read; a user's own YAML or command line with
an old name is refused in one sentence that gives the new one.

The tables are data: a rename or a move is one line here, next to the code that changed.
"""

from __future__ import annotations

# old dotted class path -> new one (a class that moved between modules or packages)
MOVED_CLASSES: dict[str, str] = {
    # downstream data beside its tasks (issue 24): data/labeled.py, data/tagged.py -> evaluation/
    "lmforge.data.LabeledText": "lmforge.evaluation.LabeledText",
    "lmforge.data.labeled.LabeledText": "lmforge.evaluation.LabeledText",
    "lmforge.data.TaggedText": "lmforge.evaluation.TaggedText",
    "lmforge.data.tagged.TaggedText": "lmforge.evaluation.TaggedText",
}

# old config key -> new key, the same in every family's config (and the tokenizer spec)
RENAMED_KEYS: dict[str, str] = {}
