#!/usr/bin/env python3
"""Validates rendered manifests for deploy/check.sh; exits non-zero on any problem.

Usage: validate.py --k8s 1.31.0 [--k8s 1.37.0] FILE.yaml...

- Core kinds: kubernetes-validate's strict schemas (unknown fields are errors) for each
  --k8s version. A kind with no core schema and no entry below is an error, not a warning.
- CRDs (InferencePool, HTTPRoute, KEDA ScaledObject): their schemas are not in the core
  set, so each is checked against the small hand-written subset schema below, written from
  the published API references (gateway-api-inference-extension v1.6 InferencePool v1,
  Gateway API v1 HTTPRoute, KEDA v2 ScaledObject): required fields, types, enums and ranges
  of the fields these examples use; unknown fields are errors.
- Per file, the contracts the server relies on: selectors match the pod labels, ports
  exist, probes hit /health/ready and /health/live, the scale target exists, and the
  termination grace period outlasts preStop sleep + --grace.
"""

import argparse
import re
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

NAME = {"type": "string", "minLength": 1, "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
LABEL_VALUE = {"type": "string", "maxLength": 63, "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
ANY = {}


def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


def crd(spec):
    meta = {"type": "object", "required": ["name"], "properties": {"name": NAME}}
    return obj({"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": meta, "spec": spec},
               ["apiVersion", "kind", "metadata", "spec"])


CRDS = {
    ("inference.networking.k8s.io/v1", "InferencePool"): crd(obj({
        "selector": obj({"matchLabels": {"type": "object", "minProperties": 1, "maxProperties": 64,
                                         "additionalProperties": LABEL_VALUE}}, ["matchLabels"]),
        "targetPorts": {"type": "array", "minItems": 1, "maxItems": 8, "uniqueItems": True,
                        "items": obj({"number": PORT}, ["number"])},
        "appProtocol": {"enum": ["http", "kubernetes.io/h2c"]},
        "endpointPickerRef": obj({
            "group": {"type": "string", "maxLength": 253},
            "kind": {"type": "string", "minLength": 1, "maxLength": 63},
            "name": NAME,
            "port": obj({"number": PORT}, ["number"]),
            "failureMode": {"enum": ["FailOpen", "FailClose"]},
        }, ["name"]),
    }, ["selector", "targetPorts"])),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): crd(obj({
        "parentRefs": {"type": "array", "maxItems": 32, "items": obj({
            "group": {"type": "string"}, "kind": {"type": "string"}, "name": NAME, "namespace": NAME,
            "sectionName": {"type": "string"}, "port": PORT}, ["name"])},
        "hostnames": {"type": "array", "items": {"type": "string"}},
        "rules": {"type": "array", "maxItems": 16, "items": obj({
            "name": {"type": "string"},
            "matches": {"type": "array", "items": obj({
                "path": obj({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                             "value": {"type": "string", "pattern": "^/"}}),
                "headers": ANY, "queryParams": ANY, "method": {"type": "string"}})},
            "filters": ANY,
            "backendRefs": {"type": "array", "items": obj({
                "group": {"type": "string"}, "kind": {"type": "string"}, "name": NAME, "namespace": NAME,
                "port": PORT, "weight": {"type": "integer", "minimum": 0}, "filters": ANY}, ["name"])},
            "timeouts": obj({"request": DURATION, "backendRequest": DURATION}),
            "sessionPersistence": ANY, "retry": ANY})},
    })),
    ("keda.sh/v1alpha1", "ScaledObject"): crd(obj({
        "scaleTargetRef": obj({"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "name": NAME,
                               "envSourceContainerName": {"type": "string"}}, ["name"]),
        "pollingInterval": {"type": "integer", "minimum": 1},
        "cooldownPeriod": {"type": "integer", "minimum": 0},
        "initialCooldownPeriod": {"type": "integer", "minimum": 0},
        "idleReplicaCount": {"type": "integer", "minimum": 0},
        "minReplicaCount": {"type": "integer", "minimum": 0},
        "maxReplicaCount": {"type": "integer", "minimum": 1},
        "fallback": ANY,
        "advanced": obj({"horizontalPodAutoscalerConfig": obj({"name": NAME, "behavior": {"type": "object"}}),
                         "restoreToOriginalReplicaCount": {"type": "boolean"}, "scalingModifiers": ANY}),
        "triggers": {"type": "array", "minItems": 1, "items": obj({
            "type": {"type": "string", "minLength": 1}, "name": {"type": "string"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
            "useCachedMetrics": {"type": "boolean"}, "authenticationRef": ANY}, ["type", "metadata"])},
    }, ["scaleTargetRef", "triggers"])),
}


def kn(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def contracts(docs):
    """Cross-object checks within one rendered kustomization; returns a list of errors."""
    errs = []
    deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    if not deps:
        return ["no Deployment in the rendered output"]
    for name, dep in deps.items():
        pod = dep["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        if not matches(dep["spec"]["selector"].get("matchLabels"), labels):
            errs.append(f"Deployment/{name}: selector does not match its pod labels")
        spec = pod["spec"]
        main = spec["containers"][0]
        ports = {p.get("name"): p["containerPort"] for p in main.get("ports", [])}
        if not any(a.startswith("serve") for a in main.get("args", [])[:1]):
            errs.append(f"Deployment/{name}: first container does not run `serve`")
        args = " ".join(main.get("args", []))
        for flag in ("--host=0.0.0.0", "--port=8080", "--offline", "--device=cpu"):
            if flag not in args:
                errs.append(f"Deployment/{name}: serve lacks {flag}")
        probes = {k: main.get(k, {}).get("httpGet", {}).get("path") for k in ("startupProbe", "readinessProbe", "livenessProbe")}
        want = {"startupProbe": "/health/ready", "readinessProbe": "/health/ready", "livenessProbe": "/health/live"}
        if probes != want:
            errs.append(f"Deployment/{name}: probes {probes}, expected {want}")
        grace = int(re.search(r"--grace[= ](\d+)", args).group(1)) if "--grace" in args else 10
        cmd = main.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(cmd[-1]) if cmd and cmd[0].endswith("sleep") else 0
        tgps = spec.get("terminationGracePeriodSeconds", 30)
        if tgps < sleep + grace + 5:
            errs.append(f"Deployment/{name}: terminationGracePeriodSeconds {tgps} < preStop {sleep} s + --grace {grace} s + 5 s")
        envs = {e["name"]: e for e in main.get("env", [])}
        if "secretKeyRef" not in envs.get("TERNLM_API_KEY", {}).get("valueFrom", {}):
            errs.append(f"Deployment/{name}: TERNLM_API_KEY does not come from a Secret")
        inits = [c for c in spec.get("initContainers", []) if c.get("args", [None])[0] == "pull"]
        if not inits:
            errs.append(f"Deployment/{name}: no init container runs `ternlm pull`")
        for d in docs:
            sel = None
            if d["kind"] == "Service":
                sel = d["spec"].get("selector")
                for p in d["spec"].get("ports", []):
                    if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                        errs.append(f"{kn(d)}: targetPort {p.get('targetPort')} is not a container port")
            elif d["kind"] in ("PodDisruptionBudget", "InferencePool"):
                sel = d["spec"]["selector"].get("matchLabels")
            if d["kind"] == "InferencePool":
                for p in d["spec"]["targetPorts"]:
                    if p["number"] not in ports.values():
                        errs.append(f"{kn(d)}: targetPort {p['number']} is not a container port")
            if sel is not None and not matches(sel, labels):
                errs.append(f"{kn(d)}: selector {sel} does not match the pods of Deployment/{name}")
    for d in docs:
        if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = d["spec"]["scaleTargetRef"]["name"]
            if target not in deps:
                errs.append(f"{kn(d)}: scale target {target} is not a Deployment here")
    return errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s", action="append", required=True, help="Kubernetes version, repeatable")
    ap.add_argument("--no-contracts", action="append", default=[], help="file to schema-check only")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    passed = failed = 0
    for path in a.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            print(f"FAIL {path}: no objects")
            failed += 1
            continue
        for doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in CRDS:
                errors = sorted(jsonschema.Draft202012Validator(CRDS[key]).iter_errors(doc), key=str)
                ref = doc["spec"].get("endpointPickerRef", {})
                if key[1] == "InferencePool" and ref and ref.get("kind", "Service") == "Service" and "port" not in ref:
                    errors.append("endpointPickerRef.port is required when kind is Service")
                what = f"{key[0]} subset schema (CRD, not in core schemas)"
                msgs = [f"{'.'.join(map(str, e.absolute_path)) if hasattr(e, 'absolute_path') else ''}: "
                        f"{getattr(e, 'message', e)}" for e in errors]
            else:
                msgs, what = [], f"Kubernetes {', '.join(a.k8s)} strict"
                for version in a.k8s:
                    try:
                        kv.validate(doc, version, strict=True)
                    except kv.ValidationError as e:
                        msgs.append(f"{version}: {'.'.join(map(str, e.path))}: {e.message}")
                    except kv.SchemaNotFoundError as e:
                        msgs.append(f"{version}: {e.message} (unknown kind: add a subset schema or fix apiVersion)")
            if msgs:
                failed += 1
                for m in msgs:
                    print(f"FAIL {path}: {kn(doc)}: {m}")
            else:
                passed += 1
                print(f"ok   {path}: {kn(doc)} ({what})")
        if path not in a.no_contracts:
            errs = contracts(docs)
            for e in errs:
                print(f"FAIL {path}: contract: {e}")
            failed += bool(errs)
            passed += not errs
            if not errs:
                print(f"ok   {path}: contracts (selectors, ports, probes, drain timing, API key Secret, init pull)")
    print(f"deploy: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
