"""Dataset: every item of the project, filtered and paged; labels edited inline (with history and
optimistic locking); an item's full history; import and export."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from fusion.ui import session as app_session
from fusion.ui import resources as streamlit_cache
from fusion.privacy.display_text import literal
from fusion.core.errors import FusionError
from fusion.privacy import deidentified_search
from fusion.privacy.deidentify import NOTICE
from fusion.privacy.shown import Shown
from fusion.jobs.queue import Jobs
from fusion.jobs.worker import queue_import, queue_job
from fusion.services.exporting import FORMATS
from fusion.ui.job_view import job_progress
from fusion.ui.similar_view import offer_embeddings, similar_pages
from fusion.services.dataset_map import COLOUR_BY
from fusion.store.schema import STATUSES
from fusion.store.labeling import ItemFilter

PAGE_SIZE = 50
SORTS = {"last changed": ("updated", True), "least confident": ("confidence", False),
         "most confident": ("confidence", True), "most unlike the trained classes": ("ood", True),
         "file name": ("filename", False), "newest": ("added", True)}
DISTRIBUTION = {"any": None, "none of these (flagged)": False, "like a trained class": True}
SELECTED_MAX = 5000     # items a map selection lists
PREVIEWED = 6           # selected pages shown above the table

streamlit_cache.require_app_shell()
app_session.require_page("dataset")
settings = streamlit_cache.settings()
shown = Shown.under(settings)
store = streamlit_cache.store()
project = store.project(st.session_state.get("project", settings.demo_project))
user = app_session.current_user()
jobs = Jobs(store)


def label_check(item) -> str:
    """The label check's verdict, as the table's column says it."""
    if item.check_flagged:
        return f"⚑ likely {item.check_suggested} ({1 - item.check_quality:.0%})"
    if item.check_reviewed_by:
        return f"kept by {item.check_reviewed_by}"
    return "" if item.check_quality is None else "looks right"


def rows_of(items) -> pd.DataFrame:
    return pd.DataFrame([{
        "thumbnail": streamlit_cache.thumbnail_url(i), "id": i.id, "file": shown.filename(i.filename),
        "label": i.label, "status": i.status, "confidence": i.pred_confidence, "suggested": i.pred_label or "",
        "ood": i.pred_ood, "model": i.pred_model or "", "by": i.updated_by, "when": i.updated_at, "version": i.version,
        "check": label_check(i),
    } for i in items], columns=["thumbnail", "id", "file", "label", "status", "confidence", "suggested", "ood", "model",
                                "by", "when", "version", "check"])


def save_label_edits(before: pd.DataFrame, after: pd.DataFrame) -> None:
    """Each changed label goes through the store against the version shown (refused if stale)."""
    for (_, old), (_, new) in zip(before.iterrows(), after.iterrows()):
        if new["label"] != old["label"] and new["label"]:
            try:
                app_session.check_may_change(store.item(project.name, int(old["id"])))
                saved = store.set_label(project.name, int(old["id"]), new["label"], app_session.current_user(),
                                        expected_version=int(old["version"]))
                st.toast(f"{literal(shown.filename(saved.filename))}: {saved.label} ({saved.status}), saved",
                         icon=":material/check_circle:")
            except FusionError as e:
                st.error(str(e))


st.title("Dataset")
if shown.redacting:
    st.caption(f":material/visibility_off: {NOTICE}. A search finds only what is shown.")
info = store.project_info(project.name)
counts = st.columns(len(STATUSES) + 1)
counts[0].metric("items", f"{info['items']:,}")
for column, status in zip(counts[1:], STATUSES):
    column.metric(status, f"{info['by_status'][status]:,}")


def dataset_map() -> tuple[int, ...] | None:
    """The map of the project's items; returns the ids selected on it (None: no selection)."""
    colour_by = st.segmented_control("Colour by", list(COLOUR_BY), default="label", key="ds_map_colour") or "label"
    built = streamlit_cache.dataset_map(project, colour_by)
    if built is None:
        offer_embeddings(project, "No map yet: the items have no embeddings for this model.", "map")
        return None
    points, figure = built
    embeddings = streamlit_cache.embeddings(project)
    event = st.plotly_chart(figure, width="stretch", on_select="rerun", key="ds_map",
                            selection_mode=("box", "lasso", "points"), config={"displaylogo": False})
    drawn = len(points.frame)
    st.caption(
        (f"A random {drawn:,} of the {points.embedded:,} items (the same sample on every visit), so the map draws "
         "quickly · " if drawn < points.embedded else f"All {drawn:,} items · ")
        + (f"{points.not_embedded:,} added since are not on it · " if points.not_embedded else "")
        + f"model {embeddings.version}, computed {embeddings.computed_at:%Y-%m-%d %H:%M} UTC · the two axes are the "
        f"first principal components of the fused embeddings ({embeddings.map_variance:.0%} of their variance) · "
        "click a point to see its page; lasso or box select (the chart's toolbar) lists items below; "
        "double-click to clear")
    if points.not_embedded:
        offer_embeddings(project, "", "map_again")
    chosen = [int(p["customdata"][0]) for p in (event or {}).get("selection", {}).get("points", [])
              if p.get("customdata")]
    if chosen:
        selection_preview(chosen)
    return tuple(chosen[:SELECTED_MAX]) or None


