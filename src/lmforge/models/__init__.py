"""Pure torch networks and their config dataclasses: no Lightning, no data, no tokenizer."""

from lmforge.models.bert import Bert, BertConfig
from lmforge.models.elmo import Elmo, ElmoConfig
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.llama import Llama, LlamaConfig
from lmforge.models.t5 import T5, T5Config

__all__ = ["GPT", "Bert", "BertConfig", "Elmo", "ElmoConfig", "GPTConfig", "Llama", "LlamaConfig", "T5", "T5Config"]
