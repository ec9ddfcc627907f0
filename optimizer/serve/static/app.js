// rigopt serve: the page. Plain JS, no library, no network but this server's own /api.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const form = $("#q");
const FIELDS = ["model", "context", "form", "tok_s", "concurrency", "isl", "osl", "rate_rps", "ttft_s", "tpot_s",
  "owned", "objective", "max_budget", "engines", "confidence"];
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const GB = 1e9, GiB = 2 ** 30;
const fmt = (x, d = 1) => (x == null || !isFinite(x)) ? "–" : Number(x).toLocaleString("en-US", {maximumFractionDigits: d, minimumFractionDigits: d});
const usd = (x) => x == null ? "–" : "$" + Number(x).toLocaleString("en-US", {maximumFractionDigits: 0});
const secs = (x) => x == null ? "–" : (x < 1 ? fmt(x * 1000, 0) + " ms" : x < 120 ? fmt(x, 2) + " s" : fmt(x / 60, 1) + " min");
let lastAnswer = null, lastQuestion = null, seq = 0, timer = null;

function readForm() {
  const fd = new FormData(form), q = {};
  for (const k of FIELDS) { const v = fd.get(k); if (v !== null && v !== "") q[k] = v; }
  return q;
}
function writeForm(q) {
  for (const [k, v] of Object.entries(q)) {
    const el = form.elements[k];
    if (!el) continue;
    if (el instanceof RadioNodeList) { for (const r of el) r.checked = r.value === v; } else el.value = v;
  }
  form.dataset.form = readForm().form || "speed";
}
function permalink(q) { return location.pathname + "?" + new URLSearchParams(q).toString(); }

// the question -> an API call (the same fields and defaults as the CLI)
function request(q) {
  const num = (k) => q[k] === undefined ? undefined : Number(q[k]);
  const list = (k) => q[k] ? q[k].split(",").map((s) => s.trim()).filter(Boolean) : undefined;
  const body = {model: q.model, context: q.context, objective: q.objective, confidence: num("confidence"),
    max_budget: num("max_budget"), engines: list("engines")};
  if (q.form === "sla") {
    if (body.objective === "power") body.objective = "hourly";
    Object.assign(body, {isl: num("isl"), osl: num("osl"), rate_rps: num("rate_rps"), ttft_s: num("ttft_s"),
      tpot_s: num("tpot_s")});
    delete body.context;
  } else {
    Object.assign(body, {tok_s: num("tok_s"), concurrency: num("concurrency")});
    if (q.form === "owned") body.owned = q.owned;
  }
  for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
  return ["/api/cheapest", body];
}

async function post(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
  return j;
}

async function ask() {
  const q = readForm(), mine = ++seq;
  form.dataset.form = q.form || "speed";
  history.replaceState(null, "", permalink(q));
  $("#permalink").href = permalink(q);
  const [url, body] = request(q);
  setStatus("solving…");
  try {
    const a = await post(url, body);
    if (mine !== seq) return;  // a newer question was asked meanwhile
    lastAnswer = a; lastQuestion = q;
    $("#answer").innerHTML = render(a);
    bind($("#answer"), a);
    setStatus(status(a));
  } catch (e) {
    if (mine !== seq) return;
    setStatus("error: " + e.message, true);
  }
}
function setStatus(t, bad = false) { const s = $("#status"); s.textContent = t; s.className = bad ? "error" : ""; }
function status(a) {
  if (a.schema_id === "rigopt.cheapest/1") return a.plan ? `${a.status}: ${a.candidates} candidates, solved in ${fmt(a.total_s, 2)} s` : "nothing fits";
  if (a.schema_id && a.schema_id.startsWith("rigopt.fleet")) return a.fleet ? `fleet ${a.fleet.status}` : "no fleet meets the SLAs";
  return a.plan === null ? "nothing fits" : "answered";
}

// ---------------------------------------------------------------------------------------------- rendering
function render(a) {
  if (a.schema_id === "rigopt.cheapest/1") return renderCheapest(a);
  if (a.schema_id && a.schema_id.startsWith("rigopt.fleet")) return renderFleet(a);
  if (a.schema_id === "rigopt.mixed-plan/1" || (a.plan === null && "tried" in a)) return renderMixed(a);
  return `<pre>${esc(JSON.stringify(a, null, 2))}</pre>`;
}

