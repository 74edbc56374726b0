"""The physics filter: a push test in simulation plus penetration limits, per grasp.

Protocol and backends: :mod:`dga_engine.simulate.config` (every number), :mod:`.scene` (the MuJoCo
scene), :mod:`.closing` (the squeeze), :mod:`.backends` (the push test per simulator), :mod:`.decide` (the
decision per grasp), :mod:`.engine` (tasks and tables), :mod:`.stage` (the resumable stage), :mod:`.metrics`
(Suc.1, Suc.6, Pen, Div). See docs/filter.md.
"""

from dga_engine.simulate.config import FilterConfig
from dga_engine.simulate.engine import FILTERED_SCHEMA, filter_table


def __getattr__(name):  # the stage pulls in the dataset store; import it on first use
    if name in ("run_filter", "FilterSummary"):
        from dga_engine.simulate import stage

        return getattr(stage, name)
    raise AttributeError(name)


__all__ = ["FilterConfig", "FILTERED_SCHEMA", "filter_table", "run_filter", "FilterSummary"]
