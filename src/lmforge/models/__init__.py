"""Pure torch networks and their config dataclasses: no Lightning, no data, no tokenizer."""

from torch import nn

from lmforge.models.bert import Bert, BertConfig
from lmforge.models.electra import Electra, ElectraConfig
from lmforge.models.elmo import Elmo, ElmoConfig
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.llama import Llama, LlamaConfig
from lmforge.models.t5 import T5, T5Config

# every network family, by its ``family`` name (RoBERTa and the contrastive encoders are BERTs configured)
NETWORKS: dict[str, type[nn.Module]] = {net.family: net for net in (GPT, Llama, Bert, Electra, T5, Elmo)}

__all__ = ["GPT", "NETWORKS", "Bert", "BertConfig", "Electra", "ElectraConfig", "Elmo", "ElmoConfig", "GPTConfig",
           "Llama", "LlamaConfig", "T5", "T5Config"]
