"""Flamegraph SVG and speedscope JSON, read back the way a viewer would read them."""

from __future__ import annotations

import json
import random
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from profiler.analysis import collapsed
from profiler.render.flamegraph import CHAR_WIDTH, FRAME_HEIGHT, TEXT_PAD, render_svg
from profiler.render.speedscope import SCHEMA, speedscope_document, write_speedscope

SVG = "{http://www.w3.org/2000/svg}"
BUSY = {
    "<module> (busy.py:9);spin_alpha (busy.py:4)": 30,
    "<module> (busy.py:9);spin_beta (busy.py:5)": 10,
}


@dataclass(frozen=True)
class Drawn:
    """One frame as the SVG shows it."""

    label: str
    title: str
    start: int
    samples: int
    x: float
    y: int
    width: float
    fill: str
    text: str


def drawn(svg: str) -> list[Drawn]:
    root = ET.fromstring(svg)
    layer = root.find(f"{SVG}g[@class='frames']")
    if layer is None:
        return []
    frames = []
    for group in layer.findall(f"{SVG}g"):
        title = group.findtext(f"{SVG}title")
        rect = group.find(f"{SVG}rect")
        assert title is not None and rect is not None
        frames.append(
            Drawn(
                label=title.rsplit(" (", 1)[0],
                title=title,
                start=int(group.attrib["data-s"]),
                samples=int(group.attrib["data-n"]),
                x=float(rect.attrib["x"]),
                y=int(rect.attrib["y"]),
                width=float(rect.attrib["width"]),
                fill=rect.attrib["fill"],
                text=group.findtext(f"{SVG}text") or "",
            )
        )
    return frames


def by_label(frames: list[Drawn], label: str) -> list[Drawn]:
    return [frame for frame in frames if frame.label == label]


