""""More like this": the items nearest one item by fused embedding (fusion.ml.embeddings), as the
Review, Dataset and Evaluate pages show them."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from fusion.core.errors import FusionError
from fusion.jobs.queue import Jobs
from fusion.jobs.worker import queue_job
from fusion.ml.embeddings import nearest
from fusion.privacy.shown import Shown
from fusion.ui import resources
from fusion.ui.session import current_user

SHOWN = 8


def offer_embeddings(project, why: str, key: str) -> None:
    """Why there are no embeddings to use, and a button that computes them in the background."""
    running = [j for j in Jobs(resources.store()).list(project.name, limit=5, kind="embed") if not j.finished]
    if running:
        st.caption(f"{why} Computing the embeddings now (job {running[0].id}); reload in a minute.")
    elif st.button("Compute the embeddings", key=f"embed_{key}", icon=":material/scatter_plot:",
                   help="Embed every item with the active model, in the background (a few seconds per "
                        "thousand items whose features are cached)"):
        queue_job(resources.settings(), resources.store(), project.name, "embed", {}, current_user())
        st.rerun()
    else:
        st.caption(why)


def similar_pages(project, item_id: int, key: str) -> None:
    """The items most like `item_id`, with thumbnails, labels and how alike they are."""
    embeddings = resources.embeddings(project)
    if embeddings is None:
        return offer_embeddings(project, "No embeddings for this model yet.", key)
    started = time.perf_counter()
    try:
        found = nearest(embeddings, item_id, SHOWN)
    except FusionError as e:
        return offer_embeddings(project, str(e), key)
    ms = (time.perf_counter() - started) * 1000
    items = {i.id: i for i in resources.store().items_by_id(project.name, [i for i, _ in found])}
    shown = Shown.under(resources.settings())
    st.dataframe(pd.DataFrame([{
        "thumbnail": resources.thumbnail_url(items[i]), "id": i, "file": shown.filename(items[i].filename),
        "label": items[i].label or f"({items[i].status})", "suggested": items[i].pred_label or "",
        "similarity": score} for i, score in found if i in items]),
        hide_index=True, width="stretch", row_height=50, key=f"similar_{key}",
        # What an annotator compares comes first: Review's right-hand column shows only the first four.
        column_order=["thumbnail", "label", "similarity", "file", "id", "suggested"],
        column_config={"thumbnail": st.column_config.ImageColumn("", width=50),
                       "similarity": st.column_config.ProgressColumn("similarity", min_value=0.0, max_value=1.0,
                                                                     format="%.2f", width=80)})
    st.caption(f"Nearest of {len(embeddings.item_ids):,} items by fused embedding (cosine, model "
               f"{embeddings.version}, computed {embeddings.computed_at:%Y-%m-%d %H:%M} UTC) · {ms:.0f} ms")
