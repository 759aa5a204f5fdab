"""MatConvNet simplenn import: files written here with scipy.io.savemat in MatConvNet's
documented layout load, and the PyTorch net reproduces a plain numpy forward pass of the
stored arrays (correlation, ReLU, vl_nnnormalize LRN, max pooling ignoring padding)."""

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from _paths import WEIGHTS
from neopain.features import matconvnet as mc
from neopain.features.backbones import load_backbone
from neopain.features.weightfiles import WeightsError

# --- a reference implementation of the stored network, in numpy (H x W x C arrays) ------


def np_conv(x, filters, biases, stride, pad):
    top, bottom, left, right = pad
    x = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    kh, kw, cin, cout = filters.shape
    groups = x.shape[2] // cin
    sy, sx = stride
    oh = (x.shape[0] - kh) // sy + 1
    ow = (x.shape[1] - kw) // sx + 1
    y = np.zeros((oh, ow, cout), np.float64)
    per = cout // groups
    for g in range(groups):
        xg = x[:, :, g * cin:(g + 1) * cin]
        fg = filters[:, :, :, g * per:(g + 1) * per]
        for i in range(kh):
            for j in range(kw):
                patch = xg[i:i + sy * (oh - 1) + 1:sy, j:j + sx * (ow - 1) + 1:sx, :]
                y[:, :, g * per:(g + 1) * per] += np.tensordot(patch, fg[i, j], axes=([2], [0]))
    return y + biases.reshape(1, 1, -1)


def np_lrn(x, n, kappa, alpha, beta):
    """vl_nnnormalize: y = x / (kappa + alpha * sum_{|c'-c| <= (n-1)/2} x_c'^2)^beta."""
    sq = x ** 2
    c = x.shape[2]
    acc = np.zeros_like(x)
    for k in range(c):
        lo, hi = max(0, k - (n - 1) // 2), min(c, k + n // 2 + 1)
        acc[:, :, k] = sq[:, :, lo:hi].sum(axis=2)
    return x / (kappa + alpha * acc) ** beta


def np_maxpool(x, pool, stride, pad):
    top, bottom, left, right = pad
    x = np.pad(x, ((top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    ph, pw = pool
    sy, sx = stride
    oh = (x.shape[0] - ph) // sy + 1
    ow = (x.shape[1] - pw) // sx + 1
    y = np.full((oh, ow, x.shape[2]), -np.inf)
    for i in range(ph):
        for j in range(pw):
            y = np.maximum(y, x[i:i + sy * (oh - 1) + 1:sy, j:j + sx * (ow - 1) + 1:sx, :])
    return y


def np_forward(mat_layers, image, average):
    """Outputs of every stored layer, by name, for one H x W x 3 image in [0, 255]."""
    x = image.astype(np.float64) - average
    outs = {}
    for L in mat_layers:
        t = L["type"]
        if t == "conv":
            x = np_conv(x, L["weights"][0, 0].astype(np.float64), L["weights"][0, 1],
                        L["stride"].ravel().astype(int), L["pad"].ravel().astype(int))
        elif t == "relu":
            x = np.maximum(x, 0)
        elif t in ("lrn", "normalize"):
            n, kappa, alpha, beta = L["param"].ravel()
            x = np_lrn(x, int(n), kappa, alpha, beta)
        elif t == "pool":
            x = np_maxpool(x, L["pool"].ravel().astype(int), L["stride"].ravel().astype(int),
                           L["pad"].ravel().astype(int))
        elif t == "softmax":
            e = np.exp(x - x.max(axis=2, keepdims=True))
            x = e / e.sum(axis=2, keepdims=True)
        outs[L["name"]] = x
    return outs


# --- writing files in MatConvNet's layout, independently of neopain's writer ---------------


def mat_layers_from_arch(arch, rng, lrn_param=None):
    """The arch's layers as MatConvNet structs with random weights (fan-in scaled)."""
    out = []
    for a in arch:
        s = {"type": a["type"], "name": a["name"]}
        if a["type"] == "conv":
            kh, kw, cin, cout = a["size"]
            w = np.empty((1, 2), dtype=object)
            w[0, 0] = (rng.standard_normal((kh, kw, cin, cout)) *
                       np.sqrt(2.0 / (kh * kw * cin))).astype(np.float32)
            w[0, 1] = (rng.standard_normal((1, cout)) * 0.1).astype(np.float32)
            s.update(weights=w, stride=np.array([a["stride"]], float),
                     pad=np.array([a["pad"]], float))
        elif a["type"] == "pool":
            s.update(method="max", pool=np.array([a["pool"]], float),
                     stride=np.array([a["stride"]], float), pad=np.array([a["pad"]], float))
        elif a["type"] == "lrn":
            s["param"] = np.array([lrn_param or a["param"]], float)
        out.append(s)
    return out


def save_mat(path, layers, average, image_size, legacy=False):
    cells = np.empty((1, len(layers)), dtype=object)
    for i, L in enumerate(layers):
        L = dict(L)
        if legacy and L["type"] == "conv":
            w = L.pop("weights")
            L["filters"], L["biases"] = w[0, 0], w[0, 1]
        if legacy and L["type"] == "lrn":
            L["type"] = "normalize"
        cells[0, i] = L
    norm = {"averageImage": np.asarray(average, np.float32),
            "imageSize": np.array([list(image_size) + [3]], float)}
    content = {"layers": cells}
    if legacy:
        content["normalization"] = norm
    else:
        content["meta"] = {"normalization": norm, "classes": {"name": np.array(["a", "b"])}}
    scipy.io.savemat(str(path), content)


SMALL = [
    mc._conv("c1", 3, 3, 3, 8, stride=2, pad=(0, 1, 0, 1)), mc._relu("r1"),
    mc._lrn("n1", (5, 1.0, 2e-4, 0.75)),
    mc._pool("p1", 3, 2, (0, 1, 0, 1)),
    mc._conv("c2", 3, 3, 4, 6, pad=1),     # 2 groups, as Caffe-imported AlexNets have
    mc._relu("r2"),
    mc._conv("fc", 4, 4, 6, 5), {"type": "softmax", "name": "prob"},
]


def torch_outputs(net, image):
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32))
    outs = {}
    with torch.no_grad():
        y = x - net.average_image
        for name, mod in net.body.named_children():
            y = mod(y)
            outs[name] = y[0].numpy().transpose(1, 2, 0)
    return outs


def test_lrn_matches_vl_nnnormalize():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 9)) * 3
    for n, kappa, alpha, beta in [(5, 2.0, 1e-4, 0.75), (3, 1.0, 0.05, 0.5)]:
        ref = np_lrn(x, n, kappa, alpha, beta)
        lrn = torch.nn.LocalResponseNorm(n, alpha=alpha * n, beta=beta, k=kappa)
        got = lrn(torch.from_numpy(x.transpose(2, 0, 1)[None]))[0].numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(got, ref, rtol=1e-10)