function intervalBar(v, lo, hi, target) {
  if (v == null) return "";
  const top = Math.max(hi ?? v, v, target ?? 0) * 1.1 || 1, pc = (x) => (100 * x / top).toFixed(2) + "%";
  return `<div class="bar" title="expected ${fmt(v)}; ${lo != null ? "interval " + fmt(lo) + "–" + fmt(hi) : ""}">` +
    (lo != null ? `<span class="iv" style="left:${pc(lo)};width:${pc(hi - lo)}"></span>` : "") +
    `<span class="pt" style="left:${pc(v)}"></span>` + (target ? `<span class="tg" style="left:${pc(target)}"></span>` : "") + "</div>";
}

function memoryBar(m) {
  if (!m) return "";
  const cap = m.capacity_bytes, parts = [["w", m.weights_bytes, "weights"], ["k", m.kv_bytes, "KV cache"],
    ["r", m.runtime_bytes, "runtime"], ["h", Math.max(0, m.headroom_bytes), "headroom"]];
  return `<div class="stack" title="per device, of ${fmt(cap / GiB)} GiB">` + parts.map(([c, b, n]) =>
    `<span class="${c}" style="width:${(100 * b / cap).toFixed(2)}%" title="${n} ${fmt(b / GiB)} GiB"></span>`).join("") +
    `</div><div class="legend muted">` + parts.map(([c, b, n]) => `<span class="${c}"></span>${n} ${fmt(b / GiB)} GiB`).join("") +
    (m.host_used_bytes ? ` · host DRAM ${fmt(m.host_used_bytes / GiB)} of ${fmt(m.host_capacity_bytes / GiB)} GiB` : "") + "</div>";
}

