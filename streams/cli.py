"""The `stagecast` command: run the stack or one of its parts, submit and watch jobs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from streams.settings import STAGES, Settings

if TYPE_CHECKING:
    from api.client import ApiRequestError
    from streams.launcher import Launcher


# What to do about an API refusal, by error code, when its message alone does not say.
_HINTS = {
    "INVALID_JOB_ID": "check the job id ('stagecast submit' prints it)",
    "JOB_NOT_FOUND": "check the job id ('stagecast submit' prints it)",
    "INVALID_LAST_EVENT_ID": "pass --last-event-id a seq that an earlier watch printed",
    "DATABASE_UNAVAILABLE": "the stack's database is down; try again in a few seconds",
    "BROKER_UNAVAILABLE": "the stack's broker is down; try again in a few seconds",
    "JOB_FINISHED": "nothing to cancel ('stagecast watch' shows how it ended)",
}


class CliError(Exception):
    """A failure the user can act on: one line on stderr and no traceback, unless --debug."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        print("stagecast: invalid settings\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def _supervise(launcher: Launcher) -> None:
    """Until SIGINT/SIGTERM: restart any process of the stack that dies, and say so."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        for line in launcher.revive():
            print(line, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    from streams.launcher import Launcher, StackBusy

    launcher = Launcher(_settings())
    try:
        try:
            launcher.start()
        except StackBusy as busy:
            print(f"stagecast: {busy}", file=sys.stderr)
            return 1
        s = launcher.settings
        print("stagecast is up")
        print(f"  API        {launcher.api_url}  (GET /jobs, POST /jobs, /jobs/<id>/events)")
        print(
            f"  Kafka      {s.kafka_bootstrap_servers}"
            + ("  (embedded Tansu)" if launcher.broker else "")
        )
        print(f"  Postgres   {s.database_url}" + ("  (embedded)" if launcher.database else ""))
        print("  metrics    " + "  ".join(launcher.metrics_urls().values()))
        print(f"  logs       {launcher.state_dir}/*.log")
        print("Ctrl-C stops everything.", flush=True)
        _supervise(launcher)
    finally:
        print("stopping...", flush=True)
        launcher.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.app import run_worker

    run_worker(_settings(), dispatcher=not args.no_dispatcher)
    return 0


def cmd_projector(args: argparse.Namespace) -> int:
    from projections.service import run_projector_process

    asyncio.run(run_projector_process(_settings()))
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    from projections.webhooks.service import run_webhooks_process

    asyncio.run(run_webhooks_process(_settings()))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from api.app import run_api

    run_api(_settings())
    return 0


def _api_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.api:
        return str(args.api)
    from streams.launcher import running_stack

    info = running_stack(settings.state_dir.resolve())
    if info is not None:
        return str(info["api_url"])
    return f"http://{settings.api_host}:{settings.api_port}"


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo
    from streams.launcher import Launcher, StackBusy, running_stack

    settings = _settings()
    info = running_stack(settings.state_dir.resolve())
    if info is not None:
        print(f"Using the stack already running at {info['api_url']}")
        return 0 if asyncio.run(run_demo(str(info["api_url"]))) else 1
    # SIGTERM unwinds like Ctrl-C, so the launcher below stops everything it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("Starting the embedded stack (Tansu broker, PostgreSQL, workers, projector, API)...")
    launcher = Launcher(settings.model_copy(update={"api_port": 0}))
    try:
        try:
            launcher.start()
        except StackBusy as busy:
            print(f"stagecast: {busy}; is it still starting?", file=sys.stderr)
            return 1
        print(f"Stack is up; API at {launcher.api_url}")
        ok = asyncio.run(run_demo(launcher.api_url, launcher=launcher))
    finally:
        launcher.stop()
        print("Stack stopped.")
    return 0 if ok else 1


async def _watch(
    api_url: str, job_id: str, last_event_id: int | None, *, as_json: bool = False
) -> int:
    """Follow the job's feed to its end; 0 only when the job succeeded."""
    from api.client import StagecastClient
    from streams.watching import FeedView, LineView, LiveView, succeeded

    view: FeedView
    if as_json or not sys.stdout.isatty():
        view = LineView(sys.stdout, as_json=as_json)
    else:
        from rich.console import Console

        view = LiveView(Console())
    status = 1
    async with StagecastClient(api_url) as client:
        with view:
            async for event in client.events(job_id, last_event_id):
                view.feed(event)
                if succeeded(event):
                    status = 0
    return status


