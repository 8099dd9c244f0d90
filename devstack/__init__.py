"""The local stack: AWS resources from template.yaml on moto, the real handlers, a local Fargate."""
