"""The untrained-model control: a model's architecture and tokenizer with freshly initialised weights.

Deutch et al. (NAACL 2024, "In-context learning and gradient descent
revisited") show that Dai et al.'s similarity metrics come out high even for
models that cannot do in-context learning, among them untrained ones; a
metric that an untrained model scores as well as the trained one cannot be
evidence that the trained model's ICL works like gradient descent. A study
gives a model ``control: untrained`` to run every analysis on such a model as
well (:meth:`hyptest.study.ModelSpec.expand_control`).

The control of seed ``s`` is exactly the model that
``torch.manual_seed(s); type(model)(model.config)`` builds: every module's
own constructor and the model's ``post_init`` (its ``_init_weights``), in
their order, drawing from the global torch generator seeded with ``s`` (the
caller's generator state is restored afterwards). The same seed therefore
gives the same weights with the same torch and transformers versions, which
are part of the control's identity. The tokenizer, dtype, device and
attention implementation are the trained model's.
"""

from __future__ import annotations

import copy
from typing import Any

from ..provenance import package_version
from .base import LoadedModel

__all__ = ["untrained_identity", "untrained_model"]

#: How the control's weights are made, in words (part of its identity and provenance).
INIT_RECIPE = "type(model)(config) built under torch.manual_seed(init_seed): the model's own initialisers"


def untrained_identity(trained: dict[str, Any], seed: int) -> dict[str, Any]:
    """The identity of the untrained control of seed ``seed`` of a model whose identity is ``trained``.

    Says it is an untrained control, with its init seed, what it was
    re-initialised from (the trained model's identity: architecture, config
    and tokenizer come from there) and the library versions whose
    initialisers drew the weights.
    """
    return {"source": trained.get("source"), "control": "untrained", "init_seed": int(seed),
            "init": INIT_RECIPE, "of": dict(trained), "torch": package_version("torch"),
            "transformers": package_version("transformers")}


def untrained_model(lm: LoadedModel, seed: int, *, name: str | None = None) -> LoadedModel:
    """The untrained control of ``lm``: its architecture, config and tokenizer, weights re-initialised.

    Parameters
    ----------
    lm : LoadedModel
        The trained model (not modified; drop it afterwards to free its memory).
    seed : int
        Init seed: the weights are those ``torch.manual_seed(seed);
        type(lm.model)(config)`` gives (the global torch generator's state is
        restored afterwards).
    name : str, optional
        Name of the control in results (default ``lm.name``).

    Returns
    -------
    LoadedModel
        In eval mode, on ``lm.device``, in the trained model's dtype and
        attention implementation; ``identity`` from :func:`untrained_identity`.
    """
    import torch

    trained = lm.model
    config = copy.deepcopy(trained.config)
    dtype = next(trained.parameters()).dtype
    attention = getattr(trained.config, "_attn_implementation", None)
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        fresh = type(trained)(config)
    if attention and getattr(fresh.config, "_attn_implementation", None) != attention:
        fresh.set_attn_implementation(attention)
    fresh.to(device=lm.device, dtype=dtype).eval()
    return LoadedModel(name=name or lm.name, model=fresh, tokenizer=lm.tokenizer, device=lm.device,
                       identity=untrained_identity(lm.identity, seed))
