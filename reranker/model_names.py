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
ENCODER_BACKENDS = ("torch", "onnx", "onnx-int8")

__all__ = ["DEFAULT_NAME", "ENCODER_BACKENDS", "MODEL_NAMES"]
