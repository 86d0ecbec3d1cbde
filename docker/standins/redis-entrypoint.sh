#!/bin/sh
# As the official redis image: protected mode off, whatever the command line says before it.
if [ "$1" = redis-server ]; then
    set -- "$@" --protected-mode no
fi
exec "$@"
