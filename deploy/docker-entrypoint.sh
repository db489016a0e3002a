#!/bin/sh
# The container's entrypoint: create the node on first start, then serve it.
#
# First start (no aidnode.toml in the data directory yet): `aidnode init` from AIDNODE_NAME
# and AIDNODE_BASE_URL. Every later start skips that, so the script is safe to run again and
# again; a data directory that holds part of a node (keys but no settings, say) is never
# touched: `init` refuses it and the container stops with its one-line reason.
#
# With arguments, it runs them instead of the server once the node exists, e.g.
#   docker compose run --rm eastside aidnode check --data /data
# AIDNODE_INIT_ONLY=1 stops after the first-start step (the tests use it).
set -eu
umask 077  # the database and keys are for the node alone

DATA="${AIDNODE_DATA:-/data}"

if [ ! -f "$DATA/aidnode.toml" ]; then
    if [ -z "${AIDNODE_NAME:-}" ] || [ -z "${AIDNODE_BASE_URL:-}" ]; then
        echo "aidnode: no node in $DATA yet; set AIDNODE_NAME and AIDNODE_BASE_URL to create one" >&2
        exit 1
    fi
    aidnode init --data "$DATA" --name "$AIDNODE_NAME" --url "$AIDNODE_BASE_URL"
fi

if [ "${AIDNODE_INIT_ONLY:-0}" = "1" ]; then
    exit 0
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec aidnode serve --data "$DATA"
