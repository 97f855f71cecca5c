"""What a worker runs for each kind of job: one base, a small variant a kind.

Every kind reports its progress the same way, a fusion.core.progress.Progress (stage, step, steps;
training adds its epochs), through the worker's `report`, which also raises JobCancelled once
someone asked to cancel; the pages read it from the job's row (fusion.ui.job_view). Each variant calls the library
function the CLI calls in the foreground (`import`, `export`, `demo`, `train`, ...), so a job and
a command do the same work. Each loads what it needs when it runs: a worker that only imports
never loads torch.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from fusion.core.progress import Progress, Report, stage_progress
from fusion.core.settings import Settings, describe_device
from fusion.jobs.queue import Job, Jobs
from fusion.store.labeling import Store

class JobKind:
    name = ""

    def run(self, settings: Settings, store: Store, jobs: Jobs, job: Job, report: Report) -> dict:
        """Do the job; return its result (kept in the job's row). Raise to fail it."""
        raise NotImplementedError


class Train(JobKind):
    name = "train"

    def run(self, settings, store, jobs, job, report):
        from fusion.ml import registry   # each kind loads what it needs
        from fusion.ml.metrics import headlines
        from fusion.ml.train import TrainConfig, resolve_device, train_version

        config = TrainConfig.from_dict(job.params)
        if config.device == "auto":           # the job leaves it to the worker (`worker --device`)
            config.device = settings.device
        jobs.beat(job.id, Progress("preparing"), device=describe_device(resolve_device(config.device)))
        resume = jobs.checkpoint_path(job.resume_of) if job.resume_of else None
        version, metrics = train_version(settings, store, job.project, config, user=job.created_by, report=report,
                                         job_id=job.id, checkpoint=jobs.checkpoint_path(job.id), resume=resume)
        promoted = bool(job.params.get("auto_promote")) and registry.beats_active(metrics)
        if promoted:
            registry.promote(store, job.project, version, user=job.created_by, action="auto-promote")
            jobs.submit(job.project, "embed", {}, job.created_by)     # the new version's map, next
        jobs.log(job.id, f"version {version}: test macro-F1 {metrics.test['fused'].macro_f1}"
                         + (", promoted (beat the active version)" if promoted else ""))
        return {"version": version, "promoted": promoted, "test": headlines(metrics.test)}


class Prelabel(JobKind):
    name = "prelabel"

    def run(self, settings, store, jobs, job, report):
        from fusion.services.prelabel import prelabel_project   # each kind loads what it needs

        result = prelabel_project(settings, store, job.project, report)
        jobs.log(job.id, f"predicted {result['predicted']} undecided items with {result['version']}")
        return result


class ZeroShot(JobKind):
    name = "zero_shot"

    def run(self, settings, store, jobs, job, report):
        from fusion.ml.zero_shot_measure import measure_zero_shot   # each kind loads what it needs

        result = measure_zero_shot(settings, store, job.project, job.created_by, report)
        jobs.log(job.id, f"zero-shot measured on {result['items']} labeled items: {result.get('accuracy')}; "
                         f"adaptation: {result['adaptation']}")
        if "adapted_model" in result and not store.project(job.project).active_model:
            jobs.submit(job.project, "prelabel", {}, job.created_by)   # the review queue's predictions, from it
        return {k: result[k] for k in ("items", "votes", "accuracy", "accuracy_unweighted", "accuracy_adapted",
                                       "adaptation") if k in result}


class LabelIssues(JobKind):
    name = "label_issues"

    def run(self, settings, store, jobs, job, report):
        from fusion.ml.label_issues import find_label_issues   # each kind loads what it needs

        result = find_label_issues(settings, store, job.project, stage_progress(report))
        jobs.log(job.id, f"checked {result['items']} labels: {result['flagged']} likely wrong")
        return {k: result[k] for k in ("items", "flagged", "saved", "encode_s", "rank_s")}


class Embed(JobKind):
    name = "embed"

    def run(self, settings, store, jobs, job, report):
        from fusion.ml.embeddings import compute_embeddings   # each kind loads what it needs

        embeddings = compute_embeddings(settings, store, job.project, stage_progress(report))
        jobs.log(job.id, f"embedded {len(embeddings.item_ids)} items for {embeddings.version}")
        return {"items": len(embeddings.item_ids), "version": embeddings.version}


class Import(JobKind):
    """params: path (a folder, CSV or unpacked upload), upload (its upload folder, removed at the
    end whatever happens: importing the same files again adds only what is missing), ocr."""
    name = "import"

    def run(self, settings, store, jobs, job, report):
        from fusion.services.importing import import_path   # each kind loads what it needs

        try:
            ocr = None
            if job.params.get("ocr"):
                from fusion.imaging.ocr import read_text   # each kind loads what it needs

                gpu = settings.resolved_device().startswith("cuda")
                ocr = lambda image: read_text(image, max_side=settings.ocr_max_side, gpu=gpu)  # noqa: E731
            result = import_path(store, job.project, Path(job.params["path"]), job.created_by, ocr=ocr,
                                 progress=stage_progress(report))
        finally:
            if job.params.get("upload"):
                shutil.rmtree(job.params["upload"], ignore_errors=True)
        for where, reason in result.problems:
            jobs.log(job.id, f"skipped {where}: {reason}")
        jobs.log(job.id, f"imported {result.added} new items ({result.already} already there, "
                         f"{len(result.problems)} problems)")
        return result.to_dict()


class Export(JobKind):
    """params: format, deidentify. The zip is kept in the job's folder for the page's download."""
    name = "export"

    def run(self, settings, store, jobs, job, report):
        from fusion.services.exporting import export_archive   # each kind loads what it needs

        archive, summary = export_archive(store, job.project, job.params["format"], jobs.log_path(job.id).parent,
                                          deidentify=job.params.get("deidentify"), progress=stage_progress(report))
        jobs.log(job.id, f"exported {summary['items']} items as {job.params['format']}: {archive.name}")
        return {**summary, "file": str(archive)}


class DemoBuild(JobKind):
    name = "demo"

    def run(self, settings, store, jobs, job, report):
        from fusion.demo.build import ensure_demo_project   # each kind loads what it needs

        project = ensure_demo_project(settings, stage_progress(report))
        jobs.log(job.id, f"demo project ready, model {project.active_model}")
        return {"version": project.active_model}


KINDS: dict[str, JobKind] = {kind.name: kind for kind in (Train(), Prelabel(), ZeroShot(), LabelIssues(), Embed(),
                                                          Import(), Export(), DemoBuild())}
