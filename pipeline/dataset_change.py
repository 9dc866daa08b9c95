"""What a `dppp generate` run does to the dataset already at its output, decided before anything is written:
start it, resume it, replace it (--overwrite), grow it (--extend) or mend it (--repair).

`plan_change` only reads, so `--dry-run` says what the run would do and refuses what the run would refuse.
The run then `uncommit`s the shards the change re-renders (their records removed first: a reader never
trusts a shard about to be replaced, and a crash leaves them for a plain rerun to render) before it
writes dataset.json. Destructive changes (--overwrite, --extend) are refused while another job holds
live leases on the output (pipeline/leases.py): one writer at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dppp.dataset.format import record_name
from dppp.dataset.records import DATASET_MANIFEST, read_dataset_manifest
from dppp.foundation.errors import SettingError
from dppp.foundation.parallel import ordered_map
from dppp.foundation.storage.base import Storage
from dppp.pipeline.config import RUN_ONLY_FIELDS
from dppp.pipeline.leases import JobIdentity, refuse_while_leased
from dppp.pipeline.verify import verify_dataset

# Problems of a planned shard that --repair mends by rendering it again (`extra` objects are left alone).
REPAIRED_KINDS = {"missing", "truncated", "corrupted", "unsafe", "foreign", "incomplete", "uncommitted"}


@dataclass
class DatasetChange:
    mode: str  # "new", "resume", "overwrite", "extend" or "repair"
    reopen: list[int] = field(default_factory=list)  # committed shards to render again
    lines: list[str] = field(default_factory=list)  # what the run will do, in words
    rewrite_index: bool = False  # merge index.parquet even when no shard is rendered


def plan_change(
    plan,
    storage: Storage,
    *,
    job: JobIdentity,
    overwrite: bool = False,
    extend: bool = False,
    repair: bool = False,
) -> DatasetChange:
    """Check the output against `plan` (pipeline/generate.py Plan) and the flags; reads only. Raises
    SettingError (exit 2) for what the run refuses, saying why."""
    if overwrite + extend + repair > 1:
        raise SettingError("generate", "--overwrite, --extend and --repair cannot be combined")
    if not storage.exists(DATASET_MANIFEST):
        for flag, asked in (("repair", repair), ("extend", extend)):
            if asked:
                raise SettingError(
                    flag, f"no dataset at {storage.url} (no {DATASET_MANIFEST}); run without --{flag}"
                )
        return DatasetChange("new", lines=[f"new dataset: {len(plan.shards)} shards to render"])
    previous = read_dataset_manifest(storage)
    if overwrite:
        refuse_while_leased(storage, job, "overwrite")
        return DatasetChange(
            "overwrite", lines=[f"replace the dataset at {storage.url}: every shard rendered"]
        )
    if extend:
        refuse_while_leased(storage, job, "extend")
        return _extend(plan, previous, storage)
    if previous.get("fingerprint") != plan.fingerprint:
        differs = config_differences(previous, plan)
        raise SettingError(
            "overwrite",
            f"{storage.url} holds a dataset generated from another config ({differs}); refusing to mix "
            "them (set this to replace it, or write to another generate.out)",
        )
    if repair:
        return _repair(plan, storage)
    return DatasetChange("resume", lines=[f"resume the dataset at {storage.url}"])


def uncommit(storage: Storage, indices: list[int]) -> None:
    """Remove the shards' commit records: they are rendered again (a missing one is no error)."""
    for _ in ordered_map(lambda index: storage.delete(record_name(index)), indices):
        pass


# ------------------------------------------------------------------------------------------- extend


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return flat
    return {prefix: value}


def changed_settings(previous: dict[str, Any], plan) -> dict[str, tuple[Any, Any]]:
    """Decisive settings (dotted, under generate.) whose value differs: name -> (dataset's, config's)."""
    old = _flatten({k: v for k, v in (previous.get("config") or {}).items() if k not in RUN_ONLY_FIELDS})
    new = _flatten(plan.config.model_dump(mode="json", exclude=RUN_ONLY_FIELDS))
    changed = {
        f"generate.{name}": (old.get(name), new.get(name))
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    }
    if previous.get("taxonomy_sha256") != plan.engine.taxonomy_hash:
        changed["taxonomy"] = ("its taxonomy", "another taxonomy")
    return changed


def config_differences(previous: dict[str, Any], plan) -> str:
    changed = changed_settings(previous, plan)
    if not changed:
        return "another code version's fingerprint"
    shown = [f"{name}: {old!r} -> {new!r}" for name, (old, new) in list(changed.items())[:4]]
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    return "differs in " + ", ".join(shown) + more


def _extend(plan, previous: dict[str, Any], storage: Storage) -> DatasetChange:
    """--extend: the same config but for more identities. Identities are prefix-stable (pid p's views
    depend on the seed and p only), so the old shards stay; the last one is rendered again when it held
    fewer than ids_per_shard identities."""
    changed = changed_settings(previous, plan)
    old_identities = (previous.get("config") or {}).get("identities")
    others = {name: values for name, values in changed.items() if name != "generate.identities"}
    if others:
        shown = ", ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in others.items())
        raise SettingError(
            "extend", f"--extend only adds identities; the config also changes {shown} (use --overwrite)"
        )
    new_identities = plan.config.identities
    if not isinstance(old_identities, int) or new_identities < old_identities:
        raise SettingError(
            "extend",
            f"--extend grows a dataset: {storage.url} has {old_identities} identities, asked for "
            f"{new_identities} (use --overwrite to make a smaller one)",
        )
    per_shard = plan.config.ids_per_shard
    old_shards = -(-old_identities // per_shard)
    if new_identities == old_identities:
        return DatasetChange("resume", lines=[f"{storage.url} already has {new_identities} identities"])
    reopen = [old_shards - 1] if old_identities % per_shard else []
    added = len(plan.shards) - old_shards
    lines = [
        f"extend {storage.url}: {old_identities} -> {new_identities} identities; "
        + (f"{added} new shard(s) ({old_shards}..{len(plan.shards) - 1})" if added else "no new shard")
        + (
            f", shard {reopen[0]} rendered again (it held {old_identities % per_shard} of {per_shard})"
            if reopen
            else ""
        )
        + f", {old_shards - len(reopen)} shard(s) untouched; index rewritten"
    ]
    return DatasetChange("extend", reopen=reopen, lines=lines, rewrite_index=True)


# ------------------------------------------------------------------------------------------- repair


def _repair(plan, storage: Storage) -> DatasetChange:
    """--repair: a deep verify (windowed, as `dppp shards verify --deep`); every planned shard with a
    problem is rendered again, and the index merged anew."""
    report = verify_dataset(storage.url, deep=True, config=plan.config.storage)
    damaged: dict[int, str] = {}
    for check in report.checks:
        if check.index is not None and check.index < len(plan.shards) and check.status in REPAIRED_KINDS:
            damaged.setdefault(check.index, check.status)
    if damaged:
        shown = ", ".join(f"{index} ({kind})" for index, kind in sorted(damaged.items())[:10])
        more = f" and {len(damaged) - 10} more" if len(damaged) > 10 else ""
        lines = [f"repair {storage.url}: {len(damaged)} shard(s) rendered again: {shown}{more}"]
    else:
        lines = [f"repair {storage.url}: every shard verified (deep); nothing to render"]
    lines += [f"dataset problem: {problem}" for problem in report.dataset_problems]
    lines += [f"note: {note}" for note in report.notes]
    lines.append("index rewritten from the fragments")
    return DatasetChange("repair", reopen=sorted(damaged), lines=lines, rewrite_index=True)
