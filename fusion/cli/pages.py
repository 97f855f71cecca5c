"""Reading pages: `ocr`, `predict`, `predict-folder`."""
from __future__ import annotations

from fusion.cli.common import emit, show_progress


def cmd_ocr(args, settings) -> None:
    from fusion.imaging.images import load_upload
    from fusion.imaging.ocr import read_text
    from fusion.privacy.shown import Shown

    result = read_text(load_upload(args.image, settings), max_side=settings.ocr_max_side, cache_dir=settings.ocr_cache_dir,
                       gpu=settings.resolved_device().startswith("cuda"))
    data = Shown.under(settings).reading(result)   # FUSION_DEIDENTIFY / FUSION_DEMO_MODE: redacted
    emit({k: data[k] for k in ("text", "words", "ms", "angle")}, args.json, data["text"])


def cmd_predict(args, settings) -> None:
    from fusion.demo.build import ensure_demo_project
    from fusion.imaging.images import load_upload
    from fusion.ml.pipeline import get_engine
    from fusion.privacy.shown import Shown
    from fusion.store.labeling import open_store

    image = load_upload(args.image, settings)
    engine = get_engine(settings)  # before building the demo: a missing weight package fails fast
    if args.project == settings.demo_project:
        project = ensure_demo_project(settings, show_progress)
    else:
        project = open_store(settings).project(args.project)
    prediction = engine.predict(image, project, caption=args.caption, with_explanation=args.explain)
    summary = f"{prediction.label} ({prediction.confidence:.1%}) by model {prediction.model_version}"
    data = Shown.under(settings).prediction(prediction)
    emit(data, args.json, summary)


def cmd_predict_folder(args, settings) -> None:
    from fusion.services.batch_predict import predict_folder
    from fusion.store.labeling import open_store

    result = predict_folder(settings, open_store(settings), args.project, args.folder, args.out, show_progress)
    emit(result, args.json, f"{result['images']} images predicted by {result['model_version']} "
          f"({result['failed']} unreadable) -> {result['out']}")


def add_commands(sub) -> None:
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

    p = sub.add_parser("predict-folder", help="predict every image in a folder into a CSV")
    p.add_argument("project", metavar="NAME")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--out", required=True, metavar="CSV")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_predict_folder)
