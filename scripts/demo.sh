#!/usr/bin/env bash
# `make demo`: the whole system on this machine. Starts the local control plane, MinIO,
# the operator and the upload API (make dev-up), then imports two real product files:
# one uploaded through the REST API, one applied as a ProductImport manifest with
# kubectl. Waits for both, then prints `kubectl get productimports` and a few products.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
.venv/bin/python -m devenv up
# shellcheck disable=SC1091
. .dev/env
DATA=../shared/data
NS=demo
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
run=$(date +%Y%m%d-%H%M%S)

echo "demo: uploading magento2-sample-data/products.csv through the REST API"
accepted=$(curl -sS --fail-with-body -X POST \
  -H "Authorization: Bearer $PRODUCTIMPORT_API_TOKEN" \
  -F "file=@$DATA/magento2-sample-data/products.csv;type=text/csv" -F preset=native \
  "$PRODUCTIMPORT_API_URL/api/v1/namespaces/$NS/catalogs/magento/imports")
rest_name=$(.venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["name"])' <<<"$accepted")
echo "demo: accepted as ProductImport $rest_name"

echo "demo: applying a ProductImport manifest for the Elastic Path example with kubectl"
.venv/bin/python - "$DATA/elasticpath-pcm/pim_product_import_example.csv" "$run" <<'PY'
import os, sys
from productimport.engine.objectstore import minio_client
client = minio_client()
if not client.bucket_exists("uploads"):
    client.make_bucket("uploads")
client.fput_object("uploads", f"demo/{sys.argv[2]}/pim_product_import_example.csv", sys.argv[1])
PY
manifest_name="elasticpath-$run"
kubectl apply -f - <<YAML
apiVersion: catalog.productimport.dev/v1alpha1
kind: ProductImport
metadata:
  name: $manifest_name
  namespace: $NS
spec:
  catalog: elasticpath
  preset: elasticpath
  source:
    object: {bucket: uploads, key: demo/$run/pim_product_import_example.csv}
YAML

for name in "$rest_name" "$manifest_name"; do
  for _ in $(seq 1 300); do
    phase=$(kubectl get pi "$name" -n "$NS" -o jsonpath='{.status.phase}')
    [[ $phase == Succeeded || $phase == Failed ]] && break
    sleep 1
  done
  echo "demo: $name is ${phase:-still not finished}"
done

echo
kubectl get productimports -n "$NS"
echo
echo "The loaders ran as Pods of the image built from this checkout, on a real kubelet:"
kubectl get nodes -o custom-columns='NODE:.metadata.name,RUNTIME:.status.nodeInfo.containerRuntimeVersion'
kubectl get pods -n "$NS" --sort-by=.metadata.creationTimestamp \
  -o custom-columns='POD:.metadata.name,IMAGE:.spec.containers[0].image,STATUS:.status.phase'
echo "Their logs (kubectl logs -n $NS job/$(kubectl get pi "$rest_name" -n "$NS" -o jsonpath='{.status.jobName}')):"
kubectl logs -n "$NS" "job/$(kubectl get pi "$rest_name" -n "$NS" -o jsonpath='{.status.jobName}')" |
  grep progress: | sed 's/^/  /'
echo
echo "A few products of catalog 'magento' (GET .../catalogs/magento/products?limit=3):"
curl -sS -H "Authorization: Bearer $PRODUCTIMPORT_API_TOKEN" \
  "$PRODUCTIMPORT_API_URL/api/v1/namespaces/$NS/catalogs/magento/products?limit=3" |
  .venv/bin/python -c '
import json, sys
page = json.load(sys.stdin)
print("%d products in catalog version %d" % (page["total"], page["catalogVersion"]))
for p in page["items"]:
    name = (p.get("name") or "")[:40]
    print("  %-14s %-40s %s %s" % (p["sku"], name, p.get("price"), p.get("currency") or ""))
'
echo
echo "demo: done in $(( $(date +%s) - started ))s. The system is still running:"
echo "  . .dev/env && kubectl get pi -A      # explore"
echo "  make dev-down                        # stop everything"
for name in "$rest_name" "$manifest_name"; do
  [[ $(kubectl get pi "$name" -n "$NS" -o jsonpath='{.status.phase}') == Succeeded ]] || exit 1
done
