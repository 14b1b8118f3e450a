"""bench.quality_models: the fold models as `bench quality` and `bench release` score them."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bench import quality_models
from lexrerank import config
from reranker.encoder import load_encoder
from reranker.encoder_delta import save_delta


def test_a_shipped_encoder_delta_is_scored_through_the_cache(tmp_path, monkeypatch):
    # bench release scores its staged float16 delta before shipping it: the delta is built
    # into LEXRERANK_CACHE on first use, so the memoised encoder must be given that cache.
    model = load_encoder(None, device="cpu")
    with torch.no_grad():
        model[0].auto_model.encoder.layer[0].output.dense.bias.add_(0.01)
    delta = save_delta(model, "all-MiniLM-L6-v2", tmp_path / "delta")
    settings = dataclasses.replace(config.get_settings(), cache_dir=tmp_path / "cache")
    monkeypatch.setattr(quality_models, "get_settings", lambda: settings)
    monkeypatch.setattr(quality_models, "_frozen_encoders", {})

    encoder = quality_models.frozen_encoder(str(delta))
    texts = ["A minor may rescind a contract.", "The lessee must return the thing."]
    np.testing.assert_allclose(encoder.encode(texts), model.encode(texts), atol=2e-3)
    assert any((tmp_path / "cache" / "encoders").glob("delta-v2-*"))
