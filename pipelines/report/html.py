"""``xai/report.html``: one self-contained page per gate run, for review in the MLflow UI.

MLflow shows HTML artifacts in a sandboxed iframe that can load nothing
else, so everything is inline: CSS, and every figure as a base64 PNG. Every
string from the run (reasons, metric names, artifact names) is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["compact_png", "render_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f24}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:24px 0 8px}
.verdict{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.passed{background:#1a7f37}.blocked{background:#cf222e}.inconclusive{background:#9a6700}
.error{background:#57606a}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #d0d7de;padding:4px 8px}
th{background:#f6f8fa;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.fail{color:#cf222e;font-weight:600}.ok{color:#1a7f37}.warn{color:#9a6700}
figure{margin:12px 0} figcaption{font-size:12px;color:#57606a}
img{max-width:100%;border:1px solid #d0d7de}
"""


def render_report(
    *,
    title: str,
    verdict: str,
    reasons: Sequence[str],
    metrics: Mapping[str, float],
    bounds: Mapping[str, float],
    images: Mapping[str, bytes],
    notes: Sequence[str] = (),
    warnings: Sequence[str] = (),
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> str:
    """The report page: verdict, reasons, each gated number against its bound, every figure.

    ``metrics`` are the run's MLflow metrics (``name``, ``name_ci_low``,
    ``name_ci_high``); ``bounds`` the policy's upper bound per gated metric;
    ``images`` PNG bytes by artifact path; ``warnings`` findings that did not
    block; ``tables`` short tables shown under their heading (e.g. discovered
    strategies).
    """
    esc = html.escape
    rows = []
    for name in sorted(bounds):
        value = metrics.get(name, math.nan)
        low, high = (
            metrics.get(f"{name}_ci_low", math.nan),
            metrics.get(f"{name}_ci_high", math.nan),
        )
        ok = math.isfinite(value) and value <= bounds[name]
        ci = f"[{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else "-"
        rows.append(
            f"<tr><td>{esc(name)}</td><td class=num>{_num(value)}</td><td class=num>{ci}</td>"
            f"<td class=num>&le; {bounds[name]:.3f}</td>"
            f"<td class={'ok' if ok else 'fail'}>{'ok' if ok else 'fails'}</td></tr>"
        )
    evidence = [
        f"<tr><td>{esc(name)}</td><td class=num>{_num(value)}</td></tr>"
        for name, value in sorted(metrics.items())
        if name not in bounds and not name.endswith(("_ci_low", "_ci_high"))
    ]
    figures = [
        f"<figure><img alt='{esc(path)}' src='data:image/png;base64,"
        f"{base64.b64encode(data).decode()}'><figcaption>{esc(path)}</figcaption></figure>"
        for path, data in images.items()
    ]
    reason_items = "".join(f"<li>{esc(r)}</li>" for r in reasons) or "<li>all checks passed</li>"
    note_items = "".join(f"<p>{esc(n)}</p>" for n in notes)
    warning_items = (
        "<h2>Warnings (not blocking)</h2><ul class=warn>"
        + "".join(f"<li>{esc(w)}</li>" for w in warnings)
        + "</ul>"
        if warnings
        else ""
    )
    table_sections = "".join(
        f"<h2>{esc(heading)}</h2>"
        + table.to_html(index=False, escape=True, float_format=lambda v: f"{v:.3f}", na_rep="-")
        for heading, table in (tables or {}).items()
    )
    verdict_class = verdict if verdict in {"passed", "blocked", "inconclusive"} else "error"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)} <span class='verdict {verdict_class}'>{esc(verdict)}</span></h1>"
        f"<ul>{reason_items}</ul>{note_items}{warning_items}"
        "<h2>Gated checks</h2><table><tr><th>metric</th><th>value</th><th>95 % CI</th>"
        f"<th>bound</th><th></th></tr>{''.join(rows)}</table>"
        f"{table_sections}<h2>Evidence</h2>"
        + "".join(figures)
        + "<h2>All numbers</h2><table><tr><th>metric</th><th>value</th></tr>"
        + "".join(evidence)
        + "</table></body></html>"
    )


def compact_png(data: bytes, colours: int = 128) -> bytes:
    """The PNG with an adaptive palette: a third of the size, same look for heatmap overlays.

    Reports inline every figure as base64, so their size is the page's size.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        # Fast octree: median cut looks no better on these figures and takes three times as long.
        palette = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.FASTOCTREE)
        out = io.BytesIO()
        palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _num(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "undefined"
