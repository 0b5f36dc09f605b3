"""Conversation data: sources and %NN sub-sampling, bad records skipped and counted, collation, encoders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from grace.data.conversations import (
    ConversationDataset,
    DataError,
    Source,
    check_record,
    pad_collate,
    parse_source,
    read_records,
)


def _rec(i, image=True, path=None, **kw):
    q = "<image>\nwhat is it ?" if image else "what is it ?"
    r = {"id": f"r{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": f"answer {i}"}]}
    if image:
        r["image"] = path or f"img/{i}.png"
    r.update(kw)
    return r


def _write(tmp_path, recs, name="a.json"):
    p = tmp_path / name
    p.write_text(json.dumps(recs))
    return p


def _images(tmp_path, n):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((4, 4, 3), i, dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")


def fake_encode(conversations, image):
    """Token per word; the reply is supervised; an image adds 3 image ids (99)."""
    words = [w for t in conversations for w in t["value"].replace("<image>", "").split()]
    n_reply = len(conversations[-1]["value"].split())
    if "boom" in words:
        raise ValueError("cannot encode")
    ids = ([99] * 3 if image is not None else []) + [len(w) for w in words]
    labels = [-100] * (len(ids) - n_reply) + ids[len(ids) - n_reply :]
    item = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
    if image is not None:
        item["pixel_values"] = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[None]
    return item


def test_parse_source():
    assert parse_source("a/b.json%25") == Source(parse_source("a/b.json").path, 25.0)
    assert parse_source("x.json").percent == 100.0
    assert parse_source("odd%name.json").path.name == "odd%name.json"
    with pytest.raises(DataError, match="percentage"):
        parse_source("a.json%0")


def test_subsampling_is_deterministic_and_sized(tmp_path):
    p = _write(tmp_path, [_rec(i) for i in range(200)])
    a = read_records(Source(p, 25.0), seed=0)
    b = read_records(Source(p, 25.0), seed=0)
    c = read_records(Source(p, 25.0), seed=1)
    assert len(a) == 50 and a == b and a != c
    assert [i for i, _ in a] == sorted(i for i, _ in a)  # file order kept
    assert len(read_records(Source(p, 12.5), seed=0)) == 25
    assert len(read_records(Source(p), seed=0)) == 200


def test_several_files_mix(tmp_path):
    _images(tmp_path, 10)
    p1 = _write(tmp_path, [_rec(i) for i in range(10)], "a.json")
    p2 = _write(tmp_path, [_rec(i, image=False) for i in range(10)], "b.jsonl")
    p2.write_text("\n".join(json.dumps(_rec(i, image=False)) for i in range(10)))
    ds = ConversationDataset([str(p1), f"{p2}%50"], encode_fn=fake_encode, image_root=tmp_path)
    assert len(ds) == 15
    assert "pixel_values" in ds[0] and "pixel_values" not in ds[14]


def test_structural_faults_are_counted_at_read_time():
    assert check_record(_rec(0)) is None
    assert check_record(_rec(0, image=False)) is None
    assert check_record({"image": "x.png", "conversations": []}) == "no conversations"
    assert check_record(_rec(0, conversations=[{"from": "human", "value": "<image>\nq"},
                                               {"from": "gpt", "value": " "}])) == "empty turn"
    assert check_record(_rec(0, conversations=[{"from": "human", "value": "q"},
                                               {"from": "gpt", "value": "a"}])) == "image without <image>"
    assert check_record({"conversations": [{"from": "human", "value": "<image> q"},
                                           {"from": "gpt", "value": "a"}]}) == "<image> without an image"
    assert check_record({"conversations": [{"from": "robot", "value": "q"}]}) == "unknown speaker"
    assert check_record({"conversations": [{"from": "human", "value": "q"}]}) == "no assistant turn"
    assert check_record([1, 2]) == "record is not an object"


def test_bad_records_are_skipped_replaced_and_reported(tmp_path):
    _images(tmp_path, 6)
    (tmp_path / "img" / "corrupt.png").write_bytes(b"not a png")
    recs = [_rec(i) for i in range(6)]
    recs.insert(1, _rec(90, path="img/missing.png"))  # runtime: missing image
    recs.insert(3, _rec(91, path="img/corrupt.png"))  # runtime: unreadable image
    recs.append(_rec(92, path="img/0.png", conversations=[{"from": "human", "value": "<image>\nboom"},
                                        {"from": "gpt", "value": "x"}]))  # runtime: encoder refuses
    recs.append(_rec(93, path="img/0.png", conversations=[{"from": "human", "value": "<image>\n" + "w " * 50},
                                        {"from": "gpt", "value": "x"}]))  # runtime: too long
    recs.append({"id": "s1", "conversations": []})  # structural
    recs.append(_rec(94, image=False, conversations=[{"from": "human", "value": "<image>\nq"},
                                                      {"from": "gpt", "value": "a"}]))  # structural
    ds = ConversationDataset(_write(tmp_path, recs), encode_fn=fake_encode, image_root=tmp_path, max_length=20)
    assert ds.report.counts() == {"no conversations": 1, "<image> without an image": 1}
    assert len(ds) == 10
    items = [ds[i] for i in range(len(ds))]  # never raises
    assert all("input_ids" in it for it in items)
    seen = {}
    for it in items:
        for _idx, reason, rid in it["_skipped"]:
            seen[rid] = reason
    assert seen == {"r90": "missing image", "r91": "unreadable image (UnidentifiedImageError)",
                    "r92": "encode failed", "r93": "too long"}
    # A bad record is replaced by the next good one (wrapping around at the end).
    assert torch.equal(items[1]["input_ids"], items[2]["input_ids"])
    assert torch.equal(items[-1]["input_ids"], items[0]["input_ids"])


def test_unusable_files_are_errors(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(DataError, match="broken.json"):
        ConversationDataset(p, encode_fn=fake_encode)
    with pytest.raises(DataError, match="not found"):
        ConversationDataset(tmp_path / "none.json", encode_fn=fake_encode)
    with pytest.raises(DataError, match="no usable training record"):
        ConversationDataset(_write(tmp_path, [{"conversations": []}]), encode_fn=fake_encode)
    q = tmp_path / "lines.jsonl"
    q.write_text(json.dumps(_rec(0, image=False)) + "\n{oops\n")
    ds = ConversationDataset(q, encode_fn=fake_encode)
    assert len(ds) == 1 and ds.report.counts() == {"invalid JSON line": 1}


def test_pad_collate():
    a = {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7]),
         "pixel_values": torch.ones(1, 3, 2, 2), "mm_token_type_ids": torch.tensor([1, 0, 0]), "_skipped": [(1, "x", "r")]}
    b = {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "mm_token_type_ids": torch.tensor([0]),
         "_skipped": []}
    out = pad_collate([a, b], pad_token_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["mm_token_type_ids"].tolist() == [[1, 0, 0], [0, 0, 0]]
    assert out["pixel_values"].shape == (1, 3, 2, 2)
    assert out["_skipped"] == [(1, "x", "r")]
