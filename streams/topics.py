"""Creating the topics a stack needs, with the partition counts from settings."""

from __future__ import annotations

import contextlib

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


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics; return the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.require_kafka())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, partitions, 1)
            for name, partitions in topic_partitions(settings).items()
            if name not in existing
        ]
        if wanted:
            # Another process may create them between our list and our create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
        return [topic.name for topic in wanted]
    finally:
        await admin.close()
