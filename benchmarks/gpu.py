"""Training throughput and MFU of GPT-2 small, BERT-base and a Llama block (SmolLM2-135M) on one CUDA GPU.

A compute benchmark, prepared to run as it is on a CUDA machine::

    python benchmarks/gpu.py                          # the three models, ~3-6 minutes with compilation
    python benchmarks/gpu.py --models gpt2 --batch_size 16 --grad_accum 4
    python benchmarks/gpu.py --lightning --json gpu.json   # also through lightning.Trainer
    python benchmarks/gpu.py --dry_run                # CPU, tiny shapes, seconds (what the test runs)
    python benchmarks/gpu.py --smoke                  # the same, by the name every benchmark's smoke run has

What is measured: training tokens/s of optimizer steps of lmforge's own modules -- a
``CausalLMTask`` (GPT-2 small: 12 layers, 12 heads, width 768, 1024 positions, vocabulary
50304, nanoGPT's 50257 padded to a multiple of 64, dropout 0 as ``configs/gpt/small.yaml``)
and a ``MaskedLMTask`` (BERT-base: 12 layers, 12 heads, width 768, 512 positions, vocabulary
30528, BERT's 30522 padded to a multiple of 64, dropout 0.1 as ``configs/bert/base.yaml``)
and a ``LlamaCausalLMTask`` (SmolLM2-135M as ``configs/llama/smollm2-135m.yaml``: 30 layers,
9 query and 3 key/value heads, width 576, SwiGLU 1536, 2048 positions, vocabulary 49152).
The loss is the tasks' own: ``CausalLMTask._loss`` (logits of every position, cross-entropy)
and ``Bert.encode`` + ``MaskedLMTask._mlm`` (sparse prediction: the vocabulary projection of
the masked positions only). Packed BERT blocks, as the MLM objective builds them without
NSP: no padding and no attention mask, so SDPA may take its flash kernel; NSP (sentence
pairs, padding masks) is not measured.

The batches are synthetic: uniformly random token ids (BERT: about 15% of the positions
between ``[CLS]`` and ``[SEP]`` drawn as masked, each with a random label), a pool of
``--batch_pool`` batches made on the device before timing and cycled, so neither data loading
nor tokenization is measured -- only the model's step, which does not depend on the ids.

One optimizer step is what ``lmforge fit`` with ``configs/trainer/gpu.yaml`` runs:
``--grad_accum`` micro-batches of forward under bf16 autocast (``bf16-mixed``: fp32 weights)
and backward of loss / grad_accum, gradient clipping at 1.0 (the configs'
``gradient_clip_val``), AdamW on lmforge's parameter groups (no decay on norms, biases,
embeddings) with the tasks' config hyper-parameters -- fused (``--fused``, the default;
``lmforge fit`` uses PyTorch's default foreach AdamW) -- the warmup-cosine schedule, and
``zero_grad(set_to_none=True)``. With ``--compile`` (the default on GPU) the loss path is
compiled with ``torch.compile``: ``CausalLMTask._loss``; ``Bert.encode`` and
``MaskedLMTask._mlm`` (which breaks the graph at the data-dependent selection of masked
positions). Attention is ``F.scaled_dot_product_attention`` (``--sdpa`` can force a kernel);
TF32 is on for any fp32 matmul left.

Timing: ``--warmup`` untimed steps (compilation, recompilation for BERT's varying number of
masked tokens, allocator warm-up), then ``--steps`` timed steps split into ``--rounds`` rounds,
each timed between ``torch.cuda.synchronize()`` calls. Per model it reports the median over
rounds of (round tokens / round seconds), tokens being ``micro-batch * seq_len * grad_accum``
per step (every position, as ``ThroughputMonitor`` counts), and the peak of
``torch.cuda.max_memory_allocated``. With ``--lightning`` the same task, batches, optimizer
and compiled loss path also run through a real ``lightning.Trainer`` (``bf16-mixed``,
``gradient_clip_val``, ``accumulate_grad_batches``; no logger, checkpoints, progress bar or
validation), timed alike by a callback, so Lightning's per-step overhead is visible. (Lightning
refuses ``gradient_clip_val`` with a fused optimizer under ``bf16-mixed``; there a callback
clips in ``on_before_optimizer_step`` instead, the same clipping.)

MFU = tokens/s * FLOPs per token / peak FLOP/s. FLOPs per token is the network's
``flops_per_token(seq_len)``: nanoGPT's ``estimate_mfu`` count, 6 * parameters (position
embeddings left out; the tied token embedding counted once, as the output projection) +
12 * n_layer * d_model * seq_len for attention ("MFU (net)"; GPT's ``perf/mfu``). For BERT that count charges the MLM head and vocabulary
projection to every token, and the pooler / NSP head too, while sparse prediction runs the
head on the masked positions only and no NSP is trained here, so the table also shows
"MFU (run)": the count of the work actually done, ``flops_per_token`` - 6 * (1 - masked
fraction) * (MLM head + vocabulary projection parameters) - 6 * (pooler + NSP parameters),
which is what ``MaskedLMTask`` logs as ``perf/mfu`` (at its ``mask_prob``).
For GPT-2 both are the same. The targets (GPT-2 small >= 50%, nanoGPT reports 37% on an A100
and llm.c about 50% on an H100; BERT-base >= 45%) are judged on "MFU (run)", the lower one.
The peak is the GPU's dense bf16 peak from ``lmforge.callbacks.GPU_PEAK_BF16`` by its CUDA
device name, or ``--peak_flops``.

``--dry_run`` runs the same code on the CPU with tiny shapes (2 layers, width 64, 2 heads,
sequence 64, vocabulary 512, micro-batch 2, 1 warmup + 3 timed steps, fp32, no compilation
unless ``--compile``); its peak is a fp32 matmul rate measured with
``lmforge.callbacks.measure_cpu_peak_flops``, and its targets are not judged. It checks that
the script works, not how fast anything is.

Prints a table; ``--json PATH`` also writes the figures (and the settings and versions) as
JSON, for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader, IterableDataset

from lmforge.callbacks import gpu_peak_flops, measure_cpu_peak_flops
from lmforge.models.bert import Bert, BertConfig
from lmforge.models.gpt import GPTConfig
from lmforge.objectives.masked_lm import IGNORE
from lmforge.tasks import CausalLMTask, LlamaCausalLMTask, MaskedLMTask, OptimizerConfig, PretrainingTask
from lmforge.tasks.optim import param_groups
from lmforge.tasks.schedules import warmup_cosine
from lmforge.tasks.masked_lm import run_flops_per_token

Batch = dict[str, torch.Tensor]
CLIP = 1.0  # configs/gpt/small.yaml and configs/bert/base.yaml: trainer.gradient_clip_val
MASK_PROB = 0.15  # MaskedLMTask's default mask_prob


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model: its task, shape, optimizer settings and MFU target."""

    name: str
    title: str
    task: type[PretrainingTask]
    vocab_size: int
    seq_len: int
    n_layer: int
    n_head: int
    d_model: int
    dropout: float
    batch_size: int  # default micro-batch
    optimizer: OptimizerConfig
    target_mfu: float
    extra: tuple[tuple[str, Any], ...] = ()  # the family's other config fields (Llama: kv heads, SwiGLU width ...)
    dry_run_extra: tuple[tuple[str, Any], ...] = ()  # those fields at the dry run's tiny shape

    def config(self, dropout: float | None) -> Any:
        """The network's config; ``dropout`` overrides the model's own when not None."""
        return self.task.network.config_class(
            vocab_size=self.vocab_size,
            max_seq_len=self.seq_len,
            n_layer=self.n_layer,
            n_head=self.n_head,
            d_model=self.d_model,
            dropout=self.dropout if dropout is None else dropout,
            **dict(self.extra),
        )


