// A live chart panel: curves of chosen (run, metric) pairs, loaded from the sampled
// history and then grown by the live stream. Each curve's history comes "as of" a
// sequence number: stream points at or before it are already in the history, points
// that arrive while the history loads wait and are applied after, so no point is
// missed or drawn twice.

import { Chart, PALETTE, escapeHtml } from "./chart.js";
import { get, num } from "./api.js";

// What tests (and curious people) can read: each streamed point with the time it
// was received and the time the frame showing it was painted.
export const hook = (window.arborTest ??= {
  painted: [],
  series: () => null,
});

export class LivePanel {
  constructor(host, { state, runName, onChange }) {
    this.state = state; // { keys: [], x: "step"|"time", log: bool, smooth: number, zoom: [a,b]|null }
    this.runName = runName;
    this.onChange = onChange;
    this.curves = new Map(); // "run\u0000key" -> { series, seq, pending, sampled }
    this.runs = [];
    this.unpainted = [];
    host.innerHTML = `
      <div class="chart-controls" role="group" aria-label="Chart options">
        <label>x <select data-x><option value="step">step</option><option value="time">time</option></select></label>
        <label><input type="checkbox" data-log> log scale</label>
        <label>smoothing <input type="range" min="0" max="0.99" step="0.01" data-smooth aria-label="Smoothing"></label>
        <button type="button" data-reset>Reset zoom</button>
        <span class="muted chart-hint">Drag across the chart to zoom; double-click to reset.</span>
      </div>
      <div class="chart-host"></div>`;
    this.controls = host.querySelector(".chart-controls");
    this.controls.querySelector("[data-x]").value = state.x;
    this.controls.querySelector("[data-log]").checked = state.log;
    this.controls.querySelector("[data-smooth]").value = state.smooth;
    this.controls.addEventListener("input", () => this.readControls());
    this.controls.querySelector("[data-reset]").addEventListener("click", () => this.chart.setZoom(null, true));
    this.chart = new Chart(host.querySelector(".chart-host"), {
      onZoom: (range) => {
        this.state.zoom = range;
        this.onChange();
        this.refine();
      },
      onPaint: () => this.painted(),
    });
    this.chart.set({ xKind: state.x, logY: state.log, smoothing: state.smooth, zoom: state.zoom });
    hook.zoom = () => this.chart.zoom;
    hook.series = (runId, key) => {
      const c = this.curves.get(`${runId}\u0000${key}`);
      return c ? { steps: [...c.series.steps], values: [...c.series.values], sampled: c.sampled, ready: c.seq !== null } : null;
    };
  }

  destroy() {
    this.chart.destroy();
  }

  readControls() {
    this.state.x = this.controls.querySelector("[data-x]").value;
    this.state.log = this.controls.querySelector("[data-log]").checked;
    this.state.smooth = Number(this.controls.querySelector("[data-smooth]").value);
    if (this.chart.xKind !== this.state.x) this.state.zoom = null;
    this.chart.set({ xKind: this.state.x, logY: this.state.log, smoothing: this.state.smooth, zoom: this.state.zoom });
    this.onChange();
  }

  // Shows the curves of these runs and keys, loading the ones not shown yet.
  show(runs, keys) {
    this.runs = runs;
    this.state.keys = keys;
    const want = new Set();
    let n = 0;
    for (const key of keys) {
      for (const run of runs) {
        const id = `${run}\u0000${key}`;
        want.add(id);
        if (!this.curves.has(id)) {
          const label = keys.length > 1 ? `${this.runName(run)} · ${key}` : this.runName(run);
          const series = this.chart.upsert(id, label, PALETTE[n % PALETTE.length]);
          const curve = { series, seq: null, pending: [], sampled: false, run, key };
          this.curves.set(id, curve);
          this.load(curve);
        }
        n++;
      }
    }
    for (const id of [...this.curves.keys()]) {
      if (!want.has(id)) {
        this.curves.delete(id);
        this.chart.remove(id);
      }
    }
    this.chart.schedule();
  }

  async load(curve, range = null) {
    const width = Math.max(400, this.chart.canvas.clientWidth || 800);
    const answer = await get("/api/arbor/v1/metrics/sampled", {
      run_id: curve.run, metric_key: curve.key, max_points: Math.min(100000, width * 4),
      x_axis: "step", min_x: range?.[0], max_x: range?.[1],
    }).catch((e) => ({ error: e }));
    if (this.curves.get(`${curve.run}\u0000${curve.key}`) !== curve) return;
    if (answer.error) {
      curve.series.label = `${curve.series.label} (${answer.error.message})`;
      this.chart.renderLegend();
      return;
    }
    const points = answer.points.map((p) => ({ step: p.step, timestamp: p.timestamp, value: num(p.value) }));
    if (range) {
      // Replace what was shown inside the range with the finer answer.
      const s = curve.series;
      const keep = s.steps.map((x, i) => i).filter((i) => s.steps[i] < range[0] || s.steps[i] > range[1]);
      const old = keep.map((i) => ({ step: s.steps[i], timestamp: s.times[i], value: s.values[i] }));
      s.steps = [];
      s.times = [];
      s.values = [];
      s.add(old);
      s.add(points);
    } else {
      curve.series.add(points);
      curve.sampled = answer.sampled;
      curve.seq = answer.seq;
      curve.series.add(curve.pending.filter((p) => p.seq > curve.seq));
      this.note(curve, curve.pending.filter((p) => p.seq > curve.seq));
      curve.pending = [];
    }
    this.chart.schedule();
  }

  // Asks for finer points inside the zoomed range of curves that were sampled.
  refine() {
    const range = this.state.zoom;
    if (!range || this.state.x !== "step") return;
    for (const c of this.curves.values()) {
      if (c.sampled && c.seq !== null) this.load(c, [Math.floor(range[0]), Math.ceil(range[1])]);
    }
  }

  // A `metrics` message of the live stream.
  metrics(msg) {
    const byKey = new Map();
    for (const p of msg.points) {
      const curve = this.curves.get(`${p.run_id}\u0000${p.key}`);
      if (!curve) continue;
      const point = { step: p.step, timestamp: p.timestamp, value: num(p.value), seq: p.seq };
      if (curve.seq === null) {
        curve.pending.push(point);
        continue;
      }
      if (p.seq <= curve.seq) continue;
      if (!byKey.has(curve)) byKey.set(curve, []);
      byKey.get(curve).push(point);
    }
    for (const [curve, points] of byKey) {
      curve.series.add(points);
      this.note(curve, points);
    }
    if (byKey.size) this.chart.schedule();
  }

  note(curve, points) {
    const now = Date.now();
    for (const p of points) this.unpainted.push({ run: curve.run, key: curve.key, step: p.step, seq: p.seq, received: now });
  }

  painted() {
    if (!this.unpainted.length) return;
    const now = Date.now();
    for (const p of this.unpainted) p.painted = now;
    hook.painted.push(...this.unpainted);
    if (hook.painted.length > 200_000) hook.painted.splice(0, hook.painted.length - 100_000);
    this.unpainted = [];
  }
}

// A checkbox list of metric keys to chart.
export function keyPicker(host, keys, chosen, onChange) {
  host.innerHTML = keys.length
    ? `<fieldset><legend>Metrics to chart</legend>${keys.map((k) => `<label><input type="checkbox" value="${escapeHtml(k)}" ${chosen.includes(k) ? "checked" : ""}> ${escapeHtml(k)}</label>`).join("")}</fieldset>`
    : `<p class="muted">No metrics logged yet.</p>`;
  host.onchange = () => onChange([...host.querySelectorAll("input:checked")].map((i) => i.value));
}
