// The run tree: a model built from MLflow's run JSON and kept current by the live
// stream (runs created, finished, moved; latest metric values), and a view that draws it
// as an accessible tree grid (arrow keys move, expand and collapse; Enter opens a run).

import { escapeHtml, formatValue } from "./chart.js";
import { num } from "./api.js";

const PARENT_TAG = "mlflow.parentRunId";

// Keys whose lower values are better, by their name.
export function lowerIsBetter(key) {
  return /loss|err|mse|mae|rmse|perplexity|cost|time|latency/i.test(key);
}

export class RunTree {
  constructor() {
    this.nodes = new Map();
    this.version = 0; // changes whenever the structure or a status does
    this.keySet = new Set(); // every metric key of every run
  }

  get keyCount() {
    return this.keySet.size;
  }

  static fromRuns(runs) {
    const tree = new RunTree();
    for (const r of runs) tree.upsert(r);
    return tree;
  }

  // Adds or replaces a run from MLflow's `Run` JSON.
  upsert(run) {
    const info = run.info;
    const tags = Object.fromEntries((run.data?.tags ?? []).map((t) => [t.key, t.value]));
    const node = this.nodes.get(info.run_id) ?? { id: info.run_id, metrics: new Map(), expanded: true };
    Object.assign(node, {
      name: info.run_name || info.run_id,
      status: info.status,
      start: info.start_time ?? null,
      end: info.end_time ?? null,
      user: info.user_id ?? "",
      experimentId: info.experiment_id,
      parentId: tags[PARENT_TAG] ?? "",
      deleted: info.lifecycle_stage === "deleted",
    });
    for (const m of run.data?.metrics ?? []) {
      node.metrics.set(m.key, { value: num(m.value), step: m.step, timestamp: m.timestamp });
      this.keySet.add(m.key);
    }
    this.nodes.set(node.id, node);
    this.version++;
    return node;
  }

  // Applies a `run` event of the live stream.
  change(msg) {
    const node = this.nodes.get(msg.run_id);
    switch (msg.change) {
      case "created":
        if (node) return;
        this.nodes.set(msg.run_id, {
          id: msg.run_id, metrics: new Map(), expanded: true, name: msg.run_name || msg.run_id,
          status: msg.status, start: msg.start_time, end: null, user: msg.user_id,
          experimentId: msg.experiment_id, parentId: msg.parent_run_id, deleted: false,
        });
        break;
      case "updated":
        if (!node) return;
        if (msg.status) node.status = msg.status;
        if (msg.end_time !== undefined) node.end = msg.end_time;
        if (msg.run_name !== undefined) node.name = msg.run_name;
        break;
      case "deleted":
      case "restored":
        if (!node) return;
        node.deleted = msg.change === "deleted";
        break;
      case "moved":
        if (!node) return;
        node.parentId = msg.parent_run_id;
        break;
      default:
        return;
    }
    this.version++;
  }

  // Takes the latest value of each key from streamed points (MLflow's rule: the
  // highest step, then the latest timestamp). Returns whether anything changed.
  points(runId, points) {
    const node = this.nodes.get(runId);
    if (!node) return false;
    let changed = false;
    for (const p of points) {
      const cur = node.metrics.get(p.key);
      if (!cur || p.step > cur.step || (p.step === cur.step && p.timestamp >= cur.timestamp)) {
        node.metrics.set(p.key, { value: num(p.value), step: p.step, timestamp: p.timestamp });
        this.keySet.add(p.key);
        changed = true;
      }
    }
    return changed;
  }

  keys() {
    return [...this.keySet].sort();
  }

  // Whether some ancestor of the run is collapsed (its best value may show the run's).
  underCollapsed(id) {
    let cur = this.nodes.get(id);
    for (let hops = 0; cur?.parentId && hops < 10_000; hops++) {
      cur = this.nodes.get(cur.parentId);
      if (cur && !cur.expanded) return true;
    }
    return false;
  }

