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

  /** The downloads table, rebuilt from the data (text only: names come from clients). */
  function downloads(list) {
    const section = document.getElementById('downloads');
    if (!section) return;
    const el = (tag, text) => {
      const e = document.createElement(tag);
      if (text !== undefined) e.textContent = text;
      return e;
    };
    const body = list.length === 0 ? el('p', 'None.') : el('table');
    if (list.length === 0) body.className = 'empty';
    else {
      const head = el('tr');
      for (const h of ['Upstream', 'Repository', 'Digest', 'Progress']) head.append(el('th', h));
      body.append(el('thead'), el('tbody'));
      body.firstChild.append(head);
      for (const x of list) {
        const row = el('tr');
        row.append(el('td', x.upstream), el('td', x.repository), el('td', x.digest.slice(0, 19)));
        const cell = el('td');
        if (x.size) {
          const bar = el('progress');
          bar.max = x.size;
          bar.value = x.received;
          cell.append(bar, ` ${bytes(x.received)} of ${bytes(x.size)}`);
        } else cell.textContent = bytes(x.received);
        row.append(cell);
        body.lastChild.append(row);
      }
    }
    section.replaceChildren(el('h2', 'Downloads in flight'), body);
  }

  function show(d) {
    downloads(d.downloads);
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
