"""The Helm chart, rendered and linted by the real Helm SDK and validated against Kubernetes and
prometheus-operator schemas (no cluster needed)."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT, SHARED, require, require_shared

from exporter import __version__
from exporter.config import PRESET_PATH, load_text

CHART = ROOT / "helm" / "claude-status-exporter"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
KUBE_VERSIONS = ("1.25.0", "1.37.0")  # the chart's kubeVersion floor and the newest schemas
RELEASE, NAMESPACE = "cse", "monitoring"
PING_SYSCTL = {"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: Obj | None = None) -> list[Obj]:
    out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return [doc for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def one(objs: list[Obj], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objs: list[Obj]) -> Obj:
    [c] = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def ci_values(name: str) -> Obj:
    data: Obj = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return data


def is_rule_file(path: Path) -> bool:
    """Same selection as scripts/sync-chart-files: a mapping whose only key is ``groups``."""
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and set(data) == {"groups"}


CASES = [pytest.param(None, id="default")] + [
    pytest.param(p, id=p.name.removesuffix("-values.yaml")) for p in CI_VALUES]


def case_values(path: Path | None) -> Obj:
    return yaml.safe_load(path.read_text()) if path else {}


# -- lint, Kubernetes schemas, CRD schemas ---------------------------------------------------


@pytest.mark.parametrize("values_file", CASES)
def test_helm_lint_strict_is_clean(values_file: Path | None) -> None:
    report = helm.lint(CHART, case_values(values_file), strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values_file", CASES)
def test_every_builtin_object_is_valid_kubernetes(chart: Any, values_file: Path | None) -> None:
    objs = render(chart, case_values(values_file))
    builtin = [o for o in objs if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {"Deployment", "Service", "ConfigMap"} <= {o["kind"] for o in builtin}
    for obj in builtin:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_kubernetes_validation_catches_a_planted_error(chart: Any) -> None:
    deployment = one(render(chart), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def strict_schema(node: Any) -> Any:
    """The CRD's OpenAPI schema with unknown fields forbidden (the API server would silently
    prune them), except where the CRD itself preserves unknown fields."""
    if isinstance(node, dict):
        out = {k: strict_schema(v) for k, v in node.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    return node


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.Draft7Validator]:
    require_shared()  # the prometheus-operator CRDs are shipped in ../shared/schemas
    validators = {}
    for path in sorted((SHARED / "schemas").glob("crd-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            [v1] = [v for v in doc["spec"]["versions"] if v["name"] == "v1"]
            schema = strict_schema(v1["schema"]["openAPIV3Schema"])
            validators[doc["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    assert {"ServiceMonitor", "PrometheusRule"} <= set(validators)
    return validators


def test_custom_resources_match_the_prometheus_operator_crds(
        chart: Any, crd_validators: dict[str, jsonschema.Draft7Validator]) -> None:
    objs = render(chart, ci_values("monitors"))
    custom = [o for o in objs if o["apiVersion"] == "monitoring.coreos.com/v1"]
    assert "ServiceMonitor" in {o["kind"] for o in custom}
    for obj in custom:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in crd_validators[obj["kind"]].iter_errors(obj)]
        assert errors == [], f"{obj['kind']} {obj['metadata']['name']}: {errors}"


def test_crd_validation_catches_a_planted_error(
        chart: Any, crd_validators: dict[str, jsonschema.Draft7Validator]) -> None:
    monitor = one(render(chart, ci_values("monitors")), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    monitor["spec"]["endpoints"][0]["scrape_timeout"] = "10s"
    messages = [e.message for e in crd_validators["ServiceMonitor"].iter_errors(monitor)]
    assert any("30 seconds" in m for m in messages) and any("scrape_timeout" in m for m in messages)


# -- values schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "where"), [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicas": 2}, "'replicas' not allowed"),
    ({"icmp": {"mode": "bogus"}}, "/icmp/mode"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"vantage": "eu west"}, "/vantage"),
    ({"serviceMonitor": {"interval": "30 seconds"}}, "/serviceMonitor/interval"),
    ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled"),
    ({"serviceMonitor": {"lables": {"release": "kps"}}}, "'lables' not allowed"),
    ({"config": {"upstream": {}}}, "'upstream' not allowed"),
    ({"service": {"port": 70000}}, "/service/port"),
    ({"extraArgs": ["vantage=x"]}, "/extraArgs/0"),
    ({"apiKeyEnv": "ANTHROPIC-API-KEY"}, "/apiKeyEnv"),
    ({"networkPolicy": {"icmpCidrs": ["198.18.0.53"]}}, "/networkPolicy/icmpCidrs/0"),
    ({"prometheusRule": {"sloTarget": 1}}, "/prometheusRule/sloTarget"),
    ({"prometheusRule": {"sloTarget": 0}}, "/prometheusRule/sloTarget"),
    ({"prometheusRule": {"sloTarget": "99.5%"}}, "/prometheusRule/sloTarget"),
])
def test_values_schema_rejects_bad_values(chart: Any, values: Obj, where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(err.value)


def test_api_key_and_existing_secret_are_exclusive(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match="not both"):
        render(chart, {"apiKey": "sk-ant-x", "existingSecret": "mine"})


# -- workload security -------------------------------------------------------------------------


def test_default_pod_is_restricted_and_pings_through_the_sysctl(chart: Any) -> None:
    objs = render(chart)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    sc = container(objs)["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert one(objs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["sysctls"] == [PING_SYSCTL]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_net_raw_mode_adds_only_net_raw_and_no_sysctl(chart: Any) -> None:
    objs = render(chart, ci_values("netraw"))
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    sc = container(objs)["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert "sysctls" not in pod["securityContext"]
    # Raw sockets need uid 0 in a container (capabilities of a non-root process are not effective).
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False


def test_icmp_mode_none_sets_neither(chart: Any) -> None:
    objs = render(chart, {"icmp": {"mode": "none"}})
    assert "sysctls" not in one(objs, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert container(objs)["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_probes_ports_and_service_line_up(chart: Any) -> None:
    objs = render(chart)
    c = container(objs)
    service = one(objs, "Service")
    assert c["ports"] == [{"name": "http-metrics", "containerPort": 10529, "protocol": "TCP"}]
    assert service["spec"]["ports"] == [{"name": "http-metrics", "port": 10529,
                                         "targetPort": "http-metrics", "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http-metrics"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert "--web.listen-address=:10529" in c["args"]
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_image_defaults_to_the_app_version_which_is_the_exporter_version(chart: Any) -> None:
    assert chart.metadata["appVersion"] == __version__
    assert container(render(chart))["image"].endswith(f"/claude-status-exporter:{__version__}")
    digest = "sha256:" + "a" * 64
    image = container(render(chart, {"image": {"digest": digest}}))["image"]
    assert image.endswith(f"@{digest}")


# -- config, secrets, vantage ----------------------------------------------------------------


def config_of(objs: list[Obj]) -> str:
    [cm] = [o for o in objs if o["kind"] == "ConfigMap" and "config.yml" in o.get("data", {})]
    text: str = cm["data"]["config.yml"]
    return text


@pytest.mark.parametrize("values_file", CASES)
def test_rendered_config_passes_the_exporters_own_validation(chart: Any,
                                                             values_file: Path | None) -> None:
    objs = render(chart, case_values(values_file))
    load_text(config_of(objs), "configmap")
    assert "--config.file=/etc/claude-status-exporter/config.yml" in container(objs)["args"]


def test_default_config_is_the_bundled_preset(chart: Any) -> None:
    preset = yaml.safe_load(PRESET_PATH.read_text())
    assert yaml.safe_load(config_of(render(chart))) == preset


def test_checksum_annotation_follows_the_config_only(chart: Any) -> None:
    def checksum(values: Obj) -> str:
        annotations = one(render(chart, values), "Deployment")["spec"]["template"]["metadata"]
        value: str = annotations["annotations"]["checksum/config"]
        return value

    base = checksum({})
    assert len(base) == 64
    assert checksum({"config": {"defaults": {"interval": "45s"}}}) != base
    assert checksum({"replicaCount": 3, "vantage": "x"}) == base


def test_existing_secret_is_wired_to_the_env_var_without_a_chart_secret(chart: Any) -> None:
    objs = render(chart, ci_values("existing-secret"))
    assert not [o for o in objs if o["kind"] == "Secret"]
    assert container(objs)["env"] == [{"name": "ANTHROPIC_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "anthropic-api", "key": "token"}}}]


def test_api_key_becomes_a_secret_and_never_appears_in_clear(chart: Any) -> None:
    values = ci_values("api-key")
    objs = render(chart, values)
    secret = one(objs, "Secret")
    assert base64.b64decode(secret["data"]["api-key"]).decode() == values["apiKey"]
    assert container(objs)["env"] == [{"name": "ANTHROPIC_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "api-key"}}}]
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert not [p for p, text in rendered.items() if values["apiKey"] in text]
    pod_annotations = one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" in pod_annotations


def test_no_key_means_no_env_and_no_secret(chart: Any) -> None:
    objs = render(chart)
    assert "env" not in container(objs)
    assert not [o for o in objs if o["kind"] == "Secret"]


def test_vantage_and_extra_args_reach_the_command_line(chart: Any) -> None:
    args = container(render(chart, ci_values("vantage")))["args"]
    assert "--vantage=eu-west-1" in args
    assert args[-1] == "--web.config.file=/etc/exporter-web/web.yml"
    assert not [a for a in container(render(chart))["args"] if a.startswith("--vantage")]


# -- monitoring objects ----------------------------------------------------------------------


def test_monitoring_objects_are_off_by_default(chart: Any) -> None:
    kinds = {o["kind"] for o in render(chart)}
    assert kinds == {"Deployment", "Service", "ConfigMap", "ServiceAccount"}


def test_service_monitor_passes_labels_interval_and_timeout(chart: Any) -> None:
    objs = render(chart, ci_values("monitors"))
    monitor = one(objs, "ServiceMonitor")
    service = one(objs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "10s")
    assert endpoint["metricRelabelings"] == [{"action": "labeldrop", "regex": "shortlink"}]
    service_labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    # job="claude-status-exporter" whatever the release is called:
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "claude-status-exporter"


def rule_objects(objs: list[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["annotations"]["claude-status-exporter/source"]: o
            for o in objs if o["kind"] == "PrometheusRule"}


def dashboard_maps(objs: list[Obj]) -> dict[str, str]:
    out = {}
    for o in objs:
        if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1":
            [(name, text)] = o["data"].items()
            out[name] = text
    return out


def test_chart_copies_are_identical_to_alerts_and_dashboards() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync-chart-files"), "--check"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rules_carry_exactly_the_rule_files_in_alerts(chart: Any) -> None:
    sources = [p for p in sorted((ROOT / "alerts").glob("*.yml")) if is_rule_file(p)]
    require(bool(sources), "alerts/ has no rule files yet")
    objs = render(chart, ci_values("monitors"))
    rules = rule_objects(objs)
    assert set(rules) == {p.name for p in sources}
    for path in sources:
        obj = rules[path.name]
        assert obj["spec"]["groups"] == yaml.safe_load(path.read_text())["groups"], path.name
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def slo_rule(objs: list[Obj]) -> Obj:
    groups = rule_objects(objs)["recording.rules.yml"]["spec"]["groups"]
    return next(r for g in groups for r in g["rules"] if r.get("record") == "upstream:slo_target:ratio")


@pytest.mark.parametrize(("slo", "expected"), [(None, "0.995"), (0.999, "0.999"), (0.99, "0.99"),
                                               (0.9995, "0.9995")])
def test_slo_target_value_sets_the_one_objective_in_the_rules(chart: Any, slo: float | None,
                                                               expected: str) -> None:
    values = ci_values("monitors")
    if slo is not None:
        values = {**values, "prometheusRule": {**values["prometheusRule"], "sloTarget": slo}}
    expr = slo_rule(render(chart, values))["expr"]
    assert expr.endswith(f"+ {expected}"), expr




def test_dashboard_config_maps_carry_exactly_the_json_in_dashboards(chart: Any) -> None:
    sources = sorted((ROOT / "dashboards").glob("*.json"))
    require(bool(sources), "dashboards/ has no dashboards yet")
    maps = dashboard_maps(render(chart, ci_values("monitors")))
    assert maps == {p.name: p.read_text() for p in sources}
    for text in maps.values():
        json.loads(text)


def test_prometheus_and_grafana_templates_survive_helm(chart: Any, tmp_path: Path) -> None:
    """Rule annotations ({{ $labels.x }}) and legends ({{component}}) are not Helm templates."""
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    rule_text = """\
groups:
  - name: escaping
    rules:
      - alert: ClaudeStatusEscapingCheck
        expr: probe_success == 0
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: A check fails.
          description: '{{ $labels.check }} of {{ $labels.upstream }} ({{ $value | humanize }}).'
