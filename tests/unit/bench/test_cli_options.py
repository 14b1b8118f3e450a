"""The bench command line's shared option parsing."""

from __future__ import annotations

import pytest
import typer

from bench.cli import _encoder_backends, _runtime_candidates


def test_encoder_backends_are_a_comma_list_of_known_runtimes() -> None:
    assert _encoder_backends(" torch, onnx ,onnx-int8,") == ("torch", "onnx", "onnx-int8")
    assert _encoder_backends("") == ()


def test_an_unknown_encoder_backend_names_itself_and_the_known_ones() -> None:
    with pytest.raises(typer.BadParameter, match="openvino.*torch, onnx, onnx-int8"):
        _encoder_backends("onnx,openvino")


def test_runtime_candidates_need_the_torch_reference_and_known_names() -> None:
    assert _runtime_candidates("torch, onnx,onnx,openvino-int8") == (
        "torch", "onnx", "openvino-int8")
    with pytest.raises(typer.BadParameter, match="torch missing"):
        _runtime_candidates("onnx,onnx-int8")
    with pytest.raises(typer.BadParameter, match="unknown tensorrt: give torch"):
        _runtime_candidates("torch,tensorrt")
