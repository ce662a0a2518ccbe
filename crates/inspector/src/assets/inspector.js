// switchboard inspector: a read-only page fed by server-sent events from the admin listener.
// No framework and no build step. Every value from the server goes into the page as text
// (textContent), never as markup.
'use strict';

(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const HISTORY = 60; // points per chart: a minute at one snapshot a second
  const TAIL_KEEP = 50; // tail entries kept on the page

  const state = {
    system: null, // selected system (its rooms and connections are listed)
    search: '',
    events: null, // EventSource of snapshots
    history: new Map(), // system -> { in: [], out: [] }
    cards: new Map(), // system -> card element
    detail: null, // connection id shown in detail
    tail: null, // EventSource of the tail
    searchTimer: 0,
    roomsShape: '', // the rooms last drawn
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'text') node.textContent = v;
      else if (k === 'class') node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  const int = (n) => (n == null ? '–' : Number(n).toLocaleString('en-US'));
  const rate = (n) => (n == null ? '–' : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US'));

  function bytes(n) {
    if (n == null) return '–';
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  function age(secs) {
    if (secs < 60) return `${secs} s`;
    if (secs < 3600) return `${Math.floor(secs / 60)} min ${secs % 60} s`;
    return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
  }

  function query(params) {
    return new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== '')).toString();
  }

  // --- the live stream of snapshots ---------------------------------------------------------------

  function connect() {
    if (state.events) state.events.close();
    const es = new EventSource(`/api/events?${query({ system: state.system, q: state.search })}`);
    state.events = es;
    setStatus('Connecting…', '');
    es.addEventListener('snapshot', (e) => {
      setStatus('Live', 'live');
      render(JSON.parse(e.data));
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        setStatus('Disconnected: the server refused the stream (reload to try again).', 'down');
      } else {
        setStatus('Reconnecting…', 'down');
      }
    };
  }

  function setStatus(text, cls) {
    const s = $('status');
    s.textContent = text;
    s.className = cls;
  }

  function render(snap) {
    const p = snap.process;
    const time = new Date(snap.at_ms).toLocaleTimeString('en-GB');
    $('process').textContent =
      `switchboard ${snap.version} · sockets open ${int(p.sockets_open)} of ${int(p.socket_budget)} · ` +
      `live streams ${p.streams_open} of ${p.streams_limit} · updated ${time}`;
    renderSystemChoice(snap);
    for (const s of snap.systems) renderCard(s);
    for (const [name, card] of state.cards) {
      if (!snap.systems.some((s) => s.name === name)) {
        card.remove();
        state.cards.delete(name);
      }
    }
    if (snap.selected) {
      renderRooms(snap.selected);
      renderConnections(snap.selected);
      refreshDetail(snap.selected);
    }
  }

  /** Refresh the detail shown, unless the list shows its connection has closed. */
  function refreshDetail(sel) {
    if (state.detail == null) return;
    const listed = sel.connections.some((c) => c.id === state.detail);
    const complete = sel.connections_total <= sel.connections.length;
    if (listed || !complete) loadDetail();
    else showDetail(null);
  }

  function renderSystemChoice(snap) {
    const select = $('system');
    const names = snap.systems.map((s) => s.name);
    const have = [...select.options].map((o) => o.value);
    if (names.join() !== have.join()) {
      select.replaceChildren(...snap.systems.map((s) => el('option', { value: s.name, text: `${s.name} (${s.title})` })));
    }
    if (state.system == null && snap.selected) state.system = snap.selected.system;
    if (state.system != null) select.value = state.system;
  }

  // --- one card per system ------------------------------------------------------------------------

  function field(card, name) {
    return card.querySelector(`[data-field="${name}"]`);
  }

  function makeCard(s) {
    const dl = el('dl');
    const row = (label, name, extra) => {
      const dd = el('dd', { 'data-field': name });
      if (extra) {
        dd.className = 'rate';
        dd.append(extra, el('span', { 'data-value': '' }));
      }
      dl.append(el('dt', { text: label }), dd);
    };
    row('Connections', 'connections');
    row('Rooms', 'rooms');
    row('Cluster (every node)', 'cluster');
    row('Messages in /s', 'in-rate', chart('in'));
    row('Messages out /s', 'out-rate', chart('out'));
    row('Publications /s', 'publications-rate');
    row('Deliveries', 'deliveries');
    row('Dropped deliveries', 'dropped');
    row('Slow-consumer closes', 'slow-closes');
    row('Queued bytes', 'queued');
    row('v2 sessions', 'sessions');
    const card = el(
      'article',
      { class: 'card', 'data-system': s.name, 'aria-labelledby': `card-${s.name}` },
      el('h3', { id: `card-${s.name}` }, el('span', { text: `${s.name} · ${s.title}` }), el('span', { class: 'badge', 'data-field': 'ready' })),
      dl,
      el('h4', { text: 'Errors by reason' }),
      el('div', { 'data-list': 'errors' }),
      el('h4', { text: 'Refusals by reason' }),
      el('div', { 'data-list': 'refusals' }),
      el('h4', { text: 'Backplane' }),
      el('div', { 'data-list': 'backplane' }),
    );
    return card;
  }

  function chart(kind) {
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', `0 0 ${HISTORY - 1} 20`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    const base = document.createElementNS(SVG, 'line');
    for (const [k, v] of [['x1', 0], ['y1', 20], ['x2', HISTORY - 1], ['y2', 20]]) base.setAttribute(k, v);
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('class', kind);
    svg.append(base, line);
    return svg;
  }

  function drawChart(svg, points, label) {
    const max = Math.max(1, ...points);
    const offset = HISTORY - points.length;
    const coords = points.map((v, i) => `${offset + i},${(20 - (v / max) * 19).toFixed(2)}`);
    svg.querySelector('polyline').setAttribute('points', coords.join(' '));
    const now = points.length ? points[points.length - 1] : 0;
    svg.setAttribute('aria-label', `${label}, last minute: now ${rate(now)} per second, peak ${rate(Math.max(0, ...points))}`);
  }

  function list(container, items, empty) {
    if (!items.length) {
      container.replaceChildren(el('p', { class: 'none', text: empty }));
      return;
    }
    container.replaceChildren(el('ul', {}, ...items.map((t) => el('li', { text: t }))));
  }

  function renderCard(s) {
    let card = state.cards.get(s.name);
    if (!card) {
      card = makeCard(s);
      state.cards.set(s.name, card);
      $('systems').append(card);
    }
    const history = state.history.get(s.name) || { in: [], out: [] };
    state.history.set(s.name, history);
    if (s.rates.messages_in != null) {
      history.in.push(s.rates.messages_in);
      history.out.push(s.rates.messages_out);
      if (history.in.length > HISTORY) history.in.shift();
      if (history.out.length > HISTORY) history.out.shift();
    }
    const ready = field(card, 'ready');
    ready.textContent = s.ready ? 'ready' : 'draining';
    ready.className = `badge ${s.ready ? 'ready' : 'not-ready'}`;
    field(card, 'connections').textContent = int(s.connections);
    field(card, 'rooms').textContent = int(s.rooms);
    field(card, 'cluster').textContent = s.cluster
      ? `${int(s.cluster.connections)} connections, ${int(s.cluster.rooms)} rooms on ${int(s.cluster.nodes)} nodes`
      : 'this node only';
    field(card, 'in-rate').querySelector('[data-value]').textContent = rate(s.rates.messages_in);
    field(card, 'out-rate').querySelector('[data-value]').textContent = rate(s.rates.messages_out);
    drawChart(field(card, 'in-rate').querySelector('svg'), history.in, 'messages in per second');
    drawChart(field(card, 'out-rate').querySelector('svg'), history.out, 'messages out per second');
    field(card, 'publications-rate').textContent = rate(s.rates.publications);
    field(card, 'deliveries').textContent = int(s.totals.deliveries);
    field(card, 'dropped').textContent = int(s.totals.dropped_deliveries);
    field(card, 'slow-closes').textContent = int(s.totals.slow_consumer_closes);
    field(card, 'queued').textContent = bytes(s.queued_bytes);
    field(card, 'sessions').textContent = s.v2 ? int(s.sessions) : 'v1 only';
    const errors = Object.entries(s.errors).sort((a, b) => b[1] - a[1]);
    list(card.querySelector('[data-list="errors"]'), errors.map(([k, n]) => `${k}: ${int(n)}`), 'None.');
    const refusals = [...s.refusals].sort((a, b) => b.count - a.count);
    list(card.querySelector('[data-list="refusals"]'), refusals.map((r) => `${r.kind} ${r.reason}: ${int(r.count)}`), 'None.');
    const bp = s.backplane;
    const backplane = bp
      ? [
          `node ${bp.node}: ${bp.state} (publisher ${bp.publisher ? 'up' : 'down'}, subscriber ${bp.subscriber ? 'up' : 'down'})`,
          `published ${int(bp.published)}, received ${int(bp.received)}, missed ${int(bp.missed)}`,
          `dropped while down ${int(bp.dropped_while_down)}, dropped inbound ${int(bp.dropped_inbound)}`,
          `reconnects ${int(bp.reconnects)}, errors ${int(bp.errors)}${bp.last_error ? ` (last: ${bp.last_error})` : ''}`,
          // Several Redis instances: one line each, in the configured order.
          ...(bp.instances || []).map((i) =>
            `redis ${i.address}: ${i.state}, published ${int(i.published)}, received ${int(i.received)}, ` +
            `dropped while down ${int(i.dropped_while_down)}, errors ${int(i.errors)}${i.last_error ? ` (last: ${i.last_error})` : ''}`),
        ]
      : [];
    list(card.querySelector('[data-list="backplane"]'), backplane, 'Single node: no backplane.');
  }

  // --- rooms, connections, detail -----------------------------------------------------------------

  /** Replace `table`'s rows with `rows`, keeping the keyboard focus on the same row's button. */
  function replaceRows(table, rows, key) {
    const focused = document.activeElement;
    const row = focused && table.contains(focused) ? focused.closest('tr') : null;
    const was = row ? row.getAttribute(key) : null;
    table.tBodies[0].replaceChildren(...rows);
    if (was != null) {
      const again = rows.find((r) => r.getAttribute(key) === was);
      if (again) again.querySelector('button')?.focus();
    }
  }

  function renderRooms(sel) {
    const shape = JSON.stringify([sel.system, sel.rooms]);
    if (shape === state.roomsShape) {
      renderRoomsCount(sel);
      return; // unchanged: leave the rows (and the focus) alone
    }
    state.roomsShape = shape;
    const rows = sel.rooms.map((r) => {
      const button = el('button', { type: 'button', text: 'Tail', 'aria-label': `Tail room ${r.name}` });
      button.addEventListener('click', () => {
        $('tail-room').value = r.name;
        startTail();
      });
      return el('tr', { 'data-room': r.name }, el('td', { class: 'name mono', text: r.name }), el('td', { class: 'num', text: int(r.members) }), el('td', {}, button));
    });
    replaceRows($('rooms'), rows, 'data-room');
    $('rooms-empty').hidden = rows.length > 0;
    renderRoomsCount(sel);
  }

  function renderRoomsCount(sel) {
    const shown = sel.rooms.length;
    const rooms = (n) => `${int(n)} room${n === 1 ? '' : 's'}`;
    const count = sel.search
      ? `${rooms(sel.rooms_matching)} matching “${sel.search}”, of ${int(sel.rooms_total)} in ${sel.system}`
      : `${rooms(sel.rooms_total)} in ${sel.system}`;
    $('rooms-count').textContent = count + (sel.rooms_matching > shown ? `; the largest ${shown} shown` : '');
  }


  function renderConnections(sel) {
    const rows = sel.connections.map((c) => {
      const button = el('button', { type: 'button', text: 'Detail', 'aria-label': `Detail of connection ${c.id}` });
      button.addEventListener('click', () => {
        state.detail = c.id;
        loadDetail();
      });
      return el(
        'tr',
        { 'data-connection': String(c.id) },
        el('td', { class: 'num', text: String(c.id) }),
        el('td', { class: 'mono name', text: c.client_id }),
        el('td', { class: 'name', text: c.user ?? '–' }),
        el('td', { class: 'num', text: int(c.rooms) }),
        el('td', { class: 'num', text: bytes(c.queued_bytes) }),
        el('td', { class: 'num', text: age(c.age_secs) }),
        el('td', {}, button),
      );
    });
    replaceRows($('connections'), rows, 'data-connection');
    $('connections-empty').hidden = rows.length > 0;
    $('connections-count').textContent = `${int(sel.connections_total)} open in ${sel.system}` +
      (sel.connections_total > rows.length ? `; the ${rows.length} open longest shown` : '');
  }

  async function loadDetail() {
    const id = state.detail;
    const box = $('detail');
    box.hidden = false;
    $('detail-title').textContent = `Connection ${id} of ${state.system}`;
    let d = null;
    try {
      const r = await fetch(`/api/connection?${query({ system: state.system, id })}`, { credentials: 'same-origin' });
      if (r.ok) d = await r.json();
    } catch {
      d = null;
    }
    if (state.detail !== id) return; // another was chosen meanwhile
    showDetail(d);
  }

  function showDetail(d) {
    const pairs = (items) => (items.length ? items.map(([k, v]) => `${k}=${v}`).join(', ') : '–');
    const rows = d
      ? [
          ['Client id', d.client_id],
          ['User', d.user ?? 'anonymous'],
          ['Claims', pairs(d.claims)],
          ['Filter', d.filter.length ? pairs(d.filter) : 'none (gets everything)'],
          [`Rooms (${int(d.rooms)})`, d.room_names.length ? d.room_names.join(', ') : '–'],
          ['Queued bytes', bytes(d.queued_bytes)],
          ['Age', age(d.age_secs)],
        ]
      : [['State', 'closed']];
    $('detail-fields').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  }

  // --- the live tail -----------------------------------------------------------------------------

  function tailStatus(text) {
    $('tail-status').textContent = text;
  }

  function startTail() {
    stopTail(false);
    const room = $('tail-room').value.trim();
    if (!room || !state.system) return;
    const system = state.system;
    const es = new EventSource(`/api/tail?${query({ system, room })}`);
    state.tail = es;
    $('tail-stop').disabled = false;
    $('tail-events').replaceChildren();
    tailStatus(`Starting the tail of ${room} in ${system}…`);
    es.addEventListener('tail', (e) => {
      const t = JSON.parse(e.data);
      tailStatus(`Watching ${t.room} in ${t.system}: at most ${t.per_second} publications a second, each cut to ${t.max_bytes} bytes.`);
    });
    es.addEventListener('publication', (e) => {
      const p = JSON.parse(e.data);
      const when = new Date(p.at_ms).toLocaleTimeString('en-GB');
      const meta = `${when} · ${bytes(p.bytes)}${p.truncated ? ' (cut short)' : ''}` +
        (p.skipped ? ` · ${int(p.skipped)} passed over before this one` : '');
      const item = el('li', {}, el('div', { class: 'meta', text: meta }), el('pre', {}, el('code', { text: p.payload })));
      const events = $('tail-events');
      events.prepend(item);
      while (events.children.length > TAIL_KEEP) events.lastElementChild.remove();
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        tailStatus('The tail could not start or was ended by the server (too many tails open?).');
        $('tail-stop').disabled = true;
        if (state.tail === es) state.tail = null;
      } else {
        tailStatus(`Reconnecting the tail of ${room}…`);
      }
    };
  }

  function stopTail(say = true) {
    if (state.tail) {
      state.tail.close();
      state.tail = null;
    }
    $('tail-stop').disabled = true;
    if (say) tailStatus('Off.');
  }

  // --- controls ----------------------------------------------------------------------------------

  function init() {
    $('system').addEventListener('change', (e) => {
      state.system = e.target.value;
      state.detail = null;
      $('detail').hidden = true;
      connect();
    });
    $('search').addEventListener('input', (e) => {
      clearTimeout(state.searchTimer);
      state.searchTimer = setTimeout(() => {
        state.search = e.target.value;
        connect();
      }, 300);
    });
    $('detail-close').addEventListener('click', () => {
      state.detail = null;
      $('detail').hidden = true;
    });
    $('tail-form').addEventListener('submit', (e) => {
      e.preventDefault();
      startTail();
    });
    $('tail-stop').addEventListener('click', () => stopTail());
    window.addEventListener('pagehide', () => {
      stopTail(false);
      if (state.events) state.events.close();
    });
    connect();
  }

  init();
})();
