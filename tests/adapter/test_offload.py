"""Activation offloading's saved-tensor hooks (adapter/offload.py), in process on the CPU: the trainer
wraps layers only on a CUDA mesh, but the hooks work on any device, so here they are forced on and
must move the saved activations out and back without changing a single gradient, alone and
around activation checkpointing."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _model() -> "torch.nn.Module":
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=256)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def _grads(model: "torch.nn.Module", ids: "torch.Tensor") -> dict[str, "torch.Tensor"]:
    model.zero_grad()
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_offloaded_activations_give_the_same_gradients(checkpointing: bool) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    from adapter.models import checkpoint_key
    from adapter.offload import ActivationOffloader, OffloadActivations
    ids = torch.randint(256, (2, 32), generator=torch.Generator().manual_seed(1))
    reference = _grads(_model(), ids)

    model = _model()
    keys = list(model.state_dict())
    offloader = ActivationOffloader(torch.device("cpu"), horizon=1, min_bytes=1024)
    layers = model.model.layers
    for index, layer in enumerate(layers):
        if checkpointing:
            layer = checkpoint_wrapper(layer)
        layers.register_module(str(index), OffloadActivations(layer, offloader, index))
    # checkpoints and exports keep their keys
    assert list(model.state_dict()) == keys == [checkpoint_key(n) for n, _ in model.named_parameters()]

    grads = _grads(model, ids)
    assert offloader.offloaded >= len(layers)  # at least each layer's input went out
    assert not offloader.pending  # every host copy was brought back (prefetched or on demand)
    grads = {checkpoint_key(name): grad for name, grad in grads.items()}
    assert grads.keys() == reference.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference[name], rtol=0, atol=0, msg=name)