# The paper shapes of configs/gpt/small.yaml and configs/bert/base.yaml (optimizers as there).
MODELS: dict[str, ModelSpec] = {
    "gpt2": ModelSpec(
        name="gpt2",
        title="GPT-2 small",
        task=CausalLMTask,
        vocab_size=50304,  # 50257 padded to a multiple of 64, as nanoGPT
        seq_len=1024,
        n_layer=12,
        n_head=12,
        d_model=768,
        dropout=0.0,
        batch_size=32,
        optimizer=OptimizerConfig(lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95), warmup_steps=2000, min_lr_ratio=0.1),
        target_mfu=0.50,
    ),
    "bert": ModelSpec(
        name="bert",
        title="BERT-base",
        task=MaskedLMTask,
        vocab_size=30528,  # 30522 padded to a multiple of 64
        seq_len=512,
        n_layer=12,
        n_head=12,
        d_model=768,
        dropout=0.1,
        batch_size=64,
        optimizer=OptimizerConfig(lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999), warmup_steps=10000),
        target_mfu=0.45,
    ),
    # configs/llama/smollm2-135m.yaml: the Llama block (GQA, RoPE, SwiGLU, RMSNorm) at SmolLM2-135M's shape
    "smollm2": ModelSpec(
        name="smollm2",
        title="SmolLM2-135M (Llama)",
        task=LlamaCausalLMTask,
        vocab_size=49152,
        seq_len=2048,
        n_layer=30,
        n_head=9,
        d_model=576,
        dropout=0.0,
        batch_size=16,
        optimizer=OptimizerConfig(lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95), warmup_steps=2000, min_lr_ratio=0.1),
        # no published figure: our own target, below GPT-2 small's (width 576 gives smaller matmuls)
        target_mfu=0.40,
        extra=(("n_kv_head", 3), ("d_ff", 1536), ("rope_base", 100000.0), ("tie_embeddings", True)),
        dry_run_extra=(("n_kv_head", 1), ("d_ff", 128), ("rope_base", 100000.0), ("tie_embeddings", True)),
    ),
}
DRY_RUN_SHAPE = {"vocab_size": 512, "seq_len": 64, "n_layer": 2, "n_head": 2, "d_model": 64, "batch_size": 2}


