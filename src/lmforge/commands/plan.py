"""``lmforge plan``: size a run from a compute budget or a model size, with a fitted scaling law."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from jsonargparse import CLI

from lmforge.callbacks.throughput import GPU_PEAK_BF16, GPU_PEAK_PCIE
from lmforge.commands.messages import LmforgeParser
from lmforge.errors import UserError, did_you_mean
from lmforge.scaling import DECODER_FAMILIES, DEFAULT_FIT, FITS, TOKENS_PER_PARAM_RULE, human, training_flops

# --gpu's names (``h100-pcie`` style) -> (name, dense bf16 peak FLOP/s of ThroughputMonitor's table, vendors' data sheets)
GPUS: dict[str, tuple[str, float]] = {name.lower().replace(" ", "-"): (name, peak)
                                      for table in (GPU_PEAK_PCIE, GPU_PEAK_BF16) for name, peak in table.items()}
FITTED_RANGE = (7e7, 1.6e10)  # the sizes of Hoffmann et al.'s runs (70 M to 16 B parameters)
ENCODER_NOTE = ("Encoders (BERT, RoBERTa, T5, ELMo): the fit is of a decoder's next-token loss, and a masked LM "
                "predicts only 15% of its tokens, so use these numbers as an order of magnitude only.")


@dataclass(frozen=True)
class Device:
    """What one device sustains: its peak FLOP/s times the model FLOPs utilisation (MFU).

    Args:
        name: The device's name, for the output.
        peak: Its peak FLOP/s.
        mfu: The share of the peak a run sustains.
    """

    name: str
    peak: float
    mfu: float

    @property
    def flops_per_sec(self) -> float:
        return self.peak * self.mfu


def checkout_configs() -> Path | None:
    """``configs/`` of the working folder, else of lmforge's checkout (an editable install); None if neither."""
    for folder in (Path("configs"), Path(__file__).resolve().parents[3] / "configs"):
        if folder.is_dir():
            return folder
    return None


@functools.cache
def decoder_presets(configs: Path) -> dict[str, int]:
    """``{"gpt/small": 124439808, ...}``: each decoder preset's parameters, counted as the preset
    tests count them (its network on the meta device, vocabulary and positions from its data).

    Args:
        configs: The ``configs/`` folder.
    """
    import torch

    from lmforge.start import import_class

    counts = {}
    for family in DECODER_FAMILIES:
        for path in sorted((configs / family).glob("*.yaml")):
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            network = import_class(config["model"]["class_path"]).network
            data = config["data"]["init_args"]
            shape = {**config["model"]["init_args"]["config"], "vocab_size": data["tokenizer"]["vocab_size"],
                     "max_seq_len": data["seq_len"]}
            with torch.device("meta"):
                counts[f"{family}/{path.stem}"] = network(network.config_class(**shape)).num_params()
    return counts


def _positive(**values: float | None) -> None:
    """Refuse the first given value that is not positive."""
    for key, value in values.items():
        if value is not None and not value > 0:
            raise UserError(f"--{key} {value:g} must be positive.")


def _device(gpu: str | None, peak_flops: float | None, mfu: float, fit: str) -> Device | None:
    """The device of ``--gpu`` (or ``--peak_flops``) at ``--mfu``; None when neither is given.
    (``--fit`` is checked here too, with the other names.)"""
    if fit not in FITS:
        raise UserError(f"Unknown --fit '{fit}': {did_you_mean(fit, FITS)}")
    if gpu is not None and peak_flops is not None:
        raise UserError(f"--gpu {gpu} and --peak_flops both give the device's peak: keep one.")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu {mfu:g} is a fraction of the peak: give a value in (0, 1], e.g. 0.4.")
    if gpu is not None:
        name = gpu.lower()
        if name not in GPUS:
            raise UserError(f"Unknown --gpu '{gpu}': {did_you_mean(name, GPUS)} (or give --peak_flops).")
        return Device(*GPUS[name], mfu)
    return Device("a device", peak_flops, mfu) if peak_flops is not None else None


def _budget(flops: float | None, gpu_hours: float | None, device: Device | None) -> tuple[float | None, str]:
    """The budget in FLOPs, from ``--flops`` or from ``--gpu_hours`` on ``device``, and where it comes from."""
    if flops is not None and gpu_hours is not None:
        raise UserError("--flops and --gpu_hours both give the budget: keep one.")
    if gpu_hours is None:
        return flops, "--flops"
    if device is None:
        raise UserError(f"--gpu_hours {gpu_hours:g} needs the device: add --gpu (e.g. h100) or --peak_flops.")
    return gpu_hours * 3600 * device.flops_per_sec, f"{_hours(gpu_hours)} GPU-hours of {_sustained(device)}"


