"""Tiny random causal LMs built from a config: no download, milliseconds to build."""

from __future__ import annotations

from typing import Any

from .base import LoadedModel, resolve_device

__all__ = ["byte_tokenizer", "load_tiny"]


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (256 byte tokens + one end-of-text token), built offline.

    Every label word is several tokens long, so the multi-token scoring path is
    always exercised with it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<|endoftext|>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def load_tiny(
    name: str = "tiny",
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    device: str = "cpu",
) -> LoadedModel:
    """Build a seeded random 2-layer Llama with a byte-level tokenizer.

    Parameters
    ----------
    name : str
        Name to use in results.
    seed : int
        Seed of the weight initialisation; the same seed gives the same weights.
    hidden_size, num_layers : int
        Size of the model.
    device : str
        Where to put it.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    device = resolve_device(device)
    model.to(device).eval()
    identity = {
        "source": "tiny",
        "seed": seed,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
    }
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, device=device, identity=identity)
