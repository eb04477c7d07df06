"""The generic Kubernetes machinery the CoreWeave adapter is a preset of.

Nothing here is CoreWeave's: any GPU cluster reached through the official ``kubernetes``
client works the same way (the next adapter, ``multicloud-kubernetes``, lifts this package
as is). What a preset adds lives in the adapter module that subclasses
:class:`~multicloud_coreweave.kube.adapter.KubernetesAdapter`: which node labels name a GPU
type, which list prices apply, which node states take work.

* :mod:`.errors` — the Kubernetes rows of the error boundary (the HTTP fallback is the kit's).
* :mod:`.cluster` — one API server, its client and its API discovery.
* :mod:`.pools` — GPU node pools read from nodes and pods, priced into offers.
* :mod:`.manifests` — Indexed Job + headless Service, or RayJob, from the kit's pod contract.
* :mod:`.status` — how a Job, a RayJob and their pods read as a workload status.
* :mod:`.adapter` — the Provider: offers, launch, status, terminate, owned.
"""
