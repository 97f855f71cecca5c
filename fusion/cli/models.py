"""Model versions: `train`, `models`, `promote`, `rollback`, `evaluate`, `prelabel`, `label-issues`,
`similar`, `zero-shot`."""
from __future__ import annotations

import getpass
import time

from fusion.cli.common import read_descriptions, emit, show_progress


def _train_config(args, settings):
    from fusion.ml.train import TrainConfig

    return TrainConfig(mode=args.mode, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       device=args.train_device or settings.device, l2sp=args.l2sp, lora=args.lora, strategy=args.strategy,
                       seed=args.seed, patience=args.patience, pseudo_labels=not args.labeled_only)


def _queue(args, settings, store, kind: str, params: dict) -> None:
    """--queue: hand the work to the background worker instead of running it here."""
    from fusion.jobs.worker import queue_job

    job = queue_job(settings, store, args.project, kind, params, args.user)
    emit({"job": job.id, "status": job.status}, args.json, f"queued job {job.id}; the worker runs it")


def cmd_train(args, settings) -> None:
    from dataclasses import asdict

    from fusion.jobs.worker import change_active_model
    from fusion.ml import registry
    from fusion.core.progress import Progress
    from fusion.ml.metrics import headlines
    from fusion.store.labeling import open_store
    from fusion.ml.train import train_version

    store = open_store(settings)
    config = _train_config(args, settings)
    if args.queue:
        _queue(args, settings, store, "train", config.job_params(auto_promote=args.promote == "auto"))
        return

    def report(p: Progress) -> None:
        if p.stage == "encoding":
            show_progress("encoding", p.step, p.steps)
        elif p.stage == "epoch":
            show_progress("epochs", p.epoch, p.epochs)

    version, metrics = train_version(settings, store, args.project, config, args.user, report=report)
    if version is None:
        return  # a torchrun rank > 0: rank 0 reports
    promoted = args.promote == "yes" or (args.promote == "auto" and registry.beats_active(metrics))
    if promoted:
        change_active_model(settings, store, args.project, args.user, version)
    data = {"project": args.project, "version": version, "promoted": promoted, "params": asdict(config),
            "test": headlines(metrics.test), "zero_shot_test": headlines(metrics.zero_shot_test),
            "parent_test": metrics.parent_test and {"version": metrics.parent_version,
                                                    **headlines(metrics.parent_test)},
            "counts": metrics.counts, "epochs_run": metrics.epochs_run, "seconds": metrics.seconds,
            "history": [{"epoch": r.epoch, "loss": r.loss, "val_macro_f1": r.val["fused"].macro_f1}
                        for r in metrics.history],
            "device": metrics.device, "world_size": metrics.world_size}
    fused = metrics.test["fused"]
    emit(data, args.json, f"{args.project} {version}: test accuracy {fused.accuracy:.1%}, macro-F1 "
          f"{fused.macro_f1:.3f} (zero-shot {metrics.zero_shot_test['fused'].macro_f1:.3f})"
          + ("; promoted" if promoted else ""))


def cmd_models(args, settings) -> None:
    from fusion.ml.metrics import headlines
    from fusion.ml.registry import versions
    from fusion.store.labeling import open_store

    found = versions(open_store(settings), args.project)
    data = [{"version": v.version, "active": v.active, "parent": v.parent, "created_at": v.created_at,
             "created_by": v.created_by, "mode": v.params.get("mode"), "counts": v.metrics.counts,
             "test": headlines(v.metrics.test) if args.brief or not args.json else v.metrics.test}
            for v in found]
    lines = [f"{'*' if v.active else ' '} {v.version:>5}  {v.params.get('mode') or '?':7}  fused acc "
             f"{v.score('fused', 'accuracy'):.1%}  macro-F1 {v.score('fused', 'macro_f1'):.3f}  "
             f"by {v.created_by} at {v.created_at:%Y-%m-%d %H:%M}" for v in found]
    emit({"project": args.project, "versions": data}, args.json, "\n".join(lines) or "no trained versions yet")


def cmd_promote(args, settings) -> None:
    from fusion.jobs.worker import change_active_model
    from fusion.store.labeling import open_store

    project = change_active_model(settings, open_store(settings), args.project, args.user,
                                  None if args.command == "rollback" else args.version,
                                  rollback_to=args.to if args.command == "rollback" else None)
    emit({"project": project.name, "active_model": project.active_model}, args.json,
          f"{project.name}: active model is now {project.active_model}")


def cmd_evaluate(args, settings) -> None:
    from fusion.services.evaluate import score_version
    from fusion.store.labeling import open_store

    result = score_version(settings, open_store(settings), args.project, args.version, args.data, show_progress)
    heads = [h for h in ("fused", "image", "text", "zero_shot") if h in result]
    lines = [f"{result['project']} {result['version'] or 'zero-shot'} on {result['data']} ({result['items']} items):"]
    lines += [f"  {h:9} accuracy {result[h].accuracy:.1%}  macro-F1 {result[h].macro_f1:.3f}  "
              f"{result[h].describe_ece()}" for h in heads]
    lines += [f"  skipped {p['where']}: {p['reason']}" for p in result["problems"]]
    emit(result, args.json, "\n".join(lines))


