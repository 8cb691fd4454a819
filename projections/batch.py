"""A batch of consumed messages, each flattened into one typed row for the staging table."""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from projections.feed_order import DISPATCHED_EVENTS, PROGRESS_EVENTS, FeedMerge
from schemas.codec import Codec, DecodeError
from streams.envelope import Origin

# The fields of the `staged_event` type (migrations/002; the message as it arrived, for the
# archive, added in 013), in the order of every row tuple.
STAGED_COLUMNS = (
    "ord",
    "event_id",
    "job_id",
    "type",
    "tenant",
    "stage",
    "attempt",
    "status",
    "occurred_at",
    "payload",
    "topic",
    "partition",
    "offset",
    "summary",
    "error",
    "duration_ms",
    "percent",
    "value",
    "name",
    "step",
    "labels",
    "media_type",
    "uri",
    "size_bytes",
    "sha256",
    "content",
    "kind",
    "target",
    "stages",
    "idempotency_key",
    "spec",
    "message_key",
    "message_value",
)

StagedRow = tuple[Any, ...]

# A JSON "\u0000" escape that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")

log = logging.getLogger(__name__)


class MalformedEvent(ValueError):
    """A decodable event the projection still cannot store (e.g. a timestamp out of range)."""


@dataclass(frozen=True, slots=True)
class Unstorable:
    """A consumed message the projection could not store, and why: what a dead letter needs."""

    origin: Origin
    code: str
    reason: str


def jsonb_text(value: Any) -> str:
    """JSON text that PostgreSQL accepts as jsonb: no NUL, NaN, Infinity or lone surrogates."""
    try:
        # orjson writes NaN and infinities as null, as the fallback below does, in a fraction
        # of the time; it refuses lone surrogates and integers past 64 bits, which go below.
        text = orjson.dumps(value, default=_bytes_as_base64).decode()
    except TypeError:
        try:
            text = _STRICT_JSON.encode(value)
        except ValueError:
            text = _STRICT_JSON.encode(_finite(value))
    if "\\u0000" in text:
        # jsonb refuses NUL characters; U+FFFD keeps the place of the one that was there.
        text = _NUL_ESCAPE.sub(r"\1\\ufffd", text)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _bytes_as_base64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# Built once: json.dumps with options builds a new encoder per call, which doubles its cost.
_STRICT_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_bytes_as_base64)


def _finite(value: Any) -> Any:
    """The value with every NaN or infinite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _text(value: Any) -> Any:
    """The value with NUL replaced in its strings: text columns cannot store NUL."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_text(item) for item in value]
    return value


def _json_document(text: str | None) -> Any:
    """The parsed JSON text fields carry; text that is not strict JSON is kept as a string."""
    if text is None:
        return None
    try:
        return _STRICT_DECODER.decode(text)
    except ValueError:
        return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once, like _STRICT_JSON: json.loads with options builds a new decoder per call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _jsonb_of_text(text: str) -> str:
    """jsonb text for a field that carries JSON text: as sent when PostgreSQL will take it."""
    if "\\u" not in text:
        try:
            _STRICT_DECODER.decode(text)
        except ValueError:
            return jsonb_text(text)
        # Strict JSON without escapes holds no NUL or lone surrogate: no need to rewrite it.
        return text
    return jsonb_text(_json_document(text))


def _error(error: dict[str, Any] | None) -> str | None:
    if error is None:
        return None
    return jsonb_text({**error, "details": _json_document(error.get("details"))})


