// The graphs on xend's pages, drawn with uPlot from the samples API (web/samples.py):
// a domain's CPU, memory, disk and network over the last hour on its page
// (#domain-graphs), and a small CPU line for each domain in the list ([data-spark]).
// uPlot is vendored beside this file: uPlot.iife.min.js and uPlot.min.css are uplot
// 1.6.32 as published (https://registry.npmjs.org/uplot/-/uplot-1.6.32.tgz), its MIT
// license in uPlot-LICENSE.txt.
//
// xend publishes no event per sample (every event goes to the durable log), so this asks
// for the samples taken since the last one it has, once a sample period, while the page
// is in view: one request for the whole list, never one a domain. Without JavaScript the
// pages show the same samples as a table and a CPU column.
"use strict";
(function () {
  const graphs = document.getElementById("domain-graphs");
  const list = document.getElementById("domain-list");
  if (typeof uPlot !== "function") return;
  if (!graphs && !(list && list.querySelector("[data-spark]"))) return;

  const MAX_POINTS = 720;  // an hour at 5 s; more if xend's first answer had more
  const SPARK_POINTS = 60;
  const exposed = window.xendGraphs = {charts: {}, sparks: new Map()};  // for tests

  // --- The API's replies, as xend writes them: SXP (the one place that reads them). ---

  function parseSxp(text) {
    const stack = [[]];
    const token = /\s*(?:(\()|(\))|'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([^\s()'"]+))/gy;
    let match;
    while (token.lastIndex < text.length && (match = token.exec(text))) {
      if (match[1]) stack.push([]);
      else if (match[2]) {
        const done = stack.pop();
        stack[stack.length - 1].push(done);
      } else {
        const quoted = match[3] ?? match[4];
        stack[stack.length - 1].push(quoted === undefined ? match[5]
          : quoted.replace(/\\(.)/g, (_, c) => ({n: "\n", t: "\t", r: "\r"})[c] ?? c));
      }
    }
    return stack[0][0];
  }

  async function fetchValue(url) {
    const reply = await fetch(url, {headers: {Accept: "application/sxp"}, cache: "no-store"});
    if (!reply.ok) throw Object.assign(new Error(`${url}: ${reply.status}`), {status: reply.status});
    return parseSxp(await reply.text());
  }

  const child = (value, name) =>
    (Array.isArray(value) && value.find((item) => Array.isArray(item) && item[0] === name)) || [name];
  const children = (value, name) =>
    Array.isArray(value) ? value.filter((item) => Array.isArray(item) && item[0] === name) : [];
  const field = (value, name) => child(value, name)[1];
  // "nan" (a rate a domain's first sample cannot tell) is a gap in the line.
  const number = (atom) => (Number.isFinite(Number(atom)) ? Number(atom) : null);
  const column = (value, name) => child(value, name).slice(1).map(number);

  // --- Drawing ---

  const style = getComputedStyle(document.documentElement);
  const colour = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  const INK = colour("--muted", "#5b6570");
  const LINE = colour("--line", "#d5dbe1");
  const FIRST = colour("--graph-1", "#1f5fa8");
  const SECOND = colour("--graph-2", "#c2600a");

  function bytes(value, suffix) {
    if (value === null || value === undefined) return "–";
    let n = value;
    for (const unit of ["B", "KiB", "MiB", "GiB"]) {
      if (Math.abs(n) < 1024 || unit === "GiB") {
        return `${unit === "B" ? n.toFixed(0) : n.toFixed(1)} ${unit}${suffix}`;
      }
      n /= 1024;
    }
  }
  const percent = (share) => (share === null || share === undefined ? "–"
    : `${(share * 100).toFixed(1)} %`);

  // Byte axes step in powers of two (8 MiB, 16 MiB...), not uPlot's decimal steps.
  const BINARY = Array.from({length: 48}, (_, k) => 2 ** k);
  const CHARTS = [
    {key: "cpu", title: "CPU", show: percent, series: [["cpu", "CPU", FIRST]]},
    {key: "memory", title: "Memory", show: (v) => bytes(v, ""), steps: BINARY,
     series: [["memory", "Memory", FIRST]]},
    {key: "disk", title: "Disk", show: (v) => bytes(v, "/s"), steps: BINARY,
     series: [["vbd_read", "Read", FIRST], ["vbd_write", "Write", SECOND]]},
    {key: "network", title: "Network", show: (v) => bytes(v, "/s"), steps: BINARY,
     series: [["vif_rx", "In", FIRST], ["vif_tx", "Out", SECOND]]},
  ];

  function axis(spec) {
    return {stroke: INK, grid: {stroke: LINE, width: 1}, ticks: {stroke: LINE, width: 1},
            values: spec ? (u, splits) => splits.map(spec.show) : undefined,
            incrs: spec && spec.steps, size: spec ? 72 : 40};
  }

  function chart(spec, box, data) {
    const options = {
      width: box.clientWidth || 300, height: 150,
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1]}},
      axes: [axis(null), axis(spec)],
      series: [{}, ...spec.series.map(([, label, stroke]) => ({
        label, stroke, width: 1.5, value: (u, v) => spec.show(v), points: {show: false}}))],
      legend: {live: true},
    };
    return new uPlot(options, data, box);
  }

  function spark(box, data) {
    return new uPlot({
      width: 96, height: 24, pxAlign: false,
      // 5 % at least: an idle domain stays near the bottom, not drawn as busy.
      scales: {x: {time: false}, y: {range: (u, min, max) => [0, Math.max(max * 1.2, 0.05)]}},
      axes: [{show: false}, {show: false}], legend: {show: false}, cursor: {show: false},
      series: [{}, {stroke: FIRST, width: 1, fill: `${FIRST}22`, points: {show: false}}],
    }, data, box);
  }

  function keep(values, limit) {
    if (values.length > limit) values.splice(0, values.length - limit);
  }

  // Asks ``step`` once a period (the samples', at least a second), none while hidden.
  function every(period, step) {
    async function run() {
      let again = true;
      if (!document.hidden) {
        try {
          again = (await step()) !== false;
        } catch (error) {
          // xend is restarting or the network is down: try again next period.
        }
      }
      if (again) setTimeout(run, Math.max(1, period()) * 1000);
    }
    run();
  }

  // --- A domain's page: four charts over its last hour. ---

  function domainPage() {
    const url = graphs.dataset.samples;
    const columns = {time: [], cpu: [], memory: [], vbd_read: [], vbd_write: [], vif_rx: [],
                     vif_tx: []};
    let since = -1;
    let interval = 5;
    let charts = null;
    let kept = MAX_POINTS;

    function draw() {
      if (!charts) {
        graphs.hidden = false;
        document.getElementById("domain-samples")?.setAttribute("hidden", "");
        charts = CHARTS.map((spec) => {
          const card = graphs.appendChild(document.createElement("figure"));
          card.className = "graph";
          card.appendChild(document.createElement("figcaption")).textContent = spec.title;
          const box = card.appendChild(document.createElement("div"));
          const made = chart(spec, box, data(spec));
          exposed.charts[spec.key] = made;
          new ResizeObserver(() => {
            if (box.clientWidth && box.clientWidth !== made.width) {
              made.setSize({width: box.clientWidth, height: made.height});
            }
          }).observe(box);
          return [spec, made];
        });
      } else {
        for (const [spec, made] of charts) made.setData(data(spec));
      }
    }

    const data = (spec) => [columns.time, ...spec.series.map(([name]) => columns[name])];

    every(() => interval, async () => {
      let history;
      try {
        history = await fetchValue(since < 0 ? url : `${url}?since=${since}`);
      } catch (error) {
        if (error.status === 404) {  // the domain is gone: its graphs end here
          graphs.appendChild(document.createElement("p")).textContent =
            "The domain is gone; its graphs stop here.";
          graphs.lastChild.className = "note";
          return false;
        }
        throw error;
      }
      interval = number(field(history, "interval")) || interval;
      const seq = number(field(history, "seq"));
      const times = column(history, "time");
      if (since < 0) kept = Math.max(kept, times.length);
      if (times.length) {
        for (const name of Object.keys(columns)) {
          columns[name].push(...(name === "time" ? times : column(history, name)));
          keep(columns[name], kept);
        }
      }
      if (seq !== null && seq >= 0) since = seq;
      draw();
      return true;
    });
  }

  // --- The list: a small CPU line in each domain's row. ---

  function listPage() {
    const sparks = exposed.sparks;  // name -> {time, cpu, box, text, chart}
    let since = -1;
    let interval = 5;

    function place(cell) {
      const name = cell.dataset.spark;
      let line = sparks.get(name);
      if (line && line.box.parentNode === cell) return;
      const text = cell.textContent.trim();
      if (!line) {
        line = {time: [], cpu: [], box: document.createElement("span"),
                text: document.createElement("span"), chart: null};
        line.box.className = "spark";
        line.text.className = "spark-value";
        sparks.set(name, line);
      }
      if (text) line.text.textContent = text;
      cell.replaceChildren(line.box, line.text);
      if (!line.chart) line.chart = spark(line.box, [line.time, line.cpu]);
    }

    const placeAll = () => list.querySelectorAll("[data-spark]").forEach(place);
    // live.js swaps the list's rows after an event: the lines move into the new rows.
    new MutationObserver(placeAll).observe(list, {childList: true, subtree: true});
    placeAll();

    every(() => interval, async () => {
      const value = await fetchValue(
        `/xend/samples/?history=1&last=${SPARK_POINTS}&since=${since}`);
      interval = number(field(value, "interval")) || interval;
      const seq = number(field(value, "seq"));
      const seen = new Set();
      for (const domain of children(value, "domain")) {
        const name = field(domain, "name");
        const line = sparks.get(name);
        seen.add(name);
        if (!line) continue;
        const history = child(domain, "history");
        const times = column(history, "time");
        const cpu = column(history, "cpu");
        // A sample taken while xend wrote the reply may be in some histories already,
        // and again in the next reply: each time is drawn once.
        const after = line.time.length ? line.time[line.time.length - 1] : -Infinity;
        times.forEach((time, k) => {
          if (time > after) {
            line.time.push(time);
            line.cpu.push(cpu[k]);
          }
        });
        keep(line.time, SPARK_POINTS);
        keep(line.cpu, SPARK_POINTS);
        line.chart.setData([line.time, line.cpu]);
        const now = number(field(child(domain, "rates"), "cpu"));
        if (now !== null) line.text.textContent = percent(now);
      }
      for (const name of sparks.keys()) {
        if (!seen.has(name) && !list.querySelector(`[data-spark="${CSS.escape(name)}"]`)) {
          sparks.delete(name);
        }
      }
      if (seq !== null && seq >= 0) since = seq;
      return true;
    });
  }

  if (graphs) domainPage();
  if (list && list.querySelector("[data-spark]")) listPage();
})();