@dataclass
class Settings:
    """How every model is run (resolved from the command line)."""

    device: str
    dry_run: bool
    precision: str  # "bf16" (autocast) or "fp32"
    compile: bool
    compile_mode: str | None
    fused: bool
    sdpa: str
    batch_size: int | None  # None: each model's default
    grad_accum: int
    warmup: int
    steps: int
    rounds: int
    batch_pool: int
    dropout: float | None
    seed: int


@dataclass
class RunResult:
    """The figures of one model run one way (``raw`` loop or ``lightning``)."""

    path: str
    tokens_per_sec: float  # median over rounds
    tokens_per_sec_rounds: list[float]
    step_ms: float  # from the median tokens/s
    mfu: float | None  # with the network's flops_per_token (ThroughputMonitor's perf/mfu)
    mfu_run: float | None  # with the FLOPs of the work actually done
    passed: bool | None  # mfu_run >= target; None when there is no peak or in a dry run
    peak_memory_bytes: int | None
    loss_first: float
    loss_last: float
    wall_seconds: float  # the whole run, warmup and compilation included


@dataclass
class ModelResult:
    """One model's shape, FLOP counts and runs."""

    name: str
    title: str
    task: str
    shape: dict[str, Any]
    micro_batch: int
    grad_accum: int
    tokens_per_step: int
    flops_per_token: float  # the network's flops_per_token(seq_len)
    flops_per_token_run: float  # with sparse prediction and unused heads taken out
    masked_fraction: float | None
    num_params: int
    target_mfu: float
    runs: dict[str, RunResult] = field(default_factory=dict)