@pytest.mark.parametrize("legacy", [False, True])
def test_small_simplenn_file_reproduces_numpy_forward(tmp_path, legacy):
    rng = np.random.default_rng(1)
    layers = mat_layers_from_arch(SMALL, rng)
    avg = rng.uniform(90, 130, (17, 17, 3)).astype(np.float32)     # a per-pixel mean image
    path = tmp_path / "small.mat"
    save_mat(path, layers, avg, (17, 17), legacy=legacy)
    read, norm = mc.read_simplenn(path)
    assert [r["type"] for r in read] == [a["type"] for a in SMALL]
    assert norm["imageSize"] == (17, 17, 3) and norm["averageImage"].shape == (17, 17, 3)
    assert read[0]["pad"] == (0, 1, 0, 1) and read[2]["param"] == (5.0, 1.0, 2e-4, 0.75)
    net = mc.SimpleNN(read, norm["averageImage"])
    net.load_state_dict(mc.state_dict_from_layers(net, read, norm))
    image = rng.uniform(0, 255, (17, 17, 3))
    ref = np_forward(layers, image, avg)
    got = torch_outputs(net, image)
    for L in layers:
        assert got[L["name"]].shape == ref[L["name"]].shape, L["name"]
        np.testing.assert_allclose(got[L["name"]], ref[L["name"]], rtol=1e-4, atol=1e-4,
                                   err_msg=L["name"])
    assert ref["fc"].shape == (1, 1, 5)


def test_neopain_writer_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    mat = mat_layers_from_arch(SMALL, rng)
    save_mat(tmp_path / "a.mat", mat, (120.0, 110.0, 100.0), (17, 17))
    read, norm = mc.read_simplenn(tmp_path / "a.mat")
    mc.write_simplenn(tmp_path / "b.mat", read, norm)
    again, norm2 = mc.read_simplenn(tmp_path / "b.mat")
    for x, y in zip(read, again):
        assert {k: v for k, v in x.items() if k != "weights"} == \
            {k: v for k, v in y.items() if k != "weights"}
        if "weights" in x:
            np.testing.assert_array_equal(x["weights"][0], y["weights"][0])
    np.testing.assert_array_equal(norm["averageImage"], norm2["averageImage"])


@pytest.fixture(scope="module")
def vgg_f_file(tmp_path_factory):
    """A file with imagenet-vgg-f.mat's layout and layer shapes, random weights."""
    rng = np.random.default_rng(3)
    layers = mat_layers_from_arch(mc.VGG_F, rng, lrn_param=(5, 1.0, 2e-5, 0.75))
    avg = rng.uniform(100, 130, (224, 224, 3)).astype(np.float32)
    path = tmp_path_factory.mktemp("vggf") / "imagenet-vgg-f.mat"
    save_mat(path, layers, avg, (224, 224))
    image = rng.uniform(0, 255, (224, 224, 3))
    return path, layers, avg, image, np_forward(layers, image, avg)


