"""Prepared token shards: a corpus tokenized once into binary files, read through memory maps.

A prepared corpus is a folder in the cache, named by the corpus and tokenizer fingerprints::

    <cache>/shards/<corpus fingerprint>-<tokenizer fingerprint>/
        meta.json                  written last: the folder is complete iff it exists
        train-00000.bin            header + token ids (uint16, or uint32 for large vocabularies)
        train-00000.docs.npy       int64 end offset of each document in the shard
        val-00000.bin ...

Each document is followed by the tokenizer's end-of-document id, exactly as
:func:`~lmforge.data.packing.concat_documents` lays it out in memory. A shard starts with a
64-byte header (magic, format version, item size, token count, tokenizer fingerprint), so
a truncated file, a file from another tokenizer or another program is refused on load. The
folder is written under a temporary name and renamed into place when complete: an
interrupted prepare never leaves a shard that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from lmforge.data.packing import token_dtype
from lmforge.errors import UserError

MAGIC = b"LMFSHARD"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sHHQ16s")  # magic, version, item size, tokens, tokenizer fingerprint
HEADER_BYTES = 64
DEFAULT_SHARD_TOKENS = 1 << 30  # 2 GiB of uint16 per file
SPLITS = ("train", "val")


def _header(itemsize: int, num_tokens: int, tokenizer_fp: str) -> bytes:
    packed = HEADER.pack(MAGIC, FORMAT_VERSION, itemsize, num_tokens, tokenizer_fp.encode()[:16].ljust(16))
    return packed.ljust(HEADER_BYTES, b"\0")


class ShardWriter:
    """Appends tokenized documents of one split to shard files of at most ``shard_tokens`` tokens.

    A document is never split across shards. Memory holds one document's ids at a time
    beyond the caller's batch, however large the corpus.

    Args:
        folder: The (temporary) folder of the prepared corpus.
        split: ``train`` or ``val``.
        vocab_size: Decides the token dtype.
        eos_id: Appended after each document.
        tokenizer_fp: The tokenizer's fingerprint, stored in every shard header.
        shard_tokens: Roll over to a new file beyond this many tokens.
    """

    def __init__(self, folder: Path, split: str, vocab_size: int, eos_id: int, tokenizer_fp: str,
                 shard_tokens: int = DEFAULT_SHARD_TOKENS):
        self.folder, self.split, self.eos_id, self.tokenizer_fp = folder, split, eos_id, tokenizer_fp
        self.dtype = token_dtype(vocab_size)
        self.shard_tokens = shard_tokens
        self.shards: list[dict] = []
        self._file = None
        self._ends: list[int] = []
        self._tokens = 0
        self.last_document: list[int] | None = None  # kept for :meth:`pop_last`

    @property
    def num_documents(self) -> int:
        return sum(s["documents"] for s in self.shards) + len(self._ends)

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}"
        self._file = open(self.folder / f"{name}.bin", "wb")
        self._file.write(_header(self.dtype.itemsize, 0, self.tokenizer_fp))
        self._name, self._ends, self._tokens = name, [], 0

    def add(self, documents: list[list[int]]) -> None:
        """Append documents (token ids without the end-of-document id)."""
        if not documents:
            return
        lengths = np.fromiter((len(d) + 1 for d in documents), dtype=np.int64, count=len(documents))
        flat = np.empty(int(lengths.sum()), dtype=self.dtype)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        for doc, s, e in zip(documents, starts, ends):
            flat[s : e - 1] = doc
        flat[ends - 1] = self.eos_id
        i = 0
        while i < len(documents):
            if self._file is None:
                self._open()
            # as many whole documents as fit; at least one (a document longer than a shard gets its own)
            room = self.shard_tokens - self._tokens
            j = int(np.searchsorted(ends - starts[i], room, side="right")) if room > 0 else i
            if self._tokens == 0:
                j = max(j, i + 1)
            if j == i:
                self._close_shard()
                continue
            self._file.write(flat[starts[i] : ends[j - 1]].tobytes())
            self._ends.extend((self._tokens + ends[i:j] - starts[i]).tolist())
            self._tokens += int(ends[j - 1] - starts[i])
            i = j
        self.last_document = list(documents[-1])

    def pop_last(self) -> list[int]:
        """Remove the last document written (it must be in the open shard) and return its ids."""
        if self._file is None or not self._ends or self.last_document is None:
            raise RuntimeError("no document to pop in the open shard")
        self._ends.pop()
        self._tokens = self._ends[-1] if self._ends else 0
        self._file.truncate(HEADER_BYTES + self._tokens * self.dtype.itemsize)
        self._file.seek(0, os.SEEK_END)
        doc, self.last_document = self.last_document, None
        return doc

    def _close_shard(self) -> None:
        f, self._file = self._file, None
        f.seek(0)
        f.write(_header(self.dtype.itemsize, self._tokens, self.tokenizer_fp))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        np.save(self.folder / f"{self._name}.docs.npy", np.asarray(self._ends, dtype=np.int64))
        self.shards.append({"file": f"{self._name}.bin", "tokens": self._tokens, "documents": len(self._ends)})

    def close(self) -> list[dict]:
        """Finish the open shard; the list of shards written (file, tokens, documents)."""
        if self._file is not None:
            self._close_shard()
        return self.shards


@dataclass
class Shard:
    """One shard file, memory-mapped: ``tokens`` (the id stream) and ``doc_ends`` (offsets).

    Args:
        path: The ``.bin`` file.
        tokens: Its token ids.
        doc_ends: End offset (exclusive, after the end-of-document id) of each document.
    """

    path: Path
    tokens: np.ndarray
    doc_ends: np.ndarray

    def document(self, i: int) -> np.ndarray:
        """The ids of document ``i``, its end-of-document id included."""
        start = int(self.doc_ends[i - 1]) if i else 0
        return self.tokens[start : int(self.doc_ends[i])]


def open_shard(path: Path, tokenizer_fp: str | None = None) -> Shard:
    """Memory-map a shard, refusing one that is truncated, foreign, or of another tokenizer.

    Args:
        path: The ``.bin`` file.
        tokenizer_fp: The fingerprint the shard must have been tokenized with; ``None`` skips that check.
    """
    redo = "delete its folder and run `lmforge prepare` again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as err:
        raise UserError(f"Cannot read token shard '{path}' ({err.strerror}): {redo}.") from err
    if len(head) < HEADER_BYTES or not head.startswith(MAGIC):
        raise UserError(f"'{path}' is not an lmforge token shard (no {MAGIC.decode()} header): {redo}.")
    _, version, itemsize, num_tokens, fp = HEADER.unpack_from(head)
    if version != FORMAT_VERSION or itemsize not in (2, 4):
        raise UserError(f"Token shard '{path}' has format version {version}, item size {itemsize}; this lmforge "
                        f"reads version {FORMAT_VERSION} with item size 2 or 4: {redo}.")
    expected = HEADER_BYTES + num_tokens * itemsize
    if size != expected:
        raise UserError(f"Token shard '{path}' is truncated or damaged: {size:,} bytes where its header promises "
                        f"{expected:,}: {redo}.")
    fp = fp.rstrip(b"\0 ").decode(errors="replace")
    if tokenizer_fp is not None and fp != tokenizer_fp[:16]:
        raise UserError(f"Token shard '{path}' was tokenized with tokenizer {fp}, not the configured {tokenizer_fp}: "
                        "prepare the corpus with this tokenizer (`lmforge prepare`) or configure the one it was made with.")
    dtype = np.uint16 if itemsize == 2 else np.uint32
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(num_tokens,)) if num_tokens else \
        np.zeros(0, dtype=dtype)
    docs_path = path.with_name(path.name[: -len(".bin")] + ".docs.npy")
    try:
        doc_ends = np.load(docs_path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise UserError(f"The document offsets '{docs_path}' of shard '{path}' are missing or damaged: {redo}.") from err
    if len(doc_ends) and int(doc_ends[-1]) != num_tokens:
        raise UserError(f"The document offsets '{docs_path}' do not match shard '{path}': {redo}.")
    return Shard(path, tokens, doc_ends)


@dataclass
class PreparedCorpus:
    """A complete prepared corpus: its shards per split and what ``meta.json`` records.

    Args:
        folder: The prepared folder.
        meta: The contents of its ``meta.json``.
        shards: ``{"train": [...], "val": [...]}``, memory-mapped.
    """

    folder: Path
    meta: dict
    shards: dict[str, list[Shard]]

    def num_tokens(self, split: str) -> int:
        return sum(len(s.tokens) for s in self.shards[split])

    @classmethod
    def open(cls, folder: Path, tokenizer_fp: str | None = None) -> PreparedCorpus:
        """Open a prepared folder, checking every shard (see :func:`open_shard`)."""
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"'{folder}' is not a complete prepared corpus (no meta.json; an interrupted prepare?): "
                            "delete it and run `lmforge prepare` again.")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        shards = {}
        for split in SPLITS:
            shards[split] = [open_shard(folder / s["file"], tokenizer_fp) for s in meta["splits"][split]]
            for shard, info in zip(shards[split], meta["splits"][split]):
                if len(shard.tokens) != info["tokens"] or len(shard.doc_ends) != info["documents"]:
                    raise UserError(f"Token shard '{shard.path}' does not match {meta_path}: delete '{folder}' and "
                                    "run `lmforge prepare` again.")
        return cls(folder, meta, shards)


def write_prepared(
    folder: Path,
    documents: Iterable[tuple[str, str]],
    encode_batch: Callable[[list[str]], list[list[int]]],
    vocab_size: int,
    eos_id: int,
    tokenizer_fp: str,
    meta: dict,
    chunk_chars: int = 1 << 20,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    on_progress: Callable[[int, int], None] | None = None,
) -> PreparedCorpus:
    """Tokenize ``(split, text)`` pairs into a prepared folder, atomically.

    Text is tokenized in chunks of about ``chunk_chars`` characters (``encode_batch`` of
    ``tokenizers`` uses every core), so memory stays bounded by the chunk. The folder
    appears under its final name only when every shard and ``meta.json`` are written; if
    another process finished the same folder first, its result is kept.

    Args:
        folder: The final folder.
        documents: ``(split, text)`` with split ``train`` or ``val``, in corpus order.
        encode_batch: Texts -> token ids (no special tokens).
        vocab_size: Decides uint16 or uint32.
        eos_id: The end-of-document id.
        tokenizer_fp: Stored in every shard header.
        meta: Extra facts to record in ``meta.json`` (corpus, tokenizer, options).
        chunk_chars: Characters tokenized per batch.
        shard_tokens: Tokens per shard file at most.
        on_progress: Called with (characters done, documents done) after each chunk.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir()
    start = time.perf_counter()
    try:
        writers = {s: ShardWriter(tmp, s, vocab_size, eos_id, tokenizer_fp, shard_tokens) for s in SPLITS}
        chars = _tokenize_into(writers, documents, encode_batch, chunk_chars, on_progress)
        _balance(writers)
        meta = dict(meta, format=FORMAT_VERSION, dtype=writers["train"].dtype.name, eos_id=eos_id,
                    tokenizer=tokenizer_fp, characters=chars, seconds=round(time.perf_counter() - start, 3),
                    splits={s: w.close() for s, w in writers.items()})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _move_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedCorpus.open(folder, tokenizer_fp)


