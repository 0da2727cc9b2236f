// Live state of running runs: every element with data-live="RUN_ID" is refreshed every 5 s from
// /api/runs/live (status, stale, heartbeat age, progress: a <progress> bar and its text). Text only (textContent): nothing from the
// server is ever parsed as HTML.
(function () {
  "use strict";
  const PERIOD_MS = 5000;
  function api() {
    return document.body.dataset.liveApi;  // the app's own path (under /ui on Ray Serve)
  }
  function badge(cell, state) {
    const span = document.createElement("span");
    span.className = "badge " + (state.stale ? "stale" : state.status);
    span.textContent = state.stale ? "stale" : state.status;
    if (state.stale) span.title = state.stale;
    cell.replaceChildren(span);
  }
  function progress(cell, state) {
    const bar = cell.querySelector("progress"), text = cell.querySelector(".progress-text");
    if (!bar || !text) return;
    const shown = state.status === "running" && state.progress;
    bar.hidden = !shown;
    text.textContent = shown ? state.progress : "";
    if (shown && state.total) {
      bar.max = state.total;
      bar.value = state.done;
    } else {
      bar.removeAttribute("value");  // a total not known (yet): an indeterminate bar
    }
  }
  async function refresh() {
    const rows = Array.from(document.querySelectorAll("[data-live]"));
    if (!rows.length) return;
    const query = rows.map(r => "id=" + encodeURIComponent(r.dataset.live)).join("&");
    let found;
    try {
      const response = await fetch(api() + "?" + query, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (!response.ok) return;
      found = await response.json();
    } catch (err) {
      return;  // the server restarting: try again at the next tick
    }
    for (const row of rows) {
      const state = found[row.dataset.live];
      if (!state) continue;
      const status = row.querySelector('[data-field="status"]');
      if (status) badge(status, state);
      const beat = row.querySelector('[data-field="heartbeat"]');
      const done = row.querySelector('[data-field="progress"]');
      if (done) progress(done, state);
      if (beat) beat.textContent = state.status === "running" ? state.heartbeat + " ago, running " + state.elapsed : "";
      if (state.status !== "running") row.removeAttribute("data-live");
    }
  }
  refresh();
  setInterval(refresh, PERIOD_MS);
})();
