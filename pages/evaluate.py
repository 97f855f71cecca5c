"""Evaluate: how good a model version is on the project's test split, and where it fails."""
from __future__ import annotations

import dataclasses

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from fusion.ui import session as app_session
from fusion.ml import registry
from fusion.ui import resources as streamlit_cache
from fusion.ui.similar_view import similar_pages
from fusion.services import version_report
from fusion.ui.charts import learning_curve_figure
from fusion.ml.metrics import ECE_MIN_ITEMS, HeadScores
from fusion.imaging.images import load_image
from fusion.imaging.ocr import OcrResult
from fusion.privacy.deidentify import NOTICE
from fusion.privacy.shown import Shown
from fusion.privacy.display_text import literal
from fusion.imaging.overlay import black_out, blend_heatmap
from fusion.ml.pipeline import compose_text

streamlit_cache.require_app_shell()
app_session.require_page("evaluate")
settings = streamlit_cache.settings()
shown = Shown.under(settings)
store = streamlit_cache.store()
project = store.project(st.session_state.get("project", settings.demo_project))
GALLERY = 8
LISTED = 50       # rows of a table of items: a cell or a comparison can hold thousands


@st.cache_data(max_entries=200, show_spinner=False)
def gradcam_picture(project_name: str, version: str, item_id: int, redacting: bool = False):
    """The page with the version's Grad-CAM for its own prediction (explained once, then cached),
    its top words and its reason in words, as shown (de-identifying: PHI words blacked out where
    OCR kept their boxes, and hidden)."""
    shown = Shown(redacting)
    item = store.item(project_name, item_id)
    image = load_image(store.image_path(item))
    as_version = dataclasses.replace(store.project(project_name), active_model=version)
    prediction = streamlit_cache.engine().predict(image, as_version, caption=item.caption,
                                                  ocr_result=OcrResult(item.ocr_text or ""), with_explanation=True)
    picture = blend_heatmap(image, prediction.explanation.heatmap, 0.45)
    picture = black_out(picture, shown.boxes_to_hide(item.ocr_text or "", store.ocr_words(item)))
    picture.thumbnail((360, 360))
    words = shown.top_words(prediction.explanation, compose_text(item.ocr_text or "", item.caption))
    return picture, [w for w, _ in words], shown.reason(prediction)


def headline(v: registry.ModelVersion) -> pd.DataFrame:
    """Each head's scores; the ECE with the items and bins it rests on (never a bare number)."""
    def row(model: str, s: HeadScores) -> dict:
        return {"model": model, "accuracy": s.accuracy, "macro_f1": s.macro_f1, "ECE": s.describe_ece(prefix="")}
    rows = [row(f"{h} ({v.version})", v.metrics.test[h]) for h in version_report.HEADS]
    rows.append(row(f"zero-shot fused (on {v.version}'s test)", v.metrics.zero_shot_test["fused"]))
    return pd.DataFrame(rows)


def confusion_chart(v: registry.ModelVersion):
    """The fused head's confusion matrix. Each cell also holds a clear square marker: Plotly's
    heatmaps send no click to Streamlit, scatter points do, so clicking a cell selects its items."""
    labels = project.label_names
    matrix = v.metrics.test["fused"].confusion
    hover = "true %{y}<br>predicted %{x}<br>%{text} items<extra></extra>"
    fig = go.Figure(go.Heatmap(z=matrix, x=labels, y=labels, colorscale="Blues", text=matrix, texttemplate="%{text}",
                               hovertemplate=hover, showscale=False))
    cells = [(t, p, matrix[i][j]) for i, t in enumerate(labels) for j, p in enumerate(labels)]
    side = max(30, 300 // max(len(labels), 1))
    fig.add_scatter(x=[p for _, p, _ in cells], y=[t for t, _, _ in cells], text=[n for *_, n in cells],
                    mode="markers", marker={"symbol": "square", "size": side, "color": "rgba(0,0,0,0)"},
                    hovertemplate=hover, showlegend=False)
    fig.update_layout(height=160 + 60 * len(labels), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title="Confusion (fused head)", xaxis_title="predicted", yaxis_title="true",
                      yaxis_autorange="reversed", clickmode="event+select", dragmode=False)
    fig.update_xaxes(tickangle=0, automargin=True)
    fig.update_yaxes(automargin=True)
    return st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key="confusion",
                           config={"displayModeBar": False})


def reliability_chart(v: registry.ModelVersion) -> None:
    """Accuracy by confidence bin, each bar labelled with its item count; the ECE says what it rests on."""
    fused = v.metrics.test["fused"]
    bins = fused.reliability or []
    fig = go.Figure()
    fig.add_bar(x=[(b.lo + b.hi) / 2 for b in bins], y=[b.accuracy for b in bins],
                width=[b.hi - b.lo for b in bins], name="accuracy", customdata=[b.count for b in bins],
                text=[f"n={b.count}" for b in bins], textposition="auto",
                hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} items<extra></extra>")
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line={"dash": "dash"})
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 50, "b": 10}, xaxis_title="confidence",
                      yaxis_title="accuracy", xaxis_range=[0, 1], yaxis_range=[0, 1.02], showlegend=False,
                      title=f"Reliability (fused)<br><sup>{fused.describe_ece()}</sup>")
    st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})
    if fused.ece_enough_items is False:
        st.caption(f":material/warning: This ECE rests on fewer than {ECE_MIN_ITEMS} test items: by chance alone "
                   "a perfectly calibrated model would show a few hundredths here. Read the bars' item counts "
                   "before the number.")


