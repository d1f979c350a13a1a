"""The self-contained report: numbers against bounds, inline images, everything escaped."""

from __future__ import annotations

import math

from pipelines.report.html import render_report

PNG = b"\x89PNG\r\n\x1a\n fake"


def _page(**overrides) -> str:
    args = {
        "title": "m v1",
        "verdict": "blocked",
        "reasons": ["spurious_mass mean 0.573 exceeds max_spurious_mass 0.300"],
        "metrics": {
            "gradcam.spurious_mass": 0.573,
            "gradcam.spurious_mass_ci_low": 0.55,
            "gradcam.spurious_mass_ci_high": 0.59,
            "counterfactual.removal_flip_rate": 0.0,
            "accuracy": 0.5,
            "sanity.final_spearman": math.nan,
        },
        "bounds": {
            "gradcam.spurious_mass": 0.30,
            "counterfactual.removal_flip_rate": 0.20,
            "sanity.final_spearman": 0.5,
        },
        "images": {"xai/gradcam_overlays.png": PNG},
    }
    return render_report(**(args | overrides))


def test_each_gated_number_is_shown_with_its_ci_bound_and_outcome():
    page = _page()
    assert (
        "<tr><td>gradcam.spurious_mass</td><td class=num>0.573</td><td class=num>"
        "[0.550, 0.590]</td><td class=num>&le; 0.300</td><td class=fail>fails</td></tr>"
    ) in page
    assert "<td>counterfactual.removal_flip_rate</td><td class=num>0.000</td>" in page
    assert "<td class=num>undefined</td>" in page  # NaN is never shown as a pass
    assert "<tr><td>accuracy</td><td class=num>0.500</td></tr>" in page
    assert "<span class='verdict blocked'>blocked</span>" in page


def test_images_are_inline_and_nothing_external_is_loaded():
    page = _page()
    assert "data:image/png;base64,iVBORw0KGgogZmFrZQ==" in page
    assert "http" not in page and "<link" not in page and "<script" not in page


def test_every_run_string_is_escaped():
    page = _page(
        reasons=["<script>alert(1)</script>"],
        title="<b>x</b>",
        images={"xai/<img onerror=x>.png": PNG},
    )
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page and "<img onerror" not in page


def test_notes_metric_names_and_quotes_are_escaped():
    hostile = "<script>alert(1)</script> \"q\" 'a' & b"
    page = _page(
        reasons=[f"class <img src=x onerror=alert(1)> {hostile}"],
        metrics={hostile: 0.1, "<b>gated</b>": 0.2},
        bounds={"<b>gated</b>": 0.5},
        images={'xai/it\'s "quoted".png': PNG},
        notes=[f"Model models:/x/1; audit set /path/{hostile}/manifest.csv"],
    )
    assert "<script" not in page and "<img src=x" not in page and "<b>gated" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &quot;q&quot; &#x27;a&#x27; &amp; b"
    assert f"<p>Model models:/x/1; audit set /path/{escaped}/manifest.csv</p>" in page
    assert f"<tr><td>{escaped}</td><td class=num>0.100</td></tr>" in page
    assert "<tr><td>&lt;b&gt;gated&lt;/b&gt;</td><td class=num>0.200</td>" in page
    assert f"<li>class &lt;img src=x onerror=alert(1)&gt; {escaped}</li>" in page
    # the single-quoted alt attribute cannot be closed by a quote in the file name
    assert "<img alt='xai/it&#x27;s &quot;quoted&quot;.png'" in page
