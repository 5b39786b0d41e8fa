#!/usr/bin/env bash
# `make demo`: metallb-rs end to end against a real etcd + kube-apiserver on loopback.
#
# 1. build our binaries and the control plane (cached), start the cluster;
# 2. apply a legacy MetalLB `config` ConfigMap and a few LoadBalancer Services, as a 0.12
#    cluster would have them, and start the metallb-rs controller: the Services get IPs;
# 3. edit the ConfigMap (a new pool): the next Service gets an IP from it, no restart; then an
#    edit that would strand IPs in use is rejected, with a Warning Event on the ConfigMap;
# 4. run metallb-migrate against the live objects (`--services`), show the CRDs, the renames
#    and the Service annotation patches, and apply the CRDs to the cluster;
# 5. show what a broken config looks like to a user; tear everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building metallb-rs and the control plane (cached after the first run)"
cargo build --quiet --bins
MIGRATE=target/debug/metallb-migrate
tests/harness/build.sh >/dev/null

say "starting etcd + kube-apiserver on 127.0.0.1"
t0=$(date +%s%N)
eval "$(tests/harness/cluster start --watch-pid $$)"
trap 'tests/harness/cluster stop "$HARNESS_CLUSTER_DIR" >/dev/null 2>&1 || true' EXIT
k() { "$HARNESS_KUBECTL" "$@"; }
echo "cluster ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms at $HARNESS_APISERVER"
k version 2>/dev/null | sed 's/^/  /'

work=$(mktemp -d)
trap 'tests/harness/cluster stop "$HARNESS_CLUSTER_DIR" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

say "a MetalLB 0.12 cluster: the legacy ConfigMap and annotated Services"
cat > "$work/config.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: config
  namespace: metallb-system
data:
  config: |
    peers:
    - peer-address: 198.51.100.1
      peer-asn: 64501
      my-asn: 64500
      password: s3cret
    bgp-communities:
      no-export: 65535:65281
    address-pools:
    - name: Prod_Web
      protocol: layer2
      addresses:
      - 203.0.113.10-203.0.113.20
    - name: bgp-edge
      protocol: bgp
      avoid-buggy-ips: true
      addresses:
      - 198.51.100.128/25
      bgp-advertisements:
      - communities: [no-export]
        localpref: 100
YAML
k apply -f "$work/config.yaml"
k create namespace shop >/dev/null
for s in web:Prod_Web api:bgp-edge plain:; do
  name=${s%%:*}; pool=${s#*:}
  ann=""; [ -n "$pool" ] && ann="  annotations: {metallb.universe.tf/address-pool: $pool}"
  cat <<YAML | k create -f - >/dev/null
apiVersion: v1
kind: Service
metadata:
  name: $name
  namespace: shop
$ann
spec:
  type: LoadBalancer
  ports: [{port: 80, protocol: TCP}]
  selector: {app: $name}
YAML
done
k get svc -n shop -o wide

say "starting the metallb-rs controller (as MetalLB's controller would run)"
target/debug/controller --namespace metallb-system --port 17472 --disable-leader-election \
  > "$work/controller.log" 2>&1 &
ctl=$!
trap 'kill $ctl 2>/dev/null; tests/harness/cluster stop "$HARNESS_CLUSTER_DIR" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
wait_ip() { for _ in $(seq 100); do ip=$(k get svc "$1" -n shop -o jsonpath='{.status.loadBalancer.ingress[0].ip}'); [ -n "$ip" ] && { echo "$1 -> $ip"; return; }; sleep 0.1; done; echo "$1 -> (none)"; }
for s in web api plain; do wait_ip $s; done
k get events -n shop --field-selector reason=IPAllocated -o custom-columns=SERVICE:.involvedObject.name,MESSAGE:.message

say "live reload: add a pool to the ConfigMap; a new Service gets an IP from it, no restart"
sed -e 's|      - 203.0.113.10-203.0.113.20|      - 203.0.113.10-203.0.113.20\n    - name: staging\n      protocol: layer2\n      addresses:\n      - 192.0.2.64/28|' "$work/config.yaml" > "$work/config2.yaml"
k apply -f "$work/config2.yaml" >/dev/null
cat <<'YAML' | k create -f - >/dev/null
apiVersion: v1
kind: Service
metadata: {name: staging-web, namespace: shop, annotations: {metallb.universe.tf/address-pool: staging}}
spec: {type: LoadBalancer, ports: [{port: 80}], selector: {app: staging-web}}
YAML
wait_ip staging-web
python3 -c 'import urllib.request;print(urllib.request.urlopen("http://127.0.0.1:17472/metrics").read().decode())' | grep -E '^metallb_(k8s_client_config|allocator_addresses)'

say "an edit that would strand IPs in use (pool Prod_Web removed): rejected, nothing moves"
python3 - "$work/config2.yaml" > "$work/config3.yaml" <<'PY'
import sys
lines = open(sys.argv[1]).read().split("\n")
out, skip = [], False
for l in lines:
    if l.strip() == "- name: Prod_Web":
        skip = True
        continue
    if skip and l.startswith("    - name:"):
        skip = False
    if not skip:
        out.append(l)
print("\n".join(out))
PY
k apply -f "$work/config3.yaml" >/dev/null
sleep 1
k get events -n metallb-system --field-selector involvedObject.name=config -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
wait_ip web
echo "restoring the accepted config:"; k apply -f "$work/config2.yaml"

say "metallb-migrate --check: what would change (exit 2 when something is renamed)"
set +e
k get configmap config -n metallb-system -o yaml | "$MIGRATE" --check -
echo "exit status: $?"
set -e

say "metallb-migrate with --services against the live Services and --password-secrets"
k get svc -A -o yaml > "$work/services.yaml"
k get configmap config -n metallb-system -o yaml \
  | "$MIGRATE" - --services "$work/services.yaml" --password-secrets -o "$work/crds.yaml"
cat "$work/crds.yaml"

say "server-side dry run, then apply the CRD objects to the real apiserver"
k apply --server-side --force-conflicts --dry-run=server -f "$work/crds.yaml"
k apply --server-side --force-conflicts -f "$work/crds.yaml" >/dev/null
k get ipaddresspools.metallb.io,l2advertisements.metallb.io,bgpadvertisements.metallb.io,bgppeers.metallb.io,communities.metallb.io -n metallb-system
k get svc web -n shop -o jsonpath='{"web annotations: "}{.metadata.annotations}{"\n"}'

say "a user's ConfigMap from compat/ (geek-cookbook seed: BGP to two pfSense firewalls): applied, read back live, migrated"
k apply -f compat/valid/cm-seed-geek-cookbook-bgp-pfsense.yaml
k get configmap metallb-config -n metallb-system -o yaml | "$MIGRATE" -

say "a broken edit: the user reverses a range; metallb-migrate refuses it with a located error"
sed -e 's/203.0.113.10-203.0.113.20/203.0.113.20-203.0.113.10/' "$work/config.yaml" > "$work/bad.yaml"
set +e
"$MIGRATE" "$work/bad.yaml" -o "$work/never.yaml"
echo "exit status: $?; output file written: $([ -e "$work/never.yaml" ] && echo yes || echo no)"
set -e

say "done: tearing the cluster down"
