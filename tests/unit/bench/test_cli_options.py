"""The bench command line's shared option parsing."""

from __future__ import annotations

import pytest
import typer

from bench.cli import _encoder_backends


def test_encoder_backends_are_a_comma_list_of_known_runtimes() -> None:
    assert _encoder_backends(" torch, onnx ,onnx-int8,") == ("torch", "onnx", "onnx-int8")
    assert _encoder_backends("") == ()


def test_an_unknown_encoder_backend_names_itself_and_the_known_ones() -> None:
    with pytest.raises(typer.BadParameter, match="openvino.*torch, onnx, onnx-int8"):
        _encoder_backends("onnx,openvino")
