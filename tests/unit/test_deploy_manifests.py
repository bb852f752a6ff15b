"""The Kubernetes manifests (deploy/kubernetes) are valid objects and agree with the worker.

No cluster is needed: each manifest is validated with ``kubernetes-validate`` against pinned
Kubernetes versions, and the environment it gives the worker is compared with the variables
the worker's source reads (read as text, so the check does not depend on module paths).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml  # PyYAML, in the dev extra

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
#: The oldest Kubernetes minor the manifests promise to work on, and the newest schema set the
#: installed kubernetes-validate (1.37) ships. Both pinned, so a new release changes nothing.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
#: Not Kubernetes objects (kustomize's own file).
NOT_OBJECTS = {"kustomization.yaml"}
MANIFESTS = sorted(p.name for p in KUBE.glob("*.yaml") if p.name not in NOT_OBJECTS)

SECRETS = {
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_KEY_PASSWORD",
    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
}
_NAME_LITERAL = re.compile(r"""["']([A-Z][A-Z0-9_]+)["']""")


# --- helpers -------------------------------------------------------------------------------


def load(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((KUBE / name).read_text(encoding="utf-8")) if d]
    assert docs, f"{name} holds no object"
    return docs


def one(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in load(name) if d.get("kind") == kind]
    assert len(found) == 1, f"{name}: expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def configmap() -> dict[str, str]:
    data = one("configmap.yaml", "ConfigMap")["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    return dict(data)


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return one("deployment.yaml", "Deployment")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container: the worker"
    return dict(containers[0])


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"])


def env_entries(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = {e["name"]: e for e in container.get("env", [])}
    assert len(entries) == len(container.get("env", [])), "an env variable is set twice"
    return entries


def web_port(container: dict[str, Any]) -> tuple[str, int]:
    ports = [p for p in container["ports"] if p.get("name") == "web"]
    assert len(ports) == 1, "the container names its web port 'web'"
    return "web", int(ports[0]["containerPort"])


def mounts(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    result = {}
    for m in container.get("volumeMounts", []):
        assert m["name"] in volumes, f"volumeMount {m['name']!r} has no volume"
        result[m["mountPath"]] = (m, volumes[m["name"]])
    return result


def mount_of(path: str, container: dict[str, Any], pod: dict[str, Any]) -> tuple[dict, dict]:
    """The volume mount that holds ``path`` (the deepest one)."""
    candidates = [
        (mount_path, found)
        for mount_path, found in mounts(container, pod).items()
        if PurePosixPath(path).is_relative_to(mount_path)
    ]
    assert candidates, f"{path} is on no volume mount"
    return max(candidates, key=lambda c: len(c[0]))[1]


def worker_sources() -> dict[str, str]:
    """The text of the worker's settings and security modules, wherever they live now."""
    found = {}
    places = {
        "settings.py": [ROOT / "streams" / "settings.py"],
        "security.py": sorted((ROOT / "streams" / "security").glob("*.py")),
    }
    for name, paths in places.items():
        if paths and all(p.is_file() for p in paths):
            found[name] = "\n".join(p.read_text(encoding="utf-8") for p in paths)
    assert "settings.py" in found, "streams/settings.py not found"
    assert "security.py" in found, "streams/security/ not found"
    return found


def variables_the_worker_reads() -> set[str]:
    sources = worker_sources()
    names = set(_NAME_LITERAL.findall(sources["settings.py"]))
    security = sources["security.py"]
    names |= set(_NAME_LITERAL.findall(security))
    # The suffix rule: a secret <NAME> may come from the file named by <NAME>_FILE (the name
    # is built, f"{name}_FILE", so it is not a literal).
    names |= {f"{n}_FILE" for n in names & SECRETS}
    return names


# --- (a) valid Kubernetes objects ----------------------------------------------------------


def test_the_manifests_are_the_expected_set() -> None:
    assert {
        "namespace.yaml",
        "configmap.yaml",
        "secret.example.yaml",
        "pvc.yaml",
        "deployment.yaml",
        "service.yaml",
    } <= set(MANIFESTS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_kubernetes(name: str, version: str) -> None:
    import kubernetes_validate

    for doc in load(name):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} ({doc['kind']}) is not valid for Kubernetes {version}: {exc}")


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    # The example Secret's placeholders would overwrite the real Secret on every apply.
    assert set(listed) == set(MANIFESTS) - {"secret.example.yaml"}
    namespace = kustomization["namespace"]
    for name in MANIFESTS:
        for doc in load(name):
            if doc["kind"] == "Namespace":
                assert doc["metadata"]["name"] == namespace
            else:
                assert doc["metadata"].get("namespace") == namespace, f"{name}: namespace"


def test_kustomize_builds_valid_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    import kubernetes_validate

    built = subprocess.run(
        [kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert sorted(d["kind"] for d in docs) == [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PersistentVolumeClaim",
        "Service",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


# --- (b) every variable is one the worker reads --------------------------------------------


def test_every_variable_set_is_read_by_the_worker(
    configmap: dict[str, str], container: dict[str, Any]
) -> None:
    known = variables_the_worker_reads()
    assert "ESCALATIONS_STATE_ROOT" in known and "KAFKA_BOOTSTRAP_SERVERS" in known
    set_here = set(configmap) | set(env_entries(container))
    unknown = sorted(set_here - known)
    assert not unknown, f"set in deploy/kubernetes but never read by the worker: {unknown}"
    # Only the ConfigMap is loaded wholesale; nothing else feeds the environment.
    assert [list(s) for s in container.get("envFrom", [])] == [["configMapRef"]]
    assert (
        container["envFrom"][0]["configMapRef"]["name"]
        == (one("configmap.yaml", "ConfigMap")["metadata"]["name"])
    )
    overlap = set(configmap) & set(env_entries(container))
    assert not overlap, f"set both in the ConfigMap and the Deployment: {sorted(overlap)}"


def test_the_configmap_sets_the_production_settings(configmap: dict[str, str]) -> None:
    required = {
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_SSL_CA_LOCATION",
        "SCHEMA_REGISTRY_URL",
        "ESCALATIONS_STATE_ROOT",
        "ESCALATIONS_PARTITIONS",
        "ESCALATIONS_SESSION_TIMEOUT",
        "ESCALATIONS_STALL_TIMEOUT",
    }
    assert required <= set(configmap), sorted(required - set(configmap))
    assert configmap["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert configmap["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert configmap["ESCALATIONS_REPLICATION_FACTOR"] == "3"
    assert configmap["ESCALATIONS_WEB_ENABLED"] == "true"
    assert configmap["ESCALATIONS_WEB_PORT"] == "6066"
    assert configmap["ESCALATIONS_WEB_BIND"] == "0.0.0.0"
    assert configmap["SCHEMA_REGISTRY_URL"].startswith("https://")
    for key, value in configmap.items():
        assert not re.search(r"PASSWORD|USERNAME|USER_INFO", key), f"{key}: a secret, use _FILE"
        assert value == value.strip(), f"{key}: stray whitespace"


def test_the_configmap_values_pass_the_settings_loader(configmap: dict[str, str]) -> None:
    from streams import settings as settings_module

    # The plain settings only: the TLS/SASL ones name files that exist only in the pod.
    plain = {
        k: v
        for k, v in configmap.items()
        if k.startswith("ESCALATIONS_") or k in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL")
    }
    loaded = settings_module.load(plain)
    assert str(loaded.state_root) == configmap["ESCALATIONS_STATE_ROOT"]
    assert loaded.web_enabled is True
    assert loaded.web_port == 6066
    assert loaded.replication_factor == 3


def test_secrets_come_from_files_in_the_mounted_secret(
    configmap: dict[str, str], container: dict[str, Any], pod: dict[str, Any]
) -> None:
    env = env_entries(container)
    files = {n: e["value"] for n, e in env.items() if n.endswith("_FILE")}
    assert {
        "KAFKA_SASL_USERNAME_FILE",
        "KAFKA_SASL_PASSWORD_FILE",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE",
    } <= set(files)
    for name in files:
        assert name.removesuffix("_FILE") in SECRETS, f"{name}: not a secret"
        assert name.removesuffix("_FILE") not in configmap and name.removesuffix("_FILE") not in env
    secret = one("secret.example.yaml", "Secret")
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    located = {**files, "KAFKA_SSL_CA_LOCATION": configmap["KAFKA_SSL_CA_LOCATION"]}
    for name, path in located.items():
        mount, volume = mount_of(path, container, pod)
        assert "secret" in volume, f"{name}={path} is not on the Secret volume"
        assert volume["secret"]["secretName"] == secret["metadata"]["name"]
        assert mount.get("readOnly") is True
        key = str(PurePosixPath(path).relative_to(mount["mountPath"]))
        assert key in keys, f"{name}={path}: the Secret has no key {key!r}"
    # The example holds placeholders only.
    assert all("REPLACE" in str(v) for v in secret.get("stringData", {}).values())


def test_the_advertised_web_host_is_the_pod_ip(container: dict[str, Any]) -> None:
    host = env_entries(container)["ESCALATIONS_WEB_HOST"]
    assert host["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_the_faust_data_dir_is_scratch_space(
    container: dict[str, Any], pod: dict[str, Any]
) -> None:
    data_dir = env_entries(container)["ESCALATIONS_DATA_DIR"]["value"]
    _, volume = mount_of(data_dir, container, pod)
    assert "emptyDir" in volume, f"ESCALATIONS_DATA_DIR={data_dir} is not on an emptyDir"
    # Not the default (<state root>/.faust): the replicas share the state root.
    assert not PurePosixPath(data_dir).is_relative_to(
        one("configmap.yaml", "ConfigMap")["data"]["ESCALATIONS_STATE_ROOT"]
    )
    # Whatever is written relative to the working directory lands in scratch space too.
    _, volume = mount_of(container["workingDir"], container, pod)
    assert "emptyDir" in volume


# --- (c) probes, shutdown, the shared state volume -----------------------------------------


def test_probes_use_the_web_port(configmap: dict[str, str], container: dict[str, Any]) -> None:
    name, number = web_port(container)
    assert number == int(configmap["ESCALATIONS_WEB_PORT"])
    expected = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        if probe == "startupProbe" and probe not in container:
            continue
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in (name, number), f"{probe} is not on the web port"
        assert get.get("scheme", "HTTP") == "HTTP"


def test_termination_grace_exceeds_the_drain_bound(pod: dict[str, Any]) -> None:
    # The worker's SIGTERM drain (batch in hand, fsync, commit) is bounded at ~10 s.
    assert pod["terminationGracePeriodSeconds"] > 10
    assert pod["terminationGracePeriodSeconds"] == 30


def test_the_worker_runs_non_root_read_only_with_limits(
    deployment: dict[str, Any], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    assert deployment["spec"]["replicas"] == 2
    command = [*container.get("command", []), *container.get("args", [])]
    assert command == ["escalations", "worker"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()


def test_the_state_root_is_the_shared_rwx_volume(
    configmap: dict[str, str], container: dict[str, Any], pod: dict[str, Any]
) -> None:
    pvc = one("pvc.yaml", "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    state_root = configmap["ESCALATIONS_STATE_ROOT"]
    mount, volume = mounts(container, pod)[state_root]
    assert volume.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]
    assert not mount.get("readOnly", False)
    assert "subPath" not in mount, "every replica must see the whole state root"


def test_the_service_exposes_the_web_port_for_scraping(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    service = one("service.yaml", "Service")
    name, number = web_port(container)
    ports = service["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in ports] in ([(number, name)], [(number, number)])
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(number)
    assert annotations["prometheus.io/path"] == "/metrics"
