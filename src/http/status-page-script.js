// @ts-nocheck -- runs in the browser (the status page), not in Node.
// Draws the status page's plots with uPlot from /_regmirror/ui/data and redraws them every
// few seconds. The tables are rendered by the server; this only adds the plots and keeps
// the headline figures current. Each plot element gets data-drawn="1" once it shows data.
(function () {
  'use strict';
  const DATA = '/_regmirror/ui/data';
  const EVERY_MS = 5000;
  const COLORS = ['#2b6cb0', '#c05621', '#2f855a', '#6b46c1', '#b83280', '#718096'];
  const plots = new Map();

  const bytes = (n) => {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
  };
  const percent = (r) => (r === null ? '-' : `${(r * 100).toFixed(1)}%`);

  /** What each plot shows: its series (label, values, style) from the data. */
  const SPECS = {
    'plot-pulls': (s) => [
      { label: 'pulls served', values: s.pullsServed },
      { label: 'upstream pulls', values: s.upstreamPulls },
    ],
    'plot-bytes': (s) => [
      { label: 'from cache', values: s.bytesCache, bytes: true },
      { label: 'from upstream', values: s.bytesUpstream, bytes: true },
    ],
    'plot-requests': (s) => s.upstreamRequests.map((u) => ({ label: u.name, values: u.values })),
    'plot-trouble': (s) => [
      { label: 'stale serves', values: s.staleServed },
      { label: 'upstream failures', values: s.upstreamFailed },
    ],
    'plot-budget': (s) =>
      s.budgets.flatMap((b) => [
        { label: `${b.upstream} (${b.credential})`, values: b.values },
        { label: `${b.upstream} floor`, values: b.values.map(() => b.floor), dash: [6, 4] },
      ]),
  };

  function draw(id, hours, series) {
    const el = document.getElementById(id);
    if (!el) return;
    const data = [hours, ...series.map((x) => x.values)];
    const key = series.map((x) => x.label).join('\n');
    const old = plots.get(id);
    if (old && old.key === key) {
      old.plot.setData(data);
      return;
    }
    if (old) old.plot.destroy();
    const opts = {
      width: Math.max(320, el.clientWidth || 520),
      height: 200,
      series: [
        {},
        ...series.map((x, i) => ({
          label: x.label,
          stroke: COLORS[Math.floor(i / (id === 'plot-budget' ? 2 : 1)) % COLORS.length],
          width: 2,
          dash: x.dash,
          spanGaps: true,
          value: (u, v) => (v === null || v === undefined ? '-' : x.bytes ? bytes(v) : String(v)),
        })),
      ],
      // Counts and budgets start at 0: a plot of 95..100 would show a small dip as a cliff.
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [{}, { values: (u, ticks) => ticks.map((v) => (series[0] && series[0].bytes ? bytes(v) : String(v))), size: 70 }],
      hooks: {
        draw: [
          () => {
            const shown = series.some((x) => x.values.some((v) => v !== null && v !== undefined));
            if (shown) el.dataset.drawn = '1';
          },
        ],
      },
    };
    plots.set(id, { key, plot: new uPlot(opts, data, el) });
  }

  function text(id, value) {
    const el = document.getElementById(id);
    if (el) el.textContent = value;
  }

  function show(d) {
    const s = d.series;
    for (const [id, spec] of Object.entries(SPECS)) draw(id, s.hours, spec(s));
    text('generated', d.generatedAt);
    text('hit-requests', percent(d.hitRatio.requests));
    text('hit-bytes', percent(d.hitRatio.bytes));
    text('pulls-served', String(d.totals.pullsServed));
    text('pulls-saved', String(d.totals.pullsSaved));
    text('store-bytes', bytes(d.store.bytes));
  }

  async function refresh() {
    try {
      const res = await fetch(DATA, { credentials: 'same-origin', cache: 'no-store' });
      if (res.ok) show(await res.json());
    } catch {
      // The next tick tries again: a restarting server is not an error worth a dialog.
    }
  }

  if (typeof uPlot === 'undefined') return;
  refresh();
  setInterval(refresh, EVERY_MS);
})();
