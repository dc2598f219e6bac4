"""Scale-out configs: configs/trainer/ddp.yaml and fsdp.yaml, Lightning's own DDP and FSDP.

On the CPU: both configs parse with every family (DDP training with ddp.yaml: tests/test_ddp.py); the FSDP
strategy built from the YAML wraps exactly the Transformer blocks, and trains with two gloo
processes through a test-only shim (Lightning and torch's FSDP refuse a CPU device otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch import nn

from conftest import CONFIGS, ROOT
from lmforge.cli import main
from lmforge.models import GPT, Bert, BertConfig, Elmo, ElmoConfig, GPTConfig, Llama, LlamaConfig, T5, T5Config
from lmforge.models.layers import PostNormBlock, PreNormBlock
from lmforge.models.llama import LlamaBlock
from lmforge.models.t5 import T5Block

DDP = CONFIGS / "trainer" / "ddp.yaml"
FSDP = CONFIGS / "trainer" / "fsdp.yaml"
BLOCKS = {PreNormBlock, PostNormBlock, T5Block, LlamaBlock}
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
ON_CPU = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.precision=32-true"]


def printed_config(*files: Path, capsys: pytest.CaptureFixture) -> dict:
    args = [arg for f in files for arg in ("-c", str(f))]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("family", ["gpt", "bert", "roberta", "t5", "elmo", "llama"])
def test_both_configs_parse_with_every_family(family: str, capsys: pytest.CaptureFixture) -> None:
    tiny = CONFIGS / family / "tiny.yaml"
    ddp = printed_config(tiny, DDP, capsys=capsys)["trainer"]
    assert (ddp["accelerator"], ddp["devices"], ddp["num_nodes"], ddp["precision"]) == ("gpu", -1, 1, "bf16-mixed")
    assert ddp["strategy"]["class_path"] == "lightning.pytorch.strategies.DDPStrategy"
    args = ddp["strategy"]["init_args"]
    assert (args["find_unused_parameters"], args["static_graph"], args["gradient_as_bucket_view"]) == (False, True, True)

    config = printed_config(tiny, FSDP, capsys=capsys)
    fsdp = config["trainer"]
    assert (fsdp["accelerator"], fsdp["devices"], fsdp["num_nodes"], fsdp["precision"]) == ("gpu", -1, 1, "bf16-mixed")
    assert fsdp["gradient_clip_val"] == 1.0 and config["sample"]["enabled"] is True  # the family's, kept
    assert fsdp["strategy"]["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    args = fsdp["strategy"]["init_args"]
    names = {f"{c.__module__}.{c.__qualname__}" for c in BLOCKS}
    assert set(args["auto_wrap_policy"]) == names
    assert set(args["activation_checkpointing_policy"]) == names
    assert (args["sharding_strategy"], args["state_dict_type"]) == ("FULL_SHARD", "full")


def strategy_from(config: Path, base: type) -> object:
    """The strategy object that LightningCLI builds from ``trainer.strategy`` of ``config``,
    through jsonargparse's subclass typing as the CLI does."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "strategy")
    spec = yaml.safe_load(config.read_text())["trainer"]["strategy"]
    return parser.instantiate_classes(parser.parse_object({"strategy": spec})).strategy


def tiny_networks() -> dict[str, nn.Module]:
    small = {"vocab_size": 64, "max_seq_len": 16, "n_layer": 2, "n_head": 2, "d_model": 16}
    return {
        "gpt": GPT(GPTConfig(**small)),
        "bert": Bert(BertConfig(**small)),
        "t5": T5(T5Config(**small, d_kv=8, d_ff=32)),
        "elmo": Elmo(ElmoConfig(vocab_size=64)),
        "llama": Llama(LlamaConfig(**small, n_kv_head=1, d_ff=32)),
    }


def test_ddp_strategy_from_yaml_has_its_ddp_arguments() -> None:
    strategy = strategy_from(DDP, DDPStrategy)
    assert type(strategy) is DDPStrategy
    kwargs = strategy._ddp_kwargs
    assert kwargs["find_unused_parameters"] is False
    assert kwargs["static_graph"] is True and kwargs["gradient_as_bucket_view"] is True


def test_fsdp_wrap_and_checkpoint_policies_select_exactly_the_transformer_blocks() -> None:
    strategy = strategy_from(FSDP, FSDPStrategy)
    assert type(strategy) is FSDPStrategy
    assert strategy.sharding_strategy.name == "FULL_SHARD" and strategy._state_dict_type == "full"
    wrap = strategy.kwargs["auto_wrap_policy"]
    checkpoint = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    for family, net in tiny_networks().items():
        blocks = [m for m in net.modules() if type(m) in BLOCKS]
        expected = {"gpt": 2, "bert": 2, "t5": 4, "elmo": 0, "llama": 2}[family]  # T5: encoder and decoder blocks
        assert len(blocks) == expected, family
        for policy in (wrap, checkpoint):
            # torch's policy: the modules that become their own FSDP unit (the root always is one)
            chosen = set(policy._run_policy(net, ignored_modules=set(), root_kwargs={}))
            assert chosen - {net} == set(blocks), family


def run_fit(tmp_path: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    paths = [str(ROOT / "src"), *([str(pythonpath)] if pythonpath else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lmforge", "fit", *args, "--data.init_args.max_documents=60", *QUIET]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


CPU_FSDP_SHIM = '''
import torch
from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing
from lightning.pytorch.strategies import FSDPStrategy


class CPUFSDPStrategy(FSDPStrategy):
    """Test only. Lightning refuses FSDPStrategy itself with accelerator=cpu, and torch's FSDP
    refuses a CPU module unless told device_id=cpu, which Lightning passes as None on a CPU."""

    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = FullyShardedDataParallel(
            module=model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **self.kwargs,
        )
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        units = sum(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())
        checkpointed = sum(type(m).__name__ == "CheckpointWrapper" for m in model.modules())
        print(f"FSDP units={units} checkpointed={checkpointed}", flush=True)
        return model
'''


@pytest.mark.slow
def test_fsdp_config_trains_gpt_in_two_gloo_processes(tmp_path: Path) -> None:
    """fsdp.yaml's strategy arguments, unchanged, in a CPU shim: a tiny GPT trains 3 steps and
    validates, one FSDP unit per block plus the root, activation checkpointing on each block,
    gradients clipped at the config's 1.0 and a text sample generated from the gathered weights.
    (Checkpoint writing is off: torch's full-state-dict gather crashes rank 0 on the CPU.)"""
    (tmp_path / "cpu_fsdp.py").write_text(CPU_FSDP_SHIM, encoding="utf-8")
    config = yaml.safe_load(FSDP.read_text())
    config["trainer"]["strategy"]["class_path"] = "cpu_fsdp.CPUFSDPStrategy"
    (tmp_path / "fsdp_cpu.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_fit(
        tmp_path, "-c", str(CONFIGS / "gpt" / "tiny.yaml"), "-c", str(tmp_path / "fsdp_cpu.yaml"), *ON_CPU,
        "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=2",
        "--checkpoint.save_last=false", "--checkpoint.save_top_k=0", pythonpath=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert out.count("FSDP units=3 checkpointed=2") == 2  # both ranks: root + 2 blocks, 2 checkpointed
    assert "`max_steps=3` reached" in out
    events = next((tmp_path / "logs" / "gpt-tiny" / "version_0").glob("events.out.tfevents.*")).read_bytes()
    assert b"samples/text_summary" in events  # the text sample, written by rank 0
