"""The papers' networks: feature dimensions (Zamzmi et al. 2018 Tables 1-4, random weights),
pre-/post-ReLU taps, pins (full, name prefix, config, recorded), config-defined backbones."""

import hashlib

import pytest
import torch

from neopain.features.backbones import load_backbone
from neopain.features.registry import REGISTRY, get_spec
from neopain.features.weightfiles import WeightsError, locate_weights

CONV5 = {"vgg_f": 43264, "vgg_m": 86528, "vgg_s": 147968, "vgg_face": 100352,
         "vgg16": 100352, "alexnet": 43264}


def _check_pre_post(out, pre, post):
    assert (out[pre] < 0).any(), f"{pre} has no negative values: overwritten in place?"
    assert torch.equal(out[post], torch.relu(out[pre])), f"{post} != relu({pre})"


@pytest.mark.parametrize("name", list(CONV5))
def test_vgg_family_dimensions_and_pre_post_relu(name):
    torch.manual_seed(0)
    net, sources = load_backbone(name, ["fc7_pre", "fc7_post", "conv5_pre", "conv5_post"],
                                 pretrained=False)
    assert sources == {}
    size = net.spec.input_size
    with torch.no_grad():
        out = net(torch.rand(2, 3, size, size))
    assert out["fc7_pre"].shape == (2, 4096) and out["fc7_post"].shape == (2, 4096)
    assert out["conv5_pre"].shape == (2, CONV5[name])
    _check_pre_post(out, "fc7_pre", "fc7_post")
    _check_pre_post(out, "conv5_pre", "conv5_post")


@pytest.mark.parametrize("name,dims", [
    ("resnet50", {"penultimate": 2048, "conv_last": 100352, "conv_last_pre": 100352}),
    ("inception_v3", {"penultimate": 2048, "conv_last": 131072}),
    ("xception", {"penultimate": 2048, "conv_last": 204800, "conv_last_pre": 204800}),
    ("fer", {"penultimate": 128, "conv_last": 2048, "logits": 7, "probs": 7}),
])
def test_other_backbones_dimensions(name, dims):
    if name == "xception":
        pytest.importorskip("timm")
    torch.manual_seed(0)
    net, _ = load_backbone(name, list(dims), pretrained=False)
    size = net.spec.input_size
    with torch.no_grad():
        out = net(torch.rand(1, 3, size, size))
    assert {k: v.shape[1] for k, v in out.items()} == dims
    if "conv_last_pre" in dims:
        _check_pre_post(out, "conv_last_pre", "conv_last")


def test_every_registry_entry_documents_weights_and_taps():
    for name, spec in REGISTRY.items():
        assert spec.weights_file and spec.obtain and spec.licence and spec.taps, name
        assert spec.pin_kind in ("sha256", "sha256-prefix", "none")
        if spec.pin_kind == "sha256-prefix":       # torchvision: prefix in the file name
            assert f"-{spec.sha256}." in spec.weights_file, name
    for name in ("vgg_f", "vgg_m", "vgg_s", "vgg_face", "vgg16", "alexnet"):
        assert {"fc7_pre", "fc7_post", "conv5_pre", "conv5_post"} <= set(REGISTRY[name].taps)


def _fake(tmp_path, name, content=b"weights"):
    p = tmp_path / name
    p.write_bytes(content)
    return p, hashlib.sha256(content).hexdigest()


def test_pins_full_prefix_config_and_recorded(tmp_path):
    path, digest = _fake(tmp_path, "mine.pth")
    # a config-defined backbone, pinned by prefix, by full hash, wrongly
    assert locate_weights(get_spec("mine", {"base": "vgg16", "weights_file": "mine.pth",
                                            "sha256": digest[:8]}), tmp_path) == path
    assert locate_weights(get_spec("mine", {"base": "vgg16", "weights_file": "mine.pth",
                                            "sha256": digest.upper()}), tmp_path) == path
    bad = "0" * 64
    with pytest.raises(WeightsError) as err:
        locate_weights(get_spec("mine", {"base": "vgg16", "weights_file": "mine.pth",
                                         "sha256": bad}), tmp_path)
    assert "mine.pth" in str(err.value) and bad in str(err.value) and digest in str(err.value)
    # unpinned: refused, saying how to pin it
    with pytest.raises(WeightsError, match="no sha256 pinned.*extract.backbones.mine.sha256"):
        locate_weights(get_spec("mine", {"base": "vgg16", "weights_file": "mine.pth"}), tmp_path)
    # recorded by `neopain weights import` in SHA256SUMS
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  mine.pth\n")
    assert locate_weights(get_spec("mine", {"base": "vgg16", "weights_file": "mine.pth"}),
                          tmp_path) == path
    # the registry's name-prefix pin of torchvision's file applies: a fake vgg16 file fails
    _fake(tmp_path, "vgg16-397923af.pth")
    with pytest.raises(WeightsError, match="vgg16-397923af.pth.*397923af.*prefix"):
        locate_weights(get_spec("vgg16"), tmp_path)
    with pytest.raises(WeightsError, match="contradicts the registry's pin"):
        get_spec("vgg16", {"sha256": "deadbeef"})
    with pytest.raises(WeightsError, match="not a sha256"):
        get_spec("vgg16", {"sha256": "xyz"})


def test_missing_file_names_file_hash_and_source(tmp_path):
    with pytest.raises(WeightsError) as err:
        load_backbone("vgg16", ["fc7_pre"], tmp_path)
    msg = str(err.value)
    assert "vgg16-397923af.pth" in msg and "397923af" in msg and "torchvision" in msg


def test_config_defined_backbone_and_extra_tap():
    spec = get_spec("vgg16_block4", {"base": "vgg16", "taps": {"conv4_post": "features.22"}})
    assert spec.name == "vgg16_block4" and "fc7_pre" in spec.taps
    net, _ = load_backbone("vgg16_block4", ["conv4_post"], pretrained=False,
                           cfg={"base": "vgg16", "taps": {"conv4_post": "features.22"}})
    with torch.no_grad():
        out = net(torch.rand(1, 3, 224, 224))
    assert out["conv4_post"].shape == (1, 512 * 28 * 28)
    with pytest.raises(ValueError, match="unknown backbone 'nope'.*base"):
        get_spec("nope")


def test_colour_conversion_grey_and_bgr():
    net, _ = load_backbone("fer", ["probs"], pretrained=False)
    x = torch.rand(1, 3, 64, 64)
    g = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    with torch.no_grad():
        a = net(x)["probs"]
        b = net.body(((g - 0.5) / 0.5))[net._node_key["layers.predictions"]]
    assert torch.allclose(a, b)
    spec = get_spec("m", {"base": "mobilenet_v2", "colour": "BGR"})
    assert spec.colour == "BGR"