def test_vgg_f_layout_loads_and_reproduces_the_stored_arrays(vgg_f_file):
    path, layers, avg, image, ref = vgg_f_file
    net = mc.load_mat("vgg_f", path)
    assert net.body.norm1.alpha == pytest.approx(5 * 2e-5)          # LRN from the file
    got = torch_outputs(net, image)
    for name in ("conv1", "norm1", "pool1", "conv5", "relu5", "pool5", "fc6", "fc7", "relu7"):
        scale = np.abs(ref[name]).max()
        np.testing.assert_allclose(got[name], ref[name], atol=1e-4 * scale, rtol=1e-4,
                                   err_msg=name)
    assert ref["conv5"].size == 43264 and ref["fc7"].size == 4096


def test_vgg_f_file_through_import_and_the_registry(vgg_f_file, tmp_path):
    from neopain.cli import main

    path, layers, avg, image, ref = vgg_f_file
    wdir = tmp_path / "weights"
    with pytest.raises(WeightsError, match="no sha256 pinned.*imagenet-vgg-f.mat"):
        wdir.mkdir()
        (wdir / "imagenet-vgg-f.mat").symlink_to(path)
        load_backbone("vgg_f", ["fc7_pre"], wdir)
    (wdir / "imagenet-vgg-f.mat").unlink()
    assert main(["weights", "import", "vgg_f", str(path), "--weights-dir", str(wdir)]) == 0
    assert "imagenet-vgg-f.mat" in (wdir / "SHA256SUMS").read_text()
    net, sources = load_backbone("vgg_f", ["conv5_pre", "conv5_post", "fc7_pre", "fc7_post"],
                                 wdir)
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.no_grad():
        out = net(x)
    np.testing.assert_allclose(out["fc7_pre"][0].numpy(), ref["fc7"].ravel(),
                               atol=1e-4 * np.abs(ref["fc7"]).max())
    # conv5 flattened in PyTorch's C x H x W order
    np.testing.assert_allclose(out["conv5_post"][0].numpy(),
                               ref["relu5"].transpose(2, 0, 1).ravel(),
                               atol=1e-4 * np.abs(ref["relu5"]).max())
    assert list(sources) == ["weights:imagenet-vgg-f.mat"]
    # a tampered file is refused, naming the file and the recorded hash
    tampered = wdir / "imagenet-vgg-f.mat"
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="imagenet-vgg-f.mat.*does not match"):
        load_backbone("vgg_f", ["fc7_pre"], wdir)


def test_wrong_architecture_is_refused(vgg_f_file):
    path = vgg_f_file[0]
    with pytest.raises(ValueError, match="wrong file for 'vgg_m'"):
        mc.load_mat("vgg_m", path)


def _user_mat_files():
    wdir = Path(os.environ.get("NEOPAIN_WEIGHTS_DIR", WEIGHTS))
    names = {"vgg_f": "imagenet-vgg-f.mat", "vgg_m": "imagenet-vgg-m.mat",
             "vgg_s": "imagenet-vgg-s.mat", "vgg_face": "vgg-face.mat"}
    return [(a, wdir / f) for a, f in names.items()]


@pytest.mark.parametrize("arch,path", _user_mat_files(), ids=lambda v: str(v))
def test_real_matconvnet_file_when_present(arch, path):
    """Set NEOPAIN_WEIGHTS_DIR (or use resources/weights) to check the official files."""
    if not path.is_file():
        pytest.skip(f"{path.name} not present (user-supplied; see `neopain weights list`)")
    net = mc.load_mat(arch, path)
    layers, norm = mc.read_simplenn(path)
    mat_layers = []
    for L in layers:          # back to the stored-array form the numpy reference reads
        s = {"type": L["type"], "name": L["name"]}
        if L["type"] == "conv":
            w = np.empty((1, 2), dtype=object)
            w[0, 0], w[0, 1] = L["weights"]
            s.update(weights=w, stride=np.array(L["stride"]), pad=np.array(L["pad"]))
        elif L["type"] == "pool":
            s.update(pool=np.array(L["pool"]), stride=np.array(L["stride"]),
                     pad=np.array(L["pad"]))
        elif L["type"] == "lrn":
            s["param"] = np.array(L["param"])
        if L["type"] != "dropout":
            mat_layers.append(s)
    image = np.random.default_rng(6).uniform(0, 255, (224, 224, 3))
    avg = net.average_image[0].numpy().transpose(1, 2, 0)
    ref = np_forward(mat_layers, image, avg)
    got = torch_outputs(net, image)
    got_names = [n for n in got if not n.endswith("_pad")]
    assert len(got_names) == len(mat_layers)
    for gname, L in zip(got_names, mat_layers):
        if L["type"] == "conv":
            scale = np.abs(ref[L["name"]]).max()
            np.testing.assert_allclose(got[gname], ref[L["name"]], atol=1e-3 * scale,
                                       err_msg=L["name"])
