// Landlord's rollout view: polls the coordinator's JSON (/api/v1/rollouts...) and draws,
// per entry host, each version's measured share over time against its target weight.
// Every value goes into the page as text or as an attribute, never as markup.
"use strict";

(function () {
  const API = "/api/v1/rollouts";
  const POLL_MS = 1000;
  const LIST_EVERY = 3;         // polls between two reads of the rollout list
  const KEEP = 600;             // points kept per host and version
  const SVG_NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 180, LEFT = 34, RIGHT = 8, TOP = 8, BOTTOM = 20;
  const COLORS = { stable: "#1f77b4", canary: "#e6550d", other: "#7f7f7f" };
  const ENDED = { promoted: "promoted", rolled_back: "rolled back", failed: "failed",
                  aborted: "aborted: rolled back" };

  const state = { key: "", rolloutId: "", points: [], polls: 0, list: [] };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function fmt(value, digits, unit) {
    return value === undefined || value === null ? "-" : value.toFixed(digits) + unit;
  }

  async function getJson(url) {
    const reply = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error || url + ": HTTP " + reply.status);
    return body;
  }

  function keyOf(info) { return info.apartment + "/" + info.unit; }

  function wanted() {
    const hash = decodeURIComponent(location.hash.replace(/^#/, ""));
    if (hash) return hash;
    const active = state.list.find((r) => !ENDED[r.phase]);
    return active ? keyOf(active) : (state.list[0] ? keyOf(state.list[0]) : "");
  }

  function drawList() {
    const ul = document.getElementById("rollouts");
    ul.replaceChildren(...state.list.map((r) => {
      const key = keyOf(r);
      const link = el("a", { href: "#" + encodeURIComponent(key), "data-unit": key,
                             "data-phase": r.phase, "aria-current": key === state.key },
                      key + " " + (r.from_version || "-") + " \u2192 " + r.to_version + " (" +
                      r.phase.replace(/_/g, " ") + ")");
      return el("li").appendChild(link).parentNode;
    }));
  }

  function versionRole(info, version) {
    if (version === info.to_version) return "canary";
    if (version === info.from_version) return "stable";
    return "other";
  }

  // one point per poll: per host and version, the target and (live) the measured share
  function record(info) {
    if (info.rollout_id !== state.rolloutId) {
      state.rolloutId = info.rollout_id;
      state.points = [];
    }
    const now = Date.now() / 1000;
    for (const w of info.hosts || []) {
      state.points.push({ t: now, host: w.host_id, version: w.version, step: info.current_step,
                          target: w.target_percent,
                          measured: w.measured_percent === undefined ? null : w.measured_percent });
    }
    if (state.points.length > KEEP * 8) state.points.splice(0, state.points.length - KEEP * 8);
  }

  function chart(info, host, points) {
    const figure = el("figure", { class: "host-chart", "data-host": host });
    figure.appendChild(el("figcaption", {}, "entry host " + host));
    const plot = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
                              "aria-label": "share of requests per version on " + host });
    const t0 = Math.min(...points.map((p) => p.t)), t1 = Math.max(...points.map((p) => p.t));
    const x = (t) => LEFT + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - LEFT - RIGHT);
    const y = (v) => TOP + (100 - v) / 100 * (H - TOP - BOTTOM);
    for (const v of [0, 25, 50, 75, 100]) {
      plot.appendChild(svg("line", { class: "grid", x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v) }));
      const label = svg("text", { class: "axis", x: 2, y: y(v) + 3 });
      label.textContent = v + "%";
      plot.appendChild(label);
    }
    let lastStep = null;
    for (const p of points) {
      if (lastStep !== null && p.step !== lastStep) {
        plot.appendChild(svg("line", { class: "step-mark", "data-step": p.step,
                                       x1: x(p.t), x2: x(p.t), y1: TOP, y2: H - BOTTOM }));
        const nearEnd = x(p.t) > W - 60;  // label left of the mark, inside the chart
        const label = svg("text", { class: "axis", x: x(p.t) + (nearEnd ? -2 : 2), y: H - 6,
                                    "text-anchor": nearEnd ? "end" : "start" });
        label.textContent = "step " + (p.step + 1);
        plot.appendChild(label);
      }
      lastStep = p.step;
    }
    const now = el("ul");
    const versions = [...new Set(points.map((p) => p.version))].sort();
    for (const version of versions) {
      const mine = points.filter((p) => p.version === version);
      const measured = mine.filter((p) => p.measured !== null).slice(-KEEP);
      const color = COLORS[versionRole(info, version)];
      const last = mine[mine.length - 1];
      const lastMeasured = measured.length ? measured[measured.length - 1].measured : null;
      plot.appendChild(svg("polyline", {
        class: "target", "data-version": version, stroke: color, "data-target": last.target,
        points: mine.slice(-KEEP).map((p) => x(p.t).toFixed(1) + "," + y(p.target).toFixed(1)).join(" "),
      }));
      plot.appendChild(svg("polyline", {
        class: "measured", "data-version": version, stroke: color,
        "data-target": last.target, "data-last": lastMeasured === null ? "" : lastMeasured,
        "data-values": measured.map((p) => p.measured.toFixed(1)).join(" "),
        "data-steps": measured.map((p) => p.step).join(" "),
        points: measured.map((p) => x(p.t).toFixed(1) + "," + y(p.measured).toFixed(1)).join(" "),
      }));
      if (measured.length) {  // the latest figure as a dot: visible even as a lone point
        const end = measured[measured.length - 1];
        plot.appendChild(svg("circle", { class: "latest", "data-version": version, fill: color,
                                         cx: x(end.t).toFixed(1), cy: y(end.measured).toFixed(1),
                                         r: 3 }));
      }
      now.appendChild(el("li", { "data-version": version, class: "role-" + versionRole(info, version) },
                         version + ": measured " + fmt(lastMeasured, 1, "%") +
                         ", target " + fmt(last.target, 0, "%")));
    }
    figure.appendChild(plot);
    figure.appendChild(now);
    return figure;
  }

  function drawCharts(info) {
    const hosts = [...new Set(state.points.map((p) => p.host))].sort();
    const charts = document.getElementById("charts");
    charts.replaceChildren(...hosts.map((h) => chart(info, h, state.points.filter((p) => p.host === h))));
    if (!hosts.length) charts.appendChild(el("p", { class: "legend" }, "no per-host figures yet"));
  }

  function rows(id, list, cells) {
    document.querySelector("#" + id + " tbody").replaceChildren(...list.map((item) => {
      const [attrs, values] = cells(item);
      const tr = el("tr", attrs);
      for (const v of values) {
        tr.appendChild(typeof v === "object" ? el("td", v.attrs, v.text) : el("td", {}, v));
      }
      return tr;
    }));
  }

  function drawRollout(info) {
    const main = document.getElementById("rollout");
    main.hidden = false;
    main.dataset.rolloutId = info.rollout_id;
    document.getElementById("title").textContent =
      keyOf(info) + ": " + (info.from_version || "(none)") + " \u2192 " + info.to_version;
    const phase = document.getElementById("phase");
    phase.textContent = info.phase.replace(/_/g, " ");
    phase.dataset.phase = info.phase;
    const ended = document.getElementById("ended");
    ended.hidden = !ENDED[info.phase];
    ended.dataset.phase = info.phase;
    ended.textContent = ENDED[info.phase] ? ("Rollout " + ENDED[info.phase] + ": " + info.reason) : "";
    const steps = info.steps || [];
    const current = steps.find((s) => s.index === info.current_step);
    const step = document.getElementById("step");
    step.textContent = steps.length ? "step " + (info.current_step + 1) + " of " + info.total_steps +
      (current ? " (" + current.target_percent + "%)" : "") : "";
    step.dataset.step = steps.length ? info.current_step : "";
    // an ended rollout's reason is in its banner
    document.getElementById("reason").textContent = ENDED[info.phase] ? "" : (info.reason || "");
    drawCharts(info);
    const hosts = [...(info.hosts || [])].sort((a, b) =>
      (a.host_id + "\0" + a.version).localeCompare(b.host_id + "\0" + b.version));
    rows("hosts", hosts, (w) => [
      { "data-host": w.host_id, "data-version": w.version, "data-target": w.target_percent,
        "data-measured": w.measured_percent === undefined ? "" : w.measured_percent },
      [w.host_id, w.version, w.target_percent + "%", fmt(w.measured_percent, 1, "%"), w.requests,
       fmt(w.error_rate === undefined ? undefined : w.error_rate * 100, 2, "%"),
       fmt(w.rate_rps, 1, " rps"), fmt(w.p95_ms, 1, " ms")]]);
    rows("steps", [...steps].sort((a, b) => a.index - b.index), (s) => [
      { "data-index": s.index, "data-outcome": s.outcome },
      [s.index === info.current_step ? "\u25b6" : "", s.index + 1, s.target_percent + "%",
       { attrs: { class: "verdict-" + (s.outcome === "passed" ? "pass" : s.outcome === "failed" ? "fail" : "") },
         text: s.outcome || "measuring" },
       s.canary ? s.canary.requests : "-",
       fmt(s.canary && s.canary.error_rate !== undefined ? s.canary.error_rate * 100 : undefined, 2, "%"),
       fmt(s.canary ? s.canary.p95_ms : undefined, 1, " ms"), (s.reasons || []).join("; ") || "-"]]);
    rows("checks", info.checks || [], (c) => [
      { "data-name": c.name, "data-verdict": c.verdict },
      [c.name, c.threshold === undefined ? "not set" : (c.bound === "max" ? "\u2264 " : "\u2265 ") + c.threshold,
       c.measured === undefined ? "-" : c.measured.toFixed(3),
       { attrs: { class: "verdict-" + c.verdict }, text: c.verdict }]]);
  }

  function showStatus(ok, text) {
    const status = document.getElementById("status");
    status.dataset.state = ok ? "ok" : "error";
    status.textContent = text;
  }

  async function poll() {
    try {
      if (state.polls++ % LIST_EVERY === 0 || !state.key) {
        state.list = (await getJson(API)).rollouts || [];
      }
      state.key = wanted();
      if (state.key) {
        const [apartment, unit] = state.key.split("/");
        const info = await getJson(API + "/" + encodeURIComponent(apartment) + "/" +
                                   encodeURIComponent(unit || ""));
        // the list shows the shown rollout as it is now, not as of the last list read
        state.list = state.list.map((r) => (keyOf(r) === keyOf(info) ? info : r));
        record(info);
        drawRollout(info);
      }
      drawList();
      showStatus(true, "updated " + new Date().toLocaleTimeString());
    } catch (err) {
      showStatus(false, "cannot read the coordinator: " + err.message);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  window.addEventListener("hashchange", () => { state.polls = 0; });
  poll();
}());
