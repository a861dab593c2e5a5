// tasklog dashboard. Plain JavaScript, no dependencies, no network beyond this server.
// Every text from the store goes into the page through textContent (never as HTML).
"use strict";

(function () {
  const OUTCOMES = ["success", "fail", "crash", "inaction", "terminate", "missed", "skipped", "running"];
  const SINCE = [["1h", "last hour"], ["6h", "last 6 hours"], ["1d", "last day"],
    ["7d", "last 7 days"], ["30d", "last 30 days"], ["", "all time"]];
  const PAGE = 50;
  const main = document.getElementById("main");
  let refresh = null;   // re-renders the current view with fresh data
  let pending = null;

  // ---------------------------------------------------------------- helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = String(v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") el.textContent = String(v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, String(v));
    }
    for (const c of children) if (c) el.append(c);
    return el;
  }
  function params() { return new URLSearchParams(location.search); }
  function link(path, query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    const text = q.toString();
    return text ? `${path}?${text}` : path;
  }
  async function api(path, query) {
    const response = await fetch(link(path, query), { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error : `HTTP ${response.status}`;
      throw new Error(message);
    }
    return body;
  }
  function pad(n, w) { return String(n).padStart(w || 2, "0"); }
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function ago(iso) {
    if (!iso) return "";
    const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
    if (!isFinite(seconds)) return "";
    if (seconds < 60) return "just now";
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined || typeof seconds !== "number") return "";
    if (seconds === 0) return "0s";
    if (seconds < 0.001) return `${(seconds * 1e6).toFixed(0)}µs`;
    if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0)}ms`;
    if (seconds < 10) return `${seconds.toFixed(2)}s`;
    if (seconds < 60) return `${seconds.toFixed(1)}s`;
    const m = Math.floor(seconds / 60), sec = Math.round(seconds % 60);
    if (m < 60) return `${m}m ${pad(sec)}s`;
    return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
  }
  function percent(rate) { return rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)}%`; }
  function outcomeName(o) { return o === null || o === undefined ? "running" : String(o); }
  function badge(o) {
    const name = outcomeName(o);
    return h("span", { class: `badge o-${OUTCOMES.includes(name) ? name : "other"}`, text: name });
  }
  function colour(o) {
    const name = outcomeName(o);
    const css = getComputedStyle(document.documentElement);
    const v = { success: "--ok", fail: "--bad", crash: "--bad", inaction: "--warn",
      terminate: "--warn", missed: "--warn", skipped: "--other", running: "--run" }[name] || "--other";
    return css.getPropertyValue(v).trim() || "#888";
  }
  function select(label, name, options, value, onchange) {
    const el = h("select", { name, "aria-label": label, onchange },
      options.map(([v, t]) => h("option", { value: v, selected: v === value, text: t })));
    return h("label", {}, label, el);
  }
  function empty(text) { return h("p", { class: "empty", text }); }
  function failed(err) { return h("p", { class: "error-box", text: `Could not load: ${err.message}` }); }
  function setNav(which) {
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("current", a.dataset.nav === which);
    }
  }
  function navigate(query, push) {
    const url = link(location.pathname, query);
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
    route();
  }

  // ------------------------------------------------------------------ views
  async function tasksView() {
    setNav("tasks");
    document.title = "tasklog · tasks";
    const q = params();
    const since = q.get("since") || "";
    const filters = h("div", { class: "filters" },
      select("Figures over", "since", SINCE, since, (e) => navigate({ since: e.target.value }, false)));
    const chart = h("div", { class: "card chart", id: "history" });
    const body = h("div", { class: "tablewrap" });
    main.replaceChildren(h("h1", { text: "Tasks" }), filters, chart, body);
    refresh = async () => {
      const [overview, hist] = await Promise.all([
        api("api/overview", { since }),
        api("api/history", { since: since || "1d", interval: bucketFor(since || "1d") }),
      ]);
      chart.replaceChildren(historyChart(hist), legend());
      if (!overview.tasks.length) {
        body.replaceChildren(empty("No tasks yet: log a run (tasklog demo writes a few)."));
        return;
      }
      const rows = overview.tasks.map((t) => {
        const st = t.stats || {};
        const recent = (t.recent || []).slice().reverse();
        const last = t.recent && t.recent.length ? t.recent[0] : null;
        return h("tr", { "data-task": t.task_name },
          h("td", { class: "name" }, h("a", { href: link("task", { name: t.task_name }), text: t.task_name })),
          h("td", {}, last ? badge(last.outcome) : h("span", { text: t.last_action })),
          h("td", { class: "hide-narrow", title: when(t.last_created), text: ago(t.last_created) }),
          h("td", { class: "num", text: st.runs === undefined ? "" : st.runs }),
          h("td", { class: "num", text: percent(st.success_rate) }),
          h("td", { class: "num hide-narrow", text: duration(st.p95_runtime) }),
          h("td", {}, h("div", { class: "strip" }, recent.map((r) =>
            h("a", { class: `o-${outcomeName(r.outcome)}`, href: link("run", { id: r.run_id }),
              title: `${outcomeName(r.outcome)} · ${when(r.start)} · ${duration(r.runtime)}` })))));
      });
      body.replaceChildren(h("table", { id: "tasks" },
        h("thead", {}, h("tr", {}, h("th", { text: "Task" }), h("th", { text: "Last" }),
          h("th", { class: "hide-narrow", text: "Last record" }), h("th", { class: "num", text: "Runs" }),
          h("th", { class: "num", text: "Success" }), h("th", { class: "num hide-narrow", text: "p95" }),
          h("th", { text: "Recent runs" }))),
        h("tbody", {}, rows)));
    };
    await refresh();
  }

  function bucketFor(since) {
    return { "1h": "5m", "6h": "15m", "1d": "1h", "7d": "6h", "30d": "1d" }[since] || "1h";
  }

  async function taskView() {
    setNav("tasks");
    const q = params();
    const name = q.get("name") || "";
    const status = q.get("status") || "";
    const since = q.get("since") || "";
    const before = q.get("before") || "";
    document.title = `tasklog · ${name}`;
    const statuses = [["", "any outcome"], ...OUTCOMES.map((o) => [o, o]),
      ["lost", "lost (process gone)"]];
    const filters = h("div", { class: "filters" },
      select("Outcome", "status", statuses, status, (e) => navigate({ name, status: e.target.value, since }, true)),
      select("Started", "since", SINCE, since, (e) => navigate({ name, status, since: e.target.value }, true)));
    const figures = h("div", { class: "stats", id: "figures" });
    const chart = h("div", { class: "card chart", id: "chart" });
    const list = h("div", { class: "tablewrap" });
    const pager = h("div", { class: "pager" });
    main.replaceChildren(h("p", {}, h("a", { href: "./", text: "← all tasks" })),
      h("h1", { text: name }), filters, figures, chart, list, pager);
    refresh = async () => {
      const [page, st] = await Promise.all([
        api("api/runs", { task: name, status, since, before, limit: PAGE }),
        api("api/stats", { task: name, since }),
      ]);
      const t = st.tasks.find((x) => x.task_name === name) || st.total;
      figures.replaceChildren(
        stat("runs", t.runs), stat("success rate", percent(t.success_rate)),
        stat("failures", t.failures), stat("mean", duration(t.mean_runtime)),
        stat("p95", duration(t.p95_runtime)), stat("max", duration(t.max_runtime)));
      chart.replaceChildren(scatter(page.runs), legend());
      if (!page.runs.length) list.replaceChildren(empty("No runs match these filters."));
      else list.replaceChildren(runsTable(page.runs));
      pager.replaceChildren(
        before ? h("a", { class: "button", href: link("task", { name, status, since }), text: "← newest" }) : "",
        page.next ? h("a", { class: "button", id: "older", href: link("task", { name, status, since, before: page.next }), text: "older →" }) : "");
    };
    await refresh();
  }

  function stat(label, value) { return h("div", { class: "stat" }, h("b", { text: value }), h("span", { text: label })); }

  function runsTable(runs) {
    return h("table", { id: "runs" },
      h("thead", {}, h("tr", {}, h("th", { text: "Started" }), h("th", { class: "num", text: "Duration" }),
        h("th", { text: "Outcome" }), h("th", { class: "hide-narrow", text: "Run" }))),
      h("tbody", {}, runs.map((r) => h("tr", { "data-run": r.run_id },
        h("td", {}, h("a", { href: link("run", { id: r.run_id }), text: when(r.start) })),
        h("td", { class: "num", text: duration(r.runtime) }),
        h("td", {}, badge(r.outcome)),
        h("td", { class: "mono hide-narrow" }, h("a", { href: link("run", { id: r.run_id }), text: r.run_id }))))));
  }

  function legend() {
    return h("div", { class: "legend" }, OUTCOMES.map((o) => {
      const dot = h("i", {});
      dot.style.background = colour(o);
      return h("span", {}, dot, o);
    }));
  }

  // start time (x) against duration (y), one dot per run, coloured by outcome
  function scatter(runs) {
    const W = 800, H = 240, L = 56, R = 12, T = 12, B = 28;
    const now = Date.now();
    const points = runs.map((r) => {
      const start = new Date(r.start).getTime();
      const open = r.outcome === null;
      const secs = open ? Math.max((now - start) / 1000, 0) : (typeof r.runtime === "number" ? r.runtime : 0);
      return { r, start, secs, open };
    }).filter((p) => isFinite(p.start) && isFinite(p.secs));
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Runs: start time against duration" });
    if (!points.length) {
      svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", text: "no runs to draw" }));
      return svg;
    }
    let x0 = Math.min(...points.map((p) => p.start)), x1 = Math.max(...points.map((p) => p.start));
    if (x1 - x0 < 1000) { x0 -= 30000; x1 += 30000; }
    const y1 = Math.max(...points.map((p) => p.secs)) * 1.1 || 1;
    const X = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
    const Y = (v) => H - B - (v / y1) * (H - T - B);
    svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    svg.append(s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    for (let i = 0; i <= 4; i++) {
      const v = (y1 * i) / 4;
      svg.append(s("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end", text: duration(v) }));
      const t = x0 + ((x1 - x0) * i) / 4;
      const d = new Date(t);
      const label = x1 - x0 > 12 * 3600000 ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`
        : `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
      svg.append(s("text", { x: X(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", text: label }));
    }
    for (const p of points) {
      const dot = s("circle", { cx: X(p.start).toFixed(1), cy: Y(p.secs).toFixed(1), r: 5,
        fill: colour(p.r.outcome), "data-outcome": outcomeName(p.r.outcome), class: p.open ? "open" : "",
        onclick: () => { location.href = link("run", { id: p.r.run_id }); } },
      s("title", { text: `${outcomeName(p.r.outcome)} · ${when(p.r.start)} · ${duration(p.secs)}` }));
      // inline: the stylesheet's circle stroke (the card's colour) beats an attribute
      if (p.open) dot.style.stroke = colour(null);
      svg.append(dot);
    }
    return svg;
  }

  // runs per time bucket, stacked by outcome
  function historyChart(doc) {
    const W = 800, H = 140, L = 40, R = 8, T = 8, B = 22;
    const buckets = doc.buckets || [];
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Runs per time bucket by outcome" });
    const most = Math.max(1, ...buckets.map((b) => b.runs));
    const bw = (W - L - R) / Math.max(buckets.length, 1);
    svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    svg.append(s("text", { x: L - 6, y: T + 10, "text-anchor": "end", text: most }));
    svg.append(s("text", { x: L - 6, y: H - B, "text-anchor": "end", text: 0 }));
    buckets.forEach((b, i) => {
      let y = H - B;
      for (const o of doc.outcomes) {
        const n = b.counts[o] || 0;
        if (!n) continue;
        const hgt = (n / most) * (H - T - B);
        y -= hgt;
        svg.append(s("rect", { x: (L + i * bw + 1).toFixed(1), y: y.toFixed(1), width: Math.max(bw - 2, 1).toFixed(1),
          height: hgt.toFixed(1), fill: colour(o === "running" ? null : o) },
        s("title", { text: `${when(b.start)}: ${n} ${o}` })));
      }
    });
    if (buckets.length) {
      for (const [i, anchor] of [[0, "start"], [buckets.length - 1, "end"]]) {
        svg.append(s("text", { x: anchor === "start" ? L : W - R, y: H - 6, "text-anchor": anchor, text: when(buckets[i].start).slice(5, 16) }));
      }
    }
    return svg;
  }

  async function runView() {
    setNav("");
    const id = params().get("id") || "";
    document.title = `tasklog · run ${id}`;
    const head = h("div", {});
    const log = h("div", { class: "tablewrap" });
    main.replaceChildren(head, h("h2", { text: "Log" }), log);
    refresh = async () => {
      const doc = await api(`api/runs/${encodeURIComponent(id)}`);
      const run = doc.run;
      document.title = `tasklog · ${run.task_name} · ${outcomeName(run.outcome)}`;
      const meta = h("dl", { class: "meta" },
        h("dt", { text: "run" }), h("dd", { class: "mono", text: run.run_id }),
        h("dt", { text: "started" }), h("dd", { text: when(run.start) }),
        h("dt", { text: "ended" }), h("dd", { text: run.end ? when(run.end) : "still running" }),
        h("dt", { text: "duration" }), h("dd", { text: duration(run.runtime) }));
      const first = doc.records[0] || {};
      for (const key of ["host", "process"]) {
        if (first[key] !== undefined && first[key] !== null) meta.append(h("dt", { text: key }), h("dd", { text: first[key] }));
      }
      head.replaceChildren(
        h("p", {}, h("a", { href: link("task", { name: run.task_name }), text: `← ${run.task_name}` })),
        h("h1", {}, h("span", { class: "task-name", text: run.task_name }), " ", badge(run.outcome)),
        h("div", { class: "card" }, meta,
          h("p", {}, h("a", { class: "button", id: "download", href: `api/runs/${encodeURIComponent(id)}?format=text`, download: "", text: "Download log" }))));
      log.replaceChildren(h("table", { class: "log", id: "log" },
        h("thead", {}, h("tr", {}, h("th", { text: "Time" }), h("th", { text: "Level" }), h("th", { text: "Message" }))),
        h("tbody", {}, doc.records.map((r) => {
          const level = r.levelname || (r.action === "fail" || r.action === "crash" ? "ERROR" : "INFO");
          const message = r.message || r.msg || r.action;
          return h("tr", { "data-action": r.action },
            h("td", { class: "mono", text: when(new Date(r.created * 1000).toISOString()) }),
            h("td", { class: `lvl-${level}`, text: level }),
            h("td", {}, h("span", { text: message }), r.exc_text ? h("pre", { class: "traceback", text: r.exc_text }) : ""));
        }))));
    };
    await refresh();
  }

  async function errorsView() {
    setNav("errors");
    document.title = "tasklog · errors";
    const q = params();
    const task = q.get("task") || "";
    const since = q.get("since") || "";
    const filters = h("div", { class: "filters" },
      select("When", "since", SINCE, since, (e) => navigate({ task, since: e.target.value }, true)),
      task ? h("a", { href: link("errors", { since }), text: `all tasks (now: ${task})` }) : "");
    const list = h("div", { id: "errors" });
    main.replaceChildren(h("h1", { text: "Recent errors" }), filters, list);
    refresh = async () => {
      const found = (await api("api/errors", { task, since, limit: 100 }))
        .slice().sort((a, b) => b.created - a.created);
      if (!found.length) { list.replaceChildren(empty("No failures. 🎉")); return; }
      list.replaceChildren(...found.map((r) => h("div", { class: "card error" },
        h("div", {}, badge(r.action), " ",
          h("a", { href: link("task", { name: r.task_name }), class: "task-name", text: r.task_name }), " · ",
          h("span", { text: when(new Date(r.created * 1000).toISOString()) }),
          r.run_id ? [" · ", h("a", { href: link("run", { id: r.run_id }), text: "run" })] : ""),
        h("p", { text: r.message || r.action }),
        r.exc_text ? h("details", {}, h("summary", { text: r.exc_text.trim().split("\n").pop() }),
          h("pre", { class: "traceback", text: r.exc_text })) : "")));
    };
    await refresh();
  }

  // ----------------------------------------------------------------- router
  async function route() {
    refresh = null;
    const path = location.pathname.replace(/\/+$/, "").split("/").pop();
    const view = { task: taskView, run: runView, errors: errorsView }[path] || tasksView;
    try { await view(); } catch (err) { main.replaceChildren(failed(err)); }
  }

  // new records: refresh the view (at most once a second)
  function listen() {
    const live = document.getElementById("live");
    if (!window.EventSource) { live.textContent = "no live updates"; return; }
    const source = new EventSource("api/events");
    source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
    source.addEventListener("record", () => {
      if (pending || !refresh) return;
      pending = setTimeout(async () => {
        pending = null;
        if (refresh) { try { await refresh(); } catch (err) { /* shown next time */ } }
      }, 1000);
    });
  }

  window.addEventListener("popstate", route);
  route();
  listen();
})();
