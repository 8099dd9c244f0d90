"""AWS list prices, us-east-1, as published on the services' pricing pages.

As of: 2025 list prices (DynamoDB on-demand after its November 2024 reduction), unchanged as far
as the author could verify on 2026-11-26 (this machine has no access to the pricing pages: check
them before relying on a figure, and update this file, which every cost figure is computed from).
"""

from __future__ import annotations

AS_OF = "2025 list prices, us-east-1 (re-checked 2026-11-26)"

# AWS Lambda, arm64 (Graviton), first pricing tier. https://aws.amazon.com/lambda/pricing/
LAMBDA_ARM64_PER_GB_SECOND = 0.0000133334
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
# Step Functions Standard workflows. https://aws.amazon.com/step-functions/pricing/
STEP_FUNCTIONS_PER_TRANSITION = 0.025 / 1_000
# DynamoDB on-demand, Standard table class. https://aws.amazon.com/dynamodb/pricing/on-demand/
DYNAMODB_PER_WRITE_UNIT = 0.625 / 1_000_000
DYNAMODB_PER_READ_UNIT = 0.125 / 1_000_000
# KMS: symmetric requests (Encrypt, Decrypt, GenerateDataKey). https://aws.amazon.com/kms/pricing/
KMS_PER_REQUEST = 0.03 / 10_000
# S3 Standard. https://aws.amazon.com/s3/pricing/
S3_PER_PUT = 0.005 / 1_000  # PUT, COPY, POST, LIST
S3_PER_GET = 0.0004 / 1_000  # GET, SELECT and all other requests
# API Gateway REST APIs, first 333 million requests a month. https://aws.amazon.com/api-gateway/pricing/
API_GATEWAY_REST_PER_REQUEST = 3.50 / 1_000_000
# ECS Fargate, Linux, per vCPU-hour and GB-hour. https://aws.amazon.com/fargate/pricing/
FARGATE_ARM64_PER_VCPU_HOUR = 0.03238
FARGATE_ARM64_PER_GB_HOUR = 0.00356
FARGATE_X86_PER_VCPU_HOUR = 0.04048
FARGATE_X86_PER_GB_HOUR = 0.004445
HOURS_PER_MONTH = 730
# EventBridge custom events (the template publishes none). https://aws.amazon.com/eventbridge/pricing/
EVENTBRIDGE_PER_EVENT = 1.00 / 1_000_000

S3_PUT_OPERATIONS = frozenset({"PutObject", "CopyObject", "ListObjectsV2", "DeleteObjects", "CreateMultipartUpload"})