def _against_api(api_url: str, work: Coroutine[Any, Any, int]) -> int:
    """Run `work`, which talks to the API at `api_url`; what goes wrong becomes a CliError."""
    import httpx

    from api.client import ApiRequestError

    try:
        return asyncio.run(work)
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        raise CliError(
            f"no API at {api_url} — start one with 'stagecast up' or pass --api URL"
        ) from error
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        raise CliError(f"--api {api_url} is not an http:// or https:// URL", 2) from error
    except httpx.TransportError as error:
        raise CliError(
            f"lost the API at {api_url} ({type(error).__name__}) — check that the stack is "
            "still up and run the command again"
        ) from error
    except ApiRequestError as error:
        raise CliError(_refusal(error)) from error


def _refusal(error: ApiRequestError) -> str:
    """The API's error body in one line: status, code, message and what to do."""
    code = str(error.body.get("error_code"))
    message = " ".join(str(error.body.get("error", "")).split())
    hint = _HINTS.get(code)
    return f"the API answered {error.status} {code}: {message}" + (f" — {hint}" if hint else "")


def _read_model(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as error:
        reason = error.strerror or type(error).__name__
    except UnicodeDecodeError as error:
        reason = f"not UTF-8 text (byte {error.object[error.start]:#04x} at {error.start})"
    raise CliError(f"cannot read {path}: {reason} — pass the path of a .neural file", 2)


def cmd_submit(args: argparse.Namespace) -> int:
    from api.client import ApiRequestError, StagecastClient

    settings = _settings()
    api_url = _api_url(args, settings)
    dsl = _read_model(args.file)

    async def submit() -> int:
        async with StagecastClient(api_url) as client:
            try:
                accepted = await client.submit(
                    dsl,
                    stages=args.stages or (),
                    target=args.target,
                    idempotency_key=args.idempotency_key,
                )
            except ApiRequestError as error:
                # The refusal itself, as one line of JSON: scripts read its error_code.
                print(json.dumps(error.body), file=sys.stderr)
                return 1
        print(json.dumps(accepted, indent=2))
        if args.wait:
            return await _watch(api_url, accepted["job_id"], None)
        return 0

    return _against_api(api_url, submit())


def cmd_cancel(args: argparse.Namespace) -> int:
    from api.client import StagecastClient

    api_url = _api_url(args, _settings())

    async def cancel() -> int:
        async with StagecastClient(api_url) as client:
            answer = await client.cancel(args.job_id, args.reason or "")
        print(f"cancelling {answer['job_id']}; follow it with 'stagecast watch {answer['job_id']}'")
        return 0

    return _against_api(api_url, cancel())


def cmd_watch(args: argparse.Namespace) -> int:
    api_url = _api_url(args, _settings())
    return _against_api(
        api_url, _watch(api_url, args.job_id, args.last_event_id, as_json=args.json)
    )


def _servers(settings: Settings) -> Settings:
    """The settings with the broker and database of the running stack filled in where unset."""
    from streams.launcher import running_stack

    info = running_stack(settings.state_dir.resolve()) or {}
    updates = {
        name: info[name]
        for name in ("kafka_bootstrap_servers", "database_url")
        if not getattr(settings, name) and info.get(name)
    }
    return settings.model_copy(update=updates)


def _since(text: str) -> Any:
    from datetime import UTC, datetime

    if text == "earliest":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--from takes 'earliest' or an ISO 8601 time, not {text!r}", 2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_replay(args: argparse.Namespace) -> int:
    from projections.replay import check_schema, compare, replay, republish
    from schemas.codec import default_codec

    settings = _servers(_settings())
    if not settings.database_url or (
        args.source == "kafka" and not settings.kafka_bootstrap_servers
    ):
        raise CliError("no broker or database: set them, or start the stack with 'stagecast up'")
    if args.republish:
        return asyncio.run(_republish(settings, republish, args.force))
    if not args.into:
        raise CliError("replay needs --into SCHEMA (or --republish)", 2)
    try:
        schema = check_schema(args.into)
    except ValueError as error:
        raise CliError(str(error), 2) from None
    since = _since(args.since)

    async def run() -> int:
        try:
            done = await replay(settings, default_codec(), schema, source=args.source, since=since)
        except ValueError as error:
            raise CliError(str(error), 2) from None
        print(
            f"replayed {done.events} events from {args.source} into schema {schema} "
            f"in {done.seconds:.2f} s ({done.events / max(done.seconds, 1e-9):.0f} events/s)"
            + (f"; {done.skipped} skipped as undecodable or unstorable" if done.skipped else "")
        )
        if not args.compare:
            return 0
        diffs = await compare(settings.require_database(), schema)
        for diff in diffs:
            mark = "same" if diff.same else "DIFFERENT"
            print(
                f"  {diff.table:<14} live {diff.live_rows:>8}  replay {diff.replay_rows:>8}  "
                f"mismatched {diff.mismatched:>6}  {mark}"
            )
            for key, how in diff.examples:
                print(f"      {how}: {key}")
        same = all(diff.same for diff in diffs)
        print("no difference" if same else "the replay differs from the live projections")
        return 0 if same else 1

    return asyncio.run(run())


async def _republish(settings: Settings, republish: Any, force: bool) -> int:
    try:
        done = await republish(settings, force=force)
    except ValueError as error:
        raise CliError(str(error)) from None
    for topic, (held, sent) in done.topics.items():
        print(f"  {topic:<28} {held:>8} messages before, {sent:>8} archived events sent")
    print(f"republished {done.events} events from the archive in {done.seconds:.2f} s")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import uuid

    import asyncpg

    from projections.audit import audit_job, verify_archive
    from schemas.codec import default_codec

    url = _servers(_settings()).database_url
    if not url:
        raise CliError("no database: set DATABASE_URL, or start the stack with 'stagecast up'")

    async def audit() -> int:
        try:
            conn = await asyncpg.connect(url, timeout=10)
        except (OSError, asyncpg.PostgresError) as error:
            raise CliError(f"cannot reach the database: {error}") from None
        try:
            if args.what == "verify":
                report = await verify_archive(conn)
                return _print_archive(report, args.json)
            try:
                job_id = uuid.UUID(args.job_id)
            except ValueError:
                raise CliError(f"not a job id: {args.job_id!r}", exit_code=2) from None
            audited = await audit_job(conn, default_codec(), job_id)
        finally:
            await conn.close()
        if audited is None:
            raise CliError(f"job {job_id} has no archived events")
        if args.json:
            print(
                json.dumps(
                    {
                        "job_id": audited.job_id,
                        "timeline": audited.timeline,
                        "problems": audited.problems,
                    }
                )
            )
        else:
            print("\n".join(audited.timeline))
            for problem in audited.problems:
                print(f"PROBLEM: {problem}")
            print(
                "invariants hold" if not audited.problems else f"{len(audited.problems)} problem(s)"
            )
        return 1 if audited.problems else 0

    return asyncio.run(audit())


def _print_archive(report: Any, as_json: bool) -> int:
    if as_json:
        print(
            json.dumps(
                {
                    "intact": report.intact,
                    "rows": report.rows,
                    "head": report.head,
                    "broken_at": None if report.broken is None else report.broken.position,
                    "event_id": None if report.broken is None else report.broken.event_id,
                    "reason": None if report.broken is None else report.broken.reason,
                    "missing_tail": report.missing_tail,
                }
            )
        )
    elif report.broken is not None:
        print(f"archive BROKEN at {report.broken}")
    elif report.missing_tail is not None:
        print(
            f"archive BROKEN: {report.rows} rows hold together, but the feed's last event "
            f"(seq {report.missing_tail}) is not archived: its newest rows were removed"
        )
    else:
        print(f"archive intact: {report.rows} events, chain head {report.head}")
    return 0 if report.intact else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="stagecast", description=__doc__)
    top.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the whole stack (embedded servers unless configured)")
    worker = sub.add_parser("worker", help="run the dispatcher and the stage agents (faust)")
    worker.add_argument("--no-dispatcher", action="store_true", help="stage agents only")
    sub.add_parser("projector", help="run the projector")
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser("webhooks", help="deliver events to the webhook subscriptions")
    demo = sub.add_parser("demo", help="run the bundled examples end to end")
    demo.add_argument("--api", help="use the API at this URL")
    submit = sub.add_parser("submit", help="submit a .neural file")
    submit.add_argument("file")
    submit.add_argument("--stages", nargs="*", choices=STAGES, help="extra stages to run")
    submit.add_argument("--target", default="pytorch", choices=("pytorch", "tensorflow"))
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    submit.add_argument("--api", help="API base URL (default: the running stack)")
    cancel = sub.add_parser("cancel", help="stop a job (every worker hears it)")
    cancel.add_argument("job_id")
    cancel.add_argument("--reason", help="why, shown on the job's feed")
    cancel.add_argument("--api", help="API base URL (default: the running stack)")
    watch = sub.add_parser("watch", help="follow a job's events")
    watch.add_argument("job_id")
    watch.add_argument("--last-event-id", type=int)
    watch.add_argument(
        "--json", action="store_true", help="one JSON object per event per line (for scripts)"
    )
    watch.add_argument("--api", help="API base URL (default: the running stack)")
    replay = sub.add_parser(
        "replay", help="rebuild the projections into a schema of their own; --compare diffs them"
    )
    replay.add_argument("--into", help="the schema to write (never the live one)")
    replay.add_argument(
        "--from", dest="since", default="earliest", help="earliest, or an ISO 8601 event time"
    )
    replay.add_argument("--source", choices=("kafka", "archive"), default="kafka")
    replay.add_argument(
        "--compare", action="store_true", help="diff every table with the live one; exit 1 if any"
    )
    replay.add_argument(
        "--republish",
        action="store_true",
        help="produce the archive back onto the topics (after a broker lost them)",
    )
    replay.add_argument(
        "--force", action="store_true", help="republish even when nothing seems lost"
    )
    audit = sub.add_parser("audit", help="check the event archive's hash chain, or one job")
    checks = audit.add_subparsers(dest="what", required=True)
    verify = checks.add_parser("verify", help="walk the archive's hash chain; exit 1 if broken")
    verify.add_argument("--json", action="store_true", help="the report as one JSON object")
    job = checks.add_parser("job", help="a job's timeline and invariants; exit 1 if broken")
    job.add_argument("job_id")
    job.add_argument("--json", action="store_true", help="the report as one JSON object")
    return top


COMMANDS = {
    "up": cmd_up,
    "worker": cmd_worker,
    "projector": cmd_projector,
    "api": cmd_api,
    "webhooks": cmd_webhooks,
    "demo": cmd_demo,
    "submit": cmd_submit,
    "watch": cmd_watch,
    "cancel": cmd_cancel,
    "audit": cmd_audit,
    "replay": cmd_replay,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except CliError as error:
        if args.debug:
            raise
        print(f"stagecast: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
