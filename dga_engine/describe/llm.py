"""Asking an OpenAI-compatible chat endpoint once per question, with bounded, jittered retries.

The ``openai`` client's own retries are switched off so that one policy (ours, configurable, with a
wall-clock budget) governs every attempt. Transient failures (timeouts, connection errors, 408/409/429,
5xx, unparseable, empty or garbled answers) are retried; anything else (400, 401, 403, 404, 422, an
answer cut off by the server's token limit, a response over the size cap) is not, and 401/403/404 are
*fatal*: every other question would fail the same way, so the stage stops asking.

Every attempt is bounded in total, not per read: it runs on its own short-lived client in a helper
thread, and when ``timeout_s`` has passed without a complete answer the client is closed under it, which
cuts off a server that trickles one byte at a time. Responses are read through a transport that refuses
more than ``max_response_bytes``. Nothing the server sends back is trusted: answers are validated before
anyone may cache them, and the API key or URL credentials are scrubbed from whatever it echoes.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
import time
import unicodedata
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dga_engine.describe.config import LLMConfig, redact_url, scrub

log = logging.getLogger(__name__)

# Reasoning models served by vLLM/Ollama may prefix the answer with their hidden chain of thought.
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_PLACEHOLDER_KEY = "not-needed"  # local servers accept any key; the openai client insists on one
_FATAL_STATUS = {401, 403, 404}
_RETRY_STATUS = {408, 409, 429}
_WORD = re.compile(r"[^\W\d_]{2,}")  # a word of at least two letters, in any script


class TransientError(Exception):
    """A failure worth retrying (the answer may come next time)."""


class PermanentError(Exception):
    """A failure that retrying cannot fix. ``fatal`` ones mean no other question can succeed either."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class ResponseTooLarge(Exception):
    """The server sent more than ``max_response_bytes`` (raised while reading; the rest is not read)."""


@dataclass
class Answer:
    """One accepted answer."""

    text: str  # the description, stripped, reasoning blocks removed, secrets scrubbed
    response_model: str | None  # the model name the server reports (scrubbed)
    finish_reason: str | None  # "stop", ...
    attempts: int  # requests made for it, the successful one included


# ---- the HTTP side --------------------------------------------------------------------------------------


def _http_client(config: LLMConfig) -> Any:
    """An httpx client whose responses may not exceed ``config.max_response_bytes``.

    Environment proxies are honoured as httpx itself would (a custom transport makes httpx ignore them).
    """
    import httpx

    class CappedStream(httpx.SyncByteStream):
        def __init__(self, inner: Any, cap: int) -> None:
            self.inner, self.cap, self.seen = inner, cap, 0

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self.inner:
                self.seen += len(chunk)
                if self.seen > self.cap:
                    raise ResponseTooLarge(f"the response is larger than {self.cap:,} bytes")
                yield chunk

        def close(self) -> None:
            self.inner.close()

    class CappedTransport(httpx.BaseTransport):
        def __init__(self, proxy: str | None, cap: int) -> None:
            self.inner, self.cap = httpx.HTTPTransport(proxy=proxy, verify=_ssl_context()), cap

        def handle_request(self, request: Any) -> Any:
            response = self.inner.handle_request(request)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.cap:
                response.close()
                raise ResponseTooLarge(
                    f"the response declares {int(declared):,} bytes, larger than the {self.cap:,} allowed"
                )
            return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                                  stream=CappedStream(response.stream, self.cap), request=request)

        def close(self) -> None:
            self.inner.close()

    return httpx.Client(transport=CappedTransport(_env_proxy(config.base_url or ""), config.max_response_bytes),
                        timeout=config.timeout_s, follow_redirects=False)


