"""deploy/: the Kubernetes manifests are valid against Kubernetes' own schemas (bundled with kubernetes-validate, no
network) and hold what deploy/README.md promises: nodes get exactly the documented capabilities, API pods none,
probes on /health, real settings only, secrets only from the Secret, and kustomizations that list every file."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cellbox.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
DEV = KUBERNETES / "dev"
QUOTA = KUBERNETES / "components" / "workspace-quota"
OPTIONAL = KUBERNETES / "optional"
# The oldest release the manifests need (securityContext.appArmorProfile is a field from 1.30 on) and the newest
# whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Exactly what deploy/README.md ("What a node needs") documents, one reason each.
NODE_CAPABILITIES = {"SYS_ADMIN", "NET_ADMIN", "SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL",
                     "SYS_PTRACE"}
# Settings the other engineer is adding to config.py (issue #15's roles); known here until they land.
UPCOMING_SETTINGS = {"CELLBOX_ROLE", "CELLBOX_NODE_TOKEN"}
SECRET_VARIABLES = {"CELLBOX_DATABASE_URL", "CELLBOX_NODE_TOKEN", "CELLBOX_API_KEYS", "CELLBOX_UPSTREAM_API_KEY",
                    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
NOT_RESOURCES = {"kustomization.yaml"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    """Every file of full Kubernetes objects (kustomizations and the component's partial patch are not)."""
    files = [*BASE.glob("*.yaml"), *DEV.glob("*.yaml")]
    return sorted(f for f in files if f.name not in NOT_RESOURCES)


def _resources() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in _manifest_files():
        for doc in _documents(path):
            yield f"{path.relative_to(KUBERNETES)}:{doc['kind']}/{doc['metadata']['name']}", doc


def _base() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in BASE.glob("*.yaml"):
        if path.name not in NOT_RESOURCES:
            for doc in _documents(path):
                found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


def _workload(kind: str, name: str) -> dict[str, Any]:
    return _base()[kind, name]["spec"]["template"]


def _container(kind: str, name: str) -> dict[str, Any]:
    (container,) = _workload(kind, name)["spec"]["containers"]
    return container


def _node() -> dict[str, Any]:
    return _container("StatefulSet", "cellbox-node")


def _api() -> dict[str, Any]:
    return _container("Deployment", "cellbox-api")


def _containers_everywhere() -> Iterator[tuple[str, dict[str, Any]]]:
    for where, doc in _resources():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            yield f"{where}/{container['name']}", container


# --- Kubernetes' schemas -------------------------------------------------------------------------------------


RESOURCES = list(_resources())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("where", "resource"), RESOURCES, ids=[where for where, _ in RESOURCES])
def test_every_manifest_is_valid_for_kubernetes(where: str, resource: dict[str, Any], version: str) -> None:
    """Strict: a field Kubernetes does not know (a typo, a field of a newer release) fails too."""
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as exc:  # its text holds the whole schema: say only what is wrong
        pytest.fail(f"{where} is not valid for Kubernetes {version}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_the_schemas_are_bundled_and_cover_the_versions() -> None:
    known = kubernetes_validate.utils.all_versions()
    for version in KUBERNETES_VERSIONS:
        assert any(v.startswith(version + ".") for v in known), f"kubernetes-validate has no {version} schemas"


def test_the_validation_catches_a_broken_manifest() -> None:
    broken = yaml.safe_load(yaml.safe_dump(_base()["StatefulSet", "cellbox-node"]))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilitiez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_the_service_monitor_is_optional_and_outside_the_base() -> None:
    """A CRD (Prometheus Operator): not checked against Kubernetes' schemas, and never applied by the base."""
    (monitor,) = _documents(OPTIONAL / "servicemonitor.yaml")
    assert monitor["kind"] == "ServiceMonitor"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"]["name"] == "cellbox"


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _build(directory: Path) -> list[dict[str, Any]]:
    command = _kustomize()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_the_kustomizations_build_valid_manifests(tmp_path: Path) -> None:
    """What `kubectl apply -k` would send, for the base, the dev overlay and the base with workspace quotas."""
    shutil.copytree(KUBERNETES, tmp_path / "kubernetes")
    overlay = tmp_path / "quota"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../kubernetes/base]\ncomponents: [../kubernetes/components/workspace-quota]\n")
    for directory in (tmp_path / "kubernetes/base", tmp_path / "kubernetes/dev", overlay):
        built = _build(directory)
        assert {doc["kind"] for doc in built} >= {"Deployment", "StatefulSet", "HorizontalPodAutoscaler"}
        for doc in built:
            assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "cellbox"
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)
    quota_node = next(d for d in _build(overlay) if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    container = quota_node["containers"][0]
    assert container["securityContext"]["privileged"] is True
    assert {"name": "CELLBOX_SANDBOX_DISK_QUOTA", "value": "on"} in container["env"]


# --- kustomizations list every file ------------------------------------------------------------------------


def _kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def test_the_base_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    files = {p.name for p in BASE.glob("*.yaml")} - NOT_RESOURCES - {"secret.example.yaml"}
    assert set(_kustomization(BASE)["resources"]) == files
    assert _kustomization(BASE)["namespace"] == "cellbox"


def test_the_dev_overlay_lists_every_manifest_and_the_base() -> None:
    files = {p.name for p in DEV.glob("*.yaml")} - NOT_RESOURCES
    assert set(_kustomization(DEV)["resources"]) == files | {"../base"}


def test_the_quota_component_names_its_patch() -> None:
    kustomization = _kustomization(QUOTA)
    assert kustomization["kind"] == "Component"
    patches = {p["path"] for p in kustomization["patches"]}
    assert patches == {p.name for p in QUOTA.glob("*.yaml")} - NOT_RESOURCES


def test_no_yaml_file_is_left_out() -> None:
    """Every YAML file under deploy/kubernetes is one the tests above know."""
    known = {*_manifest_files(), BASE / "kustomization.yaml", DEV / "kustomization.yaml",
             *QUOTA.glob("*.yaml"), OPTIONAL / "servicemonitor.yaml"}
    assert set(KUBERNETES.rglob("*.yaml")) | set(KUBERNETES.rglob("*.yml")) == known


# --- the node's privileges: exactly the documented ones -----------------------------------------------------


def test_the_node_gets_exactly_the_documented_capabilities() -> None:
    security = _node()["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == NODE_CAPABILITIES
    assert len(security["capabilities"]["add"]) == len(NODE_CAPABILITIES)
    assert security["privileged"] is False
    assert security["runAsUser"] == 0  # the engine starts as root and drops every container to its own uid
    assert set(security) == {"runAsUser", "runAsGroup", "runAsNonRoot", "privileged", "allowPrivilegeEscalation",
                             "capabilities", "seccompProfile", "appArmorProfile"}


def test_the_readme_gives_a_reason_for_every_capability_and_no_other() -> None:
    readme = (DEPLOY / "README.md").read_text()
    documented = set(re.findall(r"^\| `CAP_([A-Z_]+)` \|", readme, re.MULTILINE))
    assert documented == NODE_CAPABILITIES


def test_the_node_pod_shares_nothing_of_the_host() -> None:
    """No host network, pids, ipc or paths; the host user namespace only (the engine maps host uids)."""
    pod = _workload("StatefulSet", "cellbox-node")["spec"]
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(field, False)
    assert pod["hostUsers"] is True
    assert not [v for v in pod.get("volumes", []) if "hostPath" in v]
    assert pod["automountServiceAccountToken"] is False


def test_only_the_quota_component_makes_nodes_privileged_and_it_says_so() -> None:
    node_env = {e["name"]: e.get("value") for e in _node()["env"]}
    assert node_env["CELLBOX_SANDBOX_DISK_QUOTA"] == "off"  # loop devices need a privileged pod
    (patch,) = _documents(QUOTA / "privileged-node.yaml")
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"] == {"privileged": True}
    assert {"name": "CELLBOX_SANDBOX_DISK_QUOTA", "value": "on"} in container["env"]


def test_the_node_makes_its_cgroup_writable_before_serving() -> None:
    script = "\n".join(_node()["args"])
    assert "mount -o remount,rw,bind /sys/fs/cgroup" in script
    assert script.rstrip().endswith("exec cellbox serve")


def test_nodes_drain_before_they_stop() -> None:
    command = " ".join(_node()["lifecycle"]["preStop"]["exec"]["command"])
    assert "cellbox node drain" in command


def test_one_node_pod_per_machine() -> None:
    """Each node hands out its uid range as if alone on the machine."""
    affinity = _workload("StatefulSet", "cellbox-node")["spec"]["affinity"]["podAntiAffinity"]
    (rule,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    labels = _workload("StatefulSet", "cellbox-node")["metadata"]["labels"]
    assert rule["labelSelector"]["matchLabels"].items() <= labels.items()


# --- the API pods: no privilege -----------------------------------------------------------------------------


def test_the_api_pods_are_not_privileged() -> None:
    pod = _workload("Deployment", "cellbox-api")["spec"]
    security = _api()["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not [v for v in pod.get("volumes", []) if "hostPath" in v]


# --- probes, metrics, wiring --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), [("Deployment", "cellbox-api"), ("StatefulSet", "cellbox-node")])
def test_probes_ask_health(kind: str, name: str) -> None:
    container = _container(kind, name)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health"
        assert ports.get(check["port"], check["port"]) == 8000
    # The first start of a node builds its warm template: liveness must not kill it meanwhile.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize(("kind", "name"), [("Deployment", "cellbox-api"), ("StatefulSet", "cellbox-node")])
def test_metrics_are_scraped(kind: str, name: str) -> None:
    annotations = _workload(kind, name)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in {p["containerPort"] for p in _container(kind, name)["ports"]}


def test_roles() -> None:
    assert {"name": "CELLBOX_ROLE", "value": "api"} in _api()["env"]
    assert {"name": "CELLBOX_ROLE", "value": "node"} in _node()["env"]


def test_the_node_advertises_its_stable_name() -> None:
    env = _node()["env"]
    names = [e["name"] for e in env]
    url = next(e["value"] for e in env if e["name"] == "CELLBOX_NODE_URL")
    service = _base()["StatefulSet", "cellbox-node"]["spec"]["serviceName"]
    assert url == f"http://$(POD_NAME).{service}.$(POD_NAMESPACE).svc.cluster.local:8000"
    for field, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        assert names.index(field) < names.index("CELLBOX_NODE_URL")  # $(VAR) expands only earlier variables
        assert env[names.index(field)]["valueFrom"]["fieldRef"]["fieldPath"] == path
    assert _base()["Service", service]["spec"]["clusterIP"] == "None"


def test_services_disruption_budgets_and_the_autoscaler_find_their_pods() -> None:
    base = _base()
    pods = {name: _workload(kind, name)["metadata"]["labels"]
            for kind, name in (("Deployment", "cellbox-api"), ("StatefulSet", "cellbox-node"))}

    def selects(selector: dict[str, str]) -> set[str]:
        return {name for name, labels in pods.items() if selector.items() <= labels.items()}

    assert selects(base["Service", "cellbox"]["spec"]["selector"]) == {"cellbox-api"}
    assert selects(base["Service", "cellbox-node"]["spec"]["selector"]) == {"cellbox-node"}
    assert selects(base["PodDisruptionBudget", "cellbox-api"]["spec"]["selector"]["matchLabels"]) == {"cellbox-api"}
    assert selects(base["PodDisruptionBudget", "cellbox-node"]["spec"]["selector"]["matchLabels"]) == \
        {"cellbox-node"}
    target = base["HorizontalPodAutoscaler", "cellbox-api"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "cellbox-api")
    assert "replicas" not in base["Deployment", "cellbox-api"]["spec"]  # the autoscaler owns it


# --- settings and secrets -----------------------------------------------------------------------------------


def _setting_names_used() -> set[str]:
    names = {e["name"] for _, c in _containers_everywhere() for e in c.get("env", [])}
    for _, doc in _resources():
        if doc["kind"] == "ConfigMap":
            names |= set(doc["data"])
    for generator in _kustomization(DEV).get("configMapGenerator", []):
        names |= {literal.split("=", 1)[0] for literal in generator.get("literals", [])}
    names |= {e["name"] for e in _documents(QUOTA / "privileged-node.yaml")[0]["spec"]["template"]["spec"]
              ["containers"][0]["env"]}
    return {name for name in names if name.startswith("CELLBOX_")}


def test_every_cellbox_variable_is_a_real_setting() -> None:
    """pydantic-settings ignores an unknown CELLBOX_* variable: a misspelt one would silently do nothing."""
    known = {"CELLBOX_" + name.upper() for name in Settings.model_fields} | UPCOMING_SETTINGS
    used = _setting_names_used()
    assert used - known == set()
    assert {"CELLBOX_ROLE", "CELLBOX_NODE_TOKEN", "CELLBOX_NODE_URL", "CELLBOX_DATABASE_URL"} <= used


def test_secrets_come_only_from_the_secret() -> None:
    for where, container in _containers_everywhere():
        for entry in container.get("env", []):
            if entry["name"] in SECRET_VARIABLES:
                assert "value" not in entry, f"{where}: {entry['name']} is written in the manifest"
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "cellbox", where
    for _, doc in _resources():
        if doc["kind"] == "ConfigMap":
            assert not set(doc["data"]) & SECRET_VARIABLES


def test_the_secret_example_and_the_dev_secret_hold_every_key_the_base_reads() -> None:
    refs = [e["valueFrom"]["secretKeyRef"] for c in (_api(), _node()) for e in c["env"]
            if "secretKeyRef" in e.get("valueFrom", {})]
    required = {ref["key"] for ref in refs if not ref.get("optional", False)}
    (example,) = _documents(BASE / "secret.example.yaml")
    assert example["kind"] == "Secret"
    assert required <= set(example["stringData"])
    (dev,) = _kustomization(DEV)["secretGenerator"]
    assert required <= {literal.split("=", 1)[0] for literal in dev["literals"]}


def test_nodes_hold_no_api_keys_or_model_key() -> None:
    names = {e["name"] for e in _node()["env"]}
    assert not names & {"CELLBOX_API_KEYS", "CELLBOX_UPSTREAM_API_KEY"}


# --- the image ----------------------------------------------------------------------------------------------


def test_the_image_installs_what_setup_installs() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:", dockerfile, re.MULTILINE)
    assert "COPY scripts/system-packages /tmp/system-packages" in dockerfile
    assert "&& /tmp/system-packages" in dockerfile
    assert "python3 -m venv /opt/cellbox" in dockerfile
