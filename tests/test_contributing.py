"""CONTRIBUTING.md's lists are true: every file it names exists for every network family, and
every family has its tiny config, its task, its Hugging Face adapter (where ``transformers``
has the architecture) and a choice in ``lmforge new``; every command is a module of its own."""

from __future__ import annotations

import importlib
import re

import pytest
import yaml

from conftest import CONFIGS, ROOT
from lmforge import tasks
from lmforge.commands import COMMANDS
from lmforge.models import NETWORKS, Bert
from lmforge.scaffold import FAMILIES
from lmforge.start import import_class
from lmforge.start.hf import ADAPTERS

# the families without a Hugging Face adapter
NO_HF = {"elmo": "transformers has no ELMo"}
CONFIGURATIONS = {"roberta": Bert, "contrastive": Bert}  # configurations of a network, not families
TEXT = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
PATHS = sorted(set(re.findall(r"`((?:src|configs|tests)/[^`\s]*)`", TEXT)))


def task_of(config: str) -> type:
    """The task class a config's ``model.class_path`` names."""
    return import_class(yaml.safe_load((CONFIGS / config).read_text())["model"]["class_path"])


def test_the_lists_name_the_files_that_exist() -> None:
    assert len(PATHS) >= 15 and "src/lmforge/start/hf_<family>.py" in PATHS
    for path in PATHS:
        if "<family>" in path:
            for family in NETWORKS:
                if not (family in NO_HF and "hf_" in path):
                    assert (ROOT / path.replace("<family>", family)).exists(), (path, family)
        elif "<" not in path:
            assert (ROOT / path).exists(), path


@pytest.mark.parametrize("family", list(NETWORKS))
def test_every_network_family_has_its_config_task_adapter_and_choice(family: str) -> None:
    network = NETWORKS[family]
    task = task_of(f"{family}/tiny.yaml")
    assert task.network is network and task.__name__ in tasks.__all__
    adapters = [kind for kind, adapter in ADAPTERS.items() if adapter.network is network]
    assert bool(adapters) != (family in NO_HF), (family, adapters)
    assert FAMILIES[family].config == f"configs/{family}/tiny.yaml"


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_every_configuration_of_a_network_has_a_tiny_config_and_a_choice(name: str) -> None:
    assert task_of(f"{name}/tiny.yaml").network is CONFIGURATIONS[name]
    assert FAMILIES[name].config == f"configs/{name}/tiny.yaml"


def test_every_choice_of_lmforge_new_is_a_family_or_a_configuration() -> None:
    assert set(FAMILIES) == set(NETWORKS) | set(CONFIGURATIONS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_is_a_function_of_its_own_module(name: str) -> None:
    module, _, function = COMMANDS[name].target.partition(":")
    assert module.startswith("lmforge.commands.") and callable(getattr(importlib.import_module(module), function))
    assert COMMANDS[name].summary.endswith(".") and len(COMMANDS[name].summary) < 100
