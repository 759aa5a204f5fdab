"""`neopain weights list|verify|import` for air-gapped clusters."""

import shutil

import pytest
import torch
import yaml

from neopain.features.backbones import load_backbone
from neopain.features.registry import get_spec
from neopain.features.weightfiles import WeightsError, locate_weights
from neopain.cli import main
from neopain.features.weights import import_weights


def test_list_and_verify(tmp_path, capsys):
    assert main(["weights", "list", "--weights-dir", str(tmp_path), "--config", ""]) == 0
    out = capsys.readouterr().out
    for name in ("vgg_f", "vgg_m", "vgg_s", "vgg_face", "vgg16", "alexnet", "resnet50",
                 "inception_v3", "xception", "mobilenet_v2", "fer"):
        assert name in out
    assert "vlfeat.org/matconvnet" in out and "vgg16-397923af.pth  pin: 397923af" in out
    assert main(["weights", "verify", "mobilenet_v2", "--weights-dir", str(tmp_path)]) == 0
    assert "mobilenet_v2: mobilenet_v2-b0353104.pth: ok b03531047ffa" in capsys.readouterr().out
    # a requested file that is missing fails verification; a tampered one too
    assert main(["weights", "verify", "vgg16", "--weights-dir", str(tmp_path)]) == 1
    (tmp_path / "vgg16-397923af.pth").write_bytes(b"x")
    assert main(["weights", "verify", "--weights-dir", str(tmp_path)]) == 1
    assert "does not match the pinned 397923af" in capsys.readouterr().out


def test_import_official_file_and_refuse_a_wrong_one(tmp_path, capsys):
    src = locate_weights(get_spec("mobilenet_v2"), None)
    wdir = tmp_path / "w"
    assert main(["weights", "import", "mobilenet_v2", str(src), "--weights-dir", str(wdir)]) == 0
    assert "sha256: b03531047ffacf1e" in capsys.readouterr().out
    assert (wdir / "mobilenet_v2-b0353104.pth").is_file()
    assert "mobilenet_v2-b0353104.pth" in (wdir / "SHA256SUMS").read_text()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    assert main(["weights", "import", "mobilenet_v2", str(bad), "--weights-dir", str(wdir)]) == 2
    assert "does not match the pinned b0353104" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["wrapped", "safetensors"])
def test_import_converts_checkpoints_of_an_unpinned_backbone(tmp_path, fmt):
    """A config-defined backbone (no registry pin) takes a DataParallel/trainer checkpoint
    or a timm-style .safetensors; the converted state dict is recorded and then loads."""
    cfg = {"base": "mobilenet_v2", "weights_file": "finetuned.pth"}
    ref = torch.load(locate_weights(get_spec("mobilenet_v2"), None), weights_only=True)
    if fmt == "wrapped":
        src = tmp_path / "ckpt.pth"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.items()}}, src)
    else:
        from safetensors.torch import save_file

        src = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in ref.items()}, str(src))
    wdir = tmp_path / "w"
    rec = import_weights("finetuned", src, wdir, cfg)
    assert rec["converted"] == "True" and rec["path"].endswith("finetuned.pth")
    net, sources = load_backbone("finetuned", ["penultimate"], wdir, cfg=cfg)
    assert sources == {"weights:finetuned.pth": rec["sha256"]}
    w = net.body.state_dict()
    assert torch.equal(w["features.0.0.weight"], ref["features.0.0.weight"])
    # the same file without the record or a pin is refused
    (wdir / "SHA256SUMS").unlink()
    with pytest.raises(WeightsError, match="no sha256 pinned"):
        load_backbone("finetuned", ["penultimate"], wdir, cfg=cfg)
    # ... and accepted with a config pin
    cfg_pinned = {**cfg, "sha256": rec["sha256"]}
    load_backbone("finetuned", ["penultimate"], wdir, cfg=cfg_pinned)


def test_import_refuses_a_file_that_does_not_fit(tmp_path):
    src = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, src)
    with pytest.raises(WeightsError, match="does not fit backbone 'mine'"):
        import_weights("mine", src, tmp_path / "w", {"base": "resnet50",
                                                     "weights_file": "mine.pth"})


def test_cli_reads_config_overrides(tmp_path, capsys):
    wdir = tmp_path / "w"
    wdir.mkdir()
    shutil.copy(locate_weights(get_spec("mobilenet_v2"), None), wdir / "mine.pth")
    cfg = {"extract": {"weights_dir": str(wdir), "backbones": {"mine": {
        "layers": ["penultimate"], "base": "mobilenet_v2", "weights_file": "mine.pth",
        "sha256": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["weights", "verify", "mine", "--config", str(tmp_path / "config.yaml")]) == 0
    assert "mine: mine.pth: ok" in capsys.readouterr().out
