"""Sample-sheet validation: every error names the sheet, the row and the field."""

import pytest

from neopain.core.samples import SampleSheetError, load_samples

LABELS = ["no_pain", "pain"]


def write(tmp_path, text, name="samples.tsv"):
    p = tmp_path / name
    p.write_text(text)
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "frames").mkdir(exist_ok=True)
    return p


def test_valid_sheet_resolves_paths(tmp_path):
    p = write(tmp_path, "video_id\tsubject_id\tpath\tlabel\nv1\ts1\ta.mp4\tpain\n"
                        "v2\ts2\tframes\tno_pain\n")
    df = load_samples(p, LABELS)
    assert list(df.index) == ["v1", "v2"]
    assert df.loc["v1", "abspath"] == str((tmp_path / "a.mp4").resolve())
    assert df.loc["v2", "label"] == "no_pain"


def test_csv_and_data_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "b.mp4").write_bytes(b"x")
    p = tmp_path / "s.csv"
    p.write_text("video_id,subject_id,path,label\nv1,s1,b.mp4,pain\n")
    df = load_samples(p, LABELS, data_root=root)
    assert df.loc["v1", "abspath"] == str((root / "b.mp4").resolve())


def test_missing_column(tmp_path):
    p = write(tmp_path, "video_id\tpath\tlabel\nv1\ta.mp4\tpain\n")
    with pytest.raises(SampleSheetError, match=r"samples.tsv: missing required column\(s\) "
                                               r"subject_id"):
        load_samples(p, LABELS)


HEADER = "video_id\tsubject_id\tpath\tlabel\n"


@pytest.mark.parametrize("rows, message", [
    ("v1\ts1\ta.mp4\tpain\nv1\ts2\ta.mp4\tpain\n",
     r"line 3 \(video_id='v1'\): field 'video_id' duplicates line 2"),
    ("\ts1\ta.mp4\tpain\n", r"line 2: field 'video_id' is empty"),
    ("v1\ts1\ta.mp4\thurts\n",
     r"line 2 \(video_id='v1'\): field 'label' has unknown label 'hurts'"),
    ("v1\ts1\tmissing.mp4\tpain\n",
     r"line 2 \(video_id='v1'\): field 'path': .*missing.mp4 does not exist"),
    ("v 1/x\ts1\ta.mp4\tpain\n", r"field 'video_id' must match"),
], ids=["duplicate_id", "empty_id", "unknown_label", "bad_path", "bad_id_characters"])
def test_bad_row_names_line_and_field(tmp_path, rows, message):
    p = write(tmp_path, HEADER + rows)
    with pytest.raises(SampleSheetError, match=message):
        load_samples(p, LABELS)