def _tokenize_into(writers: dict[str, ShardWriter], documents: Iterable[tuple[str, str]],
                   encode_batch: Callable[[list[str]], list[list[int]]], chunk_chars: int,
                   on_progress: Callable[[int, int], None] | None) -> int:
    """Tokenize ``(split, text)`` pairs chunk by chunk into their split's writer; the number of
    characters read (see :func:`write_prepared` for the arguments)."""
    chars = docs = 0

    def write(chunk: list[tuple[str, str]], ids: list[list[int]]) -> None:
        nonlocal chars, docs
        for split in SPLITS:
            writers[split].add([d for (s, _), d in zip(chunk, ids) if s == split])
        chars += sum(len(t) for _, t in chunk)
        docs += len(chunk)
        if on_progress is not None:
            on_progress(chars, docs)

    # encoding (which releases the GIL) runs in a thread while the next chunk is read
    # and the previous one written: two chunks in flight at most
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for chunk in _chunks(documents, chunk_chars):
            future = pool.submit(encode_batch, [text for _, text in chunk])
            if pending is not None:
                write(pending[0], pending[1].result())
            pending = (chunk, future)
        if pending is not None:
            write(pending[0], pending[1].result())
    return chars


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Rename the complete ``tmp`` to ``folder``; if another process prepared ``folder`` first,
    keep its result and drop ``tmp``."""
    try:
        os.rename(tmp, folder)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _chunks(documents: Iterable[tuple[str, str]], chunk_chars: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    size = 0
    for item in documents:
        chunk.append(item)
        size += len(item[1])
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _balance(writers: dict[str, ShardWriter]) -> None:
    """Give an empty split the last document of the other (as splitting in memory does):
    moved when the other has two or more, shared when it is the only one."""
    train, val = writers["train"], writers["val"]
    for empty, full in ((val, train), (train, val)):
        if empty.num_documents == 0 and full.num_documents > 0:
            movable = full.num_documents > 1 and full._file is not None
            empty.add([full.pop_last() if movable else full.last_document])


class ShardBlocks(Dataset):
    """Consecutive, non-overlapping blocks of ``block_length`` tokens of memory-mapped shards.

    Each shard is cut on its own (a block never spans two files); the tokens after a
    shard's last whole block are left out. Items are numpy views into the memory map, read
    only when indexed.

    Args:
        shards: The shards of one split.
        block_length: Tokens per block.
    """

    def __init__(self, shards: list[Shard], block_length: int):
        if block_length < 2:
            raise ValueError(f"block_length must be at least 2, got {block_length}.")
        self.shards = shards
        self.block_length = block_length
        counts = [len(s.tokens) // block_length for s in shards]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        offset = (index - int(self._starts[shard])) * self.block_length
        return np.asarray(self.shards[shard].tokens[offset : offset + self.block_length])

    @property
    def num_tokens(self) -> int:
        return len(self) * self.block_length
