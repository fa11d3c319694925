// The graphs on xend's pages, drawn with uPlot from the samples API (web/samples.py):
// a domain's CPU, memory, disk and network over the last hour on its page
// (#domain-graphs), and a small CPU line for each domain in the list ([data-spark]).
// uPlot is vendored beside this file: uPlot.iife.min.js and uPlot.min.css are uplot
// 1.6.32 as published (https://registry.npmjs.org/uplot/-/uplot-1.6.32.tgz), its MIT
// license in uPlot-LICENSE.txt.
//
// The graphs follow the samples' own stream (GET /xend/samples/ as Server-Sent Events:
// one event a sample, every domain's latest; samples are not xend's events), while the
// page is in view (a domain's page asks for its domain's only): a hidden page lets its
// stream go, as a browser keeps only six connections to a host and live.js holds one.
// Each time the stream (re)opens, one GET asks for what came meanwhile: the domain's
// history since the last sample drawn, or for the list every domain's in one request,
// never one a domain. Without JavaScript the pages show the samples as a table and a
// CPU column.
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

  // Draws each time once: a sample may come both in a catch-up and on the stream.
  function append(columns, times, values) {
    const after = columns.time.length ? columns.time[columns.time.length - 1] : -Infinity;
    times.forEach((time, k) => {
      if (time === null || time <= after) return;
      columns.time.push(time);
      for (const [name, value] of Object.entries(values)) columns[name].push(value[k] ?? null);
    });
  }

  function trim(columns, limit) {
    for (const values of Object.values(columns)) {
      if (values.length > limit) values.splice(0, values.length - limit);
    }
  }

  // Follows the samples' stream at ``url`` while the page is in view. Each time it opens,
  // ``catchUp`` asks first for what was missed, and the samples that come meanwhile wait
  // for it; ``catchUp`` answering false ends the following (the domain is gone).
  function follow(url, onSample, catchUp) {
    let source = null;
    let held = null;

    function open() {
      if (source || document.hidden) return;
      const mine = source = new EventSource(url);
      mine.addEventListener("open", async () => {
        held = held || [];
        let going = true;
        try {
          going = (await catchUp()) !== false;
        } catch (error) {
          // xend is restarting: the stream's next opening catches up.
        }
        const waiting = held || [];
        held = null;
        if (!going) return close();
        if (source === mine) waiting.forEach(onSample);
      });
      mine.addEventListener("sample", (event) => {
        if (source !== mine) return;
        const value = parseSxp(event.data);
        if (held) held.push(value);
        else onSample(value);
      });
      mine.addEventListener("error", () => {
        // A broken stream is opened again by EventSource itself; a refusal (503: too many
        // streams) closes it for good: try again a little later.
        if (mine.readyState === EventSource.CLOSED && source === mine) {
          source = null;
          setTimeout(open, 10000);
        }
      });
    }

    function close() {
      if (source) source.close();
      source = null;
      held = null;
    }

    document.addEventListener("visibilitychange", () => (document.hidden ? close() : open()));
    open();
  }

  // --- A domain's page: four charts over its last hour. ---

  function domainPage() {
    const url = graphs.dataset.samples;
    const name = graphs.dataset.domain;
    const columns = {time: [], cpu: [], memory: [], vbd_read: [], vbd_write: [], vif_rx: [],
                     vif_tx: []};
    const series = Object.keys(columns).filter((key) => key !== "time");
    let since = -1;
    let kept = MAX_POINTS;
    let charts = null;

    const data = (spec) => [columns.time, ...spec.series.map(([key]) => columns[key])];

    function draw() {
      trim(columns, kept);
      if (charts) {
        for (const [spec, made] of charts) made.setData(data(spec));
        return;
      }
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
    }

    // The domain's history since the last sample drawn (all xend has, the first time).
    async function catchUp() {
      let history;
      try {
        history = await fetchValue(since < 0 ? url : `${url}?since=${since}`);
      } catch (error) {
        if (error.status !== 404) throw error;
        const note = graphs.appendChild(document.createElement("p"));
        note.className = "note";
        note.textContent = "The domain is gone; its graphs stop here.";
        return false;
      }
      const times = column(history, "time");
      if (since < 0) kept = Math.max(kept, times.length);
      append(columns, times, Object.fromEntries(series.map((key) => [key, column(history, key)])));
      since = Math.max(since, number(field(history, "seq")) ?? -1);
      draw();
      return true;
    }

    // One sample of this domain (the stream carries no other): its rates and memory.
    function onSample(value) {
      const mine = children(value, "domain").find((domain) => field(domain, "name") === name);
      if (!mine) {
        catchUp().catch(() => {});  // gone, or renamed: its history's URL tells
        return;
      }
      const rates = child(mine, "rates");
      const point = Object.fromEntries(series.map((key) => [key, [number(field(
        key === "memory" ? mine : rates, key))]]));
      append(columns, [number(field(value, "time"))], point);
      since = Math.max(since, number(field(value, "seq")) ?? -1);
      draw();
    }

    follow(`/xend/samples/?domain=${encodeURIComponent(name)}`, onSample, catchUp);
  }

  // --- The list: a small CPU line in each domain's row. ---

  function listPage() {
    const sparks = exposed.sparks;  // name -> {columns: {time, cpu}, box, text, chart}
    let since = -1;

    function place(cell) {
      const name = cell.dataset.spark;
      let line = sparks.get(name);
      if (line && line.box.parentNode === cell) return;
      const text = cell.textContent.trim();
      if (!line) {
        line = {columns: {time: [], cpu: []}, box: document.createElement("span"),
                text: document.createElement("span"), chart: null};
        line.box.className = "spark";
        line.text.className = "spark-value";
        sparks.set(name, line);
      }
      if (text) line.text.textContent = text;
      cell.replaceChildren(line.box, line.text);
      if (!line.chart) line.chart = spark(line.box, [line.columns.time, line.columns.cpu]);
    }

    const placeAll = () => list.querySelectorAll("[data-spark]").forEach(place);
    // live.js swaps the list's rows after an event: the lines move into the new rows.
    new MutationObserver(placeAll).observe(list, {childList: true, subtree: true});
    placeAll();

    function redraw() {
      for (const line of sparks.values()) {
        trim(line.columns, SPARK_POINTS);
        line.chart.setData([line.columns.time, line.columns.cpu]);
      }
    }

    // Every domain's last samples since the last drawn, in one request.
    async function catchUp() {
      const value = await fetchValue(
        `/xend/samples/?history=1&last=${SPARK_POINTS}&since=${since}`);
      for (const domain of children(value, "domain")) {
        const line = sparks.get(field(domain, "name"));
        const history = child(domain, "history");
        if (line) append(line.columns, column(history, "time"), {cpu: column(history, "cpu")});
      }
      since = Math.max(since, number(field(value, "seq")) ?? -1);
      redraw();
    }

    function onSample(value) {
      const time = number(field(value, "time"));
      for (const domain of children(value, "domain")) {
        const line = sparks.get(field(domain, "name"));
        if (!line) continue;
        const now = number(field(child(domain, "rates"), "cpu"));
        append(line.columns, [time], {cpu: [now]});
        if (now !== null) line.text.textContent = percent(now);
      }
      for (const [name, line] of sparks) {  // a domain gone from the list
        if (!line.box.isConnected) sparks.delete(name);
      }
      since = Math.max(since, number(field(value, "seq")) ?? -1);
      redraw();
    }

    follow("/xend/samples/", onSample, catchUp);
  }

  if (graphs) domainPage();
  if (list && list.querySelector("[data-spark]")) listPage();
})();
