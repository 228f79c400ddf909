#!/usr/bin/env bash
# Make sure the services the integration tests use are up; start any that is down; fail if
# it cannot be reached. PostgreSQL 127.0.0.1:5432, Mosquitto 127.0.0.1:1883, NATS 127.0.0.1:4222.
set -uo pipefail
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_up() { for _ in $(seq 1 30); do up "$1" && return 0; sleep 1; done; return 1; }

if ! up 5432; then
    echo "services: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! up 1883; then
    echo "services: starting Mosquitto" >&2
    mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
fi
if ! up 4222; then
    echo "services: starting NATS" >&2
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
fi
status=0
for pair in "PostgreSQL:5432" "Mosquitto:1883" "NATS:4222"; do
    name="${pair%%:*}"; port="${pair##*:}"
    if ! wait_up "$port"; then
        echo "services: $name is not reachable on 127.0.0.1:$port" >&2
        status=1
    fi
done
exit $status
