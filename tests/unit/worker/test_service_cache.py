"""ServiceCache: one vector budget per process, counted hits/misses/reads, no reloads.

The index is the in-memory stand-in of ``test_vector_cache``; the model (the dense reranker on
the default encoder) is put in the cache's model table, as if loaded.
"""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import REGISTRY

from lexrerank.config import get_settings
from tests.unit.worker.test_vector_cache import ARTICLES, INDEX, embedded_index
from worker.service_cache import ServiceCache
from worker.vector_cache import MIB


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def model(encoder):
    from reranker.dense import DenseReranker

    return DenseReranker(encoder, device="cpu")


def service_cache(index, model, cache_mb: int = 64) -> ServiceCache:
    settings = dataclasses.replace(get_settings(), vector_cache_mb=cache_mb,
                                   vector_compute_max=2, language="en")
    cache = ServiceCache(settings, client=index)
    cache._models[("dense", "en")] = model  # as if loaded from its checkpoint
    return cache


def counters() -> dict[str, float]:
    return {n: sample(f"lexrerank_worker_vector_cache_{n}_total", index=INDEX, model="dense")
            for n in ("hits", "misses", "reads", "computed", "warmed")}


def test_reranks_are_counted_and_fill_one_budget(model) -> None:
    index = embedded_index(model)
    cache = service_cache(index, model)
    before = counters()
    service, first = cache.gather(INDEX, "dense", ["a1", "a2"])
    _, second = cache.gather(INDEX, "dense", ["a1", "a2"])
    index.put("added", {"sentences": ["An added article about easements."]})
    _, third = cache.gather(INDEX, "dense", ["a1", "added"])
    moved = {k: v - before[k] for k, v in counters().items()}
    assert moved == {"hits": 1, "misses": 2, "reads": 3, "computed": 1, "warmed": 0}
    assert second.stats.from_memory and third.stats.computed == 1
    assert service.caches["dense"].memory is cache.memory  # one budget per process
    assert sample("lexrerank_worker_vector_cache_articles", index=INDEX, model="dense") == 3
    assert sample("lexrerank_worker_vector_cache_bytes", index=INDEX,
                  model="dense") == cache.memory.used_bytes
    assert index.scrolls == 0  # nothing read the whole index


def test_a_warm_stops_at_the_budget_and_an_evicted_version_frees_it(model) -> None:
    index = embedded_index(model)
    probe = service_cache(index, model)
    one = probe.gather(INDEX, "dense", ["a0"])[1].entries["dense"][0].nbytes
    cache = service_cache(index, model, cache_mb=1)
    cache.memory.budget_bytes = 4 * one  # (the setting's unit is MiB; four entries here)
    before = counters()["warmed"]
    assert cache.warm(INDEX, "dense") == 4
    assert counters()["warmed"] - before == 4
    assert cache.memory.used_bytes <= cache.memory.budget_bytes
    assert cache.evict_versions(INDEX, keep=["other"]) == [INDEX]
    assert cache.memory.used_bytes == 0 and cache.loaded() == []


def test_the_budget_setting_is_the_process_memory(model) -> None:
    cache = service_cache(embedded_index(model, ids=list(ARTICLES)[:1]), model, cache_mb=3)
    assert cache.memory.budget_bytes == 3 * MIB
    assert sample("lexrerank_worker_vector_cache_budget_bytes") == 3 * MIB
