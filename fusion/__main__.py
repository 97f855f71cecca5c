"""The command line: `python -m fusion COMMAND ...`. Thin: it calls what the pages call.

Errors caused by input (a bad file, a missing weight package, an unknown project) print one
line `error: ...` on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys


def _progress(stage: str, done: int, total: int) -> None:
    """A progress line on stderr: redrawn in a terminal, every 10% in a log."""
    if sys.stderr.isatty():
        print(f"\r{stage}: {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
    elif done == total or done * 10 // total != (done - 1) * 10 // total:
        print(f"{stage}: {done}/{total}", file=sys.stderr, flush=True)


def _emit(data: dict, as_json: bool, summary: str) -> None:
    print(json.dumps(data, indent=None if as_json else 2) if as_json else summary)


def cmd_ocr(args, settings) -> None:
    from .images import load_upload
    from .ocr import read_text

    result = read_text(load_upload(args.image, settings), max_side=settings.ocr_max_side)
    data = result.to_dict()
    _emit({k: data[k] for k in ("text", "words", "ms", "angle")}, args.json, result.text)


def cmd_predict(args, settings) -> None:
    from .demo import ensure_demo_project
    from .images import load_upload
    from .pipeline import get_engine
    from .project import load_project

    image = load_upload(args.image, settings)
    engine = get_engine(settings)  # before building the demo: a missing weight package fails fast
    if args.project == settings.demo_project:
        project = ensure_demo_project(settings, _progress)
    else:
        project = load_project(settings, args.project)
    prediction = engine.predict(image, project, caption=args.caption, with_explanation=args.explain)
    summary = f"{prediction.label} ({prediction.confidence:.1%}) by model {prediction.model_version}"
    _emit(prediction.to_dict(), args.json, summary)


def cmd_demo(args, settings) -> None:
    from .demo import ensure_demo_project

    project = ensure_demo_project(settings, _progress)
    metrics = json.loads((project.model_dir(project.active_model) / "metrics.json").read_text())
    data = {"project": project.name, "model_version": project.active_model,
            "test": metrics["test"], "zero_shot_test": metrics["zero_shot_test"], "counts": metrics["counts"]}
    acc = {h: f"{v['accuracy']:.1%}" for h, v in metrics["test"].items()}
    _emit(data, args.json, f"demo project ready at {project.directory}; test accuracy {acc}")


def cmd_bench(args, settings) -> None:
    from . import bench

    data = bench.run(args.what, settings)
    _emit(data, args.json, json.dumps(data, indent=2))


def build_parser() -> argparse.ArgumentParser:
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

    p = sub.add_parser("bench", help="measure speed; prints JSON")
    p.add_argument("what", choices=["predict"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import FusionError
    from .settings import load_settings

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(home=args.home, device=args.device)
        if getattr(args, "project", "") is None:
            args.project = settings.demo_project
        args.run(args, settings)
    except FusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
