"""Text tables tokenized with a real tokenizer.json: ids, masks and type ids as computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_builders import passthrough_classifier, save

import ntonnx
from ntonnx import DataError, DataOptions, UsageError

tokenizers = pytest.importorskip("tokenizers")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "far", "away", "bird", "sang", "loudly"]
VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
TEXTS = [
    "the cat sat on the mat",
    "a dog ran far far away from the zebra",  # 'from', 'zebra' are unknown; longer than 8 tokens
    "bird sang",
    "the bird sang loudly on a mat",
    "cat",
    "dog ran",
]
LABELS = ["pos", "neg", "pos", "neutral", "neg", "neutral"]


def write_tokenizer(path, pad=True):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = VOCAB if pad else {k: v for k, v in VOCAB.items() if k != "[PAD]"}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(path))
    return path


def by_hand(text: str, length: int, pair: str | None = None) -> tuple[list[int], list[int], list[int]]:
    """BERT-style encoding from the vocabulary: [CLS] a [SEP] (b [SEP]), truncated, right-padded."""
    first = [VOCAB.get(w, 1) for w in text.split()]
    second = [VOCAB.get(w, 1) for w in pair.split()] if pair else []
    room = length - (3 if pair else 2)
    first = first[: max(room - len(second), 0)] if len(first) + len(second) > room else first
    ids = [2, *first, 3] + ([*second, 3] if pair else [])
    types = [0] * (len(first) + 2) + [1] * (len(second) + 1 if pair else 0)
    pad = length - len(ids)
    return ids + [0] * pad, [1] * len(ids) + [0] * pad, types + [0] * pad


def bert_model(tmp_path, length=8, dtype=np.int64, names=("input_ids", "attention_mask", "token_type_ids"), dim=None):
    inputs = [(name, dtype, ["N", length]) for name in names]
    return save(passthrough_classifier(inputs, dim=dim), tmp_path / "bert.onnx")


def test_jsonl_text_tokenized_as_by_hand(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(TEXTS, LABELS, strict=True)))
    options = DataOptions(tokenizer=str(write_tokenizer(tmp_path / "tokenizer.json")))
    acts = ntonnx.extract(bert_model(tmp_path), data, data_options=options, run=ntonnx.RunOptions(batch_size=4))
    encoded = [by_hand(t, 8) for t in TEXTS]
    expected = np.array([ids + mask + types for ids, mask, types in encoded], dtype=np.float32)
    np.testing.assert_array_equal(acts.embeddings, expected)
    np.testing.assert_array_equal(acts.labels, [2, 0, 2, 1, 0, 1])  # neg < neutral < pos
    assert ntonnx.evaluate(bert_model(tmp_path), data, data_options=options).classes == {
        "neg": 0,
        "neutral": 1,
        "pos": 2,
    }


def test_parquet_text_pairs_int32_and_only_declared_inputs(tmp_path):
    premises, hypotheses = TEXTS[:4], ["cat sat", "dog", "a bird", "mat"]
    pq.write_table(pa.table({"premise": premises, "hypothesis": hypotheses, "y": [0, 1, 2, 1]}), tmp_path / "d.pq")
    model = bert_model(tmp_path, length=12, dtype=np.int32, names=("input_ids", "token_type_ids"))
    options = DataOptions(
        tokenizer=str(write_tokenizer(tmp_path / "tok.json")),
        text_column="premise",
        text_pair_column="hypothesis",
        label_column="y",
    )
    acts = ntonnx.extract(model, tmp_path / "d.pq", data_options=options)
    encoded = [by_hand(p, 12, h) for p, h in zip(premises, hypotheses, strict=True)]
    np.testing.assert_array_equal(acts.embeddings, [ids + types for ids, _, types in encoded])


def test_free_sequence_length_needs_max_length(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(TEXTS, LABELS, strict=True)))
    model = bert_model(tmp_path, length="S", dim=15)
    tokenizer = str(write_tokenizer(tmp_path / "tok.json"))
    with pytest.raises(UsageError, match=r"sequence length is free .*; pass --max-length N"):
        ntonnx.extract(model, data, data_options=DataOptions(tokenizer=tokenizer))
    acts = ntonnx.extract(model, data, data_options=DataOptions(tokenizer=tokenizer, max_length=5))
    assert acts.embeddings.shape == (6, 15)
    np.testing.assert_array_equal(acts.embeddings[1, :5], by_hand(TEXTS[1], 5)[0])


def test_text_errors(tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS, LABELS, strict=True)]
    rows[4]["text"] = None
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = str(write_tokenizer(tmp_path / "tok.json"))
    options = DataOptions(tokenizer=tokenizer)
    with pytest.raises(DataError, match=r"column 'text' is empty at row 4"):
        ntonnx.extract(bert_model(tmp_path), data, data_options=options)
    with pytest.raises(DataError, match=r"model input 'position_ids' is not one a tokenizer makes"):
        ntonnx.extract(bert_model(tmp_path, names=("input_ids", "position_ids")), data, data_options=options)
    with pytest.raises(DataError, match=r"has no column 'sentence' .*; pass --text-column"):
        ntonnx.extract(
            bert_model(tmp_path), data, data_options=DataOptions(tokenizer=tokenizer, text_column="sentence")
        )
    no_pad = str(write_tokenizer(tmp_path / "nopad.json", pad=False))
    with pytest.raises(UsageError, match=r"has no padding token ; pass --pad-token TOKEN"):
        ntonnx.extract(bert_model(tmp_path), data, data_options=DataOptions(tokenizer=no_pad))
    with pytest.raises(UsageError, match=r"--tokenizer file '.*missing.json' does not exist"):
        ntonnx.extract(bert_model(tmp_path), data, data_options=DataOptions(tokenizer=str(tmp_path / "missing.json")))
