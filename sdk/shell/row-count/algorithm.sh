#!/bin/sh
# A fedq algorithm in plain shell: no SDK, only HTTP to the node-local endpoint (busybox wget).
# Its input is the label of a data source; it posts how many rows (after the header line) the
# source has at this organization.
set -eu
auth="Authorization: Bearer $FEDQ_TOKEN"
label=$(wget -q -O - --header "$auth" "$FEDQ_ENDPOINT/v1/input")
case "$label" in
  *[!A-Za-z0-9_-]*|"") echo "row-count: the input must be a data source label" >&2; exit 2 ;;
esac
lines=$(wc -l < "$FEDQ_DATA_DIR/$label")
rows=$((lines - 1))
echo "row-count: $label has $rows rows" >&2
wget -q -O /dev/null --header "$auth" --header "Content-Type: application/octet-stream" \
  --post-data "{\"rows\": $rows}" "$FEDQ_ENDPOINT/v1/result"
