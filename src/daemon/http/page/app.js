// The live page of deadbeat's control server: the trains as boxes of cogs, the edges
// between trains, and every cog's rate and counters from /status, once a second.
// Every value from the daemon is written with textContent or as an attribute value,
// never parsed as markup.
"use strict";

(function () {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 2500;
  const HISTORY = 60; // sparkline points: the last minute
  const ERROR_MEMORY_MS = 60000; // how long a cog stays red after its last error
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  // Numbers --------------------------------------------------------------------------

  const num = (x) => (typeof x === "number" && isFinite(x) ? x : 0);

  // Three significant digits with a k/M/G suffix: 0, 0.04, 0.4, 12.3, 987, 1.23k, 45.6M.
  function si(x) {
    x = num(x);
    if (x === 0) return "0";
    const units = ["", "k", "M", "G", "T"];
    let i = 0;
    while (Math.abs(x) >= 999.5 && i < units.length - 1) {
      x /= 1000;
      i++;
    }
    const a = Math.abs(x);
    let digits;
    if (i === 0) digits = a >= 100 || Number.isInteger(x) ? 0 : a < 0.1 ? 2 : 1;
    else digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
    return x.toFixed(digits) + units[i];
  }

  // A count grouped by thousands with thin spaces below `limit`, then SI.
  function count(n, limit) {
    n = num(n);
    if (n < (limit || 1e6)) return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009");
    return si(n);
  }

  function duration(s) {
    s = Math.max(0, Math.floor(num(s)));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    const two = (v) => (v < 10 ? "0" : "") + v;
    const hms = (h > 0 || d > 0 ? two(h) + ":" : "") + two(m) + ":" + two(sec);
    return d > 0 ? d + "d " + hms : hms;
  }

  function clock(t) {
    const two = (v) => (v < 10 ? "0" : "") + v;
    return two(t.getHours()) + ":" + two(t.getMinutes()) + ":" + two(t.getSeconds());
  }

  function setText(e, text) {
    if (e.textContent !== text) e.textContent = text;
  }

  // State ----------------------------------------------------------------------------

  let graph = null; // /graph: kinds of cogs and edges between trains
  let shape = ""; // the trains and cogs the page is built for
  let views = []; // per train: { section, flow, err, pill, cogs: [view] }
  let lastOk = null;
  let lastBusy = null; // { at, busy: [[...]] } for utilisation between polls

  async function get(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const r = await fetch(path, { cache: "no-store", signal: ctl.signal });
      if (!r.ok) throw new Error("HTTP " + r.status);
      return await r.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // A cog's role, from the graph of the configuration (matched by names: the running
  // trains also hold an `inbox` where other trains' records arrive).
  function kindOf(t, tname, cog) {
    const trains = (graph && Array.isArray(graph.trains)) ? graph.trains : [];
    const gt = trains[t] && trains[t].name === tname ? trains[t] : trains.find((x) => x && x.name === tname);
    const gc = gt && Array.isArray(gt.cogs) ? gt.cogs.find((x) => x && x.name === cog.name) : null;
    if (gc) return ["supply", "transform", "drain"].includes(gc.kind) ? gc.kind : "unknown";
    if (cog.type === "inbox") return "inbox";
    return cog.supply ? "supply" : "transform";
  }

  // The headline rate: what a supply or an inbox emits, what any other cog takes in.
  function headline(cog, kind) {
    return kind === "supply" || kind === "inbox" || cog.supply ? num(cog.rate_out) : num(cog.rate_in);
  }

  // The fullest of the cog's buffers.
  function bufferOf(cog) {
    if (Array.isArray(cog.buffers)) {
      let best = null;
      for (const x of cog.buffers) {
        if (x && typeof x.fill === "number" && num(x.limit) > 0 &&
            (!best || x.fill / x.limit > best.fill / best.limit)) {
          best = { fill: x.fill, limit: x.limit };
        }
      }
      if (best) return best;
    }
    const b = cog.buffer;
    if (b && typeof b === "object" && typeof b.fill === "number" && num(b.limit) > 0) {
      return { fill: b.fill, limit: b.limit };
    }
    if (typeof cog.buffer_fill === "number" && num(cog.buffer_limit) > 0) {
      return { fill: cog.buffer_fill, limit: cog.buffer_limit };
    }
    return null;
  }

  // Building -------------------------------------------------------------------------

  function stat(dl, label) {
    dl.appendChild(el("dt", null, label));
    const dd = el("dd", "zero", "0");
    dl.appendChild(dd);
    return dd;
  }

  const ROLE = { inbox: "from trains", unknown: "type not known" };

  function buildCog(t, train, cog) {
    const kind = kindOf(t, train.name, cog);
    const box = el("div", "cog " + kind);
    box.dataset.train = train.name;
    box.dataset.cog = cog.name;
    box.dataset.kind = kind;

    const head = el("div", "head");
    const name = el("span", "cname", cog.name);
    name.title = cog.name;
    head.appendChild(name);
    const pill = el("span", "pill");
    pill.hidden = true;
    head.appendChild(pill);
    box.appendChild(head);

    const base = String(cog.name).replace(/#\d+$/, "");
    const role = ROLE[kind] || kind;
    const meta = el("div", "ctype");
    // A cog named by its type shows its role; one with a name of its own, its type (its
    // role is its colour).
    const shown = base === cog.type ? role : String(cog.type);
    const label = el("span", "role", shown);
    label.title = cog.type + " \u00b7 " + role;
    meta.appendChild(label);
    const busy = el("span", "busy", "");
    busy.title = "share of the time spent in this cog";
    meta.appendChild(busy);
    box.appendChild(meta);

    // The rate over a sparkline of the last minute's rates.
    const rate = el("div", "rate idle");
    const n = el("span", "n", "0");
    rate.appendChild(n);
    rate.appendChild(el("span", "u", "/s"));
    const spark = svg("svg", { class: "spark", viewBox: "0 0 100 26", preserveAspectRatio: "none" });
    const area = svg("path", { class: "area", d: "" });
    const stroke = svg("path", { class: "stroke", d: "" });
    spark.appendChild(svg("line", { class: "base", x1: 0, y1: 25.5, x2: 100, y2: 25.5 }));
    spark.appendChild(area);
    spark.appendChild(stroke);
    rate.appendChild(spark);
    box.appendChild(rate);

    const dl = el("dl");
    const dIn = stat(dl, "in");
    const dOut = stat(dl, "out");
    const dDropped = stat(dl, "drop");
    const dErrors = stat(dl, "err");
    box.appendChild(dl);

    let buffer = null;
    if (bufferOf(cog)) {
      buffer = el("div", "buffer");
      buffer.appendChild(el("i"));
      box.appendChild(buffer);
    }

    return {
      box, kind, pill, rate, n, busy, area, stroke, buffer,
      dIn, dOut, dDropped, dErrors, history: [], errors: null, errorAt: -Infinity,
    };
  }

  function build(status) {
    const root = $("trains");
    root.replaceChildren();
    views = [];
    const trains = status.trains || [];
    if (trains.length === 0) root.appendChild(el("div", "empty", "no trains"));
    trains.forEach((train, t) => {
      const section = el("section", "train");
      section.dataset.train = train.name;
      const header = el("header");
      header.appendChild(el("span", "tname", train.name));
      const pill = el("span", "pill");
      pill.hidden = true;
      header.appendChild(pill);
      const flow = el("span", "tflow");
      header.appendChild(flow);
      const err = el("span", "terr");
      header.appendChild(err);
      section.appendChild(header);
      const row = el("div", "cogs");
      const cogs = (train.cogs || []).map((cog) => {
        const v = buildCog(t, train, cog);
        row.appendChild(v.box);
        return v;
      });
      section.appendChild(row);
      root.appendChild(section);
      views.push({ section, pill, flow, err, cogs });
    });
    layout();
  }

  // Edges ----------------------------------------------------------------------------

  // One width for every cog box, as wide as lets the longest train fit on one row: a
  // narrower, compact box (no sparkline, counters in a column) before wrapping a train.
  // The space below each train leaves room for the edges that leave it.
  function layout() {
    const most = Math.max(1, ...views.map((v) => v.cogs.length));
    const room = $("trains").clientWidth - 34; // a train's padding and borders
    const fit = Math.floor((room - (most - 1) * 26) / most);
    const compact = fit < 150 && fit >= 112;
    const w = compact ? fit : Math.max(150, Math.min(220, fit));
    const root = document.documentElement.style;
    root.setProperty("--cog-w", w + "px");
    document.body.classList.toggle("compact", compact);
    const leaving = new Map();
    if (graph && Array.isArray(graph.edges)) {
      for (const e of graph.edges) leaving.set(e.from, (leaving.get(e.from) || 0) + 1);
    }
    views.forEach((v, t) => {
      const extra = Math.max(0, 22 + (leaving.get(t) || 0) * 7 - 34);
      v.section.style.marginBottom = extra + "px";
    });
    drawEdges();
  }

  // An edge leaves the sending cog downwards, runs left in the gap below its train, down
  // or up beside the receiving train, and enters it at its first cog (its inbox).
  function drawEdges() {
    const layer = $("edges");
    layer.replaceChildren();
    if (!graph || !Array.isArray(graph.edges) || views.length === 0) return;
    const board = $("board").getBoundingClientRect();
    const r = 7;
    const edges = graph.edges
      .map((e) => {
        const from = views[e.from];
        const to = views[e.to];
        if (!from || !to || !from.cogs[e.cog] || !to.cogs[0]) return null;
        return { e, from, to, a: from.cogs[e.cog].box.getBoundingClientRect() };
      })
      .filter((x) => x !== null)
      .sort((p, q) => p.e.from - q.e.from || p.a.left - q.a.left);
    const out = new Map(); // edges leaving each train, spread down its gap left to right
    const into = new Map(); // edges entering each train, spread along its inbox
    edges.forEach(({ e, from, to, a }, i) => {
      const kind = ["route", "tee", "error", "other"].includes(e.kind) ? e.kind : "other";
      const fromBox = from.section.getBoundingClientRect();
      const b = to.cogs[0].box.getBoundingClientRect();
      const ko = out.get(e.from) || 0;
      out.set(e.from, ko + 1);
      const ki = into.get(e.to) || 0;
      into.set(e.to, ki + 1);
      const x1 = a.left + a.width / 2 - board.left;
      const y1 = a.bottom - board.top;
      const yGap = fromBox.bottom - board.top + 12 + ko * 7;
      const x2 = b.left - board.left - 1;
      const y2 = b.top - board.top + b.height / 2 - 10 + ki * 10;
      const gx = Math.max(6, x2 - 34 - (i % 4) * 8);
      const dir = y2 > yGap ? 1 : -1;
      const d = [
        "M", x1, y1,
        "L", x1, yGap - r,
        "Q", x1, yGap, x1 - r, yGap,
        "L", gx + r, yGap,
        "Q", gx, yGap, gx, yGap + dir * r,
        "L", gx, y2 - dir * r,
        "Q", gx, y2, gx + r, y2,
        "L", x2 - 6, y2,
      ].join(" ");
      const path = svg("path", { class: kind, d });
      path.dataset.from = String(e.from);
      path.dataset.to = String(e.to);
      layer.appendChild(path);
      layer.appendChild(svg("path", {
        class: "head " + kind,
        d: "M " + (x2 - 8) + " " + (y2 - 4) + " L " + x2 + " " + y2 + " L " + (x2 - 8) + " " + (y2 + 4) + " Z",
      }));
      if (e.label) {
        const text = svg("text", { x: x1 + 7, y: yGap - 3 });
        text.textContent = String(e.label);
        layer.appendChild(text);
        const box = text.getBBox();
        layer.insertBefore(svg("rect", {
          class: "label", x: box.x - 3, y: box.y, width: box.width + 6, height: box.height, rx: 2,
        }), text);
      }
    });
  }

  // Updating -------------------------------------------------------------------------

  function sparkPath(history) {
    if (history.length < 3) return ["", ""];
    const max = Math.max(1, ...history) * 1.15;
    const step = 100 / (HISTORY - 1);
    const x0 = 100 - (history.length - 1) * step;
    const pts = history.map((v, i) => [x0 + i * step, 25 - (v / max) * 21]);
    const line = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(2) + " " + p[1].toFixed(2)).join(" ");
    const area = line + " L100 26 L" + x0.toFixed(2) + " 26 Z";
    return [line, area];
  }

  function setCount(dd, n, bad) {
    setText(dd, count(n, 1e4));
    const exact = count(n, Infinity);
    if (dd.title !== exact) dd.title = exact;
    dd.className = n > 0 ? (bad ? "bad" : "") : "zero";
  }

  function updateCog(v, cog, busyShare, now) {
    const rate = headline(cog, v.kind);
    setText(v.n, si(rate));
    v.rate.classList.toggle("idle", rate === 0);
    v.box.dataset.rate = rate.toFixed(3);
    let busy = "";
    if (busyShare !== null) {
      const pct = busyShare * 100;
      busy = "busy " + (pct === 0 ? "0" : pct < 0.1 ? "<0.1" : pct.toFixed(pct < 10 ? 1 : 0)) + "%";
    }
    setText(v.busy, busy);

    v.history.push(rate);
    if (v.history.length > HISTORY) v.history.shift();
    const [line, area] = sparkPath(v.history);
    v.stroke.setAttribute("d", line);
    v.area.setAttribute("d", area);

    setCount(v.dIn, num(cog.in), false);
    setCount(v.dOut, num(cog.out), false);
    setCount(v.dDropped, num(cog.dropped), false);
    setCount(v.dErrors, num(cog.errors), true);

    // A cog is red while it failed on records within the last minute (errors seen at the
    // first look count as recent), and glows in the second its errors grew; its count
    // stays red.
    const errors = num(cog.errors);
    const grew = v.errors !== null && errors > v.errors;
    if (grew || (v.errors === null && errors > 0)) v.errorAt = now;
    const recent = now - v.errorAt < ERROR_MEMORY_MS;
    v.box.classList.toggle("has-errors", recent);
    v.box.classList.toggle("new-errors", grew);
    v.errors = errors;

    const state = cog.held ? "held" : cog.state && cog.state !== "running" ? String(cog.state) : "";
    setText(v.pill, state);
    v.pill.hidden = state === "";
    v.pill.className = "pill " + state;
    for (const s of ["held", "paused", "finishing", "finished"]) v.box.classList.toggle(s, s === state);

    if (v.buffer) {
      const b = bufferOf(cog);
      const share = b ? Math.min(1, num(b.fill) / b.limit) : 0;
      v.buffer.firstChild.style.width = (share * 100).toFixed(1) + "%";
      v.buffer.classList.toggle("full", share >= 0.9);
      v.buffer.title = b ? "buffer " + count(b.fill) + " of " + count(b.limit) : "";
    }
    return recent;
  }

  function update(status) {
    const trains = status.trains || [];
    const now = performance.now();
    const busyNow = trains.map((t) => (t.cogs || []).map((c) => num(c.busy_s)));
    const dt = lastBusy ? (now - lastBusy.at) / 1000 : 0;

    let totalIn = 0;
    let totalOut = 0;
    let totalErrors = 0;
    trains.forEach((train, t) => {
      const view = views[t];
      if (!view) return;
      let tin = 0;
      let tout = 0;
      let terr = 0;
      let recent = false;
      (train.cogs || []).forEach((cog, c) => {
        const v = view.cogs[c];
        if (!v) return;
        let share = null;
        if (dt > 0.2 && lastBusy && lastBusy.busy[t] && lastBusy.busy[t][c] !== undefined) {
          share = Math.max(0, Math.min(1, (busyNow[t][c] - lastBusy.busy[t][c]) / dt));
        }
        if (updateCog(v, cog, share, now)) recent = true;
        if (v.kind === "supply" || v.kind === "inbox") tin += num(cog.rate_out);
        if (v.kind === "supply") totalIn += num(cog.rate_out);
        if (v.kind === "drain") tout += num(cog.rate_in);
        terr += num(cog.errors);
      });
      totalOut += tout;
      totalErrors += terr;
      view.flow.replaceChildren(
        document.createTextNode("in "), el("b", null, si(tin)),
        document.createTextNode("/s \u2192 out "), el("b", null, si(tout)),
        document.createTextNode("/s"),
      );
      setText(view.err, terr > 0 ? count(terr) + " errors" : "");
      view.section.classList.toggle("has-errors", recent);
      const state = train.state && train.state !== "running" ? String(train.state) : "";
      setText(view.pill, state);
      view.pill.hidden = state === "";
      view.pill.className = "pill " + state;
    });
    lastBusy = { at: now, busy: busyNow };

    setText($("total-in"), si(totalIn) + "/s");
    setText($("total-out"), si(totalOut) + "/s");
    setText($("total-errors"), count(totalErrors));
    $("total-errors").classList.toggle("bad", totalErrors > 0);
    setText($("uptime"), duration(status.uptime_s));
    setText($("version"), status.version ? "v" + status.version : "");
    setText($("config"), status.config ? String(status.config) : "");
    setText($("pid"), status.pid ? "pid " + status.pid : "");
    $("pid-sep").hidden = !(status.config && status.pid);
    document.title = "deadbeat \u00b7 " + si(totalIn) + "/s" + (totalErrors > 0 ? " \u00b7 " + count(totalErrors) + " errors" : "");
  }

  function link(state, text) {
    const l = $("link");
    if (l.dataset.state !== state) l.dataset.state = state;
    setText($("link-text"), text);
    document.body.classList.toggle("stale", state === "down");
  }

  // The loop -------------------------------------------------------------------------

  async function poll() {
    try {
      const status = await get("status");
      const now = JSON.stringify((status.trains || []).map((t) => [t.name, (t.cogs || []).map((c) => c.name)]));
      if (now !== shape) {
        try {
          graph = await get("graph");
        } catch (e) {
          graph = null; // drawn without edges; tried again when the shape changes
        }
        shape = now;
        build(status);
      }
      update(status);
      lastOk = new Date();
      link("live", "live \u00b7 " + clock(lastOk));
    } catch (e) {
      link("down", lastOk ? "no answer since " + clock(lastOk) + " \u00b7 retrying" : "no answer \u00b7 retrying");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(layout, 100);
  });

  poll();
})();