# -- batches ------------------------------------------------------------------------------------
def make_batch(spec: ModelSpec, batch_size: int, generator: torch.Generator) -> Batch:
    """A synthetic batch as the task's data would give it (on the CPU)."""
    shape = (batch_size, spec.seq_len)
    ids = torch.randint(spec.vocab_size, shape, generator=generator)
    if issubclass(spec.task, CausalLMTask):
        return {"input_ids": ids, "targets": torch.randint(spec.vocab_size, shape, generator=generator)}
    selected = torch.rand(shape, generator=generator) < MASK_PROB
    selected[:, 0] = selected[:, -1] = False  # [CLS] and [SEP] are never predicted
    labels = torch.where(selected, torch.randint(spec.vocab_size, shape, generator=generator), IGNORE)
    return {"input_ids": ids, "labels": labels}


def masked_fraction(batches: list[Batch]) -> float | None:
    """The fraction of positions whose label is predicted (BERT); None without labels."""
    if "labels" not in batches[0]:
        return None
    return sum(int((b["labels"] != IGNORE).sum()) for b in batches) / sum(b["labels"].numel() for b in batches)


class CycledBatches(IterableDataset):
    """An endless stream of the pool's batches, for the Lightning run."""

    def __init__(self, batches: list[Batch]):
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield from self.batches


# -- FLOPs ----------------------------------------------------------------------------------------
def flops_per_token_run(task: PretrainingTask, seq_len: int, fraction: float | None) -> float:
    """FLOPs per token of the work the step actually does: the network's count, less (BERT)
    the MLM head and vocabulary projection on the unmasked positions and the pooler / NSP head,
    which the MLM-only step never runs (the count ``MaskedLMTask`` logs, at the measured fraction)."""
    if isinstance(task.net, Bert):
        return run_flops_per_token(task.net, seq_len, fraction or 0.0)
    return task.net.flops_per_token(seq_len)


# -- the step -------------------------------------------------------------------------------------
def loss_of(task: PretrainingTask, batch: Batch) -> torch.Tensor:
    """The training loss through the task's own loss path (what its training_step computes)."""
    if isinstance(task, CausalLMTask):
        return task._loss(batch)[0]
    hidden = task.net.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
    return task._mlm(batch, hidden)[0]


def compile_loss_path(task: PretrainingTask, mode: str | None) -> None:
    """Replace the task's loss path by compiled versions (instance attributes), so the raw loop
    and the Lightning ``training_step`` run the same compiled code."""
    if isinstance(task, CausalLMTask):
        task._loss = torch.compile(task._loss, mode=mode)
    else:
        task.net.encode = torch.compile(task.net.encode, mode=mode)
        task._mlm = torch.compile(task._mlm, mode=mode)


