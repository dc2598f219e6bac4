"""Training throughput on CPU: ``lmforge fit`` against a plain PyTorch loop and Hugging Face.

Measures training tokens/s (input tokens per second of steady-state optimizer steps) of GPT,
BERT and T5 at one shape -- vocab 8192, 4 layers (T5: 4 encoder + 4 decoder), width 256,
4 heads, sequence 256, batch 8, dropout 0, fp32 -- of Llama at the same size with 8 query and
2 key/value heads and SwiGLU 704, and of ELMo at a small shape of its own, each trained three
ways. ``--shape quickstart`` takes configs/quickstart.yaml's network (its Llama; the others
take its layers, heads and width), vocabulary, sequence and batch instead.

GPT (causal LM, byte-level BPE tokenizer):

(a) ``lmforge fit``: the real CLI (``LmforgeCLI``) driven in-process with ``CausalLMTask`` on
    ``BundledCorpus``; validation, checkpoints, the progress bar and text samples are off,
    the default TensorBoard logger and ThroughputMonitor stay (their files go to a temporary
    folder). A callback defined here timestamps the end of every optimizer step.
(b) The same ``lmforge.models.GPT`` (same seed, so the same initial weights), the same AdamW
    param groups and warmup-cosine schedule, and the same batches (the same data module's
    train_dataloader) in a hand-written loop: ``net.loss`` (the network's next-token loss, its
    output projection fused with the cross-entropy a chunk of positions at a time, as
    ``CausalLMTask`` trains), backward, clip_grad_norm_(1.0), optimizer.step, scheduler.step,
    zero_grad(set_to_none=True).
(c) ``transformers`` GPT2LMHeadModel (``attn_implementation="sdpa"``, no KV cache) of the same
    shape on the same 256-token input batches, loss from ``labels=input_ids`` (HF shifts
    internally), AdamW on all parameters, the same schedule and clipping.

BERT (masked LM, WordPiece tokenizer with BERT's special tokens, 15% of tokens predicted):

(a) ``lmforge fit`` as above with ``MaskedLMTask``, which projects onto the vocabulary only
    the masked positions (sparse prediction).
(b) The same ``lmforge.models.Bert`` and the same sparse loss in the hand-written loop.
(c) ``transformers`` BertForMaskedLM (``attn_implementation="sdpa"``, intermediate 1024,
    256 positions) with ``labels=``: it projects every position onto the vocabulary and
    takes the loss on the masked ones. It trains on the same masked batches: a fresh
    ``MaskedLM`` (seeded as the task's) bound to the same tokenizer, through the same data
    module's train_dataloader, so every variant sees identical masks.

Each variant takes ``--warmup`` untimed steps then ``--steps`` timed ones; a step's time runs
from the end of one optimizer step to the end of the next, so it includes fetching (and
masking) the batch and every per-step overhead. Tokenizer training, data preparation and
Trainer setup are not timed. The variants of a family run interleaved, ``--rounds`` times,
in one process, with the rotation of their order changing every round, so machine noise
hits them alike. Per variant it reports the median over rounds of (timed tokens / timed
seconds) -- the figure the targets are judged on: GPT (a)/(b) >= 0.97 and (a)/(c) >= 2.0,
BERT (a)/(c) >= 1.5 -- and, as a check on a noisy machine, a "typical" figure from the
median step time over all rounds (robust to bursts of load from other processes, but blind
to overhead that comes only every N steps, such as logger writes). The losses of (a) and
(b) are compared step by step to show that they do the same work.

T5 (span corruption, Unigram tokenizer with the 100 sentinels; 256-token inputs made of
284 corpus tokens, 58-token targets, feed-forward 1024, ReLU, tied output):

(a) ``lmforge fit`` as above with ``SpanCorruptionTask``.
(b) The same ``lmforge.models.T5`` and cross-entropy over the targets in the hand-written loop.
(c) ``transformers`` T5ForConditionalGeneration (``attn_implementation="sdpa"``, T5 v1.0:
    ReLU, tied embeddings) of the same shape on the same corrupted batches (a fresh
    ``SpanCorruption``, seeded as the task's), ``labels=`` the targets and
    ``decoder_input_ids`` given, so both decode the same sequences. Target (a)/(c) >= 1.2.

ELMo (bidirectional LSTM LM, BPE tokenizer with ELMo's special tokens), at its own small
shape -- vocab 8192, 2 layers per direction of 1024 cells projected to 128, a 512-filter
character CNN with 2 highway layers, sequence 256, batch 8, dropout 0, fp32, full softmax.
There is no ``transformers`` ELMo, so (c) is lmforge again with subword embeddings in place
of the char CNN (what the char CNN costs):

(a) ``lmforge fit`` as above with ``ElmoTask`` (char CNN).
(b) The same ``lmforge.models.Elmo`` (char CNN, its spelling table filled as the task fills
    it) and the same loss, the mean of both directions' cross-entropy, in the hand-written loop.
(c) ``lmforge fit`` with ``ElmoTask`` and ``token_repr: embedding``.

Llama (causal LM, the GPT family's tokenizer; RoPE theta 10000, tied output head):

(a) ``lmforge fit`` as above with ``LlamaCausalLMTask`` (AdamW and the schedule of
    ``CausalLMTask``, as the GPT family).
(b) The same ``lmforge.models.Llama`` and next-token cross-entropy in the hand-written loop.
(c) ``transformers`` LlamaForCausalLM (``attn_implementation="sdpa"``) with the config that
    ``lmforge export`` writes for (b)'s network, on the same input batches, ``labels=input_ids``.
    Targets (b)/(c) >= 1.05 (the network against its peer) and (a)/(b) >= 0.97, at both shapes.

After every run the benchmark checks that the variant trained the network class it names with
``torch.optim.AdamW``; the JSON line records both classes per variant.

Run from the repository root (prints a table per family; the last line is a JSON object
with a section per family)::

    python benchmarks/throughput.py                    # all families, ~4 minutes on 2 quiet cores
    python benchmarks/throughput.py --family elmo      # ELMo only
    python benchmarks/throughput.py --family bert      # one family, ~2 minutes (longer under load)
    python benchmarks/throughput.py --family llama --shape quickstart   # at the quick start's shape
    python benchmarks/throughput.py --rounds 1 --warmup 2 --steps 3   # quick check
    python benchmarks/throughput.py --smoke            # the plumbing only, seconds: see below

``--smoke`` runs every variant of every family through the same functions at a tiny shape
(``SMOKE``: vocab 512, 1 layer, width 32, sequence 32, batch 2, the first 80 documents of the
bundled corpus; ``--shape`` is ignored) for 1 round of 1 warmup + 2 timed steps, and judges no target: it checks that
the benchmark runs (the CI test does), and its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import inspect
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import transformers
import yaml
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn
from torch.utils.data import DataLoader
from transformers import BertConfig as HFBertConfig
from transformers import BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, T5ForConditionalGeneration
from transformers import LlamaConfig as HFLlamaConfig
from transformers import T5Config as HFT5Config

from lmforge.commands.lightning import LmforgeCLI
from lmforge.data import BundledCorpus, TokenizerSpec
from lmforge.models.bert import Bert, BertConfig
from lmforge.models.elmo import Elmo, ElmoConfig
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.llama import Llama, LlamaConfig
from lmforge.models.t5 import T5, T5Config
from lmforge.batching import Objective
from lmforge.objectives import BidirectionalLM, CausalLM, MaskedLM, SpanCorruption
from lmforge.objectives.masked_lm import IGNORE
from lmforge.start.hf import ADAPTERS
from lmforge.tasks import (CausalLMTask, ElmoTask, LlamaCausalLMTask, MaskedLMTask, OptimizerConfig, PretrainingTask,
                           SpanCorruptionTask)
from lmforge.tasks.elmo import token_char_ids
from lmforge.tasks.optim import build_optimizer
from lmforge.tasks.schedules import warmup_cosine

SEED = 1234  # the CLI's seed_everything default, also used to initialise (b) and (c)
QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
CLIP = 1.0

Batch = dict[str, torch.Tensor]
LossFn = Callable[[Batch], torch.Tensor]
LoopModel = tuple[nn.Module, torch.optim.Optimizer, LossFn]  # what a hand-written loop trains


@dataclass(frozen=True)
class Shape:
    """The measured shape: the networks (GPT, BERT, T5 share one; ELMo has its own), the
    sequence, the batch and how much of the bundled corpus is read."""

    vocab_size: int
    seq_len: int
    batch_size: int
    n_layer: int
    n_head: int
    d_model: int
    elmo: dict[str, Any]  # ElmoConfig's shape arguments
    llama: dict[str, int]  # LlamaConfig's shape arguments
    max_documents: int | None = None  # of the bundled corpus; None: all of it

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def core(self) -> dict[str, int]:
        """The shape arguments GPT and BERT take."""
        return {"n_layer": self.n_layer, "n_head": self.n_head, "d_model": self.d_model}

    @property
    def t5(self) -> dict[str, int]:
        """T5's: the core ones (n_layer encoder + n_layer decoder layers), d_kv and d_ff."""
        return {**self.core, "d_kv": self.d_model // self.n_head, "d_ff": 4 * self.d_model}


REAL = Shape(vocab_size=8192, seq_len=256, batch_size=8, n_layer=4, n_head=4, d_model=256,
             elmo={"n_layer": 2, "hidden_size": 1024, "projection_size": 128, "char_dim": 16, "max_chars": 50,
                   "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]], "n_highway": 2},
             llama={"n_layer": 4, "n_head": 8, "n_kv_head": 2, "d_model": 256, "d_ff": 704})
# --smoke: the same code at a shape that trains in a blink; its figures mean nothing
SMOKE = Shape(vocab_size=512, seq_len=32, batch_size=2, n_layer=1, n_head=2, d_model=32,
              elmo={"n_layer": 1, "hidden_size": 64, "projection_size": 16, "char_dim": 4, "max_chars": 12,
                    "filters": [[1, 8], [2, 8]], "n_highway": 1},
              llama={"n_layer": 1, "n_head": 2, "n_kv_head": 1, "d_model": 32, "d_ff": 64},
              max_documents=80)
LLAMA_SHAPE_KEYS = ("n_layer", "n_head", "n_kv_head", "d_model", "d_ff")


def quickstart_shape() -> Shape:
    """The quick start's network (configs/quickstart.yaml: its Llama, whose core sizes the other
    families take) and its data's vocabulary, sequence and batch; ELMo keeps its own shape."""
    quickstart = yaml.safe_load(QUICKSTART.read_text())
    net, data = quickstart["model"]["init_args"]["config"], quickstart["data"]["init_args"]
    llama = {key: net[key] for key in LLAMA_SHAPE_KEYS}
    return Shape(vocab_size=data["tokenizer"]["vocab_size"], seq_len=data["seq_len"], batch_size=data["batch_size"],
                 n_layer=net["n_layer"], n_head=net["n_head"], d_model=net["d_model"], elmo=REAL.elmo, llama=llama)


SHAPES: dict[str, Callable[[], Shape]] = {"default": lambda: REAL, "quickstart": quickstart_shape}


@dataclass
class Run:
    """One training run of one variant: step-end times, per-step losses, what it trained, torch threads."""

    ends: list[float]
    losses: list[torch.Tensor]
    network: type[nn.Module] | None = None  # the class of the network it trained
    optimizer: type[torch.optim.Optimizer] | None = None  # the class of its optimizer
    threads: int | None = None  # seen inside the Lightning loop, for (a)


@dataclass(frozen=True)
class Variant:
    label: str  # in the table
    json_name: str  # in the JSON line
    run: Callable[[Setup, int], Run]  # (setup, total steps) -> run
    network: type[nn.Module]  # the class it names, checked after every run (with AdamW as its optimizer)


@dataclass(frozen=True)
class Family:
    """A model family: its task, objective, tokenizer, the three variants and the targets."""

    name: str
    title: str
    task: type[PretrainingTask]
    objective: Callable[[], Objective]  # a fresh one as the task builds it (fresh masking stream)
    tokenizer: TokenizerSpec  # its kind and family (the vocabulary size is the shape's)
    variants: dict[str, Variant]  # keyed "a", "b", "c"
    targets: dict[str, float]  # ratio name ("a_over_c") -> minimum
    model_args: Callable[[Shape], dict[str, Any]] = lambda shape: shape.core  # --model.config.* of (a)

    @property
    def optim(self) -> OptimizerConfig:
        """The task's default optimizer and schedule, which (a) trains with and (b), (c) copy
        (from the first class up its MRO that spells ``optimizer`` out: LlamaCausalLMTask takes
        CausalLMTask's through ``**kwargs``)."""
        params = (inspect.signature(cls).parameters for cls in self.task.__mro__)
        return next(p["optimizer"].default for p in params if "optimizer" in p)


@dataclass
class Setup:
    """What one family's runs share, prepared once and untimed."""

    family: Family
    shape: Shape
    tokenizer: TokenizerSpec  # the family's, at the shape's vocabulary size, trained and saved to its path
    data: BundledCorpus
    log_dir: str


@dataclass
class Measurements:
    """One family's figures over all rounds."""

    tps: dict[str, list[float]] = field(default_factory=dict)  # per round: timed tokens / timed seconds
    trained: dict[str, tuple[type, type]] = field(default_factory=dict)  # (network, optimizer) classes
    step_seconds: dict[str, list[float]] = field(default_factory=dict)  # every timed step, all rounds
    loss_diffs: list[float] = field(default_factory=list)  # per round: max |loss(a) - loss(b)|
    lightning_threads: set[int] = field(default_factory=set)


class StepTimer(L.Callback):
    """Records the time, the loss and the torch thread count at the end of every optimizer step,
    and the classes of the network and optimizer being trained."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.losses: list[torch.Tensor] = []
        self.threads = 0
        self.network: type[nn.Module] | None = None
        self.optimizer: type[torch.optim.Optimizer] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.network, self.optimizer = type(pl_module.net), type(trainer.optimizers[0])

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.ends.append(time.perf_counter())
        self.losses.append(outputs["loss"].detach())
        self.threads = torch.get_num_threads()


def timed_step_seconds(ends: list[float], warmup: int) -> list[float]:
    """Durations of the steps after the first ``warmup`` ones, from step-end timestamps."""
    return [end - start for start, end in zip(ends[warmup - 1 :], ends[warmup:])]


# -- setup (untimed) ------------------------------------------------------------------------
def data_module(spec: TokenizerSpec, shape: Shape) -> BundledCorpus:
    """The corpus every variant reads, as ``--data lmforge.data.BundledCorpus`` builds it."""
    return BundledCorpus(tokenizer=spec, seq_len=shape.seq_len, batch_size=shape.batch_size,
                         max_documents=shape.max_documents)


def prepare(family: Family, shape: Shape, folder: Path) -> Setup:
    """Train the family's tokenizer once (so no timed run repeats it) and prepare its data."""
    path = folder / f"{family.name}-tokenizer.json"
    spec = dataclasses.replace(family.tokenizer, vocab_size=shape.vocab_size)
    data_module(spec, shape).tokenizer.save(path)
    spec = dataclasses.replace(spec, path=str(path))
    data = data_module(spec, shape)
    if data.vocab_size != shape.vocab_size:
        raise RuntimeError(f"The {family.name} tokenizer has {data.vocab_size} tokens, expected {shape.vocab_size}.")
    data.objective = family.objective()
    data.setup("fit")
    return Setup(family, shape, spec, data, str(folder / "logs"))


def train_batches(setup: Setup) -> DataLoader:
    """The batches (a) trains on: the data module's train_dataloader with a fresh objective,
    so a run of (b) or (c) draws the same masks as the task's own objective does in (a)."""
    objective = setup.family.objective()
    objective.bind(setup.data.tokenizer)
    setup.data.objective = objective
    return setup.data.train_dataloader()


# -- (a): lmforge fit ------------------------------------------------------------------------
def _cli_value(value: Any) -> str:
    """A config value as a command-line argument: lists as JSON, the rest as written."""
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def run_lmforge_fit(setup: Setup, total_steps: int, extra_args: dict[str, Any] | None = None) -> Run:
    """(a): ``lmforge fit`` in-process with the family's task and model_args (updated by ``extra_args``)."""
    timer_path = f"{StepTimer.__module__}.{StepTimer.__qualname__}"
    task = setup.family.task
    spec, shape = setup.tokenizer, setup.shape
    config = {**setup.family.model_args(shape), **(extra_args or {})}
    corpus = [] if shape.max_documents is None else ["--data.max_documents", str(shape.max_documents)]
    args = [
        "fit",
        "--seed_everything", str(SEED),
        "--model", f"lmforge.tasks.{task.__qualname__}",
        *(arg for key, value in config.items() for arg in (f"--model.config.{key}", _cli_value(value))),
        "--model.config.dropout", "0.0",
        "--data", "lmforge.data.BundledCorpus",
        *corpus,
        "--data.tokenizer.path", spec.path,
        "--data.tokenizer.kind", spec.kind,
        "--data.tokenizer.specials", spec.specials,
        "--data.tokenizer.vocab_size", str(spec.vocab_size),
        "--data.seq_len", str(shape.seq_len),
        "--data.batch_size", str(shape.batch_size),
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.precision", "32-true",
        "--trainer.max_steps", str(total_steps),
        "--trainer.gradient_clip_val", str(CLIP),
        "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.logger.save_dir", setup.log_dir,
        "--checkpoint.save_last", "false",
        "--checkpoint.save_top_k", "0",
        "--sample.enabled", "false",
        f"--trainer.callbacks+={timer_path}",
    ]
    cli = LmforgeCLI(args=args)
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, StepTimer))
    return Run(timer.ends, timer.losses, timer.network, timer.optimizer, timer.threads)


