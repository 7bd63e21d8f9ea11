"""``python -m pipeline COMMAND`` — a stable contract for scripts (DESIGN §6).

Exit 0 on success, 2 on bad input (one line on stderr starting ``error:``, nothing written), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

import db.queries as q
from db.session import Database, downgrade, downgrade_losses, is_downgrade, migrate
from pipeline.core.config import Settings, get_settings
from pipeline.core.domain import TaskStatus
from pipeline.core.errors import AccessDenied, ConflictError, NotFoundError, PipelineError, ValidationError
from pipeline.core.usage import parse_budget
from pipeline.outputs.exports import FORMATS, export_task
from pipeline.storage import Storage, open_storage
from pipeline.submit.accounts import create_user, validate_email, validate_password
from pipeline.submit.connectivity import check_providers
from pipeline.submit.settings import (
    TASK_SETTING_KEYS,
    TaskSettings,
    get_setting_value,
    parse_task_settings,
    set_setting_value,
)
from pipeline.submit.submission import build_snapshot, submit_task, validate_spec
from pipeline.submit.task_control import (
    HELD_EXPLANATION,
    cancel_task,
    delete_task,
    rerun_task,
    resume_task,
    retry_task,
    task_status,
)
from pipeline.submit.usage import get_price, is_price_key, set_price
from pipeline.worker.cleanups import run_storage_cleanups
from pipeline.worker.executor import Worker

BAD_INPUT = (ValidationError, NotFoundError, ConflictError, AccessDenied)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise SystemExit(_fail(2, message))


def _fail(code: int, message: str) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipeline", description="Avatar Data Generator command line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("migrate", help="alembic upgrade head on DATABASE_URL (or up or down to --revision)")
    p.add_argument("--revision", default="head",
                   help="a revision id, head or base; below the current one is a downgrade")
    p.add_argument("--yes", action="store_true", help="downgrade even though it drops stored data")

    p = sub.add_parser("create-user", help="create a user (password from --password or one line of stdin)")
    p.add_argument("email")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--password")

    p = sub.add_parser("submit", help="validate and queue a task; prints its task_id")
    p.add_argument("--user", required=True, help="e-mail of the owner")
    p.add_argument("--description", required=True)
    p.add_argument("--language", required=True)
    p.add_argument("--count", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--seed")
    p.add_argument("--targets", metavar="FILE.json",
                   help="demographic targets: gender/ethnicity shares, age range or bands, locales")
    p.add_argument("--budget", metavar="DOLLARS",
                   help="the most the task may spend on provider calls at the configured prices, e.g. 12.50: the "
                        "call that would go over it is not made and the task ends partial")
    p.add_argument("--config", metavar="FILE.json",
                   help="this task's own settings as a JSON object, e.g. {\"crop_white_borders\": false}; keys: "
                        + ", ".join(TASK_SETTING_KEYS) + " (the global settings are the defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="task_settings",
                   help="one of this task's settings (repeatable; over --config), e.g. randomize_image_style=true")

    p = sub.add_parser("work", help="run an executor")
    p.add_argument("--until-idle", action="store_true")
    p.add_argument("--worker-id")

    p = sub.add_parser("status", help="a task's status")
    p.add_argument("task_id")
    p.add_argument("--json", action="store_true")

    for name in ("cancel", "delete"):
        sub.add_parser(name, help=f"{name} a task").add_argument("task_id")
    p = sub.add_parser("retry", help="re-run what failed in a partial, failed or cancelled task")
    p.add_argument("task_id")
    p.add_argument("--budget", metavar="DOLLARS",
                   help="a new budget for the task, more than it has spent (a task stopped at its budget goes on "
                        "with a higher one)")
    sub.add_parser("resume", help="resume a task held at upgrade (calls the configured providers: may cost money)"
                   ).add_argument("task_id")

    p = sub.add_parser("rerun", help="queue a copy of a task")
    p.add_argument("task_id")
    p.add_argument("--new-seed", action="store_true")

    p = sub.add_parser("export", help="write a task's dataset")
    p.add_argument("task_id")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True)

    p = sub.add_parser("settings", help="read or change a global setting, or a provider's price "
                                        "(price:<provider>:<model>, e.g. price:openai:gpt-image-1 per_image=0.04)")
    ssub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ssub.add_parser("get").add_argument("key")
    s = ssub.add_parser("set")
    s.add_argument("key")
    s.add_argument("value")

    sub.add_parser("check-providers", help="report whether each configured provider is reachable")
    p = sub.add_parser("cleanups", help="list the stored objects a delete left to remove (a worker retries them)")
    p.add_argument("--run", action="store_true", help="retry the due ones now")
    return parser


def _open(settings: Settings) -> Database:
    migrate(settings.database_url)
    return Database(settings.database_url)


def _storage(settings: Settings) -> Storage:
    return open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url)


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(
        level=logging.INFO if args.command == "work" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = get_settings()
    handler = COMMANDS[args.command]
    return handler(args, settings)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    url, revision = settings.database_url, args.revision
    try:
        going_down = is_downgrade(url, revision)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if not going_down:
        migrate(url, revision)
        return 0
    losses = downgrade_losses(url, revision)
    if losses and not args.yes:
        raise ConflictError(f"downgrading to {revision} drops stored data: {'; '.join(losses)}. Back it up, then run "
                            f"again with --yes to drop it")
    downgrade(url, revision)
    if losses:
        print(f"downgraded to {revision}; dropped: {'; '.join(losses)}")
    return 0


def cmd_create_user(args: argparse.Namespace, settings: Settings) -> int:
    email = validate_email(args.email)
    password = args.password if args.password is not None else sys.stdin.readline().rstrip("\r\n")
    validate_password(password)
    db = _open(settings)
    create_user(db, email, password, admin=args.admin)
    return 0


MAX_CONFIG_BYTES = 1_000_000  # four bio prompts at their limit, escaped, fit many times over


def _task_settings(args: argparse.Namespace) -> TaskSettings:
    """The task's own settings: the ``--config`` file's object with each ``--set KEY=VALUE`` over it, checked."""
    values: dict[str, object] = {}
    if args.config:
        path = Path(args.config)
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ValidationError(f"--config {args.config} is over {MAX_CONFIG_BYTES:,} bytes")
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"cannot read --config {args.config}: {exc.__class__.__name__}") from None
        except json.JSONDecodeError as exc:
            raise ValidationError(f"--config {args.config} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        except RecursionError:
            raise ValidationError(f"--config {args.config} is nested too deeply") from None
        if not isinstance(loaded, dict):
            raise ValidationError(f"--config {args.config} must hold a JSON object of setting: value, "
                                  f"not a {type(loaded).__name__}")
        values.update(loaded)
    for item in args.task_settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--set takes KEY=VALUE, got {item[:60]!r}")
        values[key.strip()] = value
    return parse_task_settings(values)


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    budget = parse_budget(args.budget)  # before anything is opened or written
    own = _task_settings(args)  # before anything is opened or written
    db = _open(settings)
    with db.session() as session:
        user = q.get_user_by_email(session, args.user)
    if user is None or not user.is_active:
        raise ValidationError(f"no active user {args.user!r}: create one with create-user")
    targets = None
    if args.targets:
        try:
            targets = Path(args.targets).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"cannot read --targets {args.targets}: {exc.__class__.__name__}") from None
    spec = validate_spec(
        user_id=user.id, description=args.description, language=args.language,
        count=args.count, images_per_persona=args.images, seed=args.seed, targets=targets,
    )
    print(submit_task(db, spec, build_snapshot(db, settings, own), budget=budget))
    return 0


def cmd_work(args: argparse.Namespace, settings: Settings) -> int:
    db = _open(settings)
    worker = Worker(db, _storage(settings), settings, worker_id=args.worker_id)

    def _graceful(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: finishing the current unit, then stopping", signum)
        # Not worker.stop() here: the handler runs in the main thread, which may be inside its poll's
        # Event.wait holding that event's lock, and stop() sets the event: it would wait for itself forever.
        threading.Thread(target=worker.stop, name="stop", daemon=True).start()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    worker.run(until_idle=args.until_idle)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    report = task_status(_open(settings), args.task_id)
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
    else:
        print(f"{report.task_id}  {report.status}  personas {report.personas_done}/{report.number_to_generate}"
              f"  images {report.images_done}/{report.number_to_generate * report.images_per_persona}"
              f"  failed {report.personas_failed}")
        if report.status == TaskStatus.HELD.value:
            print(f"held: {HELD_EXPLANATION}. `python -m pipeline resume {report.task_id}` resumes it, "
                  f"`python -m pipeline cancel {report.task_id}` cancels it.")
        if report.error_log:
            print(report.error_log)
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    print(cancel_task(_open(settings), args.task_id))
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    budget = parse_budget(args.budget)  # before anything is opened or written
    print(f"{retry_task(_open(settings), args.task_id, budget=budget)} persona(s) queued again")
    return 0


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    print(resume_task(_open(settings), settings, args.task_id))
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    removed = delete_task(_open(settings), _storage(settings), args.task_id)
    print(f"deleted {args.task_id} and {removed} stored object(s)")
    return 0


def cmd_rerun(args: argparse.Namespace, settings: Settings) -> int:
    db = _open(settings)
    with db.session() as session:
        task = q.get_task(session, args.task_id)
        owner = q.get_user(session, task.user_id) if task else None
    if task is None or owner is None:
        raise NotFoundError(f"no task {args.task_id!r}")
    print(rerun_task(db, args.task_id, owner, same_seed=not args.new_seed))
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    out = Path(args.out)
    if out.exists() and out.is_dir() and args.format != "hf":
        raise ValidationError(f"--out {out} is a folder: give a file path")
    export_task(_open(settings), _storage(settings), args.task_id, args.format, out)
    return 0


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    db = _open(settings)
    if is_price_key(args.key):
        if args.action == "get":
            print(get_price(db, args.key))
        else:
            set_price(db, args.key, args.value, actor=None)
        return 0
    if args.action == "get":
        print(get_setting_value(db, args.key))
    else:
        set_setting_value(db, args.key, args.value, actor=None)
    return 0


def cmd_check_providers(args: argparse.Namespace, settings: Settings) -> int:
    results = check_providers(settings)
    for check in results:
        print(f"{'ok ' if check.ok else 'FAIL'}  {check.kind:<8} {check.name:<10} {check.detail}")
    return 0 if all(c.ok for c in results) else 1


def cmd_cleanups(args: argparse.Namespace, settings: Settings) -> int:
    db = _open(settings)
    if args.run:
        print(f"{run_storage_cleanups(db, _storage(settings))} cleanup(s) done")
    with db.session() as session:
        pending = q.list_storage_cleanups(session)
    for c in pending:
        print(f"{c.prefix}  {c.reason}  since {c.created_at:%Y-%m-%d %H:%M}  attempts {c.attempts}  "
              f"next {c.next_attempt_at:%Y-%m-%d %H:%M}  {c.last_error or ''}".rstrip())
    print(f"{len(pending)} storage cleanup(s) pending")
    return 0


COMMANDS = {
    "migrate": cmd_migrate,
    "create-user": cmd_create_user,
    "submit": cmd_submit,
    "work": cmd_work,
    "status": cmd_status,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "resume": cmd_resume,
    "delete": cmd_delete,
    "rerun": cmd_rerun,
    "export": cmd_export,
    "settings": cmd_settings,
    "check-providers": cmd_check_providers,
    "cleanups": cmd_cleanups,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else _fail(2, exc.code)
    except BAD_INPUT as exc:
        return _fail(2, str(exc))
    except PipelineError as exc:
        return _fail(1, str(exc))
    except KeyboardInterrupt:
        return _fail(1, "interrupted")
    except Exception as exc:  # the CLI's last line of defence: one line, no traceback spam, exit 1
        logging.getLogger(__name__).debug("unexpected failure", exc_info=True)
        return _fail(1, f"{type(exc).__name__}: {str(exc)[:300]}")
