/* ORCH console: every change is a fetch of the JSON API with the session's CSRF token; live updates come
   from one EventSource per page, applied at most once a second however many events arrive. No framework,
   no build step, nothing loaded from elsewhere. */
(() => {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const body = document.body;
  // A fragment is fetched at most this often however many events arrive: at 100 task events/s, 1000 ms
  // put the p95 of "a dispatched task appears" at 962 ms against a 1 s goal (scripts/bench_console.py).
  const REFRESH_MS = 500;
  const HEAL_POLL_MS = 2000;
  const STATUS = {
    "task.created": "queued", "task.started": "running", "task.retrying": "queued",
    "task.completed": "completed", "task.failed": "failed", "task.timed_out": "timed_out",
    "task.cancelled": "cancelled",
  };
  const ALERT_EVENTS = ["alert.pending", "alert.firing", "alert.flapping", "alert.resolved", "alert.inactive",
                        "alert.update"];

  function toast(message, bad) {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.className = bad ? "show bad" : "show";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.className = ""; }, 6000);
  }

  function toLogin() {
    location.assign("/ui/login?next=" + encodeURIComponent(location.pathname + location.search));
  }

  async function api(method, path, payload) {
    const headers = { "Accept": "application/json", "X-CSRF-Token": csrf };
    const init = { method, credentials: "same-origin", headers };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.status === 401) toLogin();
    return { ok: response.ok, status: response.status, data: data || {} };
  }

  function describe(result) {
    const data = result.data;
    const lines = Array.isArray(data.errors) ? data.errors : [];
    return [data.detail || ("HTTP " + result.status)].concat(lines).join("; ");
  }

  /* ---- forms -------------------------------------------------------------------------------- */
  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((el) => { el.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  }

  function showErrors(form, result) {
    const general = [];
    const lines = Array.isArray(result.data.errors) ? result.data.errors : [];
    for (const line of lines) {
      const match = /^([^:]+):\s*(.*)$/.exec(line);
      const place = match ? match[1].split(".").filter((part) => part !== "body") : [];
      const target = place.length ? form.querySelector('[data-error-for="' + CSS.escape(place[0]) + '"]') : null;
      if (target) {
        target.textContent = (target.textContent ? target.textContent + "; " : "") + match[2];
        const field = form.querySelector('[name="' + CSS.escape(place[0]) + '"]');
        if (field) {
          field.setAttribute("aria-invalid", "true");
          if (target.id) field.setAttribute("aria-describedby", target.id);
        }
      } else {
        general.push(line);
      }
    }
    const slot = form.querySelector('[data-error-for="_form"]');
    const message = lines.length && !general.length ? result.data.detail : [result.data.detail || ("HTTP " + result.status)]
      .concat(general).join("; ");
    if (slot) slot.textContent = message || ""; else toast(message, true);
  }

  function fieldValue(field, problems) {
    const kind = field.dataset.type || "";
    if (kind === "bool") return field.checked;
    if (kind === "bool-value") return field.value === "true";
    const text = field.value.trim();
    if (text === "") return undefined;
    if (kind === "int") return /^-?\d+$/.test(text) ? Number(text) : text;  // the API says why otherwise
    if (kind === "minutes") return /^\d+$/.test(text) ? Number(text) * 60 : text;
    if (kind === "json") {
      try { return JSON.parse(text); } catch (_) { problems.push(field.name + ": not valid JSON"); return undefined; }
    }
    return field.value;
  }

  function formRequest(form, submitter) {
    const payload = JSON.parse(form.dataset.fixed || "{}");
    const problems = [];
    let path = form.dataset.path;
    const fields = Array.from(form.elements).filter((el) => el.name && el.type !== "submit" && !el.dataset.skip);
    if (submitter && submitter.name) fields.push(submitter);
    for (const field of fields) {
      const value = fieldValue(field, problems);
      if (path.includes("{" + field.name + "}")) {
        path = path.replace("{" + field.name + "}", encodeURIComponent(field.value));
      } else if (value !== undefined) {
        payload[field.name] = value;
      }
    }
    return { path, payload, problems };
  }

  async function submitForm(event) {
    const form = event.target.closest("form.api-form");
    if (!form) return;
    event.preventDefault();
    clearErrors(form);
    if (form.dataset.confirmField) {
      const typed = form.querySelector('[name="' + CSS.escape(form.dataset.confirmField) + '"]');
      if (!typed || typed.value !== form.dataset.confirmValue) {
        const slot = form.querySelector('[data-error-for="' + CSS.escape(form.dataset.confirmField) + '"]');
        if (slot) slot.textContent = "type " + form.dataset.confirmValue + " exactly to confirm";
        if (typed) { typed.setAttribute("aria-invalid", "true"); typed.focus(); }
        return;
      }
    }
    const request = formRequest(form, event.submitter);
    if (request.problems.length) {
      showErrors(form, { status: 422, data: { detail: "invalid input", errors: request.problems } });
      return;
    }
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const result = await api(form.dataset.method || "POST", request.path, request.payload);
      if (!result.ok) { showErrors(form, result); return; }
      after(form.dataset.after, result, form);
    } catch (error) {
      toast("request failed: " + error, true);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function after(what, result, form) {
    if (what === "login") { location.assign("/ui/login"); return; }
    if (what === "dispatched") {
      toast("Task " + result.data.task_id + " " + result.data.status + " on " + result.data.core_id);
      if (form) form.reset();
      return;
    }
    if (what === "heals") {
      toast("Answer sent for heal run " + result.data.id);
      heals.now();
      return;
    }
    if (what === "run") {
      toast("Started flow run " + (result.data.flow_run_name || result.data.flow_run_id));
      if (form) form.reset();
      return;
    }
    toast("Done");
    setTimeout(() => location.reload(), 400);
  }

  async function clickAction(button) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const [method, path] = button.dataset.api.split(" ");
    button.disabled = true;
    try {
      const payload = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      const result = await api(method, path, payload);
      if (!result.ok) { toast(describe(result), true); return; }
      after(button.dataset.after, result, null);
    } catch (error) {
      toast("request failed: " + error, true);
    } finally {
      button.disabled = false;
    }
  }

  /* ---- tasks: bulk actions and live rows ---------------------------------------------------- */
  function selectedTasks() {
    return Array.from(document.querySelectorAll('#task-rows input[name="task"]:checked')).map((box) => box.value);
  }

  function pageFilter() {
    const table = document.getElementById("tasks");
    const shown = table ? JSON.parse(table.dataset.filter || "{}") : {};
    const filter = {};
    for (const key of ["status", "core_id", "action", "owner", "since", "until"]) {
      if (!shown[key]) continue;
      filter[key] = (key === "since" || key === "until") && !/[zZ]|[+-]\d\d:?\d\d$/.test(shown[key])
        ? shown[key] + "Z" : shown[key];
    }
    return filter;
  }

  async function bulk(button) {
    const op = button.dataset.bulk;
    let payload;
    if (button.dataset.bulkScope === "filter") {
      const filter = pageFilter();
      const what = Object.keys(filter).length ? "every task matching the filter" : "every task (no filter set)";
      if (!window.confirm(op + " " + what + ", at most 1000?")) return;
      payload = { op, filter, limit: 1000 };
    } else {
      const ids = selectedTasks();
      if (!ids.length) { toast("Select tasks first", true); return; }
      payload = { op, task_ids: ids };
    }
    button.disabled = true;
    try {
      const result = await api("POST", "/tasks/bulk", payload);
      if (!result.ok) { toast(describe(result), true); return; }
      const skipped = (result.data.skipped || []).length;
      toast(op + ": " + result.data.changed.length + " changed" + (skipped ? ", " + skipped + " skipped" : ""));
      refreshRows.now();
    } finally {
      button.disabled = false;
    }
  }

  /* A refresh that runs at most once per REFRESH_MS, however often it is asked for. */
  function throttled(work) {
    let last = 0;
    let timer = null;
    const run = async () => {
      timer = null;
      last = Date.now();
      try { await work(); } catch (_) { /* the next event asks again */ }
    };
    const ask = () => {
      if (timer) return;
      timer = setTimeout(run, Math.max(0, last + REFRESH_MS - Date.now()));
    };
    ask.now = () => { if (timer) clearTimeout(timer); run(); };
    return ask;
  }

  async function fetchFragment(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
    if (response.redirected && new URL(response.url).pathname === "/ui/login") { toLogin(); return null; }
    return response.ok || response.status === 422 ? response.text() : null;
  }

  const refreshRows = throttled(async () => {
    const rows = document.getElementById("task-rows");
    if (!rows) return;
    const html = await fetchFragment("/ui/tasks/rows" + location.search);
    if (html === null) return;
    const keep = new Set(selectedTasks());
    rows.innerHTML = html;
    rows.querySelectorAll('input[name="task"]').forEach((box) => { box.checked = keep.has(box.value); });
  });

  const refreshOverview = throttled(async () => {
    const live = document.getElementById("live");
    if (!live) return;
    const html = await fetchFragment(live.dataset.src);
    if (html !== null) live.innerHTML = html;
  });

  function setStatus(cell, status) {
    const badge = document.createElement("span");
    badge.className = "badge s-" + status;
    badge.textContent = status;
    cell.replaceChildren(badge);
  }

  function onTaskEvent(name, event) {
    const page = body.dataset.page;
    const status = STATUS[name];
    if (page === "overview") { refreshOverview(); return; }
    if (page === "task" && event.task_id === body.dataset.taskId) {
      const cell = document.getElementById("task-status");
      if (cell && status) setStatus(cell, status);
      return;
    }
    if (page !== "tasks") return;
    const row = document.querySelector('tr[data-task-id="' + CSS.escape(event.task_id) + '"]');
    if (row) {
      const cell = row.querySelector(".status");
      if (cell && status) setStatus(cell, status);
    } else if (body.dataset.firstPage) {
      refreshRows();  // a task this page does not show yet: the server knows whether it belongs here
    }
  }

  function listen() {
    if (!body.dataset.live || !window.EventSource) return;
    const source = new EventSource("/sse/events");
    for (const name of Object.keys(STATUS)) {
      source.addEventListener(name, (message) => {
        try { onTaskEvent(name, JSON.parse(message.data)); } catch (_) { /* not ours to show */ }
      });
    }
    for (const name of ALERT_EVENTS) {
      source.addEventListener(name, () => { if (body.dataset.page === "overview") refreshOverview(); });
    }
    window.addEventListener("pagehide", () => source.close());
  }

  /* ---- heals: the timeline follows its runs while one is running or waiting ------------------ */
  /* Heal runs send no SSE events and their approval state lives in Prefect, so the page asks for the
     timeline again, every HEAL_POLL_MS at most, while a run on it is not over; then it stops. */
  function replaceKeepingInput(container, html) {
    const typed = new Map(Array.from(container.querySelectorAll("input[id]")).map((el) => [el.id, el.value]));
    const focused = container.contains(document.activeElement) ? document.activeElement.id : "";
    container.innerHTML = html;
    for (const [id, value] of typed) {
      const field = document.getElementById(id);
      if (field) field.value = value;
    }
    const again = focused && document.getElementById(focused);
    if (again) again.focus();
  }

  const heals = (() => {
    let shown = null;
    let timer = null;
    let busy = false;
    const list = () => document.getElementById("heal-runs");
    const going = () => Boolean(list() && list().querySelector("[data-heal-running]"));
    async function refresh() {
      clearTimeout(timer);
      timer = null;
      const box = list();
      if (!box || busy) return;  // a refresh under way schedules the next one itself
      busy = true;
      try {
        const html = document.hidden ? null : await fetchFragment(box.dataset.src);
        if (html !== null && html !== shown) {
          shown = html;
          replaceKeepingInput(box, html);
        }
      } catch (_) { /* asked again below */ } finally {
        busy = false;
      }
      if (going()) timer = setTimeout(refresh, HEAL_POLL_MS);
    }
    return {
      start() { if (going()) timer = setTimeout(refresh, HEAL_POLL_MS); },
      now: refresh,
    };
  })();

  /* ---- maintenance mode ---------------------------------------------------------------------- */
  async function maintenanceMode() {
    const section = document.getElementById("maintenance-mode");
    if (!section) return;
    const result = await api("GET", "/maintenance-mode");
    const state = section.querySelector("[data-mode-state]");
    if (!result.ok) { state.textContent = "unknown (" + describe(result) + ")"; return; }
    const mode = result.data;
    state.textContent = mode.on ? "refused: maintenance mode is on" : "accepted: maintenance mode is off";
    const detail = section.querySelector("[data-mode-detail]");
    detail.textContent = mode.on ? " (since " + (mode.since || "?") + " by " + (mode.by || "?") +
      (mode.reason ? ": " + mode.reason : "") + (mode.forced_by_env ? "; forced by MAINTENANCE_MODE" : "") + ")" : "";
    const form = section.querySelector("[data-mode-form]");
    if (form) {
      form.querySelector('[name="on"]').value = mode.on ? "false" : "true";
      form.querySelector("[data-mode-button]").textContent =
        mode.on ? "Turn maintenance mode off" : "Turn maintenance mode on";
    }
  }

  /* ---- wiring -------------------------------------------------------------------------------- */
  document.addEventListener("submit", submitForm);
  document.addEventListener("click", (event) => {
    const action = event.target.closest("button[data-api]");
    if (action) { clickAction(action); return; }
    const bulkButton = event.target.closest("button[data-bulk]");
    if (bulkButton) { bulk(bulkButton); return; }
  });
  document.addEventListener("change", (event) => {
    if (event.target.id === "select-all") {
      document.querySelectorAll('#task-rows input[name="task"]').forEach((box) => { box.checked = event.target.checked; });
    }
  });
  listen();
  heals.start();
  maintenanceMode();
})();
