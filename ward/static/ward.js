// The live ward page: a server-sent event stream keeps `beds` and `alerts` current and
// each change redraws the one card or alert it concerns. Text from messages only ever
// goes into textContent (never HTML), and nothing is loaded from outside this server.
"use strict";

const PRIORITY_RANK = { high: 0, medium: 1, low: 2, info: 3 };
const STATE_RANK = { escalated: 0, raised: 0, acknowledged: 1, resolved: 2 };
const RESOLVED_SHOWN = 20;
const STALE_VITALS_S = 300;
const SVG = "http://www.w3.org/2000/svg";

const beds = new Map();
const alerts = new Map();
let ward = { clock: null, read_only: false };
const ackStatus = new Map(); // alert_id -> {text, error}, survives redraws

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function timeOf(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toISOString().slice(11, 19);
}

function secondsBetween(later, earlier) {
  if (!later || !earlier) return null;
  return (new Date(later) - new Date(earlier)) / 1000;
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function horizon(hours) {
  return hours % 24 === 0 && hours >= 48 ? `${hours / 24} d` : `${hours} h`;
}

// An inline SVG sparkline of [[t, value], ...]; `domain` fixes the y range (else min-max).
function sparkline(points, domain, extraClass) {
  const width = 200;
  const height = 26;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", `spark ${extraClass || ""}`.trim());
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  if (!points || points.length === 0) return svg;
  const ts = points.map((p) => p[0]);
  const vs = points.map((p) => p[1]);
  let [low, high] = domain || [Math.min(...vs), Math.max(...vs)];
  if (high - low < 1e-9) { low -= 1; high += 1; }
  const t0 = Math.min(...ts);
  const span = Math.max(Math.max(...ts) - t0, 1e-9);
  const x = (t) => (points.length === 1 ? width : ((t - t0) / span) * width);
  const y = (v) => height - 2 - ((v - low) / (high - low)) * (height - 4);
  const line = document.createElementNS(SVG, "polyline");
  const coords = points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
  if (points.length === 1) coords.unshift(`0,${y(points[0][1]).toFixed(1)}`);
  line.setAttribute("points", coords.join(" "));
  svg.appendChild(line);
  return svg;
}

// Risks are drawn from 0 up to a little above their highest value, so that a rise shows.
function riskDomain(points) {
  const highest = Math.max(0, ...points.map((p) => p[1]));
  return [0, Math.min(1, Math.max(0.2, highest * 1.25))];
}

function row(container, label, points, valueText, unit, domain, extraClass) {
  container.appendChild(el("span", "label", label));
  container.appendChild(sparkline(points, domain, extraClass));
  const value = el("span", "value", valueText);
  if (unit) {
    value.appendChild(document.createTextNode(" "));
    value.appendChild(el("small", null, unit));
  }
  container.appendChild(value);
}

function openAlertsOf(bed) {
  return [...alerts.values()].filter(
    (a) => a.bed === bed && (a.state === "raised" || a.state === "escalated"),
  );
}

function renderBed(view) {
  const card = el("article", "bed");
  card.dataset.bed = view.bed;
  card.id = `bed-${view.bed}`;
  if (view.status === "vacant") card.classList.add("vacant");
  const open = openAlertsOf(view.bed);
  if (open.some((a) => a.priority === "high")) card.classList.add("alarm-high");
  else if (open.some((a) => a.priority === "medium")) card.classList.add("alarm-medium");

  const title = el("h3", null, view.bed);
  let status = view.status;
  if (view.admitted) status += ` since ${timeOf(view.admitted)}`;
  title.appendChild(el("span", "status", status));
  card.appendChild(title);

  if (view.vitals.length) {
    const vitals = el("div", "rows vitals");
    for (const v of view.vitals) {
      row(vitals, v.label, v.points, v.value, v.unit);
    }
    card.appendChild(vitals);
  }

  if (view.risks.length || view.mortality) {
    card.appendChild(el("div", "section-title", "Risk of death"));
    const risks = el("div", "rows risks");
    if (view.mortality) {
      const m = view.mortality;
      row(risks, "hosp.", m.points, percent(m.risk), null, riskDomain(m.points), "risk");
    }
    for (const r of view.risks) {
      row(risks, horizon(r.horizon_h), r.points, percent(r.risk), null, riskDomain(r.points), "risk");
    }
    card.appendChild(risks);
  }

  const q = view.quality;
  const quality = el("div", "quality");
  const behind = secondsBetween(ward.clock, q.last_vitals);
  const parts = [];
  parts.push([`vitals ${timeOf(q.last_vitals)}`, behind !== null && behind > STALE_VITALS_S]);
  if (q.imputed_fraction !== null) {
    parts.push([`imputed ${percent(q.imputed_fraction)}`, q.imputed_fraction > 0.5]);
    parts.push([`stale ${duration(q.staleness_s)}`, q.staleness_s > STALE_VITALS_S]);
  }
  parts.forEach(([text, warn], i) => {
    if (i) quality.appendChild(document.createTextNode(" · "));
    quality.appendChild(el("span", warn ? "warn" : null, text));
  });
  if (behind !== null && behind > STALE_VITALS_S) {
    quality.appendChild(el("span", "warn", ` (no vitals for ${duration(behind)})`));
  }
  if (q.model) quality.title = `model ${q.model}, scored ${timeOf(q.score_time)}`;
  card.appendChild(quality);

  const a = view.anomalies;
  const anomalies = el("div", "anomalies");
  if (a.count === 0) {
    anomalies.textContent = "no anomalies";
  } else {
    anomalies.appendChild(el("span", "warn", `${a.count} anomal${a.count === 1 ? "y" : "ies"}`));
    const last = a.recent.slice(0, 3).map(
      (x) => `${timeOf(x.time)} ${x.concept} ${x.kind}${x.value === null ? "" : ` (${x.value})`}`,
    );
    anomalies.appendChild(document.createTextNode(`: ${last.join("; ")}`));
  }
  card.appendChild(anomalies);
  return card;
}

function drawBed(view) {
  beds.set(view.bed, view);
  const card = renderBed(view);
  const old = document.getElementById(`bed-${view.bed}`);
  if (old) {
    old.replaceWith(card);
    return;
  }
  const container = $("beds");
  const after = [...container.children].find((c) => c.dataset.bed > view.bed);
  container.insertBefore(card, after || null);
  $("no-beds").hidden = true;
}

function alertOrder(a, b) {
  return (
    STATE_RANK[a.state] - STATE_RANK[b.state] ||
    PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority] ||
    (b.time || "").localeCompare(a.time || "")
  );
}

