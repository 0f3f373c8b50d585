#!/usr/bin/env bash
# Another system, written as a shell script, talking to the contacts services with nothing but
# the published contract (docs/integration.md, docs/schemas, docs/examples) and Debian's
# amqp-tools (the rabbitmq-c command-line clients) and jq. The shell twin of
# examples/node-publisher/publish-and-follow.mjs:
#
# 1. it publishes the accounts and the service they are contacts of (account.upserted,
#    service.upserted), as the accounts and provisioning systems do;
# 2. it asks, as a support tool would, that the service's technical contact change
#    (contact_change.submit, with an idempotency key);
# 3. it follows that request (contact_change.state_changed carrying its idempotency key, then
#    its request_id) until it is applied (contact_change.completed), once the confirmers have
#    accepted with the codes they received by email.
#
# Every line it prints on stdout is one JSON object, so that a program can follow it too;
# the tools' own complaints go to stderr.
# Exit status: 0 once the change is completed; 1 if the request ends otherwise (rejected,
# declined, cancelled, expired, failed) or on an error; 2 after TIMEOUT_SECONDS without an outcome.
#
# Settings (environment):
#   AMQP_URL            default amqp://guest:guest@127.0.0.1:5672/%2f (amqp-tools read a trailing
#                       "/" as the vhost "", not "/": write the default vhost %2f, or no path)
#   CONTACTS_NAMESPACE  the contacts deployment's prefix (default none): exchange {ns}contacts
#   SERVICE, REQUESTER, OLD_TECH, NEW_TECH   who is who (defaults: the docs' example)
#   REQUESTER_EMAIL, OLD_TECH_EMAIL, NEW_TECH_EMAIL   their addresses (where the codes go)
#   IDEMPOTENCY_KEY     default: a new one per run
#   QUEUE_PREFIX        its queue is {ns}{QUEUE_PREFIX}.<uuid> (default example.shell): match
#                       the configure permission of its RabbitMQ user
#   TIMEOUT_SECONDS     default 120
#
# Needs: bash, amqp-tools, jq (apt-get install amqp-tools jq). See README.md for what amqp-tools
# can and cannot do (no publisher confirms, no message_id property, no durable bound queue).

set -uo pipefail # no `set -e`: every failure is handled where it happens, with its exit status

AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
namespace=${CONTACTS_NAMESPACE:-}
exchange="${namespace}contacts"
service=${SERVICE:-shop-example.com}
requester=${REQUESTER:-aa11111-ovh} # the service's administrative contact
old_tech=${OLD_TECH:-cc33333-ovh}
new_tech=${NEW_TECH:-bb22222-ovh}
requester_email=${REQUESTER_EMAIL:-owner@shop-example.test}
old_tech_email=${OLD_TECH_EMAIL:-tech@shop-example.test}
new_tech_email=${NEW_TECH_EMAIL:-webmaster@shop-example.test}
timeout_seconds=${TIMEOUT_SECONDS:-120}
listen_timeout_seconds=30 # for the listener to be bound and consuming

# --- output ----------------------------------------------------------------------------------

# say EVENT [--arg NAME VALUE | --argjson NAME JSON]...: one JSON line {"event": EVENT, NAME: VALUE...}
say() {
  local event=$1
  shift
  jq -cn --arg event "$event" "$@" '$ARGS.named'
}

# fail MESSAGE: an {"event":"error"} line, then exit 1 (the EXIT trap cleans up).
fail() {
  say error --arg message "$1"
  exit 1
}

# --- checks before touching the broker ---------------------------------------------------------

for tool in amqp-publish amqp-consume amqp-delete-queue jq; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    # Not through say(): jq may be the missing one.
    printf '{"event":"error","message":"%s is not installed: apt-get install amqp-tools jq"}\n' "$tool"
    exit 1
  fi
done

case $AMQP_URL in
  amqp://*/ | amqps://*/)
    # amqp-tools follow the AMQP URI spec: "host:5672/" selects the vhost "" and the broker
    # answers "NOT_ALLOWED - vhost  not found". amqplib, pika and aio-pika read it as "/".
    fail "AMQP_URL ends with '/', which amqp-tools read as the vhost \"\": write the default vhost as %2f (amqp://user:password@host:5672/%2f) or leave the path out"
    ;;
esac

case $timeout_seconds in
  '' | *[!0-9]*) fail "TIMEOUT_SECONDS must be a whole number of seconds, not '$timeout_seconds'" ;;
esac

# --- helpers -----------------------------------------------------------------------------------

new_uuid() {
  if command -v uuidgen >/dev/null 2>&1; then
    uuidgen
  else
    cat /proc/sys/kernel/random/uuid # Linux without util-linux's uuidgen
  fi
}

