"""Remove the files the answers did not ask for (a template file cannot skip itself), and
give a local-files corpus a first example, so that the quick start runs before your files
are in ``corpus/``."""

import textwrap
from pathlib import Path

SLUG = {{ cookiecutter.project_slug | tojson }}
UNWANTED = {
    Path("src", SLUG, "model.py"): {{ not cookiecutter.custom_model }},
    Path("src", SLUG, "data.py"): {{ not cookiecutter.custom_datamodule }},
    Path("LICENSE"): {{ cookiecutter.license == "Proprietary" }},
}
EXAMPLE_CORPUS = {{ cookiecutter.corpus == "local" }}
EXAMPLE_BYTES = 400_000


def write_example_corpus(path: Path) -> None:
    """Python's help topics (the text of ``help("topics")``, shipped with every CPython), one
    per blank-line block, until ``EXAMPLE_BYTES``."""
    from pydoc_data.topics import topics

    blocks, size = [], 0
    for name in sorted(topics):
        text = "\n".join(line for line in textwrap.dedent(topics[name]).splitlines() if line.strip())
        blocks.append(text)
        size += len(text.encode("utf-8"))
        if size >= EXAMPLE_BYTES:
            break
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


if __name__ == "__main__":
    for path, unwanted in UNWANTED.items():
        if unwanted:
            path.unlink()
    if EXAMPLE_CORPUS:
        write_example_corpus(Path("corpus", "python-help-topics.txt"))
