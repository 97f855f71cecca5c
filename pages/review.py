"""Review: take a page (upload or the queue), read its text, edit a caption, see the fused
prediction explained, and accept, correct or skip it: saved at once, with history."""
from __future__ import annotations

import dataclasses
from concurrent import futures

import plotly.graph_objects as go
import streamlit as st

from fusion.ui import session as app_session
from fusion.demo import build as demo
from fusion.services import review
from fusion.ui import resources as streamlit_cache
from fusion.privacy.display_text import literal
from fusion.core.errors import FusionError
from fusion.core.progress import Progress
from fusion.jobs.queue import Jobs
from fusion.jobs.worker import queue_job
from fusion.imaging.images import load_upload
from fusion.imaging.overlay import black_out, blend_heatmap, colored_words_html, draw_boxes
from fusion.privacy.deidentify import NOTICE
from fusion.privacy.shown import Shown
from fusion.ml.encoders import MAX_CHUNKS
from fusion.ml.pipeline import compose_text
from fusion.ui.similar_view import similar_pages

UPLOAD_TYPES = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp", "dcm", "dicom"]
SHORTCUTS = "123456789"  # label k of the project: key k

streamlit_cache.require_app_shell()
app_session.require_page("review")
settings = streamlit_cache.settings()
shown = Shown.under(settings)
engine = streamlit_cache.engine()
store = streamlit_cache.store()
project = store.project(st.session_state.get("project", settings.demo_project))
user = app_session.current_user()


def open_item(item, name: str, data: bytes) -> None:
    """Show a stored item: decode it, and read its text unless EasyOCR read it before."""
    try:
        image = load_upload(data, settings)
    except FusionError as e:   # the page under review stays on screen: nothing of it is lost
        st.error(f"{literal(shown.filename(name))}: {literal(e)}")
        return
    result = review.stored_ocr(store, item)
    read_earlier = result is not None
    if result is None:
        with st.status("Finding text…", expanded=False) as status:
            result = engine.read_text(image, progress=lambda doing: status.update(label=doing))
            status.update(label=f"Read {len(result.words)} words in {result.ms / 1000:.1f} s", state="complete")
    # The version the reviewer sees: their decision is refused if the item changes meanwhile.
    st.session_state["page"] = {"name": name, "image": image, "ocr": result, "item_id": item.id,
                                "version": item.version, "caption": item.caption, "read_earlier": read_earlier}
    # De-identified: the boxes show redacted text; the model reads the originals (model_caption).
    st.session_state["ocr_text"] = shown.text(result.text)
    st.session_state["caption"] = shown.text(item.caption)


def ocr_timing(page: dict) -> str:
    """The reading's own time: "OCR 1.3 s", or "OCR read earlier: 4.1 s" when it came from the store."""
    seconds = f"{page['ocr'].ms / 1000:.1f} s" if page["ocr"].ms else "time not recorded"
    return f"OCR read earlier: {seconds}" if page.get("read_earlier") else f"OCR {seconds}"


def model_caption() -> str:
    """The caption as the model reads it and a decision saves it. De-identified, the box shows
    placeholders: an edit that keeps them gets the hidden words back; any other edit is kept as typed."""
    typed = st.session_state["caption"]
    return shown.edit(typed, st.session_state["page"].get("caption", ""))


def edited_page_text():
    """The page's reading with the reviewer's edit of its text, for a decision to save; None if
    not edited, or while de-identified (the box is read-only and shows placeholders)."""
    reading, typed = st.session_state["page"]["ocr"], st.session_state["ocr_text"]
    if shown.redacting or typed == reading.text:
        return None
    return dataclasses.replace(reading, text=typed)


def open_upload(name: str, data: bytes) -> None:
    """An upload is stored first (the same file again is the same item), then shown."""
    try:
        item = review.add_upload(store, project.name, name, data, user)
    except FusionError as e:   # the page under review stays on screen: nothing of it is lost
        st.error(f"{literal(shown.filename(name))}: {literal(e)}")
        return
    open_item(item, name, data)


