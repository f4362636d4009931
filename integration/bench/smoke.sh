#!/usr/bin/env bash
# Every benchmark script in its 1-run smoke mode, so none of them rots (CI runs this from
# scripts/test.sh). Results land in integration/bench/results/ as usual.
#   sudo integration/bench/smoke.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for script in pull.sh exec.sh run.sh net.sh core.sh oversub.sh cluster.sh replicas.sh isolation.sh; do
  echo "== bench smoke: $script 1"
  "$HERE/$script" 1 >/dev/null
done
echo "== bench smoke: agent.sh"
"$HERE/agent.sh" >/dev/null
