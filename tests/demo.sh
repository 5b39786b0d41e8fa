#!/usr/bin/env bash
# `make demo`: metallb-rs end to end against a real etcd + kube-apiserver on loopback.
#
# 1. build our binaries and the control plane (cached), start the cluster;
# 2. apply a legacy MetalLB `config` ConfigMap and a few LoadBalancer Services, as a 0.12
#    cluster would have them, and start the metallb-rs controller: the Services get IPs;
# 3. edit the ConfigMap (a new pool): the next Service gets an IP from it, no restart; then an
#    edit that would strand IPs in use is rejected, with a Warning Event on the ConfigMap;
# 4. layer 2: two "nodes" (network namespaces on a bridge) run metallb-rs speakers; a client
#    namespace resolves the Service IP by ARP (answered by the elected node) and pings it; the
#    owner's speaker is killed and the other node takes over;
#    BGP: a real router (GoBGP) peers with the speaker over TCP-MD5 and a Service of the bgp
#    pool appears in its table;
# 5. run metallb-migrate against the live objects (`--services`), show the CRDs, the renames
#    and the Service annotation patches; then migrate inside the cluster
#    (`--from-cluster`): dry run, `--apply` (the controller and speakers, started with
#    `--config-source=auto`, switch to the metallb.io objects, no IP moves), `--rollback`;
# 6. show what a broken config looks like to a user; tear everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building metallb-rs and the control plane (cached after the first run)"
cargo build --quiet --bins
MIGRATE=target/debug/metallb-migrate
tests/harness/build.sh >/dev/null

say "starting etcd + kube-apiserver (on a bridge, so network namespaces can reach it)"
t0=$(date +%s%N)
eval "$(tests/harness/cluster start --netns --watch-pid $$)"
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
  --config-source auto > "$work/controller.log" 2>&1 &
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

say "layer 2: two nodes run metallb-rs speakers (only CAP_NET_RAW); a client resolves the IP by ARP"
web_ip=$(k get svc web -n shop -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
spk=()
declare -A mac node_addr
k create serviceaccount speaker -n metallb-system >/dev/null
for n in node-a node-b; do
  eval "$(tests/harness/cluster netns-add "demo-$n" "$HARNESS_CLUSTER_DIR" 2>/dev/null)"
  mac[$n]=$(ip -n "demo-$n" -j link show eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')
  ip netns exec "demo-$n" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1
  ip netns exec "demo-$n" ip addr add "$web_ip/32" dev lo   # as kube-proxy IPVS would
  cat <<YAML | k apply -f - >/dev/null
apiVersion: v1
kind: Node
metadata: {name: $n, labels: {kubernetes.io/hostname: $n}}
---
apiVersion: v1
kind: Pod
metadata: {name: speaker-$n, namespace: metallb-system, labels: {app: metallb, component: speaker}}
spec: {nodeName: $n, hostNetwork: true, automountServiceAccountToken: false, serviceAccountName: speaker,
       containers: [{name: speaker, image: metallb-rs/speaker:demo}]}
YAML
  k patch node "$n" --subresource=status --type=merge -p '{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Demo","message":"no kubelet here"}]}}' >/dev/null
  k patch pod "speaker-$n" -n metallb-system --subresource=status --type=merge \
    -p "{\"status\":{\"podIP\":\"$HARNESS_NODE_ADDR\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}" >/dev/null
  ip netns exec "demo-$n" setpriv --bounding-set=-all,+net_raw --inh-caps=-all,+net_raw --ambient-caps=-all,+net_raw -- \
    env METALLB_NODE_NAME=$n METALLB_HOST=$HARNESS_NODE_ADDR METALLB_ML_BIND_ADDR=$HARNESS_NODE_ADDR \
    METALLB_ML_LABELS=app=metallb,component=speaker METALLB_ML_SECRET_KEY=demo-secret \
    target/debug/speaker --namespace metallb-system --kubeconfig "$KUBECONFIG" --config-source auto > "$work/speaker-$n.log" 2>&1 &
  spk+=($!); disown "$!"
  node_addr[$n]=$HARNESS_NODE_ADDR
  echo "$n: netns demo-$n, eth0 $HARNESS_NODE_ADDR, MAC ${mac[$n]}"
done
trap 'kill ${spk[*]} $ctl 2>/dev/null; tests/harness/cluster stop "$HARNESS_CLUSTER_DIR" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cat <<YAML | k apply -f - >/dev/null
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.10], conditions: {ready: true}, nodeName: node-a}]
ports: [{port: 8080, protocol: TCP, name: ""}]
YAML
eval "$(tests/harness/cluster netns-add demo-client "$HARNESS_CLUSTER_DIR" 2>/dev/null)"
ip netns exec demo-client ip route add 203.0.113.0/24 dev eth0
owner=""
for _ in $(seq 50); do
  owner=$(ip netns exec demo-client arping -c 1 -w 1 -i eth0 "$web_ip" 2>/dev/null | sed -n 's/.*bytes from \([0-9a-f:]*\).*/\1/p' | head -1 || true)
  if [ -n "$owner" ]; then break; fi
  sleep 0.2
