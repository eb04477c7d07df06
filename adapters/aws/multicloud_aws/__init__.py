"""multicloud-aws: the AWS adapter of multicloud (EC2 GPU, Trainium and Inferentia instances).

Registered in the ``multicloud.providers`` entry-point group as ``aws``, so
``multicloud.providers.load("aws", regions=["us-*"])`` or a fleet entry ``adapter: aws`` builds
an :class:`AWSProvider`. Modules:

- :mod:`multicloud_aws.provider`: the adapter (launch, status, terminate, orphan sweep).
- :mod:`multicloud_aws.offers`: offers, live prices and owned reservations.
- :mod:`multicloud_aws.launch`: instance facts, quota, images, reservations, placement, EFA.
- :mod:`multicloud_aws.node`: the node contract's AWS binding and the image per family.
- :mod:`multicloud_aws.status`: how a gang ended.
- :mod:`multicloud_aws.errors`: AWS's error rules on the kit's error boundary.
- :mod:`multicloud_aws.session`: credentials and clients.
- :mod:`multicloud_aws.testing`: a fake AWS (moto plus what moto lacks) for tests and demos.

See docs/providers/aws.md for credentials, IAM permissions and options.
"""

from __future__ import annotations

from multicloud_aws.provider import AWSProvider, quota_code

__all__ = ["AWSProvider", "quota_code"]
