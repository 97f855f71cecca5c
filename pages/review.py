"""Review: upload a page, read its text, edit a caption, see the fused prediction explained."""
from __future__ import annotations

import dataclasses
import hashlib

import plotly.graph_objects as go
import streamlit as st

from fusion import demo, streamlit_cache
from fusion.errors import FusionError
from fusion.images import load_upload
from fusion.overlay import blend_heatmap, colored_words_html, draw_boxes

UPLOAD_TYPES = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"]

settings = streamlit_cache.settings()
engine = streamlit_cache.engine()
store = streamlit_cache.store()
project = store.project(st.session_state.get("project", settings.demo_project))


def load_page(name: str, data: bytes) -> None:
    """Decode and OCR a new page once; later reruns (edits, sliders) reuse it."""
    sha = hashlib.sha256(data).hexdigest()
    if st.session_state.get("page", {}).get("sha") == sha:
        return
    try:
        image = load_upload(data, settings)
    except FusionError as e:
        st.session_state.pop("page", None)
        st.error(f"{name}: {e}")
        return
    with st.status("Reading the text in the page…", expanded=False) as status:
        result = engine.read_text(image)
        status.update(label=f"Read {len(result.words)} words in {result.ms / 1000:.1f} s", state="complete")
    st.session_state["page"] = {"sha": sha, "name": name, "image": image, "ocr": result}
    st.session_state["ocr_text"] = result.text
    st.session_state["caption"] = ""


def demo_sample_bytes() -> tuple[str, bytes]:
    """The next test-split demo page, so a demo needs no file at hand."""
    n = st.session_state.get("demo_index", 0)
    st.session_state["demo_index"] = n + 1
    return demo.test_page(store, project, n)


def probability_chart(prediction) -> go.Figure:
    labels = list(prediction.probs)
    fig = go.Figure()
    for name, probs, color in (("fused", prediction.probs, "#4f46e5"), ("image only", prediction.probs_image, "#f59e0b"),
                               ("text only", prediction.probs_text, "#10b981")):
        fig.add_bar(name=name, x=labels, y=[probs[k] for k in labels], marker_color=color)
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=10, b=10),
                      yaxis=dict(range=[0, 1], title="probability"),
                      legend=dict(orientation="h", yanchor="top", y=-0.35, x=0))
    return fig


st.title("Review")
pick, sample = st.columns([4, 1], vertical_alignment="bottom")
upload = pick.file_uploader("Upload a page (PNG, JPEG, TIFF, BMP or WebP)", type=UPLOAD_TYPES,
                            max_upload_size=int(settings.max_upload_mb))
if sample.button("Try a demo page", help="Take the next page of the demo project's test split", width="stretch"):
    load_page(*demo_sample_bytes())
elif upload is not None and upload.file_id != st.session_state.get("upload_id"):
    st.session_state["upload_id"] = upload.file_id  # a new upload, not a rerun with the old one
    load_page(upload.name, upload.getvalue())

page = st.session_state.get("page")
if page is None:
    st.info("Upload a scanned page or photo, or press **Try a demo page**. The app reads its text, and "
            "an image encoder and a text encoder, fused, predict its class and show what drove it.")
    st.stop()

left, right = st.columns([3, 2], gap="large")
with right:
    result_box = st.container()
    caption = st.text_area("Caption or note", key="caption", height=80,
                           placeholder="e.g. 'follow-up ECG, patient reports chest pain'")
    ocr_info = page["ocr"]
    turned = f", page turned {ocr_info.angle}°" if ocr_info.angle else ""
    with st.expander(f"Text read from the page ({len(ocr_info.words)} words{turned}), editable", expanded=False):
        ocr_text = st.text_area("Page text", key="ocr_text", height=220, label_visibility="collapsed")

# Sliders and toggles rerun the script too: predict again only when the inputs changed.
inputs = (page["sha"], ocr_text, caption, project.name, project.active_model)
if st.session_state.get("prediction_inputs") != inputs:
    with st.spinner("Predicting…"):
        edited = dataclasses.replace(page["ocr"], text=ocr_text)  # edits never re-run OCR
        st.session_state["prediction"] = engine.predict(page["image"], project, caption=caption,
                                                        ocr_result=edited, with_explanation=True)
    st.session_state["prediction_inputs"] = inputs
prediction = st.session_state["prediction"]
explanation = prediction.explanation


def top(probs: dict[str, float]) -> str:
    label = max(probs, key=probs.get)
    return f"**{label}** ({probs[label]:.0%})"


with result_box:
    st.markdown(f"### {prediction.label}  \n{prediction.confidence:.0%} confident · "
                f"image alone: {top(prediction.probs_image)} · text alone: {top(prediction.probs_text)}")
    st.plotly_chart(probability_chart(prediction), width="stretch", config={"displayModeBar": False})
    mode = st.radio("Colour the words by", ["attribution", "attention"], horizontal=True, key="word_colouring",
                    help="Attribution: integrated gradients of the predicted class (green for, red against). "
                         "Attention: attention rollout through the text encoder.")
    words = explanation.word_attribution if mode == "attribution" else explanation.word_attention
    st.markdown(colored_words_html(words), unsafe_allow_html=True)  # words are HTML-escaped
    st.caption(f"Model {prediction.model_version} · " +
               " · ".join(f"{k} {v:.0f} ms" for k, v in prediction.timings_ms.items()))

with left:
    maps = {"Grad-CAM": explanation.heatmap}
    if explanation.text_to_image is not None:
        maps["Text → image attention"] = explanation.text_to_image
    c1, c2, c3 = st.columns([3, 3, 2], vertical_alignment="bottom")
    which = c1.radio("Heatmap", list(maps), horizontal=True)
    opacity = c2.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="heatmap_opacity")
    show_boxes = c3.toggle("OCR boxes", value=True)
    shown = blend_heatmap(page["image"], maps[which], opacity)
    if show_boxes:
        shown = draw_boxes(shown, [w.box for w in page["ocr"].words])
    st.image(shown, caption=f"{page['name']} · {page['image'].width}x{page['image'].height}", width="stretch")
