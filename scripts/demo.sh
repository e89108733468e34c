#!/usr/bin/env bash
# The main job on the embedded default: start `kinetic up` (API server, scheduler, controllers,
# node agent), build a small web image and push it to a local registry, `kubectl run` it, check
# that it answers on its own IP, upgrade its image in place, print the pod's start-up timeline,
# then release a 4-pod OpenKruise CloneSet in place and print how long each step took, then
# serve two Knative Services through the gateway, one with a warm pod pool, let them scale to
# zero and time the requests that wake them, with and without the pool. Run as root (runc,
# network namespaces).
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
  kubectl delete ksvc hello hello-pooled --wait=true >/dev/null 2>&1 || true
  kubectl delete podpool warm --wait=true >/dev/null 2>&1 || true
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

# Knative Services, applied unchanged: Kinetic's gateway answers at their URLs (by Host
# header), the KPA scales them to zero without traffic (a 6 s window and, through
# config-autoscaler, a 2 s scale-to-zero grace period), and the next request wakes them. The
# same image twice (examples/coldstart): `hello` cold-starts by creating its pod, `hello-pooled`
# by claiming a ready pod of the warm PodPool `warm`, which the node agent specialises by image
# (the placeholder's container replaced in place: no scheduling, no new sandbox or IP).
echo
cat >"$data/autoscaler.yaml" <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {scale-to-zero-grace-period: 2s}
YAML
# The examples name the registry of the README's tour; the demo's is $reg.
sed "s|127.0.0.1:5000/|$reg/|" examples/coldstart/pool.yaml >"$data/pool.yaml"
sed "s|127.0.0.1:5000/|$reg/|" examples/coldstart/services.yaml >"$data/services.yaml"
until kubectl get crd services.serving.knative.dev podpools.kinetic.dev >/dev/null 2>&1; do sleep 0.05; done
# The serving autoscaler creates knative-serving at start; make sure it is there (a namespace
# in the manifest would draw kubectl apply's missing last-applied-configuration warning).
kubectl create namespace knative-serving >/dev/null 2>&1 || true
kubectl apply -f "$data/autoscaler.yaml" >/dev/null
# The pool's unclaimed Ready pods.
pool_ready() {
  kubectl get pods -l kinetic.dev/pool=warm,kinetic.dev/pool-state=ready \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true
}
wait_pool() { until [ "$(pool_ready)" -ge 2 ]; do sleep 0.05; done; }
step "kubectl apply a PodPool (2 warm placeholder pods)" kubectl apply -f "$data/pool.yaml"
step "  ... until both are Ready" wait_pool
step "kubectl apply 2 Knative Services (one with the pool)" kubectl apply -f "$data/services.yaml"
step "  ... until both are Ready" kubectl wait --for=condition=Ready ksvc/hello ksvc/hello-pooled --timeout=120s
kubectl get ksvc
declare -A hosts
for svc in hello hello-pooled; do
  host=$(kubectl get ksvc "$svc" -o jsonpath='{.status.url}')
  host=${host#http://}
  hosts[$svc]=$host
  # The gateway learns a host a moment after the Route's status shows it.
  for i in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" "http://$gw/")
    [ "$code" = 200 ] && break
    sleep 0.05
  done
  [ "$code" = 200 ] || { echo "the gateway answered $code for $host"; exit 1; }
  echo "curl -H 'Host: $host' http://$gw/  →  $code $(curl -s -H "Host: $host" "http://$gw/")"
done
# Both at zero pods, the pool full again.
at_zero() {
  local n=0
  until [ -z "$(kubectl get pods -l 'serving.knative.dev/service in (hello,hello-pooled)' -o name 2>&1)" ]; do
    n=$((n + 1)); [ "$n" -lt 1200 ] || { echo "the Services did not scale to zero within 120 s"; exit 1; }
    sleep 0.1
  done
  wait_pool
}
# One request from zero to $1: prints its first-byte time in ms, checks the answer.
from_zero() {
  local code t
  read -r code t < <(curl -s -o "$data/answer-$1" -w '%{http_code} %{time_starttransfer}\n' -H "Host: ${hosts[$1]}" "http://$gw/")
  [ "$code" = 200 ] || { echo "request from zero to $1: $code $(cat "$data/answer-$1")" >&2; exit 1; }
  awk -v t="$t" 'BEGIN { printf "%.0f", t * 1000 }'
}
a=$(ms)
at_zero
printf '%-52s %6d ms\n' "no traffic: both scaled to zero pods after" "$(( $(ms) - a ))"
kubectl get ksvc,cloneset,podpool
rounds=${KINETIC_DEMO_COLD_ROUNDS:-3}
none=() pooled=()
for r in $(seq "$rounds"); do
  [ "$r" = 1 ] || at_zero
  t=$(from_zero hello); none+=("$t")
  t=$(from_zero hello-pooled); pooled+=("$t")
  pod=$(kubectl get pods -l serving.knative.dev/service=hello-pooled -o jsonpath='{.items[0].metadata.name}')
  printf 'cold start %d, first byte from zero: no pool %5d ms, with the pool %5d ms (pod %s, from the pool: %s)\n' \
    "$r" "${none[-1]}" "${pooled[-1]}" "$pod" "$(kubectl get pod "$pod" -o jsonpath='{.metadata.labels.kinetic\.dev/pool}' | grep -q warm && echo yes || echo no)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf '%-52s %6d ms\n' "median of $rounds cold starts from zero, no pool" "$(median "${none[@]}")"
printf '%-52s %6d ms\n' "median of $rounds cold starts from zero, with the pool" "$(median "${pooled[@]}")"
echo "(the pool saves the pod's scheduling and sandbox; kinetic bench coldstart has the figures)"
kubectl get pods -l 'serving.knative.dev/service in (hello,hello-pooled)' -o wide
step "kubectl delete the Services and the pool" kubectl delete ksvc/hello ksvc/hello-pooled podpool/warm --wait=true
