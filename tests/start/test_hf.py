"""Hugging Face interop: our networks read transformers folders and write folders transformers
reads, with identical logits, for BERT, RoBERTa (also with an untied MLM output matrix), GPT-2 and T5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.start import open_start
from lmforge.start.hf import export_hf
from lmforge.data import TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.models import GPT, T5, Bert, BertConfig, GPTConfig, T5Config

transformers = pytest.importorskip("transformers")

V, C, L, H, T = 96, 32, 2, 4, 24


def perturb_(model: torch.nn.Module, seed: int = 4321) -> None:
    """Move every weight off its initial value (LayerNorms at 1/0, zero biases would hide a bad mapping)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def hf_model(arch: str) -> torch.nn.Module:
    """A tiny random ``transformers`` model of ``arch``; ``-untied``: its MLM output matrix its own
    (``tie_word_embeddings=False``, which ``save_pretrained`` writes as a tensor of its own)."""
    torch.manual_seed(0)
    common = dict(attn_implementation="eager")
    if arch.endswith("-untied"):
        common["tie_word_embeddings"] = False
    if arch in ("bert", "bert-mlm", "bert-untied"):
        cfg = transformers.BertConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                                      intermediate_size=3 * C, max_position_embeddings=T, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0, **common)
        model = (transformers.BertForPreTraining if arch == "bert" else transformers.BertForMaskedLM)(cfg)
    elif arch in ("roberta", "roberta-untied"):
        cfg = transformers.RobertaConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                                         intermediate_size=3 * C, max_position_embeddings=T + 2, type_vocab_size=1,
                                         pad_token_id=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                         layer_norm_eps=1e-5, **common)
        model = transformers.RobertaForMaskedLM(cfg)
    elif arch == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_embd=C, n_layer=L, n_head=H, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0, **common)
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.T5Config(vocab_size=V, d_model=C, d_kv=8, d_ff=3 * C, num_layers=L, num_heads=H,
                                    dropout_rate=0.0, feed_forward_proj="relu", decoder_start_token_id=0, **common)
        model = transformers.T5ForConditionalGeneration(cfg)
    perturb_(model)
    return model.eval()


def inputs(seed: int = 1) -> torch.Tensor:
    ids = torch.randint(3, V, (2, T - 4), generator=torch.Generator().manual_seed(seed))
    return ids


