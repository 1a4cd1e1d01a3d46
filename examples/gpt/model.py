"""A small GPT-style decoder and a learnable synthetic token data set, shared by ``examples/gpt/train.py``
and ``benchmarks/bench_engine.py``. Plain PyTorch: nothing here knows about accelops or DeepSpeed.

Model: token + learned position embedding, ``n_layer`` pre-LayerNorm blocks (causal self-attention with
``torch.nn.functional.scaled_dot_product_attention``, then a GELU MLP), a final LayerNorm and an LM head
(tied to the token embedding with ``tie_weights=True``). ``model(x)`` returns the logits,
``model(x, y)`` the mean next-token cross-entropy.

Data: :func:`synthetic_tokens` makes arithmetic progressions modulo the vocabulary (``t[i+1] = t[i] + k``,
start and stride drawn per sample from a fixed seed), so the next token is a function of the two before
it: a model that learns this drives the loss from ln(vocab) towards 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    vocab_size: int = 256
    seq_len: int = 32
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    dropout: float = 0.0
    tie_weights: bool = False


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"d_model {cfg.d_model} is not divisible by n_head {cfg.n_head}")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(batch, seq, width))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    # Hugging Face's convention, which accelops' engine reads to choose its FSDP units (ZeRO 1-3): one unit
    # per Block, the rest (embeddings, final norm, head) in the root unit, so a tied head and token
    # embedding stay in one unit. DeepSpeed ignores it.
    _no_split_modules = ["Block"]

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor = None) -> torch.Tensor:
        seq = idx.shape[1]
        if seq > self.cfg.seq_len:
            raise ValueError(f"sequence of {seq} tokens is longer than seq_len {self.cfg.seq_len}")
        pos = torch.arange(seq, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))


def synthetic_tokens(num_samples: int, seq_len: int, vocab_size: int, seed: int = 1234,
                     max_stride: int = 4) -> torch.utils.data.TensorDataset:
    """``num_samples`` pairs ``(x, y)`` of int64 tokens, ``y`` being ``x`` shifted by one: arithmetic
    progressions ``(start + i * stride) % vocab_size`` with start and stride (1..max_stride) drawn from
    ``torch.Generator().manual_seed(seed)``; the same on every rank and every run."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab_size, (num_samples, 1), generator=gen)
    stride = torch.randint(1, max_stride + 1, (num_samples, 1), generator=gen)
    tokens = (start + stride * torch.arange(seq_len + 1)) % vocab_size
    return torch.utils.data.TensorDataset(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