function renderAlert(alert) {
  const item = el("li", `alert ${alert.priority} ${alert.state}`);
  item.dataset.alertId = alert.alert_id;
  item.dataset.state = alert.state;
  const top = el("div", "top");
  top.appendChild(el("span", "priority", alert.priority));
  top.appendChild(el("span", "bed-name", alert.bed));
  top.appendChild(el("span", "state", alert.state));
  top.appendChild(el("time", null, timeOf(alert.time)));
  item.appendChild(top);
  item.appendChild(el("div", "reason", alert.reason));
  item.appendChild(el("div", "id", alert.alert_id));

  const actions = el("div", "actions");
  const open = alert.state === "raised" || alert.state === "escalated";
  const status = ackStatus.get(alert.alert_id);
  if (open && !alert.acknowledged_by && !ward.read_only) {
    const note = el("input", "note");
    note.placeholder = "note (optional)";
    note.maxLength = 500;
    const button = el("button", "ack", "Acknowledge");
    button.type = "button";
    button.addEventListener("click", () => acknowledge(alert, button, note));
    actions.appendChild(button);
    actions.appendChild(note);
  }
  let text = status ? status.text : "";
  if (alert.acknowledged_by && alert.state !== "acknowledged" && alert.state !== "resolved") {
    text = `acknowledgement sent by ${alert.acknowledged_by}, waiting for the engine`;
  }
  if (text) actions.appendChild(el("span", `ack-status${status && status.error ? " error" : ""}`, text));
  item.appendChild(actions);
  return item;
}

