"""Requests and the connections they hold at once, and who in the request opened each.

The task sampler names, per round, the backends each asyncio task holds
(``backends``) and who holds them (``openers``: a frame's function, or a yield
dependency entered on the request's exit stack), and which request a task
serves (``request``: one id shared by the tasks of a request, such as a
``BaseHTTPMiddleware`` and the handler its ``call_next`` runs in another
task). A *request round* is one request in one round: the union of what its
tasks held then. A request round with two backends or more is a request that
needed two connections at once: a pool of P then serves at most P / 2 such
requests, and a pool can empty while each request waits for its second
connection holding its first.

Each backend gets one *holder*, the code a reader changes: the application
yield dependency that opened it (``get_db``), with the dependency that asked for
it when that is another one (``authenticate`` over ``get_auth_db``); else the
outermost application frame whose locals hold it: a middleware's ``dispatch``
(when the task is inside ``call_next``) or the handler. Library frames
(FastAPI's ``contextmanager_in_threadpool``) are never holders.

Pure: no I/O, no clock; tested on hand-built task rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.analysis.code_paths import ENDPOINT_PREFIX, is_application_file
from profiler.analysis.collapsed import frames as stack_frames
from profiler.analysis.collapsed import split_label
from profiler.analysis.columns import epoch_seconds

if TYPE_CHECKING:
    import pandas as pd

MIDDLEWARE_MARK = "call_next"  # a frame of Starlette's BaseHTTPMiddleware


@dataclass(frozen=True, slots=True)
class Holder:
    """The code holding a connection in a request.

    ``role``: ``dependency`` (a yield dependency), ``middleware`` (a frame that
    holds it across ``call_next``) or ``handler``; ``asked_by``: for a
    dependency, the dependency that asked for it, when that is another one.
    """

    function: str
    file: str
    line: int
    role: str
    asked_by: str | None = None
    for_handler: bool = False  # a dependency whose session the handler itself uses

    def label(self) -> str:
        """``dependency `authenticate` (its session from `get_auth_db`)``, ``handler
        `get_db```, ``middleware `dispatch```."""
        if self.asked_by:
            return f"{self.role} `{self.asked_by}` (its session from `{self.function}`)"
        if self.for_handler:
            return f"handler `{self.function}`"
        return f"{self.role} `{self.function}`"


@dataclass(frozen=True, slots=True)
class EndpointConnections:
    """What the requests of one endpoint held at once.

    ``rounds``: request rounds that held at least one connection;
    ``multi_rounds``: those that held two or more; ``typical``: the count most
    multi rounds held; ``holders``: in a multi round, who held each connection
    (most often seen first); ``workers``: the worker PIDs of those rounds.
    """

    endpoint: str
    rounds: int
    multi_rounds: int
    max_connections: int
    typical: int
    holders: list[Holder] = field(default_factory=list)
    workers: list[int] = field(default_factory=list)
    all_holders: list[Holder] = field(default_factory=list)  # of every round that held

    @property
    def handler(self) -> str | None:
        """``invoke_tool`` from ``POST /tools/{tool_id}/invoke (invoke_tool)``."""
        if self.endpoint.endswith(")") and "(" in self.endpoint:
            return self.endpoint.rsplit("(", 1)[1][:-1]
        return None

    @property
    def route(self) -> str:
        """``POST /tools/{tool_id}/invoke``."""
        return self.endpoint.rsplit(" (", 1)[0] if self.handler else self.endpoint

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "request_rounds": self.rounds,
            "multi_rounds": self.multi_rounds,
            "max_connections": self.max_connections,
            "typical": self.typical,
            "holders": [
                {
                    "function": h.function,
                    "file": h.file,
                    "line": h.line,
                    "role": h.role,
                    "asked_by": h.asked_by,
                    "for_handler": h.for_handler,
                }
                for h in self.holders
            ],
            "workers": self.workers,
        }


def connections_per_request(tasks: pd.DataFrame) -> list[EndpointConnections]:
    """Per endpoint, its request rounds and what they held; endpoints whose requests held
    two connections at once most often first. Needs the ``endpoint`` column; the
    ``request`` and ``openers`` columns when the sampler recorded them."""
    if tasks.empty or "endpoint" not in tasks.columns:
        return []
    # Only rows that held something make a request round (the reader puts what the
    # openers hold into ``backends`` too): an hour of samples is mostly tasks holding none.
    holding = tasks["backends"].map(len).to_numpy(dtype=bool) if "backends" in tasks else None
    known = tasks["endpoint"].notna().to_numpy(dtype=bool)
    rows = tasks[known & holding] if holding is not None else tasks[known]
    if rows.empty:
        return []
    groups: dict[tuple[int, float, int], _Round] = {}
    requests = _column(rows, "request", -1)
    task_ids = _column(rows, "task_id", -1)
    openers = rows["openers"].tolist() if "openers" in rows.columns else [()] * len(rows)
    workers = rows["worker_pid"].to_numpy(dtype=np.int64)
    taken = epoch_seconds(rows["taken_at"])
    endpoints = rows["endpoint"].astype(str).tolist()
    stacks = rows["stack"].astype(str).tolist()
    backends = rows["backends"].tolist()
    for i in range(len(rows)):
        key_request = int(requests[i]) if requests[i] >= 0 else -1 - int(task_ids[i])
        key = (int(workers[i]), float(taken[i]), key_request)
        found = groups.setdefault(key, _Round(endpoints[i], int(workers[i])))
        found.add(tuple(backends[i] or ()), tuple(openers[i] or ()), stacks[i])
    by_endpoint: dict[str, list[_Round]] = {}
    for round_ in groups.values():
        if round_.backends:
            by_endpoint.setdefault(round_.endpoint, []).append(round_)
    found_all = [_endpoint(endpoint, rounds) for endpoint, rounds in by_endpoint.items()]
    found_all.sort(key=lambda e: (-e.multi_rounds, -e.rounds, e.endpoint))
    return found_all


@dataclass(slots=True)
class _Round:
    endpoint: str
    worker: int
    backends: set[int] = field(default_factory=set)
    holders: dict[int, Holder] = field(default_factory=dict)

    def add(
        self, backends: tuple[int, ...], openers: tuple[tuple[Any, ...], ...], stack: str
    ) -> None:
        self.backends.update(int(b) for b in backends)
        self.backends.update(int(o[0]) for o in openers)
        handler = _handler_name(self.endpoint)
        in_call_next = MIDDLEWARE_MARK in stack
        by_backend: dict[int, list[tuple[Any, ...]]] = {}
        for opener in openers:
            if is_application_file(str(opener[2])):
                by_backend.setdefault(int(opener[0]), []).append(opener)
        for backend, mine in by_backend.items():
            if backend not in self.holders:
                self.holders[backend] = _holder(mine, handler, in_call_next, stack)


def _holder(
    openers: list[tuple[Any, ...]], handler: str | None, in_call_next: bool, stack: str
) -> Holder:
    """The holder of one backend from its openers, outermost first (see the module)."""
    dependencies = [o for o in openers if o[4] == "dependency"]
    if dependencies:
        first, last = dependencies[0], dependencies[-1]
        asked_by = str(last[1]) if last[1] != first[1] else None
        used = any(o[4] == "frame" and o[1] == handler for o in openers)
        return Holder(
            str(first[1]),
            str(first[2]),
            int(first[3]),
            "dependency",
            asked_by,
            used and not asked_by,
        )
    outer = openers[0]
    name = str(outer[1])
    role = "handler"
    if name != handler and in_call_next and _above_call_next(stack, name):
        role = "middleware"
    return Holder(name, str(outer[2]), int(outer[3]), role)


def _above_call_next(stack: str, function: str) -> bool:
    """Whether ``function``'s frame is outside (above) the ``call_next`` frame of ``stack``."""
    names = [split_label(label).name for label in stack_frames(stack)]
    calls = [i for i, name in enumerate(names) if name.endswith(MIDDLEWARE_MARK)]
    mine = [i for i, name in enumerate(names) if name == function]
    return bool(calls and mine) and min(mine) < max(calls)