def occurred_at_of(value: Any) -> datetime:
    """An event's occurred_at as an aware datetime; MalformedEvent when out of range."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedEvent(f"occurred_at {value!r} is out of range") from None


def staged_row(
    position: int,
    topic: str,
    partition: int,
    offset: int,
    event_type: str,
    record: dict[str, Any],
    message_key: bytes | None = None,
    message_value: bytes = b"",
) -> StagedRow:
    """One decoded event as the staging row at `position`, with the message (key and value)
    it arrived as; MalformedEvent if unstorable."""
    shown = record
    if event_type == "ArtifactStored" and record.get("content") is not None:
        # Inline content stays in `artifacts`; the feed carries its size and hash, not the bytes.
        shown = {key: value for key, value in record.items() if key != "content"}
    payload = jsonb_text(shown)
    get = record.get
    kind = target = stages = idempotency_key = spec = labels = None
    summary = error = duration_ms = percent = value = name = step = None
    media_type = uri = size_bytes = sha256 = content = status = None
    if event_type == "JobRequested":
        kind, target, stages = get("kind"), get("target"), get("stages")
        idempotency_key, labels = get("idempotency_key"), jsonb_text(get("labels") or {})
        spec = jsonb_text(
            {
                "dsl": get("dsl"),
                "code": get("code"),
                "language": get("language"),
                "stdin": get("stdin"),
                "train": _json_document(get("train")),
                "limits": get("limits"),
            }
        )
    elif event_type == "JobAccepted":
        kind, target, stages = get("kind"), get("target"), get("stages")
        idempotency_key = get("idempotency_key")
    elif event_type == "JobRejected":
        error = _error(get("error"))
    elif event_type == "StageChanged":
        status, duration_ms = get("status"), get("duration_ms")
        summary = _jsonb_of_text(get("summary") or "{}")
        error = _error(get("error"))
    elif event_type == "JobFinished":
        status, duration_ms, error = get("status"), get("duration_ms"), _error(get("error"))
    elif event_type == "ProgressReported":
        percent = get("percent")
    elif event_type == "MetricRecorded":
        name, value, step = get("name"), get("value"), get("step")
        labels = jsonb_text(get("labels") or {})
    elif event_type == "ArtifactStored":
        name, media_type, uri = get("name"), get("media_type"), get("uri")
        size_bytes, sha256, content = get("size_bytes"), get("sha256"), get("content")
    row = (
        position,
        # Lower case, so the batch's own duplicate check agrees with the uuid column's.
        str(record["event_id"]).lower(),
        str(record["job_id"]) or None,
        event_type,
        record["tenant"],
        get("stage"),
        get("attempt"),
        status,
        occurred_at_of(record["occurred_at"]),
        # A request is not in the feed; its big texts travel once, in `spec`.
        None if event_type == "JobRequested" else payload,
        topic,
        partition,
        offset,
        summary,
        error,
        duration_ms,
        percent,
        value,
        name,
        step,
        labels,
        media_type,
        uri,
        size_bytes,
        sha256,
        content,
        kind,
        target,
        stages,
        idempotency_key,
        spec,
        message_key,
        message_value,
    )
    if "\\u0000" in payload:
        # Some string of the record holds a NUL; rare enough to clean every column then.
        return tuple(_text(item) for item in row)
    return row


_TOPIC = STAGED_COLUMNS.index("topic")
_PARTITION = STAGED_COLUMNS.index("partition")
_OCCURRED_AT = STAGED_COLUMNS.index("occurred_at")
_JOB_ID = STAGED_COLUMNS.index("job_id")
_MERGE = FeedMerge(STAGED_COLUMNS)


class Consumed(NamedTuple):
    """One consumed message and what staging it gave: its row, or why it cannot be stored."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    row: StagedRow | None
    # An event whose causal neighbours went to another topic (see Batch.needs_cut).
    asks_cut: bool
    refused: Unstorable | None

    @property
    def occurred_at(self) -> datetime | None:
        """When the event happened; None for a message that is not a storable event."""
        return None if self.row is None else self.row[_OCCURRED_AT]

    @property
    def job_id(self) -> str | None:
        """The event's job; None for a message that is not a storable event."""
        return None if self.row is None else self.row[_JOB_ID]


