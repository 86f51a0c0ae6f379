"""Charts as inline SVG geometry computed on the server: no chart library, no script, nothing to load.

The template draws the rectangles (``templates/_chart.html``); colours come from ``console.css`` classes,
so the page's Content-Security-Policy needs no inline style.
"""

from __future__ import annotations

from typing import Any

WIDTH, HEIGHT, LEFT, BOTTOM = 600, 160, 32, 18


def throughput_svg(minutes: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacked bars per minute (completed below, failed on top), scaled to the busiest minute."""
    top = max([m["completed"] + m["failed"] for m in minutes] + [1])
    plot_height = HEIGHT - BOTTOM
    step = (WIDTH - LEFT) / max(len(minutes), 1)
    bars = []
    for index, minute in enumerate(minutes):
        done = minute["completed"] * plot_height / top
        failed = minute["failed"] * plot_height / top
        bars.append({"x": round(LEFT + index * step, 1), "width": round(max(step - 1, 1), 1),
                     "done_y": round(plot_height - done, 1), "done_h": round(done, 1),
                     "failed_y": round(plot_height - done - failed, 1), "failed_h": round(failed, 1),
                     "label": minute["minute"][11:16], "completed": minute["completed"], "failed": minute["failed"]})
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "plot_height": plot_height, "top": top, "bars": bars,
            "completed": sum(m["completed"] for m in minutes), "failed": sum(m["failed"] for m in minutes),
            "first": bars[0]["label"] if bars else "", "last": bars[-1]["label"] if bars else ""}