done
owner_node=?
for n in node-a node-b; do if [ "${mac[$n]}" = "$owner" ]; then owner_node=$n; fi; done
echo "client: arping $web_ip (service shop/web)"
ip netns exec demo-client arping -c 3 -i eth0 "$web_ip" | sed 's/^/  /'
echo "-> answered by ${owner_node:-?} (MetalLB's election: lowest sha256(node#ip))"
ip netns exec demo-client ping -c 2 -W 2 "$web_ip" | sed 's/^/  /' | head -3
k get events -n shop --field-selector reason=nodeAssigned -o custom-columns=SERVICE:.involvedObject.name,MESSAGE:.message

say "failover: kill -9 the speaker on $owner_node; the other node takes over"
i=0; if [ "$owner_node" = node-b ]; then i=1; fi
kill -9 "${spk[$i]}"
t0=$(date +%s%N)
for _ in $(seq 100); do
  now=$(ip netns exec demo-client arping -c 1 -w 0.1 -i eth0 "$web_ip" 2>/dev/null | sed -n 's/.*bytes from \([0-9a-f:]*\).*/\1/p' | head -1 || true)
  if [ -n "$now" ] && [ "$now" != "$owner" ]; then break; fi
done
echo "answered by $now after $(( ($(date +%s%N) - t0) / 1000000 )) ms (measured by arping probes, see BENCHMARKS.md)"
ip netns exec demo-client arping -c 2 -i eth0 "$web_ip" | sed 's/^/  /'