def cmd_prelabel(args, settings) -> None:
    from fusion.store.labeling import open_store

    store = open_store(settings)
    if args.queue:
        _queue(args, settings, store, "prelabel", {})
        return
    from fusion.services.prelabel import prelabel_project

    result = prelabel_project(settings, store, args.project,
                              report=lambda p: show_progress(p.stage, p.step, p.steps))
    emit(result, args.json, f"predicted {result['predicted']} undecided items of {args.project} with "
          f"{result['version']} ({result['read_by_ocr']} read by OCR first)")


def cmd_zero_shot(args, settings) -> None:
    from fusion.store.labeling import open_store

    store = open_store(settings)
    if args.queue and args.descriptions:
        from fusion.jobs.worker import describe_labels

        job = describe_labels(settings, store, args.project, read_descriptions(args.descriptions), args.user)
        emit({"job": job.id, "status": job.status}, args.json, f"queued job {job.id}; the worker runs it")
        return
    if args.descriptions:
        store.set_descriptions(args.project, read_descriptions(args.descriptions))
    if args.queue:
        _queue(args, settings, store, "zero_shot", {})
        return
    from fusion.ml.zero_shot_measure import measure_zero_shot

    result = measure_zero_shot(settings, store, args.project, args.user,
                               report=lambda p: show_progress(p.stage, p.step, p.steps))
    accuracy, adapted = result.get("accuracy"), result.get("accuracy_adapted")
    adaptation = result["adaptation"]
    emit(result, args.json, f"zero-shot on {result['items']} labeled items of {args.project}: " +
         (f"fused {accuracy['fused']:.3f}, image {accuracy['image']:.3f}, text {accuracy['text']:.3f}" +
          (f" (votes image {result['votes'][0]:.2f}, text {result['votes'][1]:.2f})" if "votes" in result else "")
          if accuracy else "no labeled items to measure on") +
         (f"\nadapted to {adaptation['pages']} pages" + (f": fused {adapted['fused']:.3f} on the labeled items" if adapted else "")
          if adaptation["adapted"] else f"\nnot adapted: {adaptation['why']}"))


def cmd_label_issues(args, settings) -> None:
    from fusion.ml.label_issues import find_label_issues
    from fusion.store.labeling import open_store

    store = open_store(settings)
    if args.queue:
        return _queue(args, settings, store, "label_issues", {})
    result = find_label_issues(settings, store, args.project, progress=show_progress)
    shown = dict(result, issues=result["issues"][:args.top])
    lines = [f"{i['item_id']:>7}  {i['label']} -> {i['suggested']}  quality {i['quality']:.2f}"
             for i in shown["issues"] if i["flagged"]]
    emit(shown, args.json, f"{result['flagged']} of {result['items']} labeled items of {args.project} are likely "
         f"mislabeled (out-of-fold, {result['rank_s']} s):\n" + "\n".join(lines))


def cmd_similar(args, settings) -> None:
    from fusion.ml.embeddings import compute_embeddings, load_embeddings, nearest
    from fusion.privacy.shown import Shown
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = store.project(args.project)
    item = store.item(args.project, args.item)
    embeddings = load_embeddings(project)
    if embeddings is None or embeddings.row_of(item.id) is None:    # first use, or an item added since
        embeddings = compute_embeddings(settings, store, args.project, progress=show_progress)
    started = time.perf_counter()
    found = nearest(embeddings, item.id, args.top)
    ms = (time.perf_counter() - started) * 1000
    labels = {row.id: row for row in store.items_by_id(args.project, [i for i, _ in found])}
    shown = Shown.under(settings)
    data = {"project": args.project, "item": item.id, "version": embeddings.version, "query_ms": round(ms, 2),
            "similar": [{"item_id": i, "filename": shown.filename(labels[i].filename), "label": labels[i].label,
                         "status": labels[i].status, "similarity": round(score, 4)} for i, score in found]}
    emit(data, args.json, f"most like {item.id} ({shown.filename(item.filename)}, {item.label or item.status}), "
                          f"by {embeddings.version}:\n"
         + "\n".join(f"{s['similarity']:.3f}  {s['item_id']:>7}  {s['filename']}  {s['label'] or s['status']}"
                     for s in data["similar"]))


def add_commands(sub) -> None:
    user = getpass.getuser()
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
    p.add_argument("--labeled-only", action="store_true",
                   help="learn from the labeled items alone, without the unlabeled pages the adapted zero-shot finds "
                        "likeliest to be each label")
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

    p = sub.add_parser("evaluate", help="score a model version on the test split or a labeled CSV")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--version", help="default: the active version")
    p.add_argument("--data", metavar="CSV", help="image,label[,caption][,ocr_text]; default: the test split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("prelabel", help="predict every undecided item with the active model (for the queue)")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--queue", action="store_true", help="run it as a background job of the worker")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_prelabel)

    p = sub.add_parser("label-issues", help="rank labeled items by how likely their label is wrong (confident learning)")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--top", type=int, default=50, help="list this many, most suspect first (all are saved)")
    p.add_argument("--queue", action="store_true", help="run it as a background job of the worker")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_label_issues)

    p = sub.add_parser("similar", help="the items most like one item, by fused embedding (\"more like this\")")
    p.add_argument("project", metavar="NAME")
    p.add_argument("item", metavar="ITEM", help="an item id or file name")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_similar)

    p = sub.add_parser("zero-shot", help="measure the zero-shot model on the labeled items (and weigh its priors)")
    p.add_argument("project", metavar="NAME")
    p.add_argument("--descriptions", help="new label descriptions first: JSON or 'label: description' lines")
    p.add_argument("--queue", action="store_true", help="run it as a background job of the worker")
    p.add_argument("--user", default=user)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_zero_shot)
