#!/bin/bash
# See the gateway work in one command: installs what the build needs
# (Debian/Ubuntu), builds the modules, starts nginx with
# examples/quickstart.conf (the gateway on 127.0.0.1:8080 in front of
# llm_mock, the fake provider module, on 127.0.0.1:8081; no API key, no
# Redis) and asks it once.  Run it again to rebuild and restart.
#
#   ./quickstart.sh
#   nginx -p "$PWD/" -c "$PWD/examples/quickstart.conf" -s stop
set -euo pipefail

top=$(cd "$(dirname "$0")" && pwd)
conf=$top/examples/quickstart.conf
gw=http://127.0.0.1:8080

"$top/scripts/deps.sh" nginx nginx-dev libjansson-dev libhiredis-dev gcc make curl

# /usr/sbin is not in every user's PATH
nginx=$(command -v nginx || echo /usr/sbin/nginx)

# quickstart.conf loads build/ngx_http_llm_gateway_module.so and
# build/ngx_http_llm_mock_module.so
env -u BUILD_DIR "$top/build.sh"

mkdir -p "$top/logs"

# stop a previous quickstart nginx and wait until its ports are free
if "$nginx" -p "$top/" -c "$conf" -s stop 2>/dev/null; then
    for _ in $(seq 50); do
        [ -f "$top/logs/quickstart.pid" ] || break
        sleep 0.1
    done
fi

"$nginx" -p "$top/" -c "$conf" -t
"$nginx" -p "$top/" -c "$conf"

for _ in $(seq 50); do
    curl -s -o /dev/null "$gw/v1/models" && break
    sleep 0.1
done

cat <<END

nginx is running: the gateway on $gw, llm_mock on 127.0.0.1:8081.
Logs are in $top/logs (llm.log has the per-request LLM fields).

Try:

  curl $gw/v1/models

  curl $gw/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}'

  # the same API in front of Anthropic-, Gemini- and Azure-format providers
  curl $gw/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"claude-sonnet","messages":[{"role":"user","content":"Hi"}]}'
  curl $gw/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"gemini-flash","messages":[{"role":"user","content":"Hi"}]}'
  curl $gw/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"azure-gpt","messages":[{"role":"user","content":"Hi"}]}'

  # streaming
  curl -N $gw/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"claude-sonnet","stream":true,
         "messages":[{"role":"user","content":"Stream this"}]}'

  curl $gw/v1/embeddings -H 'Content-Type: application/json' \\
    -d '{"model":"text-embedding-3-small","input":"Hello"}'

Stop it with:

  nginx -p "$top/" -c "$conf" -s stop

Asking $gw/v1/chat/completions for gpt-4o-mini:

END

if ! curl -sS -i "$gw/v1/chat/completions" \
        -H 'Content-Type: application/json' \
        -d '{"model":"gpt-4o-mini",
             "messages":[{"role":"user","content":"Hello, gateway!"}]}'
then
    echo "quickstart: the gateway did not answer; see $top/logs/error.log" >&2
    tail -n 20 "$top/logs/error.log" >&2
    exit 1
fi
echo