def open_next() -> None:
    """The queue's next item other than the one on screen (an undecided page stays first in its
    order, so Next would otherwise open it again)."""
    on_screen = (st.session_state.get("page") or {}).get("item_id")
    item = review.next_in_queue(store, project.name, skip_ids={on_screen} - {None}, strategy=strategy())
    if item is not None:
        open_item(item, item.filename, store.image_path(item).read_bytes())
    elif on_screen is not None and review.in_queue(store.item(project.name, on_screen), strategy()):
        st.session_state["notice"] = "This page is the only item left in the queue."
    else:
        st.session_state.pop("page", None)
        st.session_state["notice"] = (
            "No item is flagged as likely mislabeled now (Dataset page: find likely label errors)."
            if strategy() == "likely mislabeled" else
            "The queue is empty: every item has a decision. Upload a page to go on.")


def strategy() -> str:
    return st.session_state.get("queue_strategy", "least confident")


def open_demo_page() -> None:
    """The next test-split page of the project, so a demo needs no file at hand."""
    n = st.session_state.get("demo_index", 0)
    st.session_state["demo_index"] = n + 1
    open_upload(*demo.test_page(store, project, n))


def probability_chart(prediction) -> go.Figure:
    """Horizontal bars: label names stay readable in the narrow right column at 1280 px."""
    labels = list(prediction.probs)
    names = [k.replace("_", " ") for k in labels]
    fig = go.Figure()
    for head, name, probs, color in (("fused", "fused", prediction.probs, "#4f46e5"),
                                     ("image", "image only", prediction.probs_image, "#f59e0b"),
                                     ("text", "text only", prediction.probs_text, "#10b981")):
        if head in prediction.abstained:     # it said nothing: no bars (the reason says why)
            continue
        fig.add_bar(name=name, y=names, x=[probs[k] for k in labels], orientation="h", marker_color=color,
                    text=[f"{probs[k]:.0%}" if probs[k] >= 0.1 else "" for k in labels], textposition="outside")
    fig.update_layout(barmode="group", height=70 + 48 * len(labels), margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(range=[0, 1.15], title="probability", tickformat=".0%"),
                      yaxis=dict(autorange="reversed"), legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
                      bargap=0.25)
    return fig


def top(probs: dict[str, float]) -> str:
    label = max(probs, key=probs.get)
    return f"**{label}** ({probs[label]:.0%})"


def show_prediction(prediction) -> None:
    """The headline: the class, or "none of these" for a page unlike every trained class, with
    each head's opinion (or why it abstained) and the OOD score."""
    flag = " :orange-badge[needs review]" if prediction.review_reasons else ""
    heads = " · ".join(f"{head} alone: {'abstained' if head in prediction.abstained else top(probs)}"
                       for head, probs in (("image", prediction.probs_image), ("text", prediction.probs_text)))
    if len(prediction.abstained) == 2:     # uniform: no class is closer than another
        st.markdown(f"### Nothing to read{flag}  \n{heads}")
    elif prediction.in_distribution is False:
        st.markdown(f"### None of these{flag}  \nclosest: **{prediction.label}** ({prediction.confidence:.0%}) · {heads}")
    else:
        st.markdown(f"### {prediction.label}{flag}  \n{prediction.confidence:.0%} confident · {heads}")
    if prediction.ood_score is not None:
        st.caption(f"Out-of-distribution score {prediction.ood_score:.2f} (above 1: unlike every class this model "
                   f"was trained on; image {prediction.ood_parts['image']:.2f}, text {prediction.ood_parts['text']:.2f})")


def reason_in_words(prediction) -> str:
    """The prediction's reason in words, redacted like the rest when de-identified (markdown-safe)."""
    return literal(shown.reason(prediction), limit=1000)


def save_decision(label: str | None) -> None:
    """A button's callback: runs before the script, so the next item can replace the widgets' text."""
    page = st.session_state["page"]
    item = store.item(project.name, page["item_id"])
    try:
        app_session.check_may_change(item)   # also ends here if the session expired meanwhile
        saved = review.decide(store, project.name, item, page["version"], label, app_session.current_user(),
                              st.session_state["prediction"], model_caption(), edited_page_text())
    except FusionError as e:  # StaleEdit: show who changed it; the next decision is made against that
        st.session_state["problem"] = str(e)
        page["version"] = store.item(project.name, item.id).version
        return
    verb = {"accepted": "Accepted", "corrected": "Corrected to", "skipped": "Skipped"}[saved.status]
    # Shown by the app's run that opens the next item: a fragment's callback should not draw.
    st.session_state["saved_toast"] = (f"{verb} {saved.label if label else ''} · "
                                       f"{literal(shown.filename(saved.filename))} (saved, version {saved.version})")
    st.session_state["open_next"] = True