  // Children lists (a parent outside the tree makes a root), each in the given order.
  structure({ sortKey = null, descending = false, showDeleted = false, keep = null } = {}) {
    const children = new Map();
    const roots = [];
    for (const n of this.nodes.values()) {
      if (n.deleted && !showDeleted) continue;
      if (keep && !keep.has(n.id)) continue;
      const parent = n.parentId && this.nodes.get(n.parentId);
      if (parent && !(parent.deleted && !showDeleted) && (!keep || keep.has(parent.id)) &&
          !this.isAncestor(n.id, parent.id)) {
        if (!children.has(parent.id)) children.set(parent.id, []);
        children.get(parent.id).push(n);
      } else {
        roots.push(n);
      }
    }
    const order = (a, b) => {
      if (sortKey) {
        const va = a.metrics.get(sortKey)?.value;
        const vb = b.metrics.get(sortKey)?.value;
        const fa = Number.isFinite(va);
        const fb = Number.isFinite(vb);
        if (fa !== fb) return fa ? -1 : 1;
        if (fa && va !== vb) return descending ? vb - va : va - vb;
      }
      return (a.start ?? 0) - (b.start ?? 0) || (a.id < b.id ? -1 : 1);
    };
    roots.sort(order);
    for (const list of children.values()) list.sort(order);
    return { roots, children };
  }

  // Whether `a` is an ancestor of `b` (guards against a cycle in bad data).
  isAncestor(a, b) {
    let cur = this.nodes.get(b);
    for (let hops = 0; cur && hops < 10_000; hops++) {
      if (cur.id === a) return true;
      cur = cur.parentId ? this.nodes.get(cur.parentId) : null;
    }
    return false;
  }

  // The best value of `key` in the subtree below `id` (itself included).
  best(id, key, children, lower) {
    let best = null;
    const stack = [id];
    while (stack.length) {
      const n = this.nodes.get(stack.pop());
      const v = n.metrics.get(key)?.value;
      if (Number.isFinite(v) && (best === null || (lower ? v < best : v > best))) best = v;
      for (const c of children.get(n.id) ?? []) stack.push(c.id);
    }
    return best;
  }

  // The ids of a run's subtree (itself first).
  subtree(id) {
    const { children } = this.structure({ showDeleted: true });
    const out = [];
    const stack = [id];
    while (stack.length) {
      const cur = stack.pop();
      out.push(cur);
      for (const c of children.get(cur) ?? []) stack.push(c.id);
    }
    return out;
  }

  // Rows to draw: depth-first, only below expanded runs.
  rows(options) {
    const { roots, children } = this.structure(options);
    const rows = [];
    const walk = (n, depth) => {
      rows.push({ node: n, depth, childCount: children.get(n.id)?.length ?? 0 });
      if (n.expanded) for (const c of children.get(n.id) ?? []) walk(c, depth + 1);
    };
    for (const r of roots) walk(r, 0);
    return { rows, children };
  }
}