"""
    dashboard_text = json.dumps({"title": "t", "panels": [{"targets": [
        {"expr": "sum by (component) (x)", "legendFormat": "{{component}} {{ `raw` }}"}]}]},
        indent=2) + "\n"
    (copy / "files" / "alerts" / "zz-escaping.yml").write_text(rule_text)
    (copy / "files" / "dashboards" / "zz-escaping.json").write_text(dashboard_text)
    with helm.Chart.load(copy) as patched:
        objs = render(patched, ci_values("monitors"))
    rule = rule_objects(objs)["zz-escaping.yml"]
    assert rule["spec"] == yaml.safe_load(rule_text)
    description = rule["spec"]["groups"][0]["rules"][0]["annotations"]["description"]
    assert description == "{{ $labels.check }} of {{ $labels.upstream }} ({{ $value | humanize }})."
    assert dashboard_maps(objs)["zz-escaping.json"] == dashboard_text


def test_dashboards_can_go_to_grafanas_namespace(chart: Any) -> None:
    objs = render(chart, {"dashboards": {"enabled": True, "namespace": "grafana"}})
    assert all(o["metadata"]["namespace"] == "grafana" for o in objs
               if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"])


def test_network_policy_allows_scrapes_dns_https_and_listed_icmp_targets(chart: Any) -> None:
    objs = render(chart, ci_values("networkpolicy"))
    policy = one(objs, "NetworkPolicy")["spec"]
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    dns, https, icmp = policy["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert https == {"ports": [{"port": 443, "protocol": "TCP"}]}
    assert icmp == {"to": [{"ipBlock": {"cidr": "198.18.0.53/32"}},
                           {"ipBlock": {"cidr": "2001:db8::53/128"}}]}


def test_pod_disruption_budget_selects_the_pods(chart: Any) -> None:
    objs = render(chart, ci_values("networkpolicy"))
    pdb = one(objs, "PodDisruptionBudget")["spec"]
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()


def test_a_probe_fleet_runs_replicas_behind_one_service(chart: Any) -> None:
    objs = render(chart, ci_values("probe-fleet"))
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert one(objs, "Service")["spec"]["selector"].items() <= pod_labels.items()
    assert one(objs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    # No background checks: more replicas add capacity, not duplicate series.
    [cm] = [o for o in objs if o["kind"] == "ConfigMap" and "config.yml" in o.get("data", {})]
    rendered = yaml.safe_load(cm["data"]["config.yml"])
    assert "modules" in rendered and not {"upstreams", "control"} & set(rendered), rendered


def test_notes_render_for_every_case(chart: Any) -> None:
    for path in [None, *CI_VALUES]:
        notes = [t for p, t in chart.render(case_values(path), name=RELEASE,
                                            namespace=NAMESPACE).items() if p.endswith("NOTES.txt")]
        assert notes and "port-forward svc/cse-claude-status-exporter 10529" in notes[0]


def test_a_rule_file_that_is_not_one_stops_the_render(tmp_path: Path) -> None:
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    (copy / "files" / "alerts" / "zz-not-rules.yml").write_text("rule_files: [x.yml]\ntests: []\n")
    with helm.Chart.load(copy) as patched, pytest.raises(helm.HelmError, match="only the key groups"):
        render(patched, {"prometheusRule": {"enabled": True}})


# -- the documented install commands ---------------------------------------------------------

DOCS = [ROOT / "README.md", ROOT / "docs" / "deploy.md", CHART / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def merge(base: Obj, extra: Obj) -> Obj:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def documented_installs() -> list[tuple[str, list[str], dict[str, Obj]]]:
    """(doc, argv, values files shown in that doc) for every `helm ... install` command."""
    found = []
    for doc in DOCS:
        blocks = FENCE.findall(doc.read_text())
        files = {body.split("\n", 1)[0].removeprefix("# file: ").strip(): yaml.safe_load(body)
                 for lang, body in blocks if lang == "yaml" and body.startswith("# file: ")}
        for lang, body in blocks:
            if lang != "sh":
                continue
            for command in body.replace("\\\n", " ").splitlines():
                argv = shlex.split(command, comments=True)
                if argv[:2] in (["helm", "install"], ["helm", "upgrade"]):
                    found.append((str(doc.relative_to(ROOT)), argv, files))
    return found


def test_docs_show_helm_installs() -> None:
    assert {doc for doc, _, _ in documented_installs()} == {str(p.relative_to(ROOT)) for p in DOCS}


@pytest.mark.parametrize(("doc", "argv", "files"), documented_installs(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_documented_helm_commands_use_this_chart_and_real_values(
        chart: Any, doc: str, argv: list[str], files: dict[str, Obj]) -> None:
    assert "./helm/claude-status-exporter" in argv, argv
    values: Obj = {}
    for flag, value in itertools.pairwise(argv):
        if flag in ("-f", "--values"):
            assert value in files, f"{doc}: {value} is not shown in a '# file: {value}' block"
            values = merge(values, files[value])
        elif flag == "--set":
            values = merge(values, helm.parse_set_string(value))
    objs = render(chart, values)
    assert one(objs, "Deployment")
