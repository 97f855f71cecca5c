"""The command line: `python -m fusion COMMAND ...`. Thin: it calls what the pages call.

Errors caused by input (a bad file, a missing weight package, an unknown project) print one
line `error: ...` on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys


_bars: dict = {}


def _progress(stage: str, done: int, total: int) -> None:
    """Progress on stderr: a tqdm bar in a terminal; in a log, a `stage: done/total` line every 10%
    (the app's first-run page reads those lines)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = _bars.get(stage)
        if bar is None or bar.total != total:
            bar = _bars[stage] = tqdm(total=total, desc=stage, unit="item", file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    elif done == total or done * 10 // total != (done - 1) * 10 // total:
        print(f"{stage}: {done}/{total}", file=sys.stderr, flush=True)


def _emit(data: dict, as_json: bool, summary: str) -> None:
    print(json.dumps(data, default=str) if as_json else summary)


def cmd_ocr(args, settings) -> None:
    from fusion.imaging.images import load_upload
    from fusion.imaging.ocr import read_text

    result = read_text(load_upload(args.image, settings), max_side=settings.ocr_max_side, cache_dir=settings.ocr_cache_dir,
                       gpu=settings.resolved_device().startswith("cuda"))
    data = result.to_dict()
    if settings.redact_text:   # FUSION_DEIDENTIFY / FUSION_DEMO_MODE: what is shown is redacted
        from fusion.privacy.deidentified_view import redact_words
        from fusion.privacy.deidentify import redact

        shown = redact_words([w["text"] for w in data["words"]], result.text)
        data["words"] = [dict(w, text=s) for w, s in zip(data["words"], shown)]
        data["text"] = redact(result.text)
    _emit({k: data[k] for k in ("text", "words", "ms", "angle")}, args.json, data["text"])


def cmd_predict(args, settings) -> None:
    from fusion.demo.build import ensure_demo_project
    from fusion.imaging.images import load_upload
    from fusion.ml.pipeline import get_engine
    from fusion.store.labeling import open_store

    image = load_upload(args.image, settings)
    engine = get_engine(settings)  # before building the demo: a missing weight package fails fast
    if args.project == settings.demo_project:
        project = ensure_demo_project(settings, _progress)
    else:
        project = open_store(settings).project(args.project)
    prediction = engine.predict(image, project, caption=args.caption, with_explanation=args.explain)
    summary = f"{prediction.label} ({prediction.confidence:.1%}) by model {prediction.model_version}"
    data = prediction.to_dict()
    if settings.redact_text:
        from fusion.privacy.deidentified_view import redact_prediction

        data = redact_prediction(data, prediction.explanation)
    _emit(data, args.json, summary)


def cmd_demo(args, settings) -> None:
    from fusion.demo.build import ensure_demo_project
    from fusion.ml.registry import get_version
    from fusion.store.labeling import open_store

    project = ensure_demo_project(settings, _progress)
    metrics = get_version(open_store(settings), project.name, project.active_model).metrics
    data = {"project": project.name, "model_version": project.active_model, "counts": metrics["counts"],
            "test": _head_scores(metrics["test"]), "zero_shot_test": _head_scores(metrics["zero_shot_test"])}
    acc = {h: f"{v['accuracy']:.1%}" for h, v in metrics["test"].items()}
    _emit(data, args.json, f"demo project ready at {project.directory}; test accuracy {acc}")


def _descriptions(path: str | None) -> dict[str, str]:
    """A JSON object {label: description}, or text lines `label: description`."""
    if path is None:
        return {}
    from fusion.core.errors import FusionError

    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise FusionError(f"can't read the descriptions file {path}: {e}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise FusionError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise FusionError(f"{path} must hold an object {{label: description}}")
        return {str(k): str(v) for k, v in data.items()}
    pairs = (line.partition(":") for line in text.splitlines() if line.strip())
    return {label.strip(): description.strip() for label, _, description in pairs}


def cmd_project_create(args, settings) -> None:
    from fusion.core.errors import FusionError
    from fusion.store.labeling import open_store

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    descriptions = _descriptions(args.descriptions)
    unknown = set(descriptions) - set(labels)
    if unknown:
        raise FusionError(f"descriptions for labels not in --labels: {sorted(unknown)}")
    project = open_store(settings).create_project(args.project, {lab: descriptions.get(lab, "") for lab in labels},
                                                  user=args.user)
    _emit({"project": project.name, "labels": project.labels}, args.json,
          f"created project {project.name} with labels {', '.join(project.labels)}")


def cmd_project_list(args, settings) -> None:
    from fusion.store.labeling import open_store

    store = open_store(settings)
    infos = [store.project_info(name) for name in store.project_names()]
    lines = [f"{i['name']}: {i['items']} items, labels {', '.join(i['labels'])}, model "
             f"{i['active_model'] or 'zero-shot'}" for i in infos]
    _emit({"projects": infos}, args.json, "\n".join(lines) or "no projects yet")


def cmd_import(args, settings) -> int:
    from fusion.services.importing import import_path
    from fusion.store.labeling import open_store

    ocr = None
    if args.ocr:
        from fusion.imaging.ocr import read_text
        from fusion.ml.pipeline import get_engine

        gpu = get_engine(settings).device.startswith("cuda")
        ocr = lambda image: read_text(image, max_side=settings.ocr_max_side, gpu=gpu)  # noqa: E731
    report = import_path(open_store(settings), args.project, args.path, args.user, ocr=ocr, progress=_progress)
    for where, reason in report.problems:
        print(f"skipped {where}: {reason}", file=sys.stderr)
    _emit(report.to_dict(), args.json, f"imported {report.added} new items into {args.project} "
          f"({report.already} already there, {len(report.problems)} problems)")
    return 1 if report.problems else 0


def cmd_export(args, settings) -> None:
    from fusion.services.exporting import export_project
    from fusion.store.labeling import open_store

    data = export_project(open_store(settings), args.project, args.format, args.out, progress=_progress,
                          deidentify=args.deidentify)
    note = ""
    if data["deidentified"]:
        note = (f"; de-identified: text redacted, pages masked: {data['images_masked']}"
                + (f", left as scanned (PHI in the text, no OCR word boxes): {data['images_unmasked']}"
                   if data["images_unmasked"] else ""))
    _emit(data, args.json, f"exported {data['items']} items of {args.project} as {args.format} to {data['path']}{note}")


def cmd_label(args, settings) -> None:
    from fusion.store.labeling import open_store

    store = open_store(settings)
    item = store.item(args.project, args.item)
    expected = item.version if args.expect_version is None else args.expect_version
    item = store.set_label(args.project, item.id, args.label, args.user, expected)
    _emit({"item": item.id, "label": item.label, "status": item.status, "version": item.version}, args.json,
          f"item {item.id} ({item.filename}): {item.label}, {item.status}")


def cmd_history(args, settings) -> None:
    from fusion.store.labeling import open_store

    rows = open_store(settings).history(args.project, args.item)
    keys = ("at", "user", "action", "item_version", "old_label", "new_label", "old_status", "new_status",
            "old_caption", "new_caption", "old_text", "new_text", "model_version", "shown_label", "shown_confidence",
            "source")
    data = [{k: (getattr(r, k).isoformat() if k == "at" else getattr(r, k)) for k in keys} for r in rows]
    if settings.redact_text:
        from fusion.privacy.deidentify import redact

        data = [r | {k: r[k] and redact(r[k]) for k in ("old_caption", "new_caption", "old_text", "new_text")}
                for r in data]

    def line(r: dict) -> str:
        text = f"{r['at'][:19]}Z  {r['user']}  {r['action']}"
        if r["old_label"] != r["new_label"]:
            text += f"  label {r['old_label'] or '-'} -> {r['new_label'] or '-'}"
        if r["shown_label"] is not None and r["action"] != "predict":
            text += f"  (shown {r['shown_label']} {r['shown_confidence'] or 0:.0%} by {r['model_version']})"
        if r["action"] == "predict":
            text += f"  {r['shown_label']} {r['shown_confidence']:.0%} by {r['model_version']}"
        if r["new_caption"] is not None or r["old_caption"] is not None:
            text += f"  caption {r['new_caption']!r}"
        if r["new_text"] is not None:
            text += f"  page text {r['new_text'][:60]!r}" + ("…" if len(r["new_text"]) > 60 else "")
        return text + (f"  [{r['source']}]" if r["source"] else "")
    _emit({"history": data}, args.json, "\n".join(line(r) for r in data))


def _head_scores(by_head: dict) -> dict:
    """The headline numbers of each head (the full per-class scores are in `models --json`); the
    ECE with the items and occupied bins it rests on and whether they are enough (None: unknown)."""
    from fusion.ml.evaluation import ece_support

    return {h: {**{k: s[k] for k in ("accuracy", "macro_f1", "ece")}, **ece_support(s)} for h, s in by_head.items()}


def _train_config(args, settings):
    from fusion.ml.train import TrainConfig

    return TrainConfig(mode=args.mode, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       device=args.train_device or settings.device, l2sp=args.l2sp, lora=args.lora, strategy=args.strategy,
                       seed=args.seed, patience=args.patience)


def _queue(args, settings, store, kind: str, params: dict) -> None:
    """--queue: hand the work to the background worker instead of running it here."""
    from fusion.jobs.worker import queue_job

    job = queue_job(settings, store, args.project, kind, params, args.user)
    _emit({"job": job.id, "status": job.status}, args.json, f"queued job {job.id}; the worker runs it")


def cmd_train(args, settings) -> None:
    from dataclasses import asdict

    from fusion.ml import registry
    from fusion.store.labeling import open_store
    from fusion.ml.train import train_version

    store = open_store(settings)
    config = _train_config(args, settings)
    if args.queue:
        _queue(args, settings, store, "train", config.job_params(auto_promote=args.promote == "auto"))
        return

    def report(row: dict) -> None:
        if row["stage"] == "encoding":
            _progress("encoding", row["step"], row["steps"])
        elif row["stage"] == "epoch":
            _progress("epochs", row["epoch"], row["epochs"])

    version, metrics = train_version(settings, store, args.project, config, args.user, report=report)
    if version is None:
        return  # a torchrun rank > 0: rank 0 reports
    promoted = args.promote == "yes" or (args.promote == "auto" and registry.beats_active(metrics))
    if promoted:
        registry.promote(store, args.project, version, args.user)
    data = {"project": args.project, "version": version, "promoted": promoted, "params": asdict(config),
            "test": _head_scores(metrics["test"]), "zero_shot_test": _head_scores(metrics["zero_shot_test"]),
            "parent_test": metrics["parent_test"] and {"version": metrics["parent_test"]["version"],
                                                       **_head_scores({h: metrics["parent_test"][h] for h in ("fused", "image", "text")})},
            "counts": metrics["counts"], "epochs_run": metrics["epochs_run"], "seconds": metrics["seconds"],
            "history": [{"epoch": r["epoch"], "loss": r["loss"], "val_macro_f1": r["val"]["fused"]["macro_f1"]}
                        for r in metrics["history"]],
            "device": metrics["device"], "world_size": metrics["world_size"]}
    fused = metrics["test"]["fused"]
    _emit(data, args.json, f"{args.project} {version}: test accuracy {fused['accuracy']:.1%}, macro-F1 "
          f"{fused['macro_f1']:.3f} (zero-shot {metrics['zero_shot_test']['fused']['macro_f1']:.3f})"
          + ("; promoted" if promoted else ""))


def cmd_models(args, settings) -> None:
    from fusion.ml.registry import versions
    from fusion.store.labeling import open_store

    found = versions(open_store(settings), args.project)
    data = [{"version": v.version, "active": v.active, "parent": v.parent, "created_at": v.created_at,
             "created_by": v.created_by, "mode": v.params.get("mode"), "counts": v.metrics.get("counts"),
             "test": _head_scores(v.metrics["test"]) if args.brief or not args.json else v.metrics["test"]}
            for v in found]
    lines = [f"{'*' if v['active'] else ' '} {v['version']:>5}  {v['mode'] or '?':7}  fused acc "
             f"{v['test']['fused']['accuracy']:.1%}  macro-F1 {v['test']['fused']['macro_f1']:.3f}  "
             f"by {v['created_by']} at {v['created_at']:%Y-%m-%d %H:%M}" for v in data]
    _emit({"project": args.project, "versions": data}, args.json, "\n".join(lines) or "no trained versions yet")


def cmd_promote(args, settings) -> None:
    from fusion.ml.registry import promote, rollback
    from fusion.store.labeling import open_store

    store = open_store(settings)
    if args.command == "rollback":
        project = rollback(store, args.project, args.user, to=args.to)
    else:
        project = promote(store, args.project, args.version, args.user)
    _emit({"project": project.name, "active_model": project.active_model}, args.json,
          f"{project.name}: active model is now {project.active_model}")


def cmd_worker(args, settings) -> None:
    from fusion.jobs.worker import run_worker

    from fusion.core.errors import FusionError
    from fusion.jobs.queue import KINDS

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip()) or None
    if unknown := set(kinds or ()) - set(KINDS):
        raise FusionError(f"unknown job kind {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    ran = run_worker(settings, idle_exit_s=args.idle_exit, kinds=kinds)
    print(f"worker: ran {ran} jobs, idle for {args.idle_exit:g} s; exiting", flush=True)


def cmd_jobs(args, settings) -> None:
    from fusion.jobs.queue import Jobs
    from fusion.store.labeling import open_store

    jobs = Jobs(open_store(settings))
    if args.cancel is not None:
        jobs.cancel(args.cancel, args.user)
    if args.resume is not None:
        from fusion.jobs.worker import resume_job

        job = resume_job(settings, jobs.store, args.resume, args.user)
        print(f"queued job {job.id}, resuming job {args.resume}", file=sys.stderr)
    found = jobs.list(args.project or None)
    data = [{"id": j.id, "project": j.project, "kind": j.kind, "status": j.status, "created_by": j.created_by,
             "created_at": j.created_at, "progress": j.progress, "error": j.error, "result": j.result}
            for j in found]
    lines = [f"{j.id:>4}  {j.project}  {j.kind}  {j.status:9}  {j.created_at:%Y-%m-%d %H:%M}  "
             f"{(j.result or {}).get('version') or j.error or ''}" for j in found]
    _emit({"jobs": data}, args.json, "\n".join(lines) or "no jobs yet")


def cmd_evaluate(args, settings) -> None:
    from fusion.ml.evaluation import describe_ece
    from fusion.services.evaluate import score_version
    from fusion.store.labeling import open_store

    result = score_version(settings, open_store(settings), args.project, args.version, args.data, _progress)
    heads = [h for h in ("fused", "image", "text", "zero_shot") if h in result]
    lines = [f"{result['project']} {result['version'] or 'zero-shot'} on {result['data']} ({result['items']} items):"]
    lines += [f"  {h:9} accuracy {result[h]['accuracy']:.1%}  macro-F1 {result[h]['macro_f1']:.3f}  "
              f"{describe_ece(result[h])}" for h in heads]
    lines += [f"  skipped {p['where']}: {p['reason']}" for p in result["problems"]]
    _emit(result, args.json, "\n".join(lines))


def cmd_predict_folder(args, settings) -> None:
    from fusion.services.batch_predict import predict_folder
    from fusion.store.labeling import open_store

    result = predict_folder(settings, open_store(settings), args.project, args.folder, args.out, _progress)
    _emit(result, args.json, f"{result['images']} images predicted by {result['model_version']} "
          f"({result['failed']} unreadable) -> {result['out']}")


def cmd_prelabel(args, settings) -> None:
    from fusion.store.labeling import open_store

    store = open_store(settings)
    if args.queue:
        _queue(args, settings, store, "prelabel", {})
        return
    from fusion.services.prelabel import prelabel_project

    result = prelabel_project(settings, store, args.project,
                              report=lambda row: _progress("predicting", row["step"], row["steps"]))
    _emit(result, args.json, f"predicted {result['predicted']} undecided items of {args.project} with "
          f"{result['version']} ({result['read_by_ocr']} read by OCR first)")


def cmd_zero_shot(args, settings) -> None:
    from fusion.store.labeling import open_store

    store = open_store(settings)
    if args.queue and args.descriptions:
        from fusion.jobs.worker import describe_labels

        job = describe_labels(settings, store, args.project, _descriptions(args.descriptions), args.user)
        _emit({"job": job.id, "status": job.status}, args.json, f"queued job {job.id}; the worker runs it")
        return
    if args.descriptions:
        store.set_descriptions(args.project, _descriptions(args.descriptions))
    if args.queue:
        _queue(args, settings, store, "zero_shot", {})
        return
    from fusion.ml.zero_shot_measure import measure_zero_shot

    result = measure_zero_shot(settings, store, args.project, args.user,
                               report=lambda row: _progress("encoding", row["step"], row["steps"]))
    accuracy = result.get("accuracy")
    _emit(result, args.json, f"zero-shot on {result['items']} labeled items of {args.project}: " +
          (f"fused {accuracy['fused']:.3f}, image {accuracy['image']:.3f}, text {accuracy['text']:.3f} "
           f"(votes image {result['votes'][0]:.2f}, text {result['votes'][1]:.2f})" if accuracy else "no labeled items to measure on"))


def _new_password(args) -> str:
    """Typed twice at a terminal; otherwise the first line of stdin (for scripts)."""
    from fusion.core.errors import FusionError

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("the same password again: ") != password:
            raise FusionError("the two passwords differ; type the same one twice")
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise FusionError("no password: type it at the prompt, or pipe it in as one line on stdin")
    return password


def _account_dict(account) -> dict:
    return {"name": account.name, "role": account.role, "disabled": account.disabled, "created_at": account.created_at,
            "created_by": account.created_by, "last_sign_in_at": account.last_sign_in_at}


def cmd_users(args, settings) -> None:
    from fusion.services import accounts
    from fusion.store.labeling import open_store

    store = open_store(settings)
    if args.users_command == "list":
        found = accounts.list_users(store)
        lines = [f"{a.name}  {a.role}" + ("  (disabled)" if a.disabled else "") for a in found]
        _emit({"users": [_account_dict(a) for a in found]}, args.json, "\n".join(lines) or "no accounts yet")
        return
    if args.users_command == "add":
        account = accounts.add_user(store, args.name, _new_password(args), args.role, args.user)
    elif args.users_command == "set-role":
        account = accounts.set_role(store, args.name, args.role, args.user)
    elif args.users_command == "set-password":
        account = accounts.set_password(store, args.name, _new_password(args), args.user)
    else:
        account = accounts.set_disabled(store, args.name, args.users_command == "disable", args.user)
    _emit(_account_dict(account), args.json, f"{account.name}: {account.role}" +
          (", disabled" if account.disabled else ""))


def cmd_bench(args, settings) -> None:
    if args.what == "learning":
        from pathlib import Path

        from fusion.bench.learning import bench_learning
        from fusion.core.errors import FusionError

        if args.data is None:
            raise FusionError("bench learning needs --data FOLDER (with an index.jsonl of pages)")
        data = bench_learning(settings, Path(args.data), seeds=args.seeds,
                              descriptions=_descriptions(args.descriptions) or None, partial_epochs=args.partial_epochs)
    elif args.what == "trust":
        from pathlib import Path

        from fusion.bench.trust import bench_trust
        from fusion.core.settings import REPO_ROOT

        data = bench_trust(settings, Path(args.data) if args.data else REPO_ROOT.parent / "shared" / "eval" / "ocr")
    elif args.what == "ocr":
        from pathlib import Path

        from fusion.bench.ocr import bench_ocr
        from fusion.core.settings import REPO_ROOT

        data = bench_ocr(settings, Path(args.data) if args.data else REPO_ROOT.parent / "shared" / "eval" / "ocr",
                         limit=args.limit)
    else:
        from fusion.bench.deidentify import bench_deidentify
        from fusion.bench.evaluate import bench_evaluate
        from fusion.bench.predict import bench_predict
        from fusion.bench.store import bench_store
        from fusion.bench.train import bench_train

        benches = {"predict": bench_predict, "store": bench_store, "train": bench_train, "evaluate": bench_evaluate,
                   "deidentify": bench_deidentify}
        data = benches[args.what](settings)
    _emit(data, args.json, json.dumps(data, indent=2))


def build_parser() -> argparse.ArgumentParser:
    from fusion.store.schema import ROLES
    parser = argparse.ArgumentParser(prog="python -m fusion", description="FusionLab: image + text classification")
    parser.add_argument("--home", help="workspace folder (default: $FUSION_HOME or ./data)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ocr", help="read the text in an image")
    p.add_argument("image")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_ocr)

    p = sub.add_parser("predict", help="OCR, fuse and classify an image")
    p.add_argument("image")
    p.add_argument("--caption", default="", help="a caption or note to read with the page's text")
    p.add_argument("--project", default=None, help="project name (default: the demo project)")
    p.add_argument("--explain", action="store_true", help="add Grad-CAM peak and top words")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("demo", help="build the demo project and its baseline model if missing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_demo)

    user = getpass.getuser()
    p = sub.add_parser("project", help="create or list projects")
    project_sub = p.add_subparsers(dest="project_command", required=True)
    q = project_sub.add_parser("create", help="a new project with its label set")
    q.add_argument("project", metavar="NAME")
    q.add_argument("--labels", required=True, help="comma-separated label names")
    q.add_argument("--descriptions", help="a JSON {label: description} or lines 'label: description'")
    q.add_argument("--user", default=user)
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=cmd_project_create)
    q = project_sub.add_parser("list", help="the workspace's projects")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=cmd_project_list)

    p = sub.add_parser("import", help="import a folder (label/file.png or flat), a CSV, a JSONL or an HF dataset")
    p.add_argument("project", metavar="NAME")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--ocr", action="store_true", help="read each image's text now (slow on a CPU)")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_import)

    p = sub.add_parser("export", help="export a project's items, labels and captions")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--format", required=True, choices=["csv", "jsonl", "imagefolder", "hf"])
    p.add_argument("out", metavar="OUT", help="a new folder")
    p.add_argument("--deidentify", action=argparse.BooleanOptionalAction, default=None,
                   help="redact names, dates, phones, addresses and record numbers in captions, text and file "
                        "names, and black out those words on the pages (default: on when FUSION_DEIDENTIFY or "
                        "FUSION_DEMO_MODE is)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("label", help="set an item's label (recorded in its history)")
    p.add_argument("project", metavar="NAME")
    p.add_argument("item", metavar="ITEM", help="item id, SHA-256 prefix or file name")
    p.add_argument("label", metavar="LABEL")
    p.add_argument("--user", default=user)
    p.add_argument("--expect-version", type=int, help="refuse if the item changed since this version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_label)

    p = sub.add_parser("history", help="who changed an item, when, and what")
    p.add_argument("project", metavar="NAME")
    p.add_argument("item", metavar="ITEM", help="item id, SHA-256 prefix or file name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_history)

    p = sub.add_parser("train", help="train a new model version from the project's labeled items")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--mode", default="head", choices=["head", "partial", "full"],
                   help="head: frozen encoders, cached features (quick on a CPU); partial: top blocks of both "
                        "encoders too; full: everything")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", dest="train_device", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--l2sp", type=float, default=0.0, help="pull trained encoder weights toward the pretrained ones")
    p.add_argument("--lora", action="store_true", help="train the text encoder through LoRA adapters")
    p.add_argument("--strategy", choices=["concat", "gated", "cross_attention"], help="fusion strategy")
    p.add_argument("--patience", type=int, default=8, help="stop after this many epochs without a better val macro-F1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--promote", choices=["no", "auto", "yes"], default="no",
                   help="auto: make it active only if it beats the active version on the test split")
    p.add_argument("--queue", action="store_true", help="run it as a background job of the worker")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("models", help="a project's model versions and their test scores")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--brief", action="store_true", help="with --json: headline scores only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("promote", help="make a model version the active one")
    p.add_argument("project", metavar="NAME")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_promote)

    p = sub.add_parser("rollback", help="return to the previously active model version")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--to", metavar="VERSION", help="this version instead of the previous one")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_promote)

    p = sub.add_parser("worker", help="run queued background jobs (the app starts one when needed)")
    p.add_argument("--idle-exit", type=float, default=60.0, help="exit after this many seconds with no job")
    p.add_argument("--kinds", default="", metavar="K1,K2",
                   help="run only these job kinds (train, prelabel, zero_shot); default: all")
    p.add_argument("--device", default=argparse.SUPPRESS,
                   help="where this worker's models run: auto, cpu, cuda, cuda:N (default: FUSION_DEVICE)")
    p.set_defaults(run=cmd_worker)

    p = sub.add_parser("jobs", help="list background jobs; cancel or resume one")
    p.add_argument("--project", metavar="NAME", default="")
    p.add_argument("--cancel", type=int, metavar="ID")
    p.add_argument("--resume", type=int, metavar="ID", help="a failed or cancelled job, from its last checkpoint")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_jobs)

    p = sub.add_parser("evaluate", help="score a model version on the test split or a labeled CSV")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--version", help="default: the active version")
    p.add_argument("--data", metavar="CSV", help="image,label[,caption][,ocr_text]; default: the test split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict-folder", help="predict every image in a folder into a CSV")
    p.add_argument("project", metavar="NAME")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--out", required=True, metavar="CSV")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_predict_folder)

    p = sub.add_parser("prelabel", help="predict every undecided item with the active model (for the queue)")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--queue", action="store_true", help="run it as a background job of the worker")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_prelabel)

    p = sub.add_parser("zero-shot", help="measure the zero-shot model on the labeled items (and weigh its priors)")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--descriptions", help="new label descriptions first: JSON or 'label: description' lines")
    p.add_argument("--queue", action="store_true", help="run it as a background job of the worker")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_zero_shot)

    p = sub.add_parser("users", help="accounts for the app's sign-in (FUSION_AUTH=1): add, list, set-role, disable")
    users_sub = p.add_subparsers(dest="users_command", required=True)
    for name, text in (("add", "a new account; the password is prompted for, or read as one line from stdin"),
                       ("set-role", "change an account's role"),
                       ("set-password", "a new password (prompted for, or one line on stdin); open sessions end"),
                       ("disable", "the account can't sign in; its open sessions end"),
                       ("enable", "the account can sign in again"), ("list", "every account and its role")):
        q = users_sub.add_parser(name, help=text)
        if name != "list":
            q.add_argument("name", metavar="NAME")
        if name == "add":
            q.add_argument("--role", default="annotator", choices=ROLES)
        if name == "set-role":
            q.add_argument("role", metavar="ROLE", choices=ROLES)
        q.add_argument("--user", default=user, help="who makes the change (recorded)")
        q.add_argument("--json", action="store_true")
        q.set_defaults(run=cmd_users)

    p = sub.add_parser("bench", help="measure speed; prints JSON")
    p.add_argument("what", choices=["predict", "store", "train", "evaluate", "deidentify", "learning", "trust", "ocr"])
    p.add_argument("--data", help="learning, trust: a folder with index.jsonl (image, gt_text, doc_type a line); "
                                  "trust, ocr: default ../shared/eval/ocr")
    p.add_argument("--limit", type=int, help="ocr: only the first N pages")
    p.add_argument("--seeds", type=int, default=5, help="learning: seeded half/half splits")
    p.add_argument("--descriptions", help="learning: label descriptions (JSON or 'label: description' lines)")
    p.add_argument("--partial-epochs", type=int, default=0, help="learning: also train partial mode (seed 0) this long")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fusion.core.errors import FusionError
    from fusion.core.settings import load_settings

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(home=args.home, device=args.device)
        if getattr(args, "project", "") is None:
            args.project = settings.demo_project
        return args.run(args, settings) or 0
    except FusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

