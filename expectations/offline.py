"""Data Docs that read right with no network: production database networks rarely reach the
internet, and every page Great Expectations renders links Bootstrap, jQuery, Font Awesome, Vega
and its logo from CDNs. After a site is built, each page loses those links and gains a stylesheet
of dbsweep's own (inline, so a page copied alone still renders); the validation page also shows
what was judged: the rows, and each expectation's bounds, outcome and the values it found."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime
from pathlib import Path

import pandas as pd

REMOTE = re.compile(r"""<(?:link|script)\b[^>]*\b(?:href|src)\s*=\s*["']https?://[^"']*["'][^>]*>(?:\s*</script>)?""",
                    re.IGNORECASE)
REMOTE_IMAGE = re.compile(r"""<img\b[^>]*\bsrc\s*=\s*["']https?://[^"']*["'][^>]*>""", re.IGNORECASE)
REMOTE_ANCHOR = re.compile(r"""<a\b[^>]*\bhref\s*=\s*["']https?://[^"']*newsletter[^"']*["'][^>]*>.*?</a>""",
                           re.IGNORECASE | re.DOTALL)
REMOTE_URL = re.compile(r"""url\(\s*['"]?https?://[^)]*\)""", re.IGNORECASE)
FOOTER = re.compile(r"<footer\b[^>]*>.*?</footer>", re.IGNORECASE | re.DOTALL)  # GE's newsletter and links
MAIN_COLUMN = re.compile(r"""<div class="col-md-10 col-lg-10 col-xs-12[^"]*">""")
STYLESHEET = (Path(__file__).parent / "offline.css").read_text()


def make_offline(site: Path, page: Path | None = None, judged: pd.DataFrame | None = None,
                 results: list[dict] | None = None) -> None:
    """Rewrite every page of `site`; `page`, the validation's own, also gets what was judged."""
    for path in site.rglob("*.html"):
        text = path.read_text()
        text = REMOTE.sub("", text)
        text = REMOTE_IMAGE.sub('<span class="dbsweep-brand">dbsweep · Great Expectations</span>', text)
        text = REMOTE_ANCHOR.sub("", text)
        text = REMOTE_URL.sub("none", text)
        text = FOOTER.sub("", text)
        text = text.replace("</head>", f"<style>{STYLESHEET}</style></head>", 1)
        if page is not None and path.resolve() == page.resolve() and judged is not None:
            text = _with_observed(text, judged, results or [])
        path.write_text(text)


def _with_observed(text: str, judged: pd.DataFrame, results: list[dict]) -> str:
    section = _observed_section(judged, results)
    found = MAIN_COLUMN.search(text)
    if found:
        return text[:found.end()] + section + text[found.end():]
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + section, text, count=1)


def _observed_section(judged: pd.DataFrame, results: list[dict]) -> str:
    from dbsweep.report import when

    def cell(value) -> str:
        if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
            return "-"
        return html.escape(when(value) if isinstance(value, (pd.Timestamp, datetime)) else str(value))

    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in judged.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in judged.itertuples(index=False))
    checks = "".join(
        f"<tr class=\"{'dbsweep-pass' if r['success'] else 'dbsweep-fail'}\">"
        f"<td>{'passed' if r['success'] else 'FAILED'}</td><td>{html.escape(r['why'] or r['expectation'])}</td>"
        f"<td><code>{html.escape(r['expectation'])}</code></td>"
        f"<td><code>{html.escape(json.dumps(r['kwargs'], default=str))}</code></td>"
        f"<td>{html.escape(json.dumps(r['unexpected'][:10], default=str)) if r['unexpected'] else 'none'}</td></tr>"
        for r in results)
    return (
        '<section class="dbsweep-observed" id="dbsweep-observed"><h3>What was judged</h3>'
        f'<p>{len(judged):,} row{"s" if len(judged) != 1 else ""}, as the plan or the verification counted them:</p>'
        f'<div class="dbsweep-scroll"><table class="dbsweep-table"><thead><tr>{header}</tr></thead>'
        f'<tbody>{body}</tbody></table></div>'
        '<h3>Each expectation</h3><div class="dbsweep-scroll"><table class="dbsweep-table"><thead><tr>'
        '<th>outcome</th><th>why</th><th>expectation</th><th>bounds</th><th>values outside them</th></tr></thead>'
        f'<tbody>{checks}</tbody></table></div></section>')
