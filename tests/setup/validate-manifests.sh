#!/usr/bin/env bash
# Validates deploy/kubernetes/*.yaml against the Kubernetes OpenAPI schemas with
# kubernetes-validate (PyPI; it ships the schemas, so no cluster and no network beyond PyPI).
# --strict rejects unknown fields (a misspelt `hostUsers` fails). KEDA's ScaledObject and
# TriggerAuthentication are custom resources without a bundled schema: they are reported as
# skipped, not validated.
#   usage: tests/setup/validate-manifests.sh [KUBERNETES_VERSION]   (default 1.33.0)
set -euo pipefail
cd "$(dirname "$0")/../.."

version=${1:-1.33.0}
tool=${CARGO_TARGET_DIR:-target}/kubernetes-validate
if [ ! -x "$tool/bin/kubernetes-validate" ]; then
    echo ">> installing kubernetes-validate into $tool" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --target "$tool" kubernetes-validate==1.37.0
fi
status=0
for manifest in deploy/kubernetes/*.yaml; do
    case "$manifest" in */kustomization.yaml) continue ;; esac
    PYTHONPATH=$tool "$tool/bin/kubernetes-validate" --strict --kubernetes-version "$version" \
        "$manifest" || status=1
done
[ "$status" -eq 0 ] && echo ">> deploy/kubernetes: valid for Kubernetes $version" >&2
exit "$status"
