"""Object descriptions and semantic features (paper Sec. 3.5).

An LLM behind any OpenAI-compatible chat endpoint describes each object from its label, with the paper's
prompt; a BERT-family encoder turns each answer into one vector (max over the sentences' [CLS] vectors).
Answers and vectors are cached under ``<root>/cache`` and never asked for or computed twice.

    report = describe_objects(layout, ["obj-..."], DescribeConfig(llm=LLMConfig(base_url=..., model=...)))
    vec = semantic_feature(layout, "obj-...")   # (C,) float32, or None without a description
"""

from dga_engine.describe.config import (
    DEFAULT_ENCODER,
    DEFAULT_MODEL,
    PROMPT_TEMPLATE,
    PROMPT_VERSION,
    DescribeConfig,
    LLMConfig,
    build_prompt,
)
from dga_engine.describe.features import EncoderError, encode_text, load_encoder, split_sentences
from dga_engine.describe.stage import DISABLED_MESSAGE, DescribeReport, describe_objects, description, semantic_feature

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_MODEL",
    "DISABLED_MESSAGE",
    "PROMPT_TEMPLATE",
    "PROMPT_VERSION",
    "DescribeConfig",
    "DescribeReport",
    "EncoderError",
    "LLMConfig",
    "build_prompt",
    "describe_objects",
    "description",
    "encode_text",
    "load_encoder",
    "semantic_feature",
    "split_sentences",
]
