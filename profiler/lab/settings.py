"""How a lab gateway is configured, and how that crosses into its workers.

gunicorn forks workers that import the app by name, so the settings travel as
environment variables; this module is the one place that names them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Mode = Literal["held", "fresh"]
MODES: tuple[Mode, ...] = ("held", "fresh")

_PREFIX = "PROFILER_LAB_"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What one gateway worker needs to know.

    ``dsn`` is a SQLAlchemy URL with the psycopg 3 driver
    (``postgresql+psycopg://...``). ``pool_size``/``max_overflow``/``pool_timeout``
    are per worker process, exactly as SQLAlchemy applies them: a gateway with
    N workers can hold N * (pool_size + max_overflow) connections.
    """

    dsn: str
    mode: Mode
    downstream_url: str
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    # Off behind PgBouncer in transaction pooling: a server-side prepared statement
    # lives on one server connection, and the next transaction may get another.
    prepared_statements: bool = True
    scenario: str = ""  # a name of profiler.lab.scenarios.SCENARIOS, or none

    def to_env(self) -> dict[str, str]:
        return {
            f"{_PREFIX}PREPARED_STATEMENTS": "1" if self.prepared_statements else "0",
            f"{_PREFIX}SCENARIO": self.scenario,
            f"{_PREFIX}DSN": self.dsn,
            f"{_PREFIX}MODE": self.mode,
            f"{_PREFIX}DOWNSTREAM_URL": self.downstream_url,
            f"{_PREFIX}POOL_SIZE": str(self.pool_size),
            f"{_PREFIX}MAX_OVERFLOW": str(self.max_overflow),
            f"{_PREFIX}POOL_TIMEOUT": str(self.pool_timeout),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if environ is None else environ
        mode = env.get(f"{_PREFIX}MODE", "held")
        if mode not in MODES:
            raise ValueError(f"{_PREFIX}MODE must be one of {', '.join(MODES)}, not {mode!r}")
        return cls(
            dsn=env[f"{_PREFIX}DSN"],
            mode=mode,
            downstream_url=env[f"{_PREFIX}DOWNSTREAM_URL"],
            pool_size=int(env.get(f"{_PREFIX}POOL_SIZE", "5")),
            max_overflow=int(env.get(f"{_PREFIX}MAX_OVERFLOW", "10")),
            pool_timeout=float(env.get(f"{_PREFIX}POOL_TIMEOUT", "30")),
            prepared_statements=env.get(f"{_PREFIX}PREPARED_STATEMENTS", "1") != "0",
            scenario=env.get(f"{_PREFIX}SCENARIO", ""),
        )


# Tokens the seed creates and the load generator sends; the gateway's
# authentication dependency looks each one up in the database.
def api_token(index: int) -> str:
    return f"lab-token-{index:04d}"


API_TOKEN_COUNT = 50