def placements(frames: list[Drawn]) -> set[tuple[str, int, int, int]]:
    """(label, depth, first sample, samples), depth counted up from the ``all`` bar."""
    root_y = by_label(frames, "all")[0].y
    return {
        (frame.label, (root_y - frame.y) // FRAME_HEIGHT, frame.start, frame.samples)
        for frame in frames
    }


def reference_placements(
    stacks: Mapping[str, int], min_count: float
) -> set[tuple[str, int, int, int]]:
    """The obvious way: a call tree of nested dicts, walked with children sorted by label."""
    tree: dict[str, Any] = {}
    weight: Counter[tuple[str, ...]] = Counter()
    total = 0
    for stack, count in stacks.items():
        if count <= 0:
            continue
        total += count
        node = tree
        path: tuple[str, ...] = ()
        for label in collapsed.frames(stack):
            path = (*path, label)
            weight[path] += count
            node = node.setdefault(label, {})
    placed = {("all", 0, 0, total)}
    todo: list[tuple[dict[str, Any], tuple[str, ...], int]] = [(tree, (), 0)]
    while todo:
        node, path, start = todo.pop()
        for label in sorted(node):
            count = weight[(*path, label)]
            if count >= min_count:
                shown = re.sub("[\x00-\x08]", "\ufffd", label)  # as the SVG shows it
                placed.add((shown, len(path) + 1, start, count))
                todo.append((node[label], (*path, label), start))
            start += count
    return placed


# --- flamegraph -------------------------------------------------------------------------------


def test_titles_carry_labels_counts_and_percentages() -> None:
    # GIVEN two functions called from one module frame
    # WHEN
    frames = drawn(render_svg(BUSY, title="CPU"))
    # THEN
    titles = {frame.title for frame in frames}
    assert titles == {
        "all (40 samples, 100.00%)",
        "<module> (busy.py:9) (40 samples, 100.00%)",
        "spin_alpha (busy.py:4) (30 samples, 75.00%)",
        "spin_beta (busy.py:5) (10 samples, 25.00%)",
    }


def test_counts_use_thousands_separators_and_the_given_unit() -> None:
    frames = drawn(render_svg({"a;b": 12_345, "a": 1}, title="t", unit="ms"))
    assert by_label(frames, "b")[0].title == "b (12,345 ms, 99.99%)"
    assert by_label(frames, "all")[0].title == "all (12,346 ms, 100.00%)"


def test_root_at_the_bottom_and_children_above_their_parent() -> None:
    frames = drawn(render_svg(BUSY, title="CPU", width=1000))
    root = by_label(frames, "all")[0]
    module = by_label(frames, "<module> (busy.py:9)")[0]
    alpha = by_label(frames, "spin_alpha (busy.py:4)")[0]
    assert root.y - module.y == FRAME_HEIGHT
    assert module.y - alpha.y == FRAME_HEIGHT
    assert (root.x, root.width) == (10.0, 980.0)
    assert alpha.width == pytest.approx(980 * 30 / 40, abs=0.01)


def test_identical_siblings_merge_into_one_frame_sorted_alphabetically() -> None:
    # GIVEN stacks sharing a prefix, in an order that is not alphabetical
    stacks = {"x;b": 1, "a;b;d": 2, "a;b;c": 3, "a;b": 4}
    # WHEN
    frames = drawn(render_svg(stacks, title="merge"))
    # THEN one `a` holds every stack through it, and `b` under it likewise
    assert [(f.start, f.samples) for f in by_label(frames, "a")] == [(0, 9)]
    assert sorted((f.start, f.samples) for f in by_label(frames, "b")) == [(0, 9), (9, 1)]
    # children in label order from the parent's left edge; b's own time leaves a gap on the right
    assert [(f.start, f.samples) for f in by_label(frames, "c")] == [(0, 3)]
    assert [(f.start, f.samples) for f in by_label(frames, "d")] == [(3, 2)]
    assert [(f.start, f.samples) for f in by_label(frames, "x")] == [(9, 1)]
    assert len(frames) == 7


def test_labels_are_escaped() -> None:
    # GIVEN labels with every character XML cares about
    lam = "<lambda> (a&b.py:3)"
    odd = "say \"hi\" & 'bye' <T>"
    svg = render_svg({f"{lam};{odd}": 2}, title="R&D <cpu>", subtitle="a < b & c")
    # WHEN parsed
    root = ET.fromstring(svg)
    frames = drawn(svg)
    # THEN the text comes back exactly, and never raw in the markup
    assert by_label(frames, lam)[0].title == f"{lam} (2 samples, 100.00%)"
    assert by_label(frames, odd)[0].samples == 2
    assert "<lambda>" not in svg
    assert "&lt;lambda&gt; (a&amp;b.py:3)" in svg
    texts = [element.text for element in root.iter(f"{SVG}text")]
    assert "R&D <cpu>" in texts
    assert "a < b & c" in texts


def test_characters_xml_cannot_carry_are_replaced_and_output_is_ascii() -> None:
    svg = render_svg({"bell\x07;caf\u00e9 (\udcff.py:1)": 1}, title="\u00fcber")
    svg.encode("ascii")  # survives a locale that is not UTF-8
    frames = drawn(svg)
    assert {f.label for f in frames} == {"all", "bell\ufffd", "caf\u00e9 (\ufffd.py:1)"}
    assert ET.fromstring(svg).findtext(f"{SVG}text") == "\u00fcber"


@pytest.mark.parametrize("stacks", [{}, {"a;b": 0}, Counter()])
def test_no_samples_is_a_valid_svg_saying_so(stacks: Mapping[str, int]) -> None:
    root = ET.fromstring(render_svg(stacks, title="idle", subtitle="worker 7"))
    texts = [element.text for element in root.iter(f"{SVG}text")]
    assert texts == ["idle", "worker 7", "no samples"]
    assert root.find(f"{SVG}script") is None
    assert drawn(render_svg(stacks, title="idle")) == []


def test_same_input_same_bytes_whatever_the_insertion_order() -> None:
    stacks = {"main;a;b": 5, "main;c": 2, "other": 1, "main;a": 3}
    reordered = Counter(dict(reversed(list(stacks.items()))))
    first = render_svg(stacks, title="t", subtitle="s")
    assert render_svg(stacks, title="t", subtitle="s") == first
    assert render_svg(reordered, title="t", subtitle="s") == first


def test_colour_is_warm_and_fixed_by_function_name() -> None:
    frames = drawn(
        render_svg(
            {"main (a.py:1);work (a.py:10)": 5, "main (a.py:1);work (a.py:20)": 5}, title="t"
        )
    )
    fills = {
        frame.fill
        for frame in by_label(frames, "work (a.py:10)") + by_label(frames, "work (a.py:20)")
    }
    assert len(fills) == 1  # same function, other line: same colour
    red, green, blue = (int(part) for part in fills.pop()[4:-1].split(","))
    assert red >= 205 and blue < 56 and 60 <= green <= 230
    # crc32, not the per-process salted hash(): this value holds in every run
    assert by_label(frames, "main (a.py:1)")[0].fill == "rgb(231,79,48)"


def test_frames_narrower_than_a_tenth_of_a_pixel_are_pruned_but_keep_their_room() -> None:
    # GIVEN a 1-sample frame beside a 100k-sample one: 0.0118 px at width 1200
    frames = drawn(render_svg({"aaa_tiny": 1, "zzz_big;child": 100_000}, title="t"))
    # THEN it is not drawn, yet it is counted and its place is left empty
    assert by_label(frames, "aaa_tiny") == []
    assert by_label(frames, "all")[0].samples == 100_001
    big = by_label(frames, "zzz_big")[0]
    assert big.start == 1
    assert big.x == pytest.approx(10 + 1180 / 100_001, abs=0.01)
    assert by_label(frames, "child")[0].start == 1
    # AND at 0.85 px it is drawn
    kept = drawn(render_svg({"aaa_tiny": 1, "zzz_big;child": 1_000}, title="t"))
    assert [(f.start, f.samples) for f in by_label(kept, "aaa_tiny")] == [(0, 1)]


@pytest.mark.parametrize("rest", [{"a;b": 2}, {"a;b": 1, "a;c": 1}, {"a;b": 1, "c": 1}])
def test_the_root_own_time_can_leave_every_other_frame_too_narrow(rest: dict[str, int]) -> None:
    frames = drawn(render_svg({"": 100_000, **rest}, title="t"))
    assert [(frame.label, frame.samples) for frame in frames] == [("all", 100_002)]


def test_frame_text_is_truncated_to_fit() -> None:
    long_name = "a_function_with_a_very_long_name_indeed (some/deep/module/path.py:123)"
    frames = drawn(render_svg({f"main;{long_name}": 1, "main;z": 19}, title="t", width=600))
    narrow = by_label(frames, long_name)[0]  # 580 px / 20 = 29 px: one character and ".."
    assert narrow.text == "a.."
    assert len(narrow.text) * CHAR_WIDTH <= narrow.width - 2 * TEXT_PAD
    assert by_label(frames, "main")[0].text == "main"
    wider = drawn(render_svg({long_name: 1}, title="t", width=300))[1]  # 280 px: 38 characters
    assert wider.text == long_name[:36] + ".."
    tiny = drawn(render_svg({"main;abcdef": 1, "main;z": 99}, title="t"))
    assert by_label(tiny, "abcdef")[0].text == ""  # 11.8 px: not even "a.." fits


@pytest.mark.parametrize("seed", range(6))
def test_layout_matches_a_plain_call_tree(seed: int) -> None:
    # GIVEN random profiles: shared framework prefixes, stacks ending midway, odd labels
    rng = random.Random(seed)
    names = ["a", "ab", "a b", "a\x01", "b", "", "<lambda> (x.py:1)", "c (c.py)"]
    prefix = ["gunicorn (g.py:1)", "uvicorn (u.py:2)", "app (app.py:3)"]
    stacks: Counter[str] = Counter()
    for _ in range(rng.randint(1, 300)):
        head = prefix[: rng.randint(0, 3)] if seed % 2 else prefix
        tail = [rng.choice(names) for _ in range(rng.randint(0, 6))]
        stack = ";".join(head + tail)
        stacks[stack] += rng.choice([1, 1, 2, 5, 40, 1000])
    width = rng.choice([60, 300, 1200])
    # WHEN
    frames = drawn(render_svg(stacks, title="t", width=width))
    # THEN
    total = collapsed.total(stacks)
    assert placements(frames) == reference_placements(stacks, total * 0.1 / (width - 20))
    assert len(frames) == len(placements(frames))


def test_stacks_deeper_than_the_recursion_limit_render() -> None:
    depth = sys.getrecursionlimit() + 500
    deep = ";".join(f"f{i}" for i in range(depth))
    frames = drawn(render_svg({deep: 3, deep + ";leaf": 1, "f0;g": 1}, title="recursion"))
    assert by_label(frames, "leaf")[0].y == by_label(frames, "all")[0].y - (depth + 1) * 16
    assert by_label(frames, f"f{depth - 1}")[0].samples == 4


def test_svg_is_self_contained_and_interactive() -> None:
    svg = render_svg(BUSY, title="CPU", subtitle="worker 42")
    root = ET.fromstring(svg)
    scripts = root.findall(f"{SVG}script")
    assert len(scripts) == 1 and "src" not in scripts[0].attrib
    code = scripts[0].text or ""
    assert "zoom" in code and "RegExp" in code and "Matched: " in code
    assert "href" not in svg and "@import" not in svg and "url(" not in svg
    buttons = {el.text for el in root.iter(f"{SVG}text") if "button" in el.attrib.get("class", "")}
    assert buttons == {"Reset Zoom", "Search"}
    assert root.find(f"{SVG}text[@class='details']") is not None
    assert root.find(f"{SVG}text[@class='matched']") is not None
    assert root.attrib["class"] == "profiler-flamegraph"
    assert int(root.attrib["height"]) == 36 + 20 + 3 * FRAME_HEIGHT + 34


def test_rejects_a_width_with_no_room() -> None:
    with pytest.raises(ValueError, match="width"):
        render_svg(BUSY, title="t", width=20)


# --- speedscope -------------------------------------------------------------------------------


def stacks_of(document: dict[str, Any], index: int) -> dict[tuple[str, ...], float]:
    """Each sample's frame names, outermost first, with its weight."""
    frames = document["shared"]["frames"]
    profile = document["profiles"][index]
    return {
        tuple(frames[i]["name"] for i in sample): weight
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True)
    }


