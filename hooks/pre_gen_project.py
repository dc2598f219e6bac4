"""Check the answers before any file of the project is written.

Cookiecutter runs this in the new project's folder, which it has just created (and deletes
again when this fails) or, with ``--overwrite-if-exists``, a folder that already existed.
Standard library only: ``cookiecutter`` may run from an environment without lmforge.
"""

import keyword
import re
import sys
from pathlib import Path

SLUG = {{ cookiecutter.project_slug | tojson }}
FAMILY = {{ cookiecutter.family | tojson }}
CORPUS = {{ cookiecutter.corpus | tojson }}
FAMILIES = {{ cookiecutter._families.keys() | list | tojson }}
CORPORA = {{ cookiecutter._corpora.keys() | list | tojson }}
PYTHON = {{ cookiecutter.python_version | tojson }}
# the packages a project's own package must not shadow (`import datasets` would find it)
TAKEN = {"lmforge", "torch", "lightning", "torchmetrics", "tokenizers", "datasets", "tensorboard",
         "jsonargparse", "transformers", "numpy", "pytest", "tests", "test"}


def problem() -> str | None:
    """What is wrong with the answers, in one sentence; None when nothing is."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", SLUG) or keyword.iskeyword(SLUG):
        return (f"project_slug '{SLUG}' is not a valid Python package name: use lowercase letters, digits "
                "and underscores, starting with a letter (e.g. my_lm).")
    if SLUG in TAKEN or SLUG in sys.stdlib_module_names:
        return (f"project_slug '{SLUG}' is the name of a module that Python or lmforge already uses: "
                "choose another name.")
    if FAMILY not in FAMILIES:
        return f"family '{FAMILY}' is unknown: choose one of {', '.join(FAMILIES)}."
    if CORPUS not in CORPORA:
        return f"corpus '{CORPUS}' is unknown: choose one of {', '.join(CORPORA)}."
    if not re.fullmatch(r"3\.\d+", PYTHON) or int(PYTHON.split(".")[1]) < 10:
        return f"python_version '{PYTHON}' is not supported: lmforge needs Python 3.10 or newer."
    if any(Path.cwd().iterdir()):
        return f"Folder '{Path.cwd()}' already exists and is not empty: choose another project_slug or output folder."
    return None


if __name__ == "__main__":
    message = problem()
    if message:
        print(f"Error: {message} Nothing was written.", file=sys.stderr)
        sys.exit(1)
