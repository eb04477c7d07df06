"""multicloud-aws: the AWS adapter of multicloud (EC2 GPU, Trainium and Inferentia instances).

Registered in the ``multicloud.providers`` entry-point group as ``aws``, so
``multicloud.providers.load("aws", regions=["us-*"])`` or a fleet entry ``adapter: aws`` builds
an :class:`AWSProvider`. Modules:

- :mod:`multicloud_aws.provider`: the adapter (offers, quota check, launch, status, terminate,
  orphan sweep, live pricing).
- :mod:`multicloud_aws.errors`: the AWS error code → ``ProviderError`` table.
- :mod:`multicloud_aws.userdata`: the boot script that runs the workload and reports its end.
- :mod:`multicloud_aws.testing`: a moto server with fault, quota, price and reservation
  injection, for tests and demos (needs the ``test`` extra).

See docs/providers/aws.md for credentials, IAM permissions and options.
"""

from __future__ import annotations

from multicloud_aws.provider import AWSProvider, quota_code

__all__ = ["AWSProvider", "quota_code"]