def queue_settings() -> None:
    st.selectbox("Next item", list(review.STRATEGIES), key="queue_strategy")
    prelabel_status()
    if st.button("Pre-label undecided items", key="prelabel", icon=":material/bolt:",
                 disabled=not app_session.may("prelabel"),
                 help="Predict every undecided item with the active model in the background, so the queue "
                      "can order them by uncertainty"):
        queue_job(settings, store, project.name, "prelabel", {}, user)
        st.rerun()


@st.fragment(run_every=3)
def prelabel_status() -> None:
    recent = Jobs(store).list(project.name, limit=1, kind="prelabel")
    if recent and not recent[0].finished:
        p = recent[0].progress or Progress("starting", step=0)
        doing = {"reading": "reading pages", "predicting": "predicting"}.get(p.stage, "starting")
        st.progress(p.fraction() or 0.0, text=f"Pre-labeling: {doing} {p.step or 0}/{p.steps or '…'} "
                                             f"({recent[0].status})")
    elif recent and recent[0].result:
        st.caption(f"Last pre-labeled {recent[0].finished_at:%Y-%m-%d %H:%M} UTC: "
                   f"{recent[0].result['predicted']} items by {recent[0].result['version']}")


st.title("Review")
if shown.redacting:
    st.caption(f":material/visibility_off: {NOTICE}.")
queued = store.list_items(project.name, review.queue_filter(strategy()), limit=0).total
pick, buttons = st.columns([3, 1], vertical_alignment="bottom")
upload = pick.file_uploader("Upload a page (PNG, JPEG, TIFF, BMP, WebP or DICOM)", type=UPLOAD_TYPES,
                            max_upload_size=int(settings.max_upload_mb))
next_clicked = buttons.button(f"Next in queue ({queued})", key="next_item", shortcut="N", width="stretch",
                              disabled=queued == 0, help="The next undecided item, in the queue order you pick (or the "
                                   "next likely mislabeled one)")
demo_clicked = buttons.button("Try a demo page", key="demo_page", width="stretch",
                              help="The next page of the project's test split")
with buttons.popover("Queue order", width="stretch"):
    queue_settings()
if "saved_toast" in st.session_state:
    st.toast(st.session_state.pop("saved_toast"), icon=":material/check_circle:")
if st.session_state.pop("open_next", False) or next_clicked:   # after a decision, or asked for
    open_next()
elif demo_clicked:
    open_demo_page()
elif upload is not None and upload.file_id != st.session_state.get("upload_id"):
    st.session_state["upload_id"] = upload.file_id  # a new upload, not a rerun with the old one
    open_upload(upload.name, upload.getvalue())

notice = st.session_state.pop("notice", None)
page = st.session_state.get("page")
if page is None:
    st.info(notice or "Upload a scanned page or photo, take the next item of the queue, or press **Try a demo "
            "page**. The app reads its text, and an image encoder and a text encoder, fused, predict its class "
            "and show what drove it.")
    st.stop()
if notice:
    st.info(notice)


def edit_boxes(ocr_info) -> tuple[str, str]:
    """The caption box and the page text the model reads: (caption, page text)."""
    st.text_area("Caption or note", key="caption", height=80,
                 placeholder="e.g. 'follow-up ECG, patient reports chest pain'")
    caption = model_caption()
    turned = f", page turned {ocr_info.angle}°" if ocr_info.angle else ""
    redacting = shown.redacting
    if redacting:
        st.caption("The model reads the original caption. An edit that keeps the [NAME]-style placeholders "
                   "keeps the words they hide; any other edit is saved as typed.")
    with st.expander(f"Text read from the page ({len(ocr_info.words)} words{turned}), "
                     + ("read-only while de-identified" if redacting else "editable"), expanded=False):
        ocr_text = st.text_area("Page text", key="ocr_text", height=220, label_visibility="collapsed",
                                disabled=redacting)
        if redacting:   # editing it would write the placeholders over the page's real text
            st.caption("De-identified: the page text can't be edited; the model reads the original.")
            ocr_text = ocr_info.text
    return caption, ocr_text


