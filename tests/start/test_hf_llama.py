"""Hugging Face interop of the Llama family: LlamaForCausalLM, MistralForCausalLM and
Qwen2ForCausalLM folders load into our Llama with transformers' logits, and our Llama exports to
folders transformers loads with ours; options we do not implement are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import Llama, LlamaConfig
from lmforge.start import open_start
from lmforge.start.hf import export_hf

transformers = pytest.importorskip("transformers")

V, C, L, H, KV, T = 96, 64, 2, 4, 2, 24
ARCHS = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config"}


def perturb_(model: torch.nn.Module, seed: int = 4321) -> None:
    """Move every weight off its initial value (RMSNorms at 1, zero biases would hide a bad mapping)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def hf_config(arch: str, **extra):
    shape = dict(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=KV,
                 intermediate_size=3 * C, max_position_embeddings=T, rms_norm_eps=1e-5, rope_theta=500000.0,
                 attn_implementation="eager")
    if arch == "mistral":
        shape["sliding_window"] = None
    return getattr(transformers, ARCHS[arch])(**{**shape, **extra})


def hf_model(arch: str, tied: bool = False, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(arch, tie_word_embeddings=tied, **extra))
    perturb_(model)
    return model.eval()


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (2, T - 4), generator=torch.Generator().manual_seed(seed))


def build(loaded) -> torch.nn.Module:
    net = loaded.network(loaded.config)
    result = net.load_state_dict(loaded.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return net.eval()


# Llama 3.1/3.2's frequency scaling, its wavelengths thresholds within this tiny model's range
LLAMA3 = {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


@pytest.mark.parametrize(("arch", "tied", "extra"), [
    ("llama", False, {}), ("llama", True, {"rope_scaling": {"rope_type": "llama3", **LLAMA3}}), ("mistral", False, {}),
    ("mistral", False, {"sliding_window": 8}), ("qwen2", True, {})])
def test_hf_folder_loads_with_identical_logits(arch: str, tied: bool, extra: dict, tmp_path: Path) -> None:
    model = hf_model(arch, tied, **extra)
    model.save_pretrained(tmp_path / "hf")
    loaded = open_start(str(tmp_path / "hf"))
    assert loaded.network is Llama and loaded.hf_model_type == arch
    assert loaded.config.n_kv_head == KV and loaded.config.rope_base == 500000.0
    assert loaded.config.tie_embeddings == tied and loaded.config.qkv_bias == (arch == "qwen2")
    assert loaded.config.rope_scaling == (LLAMA3 if "rope_scaling" in extra else None)
    assert loaded.config.sliding_window == extra.get("sliding_window")
    net = build(loaded)
    ids = inputs()
    with torch.no_grad():
        ours, theirs = net(ids), model(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kind", "shape"), [
    ("llama", {}), ("llama", {"tie_embeddings": False, "rope_scaling": LLAMA3}), ("mistral", {}),
    ("mistral", {"sliding_window": 8}), ("qwen2", {"qkv_bias": True, "tie_embeddings": False})])
def test_export_loads_in_transformers_with_identical_logits_and_round_trips(kind: str, shape: dict,
                                                                            tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Llama(LlamaConfig(vocab_size=V, max_seq_len=T, n_layer=L, n_head=H, n_kv_head=KV, d_model=C, d_ff=3 * C,
                            rope_base=100000.0, **shape))
    perturb_(net)
    net.eval()
    out = export_hf(Llama, net.config, net.state_dict(), None, tmp_path / "export", kind)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    assert type(hf).__name__.lower().startswith(kind)
    ids = inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(net(ids), hf(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    back = open_start(str(out))
    assert back.config == net.config
    mine, weights = net.state_dict(), back.state_dict()
    assert set(weights) == set(mine) and all(torch.equal(weights[k], mine[k]) for k in mine)


@pytest.mark.parametrize(("arch", "extra", "key"), [
    ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}},
     "rope_scaling"),
    ("llama", {"attention_bias": True}, "attention_bias"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 8}, "sliding_window"),
])
def test_unsupported_options_are_refused_by_name(arch: str, extra: dict, key: str, tmp_path: Path) -> None:
    hf_model(arch).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(extra)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=f"has {key}=.* which lmforge's Llama does not implement"):
        open_start(str(tmp_path))


@pytest.mark.parametrize(("arch", "bos", "eos"), [("qwen2", None, "<|endoftext|>"),
                                                  ("llama", "<|begin_of_text|>", "<|end_of_text|>")])
def test_the_folders_byte_level_bpe_comes_with_the_weights(arch: str, bos: str | None, eos: str,
                                                            tmp_path: Path) -> None:
    """Qwen2 and Llama 3 (and SmolLM2) ship byte-level BPE; their end-of-text token ends documents."""
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, trainers

    from lmforge.objectives import CausalLM

    specials = [t for t in (bos, eos) if t]
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(["the cell divides and the protein binds"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    backend.add_tokens(["<s>", "</s>"])  # another role's spellings as ordinary tokens: they play no role here
    model = transformers.AutoModelForCausalLM.from_config(hf_config(arch, vocab_size=backend.get_vocab_size()))
    model.save_pretrained(tmp_path)
    backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos, **({"bos_token": bos} if bos else {}),
                                                                "tokenizer_class": "PreTrainedTokenizerFast"}))
    tokenizer = open_start(str(tmp_path)).tokenizer
    assert backend.token_to_id("</s>") is not None and backend.token_to_id("<s>") is not None
    assert tokenizer.role_id("eos") == backend.token_to_id(eos)
    if bos:
        assert tokenizer.role_id("bos") == backend.token_to_id(bos)
    CausalLM().bind(tokenizer)  # a decoder's tokenizer: accepted for next-token prediction
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "the proteins divide, naïvely"
    assert tokenizer.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]