export function duration(start, end, now = Date.now()) {
  if (!start) return "";
  const ms = Math.max(0, (end ?? now) - start);
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

const STATUS_LABEL = { RUNNING: "running", FINISHED: "finished", FAILED: "failed", KILLED: "killed", SCHEDULED: "scheduled" };

// Draws a RunTree as a treegrid of rows that are laid out and painted only when on
// screen (`content-visibility`), so a thousand-run tree paints as fast as a screenful. `state` holds what the URL holds: the metric columns,
// the sort, the runs picked for the chart; `on.select(ids)` and `on.columns(cols)` tell the page.
export class TreeView {
  constructor(host, tree, state, on) {
    this.host = host;
    this.tree = tree;
    this.state = state; // { columns: [], sort: {key, descending} | null, selected: Set }
    this.on = on;
    this.focusId = null;
    this.pending = false;
    this.dirtyRuns = new Set();
    this.structureVersion = -1;
    this.table = document.createElement("div");
    this.table.className = "tree";
    this.table.setAttribute("role", "treegrid");
    this.table.setAttribute("aria-label", "Runs");
    host.replaceChildren(this.table);
    this.table.addEventListener("click", (e) => this.click(e));
    this.table.addEventListener("keydown", (e) => this.key(e));
    this.table.addEventListener("change", (e) => {
      if (e.target.dataset.add === undefined || !e.target.value) return;
      this.state.columns.push(e.target.value);
      this.on.columns();
      this.render();
    });
    this.ticker = setInterval(() => this.tickDurations(), 1000);
  }

  destroy() {
    clearInterval(this.ticker);
  }

  // Redraws at the next frame: everything if the structure changed, else the cells of
  // the runs whose metrics moved.
  schedule(runId = null) {
    if (runId) this.dirtyRuns.add(runId);
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (this.structureVersion !== this.tree.version || this.sortedByMetric()) this.render();
      else this.refreshCells();
    });
  }

  sortedByMetric() {
    return this.state.sort && [...this.dirtyRuns].some((id) => this.tree.nodes.get(id)?.metrics.has(this.state.sort.key));
  }

  lower(key) {
    const s = this.state.sort;
    return s && s.key === key ? !s.descending : lowerIsBetter(key);
  }

  render() {
    const started = performance.now();
    this.dirtyRuns.clear();
    this.structureVersion = this.tree.version;
    const { rows, children } = this.tree.rows({
      sortKey: this.state.sort?.key, descending: this.state.sort?.descending, keep: this.state.keep,
    });
    this.children = children;
    const cols = this.state.columns;
    const sortMark = (k) => (this.state.sort?.key === k ? (this.state.sort.descending ? " ↓" : " ↑") : "");
    this.table.style.setProperty("--columns", `2.2rem minmax(9rem, 1fr) 5.6rem 6rem ${"7rem ".repeat(cols.length)}7rem`);
    const head = `<div role="row" class="row head">
      <div role="columnheader" class="pick"><span class="sr-only">Chart</span></div>
      <div role="columnheader" class="name">Run</div><div role="columnheader">Status</div><div role="columnheader">Duration</div>
      ${cols.map((k) => `<div role="columnheader" class="metric" aria-sort="${this.state.sort?.key === k ? (this.state.sort.descending ? "descending" : "ascending") : "none"}">
        <button type="button" data-sort="${escapeHtml(k)}" title="Sort siblings by ${escapeHtml(k)}">${escapeHtml(k)}${sortMark(k)}</button>
        <button type="button" class="remove" data-remove="${escapeHtml(k)}" aria-label="Remove column ${escapeHtml(k)}">×</button></div>`).join("")}
      <div role="columnheader" class="add"><select data-add aria-label="Add a metric column"><option value="">+ metric</option>
        ${this.tree.keys().filter((k) => !cols.includes(k)).map((k) => `<option>${escapeHtml(k)}</option>`).join("")}</select></div>
    </div>`;
    const focus = this.focusId && rows.some((r) => r.node.id === this.focusId) ? this.focusId : rows[0]?.node.id;
    const body = rows.map(({ node: n, depth, childCount }) => {
      const expanded = childCount ? ` aria-expanded="${n.expanded}"` : "";
      const toggle = childCount
        ? `<button type="button" class="toggle" data-toggle tabindex="-1" aria-label="${n.expanded ? "Collapse" : "Expand"}">${n.expanded ? "▾" : "▸"}</button>`
        : `<span class="toggle"></span>`;
      return `<div role="row" class="row" data-id="${n.id}" aria-level="${depth + 1}"${expanded} tabindex="${n.id === focus ? 0 : -1}" aria-selected="${this.state.selected.has(n.id)}">
        <div role="gridcell" class="pick"><input type="checkbox" tabindex="-1" data-pick ${this.state.selected.has(n.id) ? "checked" : ""} aria-label="Chart ${escapeHtml(n.name)}"></div>
        <div role="gridcell" class="name" style="padding-left:${0.4 + depth * 1.2}rem">${toggle}<a href="#/runs/${n.id}" tabindex="-1">${escapeHtml(n.name)}</a>${childCount ? ` <span class="muted count">${childCount}</span>` : ""}</div>
        <div role="gridcell"><span class="status ${n.status}">${STATUS_LABEL[n.status] ?? n.status}</span></div>
        <div role="gridcell" class="duration" data-running="${n.status === "RUNNING"}">${duration(n.start, n.end)}</div>
        ${cols.map((k) => this.metricCell(n, k, childCount)).join("")}<div role="gridcell"></div></div>`;
    }).join("");
    this.table.innerHTML = `${head}<div role="rowgroup" class="body">${body}</div>`;
    if (!rows.length) {
      this.table.insertAdjacentHTML("beforeend", `<p class="muted empty">No runs yet. Runs appear here as they are created.</p>`);
    }
    this.table.dataset.rows = String(rows.length);
    if (globalThis.arborTest) globalThis.arborTest.treeRenderMs = performance.now() - started;
  }

  metricCell(n, key, childCount) {
    const v = n.metrics.get(key)?.value;
    let best = "";
    if (childCount && !n.expanded) {
      const b = this.tree.best(n.id, key, this.children, this.lower(key));
      if (b !== null) best = ` <span class="best" title="best in the subtree">best ${formatValue(b)}</span>`;
    }
    return `<div role="gridcell" class="metric" data-key="${escapeHtml(key)}">${v === undefined ? "" : formatValue(v)}${best}</div>`;
  }

  refreshCells() {
    for (const id of this.dirtyRuns) {
      const row = this.table.querySelector(`.row[data-id="${CSS.escape(id)}"]`);
      const n = this.tree.nodes.get(id);
      if (!row || !n) continue;
      for (const cell of row.querySelectorAll(".metric")) {
        const v = n.metrics.get(cell.dataset.key)?.value;
        const text = v === undefined ? "" : formatValue(v);
        if (cell.firstChild?.nodeType === Node.TEXT_NODE) cell.firstChild.nodeValue = text;
        else cell.prepend(document.createTextNode(text));
      }
    }
    // A collapsed ancestor shows its subtree's best: redraw when one may have changed.
    const hidden = [...this.dirtyRuns].some((id) => this.tree.underCollapsed(id));
    this.dirtyRuns.clear();
    if (hidden) this.render();
  }

  tickDurations() {
    const now = Date.now();
    for (const cell of this.table.querySelectorAll('.duration[data-running="true"]')) {
      const n = this.tree.nodes.get(cell.parentElement.dataset.id);
      if (n) cell.textContent = duration(n.start, n.end, now);
    }
  }

  rowsInOrder() {
    return [...this.table.querySelectorAll(".row[data-id]")];
  }

  focusRow(row) {
    if (!row) return;
    for (const r of this.table.querySelectorAll('.row[tabindex="0"]')) r.tabIndex = -1;
    row.tabIndex = 0;
    row.focus();
    this.focusId = row.dataset.id;
  }

  setExpanded(id, expanded) {
    const n = this.tree.nodes.get(id);
    if (!n || n.expanded === expanded) return;
    n.expanded = expanded;
    this.focusId = id;
    this.render();
    this.focusRow(this.table.querySelector(`.row[data-id="${CSS.escape(id)}"]`));
  }

  togglePick(id, subtree = false) {
    const ids = subtree ? this.tree.subtree(id) : [id];
    const on = !this.state.selected.has(id);
    for (const x of ids) {
      if (on) this.state.selected.add(x);
      else this.state.selected.delete(x);
    }
    for (const x of ids) {
      const row = this.table.querySelector(`.row[data-id="${CSS.escape(x)}"]`);
      if (!row) continue;
      row.setAttribute("aria-selected", String(on));
      row.querySelector("input[data-pick]").checked = on;
    }
    this.on.select(this.state.selected);
  }

  click(e) {
    const t = e.target;
    if (t.dataset.sort !== undefined) {
      const s = this.state.sort;
      const key = t.dataset.sort;
      this.state.sort = !s || s.key !== key ? { key, descending: !lowerIsBetter(key) }
        : s.descending !== !lowerIsBetter(key) ? null : { key, descending: !s.descending };
      this.on.columns();
      this.render();
      return;
    }
    if (t.dataset.remove !== undefined) {
      this.state.columns = this.state.columns.filter((k) => k !== t.dataset.remove);
      if (this.state.sort?.key === t.dataset.remove) this.state.sort = null;
      this.on.columns();
      this.render();
      return;
    }
    const row = t.closest(".row[data-id]");
    if (!row) return;
    if (t.dataset.toggle !== undefined) {
      this.setExpanded(row.dataset.id, !this.tree.nodes.get(row.dataset.id).expanded);
    } else if (t.dataset.pick !== undefined) {
      e.preventDefault();
      this.togglePick(row.dataset.id, e.shiftKey);
    } else if (t.tagName !== "A") {
      this.focusRow(row);
    }
  }

  key(e) {
    if (e.target.matches("select")) return;
    const row = e.target.closest(".row[data-id]");
    if (!row) return;
    const rows = this.rowsInOrder();
    const i = rows.indexOf(row);
    const n = this.tree.nodes.get(row.dataset.id);
    const hasChildren = row.hasAttribute("aria-expanded");
    switch (e.key) {
      case "ArrowDown": this.focusRow(rows[i + 1]); break;
      case "ArrowUp": this.focusRow(rows[i - 1]); break;
      case "Home": this.focusRow(rows[0]); break;
      case "End": this.focusRow(rows[rows.length - 1]); break;
      case "ArrowRight":
        if (hasChildren && !n.expanded) this.setExpanded(n.id, true);
        else if (hasChildren) this.focusRow(rows[i + 1]);
        break;
      case "ArrowLeft":
        if (hasChildren && n.expanded) this.setExpanded(n.id, false);
        else if (n.parentId) this.focusRow(this.table.querySelector(`.row[data-id="${CSS.escape(n.parentId)}"]`));
        break;
      case "Enter": location.hash = `#/runs/${n.id}`; break;
      case " ": this.togglePick(n.id, e.shiftKey); break;
      default: return;
    }
    e.preventDefault();
  }
}
