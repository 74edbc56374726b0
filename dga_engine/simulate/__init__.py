"""The physics filter: a push test in simulation plus penetration limits, per grasp.

Protocol and backends: :mod:`dga_engine.simulate.config` (every number), :mod:`.scene` (the MuJoCo
scene), :mod:`.closing` (the squeeze), :mod:`.backends` (the push test per simulator), :mod:`.decide` (the
decision per grasp), :mod:`.engine` (tasks and tables), :mod:`.stage` (the resumable stage), :mod:`.metrics`
(Suc.1, Suc.6, Pen, Div). See docs/filter.md.
"""

from dga_engine.simulate.config import FilterConfig

_LAZY = {"FILTERED_SCHEMA": "engine", "filter_table": "engine", "run_filter": "stage", "FilterSummary": "stage"}


def __getattr__(name):  # the engine pulls in torch, MuJoCo and the hand; the stage the dataset store: on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"dga_engine.simulate.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = ["FilterConfig", "FILTERED_SCHEMA", "filter_table", "run_filter", "FilterSummary"]
