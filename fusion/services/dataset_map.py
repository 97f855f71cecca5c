"""The map of a project's items (the Dataset page): each item at its embedding's first two principal
components (fusion.ml.embeddings), coloured by label, status, predicted label or likely-error score.

Past MAP_POINTS items the map draws a random sample (the same one on every rerun) and says so:
a browser draws 20,000 WebGL points in well under a second, and the page stays light.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fusion.privacy.shown import Shown

MAP_POINTS = 20_000
COLOUR_BY = {"label": "label", "status": "status", "predicted label": "pred_label",
             "likely-error score": "error_score"}
PALETTE = ("#4f46e5", "#f59e0b", "#10b981", "#ef4444", "#06b6d4", "#a855f7", "#84cc16", "#ec4899", "#64748b",
           "#0ea5e9", "#eab308", "#14b8a6")


@dataclass
class MapPoints:
    frame: pd.DataFrame    # item_id, x, y, filename, label, status, pred_label, error_score: one row a point drawn
    embedded: int          # items with an embedding (drawn, or sampled from)
    not_embedded: int      # items added since the embeddings were computed: not on the map


def map_points(embeddings, facts: dict[str, list], limit: int = MAP_POINTS, seed: int = 0) -> MapPoints:
    """The points to draw: the embedded items (a seeded sample of `limit` past it) with their facts
    (Store.item_facts, in id order)."""
    ids = np.asarray(facts["id"], dtype=np.int64)
    rows = np.searchsorted(ids, embeddings.item_ids).clip(max=max(len(ids) - 1, 0))
    known = ids[rows] == embeddings.item_ids if len(ids) else np.zeros(len(embeddings.item_ids), bool)
    chosen = np.flatnonzero(known)
    if len(chosen) > limit:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, limit, replace=False))
    at = rows[chosen]
    quality = np.array([np.nan if q is None else q for q in np.asarray(facts["check_quality"], dtype=object)[at]],
                       dtype=np.float64) if len(at) else np.zeros(0)
    frame = pd.DataFrame({"item_id": embeddings.item_ids[chosen], "x": embeddings.map[chosen, 0],
                          "y": embeddings.map[chosen, 1], **{k: np.asarray(facts[k], dtype=object)[at]
                                                              for k in ("filename", "label", "status", "pred_label")},
                          "error_score": 1.0 - quality})
    return MapPoints(frame, int(known.sum()), len(ids) - int(known.sum()))


def map_figure(points: MapPoints, colour_by: str, shown: Shown) -> go.Figure:
    """WebGL scatter; each point's customdata starts with its item id. Panning is the default drag:
    Streamlit selects a clicked point only then (lasso and box are in the chart's toolbar).
    De-identifying, a point's hover names the item by id: checking 20,000 file names for PHI
    would take 3 s (a click shows the page with its name as shown)."""
    frame, column = points.frame, COLOUR_BY[colour_by]
    if shown.redacting:
        frame = frame.assign(filename=[f"item {i}" for i in frame["item_id"]])
    hover = ("%{customdata[1]}<br>label %{customdata[2]} · %{customdata[3]}<br>predicted %{customdata[4]}"
             "<br>%{customdata[5]}<extra></extra>")
    frame = frame.assign(check=["label not checked" if np.isnan(score) else f"likely-error score {score:.2f}"
                                for score in frame["error_score"]])
    custom = ["item_id", "filename", "label", "status", "pred_label", "check"]
    fig = go.Figure()

    def add(part: pd.DataFrame, name: str, **marker) -> None:
        fig.add_scattergl(x=part["x"], y=part["y"], mode="markers", name=name, hovertemplate=hover,
                          customdata=part[custom].fillna("–").to_numpy(), marker={"size": 6, **marker})

    if column == "error_score":
        checked = frame["error_score"].notna()
        add(frame[~checked], "not checked", color="#cbd5e1")
        add(frame[checked], "checked", color=frame.loc[checked, "error_score"], colorscale="Reds", cmin=0, cmax=1,
            colorbar={"title": "likely<br>error", "thickness": 12})
    else:
        values = frame[column].fillna("none")
        for n, value in enumerate(sorted(values.unique())):
            add(frame[values == value], str(value), color=PALETTE[n % len(PALETTE)])
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "y": -0.08}, xaxis={"showticklabels": False, "title": "PC 1"},
                      yaxis={"showticklabels": False, "title": "PC 2"})
    return fig
