"""Atomic Parquet writes carry provenance and are deterministic."""

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neopain.core import provenance


def test_write_table_has_provenance_and_is_deterministic(tmp_path):
    t = pa.table({"a": [1, 2, 3]})
    prov = provenance.make_provenance("r", {"x": 1}, {"video:v": "abc"}, params={"p": 2})
    provenance.write_table(t, tmp_path / "one.parquet", prov)
    provenance.write_table(t, tmp_path / "two.parquet", prov)
    read = provenance.read_provenance(tmp_path / "one.parquet")
    assert read["rule"] == "r" and read["sources"] == {"video:v": "abc"}
    assert read["config_hash"] == provenance.config_hash({"x": 1})
    assert "pyarrow" in read["packages"] and read["code_version"].startswith("0.1.0")
    h = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("one.parquet",
                                                                             "two.parquet")]
    assert h[0] == h[1]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_upstream_sources_are_carried(tmp_path):
    up = provenance.make_provenance("a", {}, {"video:v": "1"})
    down = provenance.make_provenance("b", {}, {"weights:w": "2"}, upstream=[up])
    assert down["sources"] == {"video:v": "1", "weights:w": "2"}


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "t.parquet"
    provenance.write_table(pa.table({"a": [1]}), target, {"rule": "x"})
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with provenance.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == before
    assert pq.read_table(target).column("a").to_pylist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_missing_provenance_is_an_error(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="plain.parquet: no neopain provenance"):
        provenance.read_provenance(tmp_path / "plain.parquet")
