"""Every file in cluster/ parses and holds what a real deployment needs, consistently.

Checks: YAML (multi-doc) parses; Kubernetes objects have apiVersion/kind/metadata/spec;
RayCluster/RayJob have a CPU head and a GPU worker group with nvidia.com/gpu limits;
RayJob entrypoints run `vlm-eval run /jobs/X.yaml` (or jobs/submit.py) with a job file
that exists in jobs/ and validates; images are the same everywhere and their tag is
the package version; the Dockerfile installs the [vllm,s3] extras on a Ray base of
the cluster's rayVersion and copies jobs/ to /jobs; the launcher YAML has
provider/available_node_types/head_node_type and a GPU worker type; no credentials
are inline anywhere.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
JOBS = ROOT / "jobs"
YAML_FILES = sorted(CLUSTER.glob("*.yaml"))
K8S_FILES = [p for p in YAML_FILES if p.name.startswith("kuberay-")]
LAUNCHER = CLUSTER / "aws-cluster-launcher.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE_RE = re.compile(r"^ghcr\.io/[\w.-]+/vlm-eval:(?P<tag>[\w.-]+)$")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _all_k8s_objects() -> list[dict]:
    """Every Kubernetes object, including RayJobs templated inside ConfigMaps."""
    out = []
    for path in K8S_FILES:
        for doc in _docs(path):
            out.append(doc)
            if doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        out += [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and "kind" in d]
    return out


def _walk(obj, key: str):
    """Every value under ``key`` anywhere in a nested structure."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)


def _cluster_specs() -> list[tuple[str, dict]]:
    specs = []
    for obj in _all_k8s_objects():
        if obj["kind"] == "RayCluster":
            specs.append((obj["metadata"]["name"], obj["spec"]))
        elif obj["kind"] == "RayJob":
            specs.append((obj["metadata"]["name"], obj["spec"]["rayClusterSpec"]))
    return specs


def _dockerfile_ray_version() -> str:
    m = re.search(r"rayproject/ray(?:-ml)?:(\d+\.\d+\.\d+)", DOCKERFILE.read_text())
    assert m, "cluster/Dockerfile must build FROM a rayproject/ray image with an explicit version"
    return m.group(1)


def test_expected_files_exist():
    for name in ("kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "kuberay-nightly-cronjob.yaml",
                 "aws-cluster-launcher.yaml", "local-cluster.sh", "Dockerfile"):
        assert (CLUSTER / name).is_file(), name
    assert (JOBS / "submit.py").is_file()


@pytest.mark.parametrize("path", K8S_FILES, ids=[p.name for p in K8S_FILES])
def test_kubernetes_objects_are_complete(path):
    docs = _docs(path)
    assert docs
    for doc in docs:
        for field in ("apiVersion", "kind", "metadata"):
            assert field in doc, f"{path.name}: {doc.get('kind')} lacks {field}"
        assert doc["metadata"].get("name"), f"{path.name}: {doc['kind']} has no metadata.name"
        if doc["kind"] not in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret"):
            assert "spec" in doc, f"{path.name}: {doc['kind']} lacks spec"
        if doc["kind"] in ("RayCluster", "RayJob", "RayCronJob"):
            assert doc["apiVersion"] == "ray.io/v1"


def test_each_kuberay_file_has_its_kind():
    kinds = {p.name: {d["kind"] for d in _docs(p)} for p in K8S_FILES}
    assert "RayCluster" in kinds["kuberay-raycluster.yaml"]
    assert "RayJob" in kinds["kuberay-rayjob.yaml"]
    nightly = kinds["kuberay-nightly-cronjob.yaml"]
    assert "CronJob" in nightly or "RayCronJob" in nightly
    scheduled = [o for o in _all_k8s_objects() if o["kind"] in ("CronJob", "RayCronJob")]
    for obj in scheduled:
        assert len(obj["spec"]["schedule"].split()) == 5, "schedule must be a 5-field cron expression"
    # The nightly run creates a RayJob (templated in a ConfigMap, or a RayCronJob's jobTemplate).
    assert any(o["kind"] == "RayJob" for o in _all_k8s_objects()
               if o.get("metadata", {}).get("name", "").startswith("padchest-nightly")) or \
        any(o["kind"] == "RayCronJob" for o in scheduled)


