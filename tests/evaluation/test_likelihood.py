"""Scoring without training: each continuation's log-likelihood equals the hand computation
from the network's logits, with and without the shared-context cache; requests are split as
lm-eval splits them; greedy generation stops at its stop string and equals one prompt at a
time; rolling windows cover every token once and give the hand-computed log-likelihood; a
``transformers`` Llama folder scores as ``transformers`` computes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmforge.data.tokenizer import TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation.likelihood import Scorer, T5Scorer, open_scorer, rolling_windows
from lmforge.models import GPT, T5, GPTConfig, Llama, LlamaConfig, T5Config

TEXT = ("The cat sat on the mat. A dog barked at the mailman, who ran away quickly. "
        "Positive reviews praise the acting; negative reviews complain about the plot. ") * 20
QUESTIONS = [
    ("Review: the plot is dull.\nSentiment:", [" negative", " positive", " rather mixed feelings"]),
    ("The cat", [" sat on the mat", " barked"]),
    ("A dog barked at the mailman, who ran away ", ["quickly.", "slowly and sadly."]),  # trailing space moves
    ("", [" The cat sat"]),  # empty context: conditioned on the prefix token
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([TEXT], TokenizerSpec(kind="byte_level_bpe", vocab_size=300, min_frequency=1))


@pytest.fixture(scope="module", params=["gpt", "llama"])
def scorer(request: pytest.FixtureRequest, tokenizer) -> Scorer:
    torch.manual_seed(0)
    if request.param == "gpt":
        net = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, max_seq_len=64, n_layer=2, n_head=2, d_model=32))
    else:
        net = Llama(LlamaConfig(vocab_size=tokenizer.vocab_size, max_seq_len=64, n_layer=2, n_head=4, n_kv_head=2,
                                d_model=32, d_ff=64))
    return Scorer(net.eval(), tokenizer, batch_size=3)


@torch.no_grad()
def by_hand(net: torch.nn.Module, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    ids = torch.tensor(context + continuation)
    logprobs = F.log_softmax(net(ids[None, :-1])[0], -1)[len(context) - 1:]  # the continuation's predictions
    target = torch.tensor(continuation)
    return float(logprobs.gather(1, target[:, None]).sum()), bool((logprobs.argmax(-1) == target).all())


@pytest.mark.parametrize("share", [True, False], ids=["shared-context", "request-by-request"])
def test_each_choice_scores_its_hand_computed_log_likelihood(scorer: Scorer, share: bool) -> None:
    scorer.share_context = share
    results = scorer.loglikelihood(QUESTIONS)
    for (context, continuations), scores in zip(QUESTIONS, results):
        assert len(scores) == len(continuations)
        for continuation, (logprob, greedy) in zip(continuations, scores):
            ctx, cont = scorer.encode_pair(context, continuation)
            expected, expected_greedy = by_hand(scorer.net, ctx, cont)
            assert logprob == pytest.approx(expected, abs=1e-5) and greedy == expected_greedy
    scorer.share_context = True


def test_requests_are_split_as_lm_eval_splits_them(scorer: Scorer) -> None:
    tok = scorer.tokenizer
    ctx, cont = scorer.encode_pair("A dog barked at the ", "mailman")
    assert ctx == tok.encode("A dog barked at the") and ctx + cont == tok.encode("A dog barked at the mailman")
    assert scorer.encode_pair("", " The cat") == ([scorer.prefix_id], tok.encode(" The cat"))


def test_a_context_longer_than_the_model_is_cut_from_the_left(scorer: Scorer) -> None:
    context = TEXT[:600]
    ids, cont = scorer.encode_pair(context, " the plot")
    assert len(ids) + len(cont) > scorer.max_length
    [[(logprob, _), _]] = scorer.loglikelihood([(context, [" the plot", " the mat"])])
    kept = ids[len(ids) + len(cont) - 1 - scorer.max_length:]
    assert logprob == pytest.approx(by_hand(scorer.net, kept, cont)[0], abs=1e-5)


def test_generation_stops_at_its_stop_string_and_equals_one_prompt_at_a_time(scorer: Scorer) -> None:
    prompts = ["The cat sat", "Positive reviews praise the acting; negative", "A dog"]
    free = scorer.generate(prompts, until=[], max_tokens=12)
    for prompt, text in zip(prompts, free):
        ids = torch.tensor([scorer.encode(prompt)])
        alone = scorer.net.generate(ids, 12, temperature=0.0, eos_id=scorer.eos_id)[0, ids.size(1):].tolist()
        assert text == scorer.tokenizer.decode([t for t in alone if t != scorer.eos_id])
    stop = next(t[len(t) // 2: len(t) // 2 + 2] for t in free if len(t) >= 4)
    stopped = scorer.generate(prompts, until=[stop], max_tokens=12)
    for text, cut in zip(free, stopped):
        assert cut == text.split(stop)[0] and stop not in cut


@pytest.mark.parametrize("overlap", [0, 5])
def test_rolling_windows_score_every_token_once_with_hand_computed_log_likelihood(scorer: Scorer,
                                                                                  overlap: int) -> None:
    tokens = scorer.tokenizer.encode(TEXT[:700])
    windows = rolling_windows(tokens, scorer.prefix_id, scorer.max_length, overlap + 1)
    assert [t for _, scored in windows for t in scored] == tokens and len(windows) > 2
    for ctx, scored in windows[1:]:
        assert len(ctx) >= overlap + 1 and len(ctx) + len(scored) - 1 <= scorer.max_length
    [(logprob, count)] = scorer.rolling_loglikelihood([TEXT[:700]], overlap=overlap)
    assert count == len(tokens)
    assert logprob == pytest.approx(sum(by_hand(scorer.net, c, s)[0] for c, s in windows), abs=1e-4)


def test_bits_per_byte_of_a_short_text_is_its_hand_computation(scorer: Scorer) -> None:
    text = "The cat sat on the mat."
    [(logprob, count)] = scorer.rolling_loglikelihood([text])
    expected, _ = by_hand(scorer.net, [scorer.prefix_id], scorer.tokenizer.encode(text))
    bits_per_byte = -logprob / len(text.encode()) / math.log(2)
    assert bits_per_byte == pytest.approx(-expected / 23 / math.log(2), rel=1e-6) and count > 1


def test_t5_scores_each_choice_as_the_decoder_target() -> None:
    tok = train_tokenizer([TEXT], TokenizerSpec(kind="unigram", specials="t5", vocab_size=140))
    torch.manual_seed(0)
    net = T5(T5Config(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, d_kv=8, d_ff=64, n_layer=2, n_head=4,
                      dropout=0.0)).eval()
    scorer = T5Scorer(net, tok, batch_size=4)
    results = scorer.loglikelihood(QUESTIONS[:2])
    for (context, continuations), scores in zip(QUESTIONS[:2], results):
        for continuation, (logprob, _) in zip(continuations, scores):
            ctx, cont = scorer.encode_pair(context, continuation)
            with torch.no_grad():
                logits = net(torch.tensor([ctx]), torch.tensor([[scorer.start_id] + cont[:-1]]))[0]
            expected = F.log_softmax(logits, -1).gather(1, torch.tensor(cont)[:, None]).sum()
            assert logprob == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(UserError, match="need a decoder-only model"):
        scorer.rolling_loglikelihood(["text"])


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    """The folder ``save_pretrained`` writes, with a tokenizer that adds BOS as Llama's does;
    and the transformers model and tokenizer."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import processors

    backend = train_tokenizer([TEXT], TokenizerSpec(kind="byte_level_bpe", specials="roberta", vocab_size=300,
                                                    min_frequency=1)).backend
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=backend.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                      max_position_embeddings=64, bos_token_id=hf_tok.bos_token_id,
                                      eos_token_id=hf_tok.eos_token_id, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("llama")
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder, model, hf_tok


