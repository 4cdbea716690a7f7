// The evhost console: polls the admin endpoint's JSON (/api/streams, /api/plugins) every
// second and draws streams, groups, plugins and the hot-swap timeline. No framework: the page
// is embedded in the binary and must build without a Node toolchain.
"use strict";

const REFRESH_MS = 1000;
// Samples kept per stream and plugin for rates and sparklines (about two minutes).
const HISTORY = 120;

const history = { streams: new Map(), plugins: new Map() };
let token = sessionStorage.getItem("evhost-admin-token") || "";

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers });
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("the admin token is needed");
  }
  if (!response.ok) {
    throw new Error(path + ": HTTP " + response.status);
  }
  return response.json();
}

// Milliseconds of a stream entry id ("<ms>-<seq>"), or null.
function idMs(id) {
  if (typeof id !== "string") return null;
  const ms = Number(id.split("-")[0]);
  return Number.isFinite(ms) ? ms : null;
}

function remember(map, key, sample) {
  let samples = map.get(key);
  if (!samples) {
    samples = [];
    map.set(key, samples);
  }
  samples.push(sample);
  if (samples.length > HISTORY) samples.shift();
  return samples;
}

// Per-second rates of `field` between successive samples.
function rates(samples, field) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const seconds = (samples[i].at - samples[i - 1].at) / 1000;
    const delta = samples[i][field] - samples[i - 1][field];
    out.push(seconds > 0 && delta >= 0 ? delta / seconds : 0);
  }
  return out;
}

function latest(values) {
  return values.length ? values[values.length - 1] : 0;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function num(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return cell("–", "num dim");
  return cell(Number(value).toFixed(digits || 0), "num");
}

function age(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return (ms / 60000).toFixed(1) + " min";
}

function sparkline(values) {
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 120 22");
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 120 / (values.length - 1) : 0;
  const points = values.map((v, i) => (i * step).toFixed(1) + "," + (21 - (v / max) * 20).toFixed(1));
  const line = document.createElementNS(svgNs, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
  const td = document.createElement("td");
  td.appendChild(svg);
  return td;
}

function renderStreams(streams, now) {
  const body = document.querySelector("#streams tbody");
  const rows = [];
  for (const stream of streams) {
    const samples = remember(history.streams, stream.stream, { at: now, length: stream.length });
    const rate = rates(samples, "length");
    const row = document.createElement("tr");
    row.setAttribute("data-stream", stream.stream);
    row.setAttribute("data-length", String(stream.length));
    row.append(
      cell(stream.stream),
      num(stream.length),
      sparkline(rate),
      num(latest(rate), 1),
      cell(""),
      cell(""),
      cell(""),
      cell(""),
      cell(stream.last_time ? "last " + stream.last_time : "empty", "dim"),
    );
    rows.push(row);
    const lastMs = idMs(stream.last_entry);
    for (const group of stream.groups) {
      const lag = group.lag;
      const deliveredMs = idMs(group.last_delivered);
      const lagSeconds = lag === 0 ? 0 : lastMs !== null && deliveredMs !== null ? (lastMs - deliveredMs) / 1000 : null;
      const groupRow = document.createElement("tr");
      groupRow.className = "group";
      groupRow.setAttribute("data-group", group.group);
      groupRow.setAttribute("data-of", stream.stream);
      groupRow.setAttribute("data-pending", String(group.pending));
      groupRow.setAttribute("data-lag", lag === null ? "unknown" : String(lag));
      groupRow.append(
        cell(group.group),
        cell(""),
        cell(""),
        cell(""),
        num(group.consumers),
        num(group.pending),
        lag === null ? cell("unknown", "dim") : num(lag),
        num(lagSeconds, 1),
        cell(group.pending ? age(group.oldest_pending_idle_ms) : "–", group.pending ? "warn" : "dim"),
      );
      rows.push(groupRow);
    }
  }
  body.replaceChildren(...rows);
}

function renderPlugins(plugins, now) {
  const body = document.querySelector("#plugins tbody");
  const rows = plugins.map((plugin) => {
    const stats = plugin.stats || {};
    const name = plugin.name || plugin.file;
    const samples = remember(history.plugins, plugin.file, {
      at: now,
      handled: stats.handled || 0,
      failed: stats.failed || 0,
      retried: stats.retried || 0,
      dead: stats.dead_lettered || 0,
    });
    const row = document.createElement("tr");
    row.setAttribute("data-plugin", name);
    row.setAttribute("data-state", plugin.candidate && plugin.state === "running" ? "candidate" : plugin.state);
    row.setAttribute("data-handled", String(stats.handled || 0));
    let version = plugin.version || "–";
    if (plugin.compiled === "quick") version += " (quick-compiled, optimising)";
    if (plugin.rollout) version += " (" + plugin.rollout.mode + " of " + plugin.rollout.candidate_version + ")";
    const stateClass = { running: "ok", loading: "warn", failed: "bad", retired: "dim" }[plugin.state] || "";
    row.append(
      cell(name),
      cell(row.getAttribute("data-state"), stateClass),
      cell(version),
      cell((plugin.sha256 || "–").slice(0, 12), "dim"),
      cell((plugin.subscriptions || []).join(", ")),
      num(stats.handled),
      num(latest(rates(samples, "handled")), 1),
      num(latest(rates(samples, "failed")), 1),
      num(latest(rates(samples, "retried")), 1),
      num(latest(rates(samples, "dead")), 1),
      cell(stats.p50_ms === null || stats.p50_ms === undefined ? "–" : stats.p50_ms.toFixed(2) + " ms", "num"),
      cell(stats.p99_ms === null || stats.p99_ms === undefined ? "–" : stats.p99_ms.toFixed(2) + " ms", "num"),
      plugin.error ? cell(plugin.error, "bad") : cell(plugin.file, "dim"),
    );
    return row;
  });
  body.replaceChildren(...rows);
}

// Loads, swaps, rollouts and rollbacks of every plugin, newest first, with failed loads.
function renderTimeline(plugins) {
  const events = [];
  for (const plugin of plugins) {
    const name = plugin.name || plugin.file;
    for (const transition of plugin.transitions || []) {
      events.push({ at: transition.at, plugin: name, kind: transition.kind, from: transition.from, to: transition.to, reason: transition.reason });
    }
    if (plugin.state === "failed" && plugin.error) {
      events.push({ at: "", plugin: name, kind: "refused", from: "", to: plugin.file, reason: plugin.error });
    }
  }
  events.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  const body = document.querySelector("#transitions tbody");
  body.replaceChildren(
    ...events.map((event) => {
      const row = document.createElement("tr");
      row.setAttribute("data-transition", event.kind);
      row.setAttribute("data-plugin", event.plugin);
      const kindClass = { "rolled-back": "warn", aborted: "warn", refused: "bad" }[event.kind] || "";
      row.append(
        cell(event.at || "latest", "dim"),
        cell(event.plugin),
        cell(event.kind, kindClass),
        cell(event.from || "–", "dim"),
        cell(event.to),
        cell(event.reason),
      );
      return row;
    }),
  );
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [streams, plugins] = await Promise.all([api("/api/streams"), api("/api/plugins")]);
    const now = Date.now();
    renderStreams(streams, now);
    renderPlugins(plugins, now);
    renderTimeline(plugins);
    status.textContent = "updated " + new Date(now).toLocaleTimeString();
    status.className = "dim";
  } catch (error) {
    status.textContent = String(error.message || error);
    status.className = "bad";
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value;
  sessionStorage.setItem("evhost-admin-token", token);
  document.getElementById("token-form").hidden = true;
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
