/**
 * The status page: one self-contained HTML document (inline style and script, nothing loaded
 * from anywhere else). It opens /events (Server-Sent Events), takes the `history` event once
 * and a `snapshot` event every round, and draws the charts itself on canvas. Text from the
 * cluster goes in with textContent only, never as markup.
 *
 * For tests and curious operators, `window.statusPage` holds what the page has: `points`,
 * `snapshot`, `rounds`; every chart's canvas carries `data-points` and `data-last`.
 */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chatd-cluster status</title>
<style>
  :root { --bg:#0f1419; --panel:#182029; --line:#2a3541; --text:#d8dee6; --dim:#8a97a6; --ok:#3fb950; --warn:#d29922; --bad:#f85149; --a:#58a6ff; --b:#d2a8ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; flex-wrap:wrap; gap:16px; align-items:center; padding:12px 20px; border-bottom:1px solid var(--line); }
  h1 { font-size:18px; margin:0; font-weight:600; }
  h2 { font-size:14px; margin:0 0 8px; font-weight:600; color:var(--dim); text-transform:uppercase; letter-spacing:.05em; }
  .badge { padding:2px 10px; border-radius:10px; font-weight:600; background:var(--line); }
  .healthy, .up { color:var(--ok); } .degraded, .unknown { color:var(--warn); } .down, .not-answering { color:var(--bad); }
  .badge.healthy { background:#12361d; } .badge.degraded { background:#3a2d0c; } .badge.down { background:#3d1414; }
  .dim { color:var(--dim); }
  main { display:grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap:16px; padding:16px 20px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 14px; min-width:0; }
  section.wide { grid-column: 1 / -1; }
  table { border-collapse:collapse; width:100%; font-variant-numeric: tabular-nums; }
  th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); white-space:nowrap; vertical-align:top; }
  td.wrap { white-space:normal; font-size:12px; color:var(--dim); min-width:200px; }
  th { color:var(--dim); font-weight:500; }
  td.num, th.num { text-align:right; }
  canvas { width:100%; height:180px; display:block; }
  .legend { display:flex; gap:14px; font-size:12px; color:var(--dim); margin-top:4px; }
  .legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; vertical-align:-1px; }
  .bar { height:10px; background:var(--a); border-radius:2px; min-width:2px; }
  #channels td.barcell { width:60%; }
</style>
</head>
<body>
<header>
  <h1>chatd-cluster</h1>
  <span id="cluster" class="badge unknown">connecting</span>
  <span id="queue" class="dim">queue: …</span>
  <span id="sessions" class="dim">sessions: …</span>
  <span id="membership" class="dim">membership: …</span>
  <span id="feed" class="dim">feed: connecting</span>
  <span id="updated" class="dim"></span>
</header>
<main>
  <section class="wide">
    <h2>Processes</h2>
    <table id="processes">
      <thead><tr><th>process</th><th>state</th><th class="num">pid</th><th class="num">uptime</th><th class="num">STATUS ms</th><th>gauges</th><th>per second (non-zero)</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Requests per second</h2>
    <canvas id="chart-rps" data-points="0" data-last=""></canvas>
    <div class="legend"><span><i style="background:var(--a)"></i>chatD requests/s</span><span><i style="background:var(--b)"></i>finds/s</span></div>
  </section>
  <section>
    <h2>Latency (chatD, last 10 s)</h2>
    <canvas id="chart-latency" data-points="0" data-last=""></canvas>
    <div class="legend"><span><i style="background:var(--a)"></i>p50 ms</span><span><i style="background:var(--b)"></i>p99 ms</span></div>
  </section>
  <section>
    <h2>Queue depth</h2>
    <canvas id="chart-queue" data-points="0" data-last=""></canvas>
    <div class="legend"><span><i style="background:var(--a)"></i>messages</span><span><i style="background:var(--b)"></i>fill %</span></div>
  </section>
  <section>
    <h2>Sessions per channel</h2>
    <table id="channels"><thead><tr><th>channel</th><th class="num">sessions</th><th></th></tr></thead><tbody></tbody></table>
    <p id="channels-none" class="dim">no figures yet</p>
  </section>
