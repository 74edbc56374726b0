"""A real OpenAI-compatible chat server on 127.0.0.1 (stdlib http.server, ephemeral port) with scripted faults,
and a tiny config-built BERT encoder in a temporary folder."""

from __future__ import annotations

import pytest

from tests.describe.helpers import FakeLLM


@pytest.fixture
def llm_server():
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _clean_llm_env(monkeypatch):
    """No test sees the developer's endpoint or keys."""
    for name in (
        "DGA_LLM_BASE_URL",
        "DGA_LLM_MODEL",
        "DGA_LLM_API_KEY",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "DGA_TEXT_ENCODER",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fast_llm():
    """An LLMConfig factory with test-sized timeouts and backoff."""
    from dga_engine.describe import LLMConfig

    def make(url: str, **kw) -> LLMConfig:
        defaults = dict(base_url=url, model="test-model", timeout_s=1.5, max_attempts=4,
                        backoff_base_s=0.01, backoff_max_s=0.05, retry_budget_s=10.0)
        defaults.update(kw)
        return LLMConfig(**defaults)

    return make


@pytest.fixture
def make_objects(object_store):
    """Write boxes with the given labels (distinct sizes, so distinct ids); returns their ids in order."""
    import trimesh

    from dga_engine.objects.store import write_simple_object

    made = [0]

    def make(*labels: str) -> list[str]:
        ids = []
        for label in labels:
            made[0] += 1
            mesh = trimesh.creation.box(extents=[0.03 + 0.002 * made[0], 0.05, 0.06])
            ids.append(write_simple_object(object_store, mesh, label).object_id)
        return ids

    return make


_WORDS = ("the is a an it has of and shape category object household grip firmly around middle simple convex "
          "about cm tall box mug banana cup handle round flat long thin . , ! ? : * 9 5 0 1 2 3 4 6 7 8").split()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 2-layer, 32-d BERT built from a config, with a BertTokenizerFast over a small vocab; returns its folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocab file as `vocab=` (a `vocab_file=` keyword is ignored: every token -> [UNK]).
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    assert tokenizer("mug banana")["input_ids"] == [2, vocab.index("mug"), vocab.index("banana"), 3]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
