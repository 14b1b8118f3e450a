"""Names declared once: the shipped rerankers, the encoder backends (imports nothing).

The gateway checks ``ext.rerank.model`` against these names without loading torch, the
workers and :mod:`reranker.registry` map them to checkpoint directories. Keep this module
free of imports: ``python -X importtime -c "import reranker.model_names"`` must show no torch.
"""

#: The shipped model names, in the order :mod:`reranker.registry` picks a language's default
#: (the first one that has a checkpoint for the language).
MODEL_NAMES = ("ensemble", "paraformer", "attentive-cnn", "dense")
#: The name meaning "the default model of the index's language".
DEFAULT_NAME = "default"

#: The encoder runtimes a model can be served with (:mod:`reranker.onnx_encoder`): ``torch``,
#: the reference, first.
ENCODER_BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-int8-smooth")
#: The ``LEXRERANK_ENCODER_BACKEND`` value that lets each checkpoint's language choose.
AUTO_BACKEND = "auto"
#: What ``auto`` serves per language: the fastest CPU variant whose F2 stayed within 0.005 of
#: torch fp32's on that language's COLIEE rolling-origin mean (README, "CPU encoder
#: backends"). Any other language, and a checkpoint that names none, gets ``onnx`` (fp32,
#: the same F2 as torch in every English year, the same Japanese embeddings).
AUTO_BACKEND_BY_LANGUAGE = {"en": "onnx-int8-smooth"}
AUTO_FALLBACK_BACKEND = "onnx"


def backend_for(backend: str, languages: object) -> str:
    """The concrete backend ``backend`` means for a checkpoint of ``languages`` (its config's
    list): itself, or for ``auto`` the variant of :data:`AUTO_BACKEND_BY_LANGUAGE` that all
    of them share (a mixed or unknown list gets :data:`AUTO_FALLBACK_BACKEND`)."""
    if backend != AUTO_BACKEND:
        return backend
    chosen = {AUTO_BACKEND_BY_LANGUAGE.get(str(language), AUTO_FALLBACK_BACKEND)
              for language in (languages if isinstance(languages, list | tuple) else ())}
    return chosen.pop() if len(chosen) == 1 else AUTO_FALLBACK_BACKEND


__all__ = ["AUTO_BACKEND", "AUTO_BACKEND_BY_LANGUAGE", "AUTO_FALLBACK_BACKEND", "DEFAULT_NAME",
           "ENCODER_BACKENDS", "MODEL_NAMES", "backend_for"]
