// The published JSON Schemas, read by another validator than the Python one: Ajv (draft 2020-12,
// strict mode, formats checked by ajv-formats). Compiles every docs/schemas/*.json, validates
// every docs/examples/*.json against the schema of the same routing key, and checks that a few
// bad bodies are refused. Prints one JSON line per finding, then a summary line; exits 1 on any
// failure. Run by tests/contract/test_validators.py.
import { readFileSync, readdirSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const DOCS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "docs");
const read = (path) => JSON.parse(readFileSync(path, "utf8"));
const jsonFiles = (folder) => readdirSync(join(DOCS, folder)).filter((name) => name.endsWith(".json")).sort();

// Bad bodies made from an example: [what, routing key, change]. Each must be refused.
const BAD = [
  ["message_id not a UUID", "account.upserted", (body) => { body.message_id = "not-a-uuid"; }],
  ["occurred_at without a time zone", "account.upserted", (body) => { body.occurred_at = "2026-01-31T12:00:00"; }],
  ["occurred_at not a date-time", "invoice.issued", (body) => { body.occurred_at = "yesterday"; }],
  ["type of another message", "account.deleted", (body) => { body.type = "account.upserted"; }],
  ["data missing", "service.deleted", (body) => { delete body.data; }],
  ["request_id not a UUID", "contact_change.completed", (body) => { body.data.request_id = "42"; }],
];

const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const failures = [];
const validators = {};
for (const name of jsonFiles("schemas")) {
  try {
    validators[basename(name, ".json")] = ajv.compile(read(join(DOCS, "schemas", name)));
  } catch (error) {
    failures.push({ schema: name, compile: error.message });
  }
}
for (const name of jsonFiles("examples")) {
  const key = basename(name, ".json");
  const validate = validators[key];
  if (!validate) {
    failures.push({ example: name, error: "no schema of that name" });
  } else if (!validate(read(join(DOCS, "examples", name)))) {
    failures.push({ example: name, errors: ajv.errorsText(validate.errors) });
  }
}
let refused = 0;
for (const [what, key, change] of BAD) {
  const body = read(join(DOCS, "examples", `${key}.json`));
  change(body);
  if (!validators[key] || validators[key](body)) {
    failures.push({ bad: what, routing_key: key, error: "accepted" });
  } else {
    refused += 1;
  }
}
for (const failure of failures) console.log(JSON.stringify(failure));
console.log(JSON.stringify({
  schemas: Object.keys(validators).length, examples: jsonFiles("examples").length, bad_refused: refused, failures: failures.length,
}));
process.exitCode = failures.length ? 1 : 0;
