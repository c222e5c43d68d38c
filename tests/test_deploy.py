"""Structure and consistency of ray_cluster.yaml and deploy/ (no cloud, no cluster needed)."""

from __future__ import annotations

import configparser
import copy
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _torch_pin() -> str:
    pins = [d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch")]
    assert len(pins) == 1 and "==" in pins[0], f"pyproject must pin torch exactly: {pins}"
    return pins[0].replace(" ", "")


def _cluster() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name, doc in _k8s_docs() if doc["kind"] == kind]


def _configmap(name: str) -> dict[str, Any]:
    found = [d for _, d in _by_kind("ConfigMap") if d["metadata"]["name"] == name]
    assert len(found) == 1, f"ConfigMap {name!r} referenced but defined {len(found)} times"
    return found[0]


def _rayjob_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every RayJob spec in deploy/: standalone, RayCronJob templates, and ConfigMap-embedded."""
    specs = [(f"{n}:RayJob", d["spec"]) for n, d in _by_kind("RayJob")]
    specs += [(f"{n}:RayCronJob", d["spec"]["jobTemplate"]) for n, d in _by_kind("RayCronJob")]
    for n, cm in _by_kind("ConfigMap"):
        for key, text in cm.get("data", {}).items():
            if key.endswith(".yaml"):
                doc = yaml.safe_load(text)
                assert doc["kind"] == "RayJob", f"{n}:{key} embeds a {doc['kind']}, not a RayJob"
                specs.append((f"{n}:{key}", doc["spec"]))
    return specs


# --- ray_cluster.yaml --------------------------------------------------------------------


def test_ray_cluster_passes_rays_own_validation() -> None:
    # Ray's launcher fills defaults and validates against ray-schema.json the same way
    # before `ray up`; this runs offline (no AWS call).
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(_cluster())))


def test_ray_cluster_node_types_are_consistent() -> None:
    cfg = _cluster()
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types, f"head_node_type {head!r} not in available_node_types {list(types)}"
    assert types[head]["resources"].get("CPU") == 0, "head must advertise CPU 0 (no tasks)"
    assert types[head]["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != head}
    gpu_workers = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, f"no worker type declares resources GPU >= 1: {list(workers)}"
    for name, t in gpu_workers.items():
        itype = t["node_config"]["InstanceType"]
        assert re.match(r"(g4dn|g5|g6e?|p3|p4d|p5)\.", itype), f"{name}: {itype} has no GPU"
        assert 0 <= t.get("min_workers", 0) <= t["max_workers"] <= cfg["max_workers"], name
    spot = [n for n, t in gpu_workers.items() if "InstanceMarketOptions" in t["node_config"]]
    assert spot, "an optional spot GPU worker type is expected"
    assert any("InstanceMarketOptions" not in t["node_config"] for t in gpu_workers.values())
    assert cfg["idle_timeout_minutes"] > 0


def test_ray_cluster_installs_torch_pin_before_the_package() -> None:
    cfg = _cluster()
    cmds = cfg["setup_commands"]
    pin = _torch_pin()
    torch_at = [i for i, c in enumerate(cmds) if pin in c.replace(" ", "")]
    pkg_at = [i for i, c in enumerate(cmds) if "pip install" in c and "hgn-pipeline" in c]
    assert torch_at, f"no setup command installs {pin}: {cmds}"
    assert pkg_at, f"no setup command installs the package: {cmds}"
    assert torch_at[0] < pkg_at[0], "torch must be installed before the package"
    # The package source that pip installs is the one file_mounts copies from here.
    remote = next(r for r, local in cfg["file_mounts"].items() if local == ".")
    assert remote in cmds[pkg_at[0]], f"{remote!r} (file_mounts of '.') not installed"


def test_ray_cluster_dashboard_on_loopback_with_token_auth() -> None:
    cfg = _cluster()
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds
    assert "0.0.0.0" not in head_cmds
    assert "--num-cpus=0" in head_cmds
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd, f"token auth must stay on: {cmd!r}"
    # Every node and the submitting laptop share one token file.
    assert "~/.ray/auth_token" in cfg["file_mounts"]


# --- Kubernetes ----------------------------------------------------------------------------


def test_every_manifest_parses_with_identity() -> None:
    docs = _k8s_docs()
    kinds = {d["kind"] for _, d in docs}
    assert {"RayJob", "RayCronJob", "CronJob", "Role", "RoleBinding"} <= kinds, kinds
    for name, doc in docs:
        assert doc.get("apiVersion"), f"{name}: {doc.get('kind')} without apiVersion"
        meta = doc.get("metadata", {})
        assert meta.get("name") or meta.get("generateName"), f"{name}: {doc['kind']} unnamed"


@pytest.mark.parametrize("label", [label for label, _ in _rayjob_specs()])
def test_rayjob_specs_are_complete(label: str) -> None:
    spec = dict(_rayjob_specs())[label]
    version = _pyproject()["project"]["version"]
    assert re.match(r"hgn-pipeline (run|nightly) ", spec["entrypoint"]), spec["entrypoint"]
    assert "--address auto" in spec["entrypoint"], "the job must join the RayJob's cluster"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "no tasks on the head"
    containers = [head["template"]["spec"]["containers"][0]]
    gpu_groups = []
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
        c = group["template"]["spec"]["containers"][0]
        containers.append(c)
        if c["resources"]["limits"].get("nvidia.com/gpu") == 1:
            gpu_groups.append(group["groupName"])
    assert gpu_groups, f"{label}: no worker group with nvidia.com/gpu: 1"
    for c in containers:
        assert c["image"].startswith(f"hgn-pipeline:{version}-"), c["image"]
        env = {e["name"]: e for e in c.get("env", [])}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "secretKeyRef" in env[key]["valueFrom"], f"{label}: {key} not from a Secret"
            assert "value" not in env[key], f"{label}: literal {key}"


def _overrides(entrypoint: str) -> dict[str, object]:
    """The ``--set FIELD=VALUE`` overrides of an entrypoint, validated as a run config."""
    from pipeline.cli import parse_overrides
    from pipeline.config import load_config

    argv = shlex.split(entrypoint)
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    overrides = parse_overrides(sets)
    load_config(overrides={**overrides, "checkpoint": "unused"})  # every field is real
    return overrides


@pytest.mark.parametrize("label", [label for label, _ in _rayjob_specs()])
def test_rayjobs_use_every_gpu_the_autoscaler_can_give(label: str) -> None:
    """use_gpu=true (wait for GPU workers, never a CPU actor on the head) and max_actors =
    the GPU groups' maxReplicas x GPUs per pod, so the pool asks for the whole group."""
    spec = dict(_rayjob_specs())[label]
    overrides = _overrides(spec["entrypoint"])
    assert overrides.get("use_gpu") is True, spec["entrypoint"]
    gpus = sum(
        g["maxReplicas"] * g["template"]["spec"]["containers"][0]["resources"]["limits"].get(
            "nvidia.com/gpu", 0)
        for g in spec["rayClusterSpec"]["workerGroupSpecs"]
    )
    assert overrides.get("max_actors") == gpus, (overrides, gpus)


