// A Node.js client of arbor.v1 (@grpc/grpc-js with the .proto files loaded at run
// time, as a JavaScript team would use it): creates an experiment and a three-level run
// tree, streams points with LogMetricStream, watches the subtree from the start of the
// log, drops the watch halfway and resumes it by sequence number, and checks that every
// point arrived exactly once. Usage: node client.mjs HOST:PORT. Exits 1 on a mismatch.
// With ARBOR_CA (a PEM file) it connects over TLS trusting that CA; with ARBOR_TOKEN it
// sends the token as `authorization: Bearer ...` metadata on every call (a server with
// --auth).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const address = process.argv[2];
if (!address) {
  console.error("usage: node client.mjs HOST:PORT");
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "../../proto");
const definition = protoLoader.loadSync(
  ["arbor/v1/tracking.proto", "arbor/v1/watch.proto"],
  { includeDirs: [protoRoot], keepCase: true, longs: Number, defaults: true, oneofs: true },
);
const arbor = grpc.loadPackageDefinition(definition).arbor.v1;
function channelCredentials() {
  if (!process.env.ARBOR_CA) return grpc.credentials.createInsecure();
  const tls = grpc.credentials.createSsl(fs.readFileSync(process.env.ARBOR_CA));
  const token = process.env.ARBOR_TOKEN;
  if (!token) return tls;
  const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata();
    metadata.add("authorization", `Bearer ${token}`);
    callback(null, metadata);
  });
  return grpc.credentials.combineChannelCredentials(tls, bearer);
}
const credentials = channelCredentials();
const tracking = new arbor.TrackingService(address, credentials);
const watch = new arbor.WatchService(address, credentials);

const call = (method, request) =>
  new Promise((resolve, reject) =>
    tracking[method](request, (err, response) => (err ? reject(err) : resolve(response))),
  );

const MESSAGES = 10;
const POINTS = 100;

async function main() {
  const { experiment_id } = await call("CreateExperiment", { name: `node-${process.pid}-${Date.now()}` });
  const newRun = async (parent) =>
    (
      await call("CreateRun", {
        experiment_id,
        tags: parent ? [{ key: "mlflow.parentRunId", value: parent }] : [],
      })
    ).run.info.run_id;
  const root = await newRun(null);
  const child = await newRun(root);
  const grandchild = await newRun(child);

  // Points through a client stream, 10 messages of 100 points per run.
  const logged = await new Promise((resolve, reject) => {
    const stream = tracking.LogMetricStream((err, response) => (err ? reject(err) : resolve(response)));
    for (const run_id of [child, grandchild]) {
      for (let m = 0; m < MESSAGES; m++) {
        const metrics = [];
        for (let i = 0; i < POINTS; i++) {
          const step = m * POINTS + i;
          metrics.push({ key: "loss", value: 1 / (step + 1), timestamp: 1_700_000_000_000 + step, step });
        }
        stream.write({ run_id, metrics });
      }
    }
    stream.end();
  });
  const total = 2 * MESSAGES * POINTS;
  assert.equal(Number(logged.points_committed), total);

  // Watch the whole subtree from the start of the log; drop the stream halfway.
  const seen = new Map();
  const receive = (fromSeq, stopAt) =>
    new Promise((resolve, reject) => {
      const stream = watch.WatchMetrics({ subtree_run_id: root, keys: [], from_seq: fromSeq });
      let last = fromSeq - 1;
      let done = false;
      stream.on("data", (msg) => {
        if (done) return;
        last = Number(msg.seq);
        for (const series of msg.series) {
          series.steps.forEach((step, i) => {
            const id = `${msg.run_id}/${series.key}/${step}`;
            assert.ok(!seen.has(id), `point ${id} arrived twice`);
            seen.set(id, series.values[i]);
          });
        }
        if (seen.size >= stopAt) {
          done = true;
          stream.cancel();
          resolve(last);
        }
      });
      stream.on("error", (err) => {
        if (!done) reject(err);
      });
    });
  const lastSeq = await receive(1, total / 2);
  assert.ok(seen.size < total, "the first stream was cut before the end");
  await receive(lastSeq + 1, total);
  assert.equal(seen.size, total);
  for (const run of [child, grandchild]) {
    for (let step = 0; step < MESSAGES * POINTS; step++) {
      assert.equal(seen.get(`${run}/loss/${step}`), 1 / (step + 1), `${run} step ${step}`);
    }
  }

  // The history agrees with what was watched.
  const history = await call("GetMetricHistory", { run_id: child, metric_key: "loss" });
  assert.equal(history.metrics.length, MESSAGES * POINTS);
  console.log(
    `node client: ${total} points streamed, watched across a reconnect at seq ${lastSeq}, none lost or repeated`,
  );
}

main()
  .then(() => process.exit(0))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
