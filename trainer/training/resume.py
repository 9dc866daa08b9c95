"""The checkpoint a rerun resumes from, made sound before Ray Train reads it.

Ray Train V2 resumes a run from its own record of the run's checkpoints, `checkpoint_manager_snapshot.json`
in the run folder (docs/training.md): the newest one listed is handed to the workers. It never looks
inside: a newest checkpoint that is damaged (a truncated model.safetensors) fails every start, and one
removed by hand makes Ray Train refuse the run folder altogether (CheckpointManagerInitializationError).
So, on the driver, before Ray Train starts: every listed checkpoint folder must still exist, and the
newest ones are verified (checkpoint.json, the sha256 of each file) until one is sound. Those that are not
are taken out of the snapshot (their folders stay where they are, for a post-mortem) and named with the
reason; Ray Train then resumes from the newest sound one, as if the others had never been reported.

The snapshot is Ray Train's internal format; only its list of checkpoints is edited, and a snapshot this
code does not recognise is left to Ray Train as it is.
"""

from __future__ import annotations

import json
from typing import Any

from dppp.foundation.storage.base import ObjectNotFound
from dppp.foundation.storage.urls import open_storage
from dppp.trainer.methods.checkpoint import stored_checkpoint_problem

SNAPSHOT = "checkpoint_manager_snapshot.json"


def prepare_resume(run_url: str, storage_config) -> list[str]:
    """Drop the run's missing and damaged checkpoints from Ray Train's snapshot, newest first, until the
    newest one left is sound; returns one line per checkpoint skipped, and where the run resumes."""
    storage = open_storage(run_url, storage_config)
    try:
        snapshot = json.loads(storage.read_bytes(SNAPSHOT))
        results = snapshot["checkpoint_results"]
        order = snapshot["checkpoint_report_indices"]
        names = [result["checkpoint_dir_name"] for result in results]
    except ObjectNotFound:
        return []  # a new run
    except (ValueError, KeyError, TypeError):
        return []  # not a snapshot this code knows: Ray Train reports what it makes of it
    skipped: dict[str, str] = {}
    for name in names:
        if next(iter(storage.iter_list(f"{name}/")), None) is None:
            skipped[name] = "its folder is gone"
    resume = None
    for name in sorted(set(names) - set(skipped), key=lambda n: order[names.index(n)], reverse=True):
        problem = stored_checkpoint_problem(storage, name)
        if problem is None:
            resume = name
            break
        skipped[name] = problem
    if not skipped:
        return []
    storage.put_bytes(json.dumps(_without(snapshot, set(skipped), resume)).encode(), SNAPSHOT)
    lines = [f"skipped checkpoint {storage.url_for(name)}: {why}" for name, why in skipped.items()]
    if resume is None:
        lines.append("no sound checkpoint left: the run starts again from step 0")
    else:
        step = json.loads(storage.read_bytes(f"{resume}/checkpoint.json")).get("step")
        lines.append(f"resuming from checkpoint {storage.url_for(resume)} (step {step})")
    return lines


def _without(snapshot: dict[str, Any], dropped: set[str], latest: str | None) -> dict[str, Any]:
    """The snapshot with the `dropped` checkpoints taken out and `latest` as the newest."""
    kept = [
        (result, index)
        for result, index in zip(
            snapshot["checkpoint_results"], snapshot["checkpoint_report_indices"], strict=True
        )
        if result["checkpoint_dir_name"] not in dropped
    ]
    out = dict(snapshot)
    out["checkpoint_results"] = [result for result, _ in kept]
    out["checkpoint_report_indices"] = [index for _, index in kept]
    out["latest_checkpoint_result"] = next(
        (result for result, _ in kept if result["checkpoint_dir_name"] == latest), None
    )
    for key in (
        "validated_checkpoint_dir_names",
        "timed_out_validation_checkpoint_dir_names",
        "failed_validation_checkpoint_dir_names",
    ):
        if isinstance(out.get(key), list):
            out[key] = [name for name in out[key] if name not in dropped]
    return out