function planCard(p, title, target) {
  const h = p.hardware, t = p.trust || {}, s = p.speed || {}, c = p.costs || {}, par = p.parallel || {};
  const layout = `TP${par.tp}×PP${par.pp}${par.dp > 1 ? "×DP" + par.dp : ""}${par.ep ? "×EP" + par.ep_size : ""}`;
  const off = p.offload && p.offload.mode !== "none" ? `${p.offload.expert_layers_offloaded} expert layers in host ${p.offload.mode === "cpu" ? "DRAM" : p.offload.mode}` +
    (p.offload.nvme_layers && p.offload.nvme_layers.length ? `, ${p.offload.nvme_layers.length} on NVMe` : "") : "none";
  return `<div class="card plan"><h2>${esc(title)}</h2><div class="kv">
    <b>hardware</b><span class="hw">${h.n_nodes}× ${esc(h.node)} (${h.n_nodes * h.gpus_per_node}× ${esc(h.accelerator)})${h.owned ? " — owned" : ""}</span>
    <b>engine</b><span>${esc(p.engine)} · ${esc(p.quant)} · KV ${esc(p.kv_dtype)} · ${layout}</span>
    <b>offload</b><span>${esc(off)}</span>
    <b>cost</b><span class="cost">${usd(c.capex_usd)} capex · $${fmt(c.usd_per_hour, 2)}/h · ${fmt(c.power_watts, 0)} W</span>
    <b>decode</b><span class="tok">${fmt(s.tok_s_per_seq)} tok/s per sequence ${t.tok_s_per_seq_low != null ? `(${Math.round(100 * t.confidence)}% interval ${fmt(t.tok_s_per_seq_low)}–${fmt(t.tok_s_per_seq_high)})` : ""}</span>
    <b></b><span>${intervalBar(s.tok_s_per_seq, t.tok_s_per_seq_low, t.tok_s_per_seq_high, target)}</span>
    <b>TTFT</b><span>${secs(s.ttft_s)} ${t.ttft_s_low != null ? `(${secs(t.ttft_s_low)}–${secs(t.ttft_s_high)})` : ""}</span>
    <b>binding</b><span>${esc(p.binding_constraint)} (step: ${esc(s.binding)})</span>
    <b>trust</b><span>decode regime ${esc(t.decode_regime)} from ${t.decode_rows ?? "–"} measurements</span>
  </div><h3>Memory per device</h3>${memoryBar(p.memory)}
  ${(p.notes || []).length ? `<h3>Notes</h3><ul>${p.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>` : ""}
  <div class="files"><button type="button" class="export" data-plan="${esc(title)}">Export launch scripts</button></div>
  <div class="export-out"></div></div>`;
}

function frontierChart(fr) {
  const pts = fr.filter((f) => f.plan);
  if (!pts.length) return "";
  const W = 520, H = 200, L = 60, B = 30, maxC = Math.max(...pts.map((f) => f.plan.costs.objective_value)) * 1.1;
  const x = (i) => L + (i + 0.5) * (W - L - 10) / fr.length, y = (c) => H - B - (H - B - 10) * c / maxC;
  let g = `<svg id="frontier" width="${W}" height="${H}" role="img" aria-label="cost-quality frontier">`;
  g += `<line x1="${L}" y1="${H - B}" x2="${W - 5}" y2="${H - B}" stroke="#999"/><line x1="${L}" y1="10" x2="${L}" y2="${H - B}" stroke="#999"/>`;
  for (let k = 0; k <= 4; k++) { const c = maxC * k / 4; g += `<text x="${L - 4}" y="${y(c) + 4}" text-anchor="end">${usd(c)}</text>`; }
  fr.forEach((f, i) => {
    g += `<text x="${x(i)}" y="${H - 12}" text-anchor="middle">${esc(f.tier)}</text>`;
    if (!f.plan) return;
    const c = f.plan.costs.objective_value;
    g += `<circle class="dot${f.headline ? " head" : ""}" data-i="${i}" cx="${x(i)}" cy="${y(c)}" r="${f.headline ? 7 : 5}" fill="${f.dominated_by ? "#bbb" : "#3d6fb6"}">` +
      `<title>${esc(f.tier)}: ${usd(c)}, ${esc(f.plan.hardware.accelerator)}, ${esc(f.plan.quant)}, ${fmt(f.plan.speed.tok_s_per_seq)} tok/s${f.dominated_by ? " (costs no less than " + esc(f.dominated_by) + ")" : ""}</title></circle>`;
  });
  return g + "</svg>";
}

function renderCheapest(a) {
  const q = a.query || {};
  if (!a.plan) {
    return `<div class="card"><h2 class="bad">Nothing meets the targets</h2><ul>${(a.infeasible_reasons || []).map((r) => `<li>${esc(r)}</li>`).join("")}</ul>` +
      ((a.relaxations || []).length ? `<h3>Cheapest relaxations</h3><ul>${a.relaxations.map((r) => `<li>${esc(typeof r === "string" ? r : (r.change || r.description || JSON.stringify(r)))}</li>`).join("")}</ul>` : "") + "</div>";
  }
  let html = planCard(a.plan, `Cheapest plan: ${usd(a.cost)} (${a.status})`, q.tok_s);
  if ((a.frontier || []).length) html += `<div class="card"><h2>Cost–quality frontier</h2>${frontierChart(a.frontier)}<div id="tier" class="muted">click a point for its plan</div></div>`;
  if ((a.alternatives || []).length) {
    html += `<div class="card"><h2>Alternatives</h2><table><tr><th>hardware</th><th>engine</th><th>quant</th><th>cost</th><th>tok/s</th></tr>` +
      a.alternatives.map((p) => `<tr><td>${p.hardware.n_nodes}× ${esc(p.hardware.node)}</td><td>${esc(p.engine)}</td><td>${esc(p.quant)}</td><td>${usd(p.costs.objective_value)}</td><td>${fmt(p.speed.tok_s_per_seq)}</td></tr>`).join("") + "</table></div>";
  }
  return html;
}

function renderFleet(a) {
  if (!a.fleet) return `<div class="card"><h2 class="bad">No fleet meets the SLAs</h2><pre>${esc((a.notes || []).join("\n"))}</pre></div>`;
  const f = a.fleet;
  return `<div class="card"><h2>Cheapest fleet: ${f.usd_per_hour != null ? "$" + fmt(f.usd_per_hour, 2) + "/h" : usd(f.capex_usd)} (${esc(f.kind)}, ${f.gpus} GPUs)</h2>
    <div class="kv"><b>TTFT p${fmt(a.percentile * 100, 0)}</b><span>${secs(f.ttft_s)} (SLA ${secs(a.ttft_s)})</span><b>TPOT</b><span>${secs(f.tpot_s)} (SLA ${secs(a.tpot_s)})</span></div>
    <h3>Pools</h3><table><tr><th>role</th><th>replicas</th><th>hardware</th><th>engine</th><th>quant</th><th>layout</th><th>req/s each</th><th>price</th></tr>` +
    f.pools.map((p) => `<tr><td>${esc(p.role)}</td><td>${p.replicas}</td><td>${p.gpus_per_replica}× ${esc(p.accelerator)} (${esc(p.offer)})</td><td>${esc(p.engine)}</td><td>${esc(p.quant)}</td><td>TP${p.tp}×PP${p.pp}${p.ep ? "×EP" : ""}</td><td>${fmt(p.rate_per_replica_rps, 2)}</td><td class="muted">${esc(p.price_source)} ${esc(p.price_as_of)}</td></tr>`).join("") + "</table></div>";
}

function renderMixed(a) {
  if (!a.schema_id) return `<div class="card"><h2 class="bad">Nothing fits the inventory</h2><p>${esc(a.reason)}</p></div>`;
  const rows = a.stages.map((s) => `<tr><td>${esc(s.uid)}</td><td>${esc(s.accelerator)}${s.owned ? "" : " (buy)"}</td><td>${s.start}–${s.end - 1}</td><td>${s.gpu_expert_layers.length}</td><td>${s.cpu_expert_layers.length}</td><td>${s.nvme_expert_layers.length}</td></tr>`).join("");
  return `<div class="card plan"><h2>Mixed plan: ${esc(a.quant)} at ${fmt(a.tok_s)} tok/s</h2>
    <div class="kv"><b>engine</b><span>${esc(a.engine)}</span><b>decode</b><span class="tok">${fmt(a.tok_s)} tok/s ${a.tok_s_low != null ? `(interval ${fmt(a.tok_s_low)}–${fmt(a.tok_s_high)})` : ""}</span>
    <b></b><span>${intervalBar(a.tok_s, a.tok_s_low, a.tok_s_high)}</span><b>to buy</b><span>${a.bought.length ? esc(a.bought.join(", ")) + " — " + usd(a.cost_usd) : "nothing"}</span></div>
    <h3>Layers per device</h3><table><tr><th>device</th><th>card</th><th>layers</th><th>expert layers on GPU</th><th>in DRAM</th><th>on NVMe</th></tr>${rows}</table></div>`;
}

function bind(root, a) {
  for (const dot of root.querySelectorAll("svg .dot")) {
    dot.addEventListener("click", () => {
      const f = a.frontier[Number(dot.dataset.i)];
      $("#tier", root).innerHTML = planCard(f.plan, `${f.tier} tier: ${usd(f.plan.costs.objective_value)}`, (a.query || {}).tok_s);
      bind($("#tier", root), {frontier: []});
      wireExport($("#tier", root), f.plan);
    });
  }
  if (a.plan && a.schema_id === "rigopt.cheapest/1") wireExport(root.querySelector(".plan"), a.plan);
}

function wireExport(card, plan) {
  const btn = card && card.querySelector("button.export");
  if (!btn) return;
  btn.addEventListener("click", async () => {
    const out = card.querySelector(".export-out");
    out.textContent = "exporting…";
    try {
      const e = await post("/api/export", {plan});
      lastExport = e;
      out.innerHTML = `<p>${esc(e.engine)} ${esc(e.version)} <button type="button" class="zip">Download zip</button></p>` +
        Object.entries(e.contents).map(([n, t]) => `<h3>${esc(n)} <button type="button" class="copy" data-name="${esc(n)}">Copy</button></h3><pre>${esc(t)}</pre>`).join("");
      out.querySelector(".zip").addEventListener("click", () => downloadZip(e));
      for (const b of out.querySelectorAll("button.copy")) b.addEventListener("click", () => navigator.clipboard?.writeText(e.contents[b.dataset.name]));
    } catch (err) { out.innerHTML = `<p class="bad">error: ${esc(err.message)}</p>`; }
  });
}
let lastExport = null;
function downloadZip(e) {
  const bytes = Uint8Array.from(atob(e.zip_base64), (c) => c.charCodeAt(0));
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], {type: "application/zip"}));
  a.download = "rigopt-export.zip";
  document.body.appendChild(a); a.click(); a.remove();
}

// ---------------------------------------------------------------------------------------------- wiring
form.addEventListener("submit", (e) => { e.preventDefault(); ask(); });
form.addEventListener("change", () => { clearTimeout(timer); timer = setTimeout(ask, 300); });  // what-if
for (const b of document.querySelectorAll("#presets button")) b.addEventListener("click", () => { form.elements.context.value = b.dataset.ctx; ask(); });
$("#pin").addEventListener("click", () => {
  if (!lastAnswer) return;
  const p = $("#pinned");
  p.hidden = false;
  p.innerHTML = `<p class="muted">pinned: ${esc(new URLSearchParams(lastQuestion).toString())}</p>` + render(lastAnswer);
});
fetch("/api/catalog/models").then((r) => r.json()).then((j) => {
  $("#models").innerHTML = (j.models || []).map((m) => `<option value="${esc(m.key)}">${esc(m.name)}</option>`).join("");
}).catch(() => {});
writeForm(Object.fromEntries(new URLSearchParams(location.search)));
ask();
