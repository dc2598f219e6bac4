{%- set slug = cookiecutter.project_slug -%}
{%- set family = cookiecutter._families[cookiecutter.family] -%}
{%- set corpus = cookiecutter._corpora[cookiecutter.corpus] -%}
"""A fast_dev_run of configs/pretrain.yaml (one training and one validation batch), through
the same `lmforge fit` a real run uses{% if cookiecutter.corpus != "bundled" %}, on a few documents written in the corpus's own format{% endif %}."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from lmforge.data import {{ corpus.datamodule }}
from lmforge.tasks import {{ family.task }}

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain.yaml"
{%- if cookiecutter.corpus != "bundled" %}
SENTENCES = [
    "The committee published its report on the river's water quality in the spring.",
    "Measurements at twelve stations showed that nitrate levels fell after the new rules.",
    "A second study followed the same birds through three winters along the coast.",
    "Most of the village's houses were built from the grey stone of the nearby quarry.",
    "The library lends its maps to anyone who signs the register at the front desk.",
    "Engineers tested the bridge with loaded trucks before it opened to traffic.",
    "Patients who walked every day recovered faster than those who rested in bed.",
    "The novel follows two sisters who inherit a bakery and a long family quarrel.",
]


def document(i: int, sentences: int = 8) -> str:
    return f"Record {i}. " + " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(sentences))
{%- endif %}


def write_corpus(folder: Path) -> list[str]:
    """A few documents in the format configs/pretrain.yaml reads; returns the options that point the config at them."""
{%- if cookiecutter.corpus == "bundled" %}
    return ["--data.init_args.max_documents=60"]  # the bundled corpus ships with Python: nothing to write
{%- elif cookiecutter.corpus == "local" %}
    corpus = folder / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"notes{i:02d}.txt").write_text(document(i) + "\n\n" + document(i + 1) + "\n", encoding="utf-8")
    return [f"--data.init_args.source.paths={corpus}"]
{%- elif cookiecutter.corpus == "wikipedia" %}
    from xml.sax.saxutils import escape

    pages = []
    for i in range(60):
        markup = escape(f"'''Place {i}''' is a [[town]] on the river. {document(i)}")
        pages.append(f"  <page>\n    <title>Place {i}</title>\n    <ns>0</ns>\n    <id>{i + 1}</id>\n"
                     f'    <revision>\n      <text xml:space="preserve">{markup}</text>\n    </revision>\n  </page>\n')
    dump = folder / "enwiki-test-pages-articles.xml"
    dump.write_text(f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">\n{"".join(pages)}</mediawiki>\n',
                    encoding="utf-8")
    return [f"--data.init_args.source.paths={dump}", "--data.init_args.max_documents=60",
            "--data.init_args.val_fraction=0.1"]
{%- elif cookiecutter.corpus == "fineweb" %}
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [document(i) for i in range(80)]
    table = pa.table({"text": texts, "id": [f"<urn:uuid:{i}>" for i in range(80)],
                      "language_score": [0.95] * 80, "score": [3.2] * 80})
    shard = folder / "000_00000.parquet"
    pq.write_table(table, shard)
    return [f"--data.init_args.source.paths={shard}", "--data.init_args.min_chars=0",
            "--data.init_args.stream_val_documents=8"]
{%- elif cookiecutter.corpus == "bookcorpus" %}
    books = folder / "books"
    books.mkdir()
    for i in range(12):
        chapters = "\n\n".join(document(i * 5 + j) for j in range(5))
        (books / f"book{i:02d}.txt").write_text(f"Book {i}\n\n{chapters}\n", encoding="utf-8")
    return [f"--data.init_args.source.paths={books}"]
{%- elif cookiecutter.corpus == "pubmed" %}
    from xml.sax.saxutils import escape

    articles = "".join(
        f'  <PubmedArticle>\n    <MedlineCitation Status="MEDLINE" Owner="NLM">\n      <PMID Version="1">{i + 1}</PMID>\n'
        f"      <Article>\n        <ArticleTitle>Study {i} of daily walking.</ArticleTitle>\n"
        f"        <Abstract>\n          <AbstractText>{escape(document(i))}</AbstractText>\n        </Abstract>\n"
        "      </Article>\n    </MedlineCitation>\n  </PubmedArticle>\n"
        for i in range(60)
    )
    pubmed = folder / "pubmed"
    pubmed.mkdir()
    (pubmed / "pubmed24n0001.xml").write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n{articles}'
                                              "</PubmedArticleSet>\n", encoding="utf-8")
    return [f"--data.init_args.source.paths={pubmed}"]
{%- endif %}


def test_config_selects_the_project_classes() -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    classes = []
    for section in ("model", "data"):
        module, name = config[section]["class_path"].rsplit(".", 1)
        classes.append(getattr(importlib.import_module(module), name))
    assert issubclass(classes[0], {{ family.task }})
    assert issubclass(classes[1], {{ corpus.datamodule }})
{%- if cookiecutter.custom_model %}
    assert classes[0].__module__ == "{{ slug }}.model"
{%- endif %}
{%- if cookiecutter.custom_datamodule %}
    assert classes[1].__module__ == "{{ slug }}.data"
{%- endif %}


def test_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a test never downloads
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # logs/ and checkpoints of the run stay in the temporary folder
    options = write_corpus(tmp_path)
    main([
        "fit", "-c", str(CONFIG), "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu",
        "--data.init_args.seq_len=32", "--data.init_args.batch_size=4", *options,
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ])