# -- (b) and (c): a hand-written loop around a model ----------------------------------------
def run_loop(build: Callable[[Setup, OptimizerConfig], LoopModel], setup: Setup, total_steps: int) -> Run:
    """(b) and (c): seed, build the model, then a plain training loop with the task's schedule."""
    o = setup.family.optim
    torch.manual_seed(SEED)
    model, optimizer, loss_fn = build(setup, o)
    decay_steps = o.decay_steps or total_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(o.warmup_steps, decay_steps, o.min_lr_ratio))
    model.train()
    run = Run([], [], type(model), type(optimizer))
    for _, batch in zip(range(total_steps), train_batches(setup)):
        loss = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        run.ends.append(time.perf_counter())
        run.losses.append(loss.detach())
    return run


def lmforge_adamw(model: nn.Module, o: OptimizerConfig) -> torch.optim.Optimizer:
    """lmforge's AdamW param groups (no decay on norms, biases, embeddings)."""
    return build_optimizer(model, o)


def plain_adamw(model: nn.Module, o: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW on all parameters, as one would train a Hugging Face model."""
    return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def gpt_loop(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(b) GPT: lmforge's GPT and its next-token loss (``net.loss``, the head fused with the
    cross-entropy, as ``CausalLMTask`` trains; Hugging Face's models take ``labels=`` alike)."""
    s = setup.shape
    net = GPT(GPTConfig(vocab_size=s.vocab_size, max_seq_len=s.seq_len, dropout=0.0, **s.core))

    def loss_fn(batch: Batch) -> torch.Tensor:
        return net.loss(batch["input_ids"], batch["targets"])

    return net, lmforge_adamw(net, o), loss_fn


def hf_gpt2(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(c) GPT: Hugging Face GPT-2 of the same shape on the same input tensors."""
    s = setup.shape
    config = GPT2Config(
        vocab_size=s.vocab_size,
        n_positions=s.seq_len,
        n_embd=s.d_model,
        n_layer=s.n_layer,
        n_head=s.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        use_cache=False,
        attn_implementation="sdpa",
    )
    model = GPT2LMHeadModel(config)

    def loss_fn(batch: Batch) -> torch.Tensor:
        ids = batch["input_ids"]
        return model(input_ids=ids, labels=ids).loss

    return model, plain_adamw(model, o), loss_fn


def llama_config(shape: Shape) -> LlamaConfig:
    """The Llama of (a), (b) and (c): the shape's sizes, every other field LlamaConfig's default."""
    return LlamaConfig(vocab_size=shape.vocab_size, max_seq_len=shape.seq_len, dropout=0.0, **shape.llama)


def llama_loop(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(b) Llama: lmforge's Llama and its next-token loss (``net.loss``, as for GPT)."""
    net = Llama(llama_config(setup.shape))

    def loss_fn(batch: Batch) -> torch.Tensor:
        return net.loss(batch["input_ids"], batch["targets"])

    return net, lmforge_adamw(net, o), loss_fn


def hf_llama(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(c) Llama: Hugging Face LlamaForCausalLM with the config ``lmforge export`` writes for (b)'s
    network (same sizes, RoPE theta, RMSNorm epsilon, tied head), SDPA attention."""
    hf = ADAPTERS["llama"].config_to_hf(llama_config(setup.shape), {})
    model = LlamaForCausalLM(HFLlamaConfig(**hf, use_cache=False, attn_implementation="sdpa"))

    def loss_fn(batch: Batch) -> torch.Tensor:
        ids = batch["input_ids"]
        return model(input_ids=ids, labels=ids).loss

    return model, plain_adamw(model, o), loss_fn


def bert_loop(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(b) BERT: lmforge's Bert with sparse prediction, as ``MaskedLMTask`` computes its loss."""
    s = setup.shape
    net = Bert(BertConfig(vocab_size=s.vocab_size, max_seq_len=s.seq_len, dropout=0.0, **s.core))

    def loss_fn(batch: Batch) -> torch.Tensor:
        # packed MLM blocks have no padding, so no attention mask (None): as MaskedLMTask._step
        hidden = net.encode(batch["input_ids"], batch.get("attention_mask"))
        selected = batch["labels"] != IGNORE  # (B, T)
        return F.cross_entropy(net.mlm_logits(hidden[selected]), batch["labels"][selected])

    return net, lmforge_adamw(net, o), loss_fn


def hf_bert(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(c) BERT: Hugging Face BertForMaskedLM of the same shape; it projects every position."""
    s = setup.shape
    config = HFBertConfig(
        vocab_size=s.vocab_size,
        hidden_size=s.d_model,
        num_hidden_layers=s.n_layer,
        num_attention_heads=s.n_head,
        intermediate_size=4 * s.d_model,
        max_position_embeddings=s.seq_len,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="sdpa",
    )
    model = BertForMaskedLM(config)

    def loss_fn(batch: Batch) -> torch.Tensor:
        # no mask on packed blocks: HF attends to every position, as lmforge does
        return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                     labels=batch["labels"]).loss

    return model, plain_adamw(model, o), loss_fn


def t5_loop(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(b) T5: lmforge's T5 and the cross-entropy of every target token."""
    s = setup.shape
    net = T5(T5Config(vocab_size=s.vocab_size, max_seq_len=s.seq_len, dropout=0.0, **s.t5))

    def loss_fn(batch: Batch) -> torch.Tensor:
        logits = net(batch["input_ids"], batch["decoder_input_ids"])
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())

    return net, lmforge_adamw(net, o), loss_fn


def hf_t5(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(c) T5: Hugging Face T5ForConditionalGeneration (v1.0: ReLU, tied) of the same shape."""
    s = setup.shape
    config = HFT5Config(
        vocab_size=s.vocab_size,
        d_model=s.d_model,
        d_kv=s.t5["d_kv"],
        d_ff=s.t5["d_ff"],
        num_layers=s.n_layer,
        num_heads=s.n_head,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        use_cache=False,
        attn_implementation="sdpa",
    )
    model = T5ForConditionalGeneration(config)

    def loss_fn(batch: Batch) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"],
                     labels=batch["labels"]).loss

    return model, plain_adamw(model, o), loss_fn


def elmo_loop(setup: Setup, o: OptimizerConfig) -> LoopModel:
    """(b) ELMo: lmforge's Elmo with the task's spelling table and loss (mean of both directions)."""
    s = setup.shape
    net = Elmo(ElmoConfig(vocab_size=s.vocab_size, max_seq_len=s.seq_len, dropout=0.0, **s.elmo))
    with torch.no_grad():
        net.token_chars.copy_(token_char_ids(setup.data.tokenizer, net.config.max_chars))

    def loss_fn(batch: Batch) -> torch.Tensor:
        forward, backward = net(batch["input_ids"])
        return (F.cross_entropy(forward.flatten(0, 1), batch["forward_targets"].flatten())
                + F.cross_entropy(backward.flatten(0, 1), batch["backward_targets"].flatten())) / 2

    return net, lmforge_adamw(net, o), loss_fn


def variants(hf_label: str, hf_name: str, loop: Callable, hf: Callable, ours: type[nn.Module],
             theirs: type[nn.Module]) -> dict[str, Variant]:
    """(a) and (b) train ``ours``, (c) trains ``theirs``."""
    return {
        "a": Variant("(a) lmforge fit (Lightning CLI)", "a_lmforge_fit", run_lmforge_fit, ours),
        "b": Variant("(b) hand-written PyTorch loop", "b_pytorch_loop", functools.partial(run_loop, loop), ours),
        "c": Variant(hf_label, hf_name, functools.partial(run_loop, hf), theirs),
    }


FAMILIES = {
    "gpt": Family(
        name="gpt",
        title="GPT causal LM",
        task=CausalLMTask,
        objective=CausalLM,
        tokenizer=TokenizerSpec(kind="byte_level_bpe", specials="gpt"),
        variants=variants("(c) HF GPT2LMHeadModel (sdpa)", "c_hf_gpt2_sdpa", gpt_loop, hf_gpt2, GPT, GPT2LMHeadModel),
        targets={"a_over_b": 0.97, "a_over_c": 2.0},
    ),
    "bert": Family(
        name="bert",
        title="BERT masked LM",
        task=MaskedLMTask,
        objective=MaskedLM,  # MaskedLMTask's defaults: mask_prob 0.15, single pieces, seed 0
        tokenizer=TokenizerSpec(kind="wordpiece", specials="bert"),
        variants=variants("(c) HF BertForMaskedLM (sdpa)", "c_hf_bert_sdpa", bert_loop, hf_bert, Bert, BertForMaskedLM),
        targets={"a_over_c": 1.5},
    ),
    "t5": Family(
        name="t5",
        title="T5 span corruption",
        task=SpanCorruptionTask,
        objective=SpanCorruption,  # SpanCorruptionTask's defaults: density 0.15, mean span 3, seed 0
        tokenizer=TokenizerSpec(kind="unigram", specials="t5"),
        variants=variants("(c) HF T5ForConditionalGeneration (sdpa)", "c_hf_t5_sdpa", t5_loop, hf_t5, T5,
                          T5ForConditionalGeneration),
        targets={"a_over_c": 1.2},
        model_args=lambda shape: shape.t5,
    ),
    "elmo": Family(
        name="elmo",
        title="ELMo bidirectional LM (char CNN; (c): subword embeddings)",
        task=ElmoTask,
        objective=BidirectionalLM,
        tokenizer=TokenizerSpec(kind="bpe", specials="elmo"),
        variants={
            "a": Variant("(a) lmforge fit, char CNN", "a_lmforge_fit", run_lmforge_fit, Elmo),
            "b": Variant("(b) hand-written loop, char CNN", "b_pytorch_loop", functools.partial(run_loop, elmo_loop),
                         Elmo),
            "c": Variant("(c) lmforge fit, subword embeddings", "c_lmforge_fit_embedding", functools.partial(
                run_lmforge_fit, extra_args={"token_repr": "embedding"}), Elmo),
        },
        targets={},
        model_args=lambda shape: shape.elmo,
    ),
    "llama": Family(
        name="llama",
        title="Llama causal LM",
        task=LlamaCausalLMTask,
        objective=CausalLM,
        tokenizer=TokenizerSpec(kind="byte_level_bpe", specials="gpt"),
        variants=variants("(c) HF LlamaForCausalLM (sdpa)", "c_hf_llama_sdpa", llama_loop, hf_llama, Llama,
                          LlamaForCausalLM),
        targets={"a_over_b": 0.97, "b_over_c": 1.05},
        model_args=lambda shape: shape.llama,
    ),
}


# -- measuring and reporting -----------------------------------------------------------------
def run_round(setup: Setup, meas: Measurements, r: int, args: argparse.Namespace) -> None:
    """One round of a family: every variant once, in an order rotated by the round number."""
    keys = list(setup.family.variants)
    shift = r % len(keys)
    total = args.warmup + args.steps
    losses: dict[str, list[torch.Tensor]] = {}
    for key in keys[shift:] + keys[:shift]:
        variant = setup.family.variants[key]
        gc.collect()
        run = variant.run(setup, total)
        if len(run.ends) != total:
            raise RuntimeError(f"{variant.label} ran {len(run.ends)} steps, expected {total}.")
        if (run.network, run.optimizer) != (variant.network, torch.optim.AdamW):
            raise RuntimeError(f"{variant.label} trained a {run.network} with {run.optimizer}, expected a "
                               f"{variant.network} with AdamW.")
        meas.trained[key] = (run.network, run.optimizer)
        if run.threads is not None:
            meas.lightning_threads.add(run.threads)
        seconds = timed_step_seconds(run.ends, args.warmup)
        meas.step_seconds.setdefault(key, []).extend(seconds)
        meas.tps.setdefault(key, []).append(len(seconds) * setup.shape.tokens_per_step / sum(seconds))
        losses[key] = run.losses
        print(f"{setup.family.name} round {r + 1}/{args.rounds} {variant.label:<34} "
              f"{meas.tps[key][-1]:8.0f} tokens/s", flush=True)
    meas.loss_diffs.append(float((torch.stack(losses["a"]) - torch.stack(losses["b"])).abs().max()))


def ratio_report(per_variant: dict[str, float]) -> dict[str, float]:
    """(a) against each other variant, (a)/(b) and (a)/(c), and the network alone against its
    peer, (b)/(c)."""
    ratios = {f"a_over_{key}": per_variant["a"] / value for key, value in per_variant.items() if key != "a"}
    return {**ratios, "b_over_c": per_variant["b"] / per_variant["c"]}


def report(family: Family, shape: Shape, meas: Measurements, args: argparse.Namespace) -> dict[str, Any]:
    """Print the family's table and ratios; return its section of the JSON line."""
    tokens_per_step = shape.tokens_per_step
    median = {key: statistics.median(values) for key, values in meas.tps.items()}
    typical = {key: tokens_per_step / statistics.median(values) for key, values in meas.step_seconds.items()}
    ratios, typical_ratios = ratio_report(median), ratio_report(typical)
    # a smoke run judges nothing: its shape is not the one the targets are for
    met = {name: None if args.smoke else ratios[name] >= target for name, target in family.targets.items()}

    print()
    shape_name = "smoke" if args.smoke else args.shape
    print(f"{family.title}: training tokens/s at {tokens_per_step} tokens/step ({shape_name} shape), "
          f"{torch.get_num_threads()} threads; "
          f"{args.rounds} round(s) of {args.steps} timed steps after {args.warmup} warmup"
          f"{'; SMOKE RUN (tiny shape): the figures are not meaningful' if args.smoke else ''}")
    print(f"{'variant':<34} {'median':>8} {'ms/step':>8} {'typical':>8}  per round")
    for key, variant in family.variants.items():
        rounds = " ".join(f"{v:.0f}" for v in meas.tps[key])
        print(f"{variant.label:<34} {median[key]:8.0f} {1000 * tokens_per_step / median[key]:8.1f} "
              f"{typical[key]:8.0f}  {rounds}")
    print("median: median over rounds of each round's timed tokens / timed seconds (the figure judged);")
    print("typical: tokens / median step time over all rounds (robust to load bursts, blind to periodic overhead)")
    for name, ratio in ratios.items():
        label = "(" + name.replace("_over_", ")/(") + ")"
        verdict = ""
        if name in family.targets:
            judged = "not judged (smoke)" if met[name] is None else "MET" if met[name] else "NOT MET"
            verdict = f"   target >= {family.targets[name]}: {judged}"
        print(f"{label} = {ratio:.3f} (typical {typical_ratios[name]:.3f}){verdict}")
    print(f"max |loss(a) - loss(b)| over all steps: {max(meas.loss_diffs):.2e} (same weights, batches and updates)")

    names = {key: variant.json_name for key, variant in family.variants.items()}
    spec = family.tokenizer
    return {
        "task": f"lmforge.tasks.{family.task.__qualname__}",
        "tokenizer": {"kind": spec.kind, "specials": spec.specials, "vocab_size": shape.vocab_size},
        "shape": {"vocab_size": shape.vocab_size, **family.model_args(shape), "seq_len": shape.seq_len,
                  "batch_size": shape.batch_size, "max_documents": shape.max_documents, "dropout": 0.0,
                  "precision": "fp32"},
        "tokens_per_step": tokens_per_step,
        "tokens_per_sec": {names[key]: {"median": median[key], "rounds": meas.tps[key]} for key in names},
        "trained": {names[key]: {"network": network.__name__, "optimizer": optimizer.__name__}
                    for key, (network, optimizer) in meas.trained.items()},
        "ratios": ratios,
        "targets": {name: {"min": target, "met": met[name]} for name, target in family.targets.items()},
        "tokens_per_sec_typical_step": {names[key]: typical[key] for key in names},
        "ratios_typical_step": typical_ratios,
        "loss_max_abs_diff_a_b": max(meas.loss_diffs),
        "threads_inside_lightning": sorted(meas.lightning_threads),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="all", help="which family to measure")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps per variant and round (default 10; smoke 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed optimizer steps before them, at least 1 (default 2; smoke 1)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds of (a), (b), (c) (default 3; smoke 1)")
    parser.add_argument("--shape", choices=list(SHAPES), default="default",
                        help="default: vocab 8192, 4 layers, width 256, sequence 256, batch 8; quickstart: "
                             "configs/quickstart.yaml's network, sequence, "
                             "batch and vocabulary")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shape, 1 round of 1 + 2 steps, no target judged: the plumbing only (seconds)")
    args = parser.parse_args(argv)
    steps, warmup, rounds = (2, 1, 1) if args.smoke else (10, 2, 3)
    args.steps = steps if args.steps is None else args.steps
    args.warmup = warmup if args.warmup is None else args.warmup
    args.rounds = rounds if args.rounds is None else args.rounds
    if args.steps < 1 or args.warmup < 1 or args.rounds < 1:
        parser.error("--steps, --warmup and --rounds must be at least 1")
    return args


def quiet() -> None:
    """Silence setup chatter (Lightning's info lines, the num_workers hint, HF config notes)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    transformers.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet()
    shape = SMOKE if args.smoke else SHAPES[args.shape]()
    if args.smoke:
        print("SMOKE RUN: tiny shape, a few steps -- checks that every variant runs; the figures are not meaningful",
              flush=True)
    families = list(FAMILIES.values()) if args.family == "all" else [FAMILIES[args.family]]
    meas = {family.name: Measurements() for family in families}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        setups = [prepare(family, shape, Path(tmp)) for family in families]
        for r in range(args.rounds):
            for setup in setups:
                run_round(setup, meas[setup.family.name], r, args)
    sections = {family.name: report(family, shape, meas[family.name], args) for family in families}

    summary = {
        "benchmark": "training_throughput_cpu",
        "smoke": args.smoke,
        "families": list(sections),
        "shape_name": "smoke" if args.smoke else args.shape,
        "rounds": args.rounds,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        **sections,
        "versions": {"torch": torch.__version__, "lightning": L.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "threads": {"torch": torch.get_num_threads()},
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
