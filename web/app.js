// The page: a router over the URL's hash (so links hold the whole view: experiment,
// run, metrics, zoom) and the three views: experiments, an experiment's live run tree
// with charts, and a run.

import { ApiError, LiveStream, allRuns, get, post } from "./api.js";
import { escapeHtml } from "./chart.js";
import { LivePanel, hook, keyPicker } from "./live.js";
import { RunTree, TreeView, lowerIsBetter } from "./tree.js";
import { runPage } from "./runpage.js";

const main = document.querySelector("main");
const status = document.querySelector("#connection");
let current = null; // the view shown: { destroy() }

// "#/experiments/1?keys=loss" -> { path: ["experiments", "1"], params }
function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  return { path: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

// Writes a view's state into the URL without adding a history entry for each change.
export function setParams(path, params) {
  const clean = new URLSearchParams();
  for (const [k, v] of params) if (v !== "" && v !== null && v !== undefined) clean.set(k, v);
  const qs = clean.toString();
  history.replaceState(null, "", `#/${path}${qs ? `?${qs}` : ""}`);
}

export function setConnection(state, detail) {
  status.dataset.state = state;
  status.textContent = state === "live" ? "live" : state === "reconnecting" ? "reconnecting…" : state === "failed" ? `stream failed: ${detail}` : "";
  status.title = state === "reconnecting" ? `The live stream was interrupted (${detail}); it resumes where it stopped.` : "";
}

export function showError(host, e) {
  host.innerHTML = `<p class="error" role="alert">${escapeHtml(e.message ?? String(e))}</p>`;
}

function route() {
  current?.destroy?.();
  current = null;
  hook.treeReady = false;
  setConnection("", "");
  const { path, params } = parseHash();
  if (path[0] === "experiments" && path[1]) current = experimentView(path[1], params);
  else if (path[0] === "runs" && path[1]) current = runPage(main, path[1], { setConnection });
  else current = experimentsView(params);
}

// The experiment list, with MLflow's filter language.
function experimentsView(params) {
  document.title = "Experiments · Arbor";
  main.innerHTML = `
    <h1>Experiments</h1>
    <form class="search" role="search">
      <label for="exp-filter">Filter</label>
      <input id="exp-filter" name="filter" spellcheck="false" placeholder="name LIKE '%mnist%'" value="${escapeHtml(params.get("filter") ?? "")}">
      <button>Search</button>
      <p class="error" role="alert" id="exp-error" hidden></p>
    </form>
    <table class="list"><thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Created</th><th scope="col">Last update</th></tr></thead><tbody></tbody></table>`;
  const form = main.querySelector("form");
  const error = main.querySelector("#exp-error");
  const body = main.querySelector("tbody");
  const load = async () => {
    const filter = form.filter.value.trim();
    setParams("", new URLSearchParams(filter ? { filter } : {}));
    error.hidden = true;
    form.filter.removeAttribute("aria-invalid");
    try {
      const exps = [];
      let token;
      do {
        const page = await post("/api/2.0/mlflow/experiments/search", { filter, max_results: 1000, page_token: token, order_by: ["last_update_time DESC"] });
        exps.push(...(page.experiments ?? []));
        token = page.next_page_token;
      } while (token);
      body.innerHTML = exps.map((e) => `<tr><td><a href="#/experiments/${e.experiment_id}">${escapeHtml(e.name)}</a></td>
        <td>${e.experiment_id}</td><td>${new Date(e.creation_time).toLocaleString()}</td><td>${new Date(e.last_update_time).toLocaleString()}</td></tr>`).join("")
        || `<tr><td colspan="4" class="muted">No experiments match.</td></tr>`;
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      form.filter.setAttribute("aria-invalid", "true");
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  load();
  return {};
}

// An experiment's (or one root's) run tree, live, with a chart of the runs picked.
function experimentView(experimentId, params) {
  const root = params.get("root") ?? "";
  const list = (k) => (params.get(k) ?? "").split(",").filter(Boolean);
  const sortParam = params.get("sort");
  const state = {
    filter: params.get("filter") ?? "",
    columns: list("cols"),
    sort: sortParam ? { key: sortParam.replace(/:(asc|desc)$/, ""), descending: sortParam.endsWith(":desc") } : null,
    selected: new Set(list("runs")),
    keep: null,
    chart: {
      keys: list("keys"), x: params.get("x") === "time" ? "time" : "step", log: params.get("log") === "1",
      smooth: Number(params.get("smooth") ?? 0) || 0,
      zoom: params.get("zoom") ? params.get("zoom").split(",").map(Number) : null,
    },
  };
  main.innerHTML = `
    <nav class="crumbs" aria-label="Breadcrumb"><a href="#/">Experiments</a> / <span id="exp-name">${escapeHtml(experimentId)}</span>${root ? ` / subtree of <a href="#/runs/${escapeHtml(root)}">${escapeHtml(root.slice(0, 8))}</a>` : ""}</nav>
    <form class="search" role="search">
      <label for="run-filter">Runs</label>
      <input id="run-filter" name="filter" spellcheck="false" placeholder="metrics.loss < 0.5 and params.lr = '0.01'" value="${escapeHtml(state.filter)}">
      <button>Filter</button>
      <p class="error" role="alert" id="run-error" hidden></p>
    </form>
    <div class="split">
      <section class="tree-host" aria-label="Run tree"><p class="muted">Loading runs…</p></section>
      <section class="chart-panel" aria-label="Live chart">
        <div class="keys"></div>
        <div class="panel"></div>
        <p class="muted hint">Tick runs in the tree to chart them (Shift: the whole subtree).</p>
      </section>
    </div>`;
  const form = main.querySelector("form");
  const error = main.querySelector("#run-error");
  const treeHost = main.querySelector(".tree-host");
  let tree = new RunTree();
  let view = null;
  let stream = null;
  let buffered = []; // stream messages that arrive while the runs load
  let loaded = false;

  const writeUrl = () => {
    const p = new URLSearchParams();
    if (root) p.set("root", root);
    p.set("filter", state.filter);
    p.set("cols", state.columns.join(","));
    if (state.sort) p.set("sort", `${state.sort.key}:${state.sort.descending ? "desc" : "asc"}`);
    p.set("runs", [...state.selected].join(","));
    p.set("keys", state.chart.keys.join(","));
    if (state.chart.x === "time") p.set("x", "time");
    if (state.chart.log) p.set("log", "1");
    if (state.chart.smooth) p.set("smooth", String(state.chart.smooth));
    if (state.chart.zoom) p.set("zoom", state.chart.zoom.map((v) => +v.toPrecision(8)).join(","));
    setParams(`experiments/${experimentId}`, p);
  };
  const panel = new LivePanel(main.querySelector(".panel"), {
    state: state.chart,
    runName: (id) => tree.nodes.get(id)?.name ?? id.slice(0, 8),
    onChange: writeUrl,
  });
  const drawKeys = () => keyPicker(main.querySelector(".keys"), tree.keys(), state.chart.keys, (keys) => {
    state.chart.keys = keys;
    panel.show([...state.selected], keys);
    writeUrl();
  });
  const handle = (kind, msg) => {
    if (!loaded) {
      buffered.push([kind, msg]);
      return;
    }
    if (kind === "run") {
      const before = tree.nodes.has(msg.run_id);
      tree.change(msg);
      if (!before && state.keep) state.keep.add(msg.run_id);
      view?.schedule();
    } else {
      const keysBefore = tree.keyCount;
      if (tree.points(msg.points[0]?.run_id, msg.points)) view?.schedule(msg.points[0].run_id);
      if (tree.keyCount !== keysBefore) {
        drawKeys();
        if (!state.columns.length) autoColumns();
        view?.schedule();
      }
      panel.metrics(msg);
    }
  };
  const autoColumns = () => {
    const keys = tree.keys();
    state.columns = keys.filter(lowerIsBetter).slice(0, 2).concat(keys.filter((k) => !lowerIsBetter(k)).slice(0, 1)).slice(0, 3);
  };

  const start = async () => {
    loaded = false;
    buffered = [];
    stream?.close();
    // The stream opens first ("from now") and the runs are read once it has its
    // position, so that every change after the read arrives on it; changes the read
    // already saw arrive too and are applied again, which changes nothing.
    const mine = new LiveStream(root ? { root_run_id: root, runs: "true" } : { experiment_id: experimentId, runs: "true" }, {
      metrics: (m) => handle("metrics", m),
      run: (m) => handle("run", m),
      state: setConnection,
    });
    stream = mine;
    await mine.ready;
    if (stream !== mine) return;
    error.hidden = true;
    form.filter.removeAttribute("aria-invalid");
    try {
      const [exp, runs] = await Promise.all([
        get("/api/2.0/mlflow/experiments/get", { experiment_id: experimentId }),
        root ? get("/api/arbor/v1/runs/tree", { run_id: root }).then(flatten) : allRuns(experimentId),
      ]);
      main.querySelector("#exp-name").innerHTML = `<a href="#/experiments/${experimentId}">${escapeHtml(exp.experiment.name)}</a>`;
      document.title = `${exp.experiment.name} · Arbor`;
      tree = RunTree.fromRuns(runs);
      state.keep = null;
      if (state.filter) {
        // The runs that match and their ancestors, so each match stays in its place.
        const matched = root ? (await allRuns(experimentId, state.filter)).filter((r) => tree.nodes.has(r.info.run_id)) : await allRuns(experimentId, state.filter);
        state.keep = new Set();
        for (const r of matched) {
          let id = r.info.run_id;
          while (id && !state.keep.has(id) && tree.nodes.has(id)) {
            state.keep.add(id);
            id = tree.nodes.get(id).parentId;
          }
        }
      }
    } catch (e) {
      if (e instanceof ApiError && e.code === "INVALID_PARAMETER_VALUE" && state.filter) {
        error.textContent = e.message;
        error.hidden = false;
        form.filter.setAttribute("aria-invalid", "true");
        form.filter.focus();
        return;
      }
      showError(treeHost, e);
      return;
    }
    if (!state.columns.length) autoColumns();
    view?.destroy();
    view = new TreeView(treeHost, tree, state, {
      select: (ids) => {
        panel.show([...ids], state.chart.keys);
        writeUrl();
      },
      columns: writeUrl,
    });
    view.render();
    // The first frame with the tree: a task queued from the frame callback runs once
    // the frame is painted.
    requestAnimationFrame(() => setTimeout(() => {
      hook.treePaintedMs ??= performance.now();
      hook.treeReady = true;
    }, 0));
    loaded = true;
    for (const [kind, msg] of buffered) handle(kind, msg);
    buffered = [];
    drawKeys();
    if (!state.chart.keys.length && state.selected.size) state.chart.keys = tree.keys().slice(0, 1);
    panel.show([...state.selected], state.chart.keys);
    writeUrl();
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    state.filter = form.filter.value.trim();
    writeUrl();
    start();
  });
  start();
  return {
    destroy() {
      stream?.close();
      view?.destroy();
      panel.destroy();
    },
  };
}

// GetRunTree's nested answer as a flat list of runs.
function flatten(answer) {
  const out = [];
  const walk = (n) => {
    out.push(n.run);
    for (const c of n.children ?? []) walk(c);
  };
  walk(answer.root);
  return out;
}

window.addEventListener("hashchange", route);
route();
