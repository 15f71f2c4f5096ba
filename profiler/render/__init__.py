"""Profile viewers written from collapsed stacks: flamegraph SVG and speedscope JSON."""