def test_ray_cluster_job_command_uses_every_gpu_worker() -> None:
    cfg = _cluster()
    gpus = sum(t.get("max_workers", 0) * t["resources"].get("GPU", 0)
               for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"])
    text = (ROOT / "ray_cluster.yaml").read_text()
    assert "--set use_gpu=true" in text
    wanted = min(gpus, cfg["max_workers"])
    assert f"--set max_actors={wanted}" in text, wanted


def _parses_as_cli(argv: list[str]) -> None:
    """Parse ``hgn-pipeline <argv>`` with the real CLI (unknown or missing options fail)."""
    import click
    import typer

    from pipeline.cli import app

    group = typer.main.get_command(app)
    name, *rest = argv
    command = group.get_command(click.Context(group), name)
    assert command is not None, f"hgn-pipeline has no command {name!r}"
    command.make_context(name, rest)


@pytest.mark.parametrize("label", [label for label, _ in _rayjob_specs()])
def test_entrypoints_parse_with_the_cli(label: str) -> None:
    argv = shlex.split(dict(_rayjob_specs())[label]["entrypoint"])
    assert argv[0] == "hgn-pipeline"
    _parses_as_cli(argv[1:])


def test_token_auth_on_where_kuberay_supports_it() -> None:
    # KubeRay >= 1.5 shares a generated token with its operator; the dashboard then needs
    # the pod IP (operator and submitter reach it through the head Service).
    for label, spec in _rayjob_specs():
        if "cronjob-legacy" in label:
            continue
        assert spec["rayClusterSpec"]["authOptions"]["mode"] == "token", label


def test_raycronjob_schedule_and_template() -> None:
    (_, cron), = _by_kind("RayCronJob")
    assert len(cron["spec"]["schedule"].split()) == 5, cron["spec"]["schedule"]
    template = cron["spec"]["jobTemplate"]
    assert "spec" not in template, "jobTemplate is a RayJob spec itself, not {spec: ...}"
    assert template["entrypoint"].startswith("hgn-pipeline nightly ")


def test_legacy_cronjob_rbac_covers_its_launcher() -> None:
    (_, cron), = _by_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    sa = pod["serviceAccountName"]
    assert sa in {d["metadata"]["name"] for _, d in _by_kind("ServiceAccount")}
    bindings = [d for _, d in _by_kind("RoleBinding") if any(
        s["kind"] == "ServiceAccount" and s["name"] == sa for s in d["subjects"])]
    assert bindings, f"no RoleBinding for ServiceAccount {sa!r}"
    roles = {d["metadata"]["name"]: d for _, d in _by_kind("Role")}
    granted: set[str] = set()
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role" and b["roleRef"]["name"] in roles, b["roleRef"]
        for rule in roles[b["roleRef"]["name"]]["rules"]:
            if "ray.io" in rule["apiGroups"] and "rayjobs" in rule["resources"]:
                granted |= set(rule["verbs"])

    # The launcher script and the RayJob it creates come from the mounted ConfigMap.
    (volume,) = pod["volumes"]
    cm = _configmap(volume["configMap"]["name"])
    mount = pod["containers"][0]["volumeMounts"][0]["mountPath"]
    command = pod["containers"][0]["command"]
    script_path = next(a for a in command if a.startswith(mount))
    script = cm["data"][Path(script_path).name]
    needed: set[str] = set()
    for verb, args in re.findall(r"kubectl (\w+) ([^\n|)]*)", script):
        if verb == "create":
            manifest = re.search(r"-f (\S+)", args).group(1)
            assert manifest.startswith(mount), manifest
            assert yaml.safe_load(cm["data"][Path(manifest).name])["kind"] == "RayJob"
        else:
            assert args.split()[0] in ("rayjob", "rayjobs"), f"kubectl {verb} {args}"
        needed.add(verb)
        if "-l " in args:
            needed.add("list")  # a label selector is a list call
    assert needed <= granted, f"launcher uses {sorted(needed)}, Role grants {sorted(granted)}"
    assert granted <= {"create", "get", "list", "delete"}, f"more than needed: {granted}"

    # The launcher's selector finds the RayJobs it creates; its deadline outlasts theirs.
    selector = re.search(r"selector=(\S+)", script).group(1)
    key, value = selector.split("=")
    embedded = yaml.safe_load(cm["data"]["rayjob.yaml"])
    assert embedded["metadata"]["labels"][key] == value
    job_deadline = cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert job_deadline > embedded["spec"]["activeDeadlineSeconds"]


# --- systemd -------------------------------------------------------------------------------


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_systemd_timer_runs_the_nightly_service() -> None:
    timer = _unit(SYSTEMD / "hgn-nightly.timer")
    service_name = timer["Timer"]["Unit"]
    assert (SYSTEMD / service_name).is_file(), f"timer points at missing {service_name}"
    assert timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == "timers.target"
    service = _unit(SYSTEMD / service_name)["Service"]
    assert service["Type"] == "oneshot"
    assert " nightly --input ${HGN_INPUT} --output ${HGN_OUTPUT}" in service["ExecStart"]
    assert service["ExecStart"].split()[0].endswith("/hgn-pipeline")
    argv = service["ExecStart"].replace("${HGN_INPUT}", "s3://a/b").replace("${HGN_OUTPUT}", "o")
    _parses_as_cli(shlex.split(argv)[1:])
    assert service["EnvironmentFile"].startswith("/etc/")
    text = (SYSTEMD / service_name).read_text()
    assert "AWS_SECRET_ACCESS_KEY=" not in text, "credentials belong in the EnvironmentFile"
    example = (SYSTEMD / "nightly.env.example").read_text()
    assert re.search(r"^HGN_INPUT=", example, re.M) and re.search(r"^HGN_OUTPUT=", example, re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify() -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", "hgn-nightly.timer", "hgn-nightly.service"],
        cwd=SYSTEMD, capture_output=True, text=True, timeout=60,
    )
    # The only acceptable complaint: the venv path does not exist on this machine.
    problems = [
        line for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert not problems, problems


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_has_both_variants_and_the_pin() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    default = re.search(r"^ARG VARIANT=(\w+)$", text, re.M)
    assert default, "ARG VARIANT=<default> missing"
    stages = {alias: base for base, alias in re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)}
    assert {"torch-cpu", "torch-cuda"} <= set(stages), stages
    assert f"torch-{default.group(1)}" in stages
    assert re.search(r"^FROM torch-\$\{VARIANT\} AS", text, re.M)
    pin = _torch_pin()
    for stage in ("torch-cpu", "torch-cuda"):
        body = text.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert f"pip install {pin}" in body, f"{stage} must install {pin}"
    assert text.index(f"pip install {pin}") < text.index("pip install ."), "torch first"
    assert "download.pytorch.org/whl/cpu" in text.split(" AS torch-cpu\n", 1)[1].split(
        "\nFROM ", 1)[0]
    assert re.search(r"^USER (?!root)\S+", text, re.M), "run as a non-root user"
