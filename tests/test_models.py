"""Model loaders: tiny models are seeded; an HF model loads from a local directory."""

from __future__ import annotations

import pytest
import torch

from hyptest.models import ModelError, load_model, model_identity
from hyptest.models.tiny import load_tiny
from hyptest.study import ModelSpec


def test_tiny_is_seeded():
    a, b, c = load_tiny(seed=1), load_tiny(seed=1), load_tiny(seed=2)
    pa, pb, pc = (next(m.model.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.identity == model_identity(ModelSpec(name="tiny", source="tiny", seed=1))


def test_hf_local_directory_round_trip(tmp_path, tiny_lm):
    tiny_lm.model.save_pretrained(tmp_path / "m")
    tiny_lm.tokenizer.save_pretrained(tmp_path / "m")
    spec = ModelSpec(name="local", source="hf", path=str(tmp_path / "m"), device="cpu")
    lm = load_model(spec)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, tiny_lm.model(ids).logits)
    identity = model_identity(spec)
    assert list(identity["sha256"]) == ["model.safetensors"] and len(identity["sha256"]["model.safetensors"]) == 64


def test_hf_missing_directory():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="no such directory"):  # caught by validation, not fetched
        ModelSpec(name="x", source="hf", path="./no/such/dir")
    spec = ModelSpec.model_construct(name="x", source="hf", path="./no/such/dir", revision=None,
                                     dtype="float32", device="cpu")
    with pytest.raises(ModelError, match="no such directory"):
        model_identity(spec)
    with pytest.raises(ModelError, match="no such directory"):
        load_model(spec)


def test_cuda_requested_without_gpu():
    from hyptest.models.base import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="no CUDA device"):
        resolve_device("cuda")
