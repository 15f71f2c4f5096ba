"""Renderers: JSON, tables, Markdown, plots. Deterministic: same data, same bytes."""
