"""Train: start a fine-tuning run in the background worker, follow it live, and manage the model
versions (metrics, comparison with the active one, promote, roll back)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from fusion.ui import session as app_session
from fusion.ml import registry
from fusion.ui import resources as streamlit_cache
from fusion.services import version_report
from fusion.ml import zero_shot_measure
from fusion.ui.charts import learning_curve_figure
from fusion.core.errors import FusionError
from fusion.core.progress import Progress
from fusion.ml.finetune import MODES
from fusion.ml.metrics import HeadScores
from fusion.jobs.queue import Job, Jobs
from fusion.ml.train import TrainConfig
from fusion.jobs.worker import change_active_model, describe_labels, queue_job, reap_dead_jobs, resume_job
from fusion.ml.model import HEADS

MODE_HELP = {"head": "encoders frozen, features cached: a minute on a CPU",
             "partial": "also the top blocks of both encoders: best with a GPU",
             "full": "every weight, bf16 on a GPU: needs a GPU for more than a few hundred items"}

streamlit_cache.require_app_shell()
app_session.require_page("train")
settings = streamlit_cache.settings()
store = streamlit_cache.store()
jobs = Jobs(store)
project = store.project(st.session_state.get("project", settings.demo_project))
user = app_session.current_user()
reap_dead_jobs(settings, store)   # a job whose worker died shows as failed, not as running forever


def start_form() -> None:
    info = store.project_info(project.name)
    labeled = info["by_status"]["accepted"] + info["by_status"]["corrected"]
    st.caption(f"{labeled:,} labeled items (accepted or corrected) of {info['items']:,} train this project's model.")
    gpu = torch.cuda.is_available()
    with st.form("train_form"):
        mode = st.radio("Mode", MODES, horizontal=True, captions=[MODE_HELP[m] for m in MODES], key="train_mode")
        a, b = st.columns(2)
        c, d = st.columns(2)
        epochs = a.number_input("Epochs", 1, 1000, 40, key="train_epochs")
        lr = b.number_input("Learning rate", 1e-6, 1.0, 2e-3, format="%.4f", key="train_lr")
        batch = c.number_input("Batch size", 1, 4096, 32, key="train_batch")
        device = d.selectbox("Device", ["auto", "cuda", "cpu"] if gpu else ["auto", "cpu"], key="train_device",
                             help=None if gpu else "No CUDA GPU on this machine: training runs on the CPU")
        with st.expander("More options"):
            l2sp = st.number_input("L2-SP strength (pull fine-tuned encoders toward pretrained)", 0.0, 10.0, 0.0,
                                   format="%.4f", key="train_l2sp")
            lora = st.checkbox("LoRA adapters on the text encoder instead of its weights", key="train_lora")
            auto = st.checkbox("Promote automatically if it beats the active model on the test split",
                               key="train_auto_promote")
            pseudo = st.checkbox("Also learn from unlabeled pages", value=True, key="train_pseudo_labels",
                                 help="Where zero-shot is adapted to the project's pages (Labels and zero-shot, "
                                      "below), the unlabeled pages it finds likeliest to be each label join the "
                                      "labeled items, labeled so. Unless zero-shot was right on more labeled items "
                                      "than a model of the labeled items alone (checked on items it was not "
                                      "fitted to), only the pages that model agrees with are taken")
        if st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:"):
            try:
                config = TrainConfig(mode=mode, epochs=int(epochs), lr=float(lr), batch_size=int(batch),
                                     device=device, l2sp=float(l2sp), lora=lora, pseudo_labels=pseudo)
                job = queue_job(settings, store, project.name, "train", config.job_params(auto_promote=auto), user)
                st.toast(f"Training job {job.id} queued", icon=":material/schedule:")
            except FusionError as e:
                st.error(str(e))


def curves(job: Job) -> None:
    rows = job.curve or []
    if not rows:
        return
    epochs = [r.epoch for r in rows]
    fig = go.Figure()
    fig.add_scatter(x=epochs, y=[r.loss for r in rows], name="train loss", yaxis="y")
    for head, dash in zip(HEADS, ("solid", "dot", "dash")):
        fig.add_scatter(x=epochs, y=[r.val[head].macro_f1 for r in rows], name=f"val macro-F1 ({head})",
                        yaxis="y2", line={"dash": dash})
    fig.update_layout(height=280, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title="epoch",
                      yaxis={"title": "loss"}, yaxis2={"title": "macro-F1", "overlaying": "y", "side": "right",
                                                       "range": [0, 1.02], "tickformat": ".1f", "dtick": 0.2},
                      legend={"orientation": "h", "y": -0.3})
    # No toolbar: it sat over the fused line's last epochs
    st.plotly_chart(fig, width="stretch", key=f"curve_{job.id}_{len(rows)}", config={"displayModeBar": False})


def progress_of(job: Job) -> None:
    p = job.progress or Progress("preparing")
    if job.status == "queued":
        st.progress(0.0, text="Queued: waiting for the worker")
    elif job.status == "running":
        if p.stage in ("training", "epoch"):
            done = (p.epoch - 1 + p.step / p.steps) / p.epochs
            eta = p.eta_s or 0
            left = (f", about {eta / 60:.0f} min left at most" if eta > 90
                    else f", under {max(eta, 1):.0f} s left at most")
            st.progress(min(done, 1.0), text=f"Epoch {p.epoch}/{p.epochs}, step {p.step}/{p.steps}: "
                                             f"loss {p.loss}, {p.samples_per_s:.0f} samples/s{left}")
        elif p.stage == "encoding":
            st.progress(p.fraction(), text=f"Encoding items: {p.step}/{p.steps}")
        else:
            st.progress(0.0, text="Preparing (loading encoders and data)…")
    stale = job.seconds_since_heartbeat()
    facts = [f"device `{job.device or '…'}`", f"by {job.created_by}", f"queued {job.created_at:%H:%M:%S} UTC"]
    if p.gpu_memory_gb is not None:
        facts.append(f"GPU memory {p.gpu_memory_gb} / {p.gpu_total_gb} GB")
    if job.status == "running" and stale is not None and stale > 30:
        facts.append(f":orange[no heartbeat for {stale:.0f} s]")
    st.caption(" · ".join(facts))


@st.fragment(run_every=2)
def current_job() -> None:
    recent = jobs.list(project.name, limit=1, kind="train")
    if not recent:
        st.info("No training runs yet for this project.")
        return
    job = recent[0]
    icon = {"queued": "⏳", "running": "▶", "succeeded": "✓", "failed": "✗", "cancelled": "■"}[job.status]
    st.subheader(f"Job {job.id}: {job.params.get('mode')} · {icon} {job.status}")
    progress_of(job)
    if job.status == "succeeded" and job.result:
        r, fused = job.result, HeadScores.from_json(job.result["test"]["fused"])
        st.success(f"Version **{r['version']}**: test accuracy {fused.accuracy:.1%}, macro-F1 "
                   f"{fused.macro_f1:.3f}" + (" · promoted automatically" if r.get("promoted") else ""))
    if job.status == "failed":
        st.error(job.error)
    cols = st.columns(4)
    if job.status in ("queued", "running") and cols[0].button("Cancel", icon=":material/stop:", key="cancel_job"):
        jobs.cancel(job.id, app_session.current_user())
        st.rerun(scope="fragment")
    if job.status in ("failed", "cancelled") and jobs.checkpoint_path(job.id).is_file() and \
            cols[0].button("Resume from checkpoint", icon=":material/replay:", key="resume_job"):
        resume_job(settings, store, job.id, app_session.current_user())
        st.rerun(scope="fragment")
    curves(job)
    with st.expander("Log"):
        st.code("\n".join(jobs.log_tail(job.id, 20)) or "(empty)", language=None)
    if job.finished and job.result and st.session_state.get("seen_result") != job.id:
        st.session_state["seen_result"] = job.id
        st.rerun(scope="app")  # the versions table below gains the new version


def trained_on(counts: dict) -> str:
    """"6 + 21": six labeled by people, 21 pseudo-labeled; a version from before pseudo-labels has no such count."""
    extra = counts.get("pseudo_labeled")
    return f"{counts.get('train')} + {extra}" if extra else str(counts.get("train"))


def versions_table(found: list[registry.ModelVersion]) -> None:
    rows = []    # what fits at 1280 px; its mode, who trained it and its zero-shot are on the Evaluate page
    for v in found:
        test = v.metrics.test
        rows.append({"version": v.version, "active": "●" if v.active else "",
                     "fused acc": test["fused"].accuracy, "fused F1": test["fused"].macro_f1,
                     "image F1": test["image"].macro_f1, "text F1": test["text"].macro_f1,
                     "ECE": test["fused"].describe_ece(prefix=""),   # with the items and bins it rests on
                     "train items": trained_on(v.metrics.counts), "test items": v.metrics.counts.get("test"),
                     "when": v.created_at})
    score = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "version": st.column_config.TextColumn("version", width=52),
        "active": st.column_config.TextColumn("active", width=44),
        "fused acc": st.column_config.NumberColumn(format="percent"), "fused F1": score, "image F1": score,
        "text F1": score, "ECE": st.column_config.TextColumn("ECE (fused)", width=272),
        "train items": st.column_config.TextColumn("train", width=46, help=(
            "Items the version trained on: people's labels, + the unlabeled pages zero-shot labeled")),
        "test items": st.column_config.NumberColumn("test", width=45),
        "when": st.column_config.DatetimeColumn("when (UTC)", format="MM-DD HH:mm", width=85)})


def compare(a: registry.ModelVersion, b: registry.ModelVersion) -> None:
    tested_a = streamlit_cache.test_predictions(project.name, a.version)
    tested_b = streamlit_cache.test_predictions(project.name, b.version)
    if {p.item_id for p in tested_a} == {p.item_id for p in tested_b}:
        shared, scores_a, scores_b = len(tested_a), a.metrics.test, b.metrics.test
    else:    # relabeling moved items in or out of the test split: score both on what both saw
        shared, scores_a, scores_b = version_report.scores_on_shared(tested_a, tested_b, HEADS)
        st.caption(f"{a.version} was tested on {len(tested_a)} items and {b.version} on {len(tested_b)}: accuracy "
                   f"and macro-F1 below are on the {shared} test items both saw (each ECE on its own test split).")
    heads = pd.DataFrame([{"head": h, "metric": m, a.version: getattr(scores_a[h], m),
                           b.version: getattr(scores_b[h], m)}
                          for h in HEADS for m in ("accuracy", "macro_f1")])
    # the ECEs apart: each with the items and bins it rests on, a text beside no bare number
    ece = pd.DataFrame([{"head": h, f"ECE {a.version}": a.metrics.test[h].describe_ece(prefix=""),
                         f"ECE {b.version}": b.metrics.test[h].describe_ece(prefix="")} for h in HEADS])
    classes_a, classes_b = a.metrics.test["fused"].per_class, b.metrics.test["fused"].per_class
    per_class = pd.DataFrame([{"label": label, f"F1 {a.version}": s.f1,
                               f"F1 {b.version}": classes_b[label].f1 if label in classes_b else None}
                              for label, s in classes_a.items()])
    left, right = st.columns(2)
    left.dataframe(heads, hide_index=True, width="stretch")
    left.dataframe(ece, hide_index=True, width="stretch")
    if not per_class.empty:
        right.dataframe(per_class, hide_index=True, width="stretch")


def save_descriptions(values: dict[str, str]) -> None:
    """New label descriptions, then their zero-shot measured in the background on the labeled items."""
    try:
        job = describe_labels(settings, store, project.name, values, app_session.current_user())
        st.session_state["zero_shot_flash"] = ("success", f"Descriptions saved; measuring zero-shot (job {job.id})")
    except FusionError as e:
        st.session_state["zero_shot_flash"] = ("error", str(e))


def descriptions_form() -> None:
    with st.form("descriptions_form"):
        values = {label: st.text_input(label, description, key=f"description_{label}", max_chars=300,
                                       placeholder="e.g. a shop receipt: items, prices, total")
                  for label, description in project.labels.items()}
        if st.form_submit_button("Save and measure zero-shot", icon=":material/save:"):
            save_descriptions(values)
            st.rerun()
    if "zero_shot_flash" in st.session_state:
        kind, message = st.session_state.pop("zero_shot_flash")
        getattr(st, kind)(message)


def adaptation_caption(adaptation: dict) -> str:
    if not adaptation.get("adapted"):
        unread = adaptation.get("unread_pages")
        return (f"Not adapted to the project's pages: {adaptation.get('why')}."
                + (f" {unread:,} pages have no text read yet; pre-labeling reads them." if unread else ""))
    shares = ", ".join(f"{label} {n}" for label, n in adaptation["per_label"].items())
    checked = (f"Checked and calibrated on {adaptation['calibrated_on']:,} labeled items."
               if adaptation["calibrated_on"] else
               "No labeled item has checked it yet, and its confidence is not calibrated: label a few pages of "
               "each label, then measure again.")
    return (f"Adapted to the project's {adaptation['pages']:,} pages outside the test split: the pages zero-shot "
            f"finds likeliest to be each label ({shares}) taught its heads, with no one's labels. {checked}")


def queue_zero_shot() -> None:
    queue_job(settings, store, project.name, "zero_shot", {}, user)   # the fragment shows its progress


@st.fragment(run_every=2)
def zero_shot_measurement() -> None:
    recent = jobs.list(project.name, limit=1, kind="zero_shot")
    running = bool(recent) and not recent[0].finished
    if running:
        p = recent[0].progress
        st.progress(p and p.fraction() or 0.0, text=f"Measuring zero-shot ({recent[0].status})…")
    elif recent and recent[0].status == "failed":
        st.error(f"Measuring zero-shot failed: {recent[0].error}")
    measurement = zero_shot_measure.measured(project) or {}
    if "accuracy" in measurement:
        current = measurement["descriptions"] == store.project(project.name).labels
        measured, before = measurement["accuracy"], measurement.get("accuracy_unweighted", {})
        adapted = measurement.get("accuracy_adapted", {})
        st.markdown(f"**Zero-shot accuracy on {measurement['items']:,} labeled items**"
                    + ("" if current else " (older descriptions)"))
        st.dataframe(pd.DataFrame([{"head": h, "one vote each": before.get(h), "votes measured": measured[h],
                                    "adapted": adapted.get(h)} for h in HEADS]),
                     hide_index=True, column_config={c: st.column_config.NumberColumn(format="percent")
                                                     for c in ("one vote each", "votes measured", "adapted")})
        image_vote, text_vote = measurement.get("votes", [1.0, 1.0])
        st.caption(f"Votes in the fused zero-shot: image {image_vote:.2f}, text {text_vote:.2f} (measured "
                   f"{measurement['measured_at']} by {measurement['measured_by']}; fitted on the train and validation items)")
    else:
        st.caption("Zero-shot not measured on labeled items yet: each prior has one vote.")
    if "adaptation" in measurement:
        st.caption(adaptation_caption(measurement["adaptation"]))
    st.button("Measure and adapt again", icon=":material/refresh:", disabled=running, key="zero_shot_again",
              on_click=queue_zero_shot, help="After new pages or labels: zero-shot is measured on the labeled items "
              "and adapted to the project's pages, in the background")


def change_active(version: str | None) -> None:
    """Promote `version`, or roll back to the previous active one (None). Runs as a button
    callback, so the page then renders once with the new state."""
    try:
        changed = change_active_model(settings, store, project.name, app_session.current_user(), version)
        streamlit_cache.engine().forget_models()  # every session predicts with the new version from now
        st.session_state["train_flash"] = ("success", f"{changed.active_model} is now the active model")
    except FusionError as e:
        st.session_state["train_flash"] = ("error", str(e))


st.title("Train")
left, right = st.columns([2, 3], gap="large")
with left:
    st.subheader("New training run")
    start_form()
with right:
    current_job()

st.subheader("Model versions")
found = registry.versions(store, project.name)
if not found:
    st.info("No trained versions yet: the project predicts zero-shot from its label names.")
else:
    versions_table(found)
    names = [v.version for v in found]
    active = next((v for v in found if v.active), None)
    newest_inactive = next((i for i, v in enumerate(found) if not v.active), 0)
    pick = st.selectbox("Version", names, index=newest_inactive, key="train_version_pick")
    chosen = next(v for v in found if v.version == pick)
    with st.container(horizontal=True):
        st.button(f"Promote {pick}", disabled=chosen.active, icon=":material/upgrade:", key="promote",
                  on_click=change_active, args=(pick,))
        previous = registry.rollback_target(store, project.name)
        st.button(f"Roll back to {previous}" if previous else "Roll back", disabled=previous is None,
                  icon=":material/undo:", key="rollback", on_click=change_active, args=(None,),
                  help=f"Make {previous}, active before {active.version}, active again" if previous
                  else "No version was active before this one: promote the one you want instead")
    if "train_flash" in st.session_state:
        kind, message = st.session_state.pop("train_flash")
        getattr(st, kind)(message)
    if active is not None and not chosen.active:
        st.markdown(f"**{chosen.version}** beside the active **{active.version}** (test split):")
        compare(chosen, active)
    with st.expander("Promotions and rollbacks"):
        st.dataframe(pd.DataFrame([vars(e) for e in registry.events(store, project.name)]), hide_index=True)

st.subheader("Learning curve")
if found:
    st.plotly_chart(learning_curve_figure(version_report.learning_curve(found)), width="stretch",
                    config={"displayModeBar": False})
else:
    st.caption("Each trained version adds a point: its test accuracy by the number of labeled items it learned from.")

st.subheader("Labels and zero-shot")
st.caption("Before any labels the project predicts zero-shot: each page's lines are matched against every label's "
           "name and the phrases of its description. Describe each label as you would to a new colleague. "
           "Measuring then adapts zero-shot to the project's own pages: the pages it finds likeliest to be each label "
           "teach it the rest.")
left, right = st.columns(2, gap="large")
with left:
    descriptions_form()
with right:
    zero_shot_measurement()