def current_prediction(page: dict, item, caption: str, ocr_text: str):
    """The prediction for these inputs: made again only when they changed (sliders and toggles
    rerun the script too). An item's first reading is saved. -> (prediction, item)"""
    inputs = (item.id, ocr_text, caption, project.name, project.active_model)
    if st.session_state.get("prediction_inputs") != inputs:
        edited = dataclasses.replace(page["ocr"], text=ocr_text)  # edits never re-run OCR
        st.session_state["prediction"] = engine.predict(page["image"], project, caption=caption, ocr_result=edited)
        if st.session_state.get("prediction_inputs", (None,))[0] != item.id:  # an item's first reading: keep it
            item = review.save_reading(store, project.name, item, page["ocr"], st.session_state["prediction"], "model")
        st.session_state["prediction_inputs"] = inputs
    return st.session_state["prediction"], item


def decision_buttons(item, prediction) -> None:
    now = f"now **{item.label}** ({item.status}" + (f" by {literal(item.updated_by)})" if item.version > 1 else ")") \
        if item.label else f"{item.status}"
    st.markdown(f"**Your decision** on {literal(shown.filename(item.filename))} · {now}")
    refused = app_session.why_may_not_change(item)   # e.g. an annotator on a page someone decided
    if refused:
        st.caption(f":material/block: {literal(refused)}")
    if item.check_flagged:
        label_check(item)
    accept, skip = st.columns(2)
    accept.button("Accept", key="accept", help=f"Accept {prediction.label}", type="primary", shortcut="A", width="stretch",
                  on_click=save_decision, args=(prediction.label,), disabled=bool(refused))
    if item.check_flagged and item.label != prediction.label:
        st.button(f"Keep {item.label}", key="keep_label", shortcut="K", width="stretch", disabled=bool(refused),
                  on_click=save_decision, args=(item.label,), help="The label is right: it leaves the list")
    skip.button("Skip", key="skip", shortcut="S", width="stretch", on_click=save_decision, args=(None,),
                disabled=bool(refused))
    st.caption("Or correct it to:")
    # Long label names get a row each: three to a row cut "lab_results_table" to "lab_r…" at 1280 px.
    cells = st.columns(1 if max(map(len, project.labels)) > 12 else min(len(project.labels), 3))
    for k, label in enumerate(project.labels):
        key = SHORTCUTS[k] if k < len(SHORTCUTS) else None
        cells[k % len(cells)].button(label, key=f"label_{k}", shortcut=key, width="stretch", disabled=bool(refused),
                                     help=project.labels[label] or None, on_click=save_decision, args=(label,))


def label_check(item) -> None:
    """Why the item is in the "likely mislabeled" list: what models that never saw its label say."""
    heads = item.check_heads or {}
    st.warning(f"**Likely mislabeled.** Labeled **{item.label}**; models trained without this item say "
               f"**{item.check_suggested}** (its label's probability {item.check_quality:.0%}; image alone: "
               f"{heads.get('image', '?')}, text alone: {heads.get('text', '?')}). Keep the label or correct it: "
               "either way it leaves the list.", icon=":material/flag:")


def explained(prediction, page: dict, caption: str, ocr_text: str, explaining, heartbeat):
    """The prediction with its explanation, computed on the engine's explainer thread if missing."""
    if prediction.explanation is not None:
        return prediction
    edited = dataclasses.replace(page["ocr"], text=ocr_text)
    pending = engine.explained(page["image"], project, caption=caption, ocr_result=edited)
    with explaining, st.spinner("Explaining: Grad-CAM and word attributions…"):
        # Streamlit ends a run for a newer edit only when the run draws: a heartbeat lets the
        # reviewer's next edit be predicted now, not after this explanation.
        while not futures.wait([pending], timeout=0.1).done:
            heartbeat.empty()
    st.session_state["prediction"] = pending.result()
    return st.session_state["prediction"]


