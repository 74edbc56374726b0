"""Asking an OpenAI-compatible chat endpoint once per question, with bounded, jittered retries.

The ``openai`` client's own retries are switched off so that one policy (ours, configurable, with a
wall-clock budget) governs every attempt. Transient failures (timeouts, connection errors, 408/409/429,
5xx, unparseable or empty answers) are retried; anything else (400, 401, 403, 404, 422) is not, and
401/403/404 are *fatal*: every other question would fail the same way, so the stage stops asking.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from dga_engine.describe.config import LLMConfig, redact_url

log = logging.getLogger(__name__)

# Reasoning models served by vLLM/Ollama may prefix the answer with their hidden chain of thought.
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_PLACEHOLDER_KEY = "not-needed"  # local servers accept any key; the openai client insists on one
_FATAL_STATUS = {401, 403, 404}
_RETRY_STATUS = {408, 409, 429}


class TransientError(Exception):
    """A failure worth retrying (the answer may come next time)."""


class PermanentError(Exception):
    """A failure that retrying cannot fix. ``fatal`` ones mean no other question can succeed either."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass
class Answer:
    """One accepted answer."""

    text: str  # the description, stripped, reasoning blocks removed
    response_model: str | None  # the model name the server reports
    finish_reason: str | None  # "stop", "length", ...
    attempts: int  # requests made for it, the successful one included


def make_client(config: LLMConfig) -> Any:
    """An ``openai.OpenAI`` client for ``config`` (resolved), its retries off; the key comes from the environment."""
    import openai

    return openai.OpenAI(
        base_url=config.base_url,
        api_key=config.api_key() or _PLACEHOLDER_KEY,
        timeout=config.timeout_s,
        max_retries=0,
    )


def _scrub(message: str, secret: str | None) -> str:
    """An error message fit for logs and reports: the key (if a server echoed it) removed, length capped."""
    if secret:
        message = message.replace(secret, "***")
    return message if len(message) <= 300 else message[:297] + "..."


def _classify(err: BaseException) -> Exception:
    """Map an exception from one request to TransientError or PermanentError."""
    import openai

    if isinstance(err, (TransientError, PermanentError)):
        return err
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
    return text, getattr(response, "model", None), getattr(choices[0], "finish_reason", None)


def backoff_delay(attempt: int, config: LLMConfig, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): capped exponential, half of it jittered."""
    cap = min(config.backoff_max_s, config.backoff_base_s * (2 ** (attempt - 1)))
    delay = cap / 2 + rng.uniform(0, cap / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, config.backoff_max_s))
    return delay


def ask(
    client: Any,
    prompt: str,
    config: LLMConfig,
    *,
    stop: threading.Event | None = None,
    rng: random.Random | None = None,
    on_attempt: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Answer:
    """Ask ``prompt`` until an answer is accepted, attempts or budget run out, or ``stop`` is set.

    Raises PermanentError (message safe to show) when no answer was obtained.
    """
    rng = rng or random.Random()
    secret = config.api_key()
    started = time.monotonic()
    last = "no attempt made"
    for attempt in range(1, config.max_attempts + 1):
        if stop is not None and stop.is_set():
            raise PermanentError("stopped: another request to the endpoint failed fatally")
        if on_attempt is not None:
            on_attempt()
        try:
            kwargs: dict[str, Any] = {"model": config.model, "messages": [{"role": "user", "content": prompt}]}
            if config.temperature is not None:
                kwargs["temperature"] = config.temperature
            response = client.chat.completions.create(**kwargs)
            text, model, finish = parse_answer(response)
            return Answer(text=text, response_model=model, finish_reason=finish, attempts=attempt)
        except Exception as err:  # noqa: BLE001 - every failure is classified below
            kind = _classify(err)
            last = _scrub(str(kind), secret)
            if isinstance(kind, PermanentError):
                raise PermanentError(last, fatal=kind.fatal) from None
            if attempt == config.max_attempts:
                break
            delay = backoff_delay(attempt, config, rng, getattr(kind, "retry_after", None))
            if time.monotonic() - started + delay > config.retry_budget_s:
                raise PermanentError(f"gave up after {attempt} attempts (retry budget "
                                     f"{config.retry_budget_s:g} s spent; last error: {last})") from None
            log.debug("attempt %d to %s failed (%s); retrying in %.2f s", attempt, redact_url(config.base_url), last, delay)
            if stop is not None:
                stop.wait(delay)  # wakes early when another request fails fatally
            else:
                sleep(delay)
    raise PermanentError(f"gave up after {config.max_attempts} attempts (last error: {last})")