# message TYPE DATA_JSON: sets message_id and body, the envelope the guide describes around DATA.
message() {
  message_id=$(new_uuid)
  body=$(jq -cn --arg message_id "$message_id" --arg type "$1" \
    --arg occurred_at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson data "$2" \
    '{message_id: $message_id, type: $type, version: 1, occurred_at: $occurred_at, data: $data}') ||
    fail "could not build the $1 message"
}

# send TYPE BODY: one attempt at publishing BODY on the exchange with routing key TYPE,
# persistent (delivery mode 2), content type application/json. The body goes on stdin, not in
# -b: it names people and their addresses, which argv would show to `ps`.
#
# amqp-publish has no publisher confirms: its exit status 0 says the broker took the message
# and then closed the channel cleanly (a missing exchange or a refused permission fails it),
# not that the message is on disk. It cannot set the AMQP message_id property either: the
# services read the id from the envelope.
send() {
  printf '%s' "$2" | amqp-publish --url="$AMQP_URL" --exchange="$exchange" --routing-key="$1" \
    --persistent --content-type=application/json
}

# publish TYPE DATA_JSON: a new message, published; a failed attempt is published again with the
# same body, hence the same message_id, so that consumers drop it if the first one did arrive.
publish() {
  local attempt
  message "$1" "$2"
  for attempt in 1 2 3; do
    if send "$1" "$body"; then
      say published --arg type "$1" --arg message_id "$message_id"
      return 0
    fi
    echo "publishing $1 failed (attempt $attempt of 3)" >&2
  done
  fail "could not publish $1 on the exchange $exchange (see the error above)"
}

# --- the listener ------------------------------------------------------------------------------
#
# amqp-tools 0.11 (Debian 12) have no bind command: amqp-consume binds a queue when given
# --exchange and --routing-key (a comma-separated list), but only after declaring that queue
# itself, always non-durable and auto-delete. A queue declared durable beforehand (with
# amqp-declare-queue --durable) is refused ("PRECONDITION_FAILED - inequivalent arg 'durable'"),
# so this script's queue is the one amqp-consume declares: fine for a queue that lives as long
# as the script; see README.md for a durable queue that outlives it. It is declared exclusive
# (--exclusive): RabbitMQ 4.3 refuses non-durable queues that are not, and the broker deletes it
# when amqp-consume's connection ends, whatever happens to this script.
#
# amqp-consume runs `jq -c .` once per message, with the body on its stdin, and acks the message
# when it exits 0: each message becomes one line on a FIFO that this script reads. (The `--`
# matters: without it amqp-consume would read jq's -c as its own --count.)

queue="${namespace}${QUEUE_PREFIX:-example.shell}.$(new_uuid)"
workdir=$(mktemp -d) || fail "mktemp failed"
events="$workdir/events"
listener_pid=""

