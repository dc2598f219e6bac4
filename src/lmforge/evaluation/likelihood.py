"""Scoring text with a language model, no training: the log-likelihood of continuations given a
context, greedy generation, and the log-likelihood of whole texts in rolling windows.

The requests are lm-evaluation-harness's (its Hugging Face backend), so scores compare with
published numbers: trailing spaces of a context move to its continuation, the whole string is
encoded and split at the context's token length, the tokenizer adds its own special tokens (a
Llama tokenizer's BOS) unless the text starts with BOS, an empty context is BOS (else EOS).

What is faster than lm-eval: the choices of a question share one pass over their context. The
contexts of a batch of questions (right-padded) fill a key/value cache once; its rows are
repeated for each continuation, and the continuations are run from that cache (lm-eval runs
context + continuation for every choice, sharing work only when every continuation is one
token). Requests are batched by length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import UserError
from lmforge.models.layers import DecoderLM
from lmforge.models.t5 import T5
from lmforge.start.starting_point import open_start
from lmforge.tokenizer import Tokenizer

Question = tuple[list[int], list[list[int]]]  # context ids, and the ids of each continuation


@dataclass
class _Batch:
    ids: torch.Tensor  # (B, T) right-padded
    mask: torch.Tensor  # (B, T) 1 on real tokens
    lengths: torch.Tensor  # (B,)


def _pad(rows: Sequence[Sequence[int]], device: torch.device) -> _Batch:
    width = max(1, max(map(len, rows)))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return _Batch(ids.to(device), mask.to(device), mask.sum(1).to(device))


def _score_tokens(logits: torch.Tensor, targets: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
    """(summed log-probability, every token the argmax) of each row's targets, whose predicting
    logits are ``logits[i, :len(targets[i])]`` ``(N, L, V)``."""
    padded = _pad(targets, logits.device)
    width = padded.ids.size(1)
    logprobs = F.log_softmax(logits[:, :width].float(), dim=-1)  # (N, L, V), as lm-eval computes them
    picked = logprobs.gather(2, padded.ids[:, :, None]).squeeze(2)  # (N, L)
    real = padded.mask.bool()
    sums = (picked * real).sum(1)
    greedy = ((logprobs.argmax(-1) == padded.ids) | ~real).all(1)
    return list(zip(sums.tolist(), greedy.tolist()))


class Scorer:
    """Scores requests with a network and its tokenizer (see the module docstring).

    Args:
        net: A decoder (:class:`lmforge.models.layers.DecoderLM`) or T5, in eval mode.
        tokenizer: The tokenizer it was trained with.
        batch_size: Requests (continuations, windows or prompts) per forward pass.
        share_context: Run each context once for all its continuations (from the key/value
            cache); ``False`` runs context + continuation per request, as lm-eval does.
    """

    def __init__(self, net: nn.Module, tokenizer: Tokenizer, batch_size: int = 32, share_context: bool = True):
        self.net, self.tokenizer = net, tokenizer
        self.batch_size, self.share_context = batch_size, share_context
        self.device = next(net.parameters()).device
        bos, eos = tokenizer.role_id("bos"), tokenizer.role_id("eos")
        self.eos_id = eos
        self.prefix_id = bos if bos is not None else eos
        if self.prefix_id is None:
            raise UserError("The tokenizer has neither a BOS nor an EOS token, which scoring an empty context "
                            "needs: use the tokenizer the model was trained with.")
        self.prefix_text = tokenizer.decode([self.prefix_id], skip_special_tokens=False)

    @property
    def max_length(self) -> int:
        """Longest sequence the network reads."""
        return self.net.config.max_seq_len

    # -- requests as lm-eval builds them -------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """lm-eval's ``tok_encode``: the tokenizer's own special tokens, unless ``text`` starts with BOS."""
        specials = not (self.prefix_text and text.startswith(self.prefix_text))
        return self.tokenizer.backend.encode(text, add_special_tokens=specials).ids

    def encode_pair(self, context: str, continuation: str, context_ids: list[int] | None = None
                    ) -> tuple[list[int], list[int]]:
        """Token ids of a context and its continuation, split as lm-eval splits them.

        Args:
            context: The conditioning text.
            continuation: The text scored.
            context_ids: ``encode`` of the context less its trailing spaces, if already known.
        """
        if not context:
            cont = self.tokenizer.encode(continuation)
            return ([self.prefix_id], cont) if not cont or cont[0] != self.prefix_id else (cont[:1], cont[1:])
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = self.encode(context) if context_ids is None else context_ids
        return ctx, self.encode(context + continuation)[len(ctx):]

    # -- the three kinds of request -------------------------------------------------------
    @torch.no_grad()
    def loglikelihood(self, questions: Sequence[tuple[str, Sequence[str]]]) -> list[list[tuple[float, bool]]]:
        """Per question ``(context, continuations)``, per continuation: (summed log-probability in
        nats, whether greedy decoding produces it).

        Args:
            questions: Each context with its continuations (each carrying its leading delimiter).
        """
        encoded = []
        for context, continuations in questions:
            known = self.encode(context.rstrip()) if context.rstrip() else None  # once for all its continuations
            pairs = [self.encode_pair(context, c, known) for c in continuations]
            encoded.append((pairs[0][0] if pairs else [], [p[1] for p in pairs], pairs))
        return self.score_ids([(ctx, conts) for ctx, conts, _ in encoded], [pairs for *_, pairs in encoded])

    def score_ids(self, questions: Sequence[Question],
                  pairs: Sequence[Sequence[tuple[list[int], list[int]]]] | None = None,
                  ) -> list[list[tuple[float, bool]]]:
        """:meth:`loglikelihood` on token ids. A question whose continuations do not all follow
        one context (``pairs``: each continuation's own context), or that does not fit in
        :attr:`max_length`, is scored request by request, its context cut from the left."""
        shared: list[tuple[int, int, list[int], list[list[int]]]] = []  # (question, 0, context, continuations)
        alone: list[tuple[int, int, list[int], list[list[int]]]] = []  # (question, choice, context, [continuation])
        for q, (ctx, conts) in enumerate(questions):
            own = [p[0] for p in pairs[q]] if pairs is not None else [ctx] * len(conts)
            fits = len(ctx) + max(map(len, conts), default=0) - 1 <= self.max_length
            if self.share_context and len(conts) > 1 and fits and all(c == ctx for c in own):
                shared.append((q, 0, ctx, list(conts)))
            else:
                alone.extend((q, j, self._fit(own[j], cont), [cont]) for j, cont in enumerate(conts))
        results: list[list[tuple[float, bool]]] = [[(0.0, True)] * len(conts) for _, conts in questions]
        for batch in _batches(shared, self.batch_size):
            for (q, _, _, _), scores in zip(batch, self._shared_pass(batch)):
                results[q] = scores
        for batch in _batches(alone, self.batch_size):
            for (q, j, _, _), score in zip(batch, self._whole_pass(batch)):
                results[q][j] = score
        return results

    @torch.no_grad()
    def rolling_loglikelihood(self, texts: Sequence[str], overlap: int = 0) -> list[tuple[float, int]]:
        """Per text: (summed log-probability in nats, tokens scored), over windows of
        :attr:`max_length` tokens; each window after the first re-reads ``overlap`` earlier
        tokens as context, and the last window as many as fill it (lm-eval's rolling windows,
        ``overlap=0`` its disjoint ones). The first token is conditioned on BOS (else EOS).

        Args:
            texts: The texts, each scored separately.
            overlap: Earlier tokens each later window reads before the ones it scores.
        """
        if not 0 <= overlap < self.max_length:
            raise UserError(f"overlap={overlap} must be at least 0 and below the model's context of {self.max_length}.")
        windows = [(t, ctx, cont) for t, text in enumerate(texts)
                   for ctx, cont in rolling_windows(self.tokenizer.encode(text), self.prefix_id, self.max_length,
                                                    overlap + 1)]
        totals = [[0.0, 0] for _ in texts]
        jobs = [(t, 0, ctx, [cont]) for t, ctx, cont in windows]
        for batch in _batches(jobs, self.batch_size):
            for (t, _, _, conts), (logprob, _) in zip(batch, self._whole_pass(batch)):
                totals[t][0] += logprob
                totals[t][1] += len(conts[0])
        return [(logprob, count) for logprob, count in totals]

    @torch.no_grad()
    def generate(self, contexts: Sequence[str], until: Sequence[str] = (), max_tokens: int = 256) -> list[str]:
        """Greedy continuation of each context (a key/value cache; prompts batched by length),
        cut before the first stop string; EOS always stops (lm-eval's ``generate_until``).

        Args:
            contexts: The prompts.
            until: Stop strings.
            max_tokens: Most tokens generated per prompt; the prompt is cut from the left to
                leave room for them.
        """
        if not 0 < max_tokens < self.max_length:
            raise UserError(f"max_tokens={max_tokens} must be between 1 and the model's context of {self.max_length} "
                            "(exclusive): lower the task's max_tokens.")
        prompts = [(self.encode(c) or [self.prefix_id])[-(self.max_length - max_tokens):] for c in contexts]
        outputs = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for at in range(0, len(order), self.batch_size):
            chunk = order[at:at + self.batch_size]
            for i, ids in zip(chunk, self._greedy([prompts[i] for i in chunk], list(until), max_tokens)):
                outputs[i] = cut_at_stop(self.tokenizer.decode(ids), until)
        return outputs

    def _greedy(self, prompts: list[list[int]], until: list[str], max_tokens: int) -> list[list[int]]:
        """The generated ids of each prompt, until EOS, a stop string or ``max_tokens``."""
        batch = _pad(prompts, self.device)
        cache = self.net.new_cache()
        logits = self.net(batch.ids, cache, batch.mask)
        last = logits[torch.arange(len(prompts), device=self.device), batch.lengths - 1]  # (B, V)
        generated: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        for step in range(max_tokens):
            next_ids = last.argmax(-1)  # (B,)
            for i, token in enumerate(next_ids.tolist()):
                if finished[i]:
                    continue
                if token == self.eos_id:
                    finished[i] = True
                    continue
                generated[i].append(token)
                text = self.tokenizer.decode(generated[i]) if until else ""
                finished[i] = any(u and u in text for u in until)
            if all(finished) or step == max_tokens - 1:
                break
            last = self.net(next_ids[:, None], cache)[:, -1]  # each row's next position, its padding unseen
        return generated

    def _fit(self, ctx: list[int], cont: list[int]) -> list[int]:
        """The context cut from the left to the room the continuation leaves (lm-eval's truncation)."""
        if len(cont) > self.max_length:
            raise UserError(f"A continuation of {len(cont)} tokens is longer than the model's context of "
                            f"{self.max_length}: shorten the task's choices.")
        return ctx[max(0, len(ctx) - self._context_room(cont)):]

    def _context_room(self, cont: list[int]) -> int:
        """Context tokens that fit beside ``cont``: context + continuation - 1 positions are read."""
        return self.max_length + 1 - len(cont)

    def _whole_pass(self, batch: list[tuple[int, int, list[int], list[list[int]]]]) -> list[tuple[float, bool]]:
        """Context + continuation of each request in one row, no cache."""
        rows = [(ctx + conts[0])[:-1] for _, _, ctx, conts in batch]
        logits = self.net(_pad(rows, self.device).ids)  # (B, T, V)
        starts = [len(ctx) - 1 for _, _, ctx, _ in batch]
        width = max(len(conts[0]) for *_, conts in batch)
        last = logits.size(1) - 1
        index = torch.tensor([[min(s + t, last) for t in range(width)] for s in starts], device=self.device)
        picked = logits.gather(1, index[:, :, None].expand(-1, -1, logits.size(-1)))  # (B, width, V)
        return _score_tokens(picked, [conts[0] for *_, conts in batch])

    def _shared_pass(self, batch: list[tuple[int, int, list[int], list[list[int]]]]) -> list[list[tuple[float, bool]]]:
        """The contexts once into a cache, then every continuation from its context's cached row."""
        ctx = _pad([c for _, _, c, _ in batch], self.device)
        cache = self.net.new_cache()
        ctx_logits = self.net(ctx.ids, cache, ctx.mask)  # (Q, Tc, V)
        last = ctx_logits[torch.arange(len(batch), device=self.device), ctx.lengths - 1]  # (Q, V): each first token
        rows = torch.tensor([q for q, (*_, conts) in enumerate(batch) for _ in conts], device=self.device)
        conts = [c for *_, cs in batch for c in cs]
        first = last[rows][:, None]  # (N, 1, V)
        if max(map(len, conts)) > 1:  # the later tokens, predicted from the continuation's own positions
            rest = _pad([c[:-1] for c in conts], self.device)
            first = torch.cat([first, self.net(rest.ids, cache.select(rows), rest.mask)], 1)  # (N, L, V)
        scores = iter(_score_tokens(first, conts))
        return [[next(scores) for _ in cs] for *_, cs in batch]


def _batches(jobs: list, size: int) -> list[list]:
    """Jobs ``(..., context, continuations)`` longest first (little padding), cut into batches of
    about ``size`` requests (a question's continuations stay together)."""
    ordered = sorted(jobs, key=lambda j: -(len(j[2]) + max(map(len, j[3]))))
    batches, current, count = [], [], 0
    for job in ordered:
        if current and count + len(job[3]) > size:
            batches.append(current)
            current, count = [], 0
        current.append(job)
        count += len(job[3])
    return batches + ([current] if current else [])


def rolling_windows(tokens: list[int], prefix: int, size: int, context: int) -> list[tuple[list[int], list[int]]]:
    """``(context, scored)`` token windows covering ``tokens`` once, each at most ``size``
    tokens of input: the first scores up to ``size`` tokens after ``prefix``; each later one
    scores up to ``size - context + 1`` new tokens after at least ``context`` earlier ones (the
    last reads as many earlier tokens as fill it).

    Args:
        tokens: The text's token ids.
        prefix: What the first token is conditioned on (BOS or EOS).
        size: Longest input of one window.
        context: Earlier tokens a later window reads at least (1: disjoint windows).
    """
    if not tokens:
        return []
    step = size - context + 1
    first = min(size, len(tokens))
    windows = [([prefix], tokens[:first])]
    done = first
    while done < len(tokens):
        end = done + min(len(tokens) - done, step)
        windows.append((tokens[end - size - 1 : done], tokens[done:end]))
        done = end
    return windows


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` before the first occurrence of each stop string in turn (lm-eval's post-processing)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


class T5Scorer(Scorer):
    """Scores with T5: the context is the encoder input and each continuation the decoder's
    target (lm-eval's seq2seq requests: the context with the tokenizer's special tokens, the
    continuation without). Each batch's contexts are encoded once for all their continuations.

    Args:
        net: A :class:`lmforge.models.T5`, in eval mode.
        tokenizer: Its tokenizer.
        batch_size: Requests per forward pass.
        share_context: Encode each context once for all its continuations.
    """

    def __init__(self, net: T5, tokenizer: Tokenizer, batch_size: int = 32, share_context: bool = True):
        super().__init__(net, tokenizer, batch_size, share_context)
        self.start_id = tokenizer.role_id("pad") or 0  # T5's decoder starts from the padding token

    def encode_pair(self, context: str, continuation: str, context_ids: list[int] | None = None
                    ) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = context_ids if context_ids is not None else self.encode(context) if context else [self.prefix_id]
        return ctx, self.tokenizer.encode(continuation)

    def _context_room(self, cont: list[int]) -> int:
        return self.max_length  # the encoder reads the context, the decoder the continuation

    def _whole_pass(self, batch: list[tuple[int, int, list[int], list[list[int]]]]) -> list[tuple[float, bool]]:
        return [scores[0] for scores in self._shared_pass(batch)]

    def _shared_pass(self, batch: list[tuple[int, int, list[int], list[list[int]]]]) -> list[list[tuple[float, bool]]]:
        ctx = _pad([c[-self.max_length:] for _, _, c, _ in batch], self.device)
        hidden = self.net.encode(ctx.ids, ctx.mask)  # (Q, S, C)
        rows = torch.tensor([q for q, (*_, conts) in enumerate(batch) for _ in conts], device=self.device)
        conts = [c for *_, cs in batch for c in cs]
        decoder_in = _pad([[self.start_id] + c[:-1] for c in conts], self.device)
        logits = self.net.decode(decoder_in.ids, hidden[rows], ctx.mask[rows])  # (N, L, V)
        scores = iter(_score_tokens(logits, conts))
        return [[next(scores) for _ in cs] for *_, cs in batch]

    def _greedy(self, prompts: list[list[int]], until: list[str], max_tokens: int) -> list[list[int]]:
        batch = _pad(prompts, self.device)
        out = self.net.generate(batch.ids, max_tokens, decoder_start_id=self.start_id, eos_id=self.eos_id,
                                attention_mask=batch.mask, pad_id=self.eos_id)
        return [[t for t in row if t != self.eos_id] for row in out.tolist()]

    def rolling_loglikelihood(self, texts: Sequence[str], overlap: int = 0) -> list[tuple[float, int]]:
        raise UserError("Perplexity tasks score a text left to right: they need a decoder-only model (GPT, Llama), "
                        "not T5.")


def open_scorer(start: str, device: str = "cpu", batch_size: int = 32, random_init: bool = False,
                dtype: str = "float32") -> Scorer:
    """A :class:`Scorer` for the weights and tokenizer of ``start``.

    Args:
        start: An lmforge ``.ckpt``, a ``transformers`` model folder, ``hf:<folder>`` or ``hf:<hub id>``.
        device: Where the network runs (``cpu``, ``cuda``).
        batch_size: Requests per forward pass.
        random_init: The same architecture and tokenizer, randomly initialised (a baseline).
        dtype: The weights' dtype (``float32``, ``bfloat16``, ``float16``).
    """
    opened = open_start(start)
    if not issubclass(opened.network, (DecoderLM, T5)):
        raise UserError(f"'{start}' holds {opened.family} weights: scoring tasks (multiple choice, generation, "
                        "perplexity) need a decoder (GPT, Llama-family) or T5; fine-tune tasks suit encoders.")
    if opened.tokenizer is None:
        raise UserError(f"'{start}' carries no tokenizer: scoring needs the tokenizer the model was trained with.")
    net = opened.network(opened.config)
    if random_init:
        opened.load_buffers(net)
    else:
        opened.load_into(net, trained_heads=set(), user="zero-shot scoring")
    net = net.to(device=device, dtype=getattr(torch, dtype)).eval()
    kind = T5Scorer if isinstance(net, T5) else Scorer
    return kind(net, opened.tokenizer, batch_size)