def test_speedscope_frames_are_shared_and_deduplicated() -> None:
    # GIVEN two workers running the same code, one with a bare frame and one without a line
    first = {"<module> (busy.py:9);spin_alpha (busy.py:4)": 3, "main": 1}
    second = {"<module> (busy.py:9);spin_alpha (busy.py:4);helper (lib.py)": 2}
    # WHEN
    document = speedscope_document([("worker 1", first), ("worker 2", second)], name="two")
    # THEN each distinct frame is listed once, unknown parts left out
    assert document["shared"]["frames"] == [
        {"name": "<module>", "file": "busy.py", "line": 9},
        {"name": "spin_alpha", "file": "busy.py", "line": 4},
        {"name": "main"},
        {"name": "helper", "file": "lib.py"},
    ]
    assert document["profiles"][1]["samples"] == [[0, 1, 3]]


def test_speedscope_samples_are_outermost_first_weighted_by_count() -> None:
    document = speedscope_document([("worker 7", BUSY | {"idle": 0})], name="busy")
    profile = document["profiles"][0]
    assert {key: profile[key] for key in ("type", "name", "unit", "startValue", "endValue")} == {
        "type": "sampled",
        "name": "worker 7",
        "unit": "none",
        "startValue": 0,
        "endValue": 40,
    }
    assert stacks_of(document, 0) == {("<module>", "spin_alpha"): 30, ("<module>", "spin_beta"): 10}
    assert document["$schema"] == SCHEMA == "https://www.speedscope.app/file-format-schema.json"
    assert document["exporter"] == "profiler"
    assert document["name"] == "busy"
    assert document["activeProfileIndex"] == 0