</main>
<script>
(function () {
  'use strict';
  var MAX_POINTS = 300;
  var state = { points: [], snapshot: null, rounds: 0, connected: false };
  window.statusPage = state;

  function el(id) { return document.getElementById(id); }
  function text(node, t) { node.textContent = t; return node; }
  function cell(row, t, cls) { var td = document.createElement('td'); if (cls) td.className = cls; td.textContent = t; row.appendChild(td); return td; }
  function fmt(n, digits) {
    if (n === null || n === undefined || !isFinite(n)) return '–';
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return n.toFixed(digits === undefined ? (Number.isInteger(n) ? 0 : 1) : digits);
  }
  function duration(s) {
    if (s === undefined || s === null) return '–';
    if (s < 60) return Math.floor(s) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  }
  function pairs(obj, limit, skipZero) {
    var keys = Object.keys(obj || {}).filter(function (k) { return !skipZero || obj[k] !== 0; }).sort();
    if (!keys.length) return '–';
    return keys.slice(0, limit).map(function (k) { return k + ' ' + fmt(obj[k]); }).join(', ') + (keys.length > limit ? ', …' : '');
  }

  function renderHeader(s) {
    var c = el('cluster');
    c.className = 'badge ' + s.cluster;
    text(c, s.cluster + ' · ' + s.point.answering + '/' + s.point.asked + ' answering');
    var q = s.queue;
    text(el('queue'), q.state === 'ok'
      ? 'queue ' + q.key + ': ' + fmt(q.messages) + ' msgs, ' + fmt(q.bytes) + ' B, ' + fmt((q.fill || 0) * 100, 1) + '% full'
      : 'queue ' + q.key + ': ' + q.state + (q.problem ? ' (' + q.problem + ')' : ''));
    el('queue').className = q.state === 'ok' ? 'dim' : 'down';
    text(el('sessions'), 'sessions: ' + fmt(s.point.sessions));
    var m = s.membership;
    text(el('membership'), m
      ? 'epoch ' + m.epoch + ': shards ' + m.members.join(', ') + (m.settled ? '' : ' (handing over)')
      : 'membership: –');
    el('membership').className = m && !m.settled ? 'degraded' : 'dim';
    text(el('updated'), 'updated ' + new Date(s.at).toLocaleTimeString());
  }

  function renderProcesses(s) {
    var body = el('processes').tBodies[0];
    var rows = [];
    s.processes.forEach(function (p) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-key', p.key);
      tr.setAttribute('data-state', p.state);
      cell(tr, p.role === 'gc' ? 'gc' : p.role + ' ' + p.index + (p.role === 'channeld' ? ' (shard)' : ''));
      var st = cell(tr, p.state + (p.detail ? ' — ' + p.detail : ''), p.state.replace(' ', '-'));
      st.title = p.detail || '';
      cell(tr, p.pid === undefined ? '–' : String(p.pid), 'num');
      cell(tr, p.state === 'up' ? duration(p.uptimeS) : (p.lastSeen ? 'seen ' + duration((s.at - p.lastSeen) / 1000) + ' ago' : '–'), 'num');
      cell(tr, p.statusMs === undefined || p.state !== 'up' ? '–' : String(p.statusMs), 'num');
      cell(tr, pairs(p.gauges, 8), 'wrap');
      cell(tr, pairs(p.rates, 6, true), 'wrap');
      rows.push(tr);
    });
    body.replaceChildren.apply(body, rows);
  }

  function renderChannels(s) {
    var body = el('channels').tBodies[0];
    var per = s.sessionsPerChannel;
    var keys = per ? Object.keys(per).filter(function (k) { return per[k] > 0; }).sort(function (a, b) { return Number(a) - Number(b); }) : [];
    el('channels-none').style.display = keys.length ? 'none' : '';
    text(el('channels-none'), per ? 'no sessions' : 'chatD does not report sessions per channel');
    var max = 1;
    keys.forEach(function (k) { if (per[k] > max) max = per[k]; });
    var rows = keys.slice(0, 200).map(function (k) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-channel', k);
      cell(tr, k);
      cell(tr, String(per[k]), 'num');
      var bar = document.createElement('div');
      bar.className = 'bar';
      bar.style.width = (100 * per[k] / max).toFixed(1) + '%';
      cell(tr, '', 'barcell').appendChild(bar);
      return tr;
    });
    body.replaceChildren.apply(body, rows);
  }

  var COLORS = ['#58a6ff', '#d2a8ff'];
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  /** Draws series (arrays of numbers or null, aligned with times) on a canvas, with a y grid. */
  function drawChart(canvas, times, series) {
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || 400, h = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    var g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    var left = 44, right = 8, top = 8, bottom = 20;
    var pw = w - left - right, ph = h - top - bottom;
    var max = 0;
    series.forEach(function (s) { s.values.forEach(function (v) { if (v !== null && v > max) max = v; }); });
    max = niceMax(max);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#8a97a6';
    g.strokeStyle = '#2a3541';
    g.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var y = top + ph - (ph * i) / 4;
      g.beginPath(); g.moveTo(left, Math.round(y) + 0.5); g.lineTo(left + pw, Math.round(y) + 0.5); g.stroke();
      g.textAlign = 'right'; g.textBaseline = 'middle';
      var tick = (max * i) / 4;
      g.fillText(Number.isInteger(tick) ? fmt(tick) : String(Math.round(tick * 100) / 100), left - 6, y);
    }
    var n = times.length;
    if (n > 0) {
      var t0 = times[0], t1 = times[n - 1], span = Math.max(t1 - t0, 1000);
      g.textAlign = 'left'; g.textBaseline = 'top';
      g.fillText('-' + Math.round(span / 1000) + ' s', left, top + ph + 4);
      g.textAlign = 'right';
      g.fillText('now', left + pw, top + ph + 4);
      series.forEach(function (s, k) {
        g.strokeStyle = COLORS[k % COLORS.length];
        g.lineWidth = 2;
        // The second series dashed: where both are equal (all requests are finds) both stay visible.
        g.setLineDash(k === 1 ? [6, 4] : []);
        g.beginPath();
        var pen = false;
        for (var j = 0; j < n; j++) {
          var v = s.values[j];
          if (v === null || v === undefined) { pen = false; continue; }
          var x = left + (pw * (times[j] - t0)) / span;
          var yy = top + ph - (ph * v) / max;
          if (pen) g.lineTo(x, yy); else g.moveTo(x, yy);
          pen = true;
        }
        g.stroke();
      });
      g.setLineDash([]);
    }
    var lastValues = series.map(function (s) { var v = s.values[s.values.length - 1]; return v === null || v === undefined ? '' : String(Math.round(v * 100) / 100); });
    canvas.setAttribute('data-points', String(n));
    canvas.setAttribute('data-last', lastValues.join(','));
  }

  function renderCharts() {
    var pts = state.points;
    var times = pts.map(function (p) { return p.t; });
    function col(name, scale) { return pts.map(function (p) { var v = p[name]; return v === null || v === undefined ? null : v * (scale || 1); }); }
    drawChart(el('chart-rps'), times, [{ values: col('reqPerSec') }, { values: col('findsPerSec') }]);
    drawChart(el('chart-latency'), times, [{ values: col('p50Ms') }, { values: col('p99Ms') }]);
    drawChart(el('chart-queue'), times, [{ values: col('queueMessages') }, { values: col('queueFill', 100) }]);
  }

  function render() {
    var s = state.snapshot;
    if (s) { renderHeader(s); renderProcesses(s); renderChannels(s); }
    renderCharts();
  }

  function connect() {
    var es = new EventSource('/events');
    es.addEventListener('open', function () { state.connected = true; text(el('feed'), 'feed: live'); el('feed').className = 'dim'; });
    es.addEventListener('error', function () {
      state.connected = false;
      text(el('feed'), 'feed: lost, reconnecting…');
      el('feed').className = 'down';
    });
    es.addEventListener('history', function (ev) {
      var d = JSON.parse(ev.data);
      state.points = (d.points || []).slice(-MAX_POINTS);
      state.snapshot = d.snapshot;
      render();
    });
    es.addEventListener('snapshot', function (ev) {
      var s = JSON.parse(ev.data);
      state.snapshot = s;
      state.rounds++;
      state.points.push(s.point);
      if (state.points.length > MAX_POINTS) state.points.splice(0, state.points.length - MAX_POINTS);
      render();
    });
  }
  window.addEventListener('resize', renderCharts);
  connect();
})();
</script>
</body>
</html>
`;