def _endpoint(endpoint: str, rounds: list[_Round]) -> EndpointConnections:
    multi = [r for r in rounds if len(r.backends) >= 2]
    counts = Counter(len(r.backends) for r in multi)
    typical = max(counts.items(), key=lambda item: (item[1], item[0]))[0] if counts else 1
    return EndpointConnections(
        endpoint=endpoint.removeprefix(ENDPOINT_PREFIX),
        rounds=len(rounds),
        multi_rounds=len(multi),
        max_connections=max(len(r.backends) for r in rounds),
        typical=typical,
        holders=_ranked(multi),
        workers=sorted({r.worker for r in multi}),
        all_holders=_ranked(rounds),
    )


def _ranked(rounds: list[_Round]) -> list[Holder]:
    """The holders seen in ``rounds``, most often first (then middleware, dependency,
    handler)."""
    seen: Counter[Holder] = Counter()
    for round_ in rounds:
        seen.update(set(round_.holders.values()))
    return [h for h, _ in sorted(seen.items(), key=lambda i: (-i[1], _order(i[0])))]


def _order(holder: Holder) -> tuple[int, str]:
    return ({"middleware": 0, "dependency": 1, "handler": 2}.get(holder.role, 3), holder.function)


def _handler_name(endpoint: str) -> str | None:
    if endpoint.endswith(")") and "(" in endpoint:
        return endpoint.rsplit("(", 1)[1][:-1]
    return None


def _column(frame: pd.DataFrame, name: str, default: int) -> np.ndarray[Any, Any]:
    if name not in frame.columns:
        return np.full(len(frame), default, dtype=np.int64)
    return frame[name].to_numpy(dtype=np.int64, na_value=default)
