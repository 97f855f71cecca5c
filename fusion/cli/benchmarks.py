"""`bench WHAT`: measurements, printed as JSON."""
from __future__ import annotations

import json

from fusion.cli.common import read_descriptions, emit


def cmd_bench(args, settings) -> None:
    if args.what == "learning":
        from pathlib import Path

        from fusion.bench.learning import bench_learning
        from fusion.core.errors import FusionError

        if args.data is None:
            raise FusionError("bench learning needs --data FOLDER (with an index.jsonl of pages)")
        data = bench_learning(settings, Path(args.data), seeds=args.seeds,
                              descriptions=read_descriptions(args.descriptions) or None, partial_epochs=args.partial_epochs)
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
        from fusion.bench.label_issues import bench_label_issues
        from fusion.bench.predict import bench_predict
        from fusion.bench.similar import bench_similar
        from fusion.bench.store import bench_store
        from fusion.bench.train import bench_train

        benches = {"predict": bench_predict, "store": bench_store, "train": bench_train, "evaluate": bench_evaluate,
                   "deidentify": bench_deidentify, "label-issues": bench_label_issues,
                   "similar": bench_similar}
        data = benches[args.what](settings)
    emit(data, args.json, json.dumps(data, indent=2))


def add_commands(sub) -> None:
    p = sub.add_parser("bench", help="measure speed; prints JSON")
    p.add_argument("what", choices=["predict", "store", "train", "evaluate", "deidentify", "learning", "trust", "ocr",
                                    "label-issues", "similar"])
    p.add_argument("--data", help="learning, trust: a folder with index.jsonl (image, gt_text, doc_type a line); "
                                  "trust, ocr: default ../shared/eval/ocr")
    p.add_argument("--limit", type=int, help="ocr: only the first N pages")
    p.add_argument("--seeds", type=int, default=5, help="learning: seeded half/half splits")
    p.add_argument("--descriptions", help="learning: label descriptions (JSON or 'label: description' lines)")
    p.add_argument("--partial-epochs", type=int, default=0, help="learning: also train partial mode (seed 0) this long")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_bench)
