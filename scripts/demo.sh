#!/usr/bin/env bash
# The main job on the embedded default: start `kinetic up` (API server, scheduler, controllers,
# node agent), build a small web image and push it to a local registry, `kubectl run` it, check
# that it answers on its own IP, upgrade its image in place, print the pod's start-up timeline,
# then release a 4-pod OpenKruise CloneSet in place and print how long each step took, then
# serve a Knative Service through the gateway, let it scale to zero and time a request that
# wakes it. Run as root (runc, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p kinetic-cli
bin=$PWD/target/release/kinetic
[ -n "${CARGO_TARGET_DIR:-}" ] && bin=$CARGO_TARGET_DIR/release/kinetic
data=$(mktemp -d /var/tmp/kinetic-demo.XXXXXX)
port=${KINETIC_DEMO_PORT:-16443}
reg=127.0.0.1:${KINETIC_DEMO_REGISTRY_PORT:-15000}
gw=127.0.0.1:${KINETIC_DEMO_GATEWAY_PORT:-18080}
pids=()
cleanup() {
  kubectl delete pod web --grace-period=1 --wait=true >/dev/null 2>&1 || true
  kubectl delete cloneset shop --wait=true >/dev/null 2>&1 || true
  kubectl delete ksvc hello --wait=true >/dev/null 2>&1 || true
  # The demo's data directory is never reused, so nothing may outlive it (issue 19): wait
  # until the agent has taken every pod down before `kinetic up` stops.
  kubectl wait --for=delete pods --all --timeout=60s >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  # Nothing of the demo is adopted later: its bridge and data directory go too, so the host
  # is left as it was (a stale bridge with the pod range breaks the next run using it).
  ip link delete kinetic0 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
ms() { date +%s%3N; }
step() { local name=$1; shift; local a; a=$(ms); "$@" >/dev/null; printf '%-52s %6d ms\n' "$name" "$(( $(ms) - a ))"; }

# A local OCI registry with its own config (Debian's default one turns on htpasswd auth).
cat >"$data/registry.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $data/registry}}
http: {addr: $reg}
YAML
docker-registry serve "$data/registry.yml" >"$data/registry.log" 2>&1 &
pids+=($!)

# Two versions of a web image built from busybox-static with umoci, pushed with skopeo.
build_image() { # tag page
  local oci=$data/oci bundle=$data/bundle-$1
  [ -d "$oci" ] || umoci init --layout "$oci"
  umoci new --image "$oci:$1"
  umoci unpack --rootless --image "$oci:$1" "$bundle" >/dev/null
  mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/www" "$bundle/rootfs/tmp"
  cp /bin/busybox "$bundle/rootfs/bin/busybox"
  for a in sh httpd sleep echo cat ls; do ln -sf busybox "$bundle/rootfs/bin/$a"; done
  echo "$2" >"$bundle/rootfs/www/index.html"
  umoci repack --image "$oci:$1" "$bundle"
  umoci config --image "$oci:$1" --config.cmd sh --config.env PATH=/bin
  skopeo copy --quiet --dest-tls-verify=false "oci:$oci:$1" "docker://$reg/web:$1"
}
until curl -sf "http://$reg/v2/" >/dev/null; do sleep 0.05; done
step "build + push $reg/web:v1 and :v2 (umoci, skopeo)" bash -c "$(declare -f build_image); data=$data reg=$reg; build_image v1 'hello from v1'; build_image v2 'hello from v2'"

"$bin" up --data-dir "$data/kinetic" --listen "127.0.0.1:$port" --gateway-listen "$gw" >"$data/up.log" 2>&1 &
pids+=($!)
export KUBECONFIG="$data/kinetic/kubeconfig"
t0=$(ms)
until [ -s "$KUBECONFIG" ] && kubectl get nodes -o name 2>/dev/null | grep -q node/; do
  kill -0 "${pids[1]}" 2>/dev/null || { cat "$data/up.log"; exit 1; }
  sleep 0.05
done
echo "kinetic up ready, node registered                      $(( $(ms) - t0 )) ms  (KUBECONFIG=$KUBECONFIG)"

# sh is pid 1 and handles SIGTERM, so stopping the container for the upgrade takes no grace
# period (a pid 1 without a handler ignores SIGTERM and is only killed at the deadline).
step "kubectl run web (first start: pulls the image)" kubectl run web --image="$reg/web:v1" --command -- \
  sh -c "trap 'exit 0' TERM; echo serving on port 8080; httpd -f -p 8080 -h /www & wait"
step "  ... until Ready" kubectl wait --for=condition=Ready pod/web --timeout=60s
ip=$(kubectl get pod web -o jsonpath='{.status.podIP}')
uid=$(kubectl get pod web -o jsonpath='{.metadata.uid}')
echo "pod web: IP $ip, answers: $(curl -s "http://$ip:8080/")"
echo "kubectl logs web: $(kubectl logs web | head -1)"
echo
"$bin" trace --kubeconfig "$KUBECONFIG" pod web
echo

step "kubectl set image pod/web web=v2 (in place)" kubectl set image pod/web web="$reg/web:v2"
a=$(ms)
until [ "$(kubectl get pod web -o jsonpath='{.status.containerStatuses[0].image}{.status.containerStatuses[0].ready}')" = "$reg/web:v2true" ]; do sleep 0.02; done
printf '%-52s %6d ms\n' "  ... until the new container is Ready" "$(( $(ms) - a ))"
echo "after the upgrade: IP $(kubectl get pod web -o jsonpath='{.status.podIP}') (was $ip)," \
  "UID unchanged: $([ "$(kubectl get pod web -o jsonpath='{.metadata.uid}')" = "$uid" ] && echo yes || echo no)," \
  "restartCount $(kubectl get pod web -o jsonpath='{.status.containerStatuses[0].restartCount}')," \
  "answers: $(curl -s "http://$ip:8080/")"
echo
kubectl get pods -o wide
kubectl get events --field-selector involvedObject.name=web --sort-by=.metadata.creationTimestamp | tail -12
step "kubectl delete pod web" kubectl delete pod web --grace-period=1

# A release of a 4-pod OpenKruise CloneSet, in place: same pods, same IPs, one restart each.
echo
cat >"$data/cloneset.yaml" <<YAML
apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {name: shop}
spec:
  replicas: 4
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: $reg/web:v1
        command: [sh, -c, "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
  updateStrategy: {type: InPlaceIfPossible, maxUnavailable: 2}
YAML
until kubectl get crd clonesets.apps.kruise.io >/dev/null 2>&1; do sleep 0.05; done
step "kubectl apply a 4-pod CloneSet" kubectl apply -f "$data/cloneset.yaml"
step "  ... until its rollout is complete" "$bin" rollout --kubeconfig "$KUBECONFIG" status cloneset/shop --timeout 120
before=$(kubectl get pods -l app=shop -o jsonpath='{range .items[*]}{.metadata.name}={.status.podIP} {end}')
a=$(ms)
kubectl patch cloneset shop --type json \
  -p "[{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/image\",\"value\":\"$reg/web:v2\"}]" >/dev/null
"$bin" rollout --kubeconfig "$KUBECONFIG" status cloneset/shop --timeout 120
printf '%-52s %6d ms\n' "CloneSet release to v2 in place, until all Ready" "$(( $(ms) - a ))"
after=$(kubectl get pods -l app=shop -o jsonpath='{range .items[*]}{.metadata.name}={.status.podIP} {end}')
echo "pods and IPs before: $before"
echo "pods and IPs after:  $after   (unchanged: $([ "$before" = "$after" ] && echo yes || echo no))"
kubectl get cloneset shop
step "kubectl delete cloneset shop" kubectl delete cloneset shop --wait=true

# A Knative Service, applied unchanged: Kinetic's gateway answers at its URL (by Host header),
# the KPA scales it to zero without traffic (a 6 s window and, through config-autoscaler, a
# 2 s scale-to-zero grace period), and the next request wakes it.
echo
cat >"$data/knative.yaml" <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {scale-to-zero-grace-period: 2s}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    metadata:
      annotations: {autoscaling.knative.dev/window: 6s}
    spec:
      containers:
      - image: $reg/web:v2
        # sh handles SIGTERM, so a scaled-down pod goes at once (see web above).
        command: [sh, -c, "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
YAML
until kubectl get crd services.serving.knative.dev >/dev/null 2>&1; do sleep 0.05; done
# The serving autoscaler creates knative-serving at start; make sure it is there (a namespace
# in the manifest would draw kubectl apply's missing last-applied-configuration warning).
kubectl create namespace knative-serving >/dev/null 2>&1 || true
step "kubectl apply a Knative Service" kubectl apply -f "$data/knative.yaml"
step "  ... until it is Ready" kubectl wait --for=condition=Ready ksvc/hello --timeout=120s
kubectl get ksvc hello
host=$(kubectl get ksvc hello -o jsonpath='{.status.url}')
host=${host#http://}
# The gateway learns a host a moment after the Route's status shows it.
for i in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" "http://$gw/")
  [ "$code" = 200 ] && break
  sleep 0.05
done
[ "$code" = 200 ] || { echo "the gateway answered $code for $host"; exit 1; }
echo "curl -H 'Host: $host' http://$gw/  →  $code $(curl -s -H "Host: $host" "http://$gw/")"
a=$(ms)
n=0
until [ -z "$(kubectl get pods -l serving.knative.dev/service=hello -o name 2>&1)" ]; do
  n=$((n + 1)); [ "$n" -lt 1200 ] || { echo "hello did not scale to zero within 120 s"; exit 1; }
  sleep 0.1
done
printf '%-52s %6d ms\n' "no traffic: scaled to zero pods after" "$(( $(ms) - a ))"
kubectl get ksvc,cloneset
read -r code t < <(curl -s -o "$data/answer" -w '%{http_code} %{time_starttransfer}\n' -H "Host: $host" "http://$gw/")
echo "request from zero: $code \"$(cat "$data/answer")\" first byte after $(awk -v t="$t" 'BEGIN { printf "%.0f", t * 1000 }') ms"
[ "$code" = 200 ]
kubectl get pods -l serving.knative.dev/service=hello -o wide
step "kubectl delete ksvc hello" kubectl delete ksvc hello --wait=true
