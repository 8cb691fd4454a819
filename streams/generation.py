"""Which incarnation of the broker a process talks to, and whether it has every topic.

A memory-only broker forgets its topics, offsets and groups when it restarts, while
PostgreSQL remembers jobs and projection offsets. The broker's cluster id names the
incarnation: the embedded broker gets a fresh one at every start, and a real Kafka cluster
gets one when its storage is formatted, so a cluster id that changes means a log that
started over. Offsets, dispatches and published requests are recorded with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.metadata import MetadataRequest


class GenerationUnknown(RuntimeError):
    """The broker did not say which cluster it is (a protocol version without cluster ids)."""


@dataclass(frozen=True, slots=True)
class BrokerState:
    """What one metadata answer says: the cluster's generation and the topics it has."""

    generation: str
    topics: frozenset[str]

    def missing(self, wanted: Iterable[str]) -> list[str]:
        """The wanted topics the broker does not have."""
        return sorted(set(wanted) - self.topics)


async def broker_state(client: AIOKafkaClient) -> BrokerState:
    """Ask any broker for the cluster id and topic list (never creates a topic)."""
    node = client.get_random_node()
    if node is None:
        await client.force_metadata_update()
        node = client.get_random_node()
    response = await client.send(node, MetadataRequest(None, allow_auto_topic_creation=False))
    described = response.to_object()
    generation = described.get("cluster_id")
    if not generation:
        raise GenerationUnknown("the broker's metadata carries no cluster id")
    topics = frozenset(entry["topic"] for entry in described["topics"] if entry["error_code"] == 0)
    return BrokerState(str(generation), topics)
