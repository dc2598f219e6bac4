"""The Llama task through the command line: continued pretraining from a Hugging Face Llama
folder with its byte-fallback BPE tokenizer (as Llama 2 and Mistral ship), checkpoints that
reload as a Llama, and export back to a folder transformers loads with identical logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, byte_fallback_bpe
from lmforge.cli import main
from lmforge.data import TokenizerSpec, train_tokenizer
from lmforge.data.documents import read_local
from lmforge.models import Llama
from lmforge.start import open_start
from lmforge.tasks import LlamaCausalLMTask



def test_continued_pretraining_of_a_hf_llama_and_export_back(tmp_path: Path, tiny_corpus: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = byte_fallback_bpe(read_local(str(tiny_corpus)))
    assert tokenizer.role_id("eos") == 2 and tokenizer.role_id("bos") == 1
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                      max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                                      tie_word_embeddings=False)
    folder = tmp_path / "hf-llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                              "unk_token": "<unk>"}))
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(CONFIGS / "llama" / "tiny.yaml"), "--model.init_from", str(folder),
          "--data.max_documents", "40", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
          "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    last = next(tmp_path.glob("logs/*/version_0/checkpoints/last.ckpt"))
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["lmforge"]["network"] == "lmforge.models.llama.Llama"
    assert ckpt["lmforge"]["task"] == "lmforge.tasks.causal_lm.LlamaCausalLMTask"
    hparams = ckpt["hyper_parameters"]
    assert hparams["init_from"] is None and hparams["config"]["d_model"] == 32 and hparams["config"]["n_kv_head"] == 2
    assert hparams["config"]["tie_embeddings"] is False
    assert ckpt["lmforge"]["tokenizer"] == tokenizer.to_str()  # the folder's tokenizer, not a retrained one

    # the checkpoint reloads as a Llama (its hyper-parameters pick the config class), and starts new runs
    main(["predict", "--ckpt_path", str(last), "--model.prompts", "The cell", "--model.max_new_tokens", "4",
          "--trainer.enable_progress_bar", "false"])
    task = LlamaCausalLMTask(init_from=str(last))
    assert isinstance(task.net, Llama) and task.net.config.n_kv_head == 2
    task.eval()

    out = tmp_path / "exported"
    main(["export", "--ckpt_path", str(last), "--to", str(out)])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "The cell divides, naïvely 🧬"  # the emoji is not in the vocabulary: byte fallback
    ids = tokenizer.backend.encode(text).ids
    assert "<0xF0>" in tokenizer.backend.encode(text).tokens
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        torch.testing.assert_close(task.net(torch.tensor([ids])), hf(input_ids=torch.tensor([ids])).logits,
                                   rtol=1e-5, atol=1e-5)
    assert open_start(str(out)).config == task.net.config


def test_a_gpt_checkpoint_is_refused_by_the_llama_task(tmp_path: Path, tiny_corpus: Path) -> None:
    from lmforge.errors import UserError

    transformers = pytest.importorskip("transformers")
    tokenizer = train_tokenizer(read_local(str(tiny_corpus)), TokenizerSpec(vocab_size=300))
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=1,
                                                         n_head=2, n_positions=32)).save_pretrained(tmp_path / "g")
    with pytest.raises(UserError, match="holds gpt weights, but LlamaCausalLMTask needs llama weights"):
        LlamaCausalLMTask(init_from=str(tmp_path / "g"))
