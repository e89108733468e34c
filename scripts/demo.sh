#!/usr/bin/env bash
# The main job on the embedded default: start `kinetic up`, deploy a Namespace, a Deployment, a
# CRD and a custom resource with kubectl, upgrade the Deployment's image in place, and print how
# long each step took. (Pods start running once the node agent lands; see the issues.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p kinetic-cli
bin=target/release/kinetic
data=$(mktemp -d /tmp/kinetic-demo.XXXXXX)
port=${KINETIC_DEMO_PORT:-16443}
"$bin" up --data-dir "$data" --listen "127.0.0.1:$port" >"$data/up.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
export KUBECONFIG="$data/kubeconfig"
ms() { date +%s%3N; }
t0=$(ms)
until [ -s "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { cat "$data/up.log"; exit 1; }
  sleep 0.05
done
t1=$(ms)
step() { local name=$1; shift; local a; a=$(ms); "$@" >/dev/null; printf '%-44s %6d ms\n' "$name" "$(( $(ms) - a ))"; }
echo "kinetic up ready                             $(( t1 - t0 )) ms  (KUBECONFIG=$KUBECONFIG)"
step "kubectl apply namespace"                      kubectl apply -f examples/demo/namespace.yaml
step "kubectl apply CRD"                            kubectl apply -f examples/demo/crd.yaml
step "kubectl apply deployment"                     kubectl apply -f examples/demo/deployment.yaml
step "kubectl apply custom resource"                kubectl apply -f examples/demo/widget.yaml
step "kubectl set image (in-place spec upgrade)"    kubectl -n demo set image deployment/web web=127.0.0.1:5000/kinetic/httpd:v2
step "kubectl scale widget (scale subresource)"     kubectl -n demo scale widget/gizmo --replicas=3
echo
kubectl get ns,deploy,widgets -A
echo
kubectl -n demo get deploy web -o jsonpath='image now: {.spec.template.spec.containers[0].image}, generation {.metadata.generation}{"\n"}'
