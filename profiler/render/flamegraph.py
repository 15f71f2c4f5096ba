"""Interactive SVG flamegraphs from collapsed stacks, one self-contained file each.

The picture follows Brendan Gregg's flamegraph.pl: the whole profile is the
``all`` bar at the bottom and callees stack upward. Siblings are merged by label
and sorted alphabetically, so the x axis is not time: it is arranged so that
one code path always forms one tower, however its samples were interleaved.

The file carries its own style and script and loads nothing, so a published
report still works offline, opened directly, through ``<object>``, or pasted
inline into an HTML page (the script finds its own ``<svg>``, and the CSS is
scoped to it, so two flamegraphs can share a page). Frame text is truncated
here as well as by the script, because an ``<img>`` never runs scripts.

The output is ASCII only (everything else becomes a character reference), so
it survives being written with whatever encoding the locale picks.
"""

from __future__ import annotations

import bisect
import html
import itertools
import re
import zlib
from collections.abc import Mapping

from profiler import units
from profiler.analysis import collapsed

FRAME_HEIGHT = 16
FONT_SIZE = 12
# Advance width of a monospace glyph; the script truncates with the same number.
CHAR_WIDTH = 0.6 * FONT_SIZE
TEXT_PAD = 3
# Narrower frames cannot be seen or clicked; they would only bloat the file.
MIN_FRAME_WIDTH = 0.1
SIDE_PAD = 10
HEADER = 36
SUBTITLE_HEIGHT = 20
FOOTER = 34
MATCH_COLOUR = "rgb(230,0,230)"
ROOT = "all"
# Stands for ";" while laying out: it sorts below any character a label can hold.
_SEP = "\x00"

# Code points XML 1.0 cannot carry even as references (controls, lone surrogates
# from surrogate-escaped file names, non-characters).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# Every rule is scoped to the root class: inline in HTML, this sheet is global.
CSS = """
.profiler-flamegraph text { font-family: monospace; font-size: 12px; fill: #000; }
.profiler-flamegraph .title { font-size: 17px; }
.profiler-flamegraph .subtitle { fill: #555; }
.profiler-flamegraph .button { cursor: pointer; fill: #1a4f8a; }
.profiler-flamegraph .button:hover { text-decoration: underline; }
.profiler-flamegraph .button.off { visibility: hidden; }
.profiler-flamegraph .frames g { cursor: pointer; }
.profiler-flamegraph .frames g:hover rect { stroke: #000; stroke-width: 0.5; }
.profiler-flamegraph .frames text { pointer-events: none; }
.profiler-flamegraph .frames .ancestor { opacity: 0.5; }
.profiler-flamegraph .frames .hidden { display: none; }
"""

