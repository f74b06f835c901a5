"""The task DAG of a batch as an SVG picture: layered left to right, one box per task run, coloured by status."""

from __future__ import annotations

from html import escape
from typing import Any

COLOURS = {
    "SUCCESS": ("#2e7d32", "#e8f5e9"),
    "ERROR": ("#c62828", "#ffebee"),
    "SKIPPED": ("#8d6e63", "#efebe9"),
    "RUNNING": ("#1565c0", "#e3f2fd"),
    "QUEUED": ("#6a1b9a", "#f3e5f5"),
    "PLANNED": ("#757575", "#fafafa"),
}
W, H, GAP_X, GAP_Y, PAD = 180, 42, 64, 16, 12


def run_state(run: dict[str, Any]) -> str:
    """SUCCESS / ERROR / SKIPPED, or for a PROCESSING run: PLANNED, QUEUED or RUNNING."""
    if run["status"] != "PROCESSING":
        return str(run["status"])
    if not run.get("attempt"):
        return "PLANNED"
    return "RUNNING" if run.get("lease_until") else "QUEUED"


def layers(nodes: list[int], edges: list[tuple[int, int]]) -> list[list[int]]:
    """Nodes grouped by longest distance from a source; within a layer ordered near their parents."""
    parents: dict[int, list[int]] = {n: [] for n in nodes}
    children: dict[int, list[int]] = {n: [] for n in nodes}
    for p, c in edges:
        if p in parents and c in parents:
            parents[c].append(p)
            children[p].append(c)
    depth: dict[int, int] = {}
    indegree = {n: len(parents[n]) for n in nodes}
    ready = [n for n in nodes if indegree[n] == 0]
    while ready:
        n = ready.pop()
        depth[n] = max((depth[p] + 1 for p in parents[n]), default=0)
        for c in children[n]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    extra = max(depth.values(), default=-1) + 1
    for n in nodes:  # a cycle left in the database by hand: draw its members in one extra layer
        depth.setdefault(n, extra)
    grouped: list[list[int]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for n in nodes:
        grouped[depth[n]].append(n)
    position: dict[int, float] = {}
    for layer in grouped:
        layer.sort(key=lambda n: (sum(position.get(p, 0) for p in parents[n]) / max(len(parents[n]), 1), n))
        for i, n in enumerate(layer):
            position[n] = i
    return grouped


def svg(runs: list[dict[str, Any]], edges: list[tuple[int, int]]) -> str:
    """An inline SVG of the batch's runs (`task_id`, `name`, `status`, ...) and the edges among them."""
    by_id = {int(r["task_id"]): r for r in runs}
    grouped = layers(sorted(by_id), edges)
    xy: dict[int, tuple[int, int]] = {}
    for col, layer in enumerate(grouped):
        for row, node in enumerate(layer):
            xy[node] = (PAD + col * (W + GAP_X), PAD + row * (H + GAP_Y))
    width = PAD * 2 + max(len(grouped), 1) * (W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(layer) for layer in grouped), default=1) * (H + GAP_Y) - GAP_Y
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="task graph of the batch">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#90a4ae"/></marker></defs>']
    for p, c in edges:
        if p in xy and c in xy:
            (x1, y1), (x2, y2) = xy[p], xy[c]
            sx, sy, ex, ey = x1 + W, y1 + H // 2, x2, y2 + H // 2
            mid = (sx + ex) // 2
            out.append(f'<path class="edge" d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" fill="none" '
                       f'stroke="#90a4ae" stroke-width="1.5" marker-end="url(#arrow)"/>')
    for node, (x, y) in xy.items():
        run = by_id[node]
        state = run_state(run)
        stroke, fill = COLOURS.get(state, COLOURS["PLANNED"])
        name = str(run["name"])
        label = name if len(name) <= 24 else name[:23] + "…"
        tip = f"{name} · {run.get('kind', '')} · {state} · attempt {run.get('attempt')}"
        if run.get("error"):
            tip += f" · {str(run['error'])[:300]}"
        out.append(
            f'<g class="node" data-task="{escape(name)}" data-status="{state}">'
            f"<title>{escape(tip)}</title>"
            f'<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="2"/>'
            f'<text x="{x + 10}" y="{y + 17}" font-size="13" font-family="sans-serif" fill="#212121">'
            f"{escape(label)}</text>"
            f'<text x="{x + 10}" y="{y + 33}" font-size="11" font-family="sans-serif" fill="{stroke}">'
            f"{state} · {escape(str(run.get('kind', '')))}</text></g>")
    out.append("</svg>")
    return "".join(out)
