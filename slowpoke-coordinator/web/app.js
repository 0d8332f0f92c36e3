// Slowpoke's web page: a thin view over the coordinator's HTTP API (docs/coordinator-api.md).
"use strict";

const REFRESH_MS = 1000;
let selected = null;
let timer = null;

// The server's token (servers off loopback require one), asked for once and kept for this tab
// only: sessionStorage ends with the tab, where localStorage would keep the secret on disk for
// every later visitor of the page. A token kept by an older page in localStorage is dropped.
const TOKEN_KEY = "slowpoke-token";
localStorage.removeItem(TOKEN_KEY);
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function askForToken(wrong) {
  if (wrong) sessionStorage.removeItem(TOKEN_KEY);
  const form = document.getElementById("token-form");
  if (form.hidden) {
    form.hidden = false;
    document.getElementById("token").focus();
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) {
    const wrong = token() !== "";
    askForToken(wrong);
    throw new Error(wrong ? "the token was refused: enter the server's token (its --token-file) at the top right"
      : "this server needs a token: enter it at the top right");
  }
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function num(v, digits = 0) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function pct(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  return (v >= 0 ? "+" : "") + v.toFixed(1) + " %";
}

function ci(lo, hi) {
  return "[" + num(lo) + ", " + (hi === null || hi === undefined ? "∞" : num(hi)) + "]";
}

function showMessage(text) {
  const m = document.getElementById("message");
  m.textContent = text || "";
  m.hidden = !text;
}

function optimizationText(o) {
  if (!o) return "";
  switch (o.kind) {
    case "speedup": return o.value + "x speedup";
    case "delta_us": return "−" + o.value + " µs per visit";
    case "percent": return "−" + o.value + " % per visit";
    case "cores": return o.value + " cores";
    case "capacity": return "capacity → " + o.value.new_rps + " req/s";
    default: return JSON.stringify(o);
  }
}

async function refreshList() {
  let list;
  try {
    list = await (await api("/v1/experiments")).json();
    showMessage("");
  } catch (e) {
    showMessage(e.message);
    schedule(false);
    return;
  }
  const body = document.querySelector("#experiments tbody");
  body.replaceChildren();
  for (const x of list) {
    const active = x.status === "running" || x.status === "queued";
    const progress = active
      ? el("span", {}, el("progress", { max: "1", value: String(x.progress.fraction) }), " ", x.progress.phase)
      : (x.status === "done" ? "" : x.progress.phase);
    const row = el("tr", { "data-id": x.id, class: x.id === selected ? "selected" : "" },
      el("td", {}, x.created),
      el("td", {}, x.kind),
      el("td", { class: "status-" + x.status }, x.status),
      el("td", {}, progress),
      el("td", {}, x.summary || "", x.error ? el("div", { class: "error" }, x.error) : null),
      el("td", {}, active ? cancelButton(x.id) : ""));
    row.addEventListener("click", () => select(x.id));
    body.append(row);
  }
  document.getElementById("empty").hidden = list.length > 0;
  const anyActive = list.some((x) => x.status === "running" || x.status === "queued");
  if (selected && list.some((x) => x.id === selected)) await refreshDetail();
  schedule(anyActive);
}

function schedule(active) {
  document.getElementById("refreshing").hidden = !active;
  clearTimeout(timer);
  // Refresh every second while something runs, slowly otherwise (a CLI run may add results).
  timer = setTimeout(refreshList, active ? REFRESH_MS : 10 * REFRESH_MS);
}

function cancelButton(id) {
  const b = el("button", {}, "Cancel");
  b.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    b.disabled = true;
    try { await api("/v1/experiments/" + encodeURIComponent(id), { method: "DELETE" }); }
    catch (e) { showMessage(e.message); }
    refreshList();
  });
  return b;
}

async function select(id) {
  selected = id;
  for (const r of document.querySelectorAll("#experiments tbody tr")) {
    r.classList.toggle("selected", r.dataset.id === id);
  }
  await refreshDetail(true);
}

let shownDone = null;

async function refreshDetail(force = false) {
  let x;
  try {
    x = await (await api("/v1/experiments/" + encodeURIComponent(selected))).json();
  } catch (e) { showMessage(e.message); return; }
  if (!force && shownDone === x.id && x.status === "done") return;
  const sec = document.getElementById("detail");
  sec.hidden = false;
  document.getElementById("detail-title").textContent = x.kind + " " + x.id;
  document.getElementById("detail-meta").textContent =
    "status " + x.status + (x.status === "running" || x.status === "queued"
      ? " — " + Math.round(x.progress.fraction * 100) + " %, " + x.progress.phase : "");
  const body = document.getElementById("detail-body");
  body.replaceChildren();
  document.getElementById("plot").replaceChildren();
  if (x.error) body.append(el("p", { class: "error" }, x.error));
  if (!x.result) { shownDone = null; return; }
  if (x.kind === "profile") body.append(profileTables(x.result));
  else if (x.kind === "tail") body.append(tailTables(x.result));
  else body.append(whatIfTables(x.result));
  if (x.result.warnings && x.result.warnings.length) {
    body.append(el("ul", { class: "warnings" }, ...x.result.warnings.map((w) => el("li", {}, w))));
  }
  shownDone = x.status === "done" ? x.id : null;
  try {
    const svg = await (await api("/v1/experiments/" + encodeURIComponent(x.id) + "/plot.svg")).text();
    // The SVG comes from our own server, which escapes every user-given name.
    document.getElementById("plot").innerHTML = svg;
  } catch (e) { showMessage(e.message); }
}

