"""Several-signal fusion, the ensemble checkpoint, per-language weights and their refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import reranker.registry as registry
from lexrerank.config import get_settings
from lexrerank.errors import LanguageMismatch, LexrerankError
from reranker.attentive_cnn import AttentiveCNNReranker
from reranker.checkpoint import (
    check_language,
    load_reranker,
    save_checkpoint,
    save_ensemble,
)
from reranker.cutoff import CutoffPolicy
from reranker.dense import DenseReranker, passage
from reranker.ensemble import Ensemble, EnsembleQuery
from reranker.fusion import (
    SignalWindow,
    WeightedFusion,
    equal_weights,
    simplex_grid,
    tune_weights,
)
from reranker.model_names import MODEL_NAMES
from reranker.paraformer import Paraformer


def test_weighted_fusion_normalises_each_signal_within_the_window():
    fusion = WeightedFusion.of({"bm25": 0.25, "paraformer": 0.75})
    fused = fusion.fuse({"bm25": [30.0, 20.0, 10.0], "paraformer": [-1.0, 3.0, 1.0]})
    assert fused.tolist() == pytest.approx([0.25, 0.875, 0.375])
    assert WeightedFusion.from_dict(fusion.to_dict()) == fusion
    with pytest.raises(ValueError, match="paraformer"):
        fusion.fuse({"bm25": [1.0]})


def test_the_grid_covers_the_simplex():
    grid = simplex_grid(["a", "b", "c"], 0.1)
    assert len(grid) == 66
    assert all(abs(sum(w.values()) - 1) < 1e-9 for w in grid)
    assert {"a": 0.0, "b": 0.3, "c": 0.7} in grid


def test_tuning_gives_weight_to_the_signal_that_finds_the_gold():
    # BM25 puts the gold second, the model puts it first; a useless signal is noise.
    rng = np.random.default_rng(0)
    dev = [SignalWindow(["g", "x", "y"], {"bm25": [2.0, 3.0, 1.0], "model": [3.0, 1.0, 0.0],
                                         "noise": rng.normal(size=3).tolist()}, ["g"])
           for _ in range(20)]
    fusion, policy, f2 = tune_weights(dev, ["bm25", "model", "noise"])
    assert f2 == pytest.approx(1.0)
    assert fusion.as_dict.get("model", 0) > 0.5
    assert policy.count([1.0, 0.1, 0.0]) == 1


def test_equal_weights_fix_the_weights_and_tune_only_the_cut_off():
    # Two gold articles: BM25 and the model agree on them, the third candidate is far below.
    dev = [SignalWindow(["g1", "g2", "x"], {"bm25": [3.0, 2.9, 0.0], "model": [1.0, 0.9, 0.0]},
                        ["g1", "g2"]) for _ in range(5)]
    fusion, policy, f2 = equal_weights(dev, ["bm25", "model"])
    assert fusion.as_dict == {"bm25": 0.5, "model": 0.5}
    assert f2 == pytest.approx(1.0)  # the cut-off keeps both gold articles, drops the third
    assert policy.count([1.0, 0.95, 0.0]) == 2
    with pytest.raises(ValueError, match="no dev"):
        equal_weights([], ["bm25"])


@pytest.fixture()
def members(tmp_path: Path, encoder, tiny_corpus) -> Path:
    weights = tmp_path / "weights" / "en"
    save_checkpoint(weights / "paraformer", Paraformer(encoder),
                    {"languages": ["en"], "fusion": {"kind": "minmax_linear", "alpha": 0.5}})
    texts = [s for sents in tiny_corpus.values() for s in sents]
    acnn = AttentiveCNNReranker.from_corpus(texts, encoder, seed=0, device="cpu")
    save_checkpoint(weights / "attentive-cnn", acnn, {"languages": ["en"]})
    save_checkpoint(weights / "dense", DenseReranker(encoder), {"languages": ["en"]})
    fusion = WeightedFusion.of({"bm25": 0.4, "paraformer": 0.3, "attentive-cnn": 0.2,
                                "dense": 0.1})
    save_ensemble(weights / "ensemble", {"paraformer": "../paraformer",
                                         "attentive-cnn": "../attentive-cnn",
                                         "dense": "../dense"},
                  fusion, CutoffPolicy("margin", 0.1, 3), ["en"], {"chosen_on": "test"})
    return weights


def test_an_ensemble_loads_its_members_and_encodes_the_query_for_each(members: Path):
    model = load_reranker(members / "ensemble", device="cpu")
    assert isinstance(model, Ensemble)
    assert sorted(model.members) == ["attentive-cnn", "dense", "paraformer"]
    # The Paraformer and the dense model share one loaded encoder and one query encoding.
    assert model.members["dense"].encoder is model.members["paraformer"].encoder
    query = model.prepare_query("Can a minor rescind a contract?")
    assert isinstance(query, EnsembleQuery) and sorted(query.parts) == sorted(model.members)
    assert query.parts["dense"] is query.parts["paraformer"]
    assert model.checkpoint_config["languages"] == ["en"]
    version = model.model_version
    config = json.loads((members / "ensemble" / "config.json").read_text())
    config["fusion"]["weights"]["bm25"] = 0.5
    (members / "ensemble" / "config.json").write_text(json.dumps(config))
    assert load_reranker(members / "ensemble", device="cpu").model_version != version


def test_an_ensemble_of_a_missing_member_is_refused(members: Path, tmp_path: Path):
    with pytest.raises(LexrerankError, match="not a checkpoint"):
        save_ensemble(tmp_path / "bad", {"paraformer": "../nowhere"},
                      WeightedFusion.of({"bm25": 1.0}), CutoffPolicy(), ["en"])


def test_a_model_is_refused_for_an_index_of_another_language(members: Path):
    config = load_reranker(members / "paraformer", device="cpu").checkpoint_config
    check_language(config, "paraformer", "statutes", "en")
    check_language(config, "paraformer", "statutes", None)  # an index that records none
    with pytest.raises(LanguageMismatch, match="trained for en statutes.*'alqac' is vi"):
        check_language(config, "paraformer", "alqac", "vi")


def test_names_resolve_per_language(members: Path, monkeypatch):
    monkeypatch.setattr(registry, "SHIPPED_WEIGHTS", members.parent)
    assert registry.checkpoint_path("default", "en") == members / "ensemble"
    assert registry.resolve_name("default", "en") == "ensemble"
    assert registry.member_names("default", "en") == ["paraformer", "attentive-cnn", "dense"]
    assert registry.shipped_languages() == ["en"]
    with pytest.raises(LexrerankError, match="no reranker is trained for vi"):
        registry.checkpoint_path("default", "vi")
    with pytest.raises(LexrerankError, match="no 'paraformer' weights for vi"):
        registry.checkpoint_path("paraformer", "vi")


def test_a_model_dir_overrides_the_shipped_weights(members: Path, monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "SHIPPED_WEIGHTS", tmp_path / "nothing-shipped")
    with pytest.raises(LexrerankError, match="no reranker is trained for en"):
        registry.checkpoint_path("default", "en")
    # <dir>/<language>/<name>, as the CLI and the workers pass LEXRERANK_MODEL_DIR.
    monkeypatch.setenv("LEXRERANK_MODEL_DIR", str(members.parent))
    model_dir = get_settings().model_dir
    assert registry.checkpoint_path("default", "en", model_dir) == members / "ensemble"
    assert registry.available_models("en", model_dir) == list(MODEL_NAMES)
    # <dir>/<name>, for every language.
    assert registry.checkpoint_path("dense", "vi", members) == members / "dense"


def test_the_service_fuses_bm25_and_every_member_in_one_rerank(members: Path, tiny_corpus,
                                                               tiny_queries):
    from worker.rerank_service import RerankService
    from worker.vector_cache import ArticleVectorCache

    model = load_reranker(members / "ensemble", device="cpu")
    ids = sorted(tiny_corpus)
    caches = {}
    for name, member in model.members.items():
        sides = member.encode_articles([tiny_corpus[d] for d in ids])
        caches[name] = ArticleVectorCache.from_entries("tiny", member, {
            d: (side, tiny_corpus[d]) for d, side in zip(ids, sides, strict=True)})
    service = RerankService(model, caches, model.fusion, CutoffPolicy(), "ensemble")
    assert "5" in service.cache and len(service.cache) == len(ids)
    candidates = [(d, float(len(ids) - i)) for i, d in enumerate(ids)]
    query = tiny_queries["5"]
    result = service.rerank(query, candidates)
    # The same fusion computed by hand from each member's own scores.
    signals = {"bm25": [s for _, s in candidates]}
    for name, member in model.members.items():
        signals[name] = member.rerank(query, [caches[name].get([d])[0][0] for d in ids]).scores
    expected = model.fusion.fuse(signals)
    by_id = {h.doc_id: h for h in result.hits}
    assert [by_id[d].score for d in ids] == pytest.approx(expected.tolist(), abs=1e-6)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits),
                                                    reverse=True)
    top = result.hits[0]
    assert top.evidence and abs(sum(e["weight"] for e in top.evidence) - 1) < 1e-3
    assert result.model == "ensemble" and result.model_version == model.model_version


def test_the_dense_model_scores_the_cosine_of_query_and_article(encoder, tiny_corpus,
                                                                tiny_queries, tmp_path):
    from reranker.article_side import article_side_from_record, precompute_articles

    dense = DenseReranker(encoder)
    ids = sorted(tiny_corpus)
    captions = [f"Article {d}" for d in ids]
    records = precompute_articles(dense, [tiny_corpus[d] for d in ids], captions=captions)
    sides = [article_side_from_record(dense, r) for r in records]
    assert sides[0].shape == (384,) and sides[0].dtype == np.float16
    out = dense.rerank(tiny_queries["5"], sides)
    texts = [passage(c, tiny_corpus[d]) for c, d in zip(captions, ids, strict=True)]
    expected = (encoder.encode(texts, normalize_embeddings=True)
                @ encoder.encode(tiny_queries["5"], normalize_embeddings=True))
    np.testing.assert_allclose(out.scores, expected, atol=2e-3)  # fp16 storage
    assert ids[int(np.argmax(out.scores))] == "5"
    # Its vectors are versioned apart from a Paraformer's on the same encoder.
    assert dense.model_version != Paraformer(encoder).model_version
    save_checkpoint(tmp_path / "dense", dense, {"languages": ["en"]})
    loaded = load_reranker(tmp_path / "dense", device="cpu")
    assert isinstance(loaded, DenseReranker) and loaded.model_version == dense.model_version
