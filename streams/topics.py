"""Creating the topics a stack needs, with the partition counts from settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Every topic and its partition count."""
    topics = settings.topics
    counts = {name: settings.partitions for name in topics.all()}
    for name in topics.all():
        if name.startswith(f"{settings.topic_prefix}.stage."):
            counts[name] = settings.stage_partitions
    counts[topics.control] = 1
    return counts


def creation_failures(topic_errors: Sequence[Sequence[Any]]) -> list[str]:
    """The topics a CreateTopics response refused, with why (an existing topic is no failure)."""
    failed = []
    for topic, error_code, *rest in topic_errors:
        # Another process may create a topic between our list and our create.
        if error_code in (0, TopicAlreadyExistsError.errno):
            continue
        message = rest[0] if rest and rest[0] else f"error code {error_code}"
        failed.append(f"{topic}: {message}")
    return failed


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics; return the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.require_kafka())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, partitions, settings.replication_factor)
            for name, partitions in topic_partitions(settings).items()
            if name not in existing
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
        failed = creation_failures(response.topic_errors)
        if failed:
            raise RuntimeError(f"could not create topics: {'; '.join(failed)}")
        return [topic.name for topic in wanted]
    finally:
        await admin.close()