def test_speedscope_weights_are_seconds_with_a_rate() -> None:
    document = speedscope_document([("w", BUSY)], name="busy", rate_hz=200)
    profile = document["profiles"][0]
    assert profile["unit"] == "seconds"
    assert sorted(profile["weights"]) == [0.05, 0.15]
    assert profile["endValue"] == pytest.approx(0.2)


@pytest.mark.parametrize("rate", [0, -1.0, float("nan"), float("inf")])
def test_speedscope_rejects_a_rate_that_is_not_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_hz"):
        speedscope_document([("w", BUSY)], name="busy", rate_hz=rate)


def test_speedscope_does_not_depend_on_insertion_order() -> None:
    stacks = {"b;c": 1, "a;c": 2, "a": 3}
    reordered = dict(reversed(list(stacks.items())))
    assert speedscope_document([("w", stacks)], name="n") == speedscope_document(
        [("w", reordered)], name="n"
    )


def test_speedscope_round_trips_through_a_compact_file(tmp_path: Path) -> None:
    document = speedscope_document(
        [("w1", BUSY), ("w2", {"<lambda> (caf\u00e9.py:1)": 4})], name="pair", rate_hz=100
    )
    path = tmp_path / "profile.speedscope.json"
    write_speedscope(path, document)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == document
    assert text.count("\n") == 1 and ", " not in text and '": ' not in text
    assert text.isascii()


def test_a_torn_py_spy_line_costs_one_fragment_not_the_capture() -> None:
    """A nonblocking sample can carry a garbage name with a newline: `x 12` then ` 3`."""
    from profiler.analysis import collapsed
    from profiler.errors import InputError

    text = "main (a.py:1);work (a.py:5) 40\nmain (a.py:1);x 12\n 3\nmain (a.py:1) 2\n"
    stacks, dropped = collapsed.parse_lenient(text)
    assert stacks["main (a.py:1);work (a.py:5)"] == 40 and stacks["main (a.py:1)"] == 2
    assert dropped == 1
    with pytest.raises(InputError, match="line 3"):
        collapsed.parse(text)
    # a label split by a newline is joined, in both modes
    joined = collapsed.parse("a;gen (<tpl\n>:2) 5\n")
    assert joined == {"a;gen (<tpl\\n>:2)": 5}