function whatIfTables(r) {
  const rows = [
    ["baseline", r.baseline_rps, ci(r.baseline_ci_low, r.baseline_ci_high), ""],
    ["slowed down", r.slow_rps, ci(r.slow_ci_low, r.slow_ci_high), ""],
    ["predicted", r.predicted_rps, ci(r.predicted_ci_low, r.predicted_ci_high), pct(r.predicted_gain_pct) + " vs. baseline"],
  ];
  if (r.truth_rps !== null && r.truth_rps !== undefined) {
    rows.push(["truth", r.truth_rps, ci(r.truth_ci_low, r.truth_ci_high), "error " + pct(r.error_pct)]);
  }
  const summary = el("table", { id: "result-table" },
    el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { class: "num" }, "req/s"),
      el("th", {}, "95 % CI"), el("th", {}, ""))),
    el("tbody", {}, ...rows.map(([name, v, interval, note]) => el("tr", { "data-row": name },
      el("th", {}, name), el("td", { class: "num" }, num(v)), el("td", {}, interval), el("td", {}, note)))));
  const head = el("p", {},
    "What if ", el("b", {}, r.target), " got this optimization: ", optimizationText(r.optimization),
    " (Δ = " + num(r.delta_us, 1) + " µs per visit, δ = " + num(r.delta_ns_per_request / 1000, 1) +
    " µs per request)? Entry " + r.entry + ", " + r.repetitions + " repetitions (" + r.kept + " kept), " +
    num(r.duration_s, 1) + " s.");
  return el("div", {}, head, summary, el("h3", {}, "Services"), servicesTable(r.services));
}

function servicesTable(services) {
  return el("table", { id: "services-table" },
    el("thead", {}, el("tr", {}, el("th", {}, "service"), el("th", { class: "num" }, "r (visits/req)"),
      el("th", { class: "num" }, "p (µs/visit)"), el("th", { class: "num" }, "c (cores)"),
      el("th", { class: "num" }, "d (µs/visit)"), el("th", {}, ""))),
    el("tbody", {}, ...(services || []).map((s) => el("tr", { "data-service": s.name },
      el("td", {}, s.name), el("td", { class: "num" }, num(s.r, 3)), el("td", { class: "num" }, num(s.p_us, 1)),
      el("td", { class: "num" }, num(s.c, 2)), el("td", { class: "num" }, s.d_us === null ? "–" : num(s.d_us, 1)),
      el("td", {}, [s.is_target ? "target" : "", s.is_entry ? "entry" : ""].filter(Boolean).join(", "))))));
}

function profileTables(r) {
  const percents = [...new Set(r.curves.flatMap((c) => c.points.map((p) => p.percent)))].sort((a, b) => a - b);
  // A point without a number says why (e.g. the agents cannot stop the others that long): its
  // cell refers to the numbered reason below the table, never a bare dash.
  const reasons = [];
  const cell = (c, pt) => {
    if (pt && pt.predicted_rps !== null && pt.predicted_rps !== undefined) return num(pt.predicted_rps);
    if (!pt || !pt.error) return "–";
    reasons.push(c.service + " −" + pt.percent + " %: " + pt.error);
    return "n/a (" + reasons.length + ")";
  };
  const curves = el("table", { id: "result-table" },
    el("thead", {}, el("tr", {}, el("th", {}, "service"), el("th", { class: "num" }, "best gain"),
      ...percents.map((p) => el("th", { class: "num" }, "−" + p + " %")))),
    el("tbody", {}, ...r.curves.map((c) => el("tr", { "data-service": c.service },
      el("td", {}, c.service), el("td", { class: "num" }, pct(c.max_gain_pct)),
      ...percents.map((p) => {
        const pt = c.points.find((q) => q.percent === p);
        return el("td", { class: "num", title: pt && pt.error ? pt.error : "" }, cell(c, pt));
      })))));
  const head = el("p", {}, "Causal profile: baseline " + num(r.baseline_rps) + " req/s " +
    ci(r.baseline_ci_low, r.baseline_ci_high) + ", entry " + r.entry + "; predicted req/s per optimization:");
  const why = reasons.length ? el("ol", { class: "point-errors" }, ...reasons.map((w) => el("li", {}, w))) : "";
  return el("div", {}, head, curves, why, el("h3", {}, "Services"), servicesTable(r.services));
}

function ms(i, digits = 2) {
  return i ? num(i.value / 1000, digits) : "–";
}

