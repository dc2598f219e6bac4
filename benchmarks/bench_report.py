"""What every command of ``benchmarks/downstream.py`` (and its ``glue_bench.py``, ``qa_parity.py``)
does around its runs: open the run folder, then print the figures as a markdown block (also
written to ``--out``) and one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def threads_and_notice(a: argparse.Namespace) -> None:
    """Use ``a.threads`` CPU threads; on a smoke run say first that its figures mean nothing.

    Args:
        a: The command's options (``threads``, ``smoke``).
    """
    import torch

    torch.set_num_threads(a.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    if a.smoke:
        print("SMOKE RUN: stand-in model and data, a few steps -- checks that the benchmark runs; "
              "the figures are not meaningful", flush=True)


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a run's TensorBoard event files hold: tag -> ``[(step, value), ...]``.

    Args:
        run: The folder of the event files (a logger's ``version_N``).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def open_run(work: Path, folder: Path, command: str) -> float:
    """Make the run folder (its own lmforge cache inside), say where it is; the start time.

    Args:
        work: The run folder (must not exist).
        folder: The model folder the runs start from.
        command: The command's name, for the line.
    """
    work.mkdir(parents=True)
    os.environ["LMFORGE_CACHE_DIR"] = str(work / "cache")
    print(f"[downstream {command}] {folder} -> {work}", flush=True)
    return time.perf_counter()


def publish(report: list[str], started: float, a: argparse.Namespace, results: dict) -> None:
    """Print the markdown ``report`` with the total time (and write it to ``a.out``), then a JSON line.

    Args:
        report: The markdown lines.
        started: :func:`open_run`'s time.
        a: The command's options (``command``, ``out``), recorded in the JSON line.
        results: Every figure, for the JSON line.
    """
    minutes = (time.perf_counter() - started) / 60
    report += ["", f"Total {minutes:.1f} min."]
    block = "\n".join(report)
    print("\n" + block + "\n")
    if a.out:
        Path(a.out).write_text(block + "\n", encoding="utf-8")
    print(json.dumps({"command": a.command, "minutes": round(minutes, 2), "settings": vars(a), "results": results},
                     default=str))
