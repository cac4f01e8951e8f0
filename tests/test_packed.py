"""The vocabulary projection packed for oneDNN (speechtl.models.packed): same products, never stale weights."""

import pytest
import torch
from torch import nn

from speechtl.data.manifest import read_manifest
from speechtl.evaluate.decode import DecodeOptions, load_for_eval, transcribe_utterances
from speechtl.models import load_model
from speechtl.models.packed import PackedLinear, pack_vocabulary_projection

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


def test_a_packed_projection_computes_what_the_layer_does_and_follows_its_weight(tiny_whisper):
    module = load_model(str(tiny_whisper)).module
    layer = module.get_output_embeddings()
    x = torch.randn(5, 3, layer.in_features)
    with torch.inference_mode():
        plain = layer(x)
    assert pack_vocabulary_projection(module, rows_hint=5)
    assert isinstance(layer.forward, PackedLinear)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), plain, rtol=1e-5, atol=1e-4)
        assert layer.forward.current(x)
    # changed in place after packing (as an optimiser step would): the layer's own product, with the new weight
    with torch.no_grad():
        layer.weight.mul_(2.0)
    assert not layer.forward.current(x)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), 2.0 * plain, rtol=1e-5, atol=1e-4)
    # replaced (a merge or a load swaps the parameter): the same
    layer.weight = nn.Parameter(torch.zeros_like(layer.weight))
    with torch.inference_mode():
        assert layer(x).abs().max() == 0
    # a product that needs gradients gets them
    pack_vocabulary_projection(module)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # other types and devices are left alone
    with torch.inference_mode():
        assert not layer.forward.current(x.to(torch.bfloat16))


def test_eval_decodes_with_the_projection_packed_in_float32_only(tiny_whisper, toy_manifest):
    utts = read_manifest(toy_manifest)
    packed = load_for_eval(str(tiny_whisper), DecodeOptions())
    assert isinstance(packed.module.get_output_embeddings().forward, PackedLinear)
    plain = load_model(str(tiny_whisper))
    assert not isinstance(plain.module.get_output_embeddings().forward, PackedLinear)
    assert transcribe_utterances(packed, utts, DecodeOptions()) == transcribe_utterances(plain, utts, DecodeOptions())
    half = load_for_eval(str(tiny_whisper), DecodeOptions(compute_type="bfloat16"))
    assert not isinstance(half.module.get_output_embeddings().forward, PackedLinear)
    assert not pack_vocabulary_projection(nn.Module())  # no output projection: nothing to pack