# Runs where it is parsed: inside a standalone SVG document, an <object>, or an
# HTML page with the SVG inline. It reads every number it needs from the
# document (data-* attributes and titles), so this text never changes.
SCRIPT = """
(function () {
  "use strict";
  var script = document.currentScript;
  var svg = script ? script.ownerSVGElement : null;
  if (!svg) {
    var all = document.querySelectorAll("svg.profiler-flamegraph");
    svg = all.length ? all[all.length - 1] : null;
  }
  if (!svg) { return; }
  var layer = svg.querySelector("g.frames");
  var left = Number(layer.getAttribute("data-left"));
  var span = Number(layer.getAttribute("data-width"));
  var charWidth = Number(layer.getAttribute("data-char"));
  var pad = Number(layer.getAttribute("data-pad"));
  var matchColour = layer.getAttribute("data-match");
  var details = svg.querySelector(".details");
  var matched = svg.querySelector(".matched");
  var resetButton = svg.querySelector(".reset");
  var searchButton = svg.querySelector(".search");
  var nodes = [];
  var byElement = new Map();
  var groups = layer.querySelectorAll("g[data-n]");
  for (var i = 0; i < groups.length; i++) {
    var g = groups[i];
    var rect = g.querySelector("rect");
    var title = g.querySelector("title").textContent;
    var node = {
      g: g, rect: rect, text: g.querySelector("text"), title: title,
      label: title.slice(0, title.lastIndexOf(" (")),
      s: Number(g.getAttribute("data-s")), n: Number(g.getAttribute("data-n")),
      y: Number(rect.getAttribute("y")), fill: rect.getAttribute("fill")
    };
    nodes.push(node);
    byElement.set(g, node);
  }
  var root = nodes[0];
  var lastTerm = "";

  function fit(label, width) {
    var room = Math.floor((width - 2 * pad) / charWidth);
    if (room < 3) { return ""; }
    return label.length <= room ? label : label.slice(0, room - 2) + "..";
  }

  function place(node, x, width) {
    node.rect.setAttribute("x", x.toFixed(2));
    node.rect.setAttribute("width", width.toFixed(2));
    node.text.setAttribute("x", (x + pad).toFixed(2));
    node.text.textContent = fit(node.label, width);
  }

  // Deeper frames sit higher, so a smaller y means a deeper frame.
  function zoom(target) {
    var end = target.s + target.n;
    var scale = span / target.n;
    nodes.forEach(function (node) {
      var classes = node.g.classList;
      if (node.y > target.y && node.s <= target.s && node.s + node.n >= end) {
        place(node, left, span);
        classes.remove("hidden");
        classes.add("ancestor");
      } else if (node.y <= target.y && node.s >= target.s && node.s + node.n <= end) {
        place(node, left + (node.s - target.s) * scale, node.n * scale);
        classes.remove("hidden", "ancestor");
      } else {
        classes.add("hidden");
      }
    });
    resetButton.classList.toggle("off", target === root);
  }

  function search(term) {
    lastTerm = term;
    var pattern = null;
    if (term) {
      try {
        pattern = new RegExp(term);
      } catch (error) {
        matched.textContent = "Invalid regex: " + term;
        return;
      }
    }
    var hits = [];
    nodes.forEach(function (node) {
      var hit = pattern !== null && pattern.test(node.label);
      node.rect.setAttribute("fill", hit ? matchColour : node.fill);
      if (hit) { hits.push(node); }
    });
    if (pattern === null) {
      matched.textContent = " ";
      return;
    }
    // A match inside another match must not count its samples twice.
    hits.sort(function (a, b) { return a.s - b.s || b.n - a.n; });
    var samples = 0;
    var covered = 0;
    hits.forEach(function (node) {
      if (node.s >= covered) {
        samples += node.n;
        covered = node.s + node.n;
      }
    });
    matched.textContent = "Matched: " + (100 * samples / root.n).toFixed(1) + "%";
  }

  function nodeOf(event) {
    var g = event.target.closest ? event.target.closest("g[data-n]") : null;
    return g ? byElement.get(g) : undefined;
  }

  layer.addEventListener("mouseover", function (event) {
    var node = nodeOf(event);
    if (node) { details.textContent = node.title; }
  });
  layer.addEventListener("mouseout", function () { details.textContent = " "; });
  layer.addEventListener("click", function (event) {
    var node = nodeOf(event);
    if (node) { zoom(node); }
  });
  resetButton.addEventListener("click", function () { zoom(root); });
  searchButton.addEventListener("click", function () {
    var term = window.prompt("Search frames (regular expression; empty clears)", lastTerm);
    if (term !== null) { search(term); }
  });
})();
"""

# (label, depth, first sample, samples): where one frame goes, in sample units.
_Placed = tuple[str, int, int, int]


