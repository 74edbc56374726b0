"""Semantic features: sentence split, per-sentence [CLS], max-pool, cached per (description, encoder)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from dga_engine.describe import (
    DEFAULT_ENCODER,
    DescribeConfig,
    EncoderError,
    cache,
    describe_objects,
    encode_text,
    features,
    load_encoder,
    semantic_feature,
    split_sentences,
)


def test_split_sentences():
    text = ("**Category:** Mug.\n\n1. The mug is a cylinder, approx. 9.5 cm tall, e.g. a coffee mug! Is it heavy?"
            "\n- It has a handle.\n2) Grip it.\n---\n")
    assert split_sentences(text) == [
        "Category: Mug.",
        "The mug is a cylinder, approx. 9.5 cm tall, e.g. a coffee mug!",
        "Is it heavy?",
        "It has a handle.",
        "Grip it.",
    ]
    assert split_sentences("  \n**\n---") == []
    assert len(split_sentences("A. " * 200)) == 64


def _cls(encoder, sentence: str) -> np.ndarray:
    """Reference: one sentence alone (no padding), final hidden state at [CLS]."""
    batch = encoder.tokenizer([sentence], return_tensors="pt")
    with torch.no_grad():
        return encoder.model(**batch).last_hidden_state[0, 0].numpy()


def test_feature_is_max_over_sentence_cls(tiny_bert):
    text = "The mug is round. It has a handle and a flat base! Grip it firmly around the middle?"
    enc = load_encoder(tiny_bert)
    assert enc.tokenizer.unk_token_id not in enc.tokenizer("the mug is round")["input_ids"]  # real tokens
    vec, n = encode_text(text, enc, batch_size=2)  # batches of 2: padding and batching must not matter
    sentences = split_sentences(text)
    expected = np.max(np.stack([_cls(enc, s) for s in sentences]), axis=0)
    assert n == 3 and vec.shape == (32,) and vec.dtype == np.float32
    np.testing.assert_allclose(vec, expected, atol=1e-5)
    one, _ = encode_text(sentences[0], enc)
    assert not np.allclose(one, vec)  # more sentences, a different (element-wise larger) vector
    assert np.all(vec >= one - 1e-6)
    with pytest.raises(ValueError, match="no sentence"):
        encode_text("  **  ", enc)


def test_semantic_feature_for_described_objects(layout, llm_server, fast_llm, make_objects, tiny_bert):
    ids = make_objects("mug", "banana", "mug")
    (undescribed,) = make_objects("drill")
    assert semantic_feature(layout, undescribed, encoder=tiny_bert) is None

    config = DescribeConfig(llm=fast_llm(llm_server.url), encoder=tiny_bert)
    report = describe_objects(layout, ids, config)
    assert report.features == 3 and report.features_computed == 2 and report.feature_dim == 32  # one per label
    assert report.encoder == tiny_bert and report.feature_error is None

    vec = semantic_feature(layout, ids[0], encoder=tiny_bert)
    expected, _ = encode_text(llm_server.answer_for("mug"), load_encoder(tiny_bert))
    np.testing.assert_allclose(vec, expected, atol=1e-6)
    np.testing.assert_array_equal(semantic_feature(layout, ids[2], encoder=tiny_bert), vec)
    assert not np.allclose(semantic_feature(layout, ids[1], encoder=tiny_bert), vec)

    # The cache holds it under the encoder's name; a rerun computes nothing and asks nothing.
    key = cache.description_key("mug", 1, "test-model", llm_server.url)
    assert os.path.exists(cache.feature_path(layout, cache.feature_key(key, tiny_bert)))
    again = describe_objects(layout, ids, config)
    assert again.features == 3 and again.features_computed == 0 and again.calls == 0


def test_semantic_feature_is_served_from_cache(layout, llm_server, fast_llm, make_objects, tiny_bert, monkeypatch):
    ids = make_objects("mug")
    describe_objects(layout, ids, DescribeConfig(llm=fast_llm(llm_server.url), features=False))
    first = semantic_feature(layout, ids[0], encoder=tiny_bert)  # computed on demand, then cached

    def no_loading(*a, **k):
        raise AssertionError("the encoder must not be loaded on a cache hit")

    monkeypatch.setattr(features, "load_encoder", no_loading)
    monkeypatch.setattr("dga_engine.describe.stage.load_encoder", no_loading)
    np.testing.assert_array_equal(semantic_feature(layout, ids[0], encoder=tiny_bert), first)


def test_relabelled_object_has_no_stale_feature(layout, llm_server, fast_llm, make_objects, tiny_bert, object_store):
    import json

    from dga_engine import fs

    ids = make_objects("mug")
    describe_objects(layout, ids, DescribeConfig(llm=fast_llm(llm_server.url), encoder=tiny_bert))
    meta_path = f"{layout.object_dir(ids[0])}/meta.json"
    meta = fs.read_json(meta_path)
    meta["label"] = "teapot"
    fs.write_bytes(meta_path, json.dumps(meta).encode())
    assert semantic_feature(layout, ids[0], encoder=tiny_bert) is None


def test_unloadable_encoder_keeps_descriptions(layout, llm_server, fast_llm, make_objects, tmp_path):
    ids = make_objects("mug")
    missing = str(tmp_path / "no-such-model")
    os.makedirs(missing)
    report = describe_objects(layout, ids, DescribeConfig(llm=fast_llm(llm_server.url), encoder=missing))
    assert report.described == 1 and report.failed == 0
    assert report.features == 0 and "cannot load text encoder" in report.feature_error
    with pytest.raises(EncoderError, match="offline default"):
        semantic_feature(layout, ids[0], encoder=missing)


def test_hub_name_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(EncoderError, match="dga-test/no-such-encoder.*model hub reachable"):
        load_encoder("dga-test/no-such-encoder")
    assert time.monotonic() - start < 10


def test_packaged_minilm_loads_offline(layout, llm_server, fast_llm, make_objects):
    start = time.monotonic()
    enc = load_encoder(DEFAULT_ENCODER)
    assert time.monotonic() - start < 30
    assert enc.dim == 384
    ids = make_objects("mug", "banana")
    report = describe_objects(layout, ids, DescribeConfig(llm=fast_llm(llm_server.url)))
    assert report.encoder == DEFAULT_ENCODER and report.feature_dim == 384 and report.features == 2
    mug, banana = (semantic_feature(layout, i) for i in ids)
    assert mug.shape == (384,) and np.all(np.isfinite(mug))
    assert not np.allclose(mug, banana)
    # Related sentences should sit closer than unrelated ones in a real sentence model.
    a, _ = encode_text("A coffee mug with a handle.", enc)
    b, _ = encode_text("A ceramic cup for drinking tea.", enc)
    c, _ = encode_text("The stock market fell sharply on Tuesday.", enc)
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert cos(a, b) > cos(a, c)