def selection_preview(ids: list[int]) -> None:
    """The first selected pages, larger, with their labels: a chart's hover can't show an image."""
    items = store.items_by_id(project.name, ids[:PREVIEWED])
    # one page at its thumbnail's size; captions on one line however tall each page is
    for column, item in zip(st.columns(max(3, len(items)), vertical_alignment="bottom"), items):
        picture = streamlit_cache.preview(item)
        if picture:
            column.image(picture, width="stretch")
        else:
            column.caption(":material/broken_image: the image can't be read")
        column.caption(f"{literal(shown.filename(item.filename))} · item {item.id}  \n**{item.label or item.status}**"
                       + (f" · predicted {item.pred_label}" if item.pred_label else "")
                       + (f"  \n{label_check(item)}" if item.check_quality is not None else ""))


with st.expander("Map of the dataset", icon=":material/scatter_plot:"):
    selected = dataset_map()

f1, f2, f3, f4, f5 = st.columns([3, 2, 2, 2, 2])
search = f1.text_input("Search file names, captions and page text", key="ds_search")
label = f2.selectbox("Label", ["any", *project.labels], key="ds_label")
statuses = f3.multiselect("Status", STATUSES, key="ds_status")
editor = f4.selectbox("Last changed by", ["anyone", *store.editors(project.name)], key="ds_user")
mislabeled = f5.selectbox("Label check", ["any", "likely mislabeled"], key="ds_check",
                          help="Items whose label the latest check finds likely wrong (Likely label errors, below), "
                               "until someone decides on them again")
g1, g4, g2, g3 = st.columns([3, 2, 2, 2])
low, high = g1.slider("Model confidence", 0.0, 1.0, (0.0, 1.0), 0.05, key="ds_confidence")
distribution = g4.selectbox("Out of distribution", list(DISTRIBUTION), key="ds_ood",
                            help="By the latest prediction's OOD score: above 1, the page is unlike every class the "
                                 "model was trained on (none of these).")
sort = g2.selectbox("Sort by", list(SORTS), key="ds_sort")
where = ItemFilter(status=tuple(statuses), label=None if label == "any" else label, search=search,
                   user=None if editor == "anyone" else editor,
                   confidence=None if (low, high) == (0.0, 1.0) else (low, high),
                   in_distribution=DISTRIBUTION[distribution], likely_mislabeled=mislabeled != "any",
                   ids=selected, sort=SORTS[sort][0], descending=SORTS[sort][1])
if selected:
    st.caption(":material/scatter_plot: Listing the "
               + ("item" if len(selected) == 1 else f"{len(selected):,} items") + " selected on the map"
               + (f" (the first {SELECTED_MAX:,})" if len(selected) == SELECTED_MAX else ""))