def _hours(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def _sustained(device: Device) -> str:
    return f"{device.name} at {device.peak / 1e12:g} TFLOP/s peak x MFU {device.mfu:g}"


def _configs_folder(configs: str | None) -> Path | None:
    """``--configs``, else :func:`checkout_configs`."""
    if configs is None:
        return checkout_configs()
    if not Path(configs).is_dir():
        raise UserError(f"--configs '{configs}' is not a folder: give lmforge's configs/ folder.")
    return Path(configs)


def _preset_params(preset: str | None, params: float | None, configs: Path | None) -> float | None:
    """``--params``, or the parameters of ``--preset``."""
    if preset is None:
        return params
    if params is not None:
        raise UserError(f"--preset {preset} and --params both give the model's size: keep one.")
    presets = decoder_presets(configs) if configs is not None else {}
    name = preset.removeprefix("configs/").removesuffix(".yaml")
    if name not in presets:
        raise UserError(f"Unknown --preset '{preset}': {did_you_mean(name, presets)}")
    return float(presets[name])


def size_run(
    flops: float | None = None,
    gpu_hours: float | None = None,
    gpu: str | None = None,
    peak_flops: float | None = None,
    mfu: float = 0.4,
    params: float | None = None,
    preset: str | None = None,
    fit: str = DEFAULT_FIT,
    batch_size: int = 8,
    seq_len: int = 1024,
    devices: int = 1,
    accumulate_grad_batches: int = 1,
    original_tokens: float | None = None,
    configs: str | None = None,
) -> None:
    """Size a decoder's pretraining run: the compute-optimal parameters N and tokens D of a budget C = 6 N D
    (or the tokens and budget of a size) under a fit of ``L(N, D) = E + A / N^alpha + B / D^beta``, the
    predicted loss, the nearest preset, steps and wall-clock. N counts all parameters, embeddings included.

    Args:
        flops: The compute budget C in FLOPs.
        gpu_hours: The budget as GPU-hours (all devices together) of ``gpu`` at ``mfu``.
        gpu: The device: h100 (SXM, 989 TFLOP/s dense bf16, NVIDIA's H100 data sheet), h100-pcie (756),
            h200 (989), a100 (312, NVIDIA's A100 data sheet), l40s, l4, a10g, rtx-4090, v100, t4, ...
        peak_flops: A device's peak FLOP/s, for one not in ``gpu``'s list.
        mfu: Model FLOPs utilisation: the share of the peak a run sustains (0.3 to 0.5 is typical).
        params: The model's size N; with a budget, its tokens are ``C / (6 N)``.
        preset: A decoder preset for N, e.g. ``gpt/small`` (``configs/gpt/small.yaml``).
        fit: The fit: besiroglu (Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", the
            default) or chinchilla (Hoffmann et al. 2022, approach 3).
        batch_size: Sequences per step on one device (``data.batch_size``).
        seq_len: Tokens per sequence (``data.seq_len``).
        devices: Devices in data parallel (all nodes together).
        accumulate_grad_batches: Batches accumulated into one optimizer step.
        original_tokens: For continued pretraining: the tokens the original run trained on.
        configs: The folder of lmforge's presets (default: ``configs/`` here, else lmforge's checkout).
    """
    _positive(flops=flops, gpu_hours=gpu_hours, peak_flops=peak_flops, params=params, batch_size=batch_size,
              seq_len=seq_len, devices=devices, accumulate_grad_batches=accumulate_grad_batches,
              original_tokens=original_tokens)
    device = _device(gpu, peak_flops, mfu, fit)
    budget, source = _budget(flops, gpu_hours, device)
    folder = _configs_folder(configs)
    size = _preset_params(preset, params, folder)
    if budget is None and size is None:
        raise UserError("Nothing to plan: give a budget (--flops, or --gpu_hours with --gpu) or a size "
                        "(--params or --preset).")
    if budget is None:
        budget, source = FITS[fit].optimal_flops(size), "at which N is compute-optimal"
    n = size if size is not None else FITS[fit].optimal_params(budget)
    step_tokens = batch_size * seq_len * devices * accumulate_grad_batches
    if budget < training_flops(n, step_tokens):
        raise UserError(f"The budget of {budget:.3g} FLOPs ({source}) is less than one step of {human(n)} parameters "
                        f"on {step_tokens:,} tokens ({training_flops(n, step_tokens):.3g} FLOPs): raise it or lower "
                        "--batch_size/--seq_len.")
    print("\n".join([f"Budget: {budget:.3g} FLOPs ({source}; C = 6 N D).",
                     *_report(budget, n, fit, step_tokens, device, gpu_hours, devices, original_tokens, folder)]))


def _report(budget: float, n: float, fit: str, step_tokens: int, device: Device | None, gpu_hours: float | None,
            devices: int, original_tokens: float | None, configs: Path | None) -> list[str]:
    """The lines ``lmforge plan`` prints."""
    law = FITS[fit]
    d = budget / (6 * n)
    n_opt, d_opt = law.optimal_params(budget), law.optimal_tokens(budget)
    n_rule = math.sqrt(budget / (6 * TOKENS_PER_PARAM_RULE))
    other = "chinchilla" if fit == "besiroglu" else "besiroglu"
    lines = [
        f"Fit: {law.source}{', the default' if fit == DEFAULT_FIT else ''} (--fit {other}: {FITS[other].source}): "
        f"L(N, D) = {law.E:g} + {law.A:g} / N^{law.alpha:g} + {law.B:g} / D^{law.beta:g}, N counting all "
        "parameters, embeddings included.",
        f"Compute-optimal:      N = {human(n_opt)} parameters, D = {human(d_opt)} tokens "
        f"({d_opt / n_opt:.3g} tokens/parameter), predicted loss {law.loss(n_opt, d_opt):.3f}.",
        f"{TOKENS_PER_PARAM_RULE} tokens/parameter:  N = {human(n_rule)} parameters, "
        f"D = {human(TOKENS_PER_PARAM_RULE * n_rule)} tokens, predicted loss "
        f"{law.loss(n_rule, TOKENS_PER_PARAM_RULE * n_rule):.3f} (the rule of thumb).",
    ]
    if not math.isclose(n, n_opt, rel_tol=1e-9):
        lines.append(f"This model:           N = {human(n)} parameters, D = {human(d)} tokens "
                     f"({d / n:.3g} tokens/parameter), predicted loss {law.loss(n, d):.3f}.")
    if not FITTED_RANGE[0] <= n <= FITTED_RANGE[1]:
        lines.append(f"N = {human(n)} is outside the sizes the fit was made on (70 M to 16 B parameters): "
                     "the predicted loss is an extrapolation.")
    presets = decoder_presets(configs) if configs is not None else {}
    if presets:
        name, count = min(presets.items(), key=lambda item: abs(math.log(item[1] / n)))
        lines.append(f"Nearest preset: configs/{name}.yaml ({human(count)} parameters, {count / n:.2g} x N).")
    steps = math.ceil(d / step_tokens)
    lines.append(f"Steps: {steps:,} of {step_tokens:,} tokens (batch_size x seq_len x devices x "
                 "accumulate_grad_batches).")
    lines.append(_wall_clock(budget, device, gpu_hours, devices))
    if original_tokens is not None:
        lines.append(f"Continued pretraining: {human(d)} tokens, {100 * d / original_tokens:.3g}% of the original "
                     f"run's {human(original_tokens)} tokens.")
    lines.append(ENCODER_NOTE)
    return lines


def _wall_clock(budget: float, device: Device | None, gpu_hours: float | None, devices: int) -> str:
    """The wall-clock line: the budget over what the devices sustain."""
    if device is None:
        return "Wall-clock: give the device (--gpu, or --peak_flops) and --mfu to estimate it."
    hours = budget / (device.flops_per_sec * devices) / 3600 if gpu_hours is None else gpu_hours / devices
    return (f"Wall-clock: {_hours(hours)} hours ({hours / 24:.3g} days) on {devices} x {_sustained(device)} "
            f"({_hours(devices * hours)} device-hours).")


def plan(argv: list[str]) -> None:
    """``lmforge plan ...``"""
    CLI(size_run, args=argv, prog="lmforge plan", parser_class=LmforgeParser,
        description="Size a run: compute-optimal parameters and tokens of a budget, steps, wall-clock.")