@functools.lru_cache(maxsize=1)
def _ssl_context() -> Any:
    """httpx's default TLS context (certifi, $SSL_CERT_FILE / $SSL_CERT_DIR), built once: it costs ~50 ms."""
    import httpx

    return httpx.create_ssl_context(trust_env=True)


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` ($HTTPS_PROXY, $HTTP_PROXY, $ALL_PROXY, honouring $NO_PROXY)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def make_client(config: LLMConfig) -> Any:
    """An ``openai.OpenAI`` client for ``config`` (resolved), its retries off; the key comes from the environment."""
    import openai

    return openai.OpenAI(
        base_url=config.base_url,
        api_key=config.api_key() or _PLACEHOLDER_KEY,
        timeout=config.timeout_s,
        max_retries=0,
        http_client=_http_client(config),
    )


def request_once(config: LLMConfig, kwargs: dict[str, Any], seconds: float,
                 client_factory: Callable[[LLMConfig], Any] = make_client) -> Any:
    """One chat completion within ``seconds`` in total, or TransientError; the response object otherwise.

    The request runs on a fresh client in a helper thread; past the deadline that client is closed under
    it, so the helper ends at its next read instead of following a trickling server forever.
    """
    client = client_factory(config)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["response"] = client.chat.completions.create(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    helper = threading.Thread(target=run, name="describe-request", daemon=True)
    helper.start()
    helper.join(max(0.0, seconds))
    client.close()
    if helper.is_alive():
        raise TransientError(f"no complete answer within {seconds:.3g} s (the limit per request, from sending it "
                             "to the last byte)")
    if "error" in box:
        raise box["error"]
    return box["response"]


# ---- answers ----------------------------------------------------------------------------------------------


def _classify(err: BaseException) -> Exception:
    """Map an exception from one request to TransientError or PermanentError."""
    import openai

    if isinstance(err, (TransientError, PermanentError)):
        return err
    cause: BaseException | None = err
    for _ in range(4):  # the openai client wraps transport errors (ours included)
        if isinstance(cause, ResponseTooLarge):
            return PermanentError(f"{cause}: refused unread (an answer is a paragraph; check --base-url)")
        cause = cause.__cause__ or cause.__context__ if cause is not None else None
    if isinstance(err, openai.APITimeoutError):
        return TransientError("request timed out")
    if isinstance(err, openai.APIConnectionError):
        return TransientError(f"connection error ({type(err.__cause__).__name__ if err.__cause__ else 'no response'})")
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status in _RETRY_STATUS or status >= 500:
            t = TransientError(f"HTTP {status}")
            t.retry_after = _retry_after(err)  # type: ignore[attr-defined]
            return t
        hint = {401: "check the API key ($DGA_LLM_API_KEY or $OPENAI_API_KEY)",
                403: "the key may not be allowed to use this model",
                404: "check --base-url (it usually ends in /v1) and --model (the served model name)"}.get(status, "")
        return PermanentError(f"HTTP {status}" + (f": {hint}" if hint else ""), fatal=status in _FATAL_STATUS)
    if isinstance(err, ValueError):  # JSON the client could not decode
        return TransientError(f"malformed response ({type(err).__name__})")
    return PermanentError(f"{type(err).__name__}")


def _retry_after(err: Any) -> float | None:
    try:
        value = err.response.headers.get("retry-after")
        return max(0.0, float(value)) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def parse_answer(response: Any) -> tuple[str, str | None, str | None]:
    """(text, response model, finish reason) from a chat completion; TransientError when it holds no answer."""
    choices = getattr(response, "choices", None)
    if not choices:
        raise TransientError("malformed response (no choices)")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        raise TransientError("malformed response (no message content)")
    text = _THINK.sub("", content).strip()
    if not re.search(r"[A-Za-z0-9]", text):
        raise TransientError("malformed response (empty content)")
    model, finish = getattr(response, "model", None), getattr(choices[0], "finish_reason", None)
    return text, model if isinstance(model, str) else None, finish if isinstance(finish, str) else None


def answer_problem(text: str, finish_reason: str | None, max_chars: int) -> str | None:
    """Why ``text`` may not be kept as a description (None when it may): also the cache's test on read."""
    if finish_reason in ("length", "content_filter"):
        return (f"the answer was cut off by the server (finish_reason={finish_reason}): raise its output token limit "
                "(e.g. vLLM --max-model-len, Ollama num_predict) and ask again")
    if len(text) > max_chars:
        return f"the answer has {len(text):,} characters, more than {max_chars:,}: not a description"
    control = sum(1 for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and c not in "\n\r\t")
    if control or "\ufffd" in text:
        return "the answer holds control or undecodable characters: not text"
    words = _WORD.findall(text)
    letters = sum(len(w) for w in words)
    if len(words) < 3 or letters < 0.5 * len(text.replace(" ", "").replace("\n", "")):
        return "the answer is not made of words: not a description"
    return None


def backoff_delay(attempt: int, config: LLMConfig, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): capped exponential, half of it jittered."""
    cap = min(config.backoff_max_s, config.backoff_base_s * (2 ** (attempt - 1)))
    delay = cap / 2 + rng.uniform(0, cap / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, config.backoff_max_s))
    return delay


def ask(
    prompt: str,
    config: LLMConfig,
    *,
    stop: threading.Event | None = None,
    rng: random.Random | None = None,
    on_attempt: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    deadline: float | None = None,
    client_factory: Callable[[LLMConfig], Any] = make_client,
) -> Answer:
    """Ask ``prompt`` until a valid answer comes, attempts or budgets run out, or ``stop`` is set.

    ``deadline`` (``time.monotonic()`` value) ends the whole run's asking. Each attempt takes at most
    ``config.timeout_s``, and no more than the retry budget or the deadline leave. Raises PermanentError
    (message safe to show) when no answer was obtained.
    """
    rng = rng or random.Random()
    secrets = config.secrets()
    started = time.monotonic()
    last = "no attempt made"
    for attempt in range(1, config.max_attempts + 1):
        if stop is not None and stop.is_set():
            raise PermanentError("stopped: another request to the endpoint failed fatally")
        now = time.monotonic()
        seconds = min(config.timeout_s, config.retry_budget_s - (now - started),
                      float("inf") if deadline is None else deadline - now)
        if seconds <= 0:
            raise PermanentError(f"not asked again: the run's time limit was reached (last error: {last})"
                                 if deadline is not None and deadline - now <= 0 else
                                 f"gave up after {attempt - 1} attempts (retry budget spent; last error: {last})")
        if on_attempt is not None:
            on_attempt()
        try:
            kwargs: dict[str, Any] = {"model": config.model, "messages": [{"role": "user", "content": prompt}]}
            if config.temperature is not None:
                kwargs["temperature"] = config.temperature
            response = request_once(config, kwargs, seconds, client_factory)
            text, model, finish = parse_answer(response)
            text = scrub(text, secrets)
            problem = answer_problem(text, finish, config.max_answer_chars)
            if problem is not None:
                cut = finish in ("length", "content_filter")
                raise PermanentError(problem) if cut else TransientError(problem)
            return Answer(text=text, response_model=scrub(model, secrets) if model else None,
                          finish_reason=scrub(finish, secrets) if finish else None, attempts=attempt)
        except Exception as err:  # noqa: BLE001 - every failure is classified below
            kind = _classify(err)
            last = _short(scrub(str(kind), secrets))
            if isinstance(kind, PermanentError):
                raise PermanentError(last, fatal=kind.fatal) from None
            if attempt == config.max_attempts:
                break
            delay = backoff_delay(attempt, config, rng, getattr(kind, "retry_after", None))
            if time.monotonic() - started + delay > config.retry_budget_s:
                raise PermanentError(f"gave up after {attempt} attempts (retry budget "
                                     f"{config.retry_budget_s:g} s spent; last error: {last})") from None
            if deadline is not None and time.monotonic() + delay > deadline:
                raise PermanentError(f"gave up after {attempt} attempts (the run's time limit comes first; "
                                     f"last error: {last})") from None
            log.debug(
                "attempt %d to %s failed (%s); retrying in %.2f s", attempt, redact_url(config.base_url), last, delay
            )
            if stop is not None:
                stop.wait(delay)  # wakes early when another request fails fatally
            else:
                sleep(delay)
    raise PermanentError(f"gave up after {config.max_attempts} attempts (last error: {last})")


def _short(message: str) -> str:
    return message if len(message) <= 300 else message[:297] + "..."
