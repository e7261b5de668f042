#!/usr/bin/env bash
# The end-to-end flow on kind, for machines with Docker or Podman and a registry (kind's node image
# comes from docker.io/kindest): a kind cluster with one worker labelled and patched to look like an
# NPU node, the npuserve image built and loaded, the chart installed, and the tiny demo model served
# from the node's /models/tiny. See test/e2e/kind/README.md.
#   bash test/e2e/kind/run.sh            # create (or reuse) cluster 'npuserve', install, wait for Ready
#   kind delete cluster --name npuserve  # remove it
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster="${KIND_CLUSTER:-npuserve}"
image="localhost/npuserve:0.1.0"
npu_resource="huawei.com/Ascend910"
# Docker when present, else Podman (kind's podman provider).
engine=docker
if ! command -v docker >/dev/null; then engine=podman; export KIND_EXPERIMENTAL_PROVIDER=podman; fi
for tool in "$engine" kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "needs $tool on PATH" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config test/e2e/kind/cluster.yaml --wait 120s
fi
kubectl config use-context "kind-$cluster"
node="$cluster-worker"

# An NPU node without NPUs: the label the operator selects on, and extended-resource capacity that
# only a device plugin would normally advertise (written through the node's status subresource).
kubectl label node "$node" accelerator=huawei-Ascend910 --overwrite
kubectl patch node "$node" --subresource=status --type=json \
  -p "[{\"op\":\"add\",\"path\":\"/status/capacity/${npu_resource/\//~1}\",\"value\":\"8\"}]"

if [[ "$engine" == docker ]]; then
  docker build -t "$image" .
  kind load docker-image "$image" --name "$cluster"
else
  npm run image:build -- --base docker.io/library/node:20-bookworm-slim --tag "$image" --no-check
  podman save "$image" -o /tmp/npuserve-image.tar
  kind load image-archive /tmp/npuserve-image.tar --name "$cluster"
fi

helm upgrade --install npuserve charts/npuserve --namespace npuserve-system --create-namespace \
  --set image.repository=localhost/npuserve --set image.tag=0.1.0 --set image.pullPolicy=Never --set operator.runtimeImagePullPolicy=Never --wait --timeout 180s

# The tiny test model, written by the image itself into the node's /models/tiny (a hostPath).
kubectl create namespace npuserve-demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n npuserve-demo -f scripts/demo-artifacts-pvc.yaml
kubectl delete pod -n npuserve-demo make-test-model --ignore-not-found
kubectl apply -n npuserve-demo -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: make-test-model}
spec:
  restartPolicy: Never
  nodeName: $node
  securityContext: {runAsUser: 0}
  containers:
    - name: make
      image: $image
      imagePullPolicy: Never
      args: [make-test-model, --out, /models/tiny]
      volumeMounts: [{name: models, mountPath: /models}]
  volumes: [{name: models, hostPath: {path: /models, type: DirectoryOrCreate}}]
YAML
kubectl wait -n npuserve-demo --for=jsonpath='{.status.phase}'=Succeeded pod/make-test-model --timeout=120s

kubectl apply -n npuserve-demo -f examples/mistral-tiny.yaml
kubectl wait -n npuserve-demo --for=jsonpath='{.status.phase}'=Ready npum/mistral-tiny --timeout=300s
kubectl get npum -n npuserve-demo
echo "try: kubectl port-forward -n npuserve-demo svc/mistral-tiny 8000:8000"
