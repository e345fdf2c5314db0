"""Notify: the jobs table's stream -> the notify function -> a "Job Status Change" event on
the default bus for every terminal status (and the outcome metrics), and for each finished job
that asked for a callback a message on the webhooks queue -> the webhook function -> one signed
POST (retried with doubling waits; signed with the deployment's secret)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from batchscribe.resources import DLQ_RETENTION_SECONDS, NOTIFY_BATCH_SIZE, NOTIFY_RETRY_ATTEMPTS
from batchscribe.settings import NotifySettings, RoutingSettings, WebhookSettings
from stacks.constructs.functions import Functions
from stacks.constructs.jobs import READ_TRANSITION, Jobs
from stacks.constructs.queues import QueuePair, secure_queue

WEBHOOK_TIMEOUT_SECONDS = 60  # a batch of 5 tries, at most 10 s each, with room


class Notify(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        functions: Functions,
        jobs: Jobs,
        routing: RoutingSettings | None = None,
        default_model: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self._webhooks(functions, jobs)
        self._status_events(functions, jobs, NotifySettings(routing=routing, default_model=default_model))

    def _webhooks(self, functions: Functions, jobs: Jobs) -> None:
        """The webhooks queue, the signing secret, and the webhook function that drains the queue."""
        sender = WebhookSettings(**jobs.store)
        self.signing_secret = secretsmanager.Secret(
            self,
            "WebhookSigningSecret",
            description="Batchscribe: signs job callbacks (HMAC-SHA256); receivers verify with it",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=48),
        )
        self.webhooks = QueuePair(
            self,
            "Webhooks",
            visibility=6 * WEBHOOK_TIMEOUT_SECONDS,
            # every try is a receive; the sender gives up at callback_max_attempts, the DLQ keeps the rest
            max_receive=sender.callback_max_attempts + 2,
            dlq_visibility=60,
        )
        self.webhook = functions.add(
            self,
            "webhook",
            sender.model_copy(update={"signing_secret_arn": self.signing_secret.secret_arn}),
            timeout=Duration.seconds(WEBHOOK_TIMEOUT_SECONDS),
            memory=256,
        )
        self.webhook.add_event_source(
            sources.SqsEventSource(self.webhooks.queue, batch_size=5, report_batch_item_failures=True)
        )
        self.signing_secret.grant_read(self.webhook)
        jobs.grant_table(self.webhook, READ_TRANSITION)

    def _status_events(self, functions: Functions, jobs: Jobs, base: NotifySettings) -> None:
        """The notify function on the table's stream: events, metrics, webhook messages, the
        operator's hourly counters; batches it could not handle go to the Failures queue."""
        settings = base.model_copy(
            update={"webhooks_queue_url": self.webhooks.queue.queue_url, "table_name": jobs.table.table_name}
        )
        self.function = functions.add(self, "notify", settings, timeout=Duration.seconds(60), memory=256)
        self.webhooks.queue.grant_send_messages(self.function)
        self.failures = secure_queue(self, "Failures", retention_seconds=DLQ_RETENTION_SECONDS)
        self.function.add_event_source(
            sources.DynamoEventSource(
                jobs.table,
                starting_position=lambda_.StartingPosition.LATEST,
                batch_size=NOTIFY_BATCH_SIZE,
                retry_attempts=NOTIFY_RETRY_ATTEMPTS,
                bisect_batch_on_error=True,
                on_failure=sources.SqsDlq(self.failures),
                report_batch_item_failures=False,
            )
        )
        jobs.grant_stats_counters(self.function)
        events.EventBus.from_event_bus_name(self, "Bus", settings.event_bus_name).grant_put_events_to(self.function)
