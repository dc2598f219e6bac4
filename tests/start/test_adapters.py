"""Every adapter of the registry round-trips: a tiny random ``transformers`` model of its
``model_type`` loads into our network with its logits, our export of it loads back into
``transformers`` with the same logits and tensors; and export refuses what it cannot write
in one sentence, leaving the target's parent as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import refused
from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.models import Bert, BertConfig, Elmo, ElmoConfig
from lmforge.start import open_start
from lmforge.start.hf import ADAPTERS, export_hf, read_state

transformers = pytest.importorskip("transformers")

V, C, L, H, T = 96, 32, 2, 4, 24
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
LLAMA = dict(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2,
             intermediate_size=3 * C, max_position_embeddings=T)
GPT_CKPT = Path(__file__).resolve().parents[1] / "assets" / "legacy" / "gpt" / "last.ckpt"

# model_type -> (transformers config class, its tiny arguments, the model class, how it is called).
# A new adapter needs a line here: test_every_adapter_has_a_tiny_model fails until it has one.
TINY: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "bert": ("BertConfig", dict(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                                intermediate_size=3 * C, max_position_embeddings=T, **NO_DROPOUT),
             "BertForPreTraining", "encoder"),
    "roberta": ("RobertaConfig", dict(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                                      intermediate_size=3 * C, max_position_embeddings=T + 2, type_vocab_size=1,
                                      pad_token_id=1, layer_norm_eps=1e-5, **NO_DROPOUT),
                "RobertaForMaskedLM", "encoder"),
    "electra": ("ElectraConfig", dict(vocab_size=V, embedding_size=C // 2, hidden_size=C, num_hidden_layers=L,
                                      num_attention_heads=H, intermediate_size=3 * C, max_position_embeddings=T,
                                      **NO_DROPOUT), "ElectraForPreTraining", "encoder"),
    "gpt2": ("GPT2Config", dict(vocab_size=V, n_positions=T, n_embd=C, n_layer=L, n_head=H, resid_pdrop=0.0,
                                embd_pdrop=0.0, attn_pdrop=0.0), "GPT2LMHeadModel", "decoder"),
    "t5": ("T5Config", dict(vocab_size=V, d_model=C, d_kv=8, d_ff=3 * C, num_layers=L, num_heads=H, dropout_rate=0.0,
                            feed_forward_proj="relu", decoder_start_token_id=0), "T5ForConditionalGeneration",
           "seq2seq"),
    "llama": ("LlamaConfig", dict(LLAMA, rms_norm_eps=1e-5, rope_theta=500000.0), "LlamaForCausalLM", "decoder"),
    "mistral": ("MistralConfig", dict(LLAMA, sliding_window=None), "MistralForCausalLM", "decoder"),
    "qwen2": ("Qwen2Config", dict(LLAMA, use_sliding_window=False), "Qwen2ForCausalLM", "decoder"),
}

# what our network has that a folder of the architecture does not: ELECTRA's generator is another folder
LACKS = {"electra": "generator."}


def test_every_adapter_has_a_tiny_model() -> None:
    assert set(TINY) == set(ADAPTERS)


def tiny_hf_model(model_type: str) -> torch.nn.Module:
    """A random ``transformers`` model of ``model_type``, every weight moved off its initial
    value (LayerNorms at 1/0 and zero biases would hide a bad mapping)."""
    config_class, kwargs, model_class, _ = TINY[model_type]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**kwargs, attn_implementation="eager")
    model = getattr(transformers, model_class)(config)
    g = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def hf_logits(model: torch.nn.Module, call: str, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids, decoder_input_ids=ids[:, :7]) if call == "seq2seq" else model(input_ids=ids)
    logits = getattr(out, "logits", None)
    return out.prediction_logits if logits is None else logits  # BertForPreTraining names them so


def our_logits(net: torch.nn.Module, call: str, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = net(ids, ids[:, :7]) if call == "seq2seq" else net(ids)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("model_type", list(ADAPTERS))
def test_hf_to_ours_to_hf_keeps_logits_and_tensors(model_type: str, tmp_path: Path) -> None:
    call = TINY[model_type][3]
    original = tiny_hf_model(model_type)
    original.save_pretrained(tmp_path / "hf")
    ids = torch.randint(3, V, (2, T - 4), generator=torch.Generator().manual_seed(1))  # 1 is RoBERTa's padding
    expected = hf_logits(original, call, ids)

    start = open_start(str(tmp_path / "hf"))
    assert start.hf_model_type == model_type and start.network is ADAPTERS[model_type].network
    net = start.network(start.config)
    loaded = net.load_state_dict(start.state_dict(), strict=False)
    lacks = LACKS.get(model_type, "-")
    assert not loaded.unexpected_keys and all(k.startswith(lacks) for k in loaded.missing_keys)
    assert any(k.startswith(lacks) for k in loaded.missing_keys) == (model_type in LACKS)
    torch.testing.assert_close(our_logits(net.eval(), call, ids), expected, rtol=1e-4, atol=1e-4)

    out = export_hf(start.network, start.config, net.state_dict(), None, tmp_path / "export", model_type)
    written = json.loads((out / "config.json").read_text())
    assert written["model_type"] == model_type and written["architectures"] == [TINY[model_type][2]]
    back = getattr(transformers, written["architectures"][0]).from_pretrained(out, attn_implementation="eager")
    torch.testing.assert_close(hf_logits(back.eval(), call, ids), expected, rtol=1e-4, atol=1e-4)
    before, after = read_state(tmp_path / "hf"), read_state(out)
    assert set(after) <= set(before)
    assert all(torch.equal(after[name], before[name]) for name in after)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("kind", "message"), [
    ("llama", "lmforge: error: --kind llama writes a llama network, but the checkpoint holds a gpt network: give "
              "--kind gpt2, or leave --kind out."),
    ("bert", "lmforge: error: --kind bert writes a bert network, but the checkpoint holds a gpt network: give "
             "--kind gpt2, or leave --kind out."),
    ("gpt3", "lmforge: error: --kind 'gpt3' is not an architecture lmforge exports: use one of bert, roberta, "
             "electra, gpt2, t5, llama, mistral, qwen2."),
])
def test_export_refuses_a_kind_that_does_not_fit_and_writes_nothing(kind: str, message: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    parent = tmp_path / "exports"
    parent.mkdir()
    (parent / "notes.txt").write_text("mine")
    before = listing(tmp_path)
    line = refused(capsys, "export", "--ckpt_path", str(GPT_CKPT), "--to", str(parent / "out"), "--kind", kind)
    assert line == message
    assert listing(tmp_path) == before


def test_export_as_gpt2_works_and_a_failed_write_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    main(["export", "--ckpt_path", str(GPT_CKPT), "--to", str(tmp_path / "gpt2"), "--kind", "gpt2"])
    assert transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2").config.n_layer == 1
    import safetensors.torch

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    before = listing(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        main(["export", "--ckpt_path", str(GPT_CKPT), "--to", str(tmp_path / "again")])
    assert listing(tmp_path) == before


def test_export_refusals_of_networks_and_configs_no_kind_fits(tmp_path: Path) -> None:
    elmo = ElmoConfig(vocab_size=V, max_seq_len=T, token_repr="embedding", n_layer=1, hidden_size=16,
                      projection_size=8)
    with pytest.raises(UserError, match=r"^A elmo network has no transformers equivalent to export to \(only bert, "
                                        r"electra, gpt, llama and t5 networks have\)\.$"):
        export_hf(Elmo, elmo, {}, None, tmp_path / "elmo")
    roberta_shaped = BertConfig(vocab_size=V, max_seq_len=T, n_layer=1, n_head=H, d_model=C, position_offset=2,
                                nsp_head=False)
    with pytest.raises(UserError, match=r"position_offset: 2 has no bert equivalent .*: give --kind roberta\.$"):
        export_hf(Bert, roberta_shaped, Bert(roberta_shaped).state_dict(), None, tmp_path / "b", "bert")
    out = export_hf(Bert, roberta_shaped, Bert(roberta_shaped).state_dict(), None, tmp_path / "r")  # the default fits
    assert json.loads((out / "config.json").read_text())["model_type"] == "roberta"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # nothing of the refused ones, no temporary folder