def render_svg(
    stacks: Mapping[str, int],
    *,
    title: str,
    subtitle: str | None = None,
    unit: str = "samples",
    width: int = 1200,
) -> str:
    """The flamegraph of ``stacks`` as an SVG document; same input, same text.

    Stacks with a count of zero or less are ignored: a Counter left with them
    after subtraction still means "never seen".
    """
    if width <= 2 * SIDE_PAD + 1:
        raise ValueError(f"width {width} leaves no room for frames")
    counts = {stack: count for stack, count in stacks.items() if count > 0}
    total = collapsed.total(counts)
    top = HEADER + (SUBTITLE_HEIGHT if subtitle else 0)
    span = width - 2 * SIDE_PAD
    if total == 0:
        height = top + 3 * FRAME_HEIGHT + FOOTER
        body = [
            f'<text class="empty" x="{width / 2:g}" y="{top + 2 * FRAME_HEIGHT}"'
            ' text-anchor="middle">no samples</text>'
        ]
        return _document(width, height, title, subtitle, body, interactive=False)

    placed = _layout(counts, total, min_count=total * MIN_FRAME_WIDTH / span)
    deepest = max(depth for _, depth, _, _ in placed)
    height = top + (deepest + 1) * FRAME_HEIGHT + FOOTER
    body = [
        f'<g class="frames" data-left="{SIDE_PAD}" data-width="{span}" data-char="{CHAR_WIDTH:g}"'
        f' data-pad="{TEXT_PAD}" data-match="{MATCH_COLOUR}">',
        *_frames(placed, total, unit, span, root_y=top + deepest * FRAME_HEIGHT),
        "</g>",
        f'<text class="details" x="{SIDE_PAD}" y="{height - 12}"> </text>',
        f'<text class="matched" x="{width - SIDE_PAD}" y="{height - 12}"'
        ' text-anchor="end"> </text>',
    ]
    return _document(width, height, title, subtitle, body, interactive=True)


def _layout(counts: Mapping[str, int], total: int, *, min_count: float) -> list[_Placed]:
    """Place every frame at least ``min_count`` samples wide, root first.

    No call tree is built. The stacks are sorted once with ``;`` turned into
    ``\\x00``, which sorts below every other character: then the stacks through
    one frame are one contiguous run, its children are sub-runs in label order
    (found by bisection), and a run's samples are a difference of prefix sums.
    The work grows with the frames drawn, not with the samples or the depth: a
    frame too narrow to draw is never looked into, and a deep shared prefix
    (framework frames) is passed in one step. Pruned frames still take their
    room, so the parent keeps its width. A work list rather than recursion:
    stacks can be deeper than Python's recursion limit.
    """
    keyed: dict[str, int] = {}
    for stack, count in counts.items():
        if stack:  # the empty stack is the root's own time
            # A NUL inside a label is drawn as U+FFFD anyway (see _escape).
            key = stack.replace(_SEP, "\ufffd").replace(";", _SEP)
            keyed[key] = keyed.get(key, 0) + count
    ordered = sorted(keyed)
    running = [0, *itertools.accumulate(map(keyed.__getitem__, ordered))]
    placed: list[_Placed] = [(ROOT, 0, 0, total)]
    # (run of stacks through a frame, its depth, its first sample, offset of its children's labels)
    todo: list[tuple[int, int, int, int, int]] = [(0, len(ordered), 0, 0, 0)]
    while todo:
        low, high, depth, start, offset = todo.pop()
        count = running[high] - running[low]
        if count < min_count:  # only the root's run can: the empty stack is not in it
            continue
        if high - low == 1:  # one stack left: the rest is a chain as wide as the frame
            stack = ordered[low]
            if len(stack) >= offset:
                for label in stack[offset:].split(_SEP):
                    depth += 1
                    placed.append((label, depth, start, count))
            continue
        shared = _shared_labels(ordered[low], ordered[high - 1], offset)
        if shared:
            for label in ordered[low][offset : offset + shared - 1].split(_SEP):
                depth += 1
                placed.append((label, depth, start, count))
            offset += shared
        while low < high and len(ordered[low]) < offset:  # stacks ending here come first
            low += 1
        while low < high:
            stack = ordered[low]
            cut = stack.find(_SEP, offset)
            label = stack[offset:] if cut < 0 else stack[offset:cut]
            # Every stack through this child starts with its prefix, then ends or has \x00.
            after = bisect.bisect_left(ordered, stack[: offset + len(label)] + "\x01", low, high)
            count = running[after] - running[low]
            if count >= min_count:
                placed.append((label, depth + 1, start, count))
                todo.append((low, after, depth + 1, start, offset + len(label) + 1))
            start += count
            low = after
    return placed


