# Sourced by the package and monitoring tests: the smallest halo.toml a daemon runs with on
# loopback alone — a status endpoint and a frontend at the addresses given, one server that is
# never up (127.0.0.1:9, the discard port, closed here). Prints it.
loopback_config() {
  local status="$1" frontend="$2"
  cat <<TOML
[status]
listen = "$status"

[[frontend]]
name = "api"
bind = ["$frontend"]
backend = "api"

[[backend]]
name = "api"
[backend.health]
kind = "tcp"
[[backend.server]]
name = "none"
address = "127.0.0.1:9"
TOML
}
