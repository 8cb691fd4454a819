// The stagecast dashboard: jobs live over the firehose (GET /events), a job's stages and
// training curves from the REST routes, failures from /dashboard/failures. Plain DOM and
// uPlot; every text from the API goes in through textContent, never as markup.
//
// In keys mode every request carries `Authorization: Bearer <key>`. EventSource cannot send
// headers, so the feed is read with fetch() and parsed here; the key is typed once and kept
// in sessionStorage (gone with the tab), and never put in a URL, where logs would keep it.
"use strict";

(() => {
  // The feed events the page reacts to (logs and artifacts would only cost bandwidth).
  const FEED_TYPES = [
    "JobAccepted", "JobRejected", "StageChanged", "ProgressReported", "MetricRecorded",
    "JobFinished",
  ];
  const MAX_ROWS = 200;
  // A busy job is re-read at most once a second; its last event always leads to a re-read.
  const REFRESH_GAP_MS = 1000;
  const FAILURES_AFTER_MS = 3000;
  const FAILURES_EVERY_MS = 30000;
  const REOPEN_AFTER_MS = 5000;
  const KEY_ITEM = "stagecast.apiKey";
  const COLORS = ["#2f6fdf", "#e0832f", "#2f9f5f", "#bf3f7f", "#7f5fbf", "#5f8f9f"];

  const tenant = new URLSearchParams(location.search).get("tenant");
  const rows = new Map(); // job id -> {tr, cells, refreshing, again, lastRefresh}
  let selected = null; // {jobId, metrics: Map(name -> {attempt, points: Map(step -> value)}), charts}
  let failuresTimer = null;
  let feed = null; // the AbortController of the feed being read
  let lastEventId = null; // where the feed resumes after a drop, as an EventSource would

  const $ = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function withTenant(path) {
    if (!tenant) return path;
    return path + (path.includes("?") ? "&" : "?") + "tenant=" + encodeURIComponent(tenant);
  }

  // ---- the API key ----

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_ITEM);
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function askForKey(rejected) {
    if (feed) feed.abort();
    $("key-form").hidden = false;
    $("forget-key").hidden = true;
    setFeedState("closed", rejected ? "key refused" : "needs an API key");
    $("api-key").focus();
  }

  function useKey(key) {
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
    $("api-key").value = "";
    $("key-form").hidden = Boolean(key);
    $("forget-key").hidden = !key;
    // Another key may be another tenant's: start again from an empty page.
    for (const row of rows.values()) row.tr.remove();
    rows.clear();
    $("jobs-empty").hidden = false;
    lastEventId = null;
    problem(null);
    if (key) start();
    else askForKey(false);
  }

  async function errorCode(response) {
    try {
      return (await response.json()).error_code || "HTTP_" + response.status;
    } catch (_) {
      return "HTTP_" + response.status; // not one of the API's error bodies
    }
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json", ...authHeaders() } });
    if (!response.ok) {
      const code = await errorCode(response);
      if (response.status === 401) askForKey(Boolean(sessionStorage.getItem(KEY_ITEM)));
      const error = new Error(path + ": " + code);
      error.code = code;
      throw error;
    }
    return response.json();
  }

  function problem(error) {
    $("problem").textContent = error ? String(error.message || error) : "";
  }

  function shortTime(iso) {
    return iso ? new Date(iso).toLocaleTimeString() : "";
  }

  // ---- jobs table ----

  function rowFor(jobId) {
    let row = rows.get(jobId);
    if (row) return row;
    const tr = element("tr");
    tr.dataset.jobId = jobId;
    tr.tabIndex = 0;
    const cells = {};
    for (const name of ["job", "tenant", "kind", "status", "stage", "progress", "requested"]) {
      cells[name] = element("td", "", name);
      tr.append(cells[name]);
    }
    cells.job.textContent = jobId.slice(0, 8);
    cells.job.title = jobId;
    const bar = element("span", "", "bar");
    const label = element("span", "", "label");
    cells.progress.append(bar, label);
    tr.addEventListener("click", () => select(jobId));
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter") select(jobId);
    });
    row = { tr, cells, bar, label, refreshing: false, again: false, lastRefresh: 0, sortKey: "" };
    rows.set(jobId, row);
    return row;
  }

  function place(row) {
    // Newest first, like GET /jobs; a job not yet requested goes on top.
    const body = $("jobs").tBodies[0];
    let before = null;
    for (const other of body.rows) {
      const key = rows.get(other.dataset.jobId).sortKey;
      if (row.sortKey === "" || (key !== "" && key < row.sortKey)) {
        before = other;
        break;
      }
    }
    if (row.tr.parentNode !== body || row.tr.nextSibling !== before) body.insertBefore(row.tr, before);
    while (body.rows.length > MAX_ROWS) {
      const last = body.rows[body.rows.length - 1];
      rows.delete(last.dataset.jobId);
      last.remove();
    }
    $("jobs-empty").hidden = body.rows.length > 0;
  }

  function showJob(job) {
    const row = rowFor(job.job_id);
    row.sortKey = job.requested_at || job.accepted_at || "";
    row.cells.tenant.textContent = job.tenant;
    row.cells.kind.textContent = job.kind || "";
    row.cells.status.textContent = job.status;
    row.tr.dataset.status = job.status;
    row.cells.stage.textContent = job.current_stage || "";
    const percent = Math.max(0, Math.min(100, Number(job.progress) || 0));
    row.bar.style.width = percent + "%";
    row.label.textContent = Math.round(percent) + "%";
    row.cells.requested.textContent = shortTime(job.requested_at || job.accepted_at);
    place(row);
    if (selected && selected.jobId === job.job_id) showDetail(job);
  }

  // What the projection says now; at most one request per job in flight, one more queued.
  async function refresh(jobId) {
    const row = rowFor(jobId);
    if (!row.tr.parentNode) place(row);
    if (row.refreshing) {
      row.again = true;
      return;
    }
    row.refreshing = true;
    try {
      const wait = row.lastRefresh + REFRESH_GAP_MS - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      row.lastRefresh = Date.now();
      showJob(await getJSON("/jobs/" + encodeURIComponent(jobId)));
      problem(null);
    } catch (error) {
      problem(error);
    } finally {
      row.refreshing = false;
      if (row.again) {
        row.again = false;
        refresh(jobId);
      }
    }
  }

  async function loadJobs() {
    try {
      const listed = await getJSON(withTenant("/jobs?limit=50"));
      for (const job of listed.jobs) showJob(job);
    } catch (error) {
      problem(error);
    }
  }

  // ---- the firehose ----

  function setFeedState(state, text) {
    $("feed-state").dataset.state = state;
    $("feed-state").textContent = text;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Live from now; after a drop it resumes with Last-Event-ID, missing nothing.
  async function openFeed() {
    if (feed) feed.abort();
    const controller = new AbortController();
    feed = controller;
    const url = withTenant("/events?type=" + FEED_TYPES.join(","));
    let drops = 0;
    while (!controller.signal.aborted) {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      try {
        const response = await fetch(url, { headers, cache: "no-store", signal: controller.signal });
        if (response.status === 401) {
          askForKey(Boolean(sessionStorage.getItem(KEY_ITEM)));
          return;
        }
        if (!response.ok) {
          const code = await errorCode(response);
          if (code === "INVALID_LAST_EVENT_ID") {
            // A resume point this database never wrote: start over from now.
            lastEventId = null;
            loadJobs();
          }
          setFeedState("closed", "feed refused (" + code + "); reopening");
          await sleep(REOPEN_AFTER_MS);
          continue;
        }
        setFeedState("live", "live");
        drops = 0;
        await readFeed(response.body, (message) => {
          if (message.id !== null) lastEventId = message.id;
          if (message.data.length && FEED_TYPES.includes(message.event)) {
            onEvent(message.event, JSON.parse(message.data.join("\n")));
          }
        });
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      setFeedState("reconnecting", "reconnecting");
      await sleep(Math.min(REOPEN_AFTER_MS, 250 * 2 ** drops++));
    }
  }

  // Server-sent events as the HTML standard parses them: lines end at CRLF, LF or CR; a
  // blank line ends a message; `:` starts a comment (the heartbeats).
  async function readFeed(body, onMessage) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let message = { id: null, event: "message", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      // A CR at the very end may be the first half of a CRLF: wait for what follows it.
      while ((end = /\r\n|\n|\r(?!$)/.exec(buffer)) !== null) {
        const line = buffer.slice(0, end.index);
        buffer = buffer.slice(end.index + end[0].length);
        if (line === "") {
          if (message.id !== null || message.data.length) onMessage(message);
          message = { id: null, event: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "id") message.id = text;
        else if (field === "event") message.event = text;
        else if (field === "data") message.data.push(text);
      }
    }
  }

  function onEvent(type, event) {
    const jobId = event.job_id;
    if (!jobId) return;
    if (type === "MetricRecorded") {
      if (selected && selected.jobId === jobId) addPoint(event);
      return;
    }
    refresh(jobId);
    if (type === "JobFinished" || (type === "StageChanged" && event.status !== "STARTED")) {
      scheduleFailures(FAILURES_AFTER_MS);
    }
  }

  // ---- one job: its stages and its training curves ----

  async function select(jobId) {
    for (const row of rows.values()) row.tr.classList.toggle("selected", row.tr.dataset.jobId === jobId);
    for (const chart of selected ? selected.charts.values() : []) chart.plot.destroy();
    selected = { jobId, metrics: new Map(), charts: new Map() };
    $("detail-id").textContent = jobId;
    $("curves").replaceChildren(element("p", "loading", "empty"));
    try {
      const [job, history] = await Promise.all([
        getJSON("/jobs/" + encodeURIComponent(jobId)),
        getJSON("/jobs/" + encodeURIComponent(jobId) + "/metrics"),
      ]);
      if (!selected || selected.jobId !== jobId) return;
      showDetail(job);
      for (const [name, points] of Object.entries(history.metrics)) {
        for (const point of points) addPoint({ name, ...point }, false);
      }
      drawCurves();
      problem(null);
    } catch (error) {
      problem(error);
    }
  }

  function showDetail(job) {
    const error = job.error ? " · " + job.error.code + ": " + job.error.message : "";
    const summary = $("detail-summary");
    summary.className = "";
    summary.textContent = job.kind + " · " + job.status + " · plan " + job.plan.join(" → ") + error;
    showTimeline(job.stages || []);
  }

  function showTimeline(stages) {
    const timeline = $("timeline");
    if (stages.length === 0) {
      timeline.replaceChildren(element("p", "no stage has started", "empty"));
      return;
    }
    const now = Date.now();
    const start = (s) => (s.started_at ? Date.parse(s.started_at) : now);
    const end = (s) => (s.finished_at ? Date.parse(s.finished_at) : now);
    const first = Math.min(...stages.map(start));
    const span = Math.max(1, Math.max(...stages.map(end)) - first);
    const lines = stages.map((stage) => {
      const line = element("div", "", "attempt");
      line.dataset.stage = stage.stage;
      line.dataset.status = stage.status;
      const name = element("span", stage.stage + " #" + stage.attempt, "name");
      const track = element("span", "", "track");
      const bar = element("span", "", "bar");
      bar.style.left = ((start(stage) - first) / span) * 100 + "%";
      bar.style.width = Math.max(0.5, ((end(stage) - start(stage)) / span) * 100) + "%";
      track.append(bar);
      const took = stage.duration_ms !== null ? stage.duration_ms + " ms" : "running";
      const failed = stage.error ? " · " + stage.error.code : "";
      const facts = element("span", stage.status + " · " + took + failed, "facts");
      if (stage.error) facts.title = stage.error.message || "";
      line.append(name, track, facts);
      return line;
    });
    timeline.replaceChildren(...lines);
  }

  // The attempt that counts for a metric is its latest: a retry's points replace its own.
  function addPoint(point, draw = true) {
    if (!selected) return;
    const value = Number(point.value);
    let metric = selected.metrics.get(point.name);
    if (!metric || point.attempt > metric.attempt) {
      metric = { attempt: point.attempt, points: new Map() };
      selected.metrics.set(point.name, metric);
    }
    if (point.attempt < metric.attempt) return;
    metric.points.set(Number(point.step), Number.isFinite(value) ? value : null);
    if (draw) drawCurves();
  }

  // One chart per quantity: `loss` with `val_loss`, `accuracy` with `val_accuracy`.
  function drawCurves() {
    const groups = new Map();
    for (const name of [...selected.metrics.keys()].sort()) {
      const family = name.replace(/^val_/, "");
      if (!groups.has(family)) groups.set(family, []);
      groups.get(family).push(name);
    }
    const curves = $("curves");
    if (groups.size === 0) {
      curves.replaceChildren(element("p", "no metrics recorded", "empty"));
      return;
    }
    curves.querySelector(":scope > p.empty")?.remove();
    for (const [family, names] of groups) {
      const steps = [...new Set(names.flatMap((n) => [...selected.metrics.get(n).points.keys()]))];
      steps.sort((a, b) => a - b);
      const data = [steps, ...names.map((n) => steps.map((s) => selected.metrics.get(n).points.get(s) ?? null))];
      let chart = selected.charts.get(family);
      if (chart && chart.names.join() !== names.join()) {
        chart.plot.destroy();
        chart.box.remove();
        chart = null;
      }
      if (!chart) {
        const box = element("div", "", "chart");
        box.dataset.metric = family;
        box.append(element("h4", family));
        curves.append(box);
        const plot = new uPlot(
          {
            width: Math.max(280, Math.min(curves.clientWidth - 16, 560)),
            height: 180,
            scales: { x: { time: false } },
            series: [
              { label: "step" },
              ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true })),
            ],
            // Steps are whole numbers: no tick between two of them.
            axes: [{ label: "step", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }, {}],
          },
          data,
          box,
        );
        chart = { plot, box, names };
        selected.charts.set(family, chart);
      } else {
        chart.plot.setData(data);
      }
      chart.box.dataset.points = String(steps.length);
    }
  }

  // ---- failures ----

  function scheduleFailures(delay) {
    clearTimeout(failuresTimer);
    failuresTimer = setTimeout(loadFailures, delay);
  }

  async function loadFailures() {
    clearTimeout(failuresTimer);
    try {
      const body = await getJSON("/dashboard/failures");
      const lines = body.failures.map((f) => {
        const tr = element("tr");
        tr.dataset.stage = f.stage;
        tr.dataset.errorCode = f.error_code;
        const share = element("td", "", "share");
        const bar = element("span", "", "bar");
        bar.style.width = Math.round(f.share * 100) + "%";
        share.append(bar, element("span", (f.share * 100).toFixed(1) + "% of " + body.ended_attempts[f.stage] + " ended", "label"));
        tr.append(element("td", f.stage), element("td", f.status), element("td", f.error_code), element("td", f.attempts), share);
        return tr;
      });
      $("failures").tBodies[0].replaceChildren(...lines);
      $("failures-empty").textContent = "no failed or cancelled stage attempt";
      $("failures-empty").hidden = lines.length > 0;
    } catch (error) {
      if (error.code === "SCOPE_MISSING") {
        // Failures are counted across tenants: only an admin key reads them.
        $("failures").tBodies[0].replaceChildren();
        $("failures-empty").textContent = "failures need an API key with the admin scope";
        $("failures-empty").hidden = false;
      } else {
        problem(error);
      }
    } finally {
      scheduleFailures(FAILURES_EVERY_MS);
    }
  }

  function start() {
    openFeed();
    loadJobs();
    loadFailures();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey($("api-key").value.trim());
  });
  $("forget-key").addEventListener("click", () => useKey(""));
  $("forget-key").hidden = !sessionStorage.getItem(KEY_ITEM);
  if (tenant) $("tenant").textContent = "tenant " + tenant;
  start();
})();