cleanup() {
  exec 3<&- # stop reading: a handler blocked on the FIFO ends
  if [ -n "$listener_pid" ]; then
    kill "$listener_pid" 2>/dev/null
    wait "$listener_pid" 2>/dev/null
  fi
  # The broker deletes the exclusive queue once it sees amqp-consume's connection gone, a moment
  # after the process; until then another connection's delete is refused (RESOURCE_LOCKED). Delete
  # it here, retrying for a few seconds, so that it is gone when the script ends. Beware: in
  # amqp-delete-queue, -u means --if-unused, not --url.
  local deadline=$((SECONDS + 5))
  until amqp-delete-queue --url="$AMQP_URL" --queue="$queue" >/dev/null 2>"$workdir/delete-queue.err"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      cat "$workdir/delete-queue.err" >&2
      echo "could not delete the queue $queue" >&2
      break
    fi
    sleep 0.1
  done
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkfifo "$events" || fail "mkfifo failed"
# account.upserted, bound last, only serves to know when the listener is ready (below).
amqp-consume --url="$AMQP_URL" --queue="$queue" --exclusive --exchange="$exchange" \
  --routing-key="contact_change.state_changed,contact_change.completed,account.upserted" \
  --prefetch-count=10 -- jq -c . >"$events" &
listener_pid=$!
exec 3<"$events" # opens once amqp-consume's side is open too

# publish_when_listening TYPE DATA_JSON: publish (TYPE being the last routing key bound) until the
# message comes back through the listener.
#
# Listen before submitting, so that no announcement can be missed: nothing in amqp-tools says
# when amqp-consume's bindings are in place and it consumes. So the first account is published
# until the listener hands it back, which it can only do once it has made its three bindings
# (in order) and consumes. Published again, it keeps its message_id, so the services drop the
# copies as duplicates; a copy published before the bindings reached only the services. This
# needs no permission beyond the guide's: publishing account.upserted and binding to the exchange.
publish_when_listening() {
  local line status now resend_at=0 deadline=$((SECONDS + listen_timeout_seconds))
  message "$1" "$2"
  while [ "$SECONDS" -lt "$deadline" ]; do
    now=${EPOCHREALTIME//[!0-9]/} # microseconds (bash 5)
    if [ "$now" -ge "$resend_at" ]; then # the first time, then every 0.2 s until it is back
      send "$1" "$body" || fail "could not publish $1 on the exchange $exchange (see the error above)"
      resend_at=$((now + 200000))
    fi
    status=0
    IFS= read -r -t 0.2 -u 3 line || status=$?
    if [ "$status" -gt 128 ]; then
      continue # nothing came
    elif [ "$status" -ne 0 ]; then
      fail "the listener (amqp-consume) stopped: see its error above"
    elif [ "$(jq -r '.message_id? // empty' <<<"$line" 2>/dev/null)" = "$message_id" ]; then
      say listening --arg queue "$queue"
      say published --arg type "$1" --arg message_id "$message_id"
      return 0
    fi # anything else, before our request exists, is not about it
  done
  fail "the listener was not consuming from $queue after ${listen_timeout_seconds}s"
}

# --- publishing --------------------------------------------------------------------------------
#
# Consumers take messages in the order they arrive: the accounts before the service naming
# them, the service before the change asked for it.

idempotency_key=${IDEMPOTENCY_KEY:-shell-publisher-$(new_uuid)}

account() { # account NIC EMAIL: the data of an account.upserted
  jq -cn --arg nic "$1" --arg email "$2" '{nic: $nic, email: $email, zone: "EU"}'
}
publish_when_listening account.upserted "$(account "$requester" "$requester_email")"
publish account.upserted "$(account "$old_tech" "$old_tech_email")"
publish account.upserted "$(account "$new_tech" "$new_tech_email")"
publish service.upserted "$(jq -cn --arg service "$service" --arg admin "$requester" --arg tech "$old_tech" \
  '{service: $service, type: "domain", admin: $admin, tech: $tech, billing: $admin}')"
publish contact_change.submit "$(jq -cn --arg requester "$requester" --arg service "$service" \
  --arg tech "$new_tech" --arg key "$idempotency_key" \
  '{requester: $requester, service: $service, changes: {tech: $tech}, idempotency_key: $key}')"
say waiting --arg idempotency_key "$idempotency_key" \
  --arg note "the confirmers accept with the codes from their emails"

# --- following the request ---------------------------------------------------------------------

request_id="" # learnt from the first state_changed carrying our idempotency key
declare -A seen # message_ids handled: delivery is at least once, a duplicate is dropped

# classify LINE: four lines: what the message is to us (state_changed, completed or other),
# then its message_id, request_id and state (UUIDs and state names: safe one per line).
classify() {
  jq -r --arg key "$idempotency_key" --arg rid "$request_id" '
    (.data | objects) as $data
    | ($data.idempotency_key == $key or ($rid != "" and $data.request_id == $rid)) as $ours
    | (if .type == "contact_change.state_changed" and $ours then "state_changed"
       elif .type == "contact_change.completed" and $rid != "" and $data.request_id == $rid then "completed"
       else "other" end),
      (.message_id // "" | tostring), ($data.request_id // "" | tostring), ($data.state // "" | tostring)
  ' <<<"$1" 2>/dev/null
}

deadline=$((SECONDS + timeout_seconds))
while :; do
  remaining=$((deadline - SECONDS))
  if [ "$remaining" -le 0 ]; then
    say not_completed --argjson ok false --arg state timeout
    exit 2
  fi
  status=0
  IFS= read -r -t "$remaining" -u 3 line || status=$?
  if [ "$status" -gt 128 ]; then
    continue # timed out: the check above ends it
  elif [ "$status" -ne 0 ]; then
    fail "the listener (amqp-consume) stopped: see its error above"
  fi

  kind="" message_id="" rid="" state=""
  { read -r kind; read -r message_id; read -r rid; read -r state; } < <(classify "$line")
  if [ "$kind" = other ] || [ -z "$kind" ]; then
    continue # another request's news, a ping, or a body we cannot read
  fi
  if [ -n "$message_id" ] && [ -n "${seen[$message_id]:-}" ]; then
    continue # delivered again
  fi
  [ -n "$message_id" ] && seen[$message_id]=1

  if [ "$kind" = state_changed ]; then
    request_id=$rid
    jq -c '{event: "state_changed", request_id: .data.request_id, state: .data.state, reason: .data.reason}' <<<"$line"
    case $state in
      rejected | declined | cancelled | expired | failed)
        jq -c '{event: "not_completed", ok: false, state: .data.state, reason: .data.reason}' <<<"$line"
        exit 1
        ;;
    esac
  else # completed: the service's contact is now the new one
    jq -c '{event: "completed", request_id: .data.request_id, service: .data.service, type: .data.type, from: .data.from, to: .data.to}' <<<"$line"
    exit 0
  fi
done
