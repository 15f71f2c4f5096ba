"""Reading and writing ``mkdocs.yml`` without losing what MkDocs put there.

A site's ``mkdocs.yml`` carries tags PyYAML's safe loader refuses (``!ENV``,
``!!python/name:...`` of extensions such as pymdownx' superfences). Publishing
edits the file (the nav, ``extra_javascript``, ``extra_css``) and must write
those tags back as they were, so a loader and a dumper that keep unknown tags
as :class:`_Tagged` values live here, apart from what the edits mean
(:mod:`profiler.report.site`, :mod:`profiler.report.site_scripts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from profiler.errors import InputError


@dataclass(frozen=True, slots=True)
class _Tagged:
    """A value under a tag PyYAML does not know, kept to be written back as it was."""

    tag: str
    value: Any
    kind: str  # scalar, sequence, mapping


def _yaml() -> Any:
    """PyYAML (a dependency of MkDocs), untyped: no stubs are installed for it."""
    import importlib

    return importlib.import_module("yaml")


@lru_cache(maxsize=1)
def _yaml_classes() -> tuple[Any, Any]:
    """A safe loader that keeps unknown tags (``!ENV``, ``!!python/name:...``) as
    :class:`_Tagged`, and a safe dumper that writes them back."""
    yaml = _yaml()
    loader: Any = type("TagKeepingLoader", (yaml.SafeLoader,), {})
    dumper: Any = type("TagKeepingDumper", (yaml.SafeDumper,), {})

    def construct(load: Any, node: Any) -> _Tagged:
        if isinstance(node, yaml.ScalarNode):
            return _Tagged(node.tag, load.construct_scalar(node), "scalar")
        if isinstance(node, yaml.SequenceNode):
            return _Tagged(node.tag, load.construct_sequence(node, deep=True), "sequence")
        return _Tagged(node.tag, load.construct_mapping(node, deep=True), "mapping")

    def represent(dump: Any, data: _Tagged) -> Any:
        if data.kind == "scalar":
            return dump.represent_scalar(data.tag, data.value)
        if data.kind == "sequence":
            return dump.represent_sequence(data.tag, data.value)
        return dump.represent_mapping(data.tag, data.value)

    loader.add_constructor(None, construct)
    dumper.add_representer(_Tagged, represent)
    return loader, dumper


def load_config(path: Path) -> dict[str, Any]:
    """``mkdocs.yml`` at ``path`` as a mapping; InputError (exit 7) when it cannot be read."""
    yaml = _yaml()
    loader, _ = _yaml_classes()
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {path}: {exc}", hint="fix mkdocs.yml") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a YAML mapping", hint="fix mkdocs.yml")
    return data


def dump_config(settings: dict[str, Any]) -> str:
    """``settings`` as YAML in their own order, unknown tags written back as they were."""
    _, dumper = _yaml_classes()
    text = _yaml().dump(
        settings, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return str(text)
