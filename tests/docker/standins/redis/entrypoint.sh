#!/bin/sh
# As the official image does: without a configuration file, redis-server answers other containers
# (protected mode would refuse every client but the loopback).
set -eu
if [ "$1" = redis-server ]; then
  exec "$@" --protected-mode no
fi
exec "$@"
