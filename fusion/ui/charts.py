"""Plotly figures that more than one page draws."""
from __future__ import annotations

import plotly.graph_objects as go

from fusion.services.version_report import PROBE, TRAINED, ZERO_SHOT

_STYLE = {ZERO_SHOT: {"mode": "markers", "marker": {"symbol": "diamond", "size": 11}},
          TRAINED: {"mode": "lines+markers+text", "textposition": "top center"},   # each point names its version
          PROBE: {"mode": "lines+markers", "line": {"dash": "dot"}}}


def learning_curve_figure(points: list[dict]) -> go.Figure:
    """version_report.learning_curve's points: one trace a series, test accuracy by labeled items."""
    fig = go.Figure()
    for series, style in _STYLE.items():
        mine = [p for p in points if p["series"] == series]
        if mine:
            fig.add_scatter(x=[p["train_items"] for p in mine], y=[p["accuracy"] for p in mine], name=series,
                            text=[p["version"] for p in mine],
                            hovertemplate="%{text}: %{y:.1%} with %{x} labeled items<extra></extra>", **style)
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title="labeled training items",
                      yaxis_title="test accuracy", yaxis_range=[0, 1.1], legend={"orientation": "h", "y": -0.3},
                      xaxis_rangemode="tozero")   # 333 and 338 items are next to each other, not the axis' ends
    return fig