def _shared_labels(low: str, high: str, offset: int) -> int:
    """How many characters of whole labels, from ``offset``, every stack of a sorted run has.

    The common prefix of a sorted run is that of its first and last; only
    labels closed by a separator inside it count, so every stack surely goes on
    past them.
    """
    same, differ = offset, min(len(low), len(high))
    if low[same:differ] != high[same:differ]:
        # Binary search on slices: a handful of C-speed comparisons, not a loop per character.
        while differ - same > 1:
            middle = (same + differ) // 2
            if low[same:middle] == high[same:middle]:
                same = middle
            else:
                differ = middle
        end = same
    else:
        end = differ
    cut = low.rfind(_SEP, offset, end)
    return 0 if cut < 0 else cut - offset + 1


def _frames(placed: list[_Placed], total: int, unit: str, span: int, *, root_y: int) -> list[str]:
    scale = span / total
    unit_text = _escape(unit)
    labels: dict[str, tuple[str, str]] = {}  # label -> (escaped, fill), shared by repeats
    lines = []
    for label, depth, start, count in placed:
        known = labels.get(label)
        if known is None:
            known = labels[label] = (_escape(label), _colour(collapsed.split_label(label).name))
        escaped, fill = known
        x = SIDE_PAD + start * scale
        frame_width = count * scale
        y = root_y - depth * FRAME_HEIGHT
        lines.append(
            f'<g data-s="{start}" data-n="{count}">'
            f"<title>{escaped} ({count:,} {unit_text}, {units.percent(count / total, 2)})</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{frame_width:.2f}" height="{FRAME_HEIGHT - 1}"'
            f' fill="{fill}"/>'
            f'<text x="{x + TEXT_PAD:.2f}" y="{y + FRAME_HEIGHT - 4}">'
            f"{_escape(_fit(label, frame_width))}</text></g>"
        )
    return lines


def _fit(label: str, width: float) -> str:
    """As much of ``label`` as fits ``width`` pixels, ``..`` marking a cut; the script agrees."""
    room = int((width - 2 * TEXT_PAD) // CHAR_WIDTH)
    if room < 3:
        return ""
    return label if len(label) <= room else label[: room - 2] + ".."


def _colour(name: str) -> str:
    """A warm colour fixed by the function name, so a function looks the same in every graph.

    crc32 rather than ``hash()``: string hashes are salted per process.
    """
    digest = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    red = 205 + digest % 51
    green = 60 + (digest >> 8) % 171
    blue = (digest >> 16) % 56
    return f"rgb({red},{green},{blue})"


def _escape(text: str) -> str:
    return html.escape(_NOT_XML.sub("\ufffd", text), quote=True)


def _document(
    width: int, height: int, title: str, subtitle: str | None, body: list[str], *, interactive: bool
) -> str:
    middle = f"{width / 2:g}"
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" class="profiler-flamegraph"'
        f' width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<style><![CDATA[{CSS}]]></style>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f7f7f2"/>',
        f'<text class="title" x="{middle}" y="24" text-anchor="middle">{_escape(title)}</text>',
    ]
    if subtitle:
        lines.append(
            f'<text class="subtitle" x="{middle}" y="{HEADER + 8}"'
            f' text-anchor="middle">{_escape(subtitle)}</text>'
        )
    if interactive:
        lines += [
            f'<text class="button reset off" x="{SIDE_PAD}" y="24">Reset Zoom</text>',
            f'<text class="button search" x="{width - SIDE_PAD}" y="24"'
            ' text-anchor="end">Search</text>',
        ]
    lines += body
    if interactive:
        lines.append(f"<script><![CDATA[{SCRIPT}]]></script>")
    lines.append("</svg>\n")
    return "\n".join(lines).encode("ascii", "xmlcharrefreplace").decode("ascii")
