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

# The stage and the encoder pull in trimesh and transformers; load them on first use so that importing the
# configuration (the CLI does, for every command) stays cheap.
_LAZY = {
    "EncoderError": "features",
    "encode_text": "features",
    "load_encoder": "features",
    "split_sentences": "features",
    "DISABLED_MESSAGE": "stage",
    "DescribeReport": "stage",
    "describe_objects": "stage",
    "description": "stage",
    "semantic_feature": "stage",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"dga_engine.describe.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dga_engine.describe' has no attribute {name!r}")


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
