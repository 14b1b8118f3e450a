"""The project's exception hierarchy, documented in one place.

Every error that is the user's to fix is a :class:`LexrerankError`; its message names the
problem and, where possible, the fix. The reranker library declares the types it raises in
:mod:`reranker.errors` (it imports nothing of the CLI or the services); this module imports
them so that every layer catches them by one name, and is where the whole tree is documented.
The services add no subclasses of their own: they raise :class:`LexrerankError` itself.

::

    LexrerankError               the root: a user-facing error, one line of text
    ├── InputError               a malformed input file (corpus, query set)
    └── LanguageMismatch         no model fits the index's language

:class:`LexrerankError`
    Raised by every package for a problem the user can fix: a bad setting
    (:mod:`lexrerank.config`), an unreachable or misconfigured service, an unknown model or
    index, a corrupted or inconsistent checkpoint (:mod:`reranker.checkpoint`), an encoder
    that is not on this machine (:mod:`reranker.encoder`), stored vectors of another model
    version (:mod:`reranker.article_side`), bad task arguments (:mod:`worker.tasks`).
    Shown by the CLI as ``error: <message>`` on stderr with exit code 2, never a traceback.
    Raised in a Celery task it fails that task (the task declares it in ``throws``, so no
    traceback is logged); the gateway then answers with the first-stage order, status
    ``fallback`` and the reason ``worker error: LexrerankError: <message>``.
:class:`InputError`
    Raised by the readers of untrusted files: :mod:`reranker.input_files`,
    :mod:`reranker.xml_input`, the query-set readers (:mod:`reranker.datasets`) and the
    corpus parsers (:mod:`indexer.parsers`). Its message is ``<path>[:<line>]: <reason>``;
    ``path``, ``line`` and ``reason`` are also attributes. Nothing is indexed or trained from
    a file that raised it. Shown by the CLI like any :class:`LexrerankError`.
:class:`LanguageMismatch`
    Raised by :mod:`reranker.registry` (no checkpoint for the language) and
    :func:`reranker.checkpoint.check_language` (the model was trained for another language).
    The CLI shows it as one line; in a worker it fails the rerank task and the gateway falls
    back with the category ``language_mismatch``.
"""

from reranker.errors import InputError, LanguageMismatch, LexrerankError

__all__ = ["InputError", "LanguageMismatch", "LexrerankError"]
