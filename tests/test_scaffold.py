"""The project template at the repository root: what it renders for every family and corpus,
the checks of its hooks, `lmforge new` from the wheel, and rendered projects that install
into a fresh virtual environment and pass their own tests."""

from __future__ import annotations

import json
import os
import py_compile
import re
import site
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cookiecutter.exceptions import FailedHookException, OutputDirExistsException
from cookiecutter.generate import generate_files
from cookiecutter.main import cookiecutter

import lmforge.models
from conftest import CONFIGS, ROOT
from lmforge.cli import main
from lmforge.scaffold import FAMILIES as FAMILY_CHOICES
from lmforge.scaffold import family_context, template_dir
from lmforge.start import import_class
from lmforge.tasks import PretrainingTask

CONTEXT = json.loads((ROOT / "cookiecutter.json").read_text(encoding="utf-8"))
FAMILIES: list[str] = CONTEXT["family"]
CORPORA: list[str] = CONTEXT["corpus"]
# what the wheel carries as lmforge/template: pyproject's force-include map, root file -> wheel path
WHEEL_FILES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
    "force-include"]


@pytest.fixture(autouse=True, scope="module")
def cookiecutter_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Cookiecutter's replay files and user config in a temporary folder, never the user's."""
    home = tmp_path_factory.mktemp("cookiecutter-home")
    config = home / "config.yaml"
    config.write_text(f"cookiecutters_dir: {home / 'templates'}\nreplay_dir: {home / 'replay'}\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COOKIECUTTER_CONFIG", str(config))
        yield


def render(out: Path, template: Path = ROOT, **answers: object) -> Path:
    return Path(cookiecutter(str(template), no_input=True, extra_context=answers, output_dir=str(out)))


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_the_family_choices_are_one_table_offering_every_network_family() -> None:
    """scaffold.FAMILIES is the one list: cookiecutter.json is generated from it and the configs
    it names, it offers every network of lmforge.models, and every pretraining tiny config."""
    assert FAMILIES == list(FAMILY_CHOICES)
    assert CONTEXT["_families"] == family_context(ROOT), "cookiecutter.json is stale: run python -m lmforge.scaffold"
    networks = {cls.family for cls in map(vars(lmforge.models).get, lmforge.models.__all__) if hasattr(cls, "family")}
    tasks = {choice: import_class(yaml.safe_load((ROOT / family.config).read_text())["model"]["class_path"])
             for choice, family in FAMILY_CHOICES.items()}
    assert {task.network.family for task in tasks.values()} == networks
    assert all(family.config == f"configs/{choice}/tiny.yaml" for choice, family in FAMILY_CHOICES.items())
    pretraining = {path.parent.name for path in CONFIGS.glob("*/tiny.yaml")
                   if issubclass(import_class(yaml.safe_load(path.read_text())["model"]["class_path"]), PretrainingTask)}
    assert pretraining == set(FAMILY_CHOICES)
    quickstart = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text())["model"]["class_path"]
    assert import_class(quickstart) in tasks.values()  # a project can start from the quick start's family


def test_lmforge_runs_the_template_at_the_repository_root() -> None:
    assert template_dir() == ROOT  # a checkout (editable install) renders the files being edited
    assert sorted(p.name for p in ROOT.glob("hooks/*.py")) == ["post_gen_project.py", "pre_gen_project.py"]
    assert CONTEXT["_lmforge_version"] == __import__("lmforge").__version__  # what generated projects require


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("corpus", CORPORA)
def test_every_family_and_corpus_renders_a_complete_project(family: str, corpus: str, tmp_path: Path) -> None:
    slug = f"p_{family}_{corpus}"
    project = render(tmp_path, project_name=slug, family=family, corpus=corpus)
    assert project == tmp_path / slug
    files = tree(project)
    for name in ("pyproject.toml", "README.md", "LICENSE", ".gitignore", "logs/.gitkeep", "configs/pretrain.yaml",
                 f"src/{slug}/__init__.py", f"src/{slug}/model.py", f"src/{slug}/data.py", f"tests/test_{slug}.py"):
        assert name in files, name
    assert ("corpus/python-help-topics.txt" in files) == (corpus == "local")
    for name, content in files.items():
        if name.endswith(".py"):
            py_compile.compile(str(project / name), doraise=True)
        if not name.startswith("corpus/"):  # (Python's help text has braces of its own)
            assert "{{" not in content.decode() and "{%" not in content.decode(), f"{name} is not fully rendered"
    readme = files["README.md"].decode()
    assert "pip install -e . && lmforge fit -c configs/pretrain.yaml" in readme
    assert 'pip install -e ".[test]" && python -m pytest -q' in readme
    config = yaml.safe_load(files["configs/pretrain.yaml"])
    assert config["model"]["class_path"] == f"{slug}.model.Task"
    assert config["data"]["class_path"] == f"{slug}.data.Corpus"
    # the model options and the tokenizer are those of the family's tiny config (the vocabulary the corpus's)
    tiny = yaml.safe_load((ROOT / FAMILY_CHOICES[family].config).read_text())
    assert {**config["model"]["init_args"], "log_grad_norm": None} == {**tiny["model"]["init_args"], "log_grad_norm": None}
    tokenizer = config["data"]["init_args"]["tokenizer"]
    assert {**tokenizer, "vocab_size": None} == {**tiny["data"]["init_args"]["tokenizer"], "vocab_size": None}


# configs that lmforge parses here; the projects below (installed, run) are other pairs
PARSED = [(family, CORPORA[(i + shift) % len(CORPORA)]) for i, family in enumerate(FAMILIES) for shift in (1,)]


@pytest.mark.parametrize("family, corpus", PARSED, ids=[f"{f}-{c}" for f, c in PARSED])
def test_rendered_configs_parse_with_the_projects_classes(family: str, corpus: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    slug = f"parsed_{family}_{corpus}"
    project = render(tmp_path, project_name=slug, family=family, corpus=corpus)
    monkeypatch.syspath_prepend(str(project / "src"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(project / "configs" / "pretrain.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    model_module = __import__(f"{slug}.model", fromlist=["Task"])
    data_module = __import__(f"{slug}.data", fromlist=["Corpus"])
    assert model_module.Task.__mro__[1].__name__ == CONTEXT["_families"][family]["task"]
    assert data_module.Corpus.__mro__[1].__name__ == CONTEXT["_corpora"][corpus]["datamodule"]
    assert config["model"]["init_args"]["log_grad_norm"] is True  # the stub's own option is a config option
    assert config["model"]["init_args"]["optimizer"]["lr"] > 0  # lmforge's options pass through **kwargs


def test_without_stubs_the_config_selects_lmforges_classes(tmp_path: Path) -> None:
    project = render(tmp_path, project_name="plain", family="t5", corpus="pubmed", custom_model="no",
                     custom_datamodule="no", license="Proprietary", python_version="3.12")
    files = tree(project)
    assert "src/plain/model.py" not in files and "src/plain/data.py" not in files and "LICENSE" not in files
    config = yaml.safe_load(files["configs/pretrain.yaml"])
    assert config["model"]["class_path"] == "lmforge.tasks.SpanCorruptionTask"
    assert config["data"]["class_path"] == "lmforge.data.PubMedCorpus"
    assert 'requires-python = ">=3.12"' in files["pyproject.toml"].decode()


@pytest.mark.parametrize("slug, says", [
    ("2fast", "not a valid Python package name"),
    ("my-lm", "not a valid Python package name"),
    ("class", "not a valid Python package name"),
    ("datasets", "the name of a module"),
    ("json", "the name of a module"),
])
def test_a_bad_slug_is_refused_and_nothing_is_written(slug: str, says: str, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(FailedHookException):
        render(tmp_path, project_slug=slug)
    assert f"project_slug '{slug}' is {says}" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("answer, says", [
    ({"family": "gpt5"}, f"family 'gpt5' is unknown: choose one of {', '.join(FAMILIES)}."),
    ({"corpus": "reddit"}, "corpus 'reddit' is unknown: choose one of bundled, local, wikipedia, fineweb, "),
    ({"python_version": "3.8"}, "python_version '3.8' is not supported"),
])
def test_an_unknown_family_or_corpus_is_refused_by_the_hook(answer: dict, says: str, tmp_path: Path,
                                                            capfd: pytest.CaptureFixture) -> None:
    # cookiecutter's own choice check stops these before the hooks; a replayed or hand-made
    # context reaches them, and the hook stops it there
    context = {key: (value[0] if isinstance(value, list) else value) for key, value in CONTEXT.items()}
    context.update(project_name="x", project_slug="replayed", description="d", **answer)
    with pytest.raises(FailedHookException):
        generate_files(repo_dir=str(ROOT), context={"cookiecutter": context}, output_dir=str(tmp_path))
    assert says in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_written_into(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    project = render(tmp_path, project_name="taken", family="elmo")
    (project / "configs" / "pretrain.yaml").write_text("# my edits\n", encoding="utf-8")
    before = tree(project)
    with pytest.raises(OutputDirExistsException):
        render(tmp_path, project_name="taken")
    with pytest.raises(FailedHookException):  # even when told to overwrite: the hook refuses a non-empty folder
        cookiecutter(str(ROOT), no_input=True, extra_context={"project_name": "taken"}, output_dir=str(tmp_path),
                     overwrite_if_exists=True)
    assert "Folder '" in capfd.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["new", str(tmp_path), "--no_input", "--project_name", "taken"])
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert re.search(r"lmforge: error: \".*taken\" directory already exists: choose another project_slug or DIR", err)
    assert tree(project) == before


def test_lmforge_new_checks_its_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["new", str(tmp_path), "--no_input", "--family", "gpt5"])
    assert "argument --family: invalid choice: 'gpt5'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the hook's check, through `lmforge new`
        main(["new", str(tmp_path), "--no_input", "--project_slug", "My-LM"])
    assert exit_info.value.code == 1
    assert list(tmp_path.iterdir()) == []


def test_the_wheel_carries_the_template_and_lmforge_new_renders_what_cookiecutter_does(tmp_path: Path) -> None:
    """Build the wheel, run `lmforge new` from it (not from this checkout), compare with `cookiecutter <repo>`."""
    subprocess.run([sys.executable, "-c", f"from hatchling.build import build_wheel; build_wheel({str(tmp_path)!r})"],
                   cwd=ROOT, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("lmforge-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    packaged = installed / "lmforge" / "template"
    assert sorted(WHEEL_FILES) == sorted(["cookiecutter.json", "hooks", "{{cookiecutter.project_slug}}"])
    for name, target in WHEEL_FILES.items():  # one source: the wheel's files are the repository's, byte for byte
        assert target == f"lmforge/template/{name}"
        source = ROOT / name
        if source.is_dir():
            assert tree(packaged / name) == tree(source)
        else:
            assert (packaged / name).read_bytes() == source.read_bytes()

    answers = ["--project_name", "Med LM", "--family", "roberta", "--corpus", "pubmed", "--author", 'Ada "A." L.',
               "--license", "MIT"]
    script = ("import sys; from lmforge.scaffold import new_command, template_dir; "
              "print(template_dir()); new_command(sys.argv[1:])")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "new"), "--no_input", *answers],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(packaged)
    expected = render(tmp_path / "cookiecutter", project_name="Med LM", family="roberta", corpus="pubmed",
                      author='Ada "A." L.', license="MIT")
    assert tree(tmp_path / "new" / "med_lm") == tree(expected)
    assert 'name = "Ada \\"A.\\" L."' in (expected / "pyproject.toml").read_text()


# -- rendered projects, installed, run their own tests -------------------------------------------

# every family and every corpus once; one project without the stubs
PROJECTS = [
    ("gpt", "bundled", True), ("llama", "local", True), ("bert", "pubmed", True), ("roberta", "wikipedia", False),
    ("contrastive", "fineweb", True), ("electra", "local", True), ("t5", "bookcorpus", True), ("elmo", "bundled", True),
]


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment that sees this one's packages (lmforge, torch, ...) through a
    .pth, so that installing a project needs no download; returns its python."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    parents = "; ".join(f"site.addsitedir({p!r})" for p in site.getsitepackages())
    Path(purelib, "_parent_environment.pth").write_text(f"import site; {parents}\n", encoding="utf-8")
    return python


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory, venv: Path) -> dict[str, str]:
    """The PROJECTS, rendered, installed into ``venv`` with one pip command, and their tests
    run: the first exactly as its README says (in its folder, with its pytest settings), the
    others in one more pytest process (each run starts Lightning: ~10 s saved per project).
    Returns each project's slug -> the output of the run that has its tests."""
    root = tmp_path_factory.mktemp("projects")
    slugs = []
    for family, corpus, stubs in PROJECTS:
        slugs.append(f"{family}_on_{corpus}")
        render(root, project_name=slugs[-1], family=family, corpus=corpus, custom_model=stubs,
               custom_datamodule=stubs)
    editable = [arg for slug in slugs for arg in ("-e", str(root / slug))]
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv), "install", "--quiet", "--no-deps",
                              "--no-build-isolation", "--no-index", *editable], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    pytest_command = [str(venv), "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]
    first = subprocess.run(pytest_command, cwd=root / slugs[0], capture_output=True, text=True)
    rest = subprocess.run([*pytest_command, *slugs[1:]], cwd=root, capture_output=True, text=True)
    return {slug: (first if i == 0 else rest).stdout + (first if i == 0 else rest).stderr
            for i, slug in enumerate(slugs)}


@pytest.mark.slow
@pytest.mark.parametrize("family, corpus, stubs", PROJECTS, ids=[f"{f}-{c}" for f, c, _ in PROJECTS])
def test_a_rendered_project_installs_and_passes_its_own_tests(family: str, corpus: str, stubs: bool, venv: Path,
                                                              projects: dict[str, str]) -> None:
    slug = f"{family}_on_{corpus}"
    output = projects[slug]
    located = subprocess.run([str(venv), "-c", f"import {slug}; print({slug}.__file__)"], capture_output=True,
                             text=True, cwd=venv.parent)
    assert located.stdout.strip().endswith(f"{slug}/src/{slug}/__init__.py")  # installed (editable), not on a path
    for test in ("test_config_selects_the_project_classes", "test_fast_dev_run"):
        assert re.search(rf"^PASSED \S*tests/test_{slug}\.py::{test}$", output, re.M), output[-4000:]
