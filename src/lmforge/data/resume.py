"""Exact mid-epoch resume of a corpus's training data, through Lightning's checkpoints.

:class:`DataPosition` is what a corpus saves in every checkpoint and restores from one: the
sampler's epoch and position (prepared shards, in-memory examples) or each sub-stream's
position (streaming), and the data's :func:`identity`, which a resumed run must share.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from lmforge.data.sampler import ResumableSampler
from lmforge.distributed import gather_objects
from lmforge.errors import UserError


def identity(corpus: str, seq_len: int, seed: int, train_set: Dataset | None) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint: the corpus, the sequence length, the
    seed of split and order and, when given, a digest of the training examples (their number
    and a sample of their tokens; the paths do not count, so a moved corpus still resumes).

    Args:
        corpus: The corpus class's name.
        seq_len: Tokens per example.
        seed: Seed of the split and the order.
        train_set: The training examples; ``None`` when streaming (a stream has no length).
    """
    ident: dict[str, Any] = {"corpus": corpus, "seq_len": seq_len, "seed": seed}
    if train_set is not None:
        ident["examples"] = digest(train_set)
    return ident


def digest(dataset: Dataset) -> str:
    """A short hash of a dataset's length and of 16 of its items, spread over it.

    Args:
        dataset: Items that are arrays or picklable.
    """
    h = hashlib.sha256(str(len(dataset)).encode())
    for i in sorted({int(j) for j in np.linspace(0, len(dataset) - 1, 16)} if len(dataset) else set()):
        item = dataset[i]
        h.update(np.ascontiguousarray(item).tobytes() if isinstance(item, np.ndarray) else pickle.dumps(item))
    return h.hexdigest()[:16]


def start_data_afresh(checkpoint: dict[str, Any]) -> None:
    """Mark the data positions in a Lightning checkpoint so that each corpus restored from it
    starts its training data from the beginning, without comparing identities: a new training
    stage, perhaps on other data.

    Args:
        checkpoint: The loaded checkpoint, before its data module is restored.
    """
    for state in checkpoint.values():
        if isinstance(state, dict) and "identity" in state:  # what DataPosition.state_dict saves
            state["afresh"] = True


