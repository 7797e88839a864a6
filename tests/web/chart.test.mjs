// Unit tests of the live page's pure parts (the chart's arithmetic and the run tree's
// model), run with Node's test runner by scripts/test: `node --test tests/web/`.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Series, lowerBound, nearestIndex, niceTicks, logTicks, reduceToPixels, smooth, formatValue } from "../../web/chart.js";
import { RunTree, duration, lowerIsBetter } from "../../web/tree.js";

test("ticks are round and cover the range", () => {
  assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(niceTicks(0.13, 0.52, 4), [0.2, 0.3, 0.4, 0.5]);
  assert.deepEqual(niceTicks(5, 5), [5]);
  assert.deepEqual(logTicks(0.005, 200), [0.01, 0.1, 1, 10, 100]);
});

test("per-pixel reduction keeps first, last, lowest and highest of each column", () => {
  const n = 1_000_000;
  const xs = Array.from({ length: n }, (_, i) => i);
  const ys = xs.map((i) => Math.sin(i / 1000));
  ys[123_456] = 50; // a spike one point wide
  ys[654_321] = -50;
  const idx = reduceToPixels(xs, ys, 0, n - 1, 1000);
  assert.ok(idx.length <= 4 * 1000 + 2, `${idx.length} points`);
  assert.ok(idx.includes(123_456) && idx.includes(654_321), "spikes survive");
  assert.equal(idx[0], 0);
  assert.equal(idx.at(-1), n - 1);
  for (let i = 1; i < idx.length; i++) assert.ok(idx[i] > idx[i - 1], "in order, no repeats");
});

test("reduction of a zoomed range keeps the neighbours outside it", () => {
  const xs = [0, 10, 20, 30, 40];
  const ys = [1, 2, 3, 4, 5];
  assert.deepEqual(reduceToPixels(xs, ys, 15, 25, 100), [1, 2, 3]);
  assert.deepEqual(reduceToPixels([], [], 0, 1, 10), []);
});

test("NaN breaks the line but does not become a min or max", () => {
  const idx = reduceToPixels([0, 1, 2, 3], [1, NaN, 3, 2], 0, 3, 1);
  assert.deepEqual(idx, [0, 2, 3]);
});

test("smoothing is a debiased moving average that passes non-finite values", () => {
  assert.deepEqual(smooth([1, 2, 3], 0), [1, 2, 3]);
  const s = smooth([1, 1, NaN, 1], 0.9);
  assert.ok(Math.abs(s[0] - 1) < 1e-12 && Math.abs(s[3] - 1) < 1e-12, "debiased: a constant stays constant");
  assert.ok(Number.isNaN(s[2]));
  const step = smooth([0, 0, 0, 10, 10, 10], 0.5);
  assert.ok(step[3] > 0 && step[3] < 10 && step[5] > step[4], "follows a step gradually");
});

test("search helpers", () => {
  assert.equal(lowerBound([1, 3, 5], 4), 2);
  assert.equal(nearestIndex([1, 3, 5], 4.1), 2);
  assert.equal(nearestIndex([1, 3, 5], -10), 0);
  assert.equal(nearestIndex([], 1), -1);
  assert.equal(formatValue(0.000012345), "1.23e-5");
  assert.equal(formatValue(12.5), "12.5");
});

test("a series keeps step order when points arrive out of order", () => {
  const s = new Series("a", "a", "#000");
  s.add([{ step: 0, timestamp: 1, value: 1 }, { step: 2, timestamp: 3, value: 3 }]);
  s.add([{ step: 1, timestamp: 2, value: 2 }]);
  assert.deepEqual(s.steps, [0, 1, 2]);
  assert.deepEqual(s.values, [1, 2, 3]);
  assert.deepEqual(s.axis("time").xs, [1, 2, 3]);
});

const run = (id, parent, start, status = "RUNNING", metrics = []) => ({
  info: { run_id: id, run_name: id, status, start_time: start, experiment_id: "1", lifecycle_stage: "active" },
  data: { tags: parent ? [{ key: "mlflow.parentRunId", value: parent }] : [], metrics },
});

test("the run tree nests by parent, sorts siblings and finds a subtree's best", () => {
  const tree = RunTree.fromRuns([
    run("root", "", 1),
    run("b", "root", 3, "RUNNING", [{ key: "loss", value: 0.2, step: 1, timestamp: 1 }]),
    run("a", "root", 2, "RUNNING", [{ key: "loss", value: 0.5, step: 1, timestamp: 1 }]),
    run("a1", "a", 4, "RUNNING", [{ key: "loss", value: "NaN", step: 1, timestamp: 1 }]),
    run("orphan", "missing", 5),
  ]);
  const names = (rows) => rows.map((r) => `${"-".repeat(r.depth)}${r.node.id}`);
  assert.deepEqual(names(tree.rows().rows), ["root", "-a", "--a1", "-b", "orphan"]);
  assert.deepEqual(names(tree.rows({ sortKey: "loss" }).rows), ["root", "-b", "-a", "--a1", "orphan"]);
  const { children } = tree.structure();
  assert.equal(tree.best("root", "loss", children, true), 0.2);
  assert.equal(tree.best("root", "loss", children, false), 0.5);
  tree.nodes.get("a").expanded = false;
  assert.deepEqual(names(tree.rows().rows), ["root", "-a", "-b", "orphan"]);
  assert.deepEqual(tree.subtree("a").sort(), ["a", "a1"]);
});

test("stream changes update the tree in place and repeats change nothing", () => {
  const tree = RunTree.fromRuns([run("root", "", 1)]);
  const created = { run_id: "c", change: "created", parent_run_id: "root", run_name: "child", status: "RUNNING", start_time: 2, experiment_id: "1" };
  tree.change(created);
  tree.change(created);
  assert.equal(tree.nodes.size, 2);
  tree.change({ run_id: "c", change: "updated", status: "FINISHED", end_time: 9 });
  assert.equal(tree.nodes.get("c").status, "FINISHED");
  assert.equal(tree.nodes.get("c").end, 9);
  assert.ok(tree.points("c", [{ key: "loss", value: 1, step: 2, timestamp: 5 }]));
  assert.ok(!tree.points("c", [{ key: "loss", value: 7, step: 1, timestamp: 9 }]), "an older step is not the latest");
  assert.equal(tree.nodes.get("c").metrics.get("loss").value, 1);
  tree.change({ run_id: "c", change: "moved", parent_run_id: "" });
  assert.deepEqual(tree.rows().rows.map((r) => r.depth), [0, 0]);
  tree.change({ run_id: "c", change: "deleted" });
  assert.equal(tree.rows().rows.length, 1);
});

test("a parent cycle in the data does not hang the tree", () => {
  const tree = RunTree.fromRuns([run("x", "y", 1), run("y", "x", 2)]);
  assert.equal(tree.rows().rows.length >= 1, true);
});

test("durations and metric directions", () => {
  assert.equal(duration(1000, 66_000), "1m 5s");
  assert.equal(duration(1000, null, 4000), "3s");
  assert.ok(lowerIsBetter("val_loss") && !lowerIsBetter("accuracy"));
});