def item_rows(predictions) -> pd.DataFrame:
    rows = []
    for p in predictions:
        item = store.item(project.name, p.item_id)
        top = {h: max(p.probs[h], key=p.probs[h].get) for h in version_report.HEADS}
        rows.append({"thumbnail": streamlit_cache.thumbnail_url(item), "file": shown.filename(item.filename),
                     "true": p.truth, "fused": f"{p.predicted} {p.confidence:.0%}",
                     "image-only": f"{top['image']} {p.probs['image'][top['image']]:.0%}",
                     "text-only": f"{top['text']} {p.probs['text'][top['text']]:.0%}"})
    return pd.DataFrame(rows)


def show_items(predictions, empty: str) -> None:
    if not predictions:
        st.caption(empty)
        return
    st.dataframe(item_rows(predictions[:LISTED]), hide_index=True, width="stretch", row_height=60,
                 column_config={"thumbnail": st.column_config.ImageColumn(width="small")})
    if len(predictions) > LISTED:
        st.caption(f"The first {LISTED} of {len(predictions)}.")


st.title("Evaluate")
if shown.redacting:
    st.caption(f":material/visibility_off: {NOTICE}; on the pages below, black boxes hide them where OCR "
               "recorded where the words are (pages whose text was imported show as scanned).")
found = registry.versions(store, project.name)
if not found:
    st.info("No trained versions yet: train one on the Train page, then see here how it does on the test split.")
    st.stop()
names = [v.version for v in found]
active = next((v.version for v in found if v.active), names[0])
pick, other = st.columns(2)
chosen = found[names.index(pick.selectbox("Version", names, index=names.index(active), key="eval_version"))]
compare_to = other.selectbox("Compare with", ["(none)"] + [n for n in names if n != chosen.version], key="eval_other")
predictions = streamlit_cache.test_predictions(project.name, chosen.version)
st.caption(f"{chosen.metrics.counts.get('test', len(predictions))} test items · trained by "
           f"{chosen.created_by} on {chosen.created_at:%Y-%m-%d %H:%M} · mode {chosen.params.get('mode', '?')}"
           + (" · active" if chosen.active else ""))

score = st.column_config.NumberColumn(format="%.3f")
st.dataframe(headline(chosen), hide_index=True, width="stretch",
             column_config={"accuracy": st.column_config.NumberColumn(format="percent"), "macro_f1": score})

selection = confusion_chart(chosen)      # the page's width: its labels don't overlap
points = (selection or {}).get("selection", {}).get("points", []) if selection else []
if points:
    truth, predicted = points[0]["y"], points[0]["x"]
    st.markdown(f"**True {truth}, predicted {predicted}**")
    show_items(version_report.in_cell(predictions, truth, predicted), "No items in this cell.")
else:
    st.caption("Click a cell of the confusion matrix to see its items.")

reliability_chart(chosen)
with st.expander("Per-class precision, recall and F1", expanded=False):
    per_class = chosen.metrics.test["fused"].per_class
    st.dataframe(pd.DataFrame([{"label": k, **dataclasses.asdict(s)} for k, s in per_class.items()]),
                 hide_index=True, width="stretch")

st.subheader("Errors")
wrong = version_report.errors(predictions)
show_items(wrong, "No misclassified test items.")
if wrong:
    with st.expander("More like an error: the pages nearest it", icon=":material/scatter_plot:"):
        error = st.selectbox("Error", wrong[:LISTED], key="eval_similar", format_func=lambda p: (
            f"{p.item_id} · true {p.truth}, predicted {p.predicted} {p.confidence:.0%}"))
        similar_pages(project, error.item_id, "evaluate")
if wrong and st.toggle(f"Grad-CAM of the most confident errors (up to {GALLERY})", key="eval_gradcam"):
    columns = st.columns(4)
    for n, p in enumerate(wrong[:GALLERY]):
        picture, words, reason = gradcam_picture(project.name, chosen.version, p.item_id, shown.redacting)
        columns[n % 4].image(picture, caption=f"true {p.truth} · predicted {p.predicted} · {', '.join(words)}")
        columns[n % 4].caption(literal(reason, limit=1000))

st.subheader("Learning curve")
st.plotly_chart(learning_curve_figure(version_report.learning_curve(found)), width="stretch",
                config={"displayModeBar": False})

if compare_to != "(none)":
    st.subheader(f"{chosen.version} beside {compare_to}")
    other_version = found[names.index(compare_to)]
    both = pd.concat([headline(chosen), headline(other_version)])
    st.dataframe(both, hide_index=True, width="stretch", column_config={"macro_f1": score})
    flips = version_report.changed(predictions, streamlit_cache.test_predictions(project.name, compare_to))
    st.markdown(f"**{len(flips)} test items whose prediction changed** ({chosen.version} first)")
    show_items([a for a, _ in flips], "None: both versions predict the same label for every test item they share.")
