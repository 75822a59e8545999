"""Creating a step Job whose input (or a file beside it) is staged in a ConfigMap (plan/staging.py).

Order, chosen so that every step can run twice and no pod ever waits for a ConfigMap that will not come:
1. the ConfigMap, named after the Job (409: an earlier try made it; same name, same content);
2. the Job (409 fine); its pods mount the ConfigMap, which is there already;
3. the Job becomes the ConfigMap's owner, so the garbage collector removes both together.
A crash between 1 and 3 is repaired by the next reconcile while the Job is still planned; if its inputs
changed meanwhile, the ConfigMap is left without an owner (labelled with the asset and step to find it).
"""

from __future__ import annotations

from typing import Any

from kubemam.kubeapi import KubeApi
from kubemam.plan import staging


def create_step_job(api: KubeApi, job: dict[str, Any]) -> str | None:
    """Create the Job (and its staged ConfigMap first): the new Job's uid, or None when it existed already."""
    config_map = staging.config_map(job)
    if config_map is not None:
        api.create_config_map(config_map)
    created = api.create_job(job)
    if config_map is not None:
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        uid = created if created is not None else api.job_uid(namespace, name)
        if uid is not None:
            api.set_config_map_owner(namespace, config_map["metadata"]["name"], staging.owner_reference(name, uid))
    return created