@dataclass
class Batch:
    """Messages consumed since the last commit: their staged rows and how far each partition got."""

    codec: Codec
    rows: list[StagedRow] = field(default_factory=list, init=False)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict, init=False)
    messages: int = field(default=0, init=False)
    undecodable: int = field(default=0, init=False)
    unstorable: list[Unstorable] = field(default_factory=list, init=False)
    repeated: int = field(default=0, init=False)
    # (job id, tenant, bytes as sent) of every JobRequested, for the request outbox.
    requests: list[tuple[str, str, bytes]] = field(default_factory=list, init=False)
    _event_ids: set[str] = field(default_factory=set, init=False, repr=False)
    _requested: set[str] = field(default_factory=set, init=False, repr=False)
    _latest: datetime | None = field(default=None, init=False, repr=False)
    # Every message as consumed and staged, for trimmed(): a trimmed batch decodes nothing again.
    _consumed: list[Consumed] = field(default_factory=list, init=False, repr=False)
    # Per partition, the event time of the first decodable message read, and the latest:
    # whatever was appended before a message not read yet happened before `reached`.
    began: dict[tuple[str, int], datetime] = field(default_factory=dict, init=False)
    reached: dict[tuple[str, int], datetime] = field(default_factory=dict, init=False)
    # Set by an event whose causal neighbours went to another topic: a progress event (its
    # STARTED is on the events topic), an outcome that counts progress before it, or the
    # dispatcher's answer to a request (the request is on the requests topic).
    needs_cut: bool = field(default=False, init=False)

    def __len__(self) -> int:
        return self.messages

    def in_feed_order(self) -> list[StagedRow]:
        """The rows in the order their seq numbers will follow (see projections/feed_order.py).

        Consumption order groups rows by partition, so a job's progress events (their own
        topic) could land after its JobFinished and never reach a feed that ends there.
        """
        by_partition: dict[tuple[str, int], list[StagedRow]] = {}
        for row in self.rows:
            by_partition.setdefault((row[_TOPIC], row[_PARTITION]), []).append(row)
        merged = _MERGE.order(by_partition.values())
        return [(position, *row[1:]) for position, row in enumerate(merged)]

    def trimmed(
        self, cut: datetime, whole: Collection[str] = ()
    ) -> tuple[Batch, dict[tuple[str, int], int]]:
        """This batch without, in each partition, the first event at or after `cut` and all
        that follows it; and the offset each shortened partition must be read from again.
        The partitions of the `whole` topics are kept as read.

        For a consistent cut that could not be read to its end in time: when one partition
        was read only up to `cut`, events at `cut` or later elsewhere may follow what it has
        not given yet, so they wait for the next batch.
        """
        kept = Batch(self.codec)
        resume: dict[tuple[str, int], int] = {}
        for consumed in self._consumed:
            tp = (consumed.topic, consumed.partition)
            occurred_at = consumed.occurred_at
            if consumed.topic in whole:
                kept.take(consumed)
                continue
            if tp not in resume and occurred_at is not None and occurred_at >= cut:
                resume[tp] = consumed.offset
            if tp not in resume:
                kept.take(consumed)
        return kept, resume

    def starts_before(self, cut: datetime) -> bool:
        """Whether trimmed(cut) keeps something: some partition's first event is before it."""
        return any(first < cut for first in self.began.values())

    @property
    def latest(self) -> datetime | None:
        """The latest event time in the batch."""
        return self._latest

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None = None,
    ) -> None:
        """Stage one message; bytes that are not a storable event are kept in `unstorable`."""
        self.take(self.stage(topic, partition, offset, value, key))

    def stage(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None = None,
    ) -> Consumed:
        """One message decoded and staged, not yet taken into the batch (see `take`)."""
        try:
            event_type, record = self.codec.decode(value or b"")
            row = staged_row(
                len(self.rows), topic, partition, offset, event_type, record, key, value or b""
            )
        except (DecodeError, ValueError, KeyError, TypeError) as exc:
            code = exc.code if isinstance(exc, DecodeError) else "MALFORMED_EVENT"
            reason = str(exc) if isinstance(exc, DecodeError | MalformedEvent) else repr(exc)
            origin = Origin(topic, partition, offset, key, value or b"")
            return Consumed(
                topic, partition, offset, key, value, None, False, Unstorable(origin, code, reason)
            )
        asks_cut = (
            event_type in PROGRESS_EVENTS
            # Its JobRequested is on the requests topic.
            or event_type in DISPATCHED_EVENTS
            or (event_type == "StageChanged" and record.get("reported", 0) > 0)
        )
        return Consumed(topic, partition, offset, key, value, row, asks_cut, None)

    def take(self, consumed: Consumed) -> None:
        """A staged message into the batch: its row unless its event id is here already, how
        far its partition got, and its event time."""
        topic, partition, offset, _, value, row, asks_cut, refused = consumed
        self.messages += 1
        self.next_offsets[(topic, partition)] = offset + 1
        self._consumed.append(consumed)
        if row is None:
            assert refused is not None
            self.undecodable += 1
            self.unstorable.append(refused)
            log.warning("skipped %s[%d]@%d: %s", topic, partition, offset, refused.reason)
            return
        if asks_cut:
            self.needs_cut = True
        occurred_at: datetime = row[_OCCURRED_AT]
        tp = (topic, partition)
        self.began.setdefault(tp, occurred_at)
        reached = self.reached.get(tp)
        if reached is None or occurred_at > reached:
            self.reached[tp] = occurred_at
        if self._latest is None or occurred_at > self._latest:
            self._latest = occurred_at
        event_id = row[1]
        if event_id in self._event_ids:
            self.repeated += 1
            return
        self._event_ids.add(event_id)
        if row[0] != len(self.rows):
            # Staged for another batch (this one is trimmed from it): numbered here.
            row = (len(self.rows), *row[1:])
        self.rows.append(row)
        if row[3] == "JobRequested" and value is not None and row[2] not in self._requested:
            # The first body of a job id is the one kept; a copy under another event id is not.
            self._requested.add(row[2])
            self.requests.append((row[2], row[4], value))
