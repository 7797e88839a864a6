// Calls to the server's public APIs, and the live stream.
//
// Credentials: with `--auth` the browser asked for a name and password when it loaded
// this page, and sends them with every call to the same origin (fetch's default).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// An address on this server. Built from the origin, never from the page's own address,
// which may carry a name and password (fetch refuses those).
export function at(path) {
  return new URL(path, location.origin).href;
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = null;
  }
  if (!response.ok) {
    if (response.status === 401) {
      throw new ApiError(401, "UNAUTHENTICATED", "Sign in again: reload the page and give your name and password.");
    }
    throw new ApiError(response.status, body?.error_code ?? "ERROR", body?.message ?? text.trim());
  }
  return body;
}

export async function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) query.append(k, item);
  }
  const qs = query.toString();
  return answer(await fetch(at(qs ? `${path}?${qs}` : path), { headers: { accept: "application/json" } }));
}

export async function post(path, body) {
  return answer(await fetch(at(path), {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(body),
  }));
}

// NaN and infinities travel as strings on Arbor's routes and streams.
export function num(v) {
  if (typeof v === "number") return v;
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return Number(v);
}

// Every run of an experiment (or all that match a filter), page by page.
export async function allRuns(experimentId, filter = "", onPage = () => {}) {
  const runs = [];
  let token = undefined;
  do {
    const page = await post("/api/2.0/mlflow/runs/search", {
      experiment_ids: [experimentId], filter, max_results: 5000, page_token: token,
    });
    runs.push(...(page.runs ?? []));
    onPage(runs);
    token = page.next_page_token;
  } while (token);
  return runs;
}

// The live stream (`/api/arbor/v1/stream`, server-sent events) read with fetch, so that
// the page decides when and from where to reconnect: after a drop it asks again from
// the last sequence number it saw plus one, so no point is lost or repeated.
// `handlers`: { metrics(msg), run(msg), state("live" | "reconnecting", detail) }.
export class LiveStream {
  constructor(scope, handlers, fromSeq = undefined) {
    this.scope = scope; // {experiment_id} | {root_run_id} | {run_id}, plus keys, runs
    this.handlers = handlers;
    this.lastSeq = fromSeq === undefined ? undefined : fromSeq - 1;
    this.closed = false;
    this.retry = 0;
    this.controller = null;
    // Resolves with the stream's first position: everything committed after it will
    // arrive, so a snapshot read after this misses nothing.
    this.ready = new Promise((resolve) => (this.positioned = resolve));
    this.connect();
  }

  close() {
    this.closed = true;
    this.controller?.abort();
  }

  async connect() {
    while (!this.closed) {
      this.controller = new AbortController();
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(this.scope)) if (v !== undefined && v !== "") params.set(k, v);
      if (this.lastSeq !== undefined) params.set("from_seq", String(this.lastSeq + 1));
      let reason = "the connection ended";
      try {
        const response = await fetch(at(`/api/arbor/v1/stream?${params}`), {
          signal: this.controller.signal,
          headers: { accept: "text/event-stream" },
        });
        if (!response.ok) {
          const err = await answer(response).catch((e) => e);
          if (response.status < 500 && response.status !== 429) {
            this.handlers.state("failed", err.message);
            return;
          }
          throw err;
        }
        await this.read(response.body);
      } catch (e) {
        if (this.closed) return;
        reason = e.message || String(e);
      }
      if (this.closed) return;
      this.handlers.state("reconnecting", reason);
      const delay = Math.min(2000, 100 * 2 ** this.retry++);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    // The server sends a comment every 15 s; 40 s of silence means a dead connection.
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => this.controller.abort(), 40_000);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + (buffer[cut] === "\r" ? 4 : 2));
          this.dispatch(block);
        }
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  dispatch(block) {
    let event = "message";
    let id = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "id") id = value;
      else if (field === "data") data.push(value);
    }
    const seq = id === null ? null : Number(id);
    if (event === "position") {
      this.retry = 0;
      if (this.lastSeq === undefined || seq > this.lastSeq) this.lastSeq = seq;
      this.positioned(this.lastSeq);
      this.handlers.state("live", this.lastSeq);
      return;
    }
    if (event === "end") {
      const msg = JSON.parse(data.join("\n"));
      this.lastSeq = msg.resume_from_seq - 1;
      return;
    }
    if (event === "error") {
      this.handlers.state("reconnecting", JSON.parse(data.join("\n")).message);
      return;
    }
    // An event at or before one already handled is a repeat: skip it.
    if (seq !== null && this.lastSeq !== undefined && seq <= this.lastSeq) return;
    if (seq !== null) this.lastSeq = seq;
    const msg = JSON.parse(data.join("\n"));
    if (event === "metrics") this.handlers.metrics?.(msg);
    else if (event === "run") this.handlers.run?.(msg);
  }
}
