// A run's page: what it is (status, times, user, source, code version), its ancestors
// as a breadcrumb, its children, params, tags, metrics with a live chart, and its
// artifacts with a preview of text and images.

import { LiveStream, at, get, num } from "./api.js";
import { escapeHtml, formatValue } from "./chart.js";
import { LivePanel } from "./live.js";
import { duration } from "./tree.js";

const TEXT = /\.(txt|log|md|json|ya?ml|py|csv|tsv|toml|cfg|ini|sh|js|html|xml|MLmodel)$|(^|\/)(MLmodel|requirements\.txt|conda\.yaml)$/i;
const IMAGE = /\.(png|jpe?g|gif|svg|webp)$/i;
const PREVIEW_BYTES = 200_000;

function time(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

export function runPage(main, runId, { setConnection }) {
  let stream = null;
  let panel = null;
  let closed = false;
  main.innerHTML = `<p class="muted">Loading run…</p>`;
  // The stream opens before the run is read (see the experiment view): messages wait
  // in `early` until the page is drawn.
  let early = [];
  let onMetrics = (m) => early.push(["metrics", m]);
  let onRun = (m) => early.push(["run", m]);
  stream = new LiveStream({ run_id: runId, runs: "true" }, {
    metrics: (m) => onMetrics(m),
    run: (m) => onRun(m),
    state: setConnection,
  });
  (async () => {
    await stream.ready;
    if (closed) return;
    let run;
    let ancestors;
    let children;
    let exp;
    try {
      run = (await get("/api/2.0/mlflow/runs/get", { run_id: runId })).run;
      [ancestors, children, exp] = await Promise.all([
        get("/api/arbor/v1/runs/ancestors", { run_id: runId }),
        get("/api/arbor/v1/runs/children", { run_id: runId, max_results: 1000 }),
        get("/api/2.0/mlflow/experiments/get", { experiment_id: run.info.experiment_id }),
      ]);
    } catch (e) {
      main.innerHTML = `<p class="error" role="alert">${escapeHtml(e.message)}</p>`;
      return;
    }
    if (closed) return;
    const info = run.info;
    const tags = Object.fromEntries((run.data.tags ?? []).map((t) => [t.key, t.value]));
    const expId = info.experiment_id;
    document.title = `${info.run_name} · Arbor`;
    const crumbs = [`<a href="#/">Experiments</a>`, `<a href="#/experiments/${expId}">${escapeHtml(exp.experiment.name)}</a>`]
      .concat((ancestors.ancestors ?? []).slice().reverse().map((a) => `<a href="#/runs/${a.run_id}">${escapeHtml(a.run_name || a.run_id)}</a>`))
      .concat([`<span aria-current="page">${escapeHtml(info.run_name)}</span>`]);
    const rootId = tags["mlflow.rootRunId"] || (ancestors.ancestors?.length ? ancestors.ancestors.at(-1).run_id : runId);
    const source = tags["mlflow.source.name"] ?? "";
    const commit = tags["mlflow.source.git.commit"] ?? "";
    const metrics = run.data.metrics ?? [];
    const kv = (rows) => rows.length
      ? `<table class="kv"><tbody>${rows.map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td>${v}</td></tr>`).join("")}</tbody></table>`
      : `<p class="muted">None.</p>`;
    main.innerHTML = `
      <nav class="crumbs" aria-label="Breadcrumb">${crumbs.join(" / ")}</nav>
      <h1>${escapeHtml(info.run_name)} <span class="status ${info.status}" id="run-status">${info.status.toLowerCase()}</span></h1>
      <p><a href="#/experiments/${expId}?root=${rootId}&runs=${runId}">Open its tree live</a></p>
      <div class="cards">
        <section aria-labelledby="h-about"><h2 id="h-about">About</h2>${kv([
          ["Run ID", `<code>${escapeHtml(info.run_id)}</code>`],
          ["User", escapeHtml(info.user_id ?? "")],
          ["Started", escapeHtml(time(info.start_time))],
          ["Ended", `<span id="run-end">${escapeHtml(time(info.end_time))}</span>`],
          ["Duration", `<span id="run-duration">${duration(info.start_time, info.end_time)}</span>`],
          ["Source", escapeHtml(source) + (tags["mlflow.source.type"] ? ` <span class="muted">(${escapeHtml(tags["mlflow.source.type"])})</span>` : "")],
          ["Code version", commit ? `<code>${escapeHtml(commit)}</code>` : ""],
          ["Artifacts", `<code>${escapeHtml(info.artifact_uri ?? "")}</code>`],
        ])}</section>
        <section aria-labelledby="h-params"><h2 id="h-params">Params</h2>${kv((run.data.params ?? []).map((p) => [p.key, escapeHtml(p.value)]))}</section>
        <section aria-labelledby="h-metrics"><h2 id="h-metrics">Metrics</h2>
          ${metrics.length ? `<table class="kv"><tbody>${metrics.map((m) => `<tr><th scope="row"><label><input type="checkbox" data-key="${escapeHtml(m.key)}"> ${escapeHtml(m.key)}</label></th><td data-latest="${escapeHtml(m.key)}">${formatValue(num(m.value))}</td><td class="muted">step ${m.step}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">None yet.</p>`}
        </section>
        <section aria-labelledby="h-children"><h2 id="h-children">Children</h2>
          ${(children.runs ?? []).length ? `<ul class="children">${children.runs.map((c) => `<li><a href="#/runs/${c.info.run_id}">${escapeHtml(c.info.run_name)}</a> <span class="status ${c.info.status}">${c.info.status.toLowerCase()}</span></li>`).join("")}</ul>` : `<p class="muted">None.</p>`}
        </section>
      </div>
      <section aria-labelledby="h-chart"><h2 id="h-chart">Chart</h2><div class="panel"></div></section>
      <section aria-labelledby="h-tags"><h2 id="h-tags">Tags</h2>${kv(Object.entries(tags).filter(([k]) => !k.startsWith("mlflow.log-model")).map(([k, v]) => [k, escapeHtml(v)]))}</section>
      <section aria-labelledby="h-artifacts"><h2 id="h-artifacts">Artifacts</h2>
        <div class="artifacts"><ul class="files" role="tree" aria-label="Artifact files"></ul><div class="preview" aria-live="polite"></div></div>
      </section>`;
    const chosen = metrics.slice(0, 1).map((m) => m.key);
    for (const box of main.querySelectorAll("input[data-key]")) box.checked = chosen.includes(box.dataset.key);
    panel = new LivePanel(main.querySelector(".panel"), {
      state: { keys: chosen, x: "step", log: false, smooth: 0, zoom: null },
      runName: () => info.run_name,
      onChange: () => {},
    });
    panel.show([runId], chosen);
    main.querySelector("#h-metrics").parentElement.addEventListener("change", () => {
      panel.show([runId], [...main.querySelectorAll("input[data-key]:checked")].map((b) => b.dataset.key));
    });
    onMetrics = (m) => {
      panel.metrics(m);
      for (const p of m.points) {
        const cell = main.querySelector(`td[data-latest="${CSS.escape(p.key)}"]`);
        if (cell) cell.textContent = formatValue(num(p.value));
      }
    };
    onRun = (m) => {
      if (m.status) {
        const s = main.querySelector("#run-status");
        s.className = `status ${m.status}`;
        s.textContent = m.status.toLowerCase();
      }
      if (m.end_time) {
        main.querySelector("#run-end").textContent = time(m.end_time);
        main.querySelector("#run-duration").textContent = duration(info.start_time, m.end_time);
      }
    };
    for (const [kind, m] of early) (kind === "metrics" ? onMetrics : onRun)(m);
    early = [];
    listArtifacts(main.querySelector(".files"), main.querySelector(".preview"), runId, "");
  })();
  return {
    destroy() {
      closed = true;
      stream?.close();
      panel?.destroy();
    },
  };
}

async function listArtifacts(list, preview, runId, path) {
  let answer;
  try {
    answer = await get("/api/2.0/mlflow/artifacts/list", { run_id: runId, path });
  } catch (e) {
    list.innerHTML = `<li class="error">${escapeHtml(e.message)}</li>`;
    return;
  }
  const files = answer.files ?? [];
  if (!files.length && !path) {
    list.innerHTML = `<li class="muted">No artifacts.</li>`;
    return;
  }
  list.innerHTML = files.map((f) => `<li role="treeitem" ${f.is_dir ? `aria-expanded="false"` : ""}>
      <button type="button" data-path="${escapeHtml(f.path)}" data-dir="${f.is_dir}">${f.is_dir ? "📁 " : ""}${escapeHtml(f.path.split("/").pop())}</button>
      ${f.is_dir ? "" : `<span class="muted">${f.file_size ?? 0} B</span>`}${f.is_dir ? `<ul role="group" hidden></ul>` : ""}</li>`).join("");
  list.onclick = async (e) => {
    const b = e.target.closest("button[data-path]");
    if (!b || b.closest("ul") !== list) return;
    e.stopPropagation();
    if (b.dataset.dir === "true") {
      const item = b.parentElement;
      const sub = item.querySelector("ul");
      const open = item.getAttribute("aria-expanded") !== "true";
      item.setAttribute("aria-expanded", String(open));
      sub.hidden = !open;
      if (open && !sub.children.length) listArtifacts(sub, preview, runId, b.dataset.path);
      return;
    }
    showPreview(preview, runId, b.dataset.path);
  };
}

async function showPreview(preview, runId, path) {
  const url = at(`/get-artifact?${new URLSearchParams({ path, run_uuid: runId })}`);
  const title = `<h3>${escapeHtml(path)} <a href="${url}" download>download</a></h3>`;
  if (IMAGE.test(path)) {
    preview.innerHTML = `${title}<img src="${url}" alt="${escapeHtml(path)}">`;
  } else if (TEXT.test(path)) {
    const response = await fetch(url, { headers: { range: `bytes=0-${PREVIEW_BYTES - 1}` } });
    const text = (await response.text()).slice(0, PREVIEW_BYTES);
    preview.innerHTML = `${title}<pre></pre>`;
    preview.querySelector("pre").textContent = text;
  } else {
    preview.innerHTML = `${title}<p class="muted">No preview for this kind of file.</p>`;
  }
}
