"""How a page shows a background job of any kind (fusion.jobs.kinds): one progress bar read from
the job's row, the same for an import, an export, the demo build or pre-labeling."""
from __future__ import annotations

import streamlit as st

from fusion.jobs.queue import Job

STAGES = {"generating": "Generating documents", "importing": "Importing", "encoding": "Encoding",
          "training": "Training", "exporting": "Exporting", "preparing": "Preparing", "predicting": "Predicting",
          "reading": "Reading pages", "cross-validating": "Checking the labels, fold", "embedding": "Embedding"}


def job_progress(job: Job, stages: dict[str, str] = STAGES) -> None:
    """A queued or running job's progress bar; a failed or cancelled one's reason."""
    p = job.progress
    if job.status == "queued":
        st.progress(0.0, text="Queued: waiting for the worker")
    elif job.status == "running" and p is not None and p.fraction() is not None:
        st.progress(p.fraction(), text=f"{stages.get(p.stage, p.stage)}: {p.step}/{p.steps}")
    elif job.status == "running":
        st.progress(0.0, text="Starting…")
    elif job.status == "failed":
        st.error(f"Job {job.id} failed: {job.error}")
    elif job.status == "cancelled":
        st.warning(f"Job {job.id} was cancelled ({job.error or 'on request'}).")