@pytest.mark.parametrize("name,spec", _cluster_specs(), ids=[n for n, _ in _cluster_specs()])
def test_cpu_head_and_gpu_worker_group(name, spec):
    assert spec["rayVersion"] == _dockerfile_ray_version(), f"{name}: rayVersion != Dockerfile's Ray"
    head = spec["headGroupSpec"]
    head_containers = head["template"]["spec"]["containers"]
    assert head_containers
    for c in head_containers:
        assert "nvidia.com/gpu" not in (c.get("resources", {}).get("limits") or {}), f"{name}: head is CPU-only"
    groups = spec["workerGroupSpecs"]
    gpu_groups = [g for g in groups
                  if any(int((c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0)) >= 1
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, f"{name}: no worker group with nvidia.com/gpu limits"
    for g in gpu_groups:
        assert g["groupName"]
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        for c in g["template"]["spec"]["containers"]:
            res = c["resources"]
            assert res["limits"]["nvidia.com/gpu"] == res.get("requests", {}).get("nvidia.com/gpu", res["limits"]
                                                                              ["nvidia.com/gpu"])


def _entrypoint_job_files() -> list[tuple[str, Path, list[str]]]:
    """(RayJob name, job file in jobs/, --set overrides) for every RayJob entrypoint."""
    out = []
    for obj in _all_k8s_objects():
        if obj["kind"] != "RayJob":
            continue
        argv = shlex.split(obj["spec"]["entrypoint"])
        if argv[:2] == ["vlm-eval", "run"]:
            rest = argv[2:]
        elif argv[:2] == ["python", "jobs/submit.py"] or argv[:2] == ["python", "/jobs/submit.py"]:
            rest = argv[2:]
        else:
            raise AssertionError(f"{obj['metadata']['name']}: entrypoint must be `vlm-eval run JOB` or "
                                 f"`python jobs/submit.py JOB`, got {argv}")
        job = rest[0]
        # The image copies jobs/ to /jobs (Dockerfile); relative paths are the repo's.
        rel = job.removeprefix("/jobs/") if job.startswith("/jobs/") else job.removeprefix("jobs/")
        overrides = [rest[i + 1] for i, a in enumerate(rest) if a == "--set"]
        out.append((obj["metadata"]["name"], JOBS / rel, overrides))
    return out


def test_rayjob_entrypoints_name_existing_valid_job_files():
    from vlm_eval.config import load_job

    found = _entrypoint_job_files()
    assert found
    for name, path, overrides in found:
        assert path.is_file(), f"{name}: job file {path} does not exist in jobs/"
        overrides = [o.replace("RUN_DATE", "20260101") for o in overrides]
        job = load_job(str(path), overrides)
        assert job.resources.gpus_per_actor >= 1, f"{name}: a GPU cluster job should ask for GPUs"


def test_images_are_consistent_and_match_the_package_version():
    images = set()
    for obj in _all_k8s_objects():
        images |= {img for img in _walk(obj, "image") if isinstance(img, str) and "vlm-eval" in img}
    launcher = _docs(LAUNCHER)[0]
    images.add(launcher["docker"]["image"])
    assert len(images) == 1, f"different vlm-eval images: {images}"
    image = images.pop()
    m = IMAGE_RE.match(image)
    assert m and m.group("tag") == VERSION, f"{image}: tag must be the package version {VERSION}"
    assert image in DOCKERFILE.read_text(), "cluster/Dockerfile's build command must name the same image"


def test_dockerfile_installs_the_cluster_extras_and_jobs():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM\s+\S+", text, re.M)
    install = re.search(r"pip install[^\n]*\[(?P<extras>[\w,\s-]+)\]", text)
    assert install, "Dockerfile must pip install vlm-eval with extras"
    extras = {e.strip() for e in install.group("extras").split(",")}
    assert {"vllm", "s3"} <= extras
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared), f"extras {extras - set(declared)} are not declared in pyproject.toml"
    assert re.search(r"^COPY\s+(--\S+\s+)*jobs\s+/jobs\s*$", text, re.M), "Dockerfile must copy jobs/ to /jobs"


def test_cluster_launcher_has_provider_node_types_and_gpu_workers():
    cfg = _docs(LAUNCHER)[0]
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        assert key in cfg, key
    assert cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu_types = [n for n, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_types and cfg["head_node_type"] not in gpu_types
    for name in gpu_types:
        assert types[name]["max_workers"] >= types[name].get("min_workers", 0)
        assert types[name]["node_config"]["InstanceType"]
    # Credentials from the instance role.
    for t in types.values():
        assert "IamInstanceProfile" in t["node_config"]


def test_no_inline_credentials():
    secret_like = re.compile(r"(AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]\s*\S+|"
                             r"AWS_SECRET_ACCESS_KEY\s*[:=]\s*['\"]?[A-Za-z0-9/+]{20,})", re.I)
    for path in [*CLUSTER.iterdir(), JOBS / "submit.py", *JOBS.rglob("*.yaml")]:
        if path.is_file():
            assert not secret_like.search(path.read_text()), f"{path}: looks like an inline credential"
    # Secrets are only ever referenced (secretKeyRef / secretRef), never given as values.
    for obj in _all_k8s_objects():
        for env in _walk(obj, "env"):
            for var in env if isinstance(env, list) else []:
                if "SECRET" in var["name"] or "ACCESS_KEY" in var["name"]:
                    assert "valueFrom" in var and "value" not in var, var["name"]


def test_local_cluster_script_is_valid_bash_and_never_runs_ray_stop():
    script = CLUSTER / "local-cluster.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    code = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert "ray stop" not in code
    assert "--block" in code and "--temp-dir" in code


def test_runtime_env_example_and_submit_entry():
    env = yaml.safe_load((JOBS / "runtime" / "runtime_env.yaml").read_text())
    assert set(env) <= {"working_dir", "excludes", "pip", "env_vars", "py_modules", "conda", "uv", "config"}
    pkgs = env["pip"]["packages"] if isinstance(env["pip"], dict) else env["pip"]
    # This project from the uploaded source tree, with the GPU extras.
    assert env["working_dir"] == "." and pkgs == ["${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}[vllm,s3]"]
    assert {".venv", ".git", "runs"} <= set(env["excludes"])
    assert not any(k.startswith("AWS_SECRET") or k.startswith("AWS_ACCESS") for k in env.get("env_vars", {}))
    import runpy

    submit = runpy.run_path(str(JOBS / "submit.py"))
    assert submit["main"](["--help"]) == 0


# --- installing: never this project's name from the package index (#14.2) ---------------
OUR_NAMES = {"vlm-eval", "vlm_eval", "vlm.eval"}
INSTALL_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), DOCKERFILE, ROOT / "Makefile",
                *sorted((ROOT / "scripts").glob("*.sh")), *sorted(CLUSTER.glob("*.sh")),
                *sorted((ROOT / "vlm_eval").rglob("*.py"))]  # install hints in error messages too


