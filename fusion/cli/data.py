"""The labeling data: `demo`, `project`, `import`, `export`, `label`, `history`."""
from __future__ import annotations

import argparse
import getpass
import sys

from fusion.cli.common import read_descriptions, emit, show_progress


def cmd_demo(args, settings) -> None:
    from fusion.demo.build import ensure_demo_project
    from fusion.ml.metrics import headlines
    from fusion.ml.registry import get_version
    from fusion.store.labeling import open_store

    project = ensure_demo_project(settings, show_progress)
    metrics = get_version(open_store(settings), project.name, project.active_model).metrics
    data = {"project": project.name, "model_version": project.active_model, "counts": metrics.counts,
            "test": headlines(metrics.test), "zero_shot_test": headlines(metrics.zero_shot_test)}
    acc = {h: f"{s.accuracy:.1%}" for h, s in metrics.test.items()}
    emit(data, args.json, f"demo project ready at {project.directory}; test accuracy {acc}")


def cmd_project_create(args, settings) -> None:
    from fusion.core.errors import FusionError
    from fusion.store.labeling import open_store

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    descriptions = read_descriptions(args.descriptions)
    unknown = set(descriptions) - set(labels)
    if unknown:
        raise FusionError(f"descriptions for labels not in --labels: {sorted(unknown)}")
    project = open_store(settings).create_project(args.project, {lab: descriptions.get(lab, "") for lab in labels},
                                                  user=args.user)
    emit({"project": project.name, "labels": project.labels}, args.json,
          f"created project {project.name} with labels {', '.join(project.labels)}")


def cmd_project_list(args, settings) -> None:
    from fusion.store.labeling import open_store

    store = open_store(settings)
    infos = [store.project_info(name) for name in store.project_names()]
    lines = [f"{i['name']}: {i['items']} items, labels {', '.join(i['labels'])}, model "
             f"{i['active_model'] or 'zero-shot'}" for i in infos]
    emit({"projects": infos}, args.json, "\n".join(lines) or "no projects yet")


def cmd_import(args, settings) -> int:
    from fusion.services.importing import import_path
    from fusion.store.labeling import open_store

    ocr = None
    if args.ocr:
        from fusion.imaging.ocr import read_text
        from fusion.ml.pipeline import get_engine

        gpu = get_engine(settings).device.startswith("cuda")
        ocr = lambda image: read_text(image, max_side=settings.ocr_max_side, gpu=gpu)  # noqa: E731
    report = import_path(open_store(settings), args.project, args.path, args.user, ocr=ocr, progress=show_progress)
    for where, reason in report.problems:
        print(f"skipped {where}: {reason}", file=sys.stderr)
    emit(report.to_dict(), args.json, f"imported {report.added} new items into {args.project} "
          f"({report.already} already there, {len(report.problems)} problems)")
    return 1 if report.problems else 0


def cmd_export(args, settings) -> None:
    from fusion.services.exporting import export_project
    from fusion.store.labeling import open_store

    data = export_project(open_store(settings), args.project, args.format, args.out, progress=show_progress,
                          deidentify=args.deidentify)
    note = ""
    if data["deidentified"]:
        note = (f"; de-identified: text redacted, pages with PHI blacked out: {data['images_masked']} "
                f"({data['images_read_at_export']} without stored word boxes read by OCR for it)")
    emit(data, args.json, f"exported {data['items']} items of {args.project} as {args.format} to {data['path']}{note}")


def cmd_label(args, settings) -> None:
    from fusion.privacy.shown import Shown
    from fusion.store.labeling import open_store

    store = open_store(settings)
    item = store.item(args.project, args.item)
    expected = item.version if args.expect_version is None else args.expect_version
    item = store.set_label(args.project, item.id, args.label, args.user, expected)
    emit({"item": item.id, "label": item.label, "status": item.status, "version": item.version}, args.json,
          f"item {item.id} ({Shown.under(settings).filename(item.filename)}): {item.label}, {item.status}")


def cmd_history(args, settings) -> None:
    from fusion.privacy.shown import Shown
    from fusion.store.labeling import open_store

    rows = open_store(settings).history(args.project, args.item)
    keys = ("at", "user", "action", "item_version", "old_label", "new_label", "old_status", "new_status",
            "old_caption", "new_caption", "old_text", "new_text", "model_version", "shown_label", "shown_confidence",
            "source")
    shown = Shown.under(settings)
    data = [{k: (getattr(r, k).isoformat() if k == "at" else getattr(r, k)) for k in keys}
            | shown.history(r) for r in rows]

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
    emit({"history": data}, args.json, "\n".join(line(r) for r in data))


def add_commands(sub) -> None:
    user = getpass.getuser()
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
