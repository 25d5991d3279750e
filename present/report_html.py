"""The page's building blocks: sections, figures inlined as base64 PNG, tables, escaping, the style sheet."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from typing import Any

from present.figures.common import pct, png_bytes


@dataclass
class Fig:
    """One figure of the page: its file name stem, title, PNG and data record."""

    slug: str
    title: str
    png: bytes
    data: Any
    caption: str = ""


class Page:
    """The sections of the page, in order, and the figures drawn in them."""

    def __init__(self) -> None:
        """An empty page."""
        self.sections: list[tuple[str, str, list[str]]] = []  # (id, title, html parts)
        self.figures: list[Fig] = []

    def section(self, sid: str, title: str) -> list[str]:
        """A new section; the list its HTML parts are appended to."""
        parts: list[str] = []
        self.sections.append((sid, title, parts))
        return parts

    def figure(self, parts: list[str], slug: str, title: str, fig, data: Any, caption: str = "") -> None:
        """Draw ``fig`` to PNG, keep it with ``data`` under a unique slug, and inline it in ``parts``."""
        slug = _unique(slug, {f.slug for f in self.figures})
        png = png_bytes(fig)
        self.figures.append(Fig(slug, title, png, data, caption))
        parts.append(f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                      + (f"<figcaption>{esc(caption)}</figcaption>" if caption else "") + "</figure>")


def _unique(slug: str, taken: set[str]) -> str:
    """``slug`` as a file name stem, numbered past those ``taken``."""
    slug = re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-") or "figure"
    out, k = slug, 2
    while out in taken:
        out, k = f"{slug}-{k}", k + 1
    return out


def esc(x: Any) -> str:
    """Text escaped for HTML (quotes too)."""
    return html.escape(str(x), quote=True)


_NUMERIC = re.compile(r"^[\[+\-\u2212]?[\d.,]+")


def table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """An HTML table; cells that start with a number are right-aligned."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)

    def td(c: Any) -> str:
        return f'<td class="n">{esc(c)}</td>' if _NUMERIC.match(str(c)) else f"<td>{esc(c)}</td>"

    body = "".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def share(x: float | None) -> str:
    """A share as a percentage, empty when unknown."""
    return "" if x is None else pct(x)


def ci_text(ci) -> str:
    """An interval of rates as [lo%, hi%]."""
    return f"[{pct(float(ci[0]))}, {pct(float(ci[1]))}]"


def fallback_box(fallbacks: Any) -> str:
    """A visible warning box listing where the fit could not tell from the data (empty if nowhere)."""
    lines = [str(f.get("message", "")) for f in fallbacks or [] if isinstance(f, dict)]
    if not lines:
        return ""
    return ("<div class='warn'><strong>Where the data could not tell, the model uses a prior:</strong><ul>"
            + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul></div>")


def when(stamp: Any) -> str:
    """An ISO timestamp to the minute, for reading."""
    return str(stamp or "")[:16].replace("T", " ")


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#1d1d1f;margin:0;
background:#f6f7f9;line-height:1.45}
main{max-width:1240px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:21px;margin:36px 0 8px;border-bottom:2px solid #e8e8ec;
padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}
.sub{color:#666;font-size:14px;margin:0 0 18px}
.headline{background:#eef5fc;border-left:6px solid #0072B2;padding:14px 18px;font-size:19px;margin:12px 0}
.headline ul{font-size:15px;margin:8px 0 0;padding-left:20px}
nav{font-size:14px;margin:6px 0 10px}nav a{margin-right:14px;color:#0a5a9c;text-decoration:none}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;display:block}
figcaption{color:#555;font-size:13px;margin-top:4px}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0 16px}
th,td{border-bottom:1px solid #e3e3e8;padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f3f4f7;font-weight:600}table.num td.n{text-align:right;font-variant-numeric:tabular-nums}
table.prov{font-size:12px}table.prov td{word-break:break-all;max-width:360px}
.notes{color:#8a4b00;font-size:13px}
.warn{background:#fff4e5;border-left:6px solid #E69F00;padding:10px 16px;margin:10px 0 16px;font-size:14px}
.warn ul{margin:6px 0 0;padding-left:20px}footer{color:#888;font-size:12px;margin-top:30px}
"""
