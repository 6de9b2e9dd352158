#!/usr/bin/env bash
# Starts the LiteLLM proxy for benches/api.rs, in front of the same simulated OpenRouter switchboard uses:
#   benches/litellm/run.sh <upstream base URL> <upstream key> <model> <port>
# It installs LiteLLM from PyPI into its own venv outside the repository on first use (~500 MB, a few
# minutes), then execs the proxy so the caller's pid is the proxy's (its RSS is what the bench reads).
set -euo pipefail
base_url=$1 key=$2 model=$3 port=$4
# 1.80.0: the newest release whose `proxy` extra installs from PyPI alone at the time of writing (later
# ones require a `litellm-proxy` package that is not published there).
version=1.80.0
venv="${SB_VENV_ROOT:-/var/tmp}/switchboard-litellm-venv-$version"
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "litellm[proxy]==$version"
  touch "$venv/.complete"
fi
config="$venv/bench-$port.yaml"
cat >"$config" <<YAML
model_list:
  - model_name: "$model"
    litellm_params:
      model: "openai/$model"
      api_base: "$base_url"
      api_key: "$key"
litellm_settings:
  telemetry: false
YAML
# No network beyond loopback: the model price map ships with the package; quiet logs as in production.
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR NO_PROXY='*'
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy || true
# The `litellm` command's entry point, called through the venv's python (its script's shebang would pin
# the venv's path). One worker process: the proxy's default.
exec "$venv/bin/python" -c 'from litellm.proxy.proxy_cli import run_server; run_server()' \
  --config "$config" --host 127.0.0.1 --port "$port" --num_workers 1
