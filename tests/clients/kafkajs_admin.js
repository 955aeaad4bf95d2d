// kafkajs (an independent JavaScript implementation of the protocol) for the admin APIs the
// Python clients do not cover. Usage: node kafkajs_admin.js <op> '<json args>'; prints one
// JSON answer. Ops:
//   alter_reassignments {bootstrap, topic, assignments: {"0": [3, 2]}}  -> {"ok": true} or {"error": ...}
//   list_reassignments  {bootstrap, topic?, partitions?}                 -> {"t-0": {replicas, adding, removing}}
"use strict";
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [op, raw] = process.argv.slice(2);
  const a = JSON.parse(raw);
  const kafka = new Kafka({
    clientId: "fjord-kafkajs",
    brokers: a.bootstrap.split(","),
    logLevel: logLevel.NOTHING,
    retry: { retries: 3 },
  });
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (op === "alter_reassignments") {
      const partitionAssignment = Object.entries(a.assignments).map(([p, replicas]) => ({
        partition: Number(p),
        replicas,
      }));
      try {
        await admin.alterPartitionReassignments({
          topics: [{ topic: a.topic, partitionAssignment }],
          timeout: 10000,
        });
        return { ok: true };
      } catch (e) {
        return { error: e.type || e.name, message: e.message };
      }
    }
    if (op === "list_reassignments") {
      const topics = a.topic === undefined ? null : [{ topic: a.topic, partitions: a.partitions }];
      const r = await admin.listPartitionReassignments({ topics, timeout: 10000 });
      const out = {};
      for (const t of r.topics) {
        for (const p of t.partitions) {
          out[`${t.name}-${p.partition}`] = {
            replicas: p.replicas,
            adding_replicas: p.addingReplicas,
            removing_replicas: p.removingReplicas,
          };
        }
      }
      return out;
    }
    throw new Error(`unknown op ${op}`);
  } finally {
    await admin.disconnect();
  }
}

main().then(
  (out) => {
    process.stdout.write(JSON.stringify(out));
    process.exit(0);
  },
  (e) => {
    process.stderr.write(String(e && e.stack ? e.stack : e));
    process.exit(1);
  },
);
