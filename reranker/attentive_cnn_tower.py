"""The Attentive CNN tower: one hierarchical encoder for queries and articles.

A text is a list of 1+ sentences::

    words --embedding--> [T, E] --Conv1d(k=3)+tanh--> h [T, C]
        --additive attention over real words (softmax)--> sentence vector [C]
    sentences [L, C] --sparsemax attention with a learned context vector--> article vector [C]
        --L2 normalise--> [C]

Score = cos(query, article) * exp(log_scale) (a learned temperature, init 10).
:func:`init_embeddings_from_encoder` initialises the word embeddings from a sentence encoder's
input embeddings.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reranker.additive_attention import AdditiveAttention
from reranker.word_vocab import WordVocab

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["AttentiveCNN", "init_embeddings_from_encoder"]


def _input_embeddings(sentence_transformer: SentenceTransformer) -> Tensor:
    # A transformers PreTrainedModel, found by attribute (torch types submodules as Module).
    hf_model: Any = getattr(sentence_transformer, "transformers_model", None)
    if hf_model is None:
        hf_model = sentence_transformer[0].auto_model
    return hf_model.get_input_embeddings().weight.detach().float().cpu()


def init_embeddings_from_encoder(
    vocab: WordVocab, sentence_transformer: SentenceTransformer, seed: int = 0
) -> Tensor:
    """Initial word embeddings [V, E] from the encoder's input (word-piece) embeddings.

    A word that is one token of the encoder's tokenizer takes that token's embedding; a word
    split into several pieces takes their mean (unknown pieces skipped); the rest (and
    ``<unk>``) get N(0, 0.02) like BERT's own initialisation; ``<pad>`` is 0. E is the
    encoder's hidden size (384 for MiniLM).
    """
    table = _input_embeddings(sentence_transformer)
    tokenizer = sentence_transformer.tokenizer
    unk_id = tokenizer.unk_token_id
    gen = torch.Generator().manual_seed(seed)
    out = torch.randn(len(vocab), table.shape[1], generator=gen) * 0.02
    out[WordVocab.PAD] = 0.0
    words = vocab.tokens[2:]
    if words:
        pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
        for i, ids in enumerate(pieces, start=2):
            known = [j for j in ids if j != unk_id]
            if known:
                out[i] = table[known].mean(dim=0)
    return out


class AttentiveCNN(nn.Module):
    """The hierarchical tower (see the module docstring).

    Args:
        vocab_size: V, including pad and unk.
        embedding_dim: E (the encoder's hidden size when initialised from it).
        channels: C, the convolution's output channels = the vector size H.
        kernel_size: odd width of the word convolution.
        attention_dim: size of both attention layers' tanh layer.
        dropout: on word embeddings (training only).
        init_scale: initial temperature multiplying the cosine.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 384,
        channels: int = 256,
        kernel_size: int = 3,
        attention_dim: int = 128,
        dropout: float = 0.1,
        init_scale: float = 10.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd so the convolution keeps the length")
        self.config: dict[str, Any] = {
            "vocab_size": vocab_size,
            "embedding_dim": embedding_dim,
            "channels": channels,
            "kernel_size": kernel_size,
            "attention_dim": attention_dim,
            "dropout": dropout,
            "init_scale": init_scale,
        }
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=WordVocab.PAD)
        self.dropout = nn.Dropout(dropout)
        # Zero padding of the convolution equals the zero embeddings of <pad>, so a sentence's
        # vector does not depend on how much padding its batch has.
        self.conv = nn.Conv1d(embedding_dim, channels, kernel_size, padding=kernel_size // 2)
        self.word_attention = AdditiveAttention(channels, attention_dim, "softmax")
        self.sentence_attention = AdditiveAttention(channels, attention_dim, "sparsemax")
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    @property
    def channels(self) -> int:
        return self.config["channels"]

    def encode(
        self, token_ids: Tensor, word_mask: Tensor, sentence_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Encode B texts.

        Args:
            token_ids: LongTensor [B, L, T] word ids (0 = pad).
            word_mask: BoolTensor [B, L, T], True for real words.
            sentence_mask: BoolTensor [B, L], True for real sentences.
        Returns:
            ``(vectors [B, C] L2-normalised, sentence_weights [B, L])``; a sentence without
            words, and padding, get weight 0; a text without words gets the zero vector.
        """
        b, n_sent, _ = token_ids.shape
        sentence_mask = sentence_mask & word_mask.any(dim=-1)
        flat_mask = sentence_mask.reshape(-1)
        rows = flat_mask.nonzero(as_tuple=True)[0]
        sentences = torch.zeros(b * n_sent, self.channels, device=token_ids.device)
        if rows.numel():
            # Only real sentences go through the convolution, trimmed to their longest one:
            # padding sentences are most of a batch of articles of uneven length.
            ids = token_ids.reshape(b * n_sent, -1)[rows]
            wmask = word_mask.reshape(b * n_sent, -1)[rows]
            t_max = int(wmask.sum(dim=-1).max())
            ids, wmask = ids[:, :t_max], wmask[:, :t_max]
            x = self.dropout(self.embedding(ids)) * wmask.unsqueeze(-1)
            # tanh, not ReLU: signed features let unrelated texts start near cosine 0; with
            # ReLU every vector lies in the positive orthant and all cosines start near 1.
            h = torch.tanh(self.conv(x.transpose(1, 2))).transpose(1, 2)  # [R, T, C]
            pooled, _ = self.word_attention(h, wmask)
            sentences = sentences.to(pooled.dtype).index_copy(0, rows, pooled)
        sentences = sentences.view(b, n_sent, self.channels)
        vectors, weights = self.sentence_attention(sentences, sentence_mask)
        return F.normalize(vectors, dim=-1), weights

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def score(self, queries: Tensor, articles: Tensor) -> Tensor:
        """Scaled cosine: queries [..., C] x articles [N, C] -> scores [..., N]."""
        return (queries @ articles.transpose(-1, -2)) * self.scale
