"""The analysis as a picture: per block, how much of the content update lies in the style's
principal input subspace (what NP-LoRA attenuates) and how much of the style's energy the chosen
k keeps; the numbers in a table underneath.

Plain SVG and HTML, no plotting library and no network: it renders the same on gradio 3 and 4,
in the WebUIs and standalone. Colours come from ``style.css`` classes that follow the light or
dark theme.
"""

from __future__ import annotations

import html

from ..analysis import Analysis

ROW = 22
LABEL_W = 150
BAR_W = 360
PAD = 8


def _bar(x: float, y: float, frac: float, cls: str, title: str) -> str:
    w = max(0.0, min(1.0, frac)) * BAR_W
    return (f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{ROW / 2 - 2:.1f}">'
            f"<title>{html.escape(title)}</title></rect>")


def analysis_svg(result: Analysis) -> str:
    """Two bars per block (overlap, style energy kept), 0..1 scale with grid lines."""
    blocks = list(result.blocks) + ([result.total] if result.total else [])
    height = PAD * 2 + ROW * len(blocks) + 28
    width = LABEL_W + BAR_W + 70
    parts = [f'<svg class="nplora-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="NP-LoRA overlap per block">']
    x0 = LABEL_W
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + t * BAR_W
        parts.append(f'<line class="nplora-grid" x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{height - 24}"/>')
        parts.append(f'<text class="nplora-axis" x="{x:.1f}" y="{height - 10}" text-anchor="middle">{t:g}</text>')
    for i, b in enumerate(blocks):
        y = PAD + i * ROW
        label = "all blocks" if b.block == "total" else b.block
        parts.append(f'<text class="nplora-label{" nplora-total" if b.block == "total" else ""}" x="{x0 - 8}" '
                     f'y="{y + ROW / 2 + 1:.1f}" text-anchor="end">{html.escape(label)}</text>')
        parts.append(_bar(x0, y + 1, b.overlap, "nplora-bar-overlap",
                          f"{label}: {b.overlap:.3f} of the content update is in the style subspace"))
        parts.append(_bar(x0, y + ROW / 2, b.style_energy_kept, "nplora-bar-kept",
                          f"{label}: k keeps {b.style_energy_kept:.3f} of the style energy"))
        parts.append(f'<text class="nplora-value" x="{x0 + BAR_W + 6}" y="{y + ROW / 2 + 1:.1f}">'
                     f"{b.overlap:.2f} / {b.style_energy_kept:.2f}</text>")
    parts.append("</svg>")
    return "".join(parts)


def analysis_table(result: Analysis) -> str:
    rows = ["<table class=\"nplora-table\"><thead><tr><th>block</th><th>modules</th><th>projected</th>"
            "<th>content in style subspace</th><th>max cosine</th><th>style energy kept</th></tr></thead><tbody>"]
    for b in list(result.blocks) + ([result.total] if result.total else []):
        label = "all blocks" if b.block == "total" else b.block
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{b.modules}</td><td>{b.projected}</td>"
                    f"<td>{b.overlap:.4f}</td><td>{b.max_cosine:.4f}</td><td>{b.style_energy_kept:.4f}</td></tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def suggestion_html(result: Analysis) -> str:
    """Where projection matters: the block groups by overlap (the names per-block mu takes), and
    with several inputs each content's overlap with the joint style and with the earlier contents."""
    coarse = [g for g in result.groups if g.coarse]
    if not coarse and not result.contents:
        return ""
    parts = ['<div class="nplora-suggest">']
    if coarse:
        items = ", ".join(f"<b>{html.escape(g.group)}</b> {g.overlap:.2f}" if g.matters else
                          f"{html.escape(g.group)} {g.overlap:.2f}" for g in coarse)
        matters = result.suggested_groups()
        parts.append(f"<div>Overlap per block group (per-block μ, <code>mub=GROUP:MU</code>): {items}. "
                     + (f"Projection matters most in {html.escape(', '.join(matters))}; where the overlap is low "
                        "μ changes little." if matters else "Every group's overlap is low: μ changes little.")
                     + "</div>")
    for o in result.contents:
        parts.append(f"<div>{html.escape(o.content)}: {o.overlap:.3f} inside the joint style subspace</div>")
    for o in result.between:
        parts.append(f"<div>{html.escape(o.content)}: {o.overlap:.3f} inside {html.escape(o.of or '')}'s "
                     "directions (what <code>chain</code> protects)</div>")
    parts.append("</div>")
    return "".join(parts)


def analysis_html(result: Analysis) -> str:
    """Chart, legend and table for the tab."""
    legend = ('<div class="nplora-legend"><span class="nplora-key nplora-key-overlap"></span> share of the '
              "content update inside the style's top-k input directions (‖ΔW<sub>c</sub>V<sub>k</sub>‖/‖ΔW<sub>c</sub>‖), "
              'what NP-LoRA attenuates by c &nbsp; <span class="nplora-key nplora-key-kept"></span> share of the '
              "style's energy those k directions hold</div>")
    head = (f'<div class="nplora-analysis"><div class="nplora-caption">{html.escape(result.content)} (content) × '
            f"{html.escape(result.style)} (style), {result.arch.upper()}, k = "
            f"{result.params.get('k') or 'full rank'}</div>")
    return head + analysis_svg(result) + legend + suggestion_html(result) + analysis_table(result) + "</div>"
