"""A config key lmforge renamed (lmforge/renames.py), given under its old name in a user's own
YAML or on the command line, is refused in one sentence that gives the new name."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONFIGS, refused


def test_an_old_key_in_a_users_yaml_is_refused_with_the_new_name(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("model:\n  init_args:\n    config:\n      layer_norm_eps: 1.0e-5\n")
    line = refused(capsys, "fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), "-c", str(mine))
    assert line == "lmforge: 'model.config.layer_norm_eps' was renamed 'model.config.norm_eps': use the new name."


@pytest.mark.parametrize(("config", "option", "message"), [
    ("t5/tiny.yaml", "--model.config.tie_word_embeddings=false",
     "lmforge: 'model.config.tie_word_embeddings' was renamed 'model.config.tie_embeddings': use the new name."),
    ("gpt/tiny.yaml", "--data.tokenizer.family=gpt",
     "lmforge: 'data.tokenizer.family' was renamed 'data.tokenizer.specials': use the new name."),
])
def test_an_old_option_on_the_command_line_is_refused_with_the_new_name(config: str, option: str, message: str,
                                                                        capsys: pytest.CaptureFixture) -> None:
    assert refused(capsys, "fit", "-c", str(CONFIGS / config), option) == message


def test_an_old_option_of_a_tool_command_is_refused_with_the_new_name(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    line = refused(capsys, "tokenizer", "train", "--family", "gpt", "--out", str(tmp_path / "t.json"))
    assert line == "lmforge: 'family' was renamed 'specials': use the new name."
    assert not (tmp_path / "t.json").exists()


def test_a_moved_class_in_a_users_yaml_is_refused_with_its_new_path(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("data:\n  class_path: lmforge.data.LabeledText\n")
    expected = "lmforge: 'lmforge.data.LabeledText' moved to 'lmforge.evaluation.LabeledText': use the new class path."
    assert refused(capsys, "fit", "-c", str(CONFIGS / "finetune" / "tiny.yaml"), "-c", str(mine)) == expected
    assert refused(capsys, "fit", "-c", str(CONFIGS / "finetune" / "tiny.yaml"), "--data",
                   "lmforge.data.tagged.TaggedText").endswith("moved to 'lmforge.evaluation.TaggedText': use the new "
                                                              "class path.")
