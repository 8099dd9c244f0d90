"""`make bench` (`python -m benchmarks`): speed, memory and cost figures for docs/performance.md.

Every timing is a ratio against a baseline measured in the same run, on the same machine:
absolute milliseconds on a 2-core CI box mean little, the ratio to "what boto3 alone costs"
does. Nothing here talks to AWS: moto answers (in-process, or a moto server on loopback), and
the load test drives the local stack (`python -m devstack`) on loopback only.
"""