class DataPosition:
    """Where a corpus's training data stands, saved in checkpoints and restored from them.

    The corpus asks it for the training sampler (:meth:`sampler_for`) and for the stream's
    restart positions (:meth:`stream_resume`): restored state applies to the first loader built
    after :meth:`load_state_dict`.
    """

    def __init__(self) -> None:
        self.sampler: ResumableSampler | None = None
        self.pending: dict[str, Any] = {}  # restored state the next loader starts from
        # sub-stream -> where it goes on: (document, offset), or a mixture's position and its sources'
        self.stream_positions: dict[int, tuple[int, ...]] = {}
        self.first_batch = (-1, 0)  # (epoch, batch) where the sampler's iteration began on resume
        self.last_stream = -1  # the sub-stream of the last streamed batch

    def sampler_for(self, num_items: int, world_size: int, rank: int, seed: int,
                    kind: type[ResumableSampler] = ResumableSampler) -> ResumableSampler:
        """The training sampler of this rank, continuing where a restored checkpoint stopped.

        Args:
            num_items: Examples in the training set.
            world_size: Number of ranks.
            rank: This rank.
            seed: Seed of the order.
            kind: The sampler's class (a mixture's numbers its positions instead of shuffling).
        """
        self.sampler = kind(num_items, world_size, rank, shuffle=True, seed=seed)
        if "sampler" in self.pending:
            self.sampler.load_state_dict(self.pending.pop("sampler"))
        return self.sampler

    def resume_stream(self, dataset: Any, rank: int) -> None:
        """Give a stream (``resume_from``, ``rotation``) each sub-stream's restored position and the
        sub-stream whose turn it was on this rank; nothing when not resuming.

        Args:
            dataset: A stream of blocks (:class:`~lmforge.data.streaming.StreamingBlocks`, a mixture's).
            rank: This process's rank.
        """
        dataset.resume_from = self.pending.pop("stream", {})
        dataset.rotation = self.pending.pop("rotation", {}).get(rank, 0)

    def track(self, batch: Any) -> Any:
        """Note a streamed batch's position and remove it from the batch (the model has no use for it).

        Args:
            batch: A batch, before it moves to the device.
        """
        if isinstance(batch, dict) and "stream_position" in batch:
            stream, *position = batch.pop("stream_position").tolist()
            self.stream_positions[stream] = tuple(position)
            self.last_stream = stream
        return batch

    def sample_ids(self, batch_idx: int, batch_size: int) -> list[int] | None:
        """The indices of training batch ``batch_idx`` of the current epoch on this rank; ``None``
        without a sampler (streaming).

        Args:
            batch_idx: The batch's index in the epoch, as Lightning counts it.
            batch_size: Examples per batch.
        """
        if self.sampler is None:
            return None
        first = self.first_batch if self.first_batch[0] == self.sampler.epoch else (self.sampler.epoch, 0)
        start = (batch_idx - first[1]) * batch_size  # the iteration began at batch first[1] (a resume)
        return self.sampler.order[start : start + batch_size]

    def state_dict(self, identity: dict[str, Any], batches_done: int, batch_size: int, streaming: bool,
                   streams: int) -> dict[str, Any]:
        """The position to save: the sampler's, or every rank's sub-streams' (gathered: every
        rank saves, rank 0 writes); and the data's identity.

        Args:
            identity: The data's :func:`identity`.
            batches_done: Training batches of this epoch already processed.
            batch_size: Examples per batch.
            streaming: Whether the training data is a stream.
            streams: Sub-streams in all (ranks x workers).
        """
        state: dict[str, Any] = {"identity": identity}
        if self.sampler is not None:
            state.update(sampler=self.sampler.state_dict(batches_done * batch_size), batches=batches_done)
        elif streaming:
            parts = gather_objects((dict(self.stream_positions), self.last_stream))
            positions = {k: v for part, _ in parts for k, v in part.items()}
            workers = streams // len(parts)
            # each rank's next batch comes from the sub-stream after its last one's
            rotation = {rank: (last % workers + 1) % workers for rank, (_, last) in enumerate(parts) if last >= 0}
            state.update(stream=positions, streams=streams, rotation=rotation)
        return state

    def load_state_dict(self, state: dict[str, Any], identity: dict[str, Any], streams: int, world_size: int) -> None:
        """Refuse a checkpoint of other data, else keep its position for the next loader.

        Args:
            state: What :meth:`state_dict` saved.
            identity: This run's :func:`identity`.
            streams: This run's sub-streams in all (ranks x workers).
            world_size: This run's number of ranks.
        """
        for key, value in state.get("identity", {}).items() if not state.get("afresh") else ():
            if key in identity and identity[key] != value:
                differs = (f"{key} {value}, this run has {identity[key]}" if key != "examples" else
                           "training examples (their number or their tokens) than this run's")
                raise UserError(
                    f"The checkpoint was trained on other data ({differs}): resume with the same data settings "
                    "and corpus, start a new training stage on this data from it with a higher "
                    "`--model.optimizer.stage`, or a new run from its weights with `--model.init_from`."
                )
        # Lightning cannot see that the data module resumes the loader itself
        warnings.filterwarnings("ignore", message=".*ended before the epoch ended and your dataloader is not resumable")
        if state.get("afresh"):  # the data from its start, Lightning's batch count goes on: sample_ids count from there
            self.first_batch = (state["sampler"]["epoch"], state.get("batches", 0)) if "sampler" in state else (-1, 0)
            return
        if "stream" in state:
            if state["streams"] != streams:
                raise UserError(
                    f"The checkpoint streamed its data as {state['streams']} sub-streams (devices x num_workers), "
                    f"this run as {streams}: resume with the same number of devices and `num_workers`."
                )
            self.pending["stream"] = {int(k): tuple(v) for k, v in state["stream"].items()}
            self.pending["rotation"] = {int(k): v for k, v in state.get("rotation", {}).items()}
            self.stream_positions = dict(self.pending["stream"])
        elif "sampler" in state:
            sampler = state["sampler"]
            self.pending["sampler"] = sampler
            self.first_batch = (sampler["epoch"], state.get("batches", 0))
            if sampler.get("num_replicas", world_size) != world_size:
                rank_zero_info(f"Resuming on {world_size} processes a run of {sampler['num_replicas']}: the data "
                               "continues where it stopped, each example of the epoch read once.")
