"""A deterministic tool-gateway catalogue, big enough that serialising it costs real CPU.

The incident's requests were slow partly because a page of tools (JSON Schemas,
annotations, long descriptions) takes milliseconds to turn into JSON, and that
happened while the session was still open. So the rows here are as wide as a
real catalogue's, not ``name='tool1'``: several-property input schemas with
descriptions, enums and bounds, descriptions of a few hundred characters.

The same seed gives the same rows on every run, so captures from two runs (held
vs fresh) compare like for like. Inserts go through SQLAlchemy's
"insertmanyvalues" batching, so the whole seed takes about a second.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, create_engine, func, insert, select, text
from sqlalchemy.schema import CreateSchema, DropSchema

from profiler.lab.schema import (
    SCHEMA,
    TABLES,
    ApiToken,
    Base,
    JsonObject,
    Prompt,
    Resource,
    Server,
    Tool,
    ToolInvocation,
    User,
)
from profiler.lab.settings import API_TOKEN_COUNT, api_token

SERVER_COUNT = 100
TOOLS_PER_SERVER = 20
RESOURCES_PER_SERVER = 15
PROMPTS_PER_SERVER = 5
USER_COUNT = 25
INVOCATION_HISTORY = 5000

# Seeded timestamps count from here, not from the wall clock: same seed, same rows.
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)

# A DROP SCHEMA waits for every transaction that touched the lab's tables; a
# held-mode gateway left running keeps some open for as long as it is loaded.
# Fail with a lock timeout instead of hanging.
LOCK_TIMEOUT = "15s"

# Word lists read better as prose than as a hundred quoted items.
_WORDS = """
account access agent analytics archive audit batch billing branch bucket build cache
calendar catalog channel chart check cluster commit compliance config contact container
cost customer dashboard dataset deploy device document domain email endpoint entity
event export feature file filter forecast gateway graph incident index inventory invoice
issue job ledger license log message metric model monitor namespace network note
notification order owner package payment pipeline policy portfolio project query queue
quota record region release report repository request resource review role rule schedule
schema search secret segment service session shipment snapshot source space sprint
storage subscription summary task team template ticket timeline token topic trace
transaction upload usage user vendor version volume warehouse webhook workflow workspace
""".split()  # noqa: SIM905
_VERBS = """
create list get update delete search sync export import archive restore approve assign
close merge notify publish rotate scan summarise tag validate
""".split()  # noqa: SIM905
_FILLER = """
the a for with from into across each every any matching selected current recent pending
active related optional required given configured returned and or by when if only
""".split()  # noqa: SIM905
_TAGS = """
analytics automation billing crm devops docs finance hr identity infra internal
monitoring productivity read-only sales search security storage support ticketing
""".split()  # noqa: SIM905
_INTEGRATIONS = ("MCP", "REST", "A2A")
_TRANSPORTS = ("streamablehttp", "sse", "stdio")
_MIME_TYPES = (
    "application/json",
    "text/markdown",
    "text/plain",
    "text/csv",
    "application/pdf",
    "image/png",
)
_FIRST_NAMES = ("Ada", "Alan", "Barbara", "Donald", "Edsger", "Grace", "John", "Ken", "Leslie")
_LAST_NAMES = ("Hopper", "Knuth", "Liskov", "Lovelace", "Ritchie", "Thompson", "Turing", "Wirth")


def create_and_seed(sqlalchemy_url: str, *, seed: int = 42) -> dict[str, int]:
    """Recreate the ``profiler_lab`` schema, fill it, and return the row count of each table.

    Drops and recreates only :data:`~profiler.lab.schema.SCHEMA`, in one
    transaction, so a failed seed leaves the previous catalogue in place.
    """
    rng = random.Random(seed)
    engine = create_engine(sqlalchemy_url, connect_args={"application_name": "profiler-lab-seed"})
    try:
        with engine.begin() as conn:
            conn.execute(
                text("SELECT set_config('lock_timeout', :timeout, true)"),
                {"timeout": LOCK_TIMEOUT},
            )
            conn.execute(DropSchema(SCHEMA, cascade=True, if_exists=True))
            conn.execute(CreateSchema(SCHEMA))
            Base.metadata.create_all(conn)
            _seed(conn, rng)
            return _row_counts(conn)
    finally:
        engine.dispose()


def _seed(conn: Connection, rng: random.Random) -> None:
    server_ids = _insert_returning_ids(
        conn, Server, [_server(rng, index) for index in range(SERVER_COUNT)]
    )
    tool_ids = _insert_returning_ids(
        conn,
        Tool,
        [
            _tool(rng, server_id, index)
            for server_id in server_ids
            for index in range(TOOLS_PER_SERVER)
        ],
    )
    conn.execute(
        insert(Resource),
        [
            _resource(rng, server_id, index)
            for server_id in server_ids
            for index in range(RESOURCES_PER_SERVER)
        ],
    )
    conn.execute(
        insert(Prompt),
        [
            _prompt(rng, server_id, index)
            for server_id in server_ids
            for index in range(PROMPTS_PER_SERVER)
        ],
    )
    user_ids = _insert_returning_ids(conn, User, [_user(index) for index in range(USER_COUNT)])
    conn.execute(
        insert(ApiToken),
        [
            _api_token(rng, index, user_ids[index % len(user_ids)])
            for index in range(API_TOKEN_COUNT)
        ],
    )
    conn.execute(
        insert(ToolInvocation),
        [_invocation(rng, tool_ids, user_ids, index) for index in range(INVOCATION_HISTORY)],
    )


def _insert_returning_ids(
    conn: Connection, model: type[Base], rows: Sequence[dict[str, Any]]
) -> list[int]:
    """Bulk insert keeping the generated ids in row order, for the rows that refer to them."""
    table = Base.metadata.tables[f"{SCHEMA}.{model.__tablename__}"]
    result = conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return list(result.scalars())


def _row_counts(conn: Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for model in TABLES:
        table = Base.metadata.tables[f"{SCHEMA}.{model.__tablename__}"]
        counts[table.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return counts


def _words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(_WORDS if rng.random() < 0.6 else _FILLER) for _ in range(count)]


def _sentence(rng: random.Random, min_chars: int, max_chars: int) -> str:
    """Prose-shaped text of a length in the range: what descriptions look like to a serialiser."""
    target = rng.randint(min_chars, max_chars)
    sentences: list[str] = []
    length = 0
    while length < target:
        sentence = " ".join(_words(rng, rng.randint(6, 16))).capitalize() + "."
        if sentences and length + len(sentence) > max_chars:
            break
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)[:max_chars]  # only a lone over-long sentence is cut


def _tags(rng: random.Random) -> list[str]:
    return sorted(rng.sample(_TAGS, rng.randint(2, 5)))


def _moment(rng: random.Random, days: float) -> datetime:
    return EPOCH + timedelta(seconds=rng.uniform(0, days * 86400))


def _server(rng: random.Random, index: int) -> dict[str, Any]:
    name = f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{index:03d}"
    created = _moment(rng, 30)
    return {
        "name": name,
        "url": f"https://{name}.mcp.example/mcp",
        "transport": rng.choice(_TRANSPORTS),
        "description": _sentence(rng, 150, 400),
        "capabilities": {
            "tools": {"listChanged": rng.random() < 0.5},
            "resources": {"subscribe": rng.random() < 0.3, "listChanged": rng.random() < 0.5},
            "prompts": {"listChanged": rng.random() < 0.5},
            "logging": {},
            "experimental": {"sampling": rng.random() < 0.2},
        },
        "tags": _tags(rng),
        "enabled": rng.random() < 0.95,
        "created_at": created,
        "updated_at": created + timedelta(days=rng.uniform(0, 60)),
    }


def _property(rng: random.Random, depth: int = 0) -> JsonObject:
    kind = rng.choice(("string", "string", "integer", "number", "boolean", "array", "object"))
    if kind == "object" and depth > 0:
        kind = "string"
    prop: JsonObject = {"type": kind, "description": _sentence(rng, 60, 180)}
    if kind == "string":
        roll = rng.random()
        if roll < 0.3:
            prop["enum"] = sorted(set(rng.sample(_WORDS, rng.randint(3, 6))))
        elif roll < 0.5:
            prop["format"] = rng.choice(("uri", "date-time", "email", "uuid"))
        else:
            prop["minLength"] = 1
            prop["maxLength"] = rng.choice((64, 256, 1024, 4096))
    elif kind in ("integer", "number"):
        low = rng.randint(0, 10)
        prop["minimum"] = low
        prop["maximum"] = low + rng.choice((10, 100, 1000, 10000))
        prop["default"] = low + 1
    elif kind == "boolean":
        prop["default"] = rng.random() < 0.5
    elif kind == "array":
        prop["items"] = {"type": "string", "description": _sentence(rng, 30, 80)}
        prop["maxItems"] = rng.choice((10, 50, 100))
        prop["uniqueItems"] = True
    else:
        nested = {f"{rng.choice(_WORDS)}_{i}": _property(rng, depth + 1) for i in range(3)}
        prop["properties"] = nested
        prop["required"] = sorted(rng.sample(sorted(nested), 1))
        prop["additionalProperties"] = False
    return prop


def _input_schema(rng: random.Random, tool_name: str) -> JsonObject:
    properties = {
        f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}_{i}": _property(rng)
        for i in range(rng.randint(3, 8))
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{tool_name} arguments",
        "type": "object",
        "properties": properties,
        "required": sorted(rng.sample(sorted(properties), rng.randint(1, 3))),
        "additionalProperties": False,
    }


def _output_schema(rng: random.Random) -> JsonObject | None:
    if rng.random() < 0.5:
        return None
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "object"}},
            "next_cursor": {"type": ["string", "null"]},
            "total": {"type": "integer", "minimum": 0},
        },
    }


def _tool(rng: random.Random, server_id: int, index: int) -> dict[str, Any]:
    verb, noun = rng.choice(_VERBS), rng.choice(_WORDS)
    name = f"{verb}_{noun}_{index:02d}"
    read_only = verb in ("list", "get", "search", "scan", "summarise")
    created = _moment(rng, 60)
    return {
        "server_id": server_id,
        "name": name,
        "display_name": f"{verb.capitalize()} {noun}",
        "description": _sentence(rng, 200, 600),
        "integration_type": rng.choice(_INTEGRATIONS),
        "request_type": "GET" if read_only else rng.choice(("POST", "PUT", "PATCH", "DELETE")),
        "input_schema": _input_schema(rng, name),
        "output_schema": _output_schema(rng),
        "annotations": {
            "title": f"{verb.capitalize()} {noun}",
            "readOnlyHint": read_only,
            "destructiveHint": verb in ("delete", "archive", "close", "rotate"),
            "idempotentHint": read_only or rng.random() < 0.3,
            "openWorldHint": rng.random() < 0.4,
        },
        "tags": _tags(rng),
        "enabled": rng.random() < 0.97,
        "created_at": created,
        "updated_at": created + timedelta(days=rng.uniform(0, 30)),
    }


def _resource(rng: random.Random, server_id: int, index: int) -> dict[str, Any]:
    noun = rng.choice(_WORDS)
    mime_type = rng.choice(_MIME_TYPES)
    return {
        "server_id": server_id,
        "uri": f"resource://{server_id}/{noun}/{index:03d}",
        "name": f"{noun}-{index:03d}",
        "description": _sentence(rng, 100, 350),
        "mime_type": mime_type,
        "size_bytes": rng.randint(200, 5_000_000),
        "annotations": {
            "audience": sorted(rng.sample(["user", "assistant"], rng.randint(1, 2))),
            "priority": round(rng.random(), 2),
            "lastModified": _moment(rng, 90).isoformat(),
        },
        "tags": _tags(rng),
        "created_at": _moment(rng, 90),
    }


def _prompt(rng: random.Random, server_id: int, index: int) -> dict[str, Any]:
    arguments = [
        {
            "name": f"{rng.choice(_WORDS)}_{position}",
            "description": _sentence(rng, 40, 120),
            "required": position == 0 or rng.random() < 0.3,
        }
        for position in range(rng.randint(1, 4))
    ]
    placeholders = " ".join(f"{{{{{argument['name']}}}}}" for argument in arguments)
    return {
        "server_id": server_id,
        "name": f"{rng.choice(_VERBS)}_{rng.choice(_WORDS)}_{index}",
        "description": _sentence(rng, 100, 300),
        "template": f"{_sentence(rng, 200, 500)}\n\nInputs: {placeholders}\n\n"
        f"{_sentence(rng, 100, 300)}",
        "arguments": arguments,
        "tags": _tags(rng),
        "created_at": _moment(rng, 90),
    }


def _user(index: int) -> dict[str, Any]:
    first = _FIRST_NAMES[index % len(_FIRST_NAMES)]
    last = _LAST_NAMES[(index // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
    return {
        "email": f"user{index:03d}@lab.example",
        "full_name": f"{first} {last}",
        "is_admin": index == 0,
        "is_active": True,
        "created_at": EPOCH + timedelta(hours=index),
    }


def _api_token(rng: random.Random, index: int, user_id: int) -> dict[str, Any]:
    return {
        "token": api_token(index),
        "user_id": user_id,
        "name": f"{rng.choice(_WORDS)} automation {index}",
        "scopes": sorted(rng.sample(["tools:read", "tools:invoke", "resources:read"], 2)),
        "revoked": False,
        "created_at": EPOCH + timedelta(hours=index),
        # Most tokens never expire; the rest far beyond any lab run, so every
        # token the load generator sends is valid.
        "expires_at": None if rng.random() < 0.7 else datetime(2100, 1, 1, tzinfo=timezone.utc),
    }


def _invocation(
    rng: random.Random, tool_ids: Sequence[int], user_ids: Sequence[int], index: int
) -> dict[str, Any]:
    ok = rng.random() < 0.95
    return {
        "tool_id": rng.choice(tool_ids),
        "user_id": rng.choice(user_ids),
        "started_at": EPOCH + timedelta(seconds=index * 37 + rng.uniform(0, 30)),
        "duration_ms": round(rng.lognormvariate(6.5, 0.6), 1),
        "status": "ok" if ok else "error",
        "result": {
            "content": [{"type": "text", "text": _sentence(rng, 80, 240)}],
            "isError": not ok,
        },
    }
