"""The neopain CLI on real and bad inputs."""

import pyarrow as pa

from neopain.core import provenance
from neopain.cli import main


def test_samples_ok_and_error(tmp_path, capsys):
    (tmp_path / "a.mp4").write_bytes(b"x")
    good = tmp_path / "s.tsv"
    good.write_text("video_id\tsubject_id\tpath\tlabel\nv1\tS1\ta.mp4\tpain\n")
    assert main(["samples", str(good)]) == 0
    assert "1 videos, 1 subjects" in capsys.readouterr().out
    bad = tmp_path / "b.tsv"
    bad.write_text("video_id\tsubject_id\tpath\tlabel\nv1\tS1\tnope.mp4\tpain\n")
    assert main(["samples", str(bad)]) == 2
    assert "line 2 (video_id='v1'): field 'path'" in capsys.readouterr().err


def test_provenance(tmp_path, capsys):
    f = tmp_path / "t.parquet"
    provenance.write_table(pa.table({"a": [1]}), f, provenance.make_provenance("r"))
    assert main(["provenance", str(f)]) == 0
    assert '"rule": "r"' in capsys.readouterr().out
    assert main(["provenance", str(tmp_path / "missing.parquet")]) == 2
