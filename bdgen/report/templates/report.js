/* bdgen comparison report: sortable tables, a method filter, collapsible groups and SVG
 * plots. Every value shown comes from the JSON block "bdgen-data" or from the table cells
 * that Python printed; this script only arranges them. No network, no libraries. */
(function () {
  "use strict";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var dataEl = document.getElementById("bdgen-data");
  var data = dataEl ? JSON.parse(dataEl.textContent) : null;
  var visible = [];  // visible[i]: method i passes the filter
  var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});

  // --- tables: sorting ------------------------------------------------------------------
  // First click on a header: best first (descending when higher is better, otherwise
  // ascending); each further click reverses. Missing cells ("--") always go last; ties keep
  // the current order.
  function sortKey(td, kind) {
    if (!td) return null;
    if (kind === "num") {
      var v = td.getAttribute("data-v");
      return v === null ? null : parseFloat(v);
    }
    var t = td.textContent.trim();
    return t === "--" ? null : t;
  }

  function sortBy(th) {
    var table = th.closest("table");
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var kind = th.getAttribute("data-kind");
    var prev = th.getAttribute("aria-sort");
    var desc = prev ? prev === "ascending" : th.getAttribute("data-dir") === "higher";
    table.querySelectorAll("th[aria-sort]").forEach(function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", desc ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (tr, i) {
      return {tr: tr, i: i, k: sortKey(tr.cells[col], kind)};
    });
    rows.sort(function (a, b) {
      if (a.k === null || b.k === null) {
        return (a.k === null) - (b.k === null) || a.i - b.i;
      }
      var c = kind === "num" ? a.k - b.k : collator.compare(a.k, b.k);
      return (desc ? -c : c) || a.i - b.i;
    });
    rows.forEach(function (r) { body.appendChild(r.tr); });
  }

  document.querySelectorAll("th[data-kind]").forEach(function (th) {
    var dir = th.getAttribute("data-dir");
    var hint = dir === "higher" ? "higher is better" : dir === "lower" ? "lower is better" : "";
    th.title = (th.title ? th.title + "\n" : "") + "Click to sort" +
      (hint ? " (" + hint + "; best first)" : "") + ".";
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });

  // --- filter ---------------------------------------------------------------------------
  // Terms separated by spaces, all must hold: a substring of the method label, or
  // field=value[,value...] on the method's fields; a leading "!" negates a term.
  var methods = data ? data.methods : [];
  var knownFields = {};
  methods.forEach(function (m) {
    Object.keys(m.fields).forEach(function (k) { knownFields[k] = true; });
  });

  function parseFilter(text) {
    var terms = [], errors = [];
    text.trim().split(/\s+/).filter(Boolean).forEach(function (raw) {
      var neg = raw.charAt(0) === "!";
      var body = neg ? raw.slice(1) : raw;
      if (!body) return;
      var eq = body.indexOf("=");
      if (eq > 0) {
        var key = body.slice(0, eq);
        if (!knownFields[key]) {
          errors.push("unknown field '" + key + "' (known: " +
                      Object.keys(knownFields).sort().join(", ") + ")");
          return;
        }
        terms.push({neg: neg, key: key, values: body.slice(eq + 1).split(",")});
      } else {
        terms.push({neg: neg, sub: body.toLowerCase()});
      }
    });
    return {terms: terms, errors: errors};
  }

  function sameValue(have, want) {
    if (have === undefined || have === null) return false;
    var a = Number(have), b = Number(want);
    if (typeof have !== "boolean" && want.trim() !== "" && !isNaN(a) && !isNaN(b)) {
      return a === b;
    }
    return String(have).toLowerCase() === want.toLowerCase();
  }

  function passes(m, terms) {
    return terms.every(function (t) {
      var hit = t.sub !== undefined ? m.label.toLowerCase().indexOf(t.sub) >= 0
        : t.values.some(function (v) { return sameValue(m.fields[t.key], v); });
      return t.neg ? !hit : hit;
    });
  }

  var filterBox = document.getElementById("filter");
  var statusEl = document.getElementById("filter-status");

  function applyFilter() {
    var parsed = parseFilter(filterBox ? filterBox.value : "");
    visible = methods.map(function (m) { return passes(m, parsed.terms); });
    document.querySelectorAll("[data-m]").forEach(function (el) {
      var i = +el.getAttribute("data-m");
      el.classList.toggle("filtered-out", visible.length > i && !visible[i]);
    });
    var shown = visible.filter(Boolean).length;
    if (statusEl) {
      statusEl.textContent = parsed.errors.length ? parsed.errors.join("; ")
        : shown + " of " + methods.length + " methods shown";
      statusEl.classList.toggle("error", parsed.errors.length > 0);
    }
    if (filterBox) filterBox.classList.toggle("invalid", parsed.errors.length > 0);
    drawPlots();
  }

  // --- groups and diagnostic columns ----------------------------------------------------
  function setAllGroups(open) {
    document.querySelectorAll("details.group").forEach(function (d) { d.open = open; });
  }
  function bind(id, event, fn) {
    var el = document.getElementById(id);
    if (el) el.addEventListener(event, fn);
    return el;
  }
  bind("expand-all", "click", function () { setAllGroups(true); });
  bind("collapse-all", "click", function () { setAllGroups(false); });
  var diag = bind("show-diag", "change", function () {
    document.body.classList.toggle("hide-diag", !diag.checked);
  });
  if (filterBox) filterBox.addEventListener("input", applyFilter);

  // --- SVG helpers ----------------------------------------------------------------------
  function el(tag, attrs, parent, text) {
    var e = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function scale(d0, d1, r0, r1) {
    var k = (r1 - r0) / ((d1 - d0) || 1);
    var f = function (v) { return r0 + (v - d0) * k; };
    f.invert = function (p) { return d0 + (p - r0) / k; };
    return f;
  }
  function svgPoint(svg, e) {
    var p = svg.createSVGPoint();
    p.x = e.clientX;
    p.y = e.clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }
  function niceStep(span, count) {
    var raw = span / count, step = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / step;
    return step * (f >= 7.5 ? 10 : f >= 3.5 ? 5 : f >= 1.5 ? 2 : 1);
  }
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return {values: [lo], step: 1};
    var step = niceStep(hi - lo, count), out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(+v.toPrecision(12));
    }
    return {values: out, step: step};
  }
  function tickText(v, step, pct) {
    var s = pct ? step * 100 : step;
    var digits = Math.max(0, Math.min(8, -Math.floor(Math.log10(s) + 1e-9)));
    return pct ? (v * 100).toFixed(digits) + "%" : v.toFixed(digits);
  }
  function extent(items, pad) {
    var lo = Infinity, hi = -Infinity;
    items.forEach(function (a) {
      lo = Math.min(lo, a.mean - a.std);
      hi = Math.max(hi, a.mean + a.std);
    });
    var p = (hi - lo) * pad || Math.abs(hi) * 0.05 || 0.01;
    return [lo - p, hi + p];
  }
  function axisTitle(name) {
    var m = data.metrics[name];
    var hint = m.dir === "higher" ? " (higher is better)"
      : m.dir === "lower" ? " (lower is better)" : "";
    return m.label + hint;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function visibleIdx() {
    return methods.map(function (_, i) { return i; }).filter(function (i) {
      return visible[i];
    });
  }
  function fillSelect(sel, names, chosen) {
    var groups = {};
    names.forEach(function (n) {
      var g = data.metrics[n].group;
      if (!groups[g]) {
        groups[g] = document.createElement("optgroup");
        groups[g].label = g;
        sel.appendChild(groups[g]);
      }
      var o = document.createElement("option");
      o.value = n;
      o.textContent = data.metrics[n].label;
      groups[g].appendChild(o);
    });
    sel.value = chosen;
  }
  function xAxis(svg, x, t, y0, y1, pct) {
    var g = el("g", {"class": "axis"}, svg);
    t.values.forEach(function (v) {
      el("line", {x1: x(v), x2: x(v), y1: y0, y2: y1, "class": "gridline"}, g);
      el("text", {x: x(v), y: y1 + 14, "text-anchor": "middle", "class": "tick"}, g,
         tickText(v, t.step, pct));
    });
    el("line", {x1: x(t.values[0]), x2: x(t.values[t.values.length - 1]), y1: y1, y2: y1}, g);
  }

  // --- Pareto view ----------------------------------------------------------------------
  // The front: points that no other shown point dominates, each axis toward its better
  // direction (the same rule as bdgen.report.html.pareto_front).
  function paretoFront(points, maxX, maxY) {
    var sx = maxX ? 1 : -1, sy = maxY ? 1 : -1;
    return points.map(function (p, i) {
      var x = sx * p[0], y = sy * p[1];
      return !points.some(function (q, j) {
        var x2 = sx * q[0], y2 = sy * q[1];
        return j !== i && x2 >= x && y2 >= y && (x2 > x || y2 > y);
      });
    });
  }

  var paretoX = document.getElementById("pareto-x");
  var paretoY = document.getElementById("pareto-y");
  var paretoZoom = null;  // {x: [lo, hi], y: [lo, hi]} after a drag, null: everything

  // Drag a rectangle to zoom into it; double-click to see every point again.
  function zoomable(svg, x, y, box) {
    var start = null, band = null;
    svg.addEventListener("mousedown", function (e) {
      if (e.button !== 0) return;
      e.preventDefault();
      start = svgPoint(svg, e);
      band = el("rect", {"class": "zoom-band", x: start.x, y: start.y, width: 0, height: 0},
                svg);
    });
    svg.addEventListener("mousemove", function (e) {
      if (!start) return;
      var p = svgPoint(svg, e);
      band.setAttribute("x", Math.min(p.x, start.x));
      band.setAttribute("y", Math.min(p.y, start.y));
      band.setAttribute("width", Math.abs(p.x - start.x));
      band.setAttribute("height", Math.abs(p.y - start.y));
    });
    function finish(e) {
      if (!start) return;
      var p = svgPoint(svg, e), a = start;
      start = null;
      band.remove();
      var x0 = Math.max(box[0], Math.min(a.x, p.x)), x1 = Math.min(box[1], Math.max(a.x, p.x));
      var y0 = Math.max(box[2], Math.min(a.y, p.y)), y1 = Math.min(box[3], Math.max(a.y, p.y));
      if (x1 - x0 < 6 || y1 - y0 < 6) return;
      paretoZoom = {x: [x.invert(x0), x.invert(x1)], y: [y.invert(y1), y.invert(y0)]};
      drawPareto();
    }
    svg.addEventListener("mouseup", finish);
    svg.addEventListener("mouseleave", finish);
    svg.addEventListener("dblclick", function () {
      if (paretoZoom) { paretoZoom = null; drawPareto(); }
    });
  }

  function drawPareto() {
    var fig = document.getElementById("fig-pareto");
    if (!fig || !paretoX || !paretoX.value || !paretoY.value) return;
    var canvas = fig.querySelector(".canvas"), cap = fig.querySelector("figcaption");
    clear(canvas);
    var xn = paretoX.value, yn = paretoY.value, mx = data.metrics[xn], my = data.metrics[yn];
    var pts = visibleIdx().filter(function (i) {
      return data.values[xn][i] && data.values[yn][i];
    }).map(function (i) { return {i: i, x: data.values[xn][i], y: data.values[yn][i]}; });
    var W = 1100, H = 580, L = 80, R = 30, T = 20, B = 50;
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H,
                         "data-plot": "pareto", role: "img"}, canvas);
    if (!pts.length) {
      el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", "class": "missing"}, svg,
         "no shown method has both metrics");
      cap.textContent = "";
      return;
    }
    var ex = paretoZoom ? paretoZoom.x : extent(pts.map(function (p) { return p.x; }), 0.06);
    var ey = paretoZoom ? paretoZoom.y : extent(pts.map(function (p) { return p.y; }), 0.06);
    var x = scale(ex[0], ex[1], L, W - R), y = scale(ey[0], ey[1], H - B, T);
    var tx = ticks(ex[0], ex[1], 8), ty = ticks(ey[0], ey[1], 7);
    xAxis(svg, x, tx, T, H - B, mx.pct);
    var gy = el("g", {"class": "axis"}, svg);
    ty.values.forEach(function (v) {
      el("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), "class": "gridline"}, gy);
      el("text", {x: L - 6, y: y(v) + 3, "text-anchor": "end", "class": "tick"}, gy,
         tickText(v, ty.step, my.pct));
    });
    el("line", {x1: L, x2: L, y1: T, y2: H - B}, gy);
    el("text", {x: (L + W - R) / 2, y: H - 12, "text-anchor": "middle",
                "class": "axis-title"}, svg, axisTitle(xn));
    el("text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "class": "axis-title",
                transform: "rotate(-90 14 " + (T + H - B) / 2 + ")"}, svg, axisTitle(yn));
    var clip = el("clipPath", {id: "pareto-clip"}, el("defs", {}, svg));
    el("rect", {x: L, y: T, width: W - L - R, height: H - T - B}, clip);
    var area = el("g", {"clip-path": "url(#pareto-clip)"}, svg);
    var onFront = paretoFront(pts.map(function (p) { return [p.x.mean, p.y.mean]; }),
                              mx.dir !== "lower", my.dir !== "lower");
    var front = pts.filter(function (_, k) { return onFront[k]; });
    front.sort(function (a, b) { return a.x.mean - b.x.mean || a.y.mean - b.y.mean; });
    el("polyline", {"class": "front-line", points: front.map(function (p) {
      return x(p.x.mean) + "," + y(p.y.mean);
    }).join(" ")}, area);
    pts.forEach(function (p, k) {
      var g = el("g", {"class": "point", "data-m": p.i}, area);
      var cx = x(p.x.mean), cy = y(p.y.mean);
      el("line", {"class": "err", x1: x(p.x.mean - p.x.std), x2: x(p.x.mean + p.x.std),
                  y1: cy, y2: cy}, g);
      el("line", {"class": "err", x1: cx, x2: cx, y1: y(p.y.mean - p.y.std),
                  y2: y(p.y.mean + p.y.std)}, g);
      var c = el("circle", {"class": onFront[k] ? "pt front" : "pt", cx: cx, cy: cy,
                            r: onFront[k] ? 5.5 : 4, "data-m": p.i}, g);
      el("title", {}, c, methods[p.i].label + "\n" + mx.label + ": " + p.x.text + "\n" +
         my.label + ": " + p.y.text + (onFront[k] ? "\non the Pareto front" : ""));
    });
    front.forEach(function (p, k) {
      var px = x(p.x.mean), right = px > L + (W - L - R) * 0.6;
      el("text", {"class": "pt-label", x: px + (right ? -8 : 8),
                  y: y(p.y.mean) + (k % 2 ? 13 : -7), "text-anchor": right ? "end" : "start"},
         area, methods[p.i].label);
    });
    zoomable(svg, x, y, [L, W - R, T, H - B]);
    cap.textContent = my.label + " vs " + mx.label + " for the " + pts.length +
      " shown methods; error bars: population std over seeds. Pareto front (red, dashed): " +
      front.length + " methods that no other shown method beats on both axes: " +
      front.map(function (p) { return methods[p.i].label; }).join(", ") + ". " +
      (paretoZoom ? "Zoomed in: double-click the plot to see every point."
        : "Drag a rectangle over the plot to zoom in.");
  }

  // --- per-metric bars ------------------------------------------------------------------
  var barsSorted = document.getElementById("bars-sorted");

  function drawBar(panel) {
    var name = panel.querySelector("select").value, m = data.metrics[name];
    var holder = panel.querySelector(".chart");
    clear(holder);
    var vals = data.values[name];
    var idx = visibleIdx();
    if (barsSorted && barsSorted.checked) {
      var sgn = m.dir === "higher" ? -1 : 1;
      idx.sort(function (a, b) {
        if (!vals[a] || !vals[b]) return !vals[a] - !vals[b];
        return sgn * (vals[a].mean - vals[b].mean) || a - b;
      });
    }
    var longest = idx.reduce(function (n, i) {
      return Math.max(n, methods[i].label.length);
    }, 4);
    var L = Math.min(300, 12 + longest * 5.6), W = 640, R = 16, T = 26, rowH = 17, B = 28;
    var H = T + rowH * Math.max(1, idx.length) + B;
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H,
                         "data-plot": "bars", "data-metric": name, role: "img"}, holder);
    el("text", {x: W / 2, y: 14, "text-anchor": "middle", "class": "axis-title"}, svg,
       axisTitle(name));
    var present = idx.filter(function (i) { return vals[i]; });
    if (!present.length) {
      el("text", {x: W / 2, y: T + 14, "text-anchor": "middle", "class": "missing"}, svg,
         "no shown method has this metric");
      return;
    }
    // Axis as the tables' spread needs it: from just below the lowest mean - std (kept at
    // 0 for positive metrics) to just above the highest mean + std.
    var lo = Infinity, hi = -Infinity;
    present.forEach(function (i) {
      lo = Math.min(lo, vals[i].mean - vals[i].std);
      hi = Math.max(hi, vals[i].mean + vals[i].std);
    });
    var pad = (hi - lo) * 0.1 || 0.01;
    var d0 = lo > 0 ? Math.max(0, lo - pad) : lo - pad, d1 = hi + pad;
    var x = scale(d0, d1, L, W - R), base = Math.min(Math.max(0, d0), d1);
    xAxis(svg, x, ticks(d0, d1, 6), T - 2, T + rowH * idx.length + 2, m.pct);
    var means = present.map(function (i) { return vals[i].mean; });
    var best = m.dir === "higher" ? Math.max.apply(null, means)
      : m.dir === "lower" ? Math.min.apply(null, means) : null;
    idx.forEach(function (i, r) {
      var yc = T + rowH * r + rowH / 2, a = vals[i];
      var g = el("g", {"class": "bar-row", "data-m": i}, svg);
      el("text", {"class": "bar-label", x: L - 6, y: yc + 3, "text-anchor": "end"}, g,
         methods[i].label);
      if (!a) {
        el("text", {"class": "missing", x: L + 4, y: yc + 3}, g, "--");
        return;
      }
      var x0 = x(Math.min(base, a.mean)), x1 = x(Math.max(base, a.mean));
      var rect = el("rect", {"class": a.mean === best ? "bar best" : "bar", x: x0,
                             y: yc - rowH * 0.36, width: Math.max(0.5, x1 - x0),
                             height: rowH * 0.72, "data-m": i}, g);
      el("title", {}, rect, methods[i].label + "\n" + m.label + ": " + a.text + " (" +
         a.n + " seed" + (a.n === 1 ? "" : "s") + ")" +
         (a.seeds.length > 1 ? "\nper seed: " + a.seeds.map(function (v) {
           return +v.toPrecision(6);
         }).join(", ") : ""));
      if (a.std > 0) {
        el("line", {"class": "err", x1: x(a.mean - a.std), x2: x(a.mean + a.std),
                    y1: yc, y2: yc}, g);
        [a.mean - a.std, a.mean + a.std].forEach(function (v) {
          el("line", {"class": "err", x1: x(v), x2: x(v), y1: yc - 3, y2: yc + 3}, g);
        });
      }
      if (a.seeds.length > 1) {
        a.seeds.forEach(function (v) {
          el("circle", {"class": "seed", cx: x(v), cy: yc, r: 1.6}, g);
        });
      }
    });
  }

  function drawBars() {
    document.querySelectorAll("#fig-bars .panel").forEach(drawBar);
  }

  // --- validity by number of rooms ------------------------------------------------------
  function color(i) { return "hsl(" + Math.round((i * 137.508) % 360) + ",62%,42%)"; }

  function highlight(i, on) {
    document.querySelectorAll("#fig-rooms .series").forEach(function (s) {
      var me = +s.getAttribute("data-m") === i;
      s.classList.toggle("hl", on && me);
      s.classList.toggle("dim", on && !me);
    });
    document.querySelectorAll("#fig-rooms .legend span").forEach(function (s) {
      s.classList.toggle("hl", on && +s.getAttribute("data-m") === i);
    });
  }

  function drawRooms() {
    var fig = document.getElementById("fig-rooms");
    if (!fig) return;
    var canvas = fig.querySelector(".canvas"), legend = fig.querySelector(".legend");
    clear(canvas);
    clear(legend);
    var xs = data.rooms.x;
    var idx = visibleIdx().filter(function (i) {
      return data.rooms.series[i].some(Boolean);
    });
    if (!xs.length || !idx.length) {
      fig.hidden = !xs.length;
      return;
    }
    var W = 1100, H = 440, L = 60, R = 20, T = 16, B = 44;
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H,
                         "data-plot": "rooms", role: "img"}, canvas);
    var all = [];
    idx.forEach(function (i) {
      data.rooms.series[i].forEach(function (a) { if (a) all.push(a); });
    });
    var ey = extent(all, 0.05);
    ey[1] = Math.min(ey[1], 1.0 + (ey[1] - ey[0]) * 0.02);
    var x = scale(xs[0] - 0.3, xs[xs.length - 1] + 0.3, L, W - R);
    var y = scale(ey[0], ey[1], H - B, T), ty = ticks(ey[0], ey[1], 7);
    var g = el("g", {"class": "axis"}, svg);
    ty.values.forEach(function (v) {
      el("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), "class": "gridline"}, g);
      el("text", {x: L - 6, y: y(v) + 3, "text-anchor": "end", "class": "tick"}, g,
         tickText(v, ty.step, true));
    });
    xs.forEach(function (v) {
      el("text", {x: x(v), y: H - B + 16, "text-anchor": "middle", "class": "tick"}, g,
         String(v));
    });
    el("line", {x1: L, x2: W - R, y1: H - B, y2: H - B}, g);
    el("text", {x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle",
                "class": "axis-title"}, svg, "number of rooms");
    el("text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "class": "axis-title",
                transform: "rotate(-90 14 " + (T + H - B) / 2 + ")"}, svg, "validity");
    // Series are dodged sideways a little so that their error bars stay apart.
    var dodge = Math.min(0.24, 0.012 * idx.length);
    idx.forEach(function (i, n) {
      var s = el("g", {"class": "series", "data-m": i}, svg);
      var pts = [], off = idx.length > 1 ? dodge * (n / (idx.length - 1) - 0.5) : 0;
      data.rooms.series[i].forEach(function (a, k) {
        if (a) pts.push([x(xs[k] + off), y(a.mean), a, xs[k]]);
      });
      var path = el("path", {"class": "line", style: "stroke:" + color(i), d: pts.map(function (p, k) {
        return (k ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1);
      }).join("")}, s);
      el("title", {}, path, methods[i].label);
      pts.forEach(function (p) {
        if (p[2].std > 0) {
          el("line", {"class": "err", style: "stroke:" + color(i), x1: p[0], x2: p[0],
                      y1: y(p[2].mean - p[2].std), y2: y(p[2].mean + p[2].std)}, s);
        }
        var c = el("circle", {"class": "pt", cx: p[0], cy: p[1], r: 2.5,
                              style: "fill:" + color(i)}, s);
        el("title", {}, c, methods[i].label + "\n" + p[3] + " rooms: " + p[2].text);
      });
      s.addEventListener("mouseenter", function () { highlight(i, true); });
      s.addEventListener("mouseleave", function () { highlight(i, false); });
      var item = document.createElement("span");
      item.setAttribute("data-m", i);
      var sw = document.createElement("i");
      sw.style.background = color(i);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(methods[i].label));
      item.addEventListener("mouseenter", function () { highlight(i, true); });
      item.addEventListener("mouseleave", function () { highlight(i, false); });
      legend.appendChild(item);
    });
  }

  function drawPlots() {
    if (!data) return;
    drawPareto();
    drawBars();
    drawRooms();
  }

  // --- set-up ---------------------------------------------------------------------------
  if (data) {
    var axes = data.pareto.axes;
    if (!paretoX || !paretoY) {
      paretoX = paretoY = null;
    } else if (data.pareto["default"].length === 2) {
      fillSelect(paretoX, axes, data.pareto["default"][0]);
      fillSelect(paretoY, axes, data.pareto["default"][1]);
      [paretoX, paretoY].forEach(function (sel) {
        sel.addEventListener("change", function () { paretoZoom = null; drawPareto(); });
      });
    } else {
      var pf = document.getElementById("fig-pareto");
      if (pf) pf.hidden = true;
    }
    var grid = document.querySelector("#fig-bars .bar-grid");
    var names = Object.keys(data.metrics);
    (grid ? data.bars : []).forEach(function (n) {
      var panel = document.createElement("div");
      panel.className = "panel";
      var sel = document.createElement("select");
      sel.setAttribute("aria-label", "metric of this panel");
      fillSelect(sel, names, n);
      sel.addEventListener("change", function () { drawBar(panel); });
      var chart = document.createElement("div");
      chart.className = "chart";
      panel.appendChild(sel);
      panel.appendChild(chart);
      grid.appendChild(panel);
    });
    if (barsSorted) barsSorted.addEventListener("change", drawBars);
  }
  applyFilter();
})();