function drawAlerts() {
  const list = $("alerts");
  const sorted = [...alerts.values()].sort(alertOrder);
  const resolved = sorted.filter((a) => a.state === "resolved");
  for (const old of resolved.slice(RESOLVED_SHOWN)) alerts.delete(old.alert_id);
  const shown = sorted.filter((a) => alerts.has(a.alert_id));
  // Keep a half-typed note: redraw only the items whose data changed.
  const existing = new Map([...list.children].map((c) => [c.dataset.alertId, c]));
  const items = shown.map((a) => {
    const item = existing.get(a.alert_id);
    const key = JSON.stringify([a, ackStatus.get(a.alert_id) || null, ward.read_only]);
    if (item && item.dataset.key === key) return item;
    const fresh = renderAlert(a);
    fresh.dataset.key = key;
    const typed = item && item.querySelector("input.note");
    const note = fresh.querySelector("input.note");
    if (typed && note) note.value = typed.value;
    return fresh;
  });
  list.replaceChildren(...items);
  $("no-alerts").hidden = items.length > 0;
}

function redrawBedsOf(alertsChanged) {
  for (const bed of new Set(alertsChanged.map((a) => a.bed))) {
    if (beds.has(bed)) drawBed(beds.get(bed));
  }
}

async function acknowledge(alert, button, note) {
  const who = $("who");
  const by = who.value.trim();
  if (!by) {
    ackStatus.set(alert.alert_id, { text: "type your name above first", error: true });
    drawAlerts();
    who.focus();
    return;
  }
  localStorage.setItem("bedside.who", by);
  button.disabled = true;
  let result;
  try {
    const response = await fetch("/api/ack", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ alert_id: alert.alert_id, by, note: note.value }),
    });
    const body = await response.json();
    result = response.ok
      ? { text: `acknowledgement sent by ${by}`, error: false }
      : { text: body.error || `refused (${response.status})`, error: true };
  } catch (error) {
    result = { text: `not sent: ${error}`, error: true };
  }
  ackStatus.set(alert.alert_id, result);
  drawAlerts();
}

function drawWard(summary) {
  ward = summary;
  $("clock").textContent = summary.clock ? `ward time ${summary.clock.replace("T", " ").slice(0, 19)}` : "";
  const open = summary.open_alerts;
  const counts = ["high", "medium", "low"].filter((p) => open[p]).map((p) => `${open[p]} ${p}`);
  $("summary").textContent =
    `${summary.occupied}/${summary.beds} beds occupied · ` +
    (counts.length ? `open alerts: ${counts.join(", ")}` : "no open alerts");
  let source = `source: ${summary.source} · ${summary.messages} messages`;
  if (summary.rejected) source += ` · ${summary.rejected} unreadable, skipped`;
  if (summary.read_only) source += " · read-only (acknowledgements disabled)";
  $("source").textContent = source;
}

function connect() {
  const events = new EventSource("/events");
  const connection = $("connection");
  events.addEventListener("open", () => {
    connection.textContent = "live";
    connection.className = "connection live";
  });
  events.addEventListener("error", () => {
    connection.textContent = "reconnecting…";
    connection.className = "connection down";
  });
  events.addEventListener("snapshot", (event) => {
    const snapshot = JSON.parse(event.data);
    drawWard(snapshot.ward);
    beds.clear();
    alerts.clear();
    $("beds").replaceChildren();
    for (const a of snapshot.alerts) alerts.set(a.alert_id, a);
    for (const b of snapshot.beds) drawBed(b);
    drawAlerts();
  });
  events.addEventListener("ward", (event) => drawWard(JSON.parse(event.data)));
  events.addEventListener("bed", (event) => drawBed(JSON.parse(event.data)));
  events.addEventListener("alert", (event) => {
    const alert = JSON.parse(event.data);
    alerts.set(alert.alert_id, alert);
    drawAlerts();
    redrawBedsOf([alert]);
  });
}

$("who").value = localStorage.getItem("bedside.who") || "";
connect();
