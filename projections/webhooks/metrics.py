"""What the webhooks process shows Prometheus: the recorder's and the sender's running totals,
read from their stats at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from projections.webhooks.recorder import WebhookRecorder
from projections.webhooks.sender import WebhookSender


class WebhookMetrics(Collector):
    """Messages read and deliveries recorded; attempts by outcome; requests in flight."""

    def __init__(self, recorder: WebhookRecorder, sender: WebhookSender) -> None:
        self.recorder = recorder
        self.sender = sender

    def collect(self) -> Iterable[Metric]:
        recorded = self.recorder.stats
        yield CounterMetricFamily(
            "stagecast_webhook_messages",
            "Messages read from the events topic.",
            value=recorded.messages,
        )
        yield CounterMetricFamily(
            "stagecast_webhook_skipped",
            "Messages skipped as undecodable (the projector dead-letters them).",
            value=recorded.skipped,
        )
        yield CounterMetricFamily(
            "stagecast_webhook_deliveries_recorded",
            "Deliveries recorded: one per matching subscription and event.",
            value=recorded.deliveries,
        )
        sent = self.sender.stats
        attempts = CounterMetricFamily(
            "stagecast_webhook_attempts",
            "Attempts by what they made of their delivery: delivered, retried (another "
            "attempt is due) or failed (given up).",
            labels=["outcome"],
        )
        for outcome, value in (
            ("delivered", sent.delivered),
            ("retried", sent.retried),
            ("failed", sent.failed),
        ):
            attempts.add_metric([outcome], value)
        yield attempts
        yield GaugeMetricFamily(
            "stagecast_webhook_requests_in_flight",
            "Webhook requests under way in this process.",
            value=self.sender.in_flight,
        )