def make_optimizer(
    task: PretrainingTask, total_steps: int, fused: bool
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on lmforge's parameter groups with the task's hyper-parameters and schedule."""
    o = task.optim
    optimizer = torch.optim.AdamW(
        param_groups(task.net, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused or None
    )
    decay_steps = o.decay_steps or total_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(o.warmup_steps, decay_steps, o.min_lr_ratio))
    return optimizer, schedule


def autocast(settings: Settings) -> contextlib.AbstractContextManager:
    """bf16 autocast (Lightning's ``bf16-mixed``), or nothing for fp32."""
    if settings.precision == "bf16":
        # as Lightning's bf16-mixed: no cache of the bf16 copies of the weights
        return torch.autocast(device_type=torch.device(settings.device).type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def sdpa_context(backend: str) -> contextlib.AbstractContextManager:
    """Restrict ``F.scaled_dot_product_attention`` to one kernel, or leave PyTorch's choice."""
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    return sdpa_kernel([getattr(SDPBackend, names[backend])])


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def round_sizes(steps: int, rounds: int) -> list[int]:
    """``steps`` split into ``rounds`` nearly equal rounds."""
    return [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]


def run_raw(task: PretrainingTask, batches: list[Batch], settings: Settings) -> tuple[list[float], list[float]]:
    """A plain training loop over the batch pool; returns (seconds of each round, [first, last loss])."""
    total = settings.warmup + settings.steps
    optimizer, schedule = make_optimizer(task, total, settings.fused)
    params = [p for p in task.parameters() if p.requires_grad]
    task.train()
    micro = iter(CycledBatches(batches))
    accum = settings.grad_accum
    losses: list[torch.Tensor] = []

    def step() -> torch.Tensor:
        for _ in range(accum):
            with autocast(settings):
                loss = loss_of(task, next(micro))
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    with sdpa_context(settings.sdpa):
        for _ in range(settings.warmup):
            losses.append(step())
        seconds = []
        for n in round_sizes(settings.steps, settings.rounds):
            synchronize(settings.device)
            start = time.perf_counter()
            for _ in range(n):
                last = step()
            synchronize(settings.device)
            seconds.append(time.perf_counter() - start)
            losses.append(last)
    return seconds, [float(losses[0]), float(losses[-1])]


class RoundTimer(L.Callback):
    """Times the Lightning run's rounds: device-synchronised marks at optimizer-step boundaries."""

    def __init__(self, warmup: int, sizes: list[int], device: str):
        self.boundaries = [warmup + sum(sizes[:i]) for i in range(len(sizes) + 1)]
        self.device = device
        self.marks: dict[int, float] = {}
        self.losses: list[float] = []

    def _mark(self, step: int) -> None:
        if step in self.boundaries and step not in self.marks:
            synchronize(self.device)
            self.marks[step] = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark(trainer.global_step)  # a run with no warmup starts timing here

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.losses or trainer.global_step == self.boundaries[-1]:
            self.losses.append(float(outputs["loss"]))  # first and last; a sync outside the timed rounds
        self._mark(trainer.global_step)

    def round_seconds(self) -> list[float]:
        b = self.boundaries
        return [self.marks[b[i + 1]] - self.marks[b[i]] for i in range(len(b) - 1)]


def run_lightning(task: PretrainingTask, batches: list[Batch], settings: Settings) -> tuple[list[float], list[float]]:
    """The same step through ``lightning.Trainer.fit``; returns (seconds of each round, [first, last loss])."""
    total = settings.warmup + settings.steps
    task.configure_optimizers = lambda: (  # the raw loop's (fused) AdamW and schedule
        lambda opt, sched: {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
    )(*make_optimizer(task, total, settings.fused))
    timer = RoundTimer(settings.warmup, round_sizes(settings.steps, settings.rounds), settings.device)
    # Lightning's MixedPrecision raises on gradient_clip_val with a fused optimizer, even for
    # bf16, which has no gradient scaler to unscale: clip in a callback instead
    own_clipping = settings.fused and settings.precision == "bf16"
    trainer = L.Trainer(
        accelerator="gpu" if torch.device(settings.device).type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if settings.precision == "bf16" else "32-true",
        max_steps=total,
        accumulate_grad_batches=settings.grad_accum,
        gradient_clip_val=None if own_clipping else CLIP,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer, ClipGradients()] if own_clipping else [timer],
    )
    cpu_batches = [{k: v.cpu() for k, v in b.items()} for b in batches]
    cuda = torch.device(settings.device).type == "cuda"
    loader = DataLoader(CycledBatches(cpu_batches), batch_size=None, pin_memory=cuda)
    with sdpa_context(settings.sdpa):
        trainer.fit(task, train_dataloaders=loader)
    if trainer.global_step != total:
        raise RuntimeError(f"Lightning ran {trainer.global_step} optimizer steps, expected {total}.")
    return timer.round_seconds(), [timer.losses[0], timer.losses[-1]]


class ClipGradients(L.Callback):
    """Gradient clipping just before the optimizer step, for the one case Lightning refuses
    (``gradient_clip_val`` with a fused optimizer under ``bf16-mixed``): the same clipping."""

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        torch.nn.utils.clip_grad_norm_([p for p in pl_module.parameters() if p.requires_grad], CLIP)


RUNNERS: dict[str, Callable[[PretrainingTask, list[Batch], Settings], tuple[list[float], list[float]]]] = {
    "raw": run_raw,
    "lightning": run_lightning,
}


# -- one model ------------------------------------------------------------------------------------
def build_spec(name: str, settings: Settings) -> ModelSpec:
    """The model's spec at the benchmark's shape (or the dry run's tiny one)."""
    spec = MODELS[name]
    if settings.dry_run:
        spec = ModelSpec(**{**asdict(spec), **DRY_RUN_SHAPE, "title": f"{spec.title} (tiny)",
                            "optimizer": spec.optimizer, "task": spec.task, "extra": spec.dry_run_extra})
    return spec


def build_task(spec: ModelSpec, settings: Settings) -> PretrainingTask:
    """A fresh task (same seed, same initial weights) on the device, compiled if asked."""
    torch.manual_seed(settings.seed)
    task = spec.task(config=spec.config(settings.dropout), optimizer=spec.optimizer).to(settings.device)
    if settings.compile:
        compile_loss_path(task, settings.compile_mode)
    return task


def free_memory(device: str) -> None:
    """Drop what the previous run left: compiled graphs, cached blocks, peak statistics."""
    torch._dynamo.reset()
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure_model(name: str, paths: list[str], settings: Settings, peak: float | None) -> ModelResult:
    """Run one model every asked way; return its figures."""
    spec = build_spec(name, settings)
    micro_batch = settings.batch_size or spec.batch_size
    generator = torch.Generator().manual_seed(settings.seed)
    pool = [make_batch(spec, micro_batch, generator) for _ in range(settings.batch_pool)]
    fraction = masked_fraction(pool)
    tokens_per_step = micro_batch * spec.seq_len * settings.grad_accum

    task = build_task(spec, settings)
    result = ModelResult(
        name=name,
        title=spec.title,
        task=f"lmforge.tasks.{spec.task.__qualname__}",
        shape={**asdict(task.net.config), "seq_len": spec.seq_len},
        micro_batch=micro_batch,
        grad_accum=settings.grad_accum,
        tokens_per_step=tokens_per_step,
        flops_per_token=float(task.net.flops_per_token(spec.seq_len)),
        flops_per_token_run=float(flops_per_token_run(task, spec.seq_len, fraction)),
        masked_fraction=fraction,
        num_params=task.net.num_params(),
        target_mfu=spec.target_mfu,
    )
    for path in paths:
        if task is None:
            task = build_task(spec, settings)
        free_memory(settings.device)
        batches = [{k: v.to(settings.device) for k, v in b.items()} for b in pool]
        start = time.perf_counter()
        seconds, losses = RUNNERS[path](task, batches, settings)
        wall = time.perf_counter() - start
        if not all(math.isfinite(x) for x in losses):
            raise RuntimeError(f"{spec.title} ({path}): non-finite training loss {losses}.")
        rounds = [n * tokens_per_step / s for n, s in zip(round_sizes(settings.steps, settings.rounds), seconds)]
        tps = statistics.median(rounds)
        mfu = tps * result.flops_per_token / peak if peak else None
        mfu_run = tps * result.flops_per_token_run / peak if peak else None
        cuda = torch.device(settings.device).type == "cuda"
        result.runs[path] = RunResult(
            path=path,
            tokens_per_sec=tps,
            tokens_per_sec_rounds=rounds,
            step_ms=1000 * tokens_per_step / tps,
            mfu=mfu,
            mfu_run=mfu_run,
            passed=None if mfu_run is None or settings.dry_run else mfu_run >= spec.target_mfu,
            peak_memory_bytes=torch.cuda.max_memory_allocated() if cuda else None,
            loss_first=losses[0],
            loss_last=losses[-1],
            wall_seconds=wall,
        )
        print(f"{spec.title} ({path}): {tps:,.0f} tokens/s over {settings.steps} timed steps "
              f"({wall:.1f} s in all)", flush=True)
        task, batches = None, None
    free_memory(settings.device)
    return result


# -- reporting ------------------------------------------------------------------------------------
def percent(x: float | None) -> str:
    """A fraction as a percentage, or n/a."""
    return "n/a" if x is None else f"{100 * x:.1f}%"


def verdict(run: RunResult, settings: Settings) -> str:
    """PASS / FAIL against the target, or why there is none."""
    if settings.dry_run:
        return "dry run"
    return "n/a" if run.passed is None else ("PASS" if run.passed else "FAIL")


def print_table(results: list[ModelResult], settings: Settings, device_name: str, peak: float | None,
                peak_source: str) -> None:
    """The results table: a row per model and way it was run."""
    print()
    print(f"Device: {device_name}; peak {'n/a' if peak is None else f'{peak / 1e12:.3g} TFLOP/s'} ({peak_source})")
    print(f"precision {settings.precision}, compile {'on' if settings.compile else 'off'}"
          f"{f' ({settings.compile_mode})' if settings.compile and settings.compile_mode else ''}, "
          f"sdpa {settings.sdpa}, fused AdamW {'on' if settings.fused else 'off'}, TF32 on; "
          f"{settings.warmup} warmup + {settings.steps} timed steps in {settings.rounds} round(s)"
          f"{'; DRY RUN (tiny shapes on CPU)' if settings.dry_run else ''}")
    header = (f"{'model':<19} {'path':<9} {'batch':>9} {'tok/step':>9} {'tokens/s':>11} {'ms/step':>8} "
              f"{'MFU (net)':>9} {'MFU (run)':>9} {'target':>7} {'verdict':>8} {'peak mem':>9}")
    print(header)
    print("-" * len(header))
    for r in results:
        for run in r.runs.values():
            memory = "n/a" if run.peak_memory_bytes is None else f"{run.peak_memory_bytes / 2**30:.1f} GiB"
            print(f"{r.title:<19} {run.path:<9} {f'{r.micro_batch}x{r.grad_accum}':>9} {r.tokens_per_step:>9,} "
                  f"{run.tokens_per_sec:>11,.0f} {run.step_ms:>8.1f} {percent(run.mfu):>9} {percent(run.mfu_run):>9} "
                  f"{percent(r.target_mfu):>7} {verdict(run, settings):>8} {memory:>9}")
    print("MFU (net): the network's flops_per_token (nanoGPT's count, as perf/mfu logs it); MFU (run): the FLOPs of")
    print("the work done (BERT: MLM head on the masked positions only, no NSP head), what the target is judged on.")
    for r in results:
        extra = f", masked fraction {r.masked_fraction:.3f}" if r.masked_fraction is not None else ""
        print(f"{r.title}: {r.num_params / 1e6:.1f}M parameters, {r.flops_per_token / 1e6:.1f} MFLOP/token (net), "
              f"{r.flops_per_token_run / 1e6:.1f} MFLOP/token (run){extra}")


def summary(results: list[ModelResult], settings: Settings, device_name: str, peak: float | None,
            peak_source: str) -> dict[str, Any]:
    """Everything printed, as JSON-able data."""
    return {
        "benchmark": "gpu_training_mfu",
        "dry_run": settings.dry_run,
        "device": device_name,
        "peak_flops": peak,
        "peak_source": peak_source,
        "settings": asdict(settings),
        "models": {r.name: asdict(r) for r in results},
        "versions": {"torch": torch.__version__, "lightning": L.__version__, "python": platform.python_version(),
                     "cuda": torch.version.cuda},
    }


# -- command line ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    """The command line, and the settings it resolves to (dry-run defaults included)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--models", default="gpt2,bert,smollm2", help=f"comma-separated, of: {', '.join(MODELS)}")
    parser.add_argument("--dry_run", "--smoke", action="store_true",
                        help="CPU, tiny shapes, a few steps: checks the script (its figures are not meaningful)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry_run")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 300; dry run 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before them (default 20; dry run 1)")
    parser.add_argument("--rounds", type=int, default=3, help="the timed steps are split into this many rounds")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="micro-batch of every model (default: GPT-2 32, BERT 64; dry run 2)")
    parser.add_argument("--grad_accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None, help="default bf16; dry run fp32")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the loss path (default: on, off in a dry run)")
    parser.add_argument("--compile_mode", default=None, help="torch.compile mode, e.g. max-autotune")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True, help="fused AdamW")
    parser.add_argument("--sdpa", choices=["auto", "flash", "efficient", "cudnn", "math"], default="auto",
                        help="SDPA kernel to force (fails with 'No available kernel' where it cannot run, e.g. "
                             "CPU flash with dropout); auto leaves PyTorch's choice")
    parser.add_argument("--dropout", type=float, default=None, help="override the models' dropout (GPT-2 0, BERT 0.1)")
    parser.add_argument("--lightning", action="store_true", help="also run through lightning.Trainer")
    parser.add_argument("--peak_flops", type=float, default=None, help="peak FLOP/s for MFU (default: looked up)")
    parser.add_argument("--batch_pool", type=int, default=4, help="distinct synthetic batches, cycled")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    args.models = list(dict.fromkeys(names))
    dry = args.dry_run
    settings = Settings(
        device=args.device or ("cpu" if dry else "cuda"),
        dry_run=dry,
        precision=args.precision or ("fp32" if dry else "bf16"),
        compile=(not dry) if args.compile is None else args.compile,
        compile_mode=args.compile_mode,
        fused=args.fused,
        sdpa=args.sdpa,
        batch_size=args.batch_size or (DRY_RUN_SHAPE["batch_size"] if dry else None),
        grad_accum=args.grad_accum,
        warmup=(1 if dry else 20) if args.warmup is None else args.warmup,
        steps=(3 if dry else 300) if args.steps is None else args.steps,
        rounds=args.rounds,
        batch_pool=args.batch_pool,
        dropout=args.dropout,
        seed=args.seed,
    )
    if settings.steps < settings.rounds or settings.rounds < 1 or settings.warmup < 0:
        parser.error("need --rounds >= 1, --steps >= --rounds and --warmup >= 0")
    if settings.grad_accum < 1 or settings.batch_pool < 1 or (settings.batch_size or 1) < 1:
        parser.error("--grad_accum, --batch_pool and --batch_size must be at least 1")
    if torch.device(settings.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or use --dry_run")
    return args, settings


def quiet() -> None:
    """Silence Lightning's setup chatter and its num_workers hint."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning's own use of a deprecated torch API


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table, write the JSON if asked, and return its data."""
    args, settings = parse_args(argv)
    quiet()
    torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul
    torch.backends.cudnn.allow_tf32 = True
    cuda = torch.device(settings.device).type == "cuda"
    if cuda:
        device_name = torch.cuda.get_device_name(settings.device)
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    if args.peak_flops:
        peak, source = args.peak_flops, "--peak_flops"
    elif cuda:
        peak = gpu_peak_flops(device_name)
        source = "dense bf16, lmforge.callbacks.GPU_PEAK_BF16" if peak else "unknown GPU: pass --peak_flops"
    else:
        peak, source = measure_cpu_peak_flops(), "fp32 matmul measured by measure_cpu_peak_flops"
    paths = ["raw", "lightning"] if args.lightning else ["raw"]
    results = [measure_model(name, paths, settings, peak) for name in args.models]
    print_table(results, settings, device_name, peak, source)
    data = summary(results, settings, device_name, peak, source)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"Wrote {args.json}")
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