def _requirement_name(token: str) -> str | None:
    """The distribution name a pip argument asks the index for; None for paths, URLs and wheels."""
    token = token.strip("'\"")
    if not token or token.startswith(("-", ".", "/", "$", "~", "<")) or "://" in token or token.endswith(".whl"):
        return None
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", token)
    return m.group(1).lower().replace("_", "-") if m else None


def _pip_install_args(text: str) -> list[tuple[int, str]]:
    """(line number, argument) of every `pip install ...` in shell, Dockerfile or Markdown text."""
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r"pip3?\s+install\s+([^#;&|\n]*)", line):
            try:
                args = shlex.split(m.group(1).rstrip("\\ "))
            except ValueError:
                args = m.group(1).split()
            out += [(no, a) for a in args]
    return out


def test_installing_never_resolves_this_project_from_the_index():
    """`pip install vlm-eval...` installs an unrelated project of that name: only paths or wheels."""
    bad = []
    for path in INSTALL_DOCS:
        for no, arg in _pip_install_args(path.read_text()):
            name = _requirement_name(arg)
            if name and name.replace(".", "-") in {n.replace(".", "-").replace("_", "-") for n in OUR_NAMES}:
                bad.append(f"{path.relative_to(ROOT)}:{no}: pip install {arg}")
    for path in sorted(JOBS.rglob("runtime_env*.yaml")):
        env = yaml.safe_load(path.read_text())
        pip = env.get("pip") or []
        for arg in pip["packages"] if isinstance(pip, dict) else pip:
            name = _requirement_name(arg)
            if name and name in {"vlm-eval", "vlm.eval"}:
                bad.append(f"{path.relative_to(ROOT)}: pip package {arg}")
    assert not bad, "installs this project by name from the package index (someone else's project):\n" + \
        "\n".join(bad)
    # The check itself: it finds what it must, and lets paths through.
    assert _requirement_name("'vlm-eval[vllm,s3]'") == "vlm-eval" and _requirement_name("vlm_eval==0.1") == "vlm-eval"
    assert _requirement_name("'.[vllm,s3]'") is None and _requirement_name("/opt/vlm-eval[vllm]") is None
    assert _requirement_name("dist/vlm_eval-0.1.0-py3-none-any.whl") is None


