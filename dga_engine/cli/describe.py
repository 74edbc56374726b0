"""``dga-engine describe``: LLM descriptions of objects and their semantic features (paper Sec. 3.5)."""

from __future__ import annotations

import typer

from dga_engine.cli.common import JSON_OPTION, emit_json, layout, progress, table
from dga_engine.describe.config import BASE_URL_ENV, DEFAULT_ENCODER, ENCODER_ENV, MODEL_ENV


def describe(
    ctx: typer.Context,
    objects: str = typer.Option(
        "all", "--objects", help="Comma-separated object ids, or 'all' (every object in the store)."
    ),
    model: str | None = typer.Option(
        None, "--model", envvar=MODEL_ENV, help="Chat model name (default gpt-4o-mini). Part of the cache key."
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        envvar=BASE_URL_ENV,
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM) or http://127.0.0.1:11434/v1 (Ollama). "
        "Unset: descriptions are disabled and the pipeline continues without semantic features.",
    ),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Most requests in flight at once."),
    encoder: str = typer.Option(
        DEFAULT_ENCODER,
        "--encoder",
        envvar=ENCODER_ENV,
        help="Text encoder for features: the packaged offline MiniLM (default), a local model folder, or a hub name "
        "such as bert-large-uncased (the paper's; needs a reachable hub or a local copy).",
    ),
    features: bool = typer.Option(True, "--features/--no-features", help="Also compute semantic feature vectors."),
    timeout: float = typer.Option(
        60.0,
        "--timeout",
        min=0.1,
        help="Seconds one request may take in total, from sending it "
        "to the answer's last byte (a server that trickles bytes is cut off); then it is retried.",
    ),
    max_attempts: int = typer.Option(
        5, "--max-attempts", min=1, help="Most requests per description, retries included."
    ),
    run_timeout: float | None = typer.Option(
        None,
        "--run-timeout",
        min=0.1,
        help="Seconds the whole run may take, "
        "retries and waits included; labels not answered by then fail. Default: no limit.",
    ),
    refresh: bool = typer.Option(
        False,
        "--refresh",
        help="Ask again even for labels with a cached answer; a valid new answer replaces the cached one.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Ask an LLM to describe each object (paper prompt), cache the answers, and encode them into features.

    The API key is read only from $DGA_LLM_API_KEY (else $OPENAI_API_KEY); it is never printed or stored, nor are
    credentials in the base URL (they are scrubbed from logs, reports and stored answers, even if the server echoes
    them).
    Answers are cached per (label, prompt version, model, endpoint) once they pass a check (not cut off by the
    server's token limit, at most 20,000 characters of text, responses at most 1 MiB): a rerun asks nothing it
    already knows, unless --refresh.
    Exit code 0 when every object has a description or descriptions are disabled, 1 when some failed.
    """
    from dga_engine.describe import DescribeConfig, LLMConfig, describe_objects
    from dga_engine.objects.store import ObjectStore

    lay = layout(ctx)
    if objects.strip().lower() == "all":
        ids = ObjectStore(lay).ids()
    else:
        ids = [s.strip() for s in objects.split(",") if s.strip()]
    config = DescribeConfig(
        llm=LLMConfig(base_url=base_url or None, model=model, timeout_s=timeout, max_attempts=max_attempts,
                      run_timeout_s=run_timeout),
        concurrency=concurrency,
        features=features,
        encoder=encoder,
        refresh=refresh,
    )
    show = not as_json and config.llm.resolved().enabled
    with progress("describe", total=len(ids), enabled=show) as advance:
        report = describe_objects(lay, ids, config, progress=advance)
    if as_json:
        emit_json(report.to_dict())
    else:
        typer.echo(report.message)
        if report.failures:
            table("Objects without a description", ["object", "reason"], sorted(report.failures.items()))
    if report.failed:
        raise typer.Exit(1)