@torch.no_grad()
def hf_loglikelihood(model, hf_tok, context: str, continuation: str) -> float:
    """log P(continuation | context) computed with transformers, requests split as lm-eval splits them."""
    ctx, whole = hf_tok(context)["input_ids"], hf_tok(context + continuation)["input_ids"]
    logits = model(torch.tensor([whole[:-1]])).logits[0, len(ctx) - 1:]
    return float(F.log_softmax(logits, -1).gather(1, torch.tensor(whole[len(ctx):])[:, None]).sum())


def test_a_transformers_llama_folder_scores_as_transformers_computes(llama_folder) -> None:
    folder, model, hf_tok = llama_folder
    scorer = open_scorer(str(folder), batch_size=4)
    results = scorer.loglikelihood(QUESTIONS[:2])
    for (context, continuations), scores in zip(QUESTIONS[:2], results):
        assert hf_tok(context)["input_ids"][0] == hf_tok.bos_token_id  # the BOS lm-eval's backend adds
        for continuation, (logprob, _) in zip(continuations, scores):
            assert logprob == pytest.approx(hf_loglikelihood(model, hf_tok, context, continuation), abs=1e-4)


def test_evaluate_scores_a_suite_of_every_kind_from_a_transformers_folder(llama_folder, tmp_path: Path) -> None:
    """``lmforge evaluate`` on a suite of one local task of each scoring kind: the table's
    columns, one request line per request, and log-likelihoods as transformers computes them."""
    from lmforge.cli import main

    folder, model, hf_tok = llama_folder
    rows = [{"q": f"The {w} sat on the", "a": "mat", "b": "sky at night", "text": f"The {w} sat on the mat."}
            for w in ("cat", "dog", "bird", "fox")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = "data: {path: d.jsonl, split: train}\n"
    tasks = {"mc": "kind: multiple_choice\nprompt: '{q}'\nchoices: ['{a}', '{b}']\ngold: 0\n",
             "ll": "kind: loglikelihood\nprompt: '{q}'\ncontinuation: ' {a}'\n",
             "gen": "kind: generate\nprompt: '{q}'\nanswers: a\nmax_tokens: 4\n",
             "ppl": "kind: perplexity\ntext: text\n"}
    for name, spec in tasks.items():
        (tmp_path / f"{name}.yaml").write_text(common + spec)
    kinds = {"mc": "multiple_choice", "ll": "loglikelihood", "gen": "generate", "ppl": "perplexity"}
    (tmp_path / "suite.yaml").write_text("tasks:\n" + "".join(
        f"  {n}:\n    kind: {kinds[n]}\n    task: {n}.yaml\n" for n in tasks))
    out = tmp_path / "out"
    main(["evaluate", "--suite", str(tmp_path / "suite.yaml"), "--starts", f"[{folder}]", "--random_baseline", "false",
          "--limit", "3", "--shots", "1", "--out", str(out)])
    header = (out / "runs.csv").read_text().splitlines()[0].split(",")
    assert {"acc", "acc_norm", "exact_match", "bits_per_byte"} <= set(header)
    label = folder.name
    requests = {n: [json.loads(line) for line in (out / "requests" / n / f"{label}.jsonl").read_text().splitlines()]
                for n in tasks}
    assert [len(requests[n]) for n in tasks] == [6, 3, 3, 3]  # 3 items: two choices each, one request each
    for record in requests["mc"]:
        expected = hf_loglikelihood(model, hf_tok, record["context"], record["continuation"])
        assert record["loglikelihood"] == pytest.approx(expected, abs=1e-4)
        assert record["context"].count("The ") == 2  # one shot before the item


def test_an_encoder_is_refused_for_scoring(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="holds bert weights: scoring tasks"):
        open_scorer(str(tmp_path))