def test_dockerignore_keeps_the_venv_and_runs_out_of_the_build_context():
    ignore = ROOT / ".dockerignore"
    assert ignore.is_file(), "without .dockerignore `docker build .` sends the whole .venv as context"
    patterns = {ln.strip().rstrip("/") for ln in ignore.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")}
    assert {".venv", ".git", ".cache", "runs"} <= patterns
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+\s*$", DOCKERFILE.read_text(), re.M)
    for srcs in copied:  # nothing the image needs is ignored
        for src in srcs.split():
            assert src.rstrip("/") not in patterns, f".dockerignore drops {src}, which the Dockerfile copies"


# --- KubeRay: every object valid, GPUs released, volumes exist (#14.3) -------------------
def _pod_templates() -> list[tuple[str, dict]]:
    out = []
    for obj in _all_k8s_objects():
        name = obj["metadata"]["name"]
        if obj["kind"] in ("RayCluster", "RayJob"):
            spec = obj["spec"] if obj["kind"] == "RayCluster" else obj["spec"]["rayClusterSpec"]
            out.append((f"{name}/head", spec["headGroupSpec"]["template"]))
            out += [(f"{name}/{g['groupName']}", g["template"]) for g in spec["workerGroupSpecs"]]
        elif obj["kind"] == "CronJob":
            out.append((name, obj["spec"]["jobTemplate"]["spec"]["template"]))
    return out


def test_every_kubernetes_object_validates_with_kubernetes_validate():
    kv = pytest.importorskip("kubernetes_validate")
    checked = 0
    for obj in _all_k8s_objects():
        if obj["apiVersion"].startswith("ray.io/"):
            continue  # KubeRay CRDs: their pod templates are validated below, their fields in the next test
        for version in ("1.29", "1.31"):
            kv.validate(obj, version, strict=True)
        checked += 1
    for name, template in _pod_templates():  # the pods KubeRay creates, as core PodTemplates
        kv.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name.replace("/", "-")},
                     "template": template}, "1.31", strict=True)
        checked += 1
    assert checked >= 10


def test_rayjobs_release_gpu_pods_within_minutes_and_state_the_kuberay_floor():
    rayjobs = [o for o in _all_k8s_objects() if o["kind"] == "RayJob"]
    assert len(rayjobs) >= 2
    for job in rayjobs:
        spec, name = job["spec"], job["metadata"]["name"]
        assert spec["shutdownAfterJobFinishes"] is True, name
        assert 0 <= spec["ttlSecondsAfterFinished"] <= 300, f"{name}: GPU pods run on until the TTL expires"
        assert spec["entrypoint"] and spec["activeDeadlineSeconds"] > 0
        if "backoffLimit" in spec:  # KubeRay >= 1.2: every file and README must say so
            for path in [*K8S_FILES, ROOT / "README.md"]:
                text = path.read_text()
                assert ">= 1.1" not in text and "≥ 1.1" not in text, f"{path.name} states KubeRay >= 1.1"
            assert ">= 1.2" in (ROOT / "README.md").read_text()


def test_nightly_keeps_few_old_rayjobs_and_runs_no_kubectl_image():
    text = (CLUSTER / "kuberay-nightly-cronjob.yaml").read_text()
    cron = next(o for o in _all_k8s_objects() if o["kind"] == "CronJob")
    assert cron["spec"]["successfulJobsHistoryLimit"] <= 3 and cron["spec"]["failedJobsHistoryLimit"] <= 3
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    images = [c["image"] for c in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]]
    assert all(IMAGE_RE.match(i) for i in images), f"only the project's image (no withdrawn kubectl tags): {images}"
    assert "kubectl" not in " ".join(images)
    cm = next(o for o in _all_k8s_objects() if o["kind"] == "ConfigMap")
    script = cm["data"]["nightly.py"]
    compile(script, "nightly.py", "exec")
    assert "DELETE" in script and "KEEP_RAYJOBS" in script and "vlm-eval/schedule=nightly" in script
    env = {e["name"]: e.get("value") for e in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
           ["env"]}
    assert 1 <= int(env["KEEP_RAYJOBS"]) <= 5
    role = next(o for o in _all_k8s_objects() if o["kind"] == "Role")
    assert {"create", "get", "list", "delete"} <= set(role["rules"][0]["verbs"])
    nightly = next(o for o in _all_k8s_objects() if o["kind"] == "RayJob" and "nightly" in o["metadata"]["name"])
    assert nightly["metadata"]["labels"]["vlm-eval/schedule"] == "nightly"  # what the cleanup selects
    assert "bitnami/kubectl" not in text


def test_every_mounted_volume_is_created_or_defined():
    objs = _all_k8s_objects()
    pvcs = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    configmaps = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    for name, template in _pod_templates():
        pod = template["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{name}: mounts undefined volume {m['name']}"
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert claim in pvcs, f"{name}: mounts PVC {claim} that no file in cluster/ creates"
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"{name}: ConfigMap {v['configMap']['name']} missing"
