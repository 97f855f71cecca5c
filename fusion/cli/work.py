"""Background work: `worker`, `jobs`."""
from __future__ import annotations

import argparse
import getpass
import sys

from fusion.cli.common import emit


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
    emit({"jobs": data}, args.json, "\n".join(lines) or "no jobs yet")


def add_commands(sub) -> None:
    user = getpass.getuser()
    p = sub.add_parser("worker", help="run queued background jobs (the app starts one when needed)")
    p.add_argument("--idle-exit", type=float, default=60.0, help="exit after this many seconds with no job")
    p.add_argument("--kinds", default="", metavar="K1,K2",
                   help="run only these job kinds (train, prelabel, zero_shot, label_issues, embed, import, export, "
                        "demo); default: all")
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