// A ratio against `default` as a change with its interval: −42 % [−50, −35].
function change(i) {
  if (!i) return "–";
  const c = (x) => (x - 1) * 100;
  const ends = i.ci_low === null || i.ci_high === null ? ""
    : " [" + num(c(i.ci_low), 0) + ", " + num(c(i.ci_high), 0) + "]";
  return pct(c(i.value)) + ends;
}

function tailArmRows(arms) {
  return arms.map((a) => a.ran
    ? el("tr", { "data-arm": a.arm },
      el("th", {}, a.arm), el("td", { class: "num" }, ms(a.p50_us)), el("td", { class: "num" }, ms(a.p99_us)),
      el("td", {}, a.p99_us && a.p99_us.ci_low !== null ? "[" + ms({ value: a.p99_us.ci_low }) + ", " +
        ms({ value: a.p99_us.ci_high }) + "]" : "–"),
      el("td", { class: "num" }, ms(a.p999_us)), el("td", { class: "num" }, ms(a.mean_us)),
      el("td", { class: "num" }, a.rps ? num(a.rps.value) : "–"),
      el("td", {}, change(a.p99_vs_default)), el("td", {}, change(a.mean_vs_default)))
    : el("tr", { "data-arm": a.arm }, el("th", {}, a.arm),
      el("td", { colspan: "8", class: "error" }, "not run: " + (a.error || "?"))));
}

function tailTable(arms, id) {
  return el("table", id ? { id } : {},
    el("thead", {}, el("tr", {}, el("th", {}, "arm"), el("th", { class: "num" }, "p50 ms"),
      el("th", { class: "num" }, "p99 ms"), el("th", {}, "p99 95 % CI"), el("th", { class: "num" }, "p99.9 ms"),
      el("th", { class: "num" }, "mean ms"), el("th", { class: "num" }, "req/s"),
      el("th", {}, "p99 vs default"), el("th", {}, "mean vs default"))),
    el("tbody", {}, ...tailArmRows(arms)));
}

function tailTables(r) {
  const head = el("p", {}, "Tail comparison at " + num(r.rate_rps) + " req/s (Poisson, open loop; latency " +
    "from each request's intended send time), " + r.repetitions + " repetitions × " + num(r.window_s, 1) +
    " s per arm; " + r.services.join(", ") + " scheduled on " + r.agents.join(", ") + "; load generator at " +
    (r.load_priority == null ? "normal priority" : "real-time priority " + r.load_priority) + ".");
  const parts = [head, tailTable(r.arms, "result-table")];
  for (const p of r.sweep || []) {
    parts.push(el("h3", {}, "at " + num(p.rate_rps) + " req/s"), tailTable(p.arms, ""));
  }
  if (r.p99_target_us) {
    parts.push(el("h3", {}, "Highest rate with p99 under " + num(r.p99_target_us / 1000, 2) + " ms"),
      el("ul", {}, ...(r.capacity || []).map((c) => el("li", {}, c.arm + ": " +
        (c.max_rate_rps === null ? "none of the rates" : num(c.max_rate_rps) + " req/s offered, " +
          num(c.rps) + " served")))));
  }
  return el("div", {}, ...parts);
}

async function refreshAgents() {
  const body = document.querySelector("#agents tbody");
  try {
    const agents = await (await api("/v1/agents")).json();
    body.replaceChildren(...agents.map((a) => el("tr", {},
      el("td", {}, a.name), el("td", { class: a.status === "ok" ? "status-done" : "status-failed" }, a.status),
      el("td", {}, a.health ? a.health.version : ""),
      el("td", {}, a.error || Object.entries((a.health && a.health.features) || {})
        .map(([k, v]) => k + ": " + v).join("; ")))));
  } catch (e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "4", class: "error" }, e.message)));
  }
}

// The form's fields as a `POST /v1/experiments` body of kind `tail` (docs/coordinator-api.md):
// empty fields are left out, so the server's defaults and its messages apply.
function tailRequest(form) {
  const f = new FormData(form);
  const body = { kind: "tail" };
  const text = (k) => (f.get(k) || "").trim();
  if (text("topology")) body.topology = text("topology");
  if (text("services")) {
    body.services = {};
    for (const pair of text("services").split(",")) {
      const [name, ...selector] = pair.split("=");
      body.services[name.trim()] = selector.join("=").trim();
    }
  }
  if (text("entry")) body.entry = text("entry");
  for (const k of ["rate", "repetitions", "window"]) {
    if (text(k)) body[k] = Number(text(k));
  }
  return body;
}

document.getElementById("tail-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await api("/v1/experiments", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(tailRequest(ev.target)),
    });
    const x = await r.json();
    showMessage("");
    await refreshList();
    select(x.id);
  } catch (e) { showMessage(e.message); }
});

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  showMessage("");
  document.getElementById("token-form").hidden = true;
  refreshList();
  refreshAgents();
});

const fromHash = decodeURIComponent(location.hash.replace(/^#/, ""));
refreshList().then(() => {
  const first = document.querySelector("#experiments tbody tr[data-id]");
  const id = fromHash || (first && first.dataset.id);
  if (id) select(id);
});
refreshAgents();