say "BGP: a router (GoBGP, AS 64501) peers with the speakers over TCP-MD5; a Service of the bgp pool lands in its table"
eval "$(tests/harness/cluster netns-add demo-router "$HARNESS_CLUSTER_DIR" 2>/dev/null)"
router=$HARNESS_NODE_ADDR
{
  printf '[global.config]\n  as = 64501\n  router-id = "%s"\n' "$router"
  for n in node-a node-b; do
    printf '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "%s"\n    peer-as = 64500\n    auth-password = "s3cret"\n' "${node_addr[$n]}"
    printf '  [neighbors.transport.config]\n    passive-mode = true\n'
  done
} > "$work/gobgpd.toml"
ip netns exec demo-router gobgpd -f "$work/gobgpd.toml" --api-hosts=127.0.0.1:50051 --pprof-disable > "$work/gobgpd.log" 2>&1 &
gobgpd_pid=$!; disown "$gobgpd_pid"
trap 'kill ${spk[*]} $ctl $gobgpd_pid 2>/dev/null; tests/harness/cluster stop "$HARNESS_CLUSTER_DIR" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
sed -e "s/peer-address: 198.51.100.1$/peer-address: $router/" "$work/config2.yaml" > "$work/config-bgp.yaml"
echo "ConfigMap edit: the peer is now the router at $router (password s3cret), no restart:"
k apply -f "$work/config-bgp.yaml" >/dev/null
k create service loadbalancer edge -n shop --tcp=443:8443 >/dev/null
k annotate svc edge -n shop metallb.universe.tf/address-pool=bgp-edge >/dev/null
cat <<YAML | k apply -f - >/dev/null
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: edge-1, namespace: shop, labels: {kubernetes.io/service-name: edge}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.11], conditions: {ready: true}, nodeName: node-a}]
ports: [{port: 8443, protocol: TCP, name: ""}]
YAML
edge_ip=""
for _ in $(seq 100); do
  edge_ip=$(k get svc edge -n shop -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
  if [ -n "$edge_ip" ] && ip netns exec demo-router gobgp -u 127.0.0.1 global rib 2>/dev/null | grep -q "$edge_ip"; then break; fi
  sleep 0.2
done
echo "service shop/edge got $edge_ip; the router's table (next hop = the live node, AS path 64500):"
ip netns exec demo-router gobgp -u 127.0.0.1 neighbor | sed 's/^/  /'
ip netns exec demo-router gobgp -u 127.0.0.1 global rib | sed 's/^/  /'

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

say "the apiserver accepts them (server-side dry run)"
k apply --server-side --force-conflicts --dry-run=server -f "$work/crds.yaml"

say "in-cluster migration, dry run: metallb-migrate --from-cluster (what --apply would do)"
"$MIGRATE" --from-cluster --services --password-secrets | grep '^# ' | tail -n 20
k get svc -A -o custom-columns=SERVICE:.metadata.name,IP:.status.loadBalancer.ingress[0].ip --no-headers | sort > "$work/ips-before"

say "--apply: write the objects, read them back, compare the semantic hash, switch the running binaries"
"$MIGRATE" --from-cluster --services --password-secrets --apply
metric() { python3 -c 'import urllib.request,sys;print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1" | grep -E '^metallb_rs_config_source|^metallb_k8s_client_config_stale'; }
for _ in $(seq 50); do metric http://127.0.0.1:17472/metrics | grep -q 'source="crds"' && break; sleep 0.1; done
echo "controller:"; metric http://127.0.0.1:17472/metrics | sed 's/^/  /'
k get events -n metallb-system --field-selector reason=ConfigSourceChanged -o custom-columns=SOURCE:.source.component,OBJECT:.involvedObject.name,MESSAGE:.message
k get ipaddresspools.metallb.io,l2advertisements.metallb.io,bgpadvertisements.metallb.io,bgppeers.metallb.io,communities.metallb.io -n metallb-system
k get svc web -n shop -o jsonpath='{"web annotations: "}{.metadata.annotations}{"\n"}'
k get svc -A -o custom-columns=SERVICE:.metadata.name,IP:.status.loadBalancer.ingress[0].ip --no-headers | sort > "$work/ips-after"
if diff -u "$work/ips-before" "$work/ips-after"; then echo "no Service IP changed across the switch"; fi
"$MIGRATE" --from-cluster --services --password-secrets --apply 2>&1 | tail -n 1 | sed 's/^/second --apply: /'

say "--rollback: back to the ConfigMap, remove only what --apply wrote"
"$MIGRATE" --from-cluster --services --rollback
for _ in $(seq 50); do metric http://127.0.0.1:17472/metrics | grep -q 'source="configmap"' && break; sleep 0.1; done
metric http://127.0.0.1:17472/metrics | sed 's/^/  /'
k get svc -A -o custom-columns=SERVICE:.metadata.name,IP:.status.loadBalancer.ingress[0].ip --no-headers | sort > "$work/ips-back"
if diff -u "$work/ips-before" "$work/ips-back"; then echo "no Service IP changed across the rollback"; fi

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
