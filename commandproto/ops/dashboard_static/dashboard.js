// The commandproto dashboard: polls stats once a second, draws the last
// minutes with uPlot, and runs a console over a WebSocket.  Text from the
// server goes into the page only as text (textContent), never as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const KEEP = 300; // seconds of history in the charts
  const MAX_OUTPUT = 500; // console lines kept
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const COLOURS = [
    "#2f7ed8", "#d9534f", "#5cb85c", "#f0ad4e", "#8e6bbf",
    "#20a5a0", "#b5651d", "#e377c2", "#7f7f7f", "#17becf",
  ];

  // -- counters

  const statusLine = document.getElementById("status");
  const counterRows = new Map();

  function showCounters(stats) {
    const body = document.querySelector("#counters tbody");
    for (const [key, value] of Object.entries(stats)) {
      if (typeof value === "object") {
        continue; // the nested sections feed the charts
      }
      let cell = counterRows.get(key);
      if (cell === undefined) {
        const row = document.createElement("tr");
        const name = document.createElement("td");
        name.className = "key";
        name.textContent = key;
        cell = document.createElement("td");
        cell.className = "value";
        cell.dataset.key = key;
        row.append(name, cell);
        body.append(row);
        counterRows.set(key, cell);
      }
      cell.textContent = String(value);
    }
  }

  // -- charts

  function makeChart(id, title, labels, unit) {
    const target = document.getElementById(id);
    const series = [{}].concat(labels.map((label, i) => ({
      label: label,
      stroke: COLOURS[i % COLOURS.length],
      width: 1.5,
      spanGaps: false,
    })));
    const options = {
      title: title,
      width: Math.max(target.clientWidth, 300),
      height: 200,
      series: series,
      scales: { x: { time: true } },
      axes: [{}, { label: unit, size: 60 }],
      legend: { live: false },
    };
    const data = [[]].concat(labels.map(() => []));
    return new uPlot(options, data, target);
  }

  // A chart whose series can grow (commands appear as they are used).
  class Chart {
    constructor(id, title, unit, labels) {
      this.id = id;
      this.title = title;
      this.unit = unit;
      this.labels = labels || [];
      this.times = [];
      this.columns = this.labels.map(() => []);
      this.plot = makeChart(id, title, this.labels, unit);
    }

    add(time, values) {
      let grown = false;
      for (const label of Object.keys(values)) {
        if (!this.labels.includes(label)) {
          this.labels.push(label);
          this.columns.push(this.times.map(() => null));
          grown = true;
        }
      }
      this.times.push(time);
      this.labels.forEach((label, i) => {
        const value = values[label];
        this.columns[i].push(value === undefined ? null : value);
      });
      if (this.times.length > KEEP) {
        this.times.shift();
        this.columns.forEach((column) => column.shift());
      }
      if (grown) {
        this.plot.destroy();
        this.plot = makeChart(this.id, this.title, this.labels, this.unit);
      }
      this.plot.setData([this.times].concat(this.columns));
    }

    resize() {
      const target = document.getElementById(this.id);
      this.plot.setSize({ width: Math.max(target.clientWidth, 300), height: 200 });
    }
  }

  const TROUBLE = [
    "refused: max_connections", "refused: max_connections_per_ip",
    "refused: shutting_down", "timeout: idle", "timeout: line",
    "timeout: handshake", "timeout: command",
  ];
  let charts = null;

  function makeCharts() {
    charts = {
      commands: new Chart("chart-commands", "Commands per second, by command", "/s"),
      latency: new Chart("chart-latency", "Reply latency (all commands)", "ms",
        ["p50", "p99"]),
      connections: new Chart("chart-connections", "Open connections", "",
        ["connections"]),
      trouble: new Chart("chart-trouble", "Refusals and timeouts per second", "/s",
        TROUBLE),
    };
    window.addEventListener("resize", () => {
      Object.values(charts).forEach((chart) => chart.resize());
    });
  }

  // The percentile of the replies in one interval: from the difference of
  // two cumulative histograms, as the upper bound of its bucket (ms).
  function percentile(bounds, counts, percent) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (total === 0) {
      return null;
    }
    const rank = Math.max(1, Math.ceil(percent * total / 100));
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i];
      if (seen >= rank) {
        return bounds[Math.min(i, bounds.length - 1)] * 1000;
      }
    }
    return bounds[bounds.length - 1] * 1000;
  }

  function rates(now, before, seconds) {
    const out = {};
    for (const [key, value] of Object.entries(now)) {
      out[key] = Math.max(0, (value - ((before || {})[key] || 0)) / seconds);
    }
    return out;
  }

  let previous = null;

  function record(stats, time) {
    if (charts === null) {
      makeCharts();
    }
    charts.connections.add(time, { connections: stats.connections });
    if (previous !== null) {
      const seconds = Math.max(time - previous.time, 0.001);
      const before = previous.stats;
      charts.commands.add(time,
        rates(stats.commands_by_name, before.commands_by_name, seconds));
      const interval = stats.latency.counts.map(
        (count, i) => count - (before.latency.counts[i] || 0));
      charts.latency.add(time, {
        p50: percentile(stats.latency.bounds, interval, 50),
        p99: percentile(stats.latency.bounds, interval, 99),
      });
      const trouble = {};
      const refused = rates(stats.refused_by_reason, before.refused_by_reason, seconds);
      const timeouts = rates(stats.timeouts, before.timeouts, seconds);
      for (const [reason, rate] of Object.entries(refused)) {
        trouble["refused: " + reason] = rate;
      }
      for (const [kind, rate] of Object.entries(timeouts)) {
        trouble["timeout: " + kind] = rate;
      }
      charts.trouble.add(time, trouble);
    }
    previous = { stats: stats, time: time };
  }

  async function poll() {
    try {
      const response = await fetch("stats" + query, { cache: "no-store" });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      const stats = await response.json();
      showCounters(stats);
      record(stats, Date.now() / 1000);
      statusLine.textContent = "live, version " + stats.version;
      statusLine.classList.remove("down");
    } catch (error) {
      statusLine.textContent = "no answer from the server (" + error.message + ")";
      statusLine.classList.add("down");
    }
  }

  // -- console

  const output = document.getElementById("console-output");
  const form = document.getElementById("console-form");
  const input = document.getElementById("console-input");
  const history = [];
  let place = 0;
  let socket = null;
  let waiting = [];

  function show(text, kind) {
    const line = document.createElement("div");
    if (kind) {
      line.className = kind;
    }
    line.textContent = text;
    output.append(line);
    while (output.childElementCount > MAX_OUTPUT) {
      output.firstElementChild.remove();
    }
    output.scrollTop = output.scrollHeight;
  }

  function connect() {
    const url = new URL("console" + query, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      show("(connected)", "note");
      for (const line of waiting) {
        socket.send(line);
      }
      waiting = [];
    });
    socket.addEventListener("message", (event) => show(event.data));
    socket.addEventListener("close", (event) => {
      show("(disconnected" + (event.reason ? ": " + event.reason : "") +
        "; the next line reconnects)", "note");
      socket = null;
    });
  }

  function send(line) {
    show("> " + line, "sent");
    if (socket !== null && socket.readyState === WebSocket.OPEN) {
      socket.send(line);
      return;
    }
    waiting.push(line);
    if (socket === null) {
      connect();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const line = input.value;
    if (history[history.length - 1] !== line && line !== "") {
      history.push(line);
    }
    place = history.length;
    input.value = "";
    send(line);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowUp" && place > 0) {
      place -= 1;
      input.value = history[place];
      event.preventDefault();
    } else if (event.key === "ArrowDown" && place < history.length) {
      place += 1;
      input.value = place < history.length ? history[place] : "";
      event.preventDefault();
    }
  });

  connect();
  poll();
  setInterval(poll, POLL_MS);
})();
