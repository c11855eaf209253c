"""HTML building blocks: one self-contained page (inline CSS, images as data URIs or inline SVG).

Every piece of text from the data passes through ``esc``; figures arrive already encoded as
PNG data URIs (``figures.png_uri``), so a report opens offline from any folder and can be
mailed as one file.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# One CSS rule set per line; two are longer than the line limit, and wrapping them would change the
# bytes of every report (noqa at the string's end).
CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;font-size:13px;color:#cfd8dc}
nav{position:sticky;top:0;background:#eceff1;padding:6px 24px;font-size:13px;border-bottom:1px solid #cfd8dc;z-index:2}
nav a{margin-right:14px;color:#1565c0;text-decoration:none}
main{padding:8px 24px 40px;max-width:1200px} p{font-size:14px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:4px;padding:8px 16px 16px;margin:16px 0}
h2{font-size:19px;border-bottom:1px solid #e0e0e0;padding-bottom:4px} h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0} td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff3e0;border-left:5px solid #ef6c00;padding:6px 10px;margin:6px 0;font-size:14px}
.fail{background:#ffebee;border-left:5px solid #c62828;padding:6px 10px;margin:6px 0;font-size:14px}
.ok{background:#e8f5e9;border-left:5px solid #2e7d32;padding:6px 10px;margin:6px 0;font-size:14px}
.note{color:#555;font-size:13px} figure{margin:6px 0} figcaption{font-size:12.5px;color:#444;margin-top:2px}
img.fig{max-width:100%} pre{white-space:pre-wrap;font-size:12px;background:#f5f5f5;padding:8px}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;color:#fff;background:#607d8b;margin-left:6px}
.badge.bad{background:#c62828} .badge.good{background:#2e7d32}
"""  # noqa: E501


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A whole document; ``sections`` are (anchor id, heading, body HTML)."""
    nav = "".join(f'<a href="#{esc(anchor)}">{esc(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(
        f'<section id="{esc(anchor)}"><h2>{esc(heading)}</h2>{content}</section>'
        for anchor, heading, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
        f"<main>{body}</main></body></html>\n"
    )


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], numeric: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    lines = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(row.get(c, ""))}</td>' if c in numeric else f"<td>{esc(row.get(c, ''))}</td>"
            for c in columns
        )
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def box(kind: str, text: str) -> str:
    """kind: warn | fail | ok | note. ``text`` is plain text (escaped here)."""
    return f'<div class="{esc(kind)}">{esc(text)}</div>'


def boxes(kind: str, messages: Iterable[str]) -> str:
    return "".join(box(kind, m) for m in messages)


def figure(image: str, caption: str) -> str:
    """``image`` is a PNG data URI."""
    return (
        f'<figure><img class="fig" src="{esc(image)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def paragraph(text: str, css: str = "") -> str:
    return f'<p class="{esc(css)}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>"