def word_colours(prediction, page: dict, caption: str, ocr_text: str) -> None:
    explanation = prediction.explanation
    mode = st.radio("Colour the words by", ["attribution", "attention"], horizontal=True, key="word_colouring",
                    help="Attribution: how much each word moved the predicted class (integrated gradients, plus what "
                         "its line's zero-shot vote loses without it); green for, red against. Attention: "
                         "attention rollout through the text encoder.")
    words = explanation.word_attribution if mode == "attribution" else explanation.word_attention
    words = shown.scored_words(words, compose_text(ocr_text, caption))
    # A long page's words scroll in their own box: the caption and page text stay in reach below.
    with st.container(height=260 if len(words) > 150 else "content", border=False):
        st.markdown(colored_words_html(words), unsafe_allow_html=True)  # words are HTML-escaped
    st.caption(f":green-background[green]: for **{literal(prediction.label)}** · :red-background[red]: against it · "
               "the stronger the colour, the more the word moved it" if mode == "attribution" else
               ":green-background[green]: the words the text encoder attended to most; the darker, the more")
    if explanation.words_read < explanation.words_total:
        st.caption(f"Read {explanation.words_read:,} of {explanation.words_total:,} words: the model reads "
                   f"the page in {MAX_CHUNKS} chunks of 128 word pieces at most (the caption always); the "
                   "rest did not count and has no colour.")
    st.caption(f"Model {prediction.model_version} · {ocr_timing(page)} · " + " · ".join(
        f"{k} {v:.0f} ms" for k, v in prediction.timings_ms.items() if k != "ocr"))  # the page was read before predicting


def page_with_heatmap(explanation, page: dict) -> None:
    maps = {"Grad-CAM": explanation.heatmap}
    if explanation.text_to_image is not None:
        maps["Text → image attention"] = explanation.text_to_image
    c1, c2, c3 = st.columns([3, 3, 2], vertical_alignment="bottom")
    which = c1.radio("Heatmap", list(maps), horizontal=True) if len(maps) > 1 else next(iter(maps))
    if len(maps) == 1:
        c1.caption(f"Heatmap: {which} (red: what drove the prediction most)")
    opacity = c2.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="heatmap_opacity")
    show_boxes = c3.toggle("OCR boxes", value=True)
    picture = blend_heatmap(page["image"], maps[which], opacity)
    if show_boxes:
        picture = draw_boxes(picture, [w.box for w in page["ocr"].words])
    # The page itself must not show what the text hides.
    picture = black_out(picture, shown.boxes_to_hide(page["ocr"].text, page["ocr"].words))
    st.image(picture, caption=f"{literal(shown.filename(page['name']))} · {page['image'].width}x{page['image'].height}",
             width="stretch")


@st.fragment
def review_panel(page: dict) -> None:
    """The item under review. A fragment: a caption or text edit, a slider or a toggle reruns
    only this, not the whole app; a decision reruns the app to open the next item. The
    prediction is shown first, its explanation (3-4x the work) follows in the same run."""
    if st.session_state.get("open_next"):
        st.rerun(scope="app")
    if "problem" in st.session_state:
        st.error(st.session_state.pop("problem"))
    item = store.item(project.name, page["item_id"])
    left, right = st.columns([3, 2], gap="large")
    with right:   # the caption sits under the prediction it changes, the decision under both
        result_box, edit_box, decision_box, details_box = st.container(), st.container(), st.container(), st.container()
    with edit_box:
        caption, ocr_text = edit_boxes(page["ocr"])
    prediction, item = current_prediction(page, item, caption, ocr_text)
    with result_box:
        show_prediction(prediction)
        reason_box = st.empty()
        reason_box.markdown(reason_in_words(prediction))
    with details_box:
        # Static (the values are written on the bars): a chart without hover layers redraws in
        # half the time, and the new prediction reaches the screen sooner.
        st.plotly_chart(probability_chart(prediction), width="stretch", config={"staticPlot": True})
        explaining, heartbeat = st.empty(), st.empty()
    with decision_box:
        decision_buttons(item, prediction)
    prediction = explained(prediction, page, caption, ocr_text, explaining, heartbeat)
    reason_box.markdown(reason_in_words(prediction))     # now with its words and region
    with details_box:
        word_colours(prediction, page, caption, ocr_text)
        with st.expander("Similar pages", icon=":material/scatter_plot:"):
            similar_pages(project, item.id, "review")
    with left:
        page_with_heatmap(prediction.explanation, page)


review_panel(page)