def hf_logits(model: torch.nn.Module, arch: str, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if arch == "t5":
            return model(input_ids=ids, decoder_input_ids=ids[:, :7]).logits
        if arch == "roberta":  # positions from padding_idx + 1, as ours (offset 2)
            return model(input_ids=ids).logits
        return model(input_ids=ids).prediction_logits if arch == "bert" else model(input_ids=ids).logits


def our_logits(net: torch.nn.Module, arch: str, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if arch == "t5":
            return net(ids, ids[:, :7])
        out = net(ids)
        return out[0] if isinstance(out, tuple) else out


def build(loaded) -> torch.nn.Module:
    net = loaded.network(loaded.config)
    result = net.load_state_dict(loaded.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return net.eval()


@pytest.mark.parametrize("arch", ["bert", "bert-mlm", "bert-untied", "roberta", "roberta-untied", "gpt2", "t5"])
def test_hf_folder_loads_with_identical_logits(arch: str, tmp_path: Path) -> None:
    model = hf_model(arch)
    model.save_pretrained(tmp_path / "hf")
    loaded = open_start(str(tmp_path / "hf"))
    assert loaded.family == {"gpt2": "gpt"}.get(arch, "bert" if arch.startswith(("bert", "roberta")) else arch)
    if arch.startswith(("bert", "roberta")):
        assert loaded.config.nsp_head == (arch == "bert")
        assert loaded.config.tie_embeddings == (not arch.endswith("-untied"))
    net = build(loaded)
    ids = inputs()
    torch.testing.assert_close(our_logits(net, arch, ids), hf_logits(model, arch, ids), rtol=1e-4, atol=1e-4)


def test_untied_bert_folder_as_transformers_4_saved_it_loads(tmp_path: Path) -> None:
    """transformers 4.x tied the untied head's decoder.bias to cls.predictions.bias and saved only the
    latter; 5.x saves both and reads decoder.bias. A 4.x folder loads with the same logits."""
    from safetensors.torch import load_file, save_file

    model = hf_model("bert-untied")
    with torch.no_grad():
        model.cls.predictions.decoder.bias.copy_(model.cls.predictions.bias)  # 4.x: one tensor
    model.save_pretrained(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    state = load_file(weights)
    del state["cls.predictions.decoder.bias"]
    save_file(state, weights, metadata={"format": "pt"})
    loaded = open_start(str(tmp_path / "hf"))
    assert not loaded.config.tie_embeddings
    net = build(loaded)
    torch.testing.assert_close(net.mlm_head.bias, model.cls.predictions.bias.detach())
    ids = inputs()
    torch.testing.assert_close(our_logits(net, "bert-untied", ids), hf_logits(model, "bert-untied", ids),
                               rtol=1e-4, atol=1e-4)


EXPORTS = {
    "bert": (lambda: Bert(BertConfig(vocab_size=V, max_seq_len=T, n_layer=L, n_head=H, d_model=C, dropout=0.0)),
             "AutoModelForMaskedLM"),
    "bert-untied": (lambda: Bert(BertConfig(vocab_size=V, max_seq_len=T, n_layer=L, n_head=H, d_model=C,
                                            dropout=0.0, nsp_head=False, tie_embeddings=False)),
                    "AutoModelForMaskedLM"),
    "roberta": (lambda: Bert(BertConfig(vocab_size=V, max_seq_len=T, n_layer=L, n_head=H, d_model=C, dropout=0.0,
                                        type_vocab_size=1, position_offset=2, norm_eps=1e-5, nsp_head=False)),
                "AutoModelForMaskedLM"),
    "roberta-untied": (lambda: Bert(BertConfig(vocab_size=V, max_seq_len=T, n_layer=L, n_head=H, d_model=C,
                                               dropout=0.0, type_vocab_size=1, position_offset=2, norm_eps=1e-5,
                                               nsp_head=False, tie_embeddings=False)),
                       "AutoModelForMaskedLM"),
    "gpt2": (lambda: GPT(GPTConfig(vocab_size=V, max_seq_len=T, n_layer=L, n_head=H, d_model=C)), "AutoModelForCausalLM"),
    "t5": (lambda: T5(T5Config(vocab_size=V, d_model=C, d_kv=8, d_ff=3 * C, n_layer=L, n_head=H, dropout=0.0)),
           "AutoModelForSeq2SeqLM"),
}


@pytest.mark.parametrize("arch", list(EXPORTS))
def test_export_loads_in_transformers_with_identical_logits_and_round_trips(arch: str, tmp_path: Path) -> None:
    make, auto = EXPORTS[arch]
    torch.manual_seed(0)
    net = make()
    perturb_(net)
    net.eval()
    out = export_hf(type(net), net.config, net.state_dict(), None, tmp_path / "export")
    hf, info = getattr(transformers, auto).from_pretrained(out, attn_implementation="eager",
                                                           output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"]  # every tensor HF reads is written, under its names
    ids = inputs(2)
    if arch.startswith("roberta"):
        ids[:, 0] = 0  # any id but the padding one (1): HF derives positions from it
    hf_out = hf_logits(hf, "t5" if arch == "t5" else "mlm", ids)
    torch.testing.assert_close(our_logits(net, arch, ids), hf_out, rtol=1e-4, atol=1e-4)
    back = open_start(str(out))  # ours -> HF folder -> ours: identical
    assert back.config == net.config
    mine = net.state_dict()
    weights = back.state_dict()
    assert set(weights) == set(mine)
    assert all(torch.equal(weights[k], mine[k]) for k in mine)


def test_export_writes_the_tokenizer_transformers_loads(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(["the cell divides and the protein binds"] * 20,
                                TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=V, min_frequency=1))
    net = Bert(BertConfig(vocab_size=V, max_seq_len=T, n_layer=1, n_head=H, d_model=C, dropout=0.0))
    out = export_hf(Bert, net.config, net.state_dict(), tokenizer, tmp_path / "export")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok("the protein binds")["input_ids"] == tokenizer.backend.encode("the protein binds").ids
    assert hf_tok.mask_token == "[MASK]" and hf_tok.pad_token == "[PAD]"
    loaded = open_start(str(out))
    assert loaded.tokenizer.fingerprint == tokenizer.fingerprint


def test_bert_vocab_txt_folder_gives_a_wordpiece_tokenizer(tmp_path: Path) -> None:
    model = hf_model("bert-mlm")
    model.save_pretrained(tmp_path)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cell", "##s", "divide"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    tok = open_start(str(tmp_path)).tokenizer
    assert tok.encode("The cells divide") == [5, 6, 7, 8]
    assert tok.role_id("mask") == 4 and tok.role_id("pad") == 0


def test_bad_sources_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="has no config.json"):
        open_start(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "falcon"}))
    with pytest.raises(UserError, match="'falcon' model; lmforge reads bert, roberta, electra, gpt2, t5, llama, mistral and qwen2"):
        open_start(str(tmp_path))
    hf_model("gpt2").save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="holds no model.safetensors or pytorch_model.bin"):
        open_start(str(tmp_path / "g"))
    with pytest.raises(UserError, match="does not exist"):
        open_start(str(tmp_path / "missing.ckpt"))
    with pytest.raises(UserError, match="already exists and is not empty"):
        export_hf(GPT, GPTConfig(vocab_size=V, max_seq_len=T, n_layer=1, n_head=H, d_model=C),
                  GPT(GPTConfig(vocab_size=V, max_seq_len=T, n_layer=1, n_head=H, d_model=C)).state_dict(), None,
                  tmp_path)
