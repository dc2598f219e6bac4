"""ELECTRA's networks: factorised embeddings in BERT, the generator and discriminator sharing
one embedding layer, their sizes against ``transformers``' count, and the discriminator as an encoder."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import Bert, BertConfig, Electra, ElectraConfig
from lmforge.models.electra import SHARED

TINY = ElectraConfig(vocab_size=97, max_seq_len=16, n_layer=2, n_head=2, d_model=32, embedding_size=16,
                     generator_d_model=8, generator_n_head=1, dropout=0.0)


def test_bert_without_embedding_size_keeps_its_shape() -> None:
    net = Bert(BertConfig(vocab_size=50, max_seq_len=8, n_layer=1, n_head=2, d_model=16))
    assert not hasattr(net, "proj_emb") and net.wte.weight.shape == (50, 16)
    assert net.mlm_head.dense.weight.shape == (16, 16)


def test_factorised_embeddings_project_to_the_width_and_the_head_back() -> None:
    net = Bert(BertConfig(vocab_size=50, max_seq_len=8, n_layer=1, n_head=2, d_model=32, embedding_size=8))
    assert net.wte.weight.shape == (50, 8) and net.wpe.weight.shape == (8, 8) and net.ln_emb.weight.shape == (8,)
    assert net.proj_emb.weight.shape == (32, 8)  # Linear(8 -> 32)
    assert net.mlm_head.dense.weight.shape == (8, 32) and net.mlm_head.ln.weight.shape == (8,)
    ids = torch.randint(50, (3, 8))
    assert net.encode(ids).shape == (3, 8, 32) and net(ids).shape == (3, 8, 50)


def test_an_encoder_without_mlm_head_says_so() -> None:
    net = Bert(BertConfig(vocab_size=50, max_seq_len=8, n_layer=1, n_head=2, d_model=16, nsp_head=False,
                          mlm_head=False))
    assert not hasattr(net, "mlm_head")
    with pytest.raises(ValueError, match="no MLM head"):
        net.mlm_logits(torch.zeros(2, 16))


def test_generator_and_discriminator_share_one_embedding_layer() -> None:
    net = Electra(TINY)
    for name in SHARED:
        pairs = zip(getattr(net.generator, name).parameters(), getattr(net.discriminator, name).parameters())
        for p_gen, p_disc in pairs:
            assert p_gen is p_disc and p_gen.data_ptr() == p_disc.data_ptr()
    # each projects the shared width to its own
    assert net.generator.proj_emb.weight.shape == (8, 16) and net.discriminator.proj_emb.weight.shape == (32, 16)
    # counted once, and an update of one is the other's
    assert net.num_params() == len(torch.cat([p.flatten() for p in net.parameters()]))
    torch.optim.SGD(net.parameters(), lr=1.0).zero_grad()
    net.discriminate(torch.randint(97, (2, 16))).sum().backward()
    assert net.generator.wte.weight.grad is net.discriminator.wte.weight.grad
    # a state dict round trip keeps them one tensor
    other = Electra(TINY)
    other.load_state_dict(net.state_dict())
    assert other.generator.wte.weight is other.discriminator.wte.weight
    torch.testing.assert_close(other.generator.wte.weight, net.discriminator.wte.weight)


def test_shapes_of_both_networks() -> None:
    net = Electra(TINY)
    ids = torch.randint(97, (3, 16))
    assert net.discriminate(ids).shape == (3, 16) and net.token_states(ids, torch.ones_like(ids)).shape == (3, 16, 32)
    gen = net.generator
    assert gen.config.d_model == 8 and gen.config.mlp_width == 32 and gen.config.n_layer == 2
    assert gen.mlm_logits(gen.encode(ids)).shape == (3, 16, 97)
    assert not hasattr(net.discriminator, "mlm_head") and not hasattr(net.discriminator, "nsp")


def test_the_generator_defaults_follow_the_paper() -> None:
    gen = ElectraConfig(d_model=768, n_head=12, embedding_size=768).generator()  # a quarter; 64 per head, 4x MLP
    assert (gen.d_model, gen.n_head, gen.mlp_width, gen.n_layer) == (192, 3, 768, 12)


def test_a_generator_wider_than_the_discriminator_is_refused() -> None:
    with pytest.raises(UserError, match=r"generator_d_model=128 is wider than the discriminator's d_model=64"):
        ElectraConfig(d_model=64, generator_d_model=128)


@pytest.mark.parametrize("size", ["small", "tiny"])
def test_sizes_are_those_transformers_counts(size: str) -> None:
    transformers = pytest.importorskip("transformers")
    config = ElectraConfig() if size == "small" else TINY
    disc, gen = config.discriminator(), config.generator()

    def hf(c: BertConfig) -> dict:
        return dict(vocab_size=c.vocab_size, embedding_size=c.embedding_width, hidden_size=c.d_model,
                    num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, intermediate_size=c.mlp_width,
                    max_position_embeddings=c.max_seq_len)

    with torch.device("meta"):
        net = Electra(config)
        hf_disc = transformers.ElectraForPreTraining(transformers.ElectraConfig(**hf(disc)))
        hf_gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(**hf(gen)))
    assert net.discriminator_params() == sum(p.numel() for p in hf_disc.parameters())
    assert net.generator.num_params() == sum(p.numel() for p in hf_gen.parameters())
    if size == "small":
        assert net.discriminator_params() == 13_549_057  # google/electra-small-discriminator


def test_the_discriminator_is_the_encoder_downstream() -> None:
    net = Electra(TINY)
    network, config, state = Electra.encoder(TINY, net.state_dict())
    encoder = network(config)
    encoder.load_state_dict(state)  # strict: every weight of the encoder, nothing else
    ids = torch.randint(97, (2, 16))
    net.eval(), encoder.eval()
    ones = torch.ones_like(ids)
    torch.testing.assert_close(encoder.token_states(ids, ones), net.token_states(ids, ones))


def test_the_cramming_options_reach_both_networks_and_export_refuses_them() -> None:
    from dataclasses import replace

    from lmforge.models.layers import PreNormBlock
    from lmforge.start.hf import ADAPTERS

    net = Electra(replace(TINY, pre_norm=True, bias=False))
    for part in (net.discriminator, net.generator):
        assert all(isinstance(block, PreNormBlock) for block in part.blocks) and isinstance(part.ln_f, torch.nn.LayerNorm)
        assert not [name for name, _ in part.blocks.named_parameters() if name.endswith("bias") and "ln" not in name]
    assert ADAPTERS["electra"].refusal(replace(TINY, bias=False)) is not None
    assert ADAPTERS["electra"].refusal(TINY) is None
