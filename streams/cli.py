"""The `stagecast` command: run the stack or one of its parts, submit and watch jobs.

Every failure is one line on stderr, `error: CODE: message — what to do`, and an exit code of
its kind (the EXIT_ constants); `--debug` shows the traceback instead. Commands that print results
take `--json`: one JSON document, or one per line for a feed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from streams.settings import STAGES, Settings

if TYPE_CHECKING:
    from api.client import ApiRequestError
    from streams.launcher import Launcher
    from streams.watching import FeedItem

# Exit codes, one per kind of failure, so a script can tell them apart (README "CLI").
EXIT_JOB_FAILED = 1  # the job ended other than SUCCEEDED; an audit or a replay found a difference
EXIT_USAGE = 2  # bad arguments or settings, a file that cannot be read, a URL that is not one
EXIT_UNREACHABLE = 3  # nothing answers at the API's (or the database's) address, or it went away
EXIT_REFUSED = 4  # refused: by the API (4xx but 404), or by stagecast (a second `up`, ...)
EXIT_NOT_FOUND = 5  # the API knows no such job (404)
EXIT_UNAVAILABLE = 6  # the API answered 5xx: its database or broker is down; try again
EXIT_TIMEOUT = 7  # --timeout passed before the job ended
EXIT_INTERNAL = 70  # a bug of stagecast's own (sysexits' EX_SOFTWARE); --debug shows it
EXIT_INTERRUPTED = 130  # Ctrl-C


# What to do about an API refusal, by error code, when its message alone does not say.
_HINTS = {
    "INVALID_JOB_ID": "check the job id ('stagecast submit' prints it)",
    "JOB_NOT_FOUND": "check the job id ('stagecast submit' prints it)",
    "INVALID_LAST_EVENT_ID": "pass --last-event-id a seq that an earlier watch printed",
    "DATABASE_UNAVAILABLE": "the stack's database is down; try again in a few seconds",
    "BROKER_UNAVAILABLE": "the stack's broker is down; try again in a few seconds",
    "JOB_FINISHED": "nothing to cancel ('stagecast watch' shows how it ended)",
    "API_KEY_MISSING": "set STAGECAST_API_KEY to a key from 'stagecast keys create'",
    "API_KEY_INVALID": "check STAGECAST_API_KEY ('stagecast keys list' shows the known keys)",
    "API_KEY_REVOKED": "this key was revoked; create another with 'stagecast keys create'",
    "SCOPE_MISSING": "use a key with that scope ('stagecast keys create --scopes ...')",
    "RATE_LIMITED": "wait the Retry-After seconds, or give the key a higher --rate",
}


class CliError(Exception):
    """A failure the user can act on: one line on stderr and no traceback, unless --debug."""

    def __init__(
        self, code: str, message: str, exit_code: int = EXIT_JOB_FAILED, hint: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.hint = hint

    def line(self) -> str:
        """`error: CODE: message — hint`, on one line whatever the message held."""
        text = f"error: {self.code}: {' '.join(self.message.split())}"
        return text + (f" — {self.hint}" if self.hint else "")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors reported like every other failure: in one line."""

    def error(self, message: str) -> NoReturn:
        raise CliError("INVALID_ARGUMENT", message, EXIT_USAGE, f"see '{self.prog} --help'")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise CliError(
            "INVALID_SETTINGS",
            f"invalid settings: {problems}",
            EXIT_USAGE,
            "fix the environment variable (STAGECAST_<NAME>) or .env",
        ) from None


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

    settings = _settings()
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    problem = settings.exposure_problem()
    if problem is not None:
        raise CliError("OPEN_MODE_EXPOSED", problem, EXIT_USAGE)
    launcher = Launcher(settings)
    try:
        try:
            launcher.start()
        except StackBusy as busy:
            raise CliError(
                "STACK_BUSY", str(busy), EXIT_REFUSED, "stop it, or set STAGECAST_STATE_DIR"
            ) from None
        if args.json:
            print(json.dumps(launcher.stack_info()), flush=True)
            _supervise(launcher)
            return 0
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
        print("stopping...", file=sys.stderr if args.json else sys.stdout, flush=True)
        launcher.stop()
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Create the missing topics and apply the migrations, as `stagecast up` does first."""
    from projections.migrate import migrate
    from streams.topics import ensure_topics, topic_partitions

    settings = _settings()
    if not settings.kafka_bootstrap_servers or not settings.database_url:
        raise CliError(
            "NO_SERVERS",
            "prepare needs KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL",
            EXIT_USAGE,
            "set both ('stagecast up' prepares its own servers)",
        )

    async def prepare() -> list[str]:
        created = await ensure_topics(settings)
        await migrate(settings.require_database())
        return created

    created = asyncio.run(prepare())
    partitions = topic_partitions(settings)
    if args.json:
        print(json.dumps({"topics": partitions, "created": created, "migrated": True}))
    else:
        for topic, count in partitions.items():
            print(f"  {topic:<36} {count:>4} partitions{'  (created)' if topic in created else ''}")
        print("topics ready, database migrated")
    return 0


def _described(error: BaseException) -> str:
    """`Type: message`, once (some libraries' messages start with their type already)."""
    text = str(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _unreachable(error: BaseException) -> bool:
    """Whether `error` says a broker or database did not answer (not a bug of ours)."""
    import socket

    import asyncpg
    from aiokafka.errors import KafkaConnectionError

    connection_errors = (
        ConnectionError,  # refused, reset
        TimeoutError,
        socket.gaierror,  # a host name that does not resolve
        KafkaConnectionError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidCatalogNameError,
    )
    return isinstance(error, connection_errors)


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


def _api_key() -> str | None:
    """The key the commands that call the API send (STAGECAST_API_KEY; open mode needs none)."""
    return os.environ.get("STAGECAST_API_KEY") or None


def _api_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.api:
        return str(args.api)
    from streams.launcher import running_stack

    info = running_stack(settings.state_dir.resolve())
    if info is not None:
        return str(info["api_url"])
    return f"http://{settings.api_host}:{settings.api_port}"


async def _demo_on(api_url: str) -> int:
    """The demo against the API at `api_url`, once it says it is ready."""
    import httpx

    from streams.demo import run_demo

    async with httpx.AsyncClient(timeout=10) as http:
        ready = await http.get(f"{api_url.rstrip('/')}/ready")
    if ready.status_code != 200:
        raise CliError(
            "API_NOT_READY",
            f"the API at {api_url} is not ready ({ready.status_code})",
            EXIT_UNAVAILABLE,
            "its broker or database is down; try again in a few seconds",
        )
    return 0 if await run_demo(api_url) else EXIT_JOB_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo
    from streams.launcher import Launcher, StackBusy, running_stack

    settings = _settings()
    if args.api:
        return _against_api(args.api, _demo_on(args.api))
    info = running_stack(settings.state_dir.resolve())
    if info is not None:
        print(f"Using the stack already running at {info['api_url']}")
        return 0 if asyncio.run(run_demo(str(info["api_url"]), api_key=_api_key())) else 1
    # SIGTERM unwinds like Ctrl-C, so the launcher below stops everything it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("Starting the embedded stack (Tansu broker, PostgreSQL, workers, projector, API)...")
    launcher = Launcher(settings.model_copy(update={"api_port": 0}))
    try:
        try:
            launcher.start()
        except StackBusy as busy:
            raise CliError("STACK_BUSY", str(busy), EXIT_REFUSED, "is it still starting?") from None
        print(f"Stack is up; API at {launcher.api_url}")
        ok = asyncio.run(run_demo(launcher.api_url, launcher=launcher))
    finally:
        launcher.stop()
        print("Stack stopped.")
    return 0 if ok else 1


async def _watch(
    api_url: str,
    job_id: str,
    last_event_id: int | None,
    *,
    as_json: bool = False,
    max_wait_s: float | None = None,
) -> int:
    """Follow the job's feed to its end; 0 when the job succeeded, else a CliError saying how
    it ended."""
    from api.client import StagecastClient
    from streams.watching import TERMINAL_TYPES, FeedView, LineView, LiveView, failure

    view: FeedView
    if as_json or not sys.stdout.isatty():
        view = LineView(sys.stdout, as_json=as_json)
    else:
        from rich.console import Console

        view = LiveView(Console())
    last: FeedItem | None = None
    async with StagecastClient(api_url, api_key=_api_key()) as client:
        with view:
            try:
                async with asyncio.timeout(max_wait_s):
                    async for event in client.events(job_id, last_event_id):
                        view.feed(event)
                        last = event
            except TimeoutError:
                raise CliError(
                    "WAIT_TIMEOUT",
                    f"job {job_id} had not ended after {max_wait_s:g} s",
                    EXIT_TIMEOUT,
                    f"it goes on; follow it with 'stagecast watch {job_id}'",
                ) from None
    if last is None or last.type not in TERMINAL_TYPES:
        after = "" if last_event_id is None else f" after seq {last_event_id}"
        raise CliError(
            "FEED_ENDED",
            f"job {job_id} has no events{after}: its feed had ended",
            EXIT_JOB_FAILED,
            "watch without --last-event-id to see how it ended",
        )
    ended = failure(last)
    if ended is not None:
        raise CliError(ended[0], ended[1], EXIT_JOB_FAILED)
    return 0


def _against_api(api_url: str, work: Coroutine[Any, Any, int]) -> int:
    """Run `work`, which talks to the API at `api_url`; what goes wrong becomes a CliError."""
    import httpx

    from api.client import ApiRequestError

    try:
        return asyncio.run(work)
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        raise CliError(
            "API_UNREACHABLE",
            f"no API at {api_url}",
            EXIT_UNREACHABLE,
            "start one with 'stagecast up' or pass --api URL",
        ) from error
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        raise CliError(
            "INVALID_API_URL",
            f"--api {api_url} is not an http:// or https:// URL",
            EXIT_USAGE,
            "pass --api http://HOST:PORT",
        ) from error
    except httpx.TransportError as error:
        raise CliError(
            "API_LOST",
            f"lost the API at {api_url} ({type(error).__name__})",
            EXIT_UNREACHABLE,
            "check that the stack is still up and run the command again",
        ) from error
    except ApiRequestError as error:
        raise _refusal(error) from error


def _refusal(error: ApiRequestError) -> CliError:
    """The API's error body as a CliError: its code, status and message, and what to do."""
    if error.status == 404 and error.code == "JOB_NOT_FOUND":
        exit_code = EXIT_NOT_FOUND
    elif error.status >= 500:
        exit_code = EXIT_UNAVAILABLE
    else:
        exit_code = EXIT_REFUSED
    return CliError(
        error.code,
        f"the API answered {error.status}: {error.message}",
        exit_code,
        _HINTS.get(error.code, ""),
    )


def _read_model(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as error:
        reason = error.strerror or type(error).__name__
    except UnicodeDecodeError as error:
        reason = f"not UTF-8 text (byte {error.object[error.start]:#04x} at {error.start})"
    raise CliError(
        "FILE_UNREADABLE", f"cannot read {path}: {reason}", EXIT_USAGE, "pass a .neural file"
    )


def cmd_submit(args: argparse.Namespace) -> int:
    from api.client import StagecastClient

    settings = _settings()
    api_url = _api_url(args, settings)
    dsl = _read_model(args.file)

    async def submit() -> int:
        async with StagecastClient(api_url, api_key=_api_key()) as client:
            accepted = await client.submit(
                dsl,
                stages=args.stages or (),
                target=args.target,
                idempotency_key=args.idempotency_key,
            )
        # --json: the answer on one line, then (--wait) each event on a line of its own.
        print(json.dumps(accepted) if args.json else json.dumps(accepted, indent=2), flush=True)
        if args.wait:
            return await _watch(
                api_url, accepted["job_id"], None, as_json=args.json, max_wait_s=args.timeout
            )
        return 0

    return _against_api(api_url, submit())


def cmd_cancel(args: argparse.Namespace) -> int:
    from api.client import StagecastClient

    api_url = _api_url(args, _settings())

    async def cancel() -> int:
        async with StagecastClient(api_url, api_key=_api_key()) as client:
            answer = await client.cancel(args.job_id, args.reason or "")
        if args.json:
            print(json.dumps(answer))
        else:
            job_id = answer["job_id"]
            print(f"cancelling {job_id}; follow it with 'stagecast watch {job_id}'")
        return 0

    return _against_api(api_url, cancel())


def cmd_watch(args: argparse.Namespace) -> int:
    api_url = _api_url(args, _settings())
    work = _watch(
        api_url, args.job_id, args.last_event_id, as_json=args.json, max_wait_s=args.timeout
    )
    return _against_api(api_url, work)


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
        raise CliError(
            "INVALID_ARGUMENT",
            f"--from takes 'earliest' or an ISO 8601 time, not {text!r}",
            EXIT_USAGE,
            "e.g. --from 2026-12-06T12:00:00+00:00",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_NO_SERVERS_HINT = "set them, or start the stack with 'stagecast up'"


def cmd_replay(args: argparse.Namespace) -> int:
    from projections.replay import check_schema, compare, replay, republish
    from schemas.codec import default_codec

    settings = _servers(_settings())
    if not settings.database_url or (
        args.source == "kafka" and not settings.kafka_bootstrap_servers
    ):
        raise CliError("NO_SERVERS", "no broker or database", EXIT_USAGE, _NO_SERVERS_HINT)
    if args.republish:
        return asyncio.run(_republish(settings, republish, args.force, args.json))
    if not args.into:
        raise CliError(
            "INVALID_ARGUMENT", "replay needs --into SCHEMA (or --republish)", EXIT_USAGE
        )
    try:
        schema = check_schema(args.into)
    except ValueError as error:
        raise CliError("INVALID_SCHEMA", str(error), EXIT_USAGE) from None
    since = _since(args.since)

    async def run() -> int:
        try:
            done = await replay(settings, default_codec(), schema, source=args.source, since=since)
        except ValueError as error:
            raise CliError("INVALID_SCHEMA", str(error), EXIT_USAGE) from None
        diffs = await compare(settings.require_database(), schema) if args.compare else []
        same = all(diff.same for diff in diffs)
        if args.json:
            print(json.dumps(_replay_report(done, args.source, diffs if args.compare else None)))
            return 0 if same else EXIT_JOB_FAILED
        print(
            f"replayed {done.events} events from {args.source} into schema {schema} "
            f"in {done.seconds:.2f} s ({done.events / max(done.seconds, 1e-9):.0f} events/s)"
            + (f"; {done.skipped} skipped as undecodable or unstorable" if done.skipped else "")
        )
        if not args.compare:
            return 0
        for diff in diffs:
            mark = "same" if diff.same else "DIFFERENT"
            print(
                f"  {diff.table:<14} live {diff.live_rows:>8}  replay {diff.replay_rows:>8}  "
                f"mismatched {diff.mismatched:>6}  {mark}"
            )
            for key, how in diff.examples:
                print(f"      {how}: {key}")
        print("no difference" if same else "the replay differs from the live projections")
        return 0 if same else EXIT_JOB_FAILED

    return asyncio.run(run())


def _replay_report(done: Any, source: str, diffs: list[Any] | None) -> dict[str, Any]:
    """What `replay --json` prints: the replay's figures and, with --compare, every table."""
    report: dict[str, Any] = {
        "schema": done.schema,
        "source": source,
        "events": done.events,
        "skipped": done.skipped,
        "seconds": round(done.seconds, 3),
    }
    if diffs is not None:
        report["same"] = all(diff.same for diff in diffs)
        report["tables"] = [
            {
                "table": diff.table,
                "live_rows": diff.live_rows,
                "replay_rows": diff.replay_rows,
                "mismatched": diff.mismatched,
                "same": diff.same,
                "examples": [{"key": key, "where": how} for key, how in diff.examples],
            }
            for diff in diffs
        ]
    return report


def _republish_report(done: Any) -> dict[str, Any]:
    """What `replay --republish --json` prints: per topic, messages before and events sent."""
    topics = {
        topic: {"held_before": held, "sent": sent} for topic, (held, sent) in done.topics.items()
    }
    return {"events": done.events, "seconds": round(done.seconds, 3), "topics": topics}


async def _republish(settings: Settings, republish: Any, force: bool, as_json: bool) -> int:
    try:
        done = await republish(settings, force=force)
    except ValueError as error:
        raise CliError("REPUBLISH_REFUSED", str(error), EXIT_REFUSED) from None
    if as_json:
        print(json.dumps(_republish_report(done)))
        return 0
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
        raise CliError("NO_SERVERS", "no database", EXIT_USAGE, _NO_SERVERS_HINT)
    job_id = None
    if args.what == "job":
        try:
            job_id = uuid.UUID(args.job_id)
        except ValueError:
            raise CliError(
                "INVALID_JOB_ID",
                f"not a job id: {args.job_id!r}",
                EXIT_USAGE,
                _HINTS["INVALID_JOB_ID"],
            ) from None

    async def audit() -> int:
        try:
            conn = await asyncpg.connect(url, timeout=10)
        except (OSError, asyncpg.PostgresError) as error:
            raise CliError(
                "DATABASE_UNREACHABLE",
                f"cannot reach the database: {error}",
                EXIT_UNREACHABLE,
                "check DATABASE_URL, or start the stack with 'stagecast up'",
            ) from None
        try:
            if job_id is None:
                report = await verify_archive(conn)
                return _print_archive(report, args.json)
            audited = await audit_job(conn, default_codec(), job_id)
        finally:
            await conn.close()
        if audited is None:
            raise CliError("JOB_NOT_FOUND", f"job {job_id} has no archived events", EXIT_NOT_FOUND)
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
        return EXIT_JOB_FAILED if audited.problems else 0

    return asyncio.run(audit())


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys, in the database the API reads them from."""
    import asyncpg

    from api.inputs import is_tenant
    from api.keys import create_key, list_keys, parse_scopes, revoke_key

    settings = _servers(_settings())
    if not settings.database_url:
        raise CliError("NO_SERVERS", "no database", EXIT_USAGE, _NO_SERVERS_HINT)
    if args.action == "create":
        if not is_tenant(args.tenant):
            raise CliError(
                "INVALID_ARGUMENT", "--tenant must be 1-100 printable characters", EXIT_USAGE
            )
        try:
            scopes = parse_scopes(args.scopes)
        except ValueError as error:
            raise CliError("INVALID_ARGUMENT", f"--scopes: {error}", EXIT_USAGE) from None
        rate = settings.key_rate_per_minute if args.rate is None else args.rate
        if rate < 1:
            raise CliError("INVALID_ARGUMENT", "--rate is requests a minute: 1 or more", EXIT_USAGE)

    async def keys() -> int:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=10)
        except (OSError, asyncpg.PostgresError) as error:
            raise CliError(
                "DATABASE_UNREACHABLE", f"cannot reach the database: {error}", EXIT_UNREACHABLE
            ) from None
        try:
            if args.action == "create":
                key, secret = await create_key(conn, args.tenant, scopes, rate)
                # The key alone on stdout (KEY=$(stagecast keys create ...)); the rest on stderr.
                print(secret)
                print(
                    f"created API key {key.key_id} for tenant {key.tenant} "
                    f"(scopes {','.join(key.scopes)}; {key.rate_per_minute} requests a minute). "
                    "It is shown only now: store it.",
                    file=sys.stderr,
                )
            elif args.action == "list":
                _print_keys(await list_keys(conn), args.json)
            else:
                revoked = await revoke_key(conn, args.key_id)
                if revoked is None:
                    raise CliError(
                        "KEY_NOT_FOUND",
                        f"no API key {args.key_id!r}",
                        EXIT_NOT_FOUND,
                        "'stagecast keys list' shows them",
                    )
                print(f"revoked API key {revoked.key_id} of tenant {revoked.tenant}")
        finally:
            await conn.close()
        return 0

    return asyncio.run(keys())


def _print_keys(keys: list[Any], as_json: bool) -> None:
    rows = [
        {
            "key_id": key.key_id,
            "tenant": key.tenant,
            "scopes": list(key.scopes),
            "rate_per_minute": key.rate_per_minute,
            "created_at": key.created_at.isoformat(),
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        }
        for key in keys
    ]
    if as_json:
        print(json.dumps(rows))
        return
    print(f"{'KEY ID':<12}  {'TENANT':<20}  {'SCOPES':<18}  {'RATE/MIN':>8}  CREATED / REVOKED")
    for row in rows:
        when = str(row["created_at"])[:19]
        if row["revoked_at"]:
            when += f"  revoked {str(row['revoked_at'])[:19]}"
        scopes = ",".join(row["scopes"])
        print(
            f"{row['key_id']:<12}  {row['tenant']:<20}  {scopes:<18}  "
            f"{row['rate_per_minute']:>8}  {when}"
        )


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
    top = _Parser(prog="stagecast", description=__doc__)
    top.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole stack (embedded servers unless configured)")
    up.add_argument(
        "--json", action="store_true", help="once it is up, where everything is as one JSON object"
    )
    up.add_argument(
        "--workers",
        type=_worker_count,
        help="worker processes in the one consumer group (default: STAGECAST_WORKERS, 1)",
    )
    prepare = sub.add_parser(
        "prepare", help="create the topics and migrate the database (what 'up' does first)"
    )
    prepare.add_argument("--json", action="store_true", help="the topics as one JSON object")
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
    submit.add_argument(
        "--timeout", type=_seconds, help="with --wait: give up after this many seconds (exit 7)"
    )
    submit.add_argument(
        "--json", action="store_true", help="the answer as one JSON line (then, --wait, events)"
    )
    submit.add_argument("--api", help="API base URL (default: the running stack)")
    cancel = sub.add_parser("cancel", help="stop a job (every worker hears it)")
    cancel.add_argument("job_id")
    cancel.add_argument("--reason", help="why, shown on the job's feed")
    cancel.add_argument("--json", action="store_true", help="the API's answer as one JSON object")
    cancel.add_argument("--api", help="API base URL (default: the running stack)")
    watch = sub.add_parser("watch", help="follow a job's events")
    watch.add_argument("job_id")
    watch.add_argument("--last-event-id", type=int)
    watch.add_argument("--timeout", type=_seconds, help="give up after this many seconds (exit 7)")
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
    replay.add_argument("--json", action="store_true", help="the report as one JSON object")
    audit = sub.add_parser("audit", help="check the event archive's hash chain, or one job")
    checks = audit.add_subparsers(dest="what", required=True)
    verify = checks.add_parser("verify", help="walk the archive's hash chain; exit 1 if broken")
    verify.add_argument("--json", action="store_true", help="the report as one JSON object")
    job = checks.add_parser("job", help="a job's timeline and invariants; exit 1 if broken")
    job.add_argument("job_id")
    job.add_argument("--json", action="store_true", help="the report as one JSON object")
    keys = sub.add_parser("keys", help="API keys for STAGECAST_AUTH=keys: create, list, revoke")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create a key and print it (only this once)")
    create.add_argument("--tenant", required=True, help="the tenant whose jobs the key sees")
    create.add_argument(
        "--scopes", default="submit,read", help="comma list of submit, read, admin (submit,read)"
    )
    create.add_argument(
        "--rate", type=int, help="requests a minute (STAGECAST_KEY_RATE_PER_MINUTE)"
    )
    listing = key_actions.add_parser("list", help="every key, without its secret")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    revoke = key_actions.add_parser("revoke", help="revoke a key by its id; it is refused at once")
    revoke.add_argument("key_id")
    return top


MAX_WORKERS = 64


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of workers from 1 to {MAX_WORKERS}"
        )
    return value


# The commands that run (part of) the stack and log as services do.
SERVICES = frozenset({"up", "worker", "projector", "webhooks", "api", "demo"})
COMMANDS = {
    "up": cmd_up,
    "prepare": cmd_prepare,
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
    "keys": cmd_keys,
}


def main(argv: list[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        if args.command not in SERVICES:
            # The one line that reports a failure says it; the client's own log would repeat it.
            logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        return COMMANDS[args.command](args)
    except CliError as error:
        if debug:
            raise
        failure = error
    except KeyboardInterrupt:
        if debug:
            raise
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            raise
        if _unreachable(error):
            failure = CliError(
                "SERVERS_UNREACHABLE",
                _described(error),
                EXIT_UNREACHABLE,
                "check KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, or start the stack with "
                "'stagecast up'",
            )
        else:
            failure = CliError(
                "INTERNAL",
                _described(error),
                EXIT_INTERNAL,
                "a bug: run the command again with --debug and report the traceback",
            )
    print(failure.line(), file=sys.stderr)
    return failure.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
