// Another system, written in Node.js, talking to the contacts services with nothing but the
// published contract (docs/asyncapi.yaml, docs/schemas, docs/integration.md):
//
// 1. it publishes the accounts and the service they are contacts of (account.upserted,
//    service.upserted), as the accounts and provisioning systems do;
// 2. it asks, as a support tool would, that the service's technical contact change
//    (contact_change.submit, with an idempotency key);
// 3. it follows that request (contact_change.state_changed carrying its idempotency key) until
//    it is applied (contact_change.completed), once the confirmers have accepted by email.
//
// Every line it prints on stdout is one JSON object, so that a program can follow it too.
// Exit status: 0 once the change is completed; 1 if the request ends otherwise (rejected,
// declined...) or on an error; 2 after TIMEOUT_SECONDS without an outcome.
//
// Settings (environment):
//   AMQP_URL            default amqp://guest:guest@127.0.0.1:5672/%2f
//   CONTACTS_NAMESPACE  the contacts deployment's prefix (default none): exchange {ns}contacts
//   SERVICE, REQUESTER, OLD_TECH, NEW_TECH   who is who (defaults: the docs' example)
//   IDEMPOTENCY_KEY     default: a new one per run
//   TIMEOUT_SECONDS     default 120

import { randomUUID } from "node:crypto";
import amqp from "amqplib";

const env = process.env;
const amqpUrl = env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f";
const exchange = `${env.CONTACTS_NAMESPACE || ""}contacts`;
const service = env.SERVICE || "shop-example.com";
const requester = env.REQUESTER || "aa11111-ovh"; // the service's administrative contact
const oldTech = env.OLD_TECH || "cc33333-ovh";
const newTech = env.NEW_TECH || "bb22222-ovh";
const idempotencyKey = env.IDEMPOTENCY_KEY || `node-publisher-${randomUUID()}`;
const timeoutSeconds = Number(env.TIMEOUT_SECONDS || 120);

function say(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

// The envelope every message carries: message_id is the consumers' idempotency key, so a
// message published again after a lost confirm must keep its message_id.
function envelope(type, data) {
  return { message_id: randomUUID(), type, version: 1, occurred_at: new Date().toISOString(), data };
}

async function publish(channel, type, data) {
  const body = envelope(type, data);
  channel.publish(exchange, type, Buffer.from(JSON.stringify(body)), {
    persistent: true, // survives a broker restart (the services' queues are durable quorum queues)
    contentType: "application/json",
    messageId: body.message_id,
  });
  await channel.waitForConfirms(); // the broker has it: safe to forget
  say("published", { type, message_id: body.message_id });
}

async function main() {
  const connection = await amqp.connect(amqpUrl);
  try {
    // Same declaration as the services' (a durable topic exchange); harmless if it exists.
    const publisher = await connection.createConfirmChannel();
    await publisher.assertExchange(exchange, "topic", { durable: true });

    // Listen before submitting, so that no announcement can be missed. A real system would use
    // a durable queue of its own ({ns}<system>) so nothing is lost while it is down.
    const listener = await connection.createChannel();
    const { queue } = await listener.assertQueue("", { exclusive: true, autoDelete: true });
    await listener.bindQueue(queue, exchange, "contact_change.state_changed");
    await listener.bindQueue(queue, exchange, "contact_change.completed");

    let requestId = null;
    const outcome = new Promise((resolve, reject) => {
      listener.consume(queue, (message) => {
        try {
          const body = JSON.parse(message.content.toString("utf8"));
          const data = body.data;
          // The submission's first announcement carries our idempotency key; later ones, the
          // request's id it told us.
          const ours = data.idempotency_key === idempotencyKey || (requestId !== null && data.request_id === requestId);
          if (body.type === "contact_change.state_changed" && ours) {
            requestId = data.request_id;
            say("state_changed", { request_id: data.request_id, state: data.state, reason: data.reason });
            if (["rejected", "declined", "cancelled", "expired", "failed"].includes(data.state)) {
              resolve({ ok: false, state: data.state, reason: data.reason });
            }
          } else if (body.type === "contact_change.completed" && data.request_id === requestId) {
            say("completed", { request_id: data.request_id, service: data.service, type: data.type, from: data.from, to: data.to });
            resolve({ ok: true });
          }
          listener.ack(message); // after handling, as the services do
        } catch (error) {
          // Not for us to retry forever: a body we cannot read is dropped (a real consumer would
          // dead-letter it).
          listener.nack(message, false, false);
          reject(error);
        }
      });
    });

    const people = [
      [requester, "owner@shop-example.test"],
      [oldTech, "tech@shop-example.test"],
      [newTech, "webmaster@shop-example.test"],
    ];
    for (const [nic, email] of people) {
      await publish(publisher, "account.upserted", { nic, email, zone: "EU" });
    }
    await publish(publisher, "service.upserted", {
      service,
      type: "domain",
      admin: requester,
      tech: oldTech,
      billing: requester,
    });
    await publish(publisher, "contact_change.submit", {
      requester,
      service,
      changes: { tech: newTech },
      idempotency_key: idempotencyKey,
    });
    say("waiting", { idempotency_key: idempotencyKey, note: "the confirmers accept with the codes from their emails" });

    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, state: "timeout" }), timeoutSeconds * 1000);
    });
    const result = await Promise.race([outcome, timeout]);
    clearTimeout(timer);
    if (!result.ok) {
      say("not_completed", result);
      return result.state === "timeout" ? 2 : 1;
    }
    return 0;
  } finally {
    await connection.close();
  }
}

main().then(
  (status) => process.exit(status),
  (error) => {
    say("error", { message: String(error && error.message ? error.message : error) });
    process.exit(1);
  },
);
