"""Analysis reports as text for a terminal and as markdown for Prefect artifacts.

The p95-per-endpoint chart is an SVG embedded as a ``data:`` image: the Prefect UI renders artifact
markdown with ``marked`` and shows image tokens as ``<img>``, so the chart needs no server, file or
network. The text report draws the same chart with block characters.
"""

from __future__ import annotations

import base64
from typing import Any
from xml.sax.saxutils import escape

BAR_WIDTH = 24
CHART_ROWS = 15
_BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """``value`` as a bar of block characters, ``width`` characters for ``largest`` (eighths of a block)."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / largest * width * 8))
    return "█" * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")


def _window(report: dict[str, Any]) -> str:
    return f"since {report['since']}" if report.get("since") else "whole files"


def _read(sources: dict[str, Any]) -> str:
    text = f"{len(sources['files'])} file(s), {sources['lines']:,} lines"
    if sources["skipped"]:
        text += f", {sources['skipped']:,} not JSON (skipped)"
    if sources["missing"]:
        text += f"; missing: {', '.join(sources['missing'])}"
    return text


def _counts(rows: list[dict[str, Any]], indent: str = "  ") -> list[str]:
    return [f"{indent}{row['count']:>7,}  {row['pattern']}" for row in rows] or [f"{indent}(none)"]


def logs_text(report: dict[str, Any]) -> str:
    sources = report["sources"]
    slow, auth, tasks = report["slow_requests"], report["auth_failures"], report["task_failures"]
    lines = [f"Log analysis ({_window(report)}): logs {_read(sources['logs'])}; audit {_read(sources['audit'])}",
             "", f"Error frequency ({report['errors']['total']:,} errors):", *_counts(report["errors"]["top"]),
             "", f"Slow requests (>{slow['threshold_ms']:g} ms): {slow['total']:,}"]
    lines += [f"  {row['timestamp']}  {row['method'] or ''} {row['endpoint']}  {row['status']}  "
              f"{row['duration_ms']:,.1f} ms" for row in slow["slowest"]]
    lines += ["", f"Authentication failures: {auth['total']:,}"]
    lines += [f"  {row['timestamp']}  {row['username']}  {row['ip_address']}" for row in auth["latest"]]
    if auth["total"]:
        lines += ["  by username:", *_counts(auth["by_username"], "  "),
                  "  by IP address:", *_counts(auth["by_ip_address"], "  ")]
    lines += ["", f"Task failure patterns ({tasks['total']:,} failed or timed out):", *_counts(tasks["patterns"])]
    if tasks["total"]:
        lines += ["  by core:", *_counts(tasks["by_core"], "  ")]
    return "\n".join(lines)


def perf_text(report: dict[str, Any]) -> str:
    rows = report["endpoints"]
    largest = max((row["p95_ms"] for row in rows), default=0)
    width = max([len("endpoint"), *(len(row["endpoint"]) for row in rows)])
    lines = ["Performance Analysis Report", "=" * 50,
             f"{_window(report)}; {_read(report['sources'])}; {report['requests']:,} requests", "",
             f"{'endpoint':<{width}}  {'requests':>8}  {'avg ms':>9}  {'p95 ms':>9}  {'max ms':>9}  {'5xx':>5}  p95"]
    for row in rows:
        lines.append(f"{row['endpoint']:<{width}}  {row['requests']:>8,}  {row['avg_ms']:>9,.2f}  "
                     f"{row['p95_ms']:>9,.2f}  {row['max_ms']:>9,.2f}  {row['errors_5xx']:>5,}  "
                     f"{bar(row['p95_ms'], largest)}")
    if not rows:
        lines.append("(no http_request lines)")
    elif report["p95_ms"] is not None:
        lines.append(f"{'all':<{width}}  {report['requests']:>8,}  {report['avg_ms']:>9,.2f}  "
                     f"{report['p95_ms']:>9,.2f}")
    lines += ["", "Top Errors:", *_counts(report["errors"]["top"])]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A log message may hold ``|`` or a newline; either would break the markdown table."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)]


def _count_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    return _table(["count", title], [[row["count"], row["pattern"]] for row in rows]) if rows else ["None."]


def logs_markdown(report: dict[str, Any]) -> str:
    sources = report["sources"]
    slow, auth, tasks = report["slow_requests"], report["auth_failures"], report["task_failures"]
    lines = ["# Log analysis", "",
             f"{_window(report)}. Logs: {_read(sources['logs'])}. Audit: {_read(sources['audit'])}.", "",
             f"## Error frequency ({report['errors']['total']:,})", "",
             *_count_table("message", report["errors"]["top"]),
             "", f"## Slow requests over {slow['threshold_ms']:g} ms ({slow['total']:,})", ""]
    requests = [[row["timestamp"], f"{row['method'] or ''} {row['endpoint']}".strip(), row["status"],
                 f"{row['duration_ms']:,.1f}"] for row in slow["slowest"]]
    lines += _table(["time", "request", "status", "ms"], requests) if requests else ["None."]
    lines += ["", f"## Authentication failures ({auth['total']:,})", ""]
    if auth["total"]:
        latest = [[row["timestamp"], row["username"], row["ip_address"]] for row in auth["latest"]]
        lines += [*_count_table("username", auth["by_username"]), "",
                  *_count_table("IP address", auth["by_ip_address"]), "",
                  "Latest:", "", *_table(["time", "username", "IP address"], latest)]
    else:
        lines.append("None.")
    lines += ["", f"## Task failure patterns ({tasks['total']:,})", "", *_count_table("error", tasks["patterns"])]
    if tasks["total"]:
        lines += ["", *_count_table("core", tasks["by_core"])]
    return "\n".join(lines) + "\n"


def perf_markdown(report: dict[str, Any]) -> str:
    rows = report["endpoints"]
    lines = ["# Performance", "", f"{_window(report)}. {_read(report['sources'])}. "
             f"{report['requests']:,} requests" + (f", p95 {report['p95_ms']:,.2f} ms overall, average "
                                                   f"{report['avg_ms']:,.2f} ms." if rows else "."), ""]
    if rows:
        lines += [f"![p95 response time per endpoint]({svg_data_uri(p95_chart_svg(rows))})", "",
                  *_table(["endpoint", "requests", "avg ms", "p95 ms", "max ms", "5xx"],
                          [[r["endpoint"], f"{r['requests']:,}", f"{r['avg_ms']:,.2f}", f"{r['p95_ms']:,.2f}",
                            f"{r['max_ms']:,.2f}", r["errors_5xx"]] for r in rows])]
    else:
        lines.append("No `http_request` lines in this window.")
    lines += ["", "## Top errors", "", *_count_table("message", report["errors"]["top"])]
    return "\n".join(lines) + "\n"


def p95_chart_svg(rows: list[dict[str, Any]]) -> str:
    """Horizontal bars of p95 per endpoint, slowest first (at most :data:`CHART_ROWS`)."""
    shown = rows[:CHART_ROWS]
    largest = max(row["p95_ms"] for row in shown) or 1.0
    label_width, bar_space, row_height, top = 300, 360, 22, 30
    height = top + row_height * len(shown) + 10
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + bar_space + 90}" height="{height}" '
              'font-family="sans-serif" font-size="12">'),
             '<text x="4" y="18" font-weight="bold">p95 response time per endpoint (ms)</text>']
    for index, row in enumerate(shown):
        y = top + index * row_height
        length = max(1.0, row["p95_ms"] / largest * bar_space)
        label = escape(row["endpoint"][:48])
        parts += [f'<text x="{label_width - 6}" y="{y + 14}" text-anchor="end">{label}</text>',
                  (f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row_height - 6}" '
                   'fill="#2563eb"/>'),
                  f'<text x="{label_width + length + 6:.1f}" y="{y + 14}">{row["p95_ms"]:,.1f}</text>']
    parts.append("</svg>")
    return "".join(parts)


def svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
