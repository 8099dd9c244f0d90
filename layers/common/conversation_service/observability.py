"""Powertools logger, tracer and metrics shared by every function."""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE_NAME = "conversations"
METRICS_NAMESPACE = "OpenHandsConversations"

# botocore logs every call's parameters at DEBUG (RunTask's overrides hold the sandbox token):
# whatever level the service logs at, the AWS SDK and HTTP libraries never go below INFO.
for _library in ("botocore", "boto3", "urllib3", "s3transfer"):
    _sdk_logger = logging.getLogger(_library)
    _sdk_logger.setLevel(max(_sdk_logger.level, logging.INFO))

logger = Logger(service=SERVICE_NAME)
# Only the clients whose calls we trace: AWS (botocore) and plain HTTP (httplib: the git remote a
# create reads). Powertools' default patches every library X-Ray supports, which imports
# `requests` (and charset_normalizer) into every function only to wrap it: a tenth of a bare
# boto3 handler's cold start, for a library nothing here uses.
TRACED_MODULES = ("botocore", "httplib")
tracer = Tracer(service=SERVICE_NAME, patch_modules=TRACED_MODULES)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)


def _emit(name: str, unit: MetricUnit, value: float, dimensions: dict[str, str]) -> None:
    """One metric with its own dimensions, written at once (CloudWatch embedded metric format)."""
    with single_metric(name=name, unit=unit, value=value, namespace=METRICS_NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE_NAME)
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension)


def record_phase_duration(phase: str, seconds: float) -> None:
    _emit("PhaseDuration", MetricUnit.Seconds, seconds, {"phase": phase})


def record_time_to_running(seconds: float, start: str | None = None) -> None:
    _emit("TimeToRunning", MetricUnit.Seconds, seconds, {})
    if start:  # warm and cold starts apart: the pool's effect
        _emit("TimeToRunningByStart", MetricUnit.Seconds, seconds, {"start": start})


def record_conversation_error(error_code: str) -> None:
    _emit("ConversationErrors", MetricUnit.Count, 1, {})
    _emit("ConversationErrorsByCode", MetricUnit.Count, 1, {"error_code": error_code})


def record_rejection(msg_id: str) -> None:
    _emit("CreateRejections", MetricUnit.Count, 1, {"reason": msg_id})


def record_sandbox_start(start: str) -> None:
    """One per launched sandbox: warm (an idle pool sandbox claimed) or cold (RunTask)."""
    _emit("SandboxStarts", MetricUnit.Count, 1, {"start": start})


def record_pool_claim_latency(latency_ms: float, idle_age_seconds: float | None) -> None:
    """One per claim attempt; the claimed sandbox's time idle when it won one."""
    _emit("PoolClaimLatency", MetricUnit.Milliseconds, latency_ms, {})
    if idle_age_seconds is not None:
        _emit("PoolClaimedIdleAge", MetricUnit.Seconds, idle_age_seconds, {})


def record_pool_size(*, idle: int, launching: int, oldest_idle_seconds: float) -> None:
    """After each reconcile: what the pool holds."""
    _emit("PoolIdleSandboxes", MetricUnit.Count, idle, {})
    _emit("PoolLaunchingSandboxes", MetricUnit.Count, launching, {})
    _emit("PoolOldestIdleAge", MetricUnit.Seconds, oldest_idle_seconds, {})
