"""Readers: bad input names the file and line; every answer layout in the wild is understood."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image

from grace.errors import GraceError
from grace.eval.base import read_answer_records
from grace.eval.readers import MissingImage, read_jsonl, read_parquet, read_table_text, read_xlsx


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"question_id": 1, "text": "a"}\n\n{"question_id": 2, "text": \n')
    with pytest.raises(GraceError, match=r"q\.jsonl:3: malformed JSON line"):
        read_jsonl(p)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(GraceError, match=r"q\.jsonl:2: expected a JSON object"):
        read_jsonl(p)


def test_tsv_field_count_mismatch(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("index\tquestion\n1\tq\n2\tq\textra\n")
    with pytest.raises(GraceError, match=r"t\.tsv:3: row has 3 fields"):
        read_table_text(p)


def _xlsx(path, rows):
    """A minimal workbook: shared strings for the header, inline strings and numbers below."""
    shared = rows[0]
    sst = "".join(f"<si><t>{s}</t></si>" for s in shared)
    xml_rows = []
    head = "".join(f'<c r="{chr(65 + i)}1" t="s"><v>{i}</v></c>' for i in range(len(shared)))
    xml_rows.append(f'<row r="1">{head}</row>')
    for r, values in enumerate(rows[1:], start=2):
        cells = []
        for i, v in enumerate(values):
            ref = f"{chr(65 + i)}{r}"
            if v is None:
                cells.append(f'<c r="{ref}" t="inlineStr"/>')
            elif isinstance(v, int | float):
                cells.append(f'<c r="{ref}" t="n"><v>{v}</v></c>')
            else:
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{v}</t></is></c>')
        xml_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("xl/sharedStrings.xml", f"<sst {ns}>{sst}</sst>")
        z.writestr("xl/worksheets/sheet1.xml", f"<worksheet {ns}><sheetData>{''.join(xml_rows)}</sheetData></worksheet>")


def test_xlsx_reader(tmp_path):
    p = tmp_path / "u.xlsx"
    _xlsx(p, [["index", "A", "B", "prediction"], [241, "cat", None, "A"], [1000241, "dog", "cat", "B"]])
    rows = read_xlsx(p)
    assert rows[0]["index"] == 241 and rows[0]["B"] is None and rows[1]["prediction"] == "B"
    recs = read_answer_records(p)
    assert [(r["question_id"], r["text"]) for r in recs] == [(241, "A"), (1000241, "B")]


def test_not_an_xlsx(tmp_path):
    p = tmp_path / "x.xlsx"
    p.write_text("hello")
    with pytest.raises(GraceError, match="x.xlsx"):
        read_xlsx(p)


def _png(color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def test_parquet_images_are_lazy_and_missing_ones_are_reported(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    img_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    t = pa.table({
        "index": [0, 1],
        "image": pa.array([{"bytes": _png(), "path": "a.png"}, {"bytes": None, "path": "b.png"}], type=img_t),
    })
    p = tmp_path / "d.parquet"
    pq.write_table(t, p)
    rows = read_parquet(p)
    assert rows[0]["image"].open().getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(MissingImage):
        rows[1]["image"].open()


def test_corrupt_parquet(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet")
    with pytest.raises(GraceError, match="bad.parquet"):
        read_parquet(p)


@pytest.mark.parametrize(
    "doc,expected",
    [
        ([{"questionId": "7", "prediction": "left"}], [("7", "left")]),  # GQA eval.py predictions
        ([{"question_id": 5, "answer": "2"}], [(5, "2")]),  # VQA results
        ({"validation_Art_1": "B"}, [("validation_Art_1", "B")]),  # MMMU predictions
        ({"correct": [{"question_id": "4", "pred": "B", "question": "<image>\nQ"}], "incorrect": []},
         [("4", "B")]),  # LLaVA ScienceQA output
    ],
)
def test_answer_layouts(tmp_path, doc, expected):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(doc, indent=1))
    assert [(r["question_id"], r["text"]) for r in read_answer_records(p)] == expected


def test_answer_without_text_field(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"question_id": 1, "foo": "x"}) + "\n")
    with pytest.raises(GraceError, match=r"a\.jsonl:1: answer has none of the text fields"):
        read_answer_records(p)


def test_bad_base64_image_is_a_missing_image_not_a_crash():
    from grace.eval.readers import image_from_base64

    ref = image_from_base64("definitely not an image", "mmbench.tsv:7")
    with pytest.raises(MissingImage, match=r"mmbench\.tsv:7"):
        ref.open()
    assert image_from_base64("", "x") is None
