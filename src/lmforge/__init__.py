"""lmforge: pretrain language models of every family with PyTorch Lightning."""

__version__ = "0.1.0"