# De-identified, a search matches the redacted text only: a hidden name finds nothing.
first = deidentified_search.list_items(store, project.name, where, limit=0, deidentified=shown.redacting)
pages = max(1, -(-first.total // PAGE_SIZE))
number = g3.number_input(f"Page (of {pages}{'+' if first.total_is_capped else ''})", 1, pages, 1, key="ds_page")
started = time.perf_counter()
page = deidentified_search.list_items(store, project.name, where, offset=(number - 1) * PAGE_SIZE, limit=PAGE_SIZE,
                                     deidentified=shown.redacting)
table = rows_of(page.items)
edited = st.data_editor(
    table, key=f"ds_table_{number}_{hash(where.__repr__())}", hide_index=True, width="stretch",
    height=min(38 + 35 * len(table), 600), row_height=35,
    disabled=[c for c in table.columns if c != "label"],
    # Sized to fit the page at 1280 px with the sidebar open (the model of each prediction is in
    # the item's history below).
    column_order=["thumbnail", "id", "file", "label", "status", "confidence", "suggested", "ood", "check", "by",
                  "when"],
    column_config={
        "thumbnail": st.column_config.ImageColumn("", width=40),
        "id": st.column_config.NumberColumn("id", width=45),
        "file": st.column_config.TextColumn("file", width=110),
        "label": st.column_config.SelectboxColumn("label ✎", options=list(project.labels), width=115,
                                                  help="Edit to label or correct the item"),
        "status": st.column_config.TextColumn("status", width=80),
        "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0, format="percent",
                                                      width=80),
        "suggested": st.column_config.TextColumn("suggested", width=115),
        "ood": st.column_config.NumberColumn("OOD", format="%.2f", width=50, help="Out-of-distribution score. "
                                             "Above 1: none of these classes"),
        "by": st.column_config.TextColumn("by", width=60),
        "when": st.column_config.DatetimeColumn("when (UTC)", format="MM-DD HH:mm", width=90,
                                                help="Last changed, UTC"),
        "check": st.column_config.TextColumn("label check", width=130, help="The latest check of the label: "
                                             "⚑ likely wrong (the label models trained without it suggest, and "
                                             "how likely the current label is wrong), or kept by the person who "
                                             "decided after it was flagged"),
    })
matched = f"{page.total:,}{'+' if page.total_is_capped else ''}"
st.caption(f"{matched} {'item matches' if page.total == 1 else 'items match'} · page {number} of {pages} · {(time.perf_counter() - started) * 1000:.0f} ms")
if not edited["label"].equals(table["label"]):
    save_label_edits(table, edited)
    st.rerun()

with st.expander("An item: its history and similar pages"):
    if page.items:
        chosen = st.selectbox("Item", page.items, format_func=lambda i: f"{i.id} · {shown.filename(i.filename)}",
                              key="ds_item")
        history = store.history(project.name, chosen.id)
        st.dataframe(pd.DataFrame([{
            "when (UTC)": h.at, "who": h.user, "what": h.action, "label": f"{h.old_label or '–'} → {h.new_label or '–'}",
            "suggestion shown": f"{h.shown_label} {h.shown_confidence:.0%} ({h.model_version})" if h.shown_label else "",
            "caption": shown.text(h.new_caption) if h.new_caption is not None or h.old_caption is not None else "",
            "page text": shown.text(h.new_text) if h.action == "text" else "",
            "source": h.source or "",
        } for h in history]), hide_index=True, width="stretch")
        st.markdown("**More like this**")
        similar_pages(project, chosen.id, "dataset")
    else:
        st.write("No items on this page.")


def session_job(key: str):
    """The job this session queued for this project under `key` (the Import or Export button),
    read from the store."""
    job = jobs.get(st.session_state[key]) if key in st.session_state else None
    return job if job is not None and job.project == project.name else None


@st.fragment(run_every=1.5)
def import_status() -> None:
    job = session_job("import_job")
    if job is None:
        return
    job_progress(job)
    if job.status == "succeeded":
        r = job.result
        bad = len(r["problems"])
        st.success(f"Imported {r['added']} new {'item' if r['added'] == 1 else 'items'} "
                   f"({r['already_in_project']} already there).")
        if bad:   # file names and paths from the upload: shown as text
            st.warning(f"{bad} {'row was' if bad == 1 else 'rows were'} not imported:\n\n" + "\n".join(
                f"- {literal(p['where'])}: {literal(p['reason'])}" for p in r["problems"][:20]))
    if not job.finished and st.button("Cancel the import", key="import_cancel"):
        jobs.cancel(job.id, user)
    if job.finished and st.button("Done", key="import_done"):
        st.session_state.pop("import_job")
        st.rerun(scope="app")


@st.fragment(run_every=1.5)
def export_status() -> None:
    job = session_job("export_job")
    if job is None:
        return
    job_progress(job)
    if job.status != "succeeded":
        return
    if job.result.get("deidentified"):
        st.caption(f"De-identified: text redacted; PHI blacked out on {job.result['images_masked']} page images "
                   f"({job.result['images_read_at_export']} pages had no stored word boxes and were read by OCR "
                   "for it).")
    archive = Path(job.result["file"])
    if archive.is_file():    # read when the button is pressed, not on every rerun
        st.download_button(f"Download {archive.name} ({archive.stat().st_size / 1e6:.1f} MB)", archive.read_bytes,
                           file_name=archive.name, mime="application/zip", key="download_export")
    else:
        st.error(f"The export's file is gone ({literal(archive.name)}); prepare it again.")


@st.fragment(run_every=3)
def label_check_status() -> None:
    recent = jobs.list(project.name, limit=1, kind="label_issues")
    if recent and not recent[0].finished:
        job_progress(recent[0])
    elif recent and recent[0].status == "succeeded":
        r = recent[0].result
        st.caption(f"Last checked {recent[0].finished_at:%Y-%m-%d %H:%M} UTC: {r['flagged']} of {r['items']} labels "
                   "likely wrong.")
    elif recent:
        st.caption(f"The last check {recent[0].status}: {literal(recent[0].error or '')}")


with st.expander("Likely label errors", icon=":material/flag:"):
    st.write("Checks every labeled item's label: models trained on the other four fifths of the labeled items "
             "(5-fold, over the cached features) predict each item, and confident learning (cleanlab) flags the "
             "items whose label their prediction contradicts. Flagged items show ⚑ in the table, come first in "
             "**Label check: likely mislabeled** and in the Review queue's **likely mislabeled** order, and "
             "leave the list once someone keeps or corrects their label.")
    label_check_status()
    if st.button("Find likely label errors", key="check_labels", disabled=not app_session.may("check_labels"),
                 help="In the background; about a minute for 500 labeled items on a CPU"):
        queue_job(settings, store, project.name, "label_issues", {}, user)
        st.rerun()


with st.expander("Import"):
    st.write("A .zip of a folder (label/file.png for labeled images, files at the top for unlabeled ones), "
             "or a .zip holding one CSV (image,label[,caption]) with its images, their paths relative to the CSV. "
             "Bad rows are listed; good rows are kept; importing again adds only what is new.")
    st.caption("An upload reads only the files it brings, never other files on the server. To import "
               "files already on the server, run `python -m fusion import PROJECT FOLDER_OR_CSV` there.")
    if not app_session.may("import"):
        st.caption("Importing needs the reviewer role or higher.")
    upload = st.file_uploader("Images to import", type=["zip"], key="ds_import",
                              disabled=not app_session.may("import"))
    if upload is not None and st.button("Import", key="start_import", disabled="import_job" in st.session_state):
        try:   # unpacked under uploads/ and imported by the worker (fusion.jobs.worker.queue_import)
            st.session_state["import_job"] = queue_import(settings, store, project.name, upload.name,
                                                          upload.getvalue(), user).id
        except FusionError as e:
            st.error(str(e))
    import_status()

with st.expander("Export"):
    fmt = st.selectbox("Format", FORMATS, key="ds_format",
                       help="csv / jsonl: a table + images/; imagefolder: label/file + metadata.jsonl; "
                            "hf: a Hugging Face dataset (datasets.load_from_disk)")
    deidentify = st.checkbox("De-identify", value=shown.redacting, key="ds_deidentify",
                             disabled=shown.redacting,
                             help="Redact names, dates, phone numbers, addresses and record numbers in captions, "
                                  "page text and file names, and black out those words on the pages where OCR "
                                  "recorded their boxes" + (" (always on while the app de-identifies)"
                                                            if shown.redacting else ""))
    exporting = (job := session_job("export_job")) is not None and not job.finished
    if st.button("Prepare the download", key="export", disabled=exporting):
        st.session_state["export_job"] = queue_job(settings, store, project.name, "export", {
            "format": fmt, "deidentify": deidentify or shown.redacting}, user).id
    export_status()
