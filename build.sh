#!/bin/sh
# Build ngx_http_llm_gateway_module and ngx_http_llm_mock_module (llm_mock,
# the fake provider) as dynamic modules binary-compatible with the nginx
# that Debian packages (nginx-dev ships its configure flags).
#
#   ./build.sh                 -> build/ngx_http_llm_gateway_module.so
#                                 build/ngx_http_llm_mock_module.so
#   BUILD_DIR=/tmp/b ./build.sh
#   NGINX_SRC=/path/to/nginx-1.x ./build.sh   (a vanilla source tree)
#   CFLAGS_EXTRA="-fsanitize=address" ./build.sh
set -e

top=$(cd "$(dirname "$0")" && pwd)
build=${BUILD_DIR:-$top/build}
mod=$top/ngx_http_llm_gateway_module

mkdir -p "$build"

if [ -n "$NGINX_SRC" ]; then
    src=$NGINX_SRC
else
    if [ ! -f /usr/share/nginx/src/conf_flags ]; then
        echo "build.sh: /usr/share/nginx/src is missing;" \
             "install nginx-dev (apt-get install nginx-dev)" >&2
        exit 1
    fi
    # a private copy: configure and make write into the tree
    if [ ! -f "$build/nginx-src/configure" ]; then
        rm -rf "$build/nginx-src"
        cp -r /usr/share/nginx/src "$build/nginx-src"
    fi
    src=$build/nginx-src
fi

cd "$src"

stamp="$build/.configured"
if [ ! -f objs/Makefile ] || [ ! -f "$stamp" ] \
   || [ "$mod/config" -nt "$stamp" ] || [ "$0" -nt "$stamp" ]
then
    if [ -n "$NGINX_SRC" ]; then
        ./configure --with-compat --add-dynamic-module="$mod" \
            --with-cc-opt="-O2 -g $CFLAGS_EXTRA" \
            --with-ld-opt="$LDFLAGS_EXTRA"
    else
        bash -c '. /usr/share/nginx/src/conf_flags;
                 exec ./configure "${NGX_CONF_FLAGS[@]}" \
                     --add-dynamic-module="$0" \
                     --with-cc-opt="-O2 -g -Wall -Werror $1" \
                     --with-ld-opt="$2"' \
            "$mod" "$CFLAGS_EXTRA" "$LDFLAGS_EXTRA"
    fi
    touch "$stamp"
fi

make -f objs/Makefile modules
# a new inode: a running nginx keeps its mapping of the old file
for so in ngx_http_llm_gateway_module.so ngx_http_llm_mock_module.so; do
    cp "objs/$so" "$build/.$so.tmp"
    mv -f "$build/.$so.tmp" "$build/$so"
    echo "built $build/$so"
done
