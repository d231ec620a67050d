// proxy console: a live view of the overlay mesh. Vanilla ES2020, no build step.
// Talks to the JSON/SSE API described in the console contract.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const MAX_EVENTS = 300, MAX_POINTS = 360, HOUR = 3600e3;
  const NA = '—';

  let session = null, csrf = null, es = null, retry = 0;
  let state = null, sel = null, layoutKey = '', pos = new Map();
  let events = [];
  const hist = { links: new Map(), nodes: new Map() };
  const sorts = {};

  // ---- small helpers -------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    el.append(...kids.filter((c) => c != null));
    return el;
  }
  function s(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    return el;
  }
  function setText(el, t) { if (el.textContent !== t) el.textContent = t; }
  function setAttr(el, k, v) {
    if (v == null || v === false) { if (el.hasAttribute(k)) el.removeAttribute(k); }
    else if (el.getAttribute(k) !== String(v)) el.setAttribute(k, v);
  }
  // Keyed update of parent's children: reuses elements by key, moves only what is out of place
  // (so a focused row keeps its focus), drops what vanished and anything unkeyed.
  function reconcile(parent, items, keyOf, make, update) {
    const old = new Map();
    for (const el of [...parent.children]) {
      if (el._key == null) el.remove(); else old.set(el._key, el);
    }
    let i = 0;
    for (const it of items) {
      const k = keyOf(it);
      let el = old.get(k);
      if (el) old.delete(k); else { el = make(it, k); el._key = k; }
      update(el, it);
      const at = parent.children[i];
      if (at !== el) parent.insertBefore(el, at || null);
      i++;
    }
    for (const el of old.values()) el.remove();
  }
  const lkey = (l) => l.a + '|' + l.b;
  const pair = (x, y) => (x < y ? x + '|' + y : y + '|' + x);
  const pad = (n) => String(n).padStart(2, '0');
  function hms(ms) { const d = new Date(ms); return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; }

  // ---- formatting ----------------------------------------------------------
  function scaled(v, base, units) {
    let i = 0;
    while (Math.abs(v) >= base && i < units.length - 1) { v /= base; i++; }
    return (i ? v.toFixed(1) : String(Math.round(v))) + ' ' + units[i];
  }
  const fBytes = (b) => (b == null ? NA : scaled(b, 1024, ['B', 'KiB', 'MiB', 'GiB', 'TiB']));
  const fRate = (b) => (b == null ? NA : scaled(b * 8, 1000, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s']));
  const fMs = (x) => (x == null ? NA : (x >= 100 ? x.toFixed(0) : x.toFixed(1)) + ' ms');
  const fLoss = (x) => (x == null ? NA : (x === 0 ? '0' : String(+(x * 100).toPrecision(2))) + '%');
  const fNum = (x) => (x == null ? NA : String(Math.round(x * 10) / 10));
  function fAge(x) {
    if (x == null) return NA;
    if (x < 60) return x.toFixed(x < 10 ? 1 : 0) + ' s';
    if (x < 3600) return `${Math.floor(x / 60)} min ${Math.floor(x % 60)} s`;
    return x < 86400 ? (x / 3600).toFixed(1) + ' h' : (x / 86400).toFixed(1) + ' d';
  }
  const fHops = (hops) => (hops && hops.length ? hops.join(' → ') : NA);
  const stateWord = (st) => (st === 'one_sided' ? 'one-sided' : st || 'unknown');
  const lossCls = (l) => (l == null ? 'loss-unk' : l < 0.01 ? 'loss-ok' : l < 0.05 ? 'loss-warn' : 'loss-bad');
  const yn = (b) => (b ? 'yes' : 'no');
  const scheduler = () => (state ? state.kind : session && session.kind) === 'scheduler';
  const canAct = () => !!(session && session.actions && scheduler());

  // ---- HTTP ----------------------------------------------------------------
  class HttpError extends Error { constructor(status, msg) { super(msg); this.status = status; } }
  async function api(path, body) {
    const opt = { credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      opt.method = 'POST';
      opt.headers['Content-Type'] = 'application/json';
      if (csrf) opt.headers['X-CSRF-Token'] = csrf;
      opt.body = JSON.stringify(body);
    }
    const r = await fetch(path, opt);
    let j = null;
    try { j = await r.json(); } catch (_) { /* not JSON */ }
    if (r.status === 401 && path !== '/console/login') {
      needLogin('Your session has ended or a token is needed: log in.', body === undefined);
    }
    if (!r.ok) throw new HttpError(r.status, (j && j.error) || `${r.status} ${r.statusText}`);
    return j;
  }

  // ---- session, login, live stream ----------------------------------------
  function setLive(open, text) {
    document.body.dataset.live = open ? 'open' : 'closed';
    const st = $('live-status');
    st.dataset.state = open ? 'open' : text === 'reconnecting' ? 'retry' : 'closed';
    setText($('live-text'), open ? 'connected' : text || 'disconnected');
  }
  async function boot() {
    clearTimeout(retry);
    try { session = await api('/api/console/session'); } catch (e) {
      setLive(false, 'server unreachable, retrying');
      retry = setTimeout(boot, 4000);
      return;
    }
    csrf = session.csrf || csrf;
    renderSession();
    if (session.login_required && !session.authenticated) { needLogin('', true); return; }
    startConsole();
  }
  function renderSession() {
    $('logout').hidden = !(session && session.authenticated && (session.login_required || session.actions));
    renderKind();
    renderActions();
  }
  function needLogin(msg, hideConsole) {
    if (hideConsole) {
      stopLive();
      $('console').hidden = true;
      $('filter-box').hidden = true;
      setLive(false, 'login required');
    }
    $('login').hidden = false;
    setText($('login-why'), msg || 'This console needs a token: paste it below.');
    $('login-token').focus();
  }
  async function startConsole() {
    $('login').hidden = true;
    $('console').hidden = false;
    $('filter-box').hidden = false;
    try {
      const [st, hi] = await Promise.all([api('/api/console/state'), api('/api/console/history').catch(() => null)]);
      loadHistory(hi);
      setState(st);
    } catch (e) {
      if (e.status === 401) return;
    }
    openLive();
  }
  function stopLive() { if (es) { es.close(); es = null; } clearTimeout(retry); }
  function openLive() {
    stopLive();
    const src = new EventSource('/api/console/live');
    let dropped = false;
    es = src;
    src.onopen = () => {
      setLive(true);
      if (dropped) {
        // Each stream starts with every kept event; the server may have restarted and
        // numbered them afresh, so rebuild the list from it rather than merge.
        events = [];
        api('/api/console/history').then(loadHistory, () => {});
      }
      dropped = false;
    };
    src.onerror = () => {
      if (es !== src) return;
      dropped = true;
      if (src.readyState === EventSource.CLOSED) {
        // The browser gave up (401, or not an event stream): ask the session why.
        es = null;
        setLive(false, 'disconnected, retrying');
        retry = setTimeout(recheck, 3000);
      } else setLive(false, 'reconnecting');
    };
    const on = (name, fn) => src.addEventListener(name, (e) => {
      let d;
      try { d = JSON.parse(e.data); } catch (_) { return; }
      fn(d);
    });
    on('state', setState);
    on('events', (list) => mergeEvents(Array.isArray(list) ? list : [], false));
    on('sample', addSample);
  }
  async function recheck() {
    try { session = await api('/api/console/session'); } catch (_) { retry = setTimeout(recheck, 5000); return; }
    csrf = session.csrf || csrf;
    renderSession();
    if (session.login_required && !session.authenticated) needLogin('Your session has ended: log in again.', true);
    else openLive();
  }

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const inp = $('login-token'), err = $('login-error');
    err.textContent = '';
    try {
      const r = await api('/console/login', { token: inp.value });
      csrf = (r && r.csrf) || null;
      inp.value = '';
      boot();
    } catch (x) {
      err.textContent = x.status === 401 ? `That token was not accepted (${x.message}).` : `Login failed: ${x.message}`;
    }
  });
  $('logout').addEventListener('click', async () => {
    try { await api('/console/logout', {}); } catch (_) { /* the cookie may be gone already */ }
    csrf = null; session = null;
    stopLive();
    boot();
  });
  $('actions-login').addEventListener('click', () => needLogin('Log in with the scheduler\u2019s admin token to enable actions.', false));

  // ---- model updates -------------------------------------------------------
  function setState(st) {
    if (!st || typeof st !== 'object') return;
    state = st;
    window.consoleState = st;
    for (const k of ['nodes', 'links', 'routes', 'flows', 'events']) if (!Array.isArray(st[k])) st[k] = [];
    presence();
    if (st.events.length) mergeEvents(st.events, true);
    render();
  }
  function mergeEvents(list, fromState) {
    const ok = list.filter((e) => e && typeof e.seq === 'number');
    if (!ok.length) return;
    // A later event with a lower number than our newest: the server restarted, start over.
    const top = ok.reduce((a, e) => (e.seq > a.seq ? e : a));
    if (fromState && events.length && top.seq < events[0].seq && top.at_ms > events[0].at_ms) events = [];
    const by = new Map(events.map((e) => [e.seq, e]));
    for (const e of ok) by.set(e.seq, e);
    events = [...by.values()].sort((x, y) => y.seq - x.seq).slice(0, MAX_EVENTS);
    renderEvents();
  }
  function loadHistory(hi) {
    if (!hi || typeof hi !== 'object') return;
    const links = new Map(), nodes = new Map();
    for (const l of hi.links || []) links.set(lkey(l), { pts: (l.points || []).slice(-MAX_POINTS), gone: null });
    for (const n of hi.nodes || []) nodes.set(n.id, { pts: (n.points || []).slice(-MAX_POINTS), gone: null });
    hist.links = links; hist.nodes = nodes;
    presence();
    renderHistory();
  }
  function push(map, k, p) {
    let se = map.get(k);
    if (!se) { se = { pts: [], gone: null }; map.set(k, se); }
    const pts = se.pts;
    if (pts.length && pts[pts.length - 1][0] >= p[0]) return; // duplicate or out of order
    pts.push(p);
    let cut = Math.max(0, pts.length - MAX_POINTS);
    while (cut < pts.length && pts[cut][0] < p[0] - HOUR) cut++;
    if (cut) pts.splice(0, cut);
  }
  function addSample(sm) {
    if (!sm || typeof sm.t_ms !== 'number') return;
    for (const l of sm.links || []) push(hist.links, lkey(l), [sm.t_ms, l.rtt_ms, l.loss, l.throughput_bytes_per_sec]);
    for (const n of sm.nodes || []) push(hist.nodes, n.id, [sm.t_ms, n.flows, n.bytes_per_sec]);
    presence();
    renderHistory();
  }
  // Series of links/nodes absent from the state for over an hour are dropped.
  function presence() {
    if (!state) return;
    const now = Date.now();
    const mark = (map, keys) => {
      for (const [k, se] of map) {
        if (keys.has(k)) se.gone = null;
        else if (se.gone == null) se.gone = now;
        else if (now - se.gone > HOUR) map.delete(k);
      }
    };
    mark(hist.links, new Set(state.links.map(lkey)));
    mark(hist.nodes, new Set(state.nodes.map((n) => n.id)));
  }

  // ---- rendering -----------------------------------------------------------
  function render() {
    if (!state) return;
    renderKind();
    renderActions();
    renderMap();
    for (const id of Object.keys(TABLES)) renderTable(id);
    renderRouteInfo();
    renderHistory();
  }
  function renderKind() {
    const kind = (state && state.kind) || (session && session.kind) || '';
    const self = state && state.self_id;
    setText($('kind'), kind === 'node' ? `node ${self || ''}`.trim() : kind === 'scheduler' ? 'scheduler · whole mesh' : kind);
    $('kind').dataset.kind = kind;
    if (state && state.generated_at_ms) setText($('updated'), 'updated ' + hms(state.generated_at_ms));
  }
  function renderActions() {
    const sch = scheduler(), can = canAct();
    $('actions-body').hidden = !can;
    $('actions-note').hidden = can;
    const noToken = !!session && !session.login_required;
    $('actions-login').hidden = can || !sch || noToken || !$('login').hidden;
    setText($('actions-note'), !sch
      ? 'Actions (join tokens, removing nodes, pinning routes) are done on the scheduler\u2019s console.'
      : noToken
        ? 'Actions (join tokens, removing nodes, pinning routes) need an admin token: set admin_token in the scheduler\u2019s config and log in with it.'
        : 'Actions (join tokens, removing nodes, pinning routes) need the scheduler\u2019s admin token: log in with it.');
  }

  // Map ---------------------------------------------------------------------
  // Positions are in the map's own pixels (so labels keep their size); they change only when
  // the node set or the map's size changes. A mesh too big for the box is zoomed out.
  function layout(nodes, W, H) {
    const groups = new Map();
    for (const n of nodes) {
      const r = n.region || '(no region)';
      if (!groups.has(r)) groups.set(r, []);
      groups.get(r).push(n.id);
    }
    const regs = [...groups.keys()];
    const rad = (k) => (k <= 1 ? 0 : Math.min(130, 24 + 15 * k));
    const ring = Math.max(0, ...regs.map((r) => rad(groups.get(r).length))) + 42;
    const cx = W / 2, cy = H / 2 + 8;
    const ry = Math.max(0, H / 2 - ring - 30), rx = Math.max(0, W / 2 - ring - 70);
    const p = new Map(), out = [];
    regs.forEach((r, i) => {
      const n = regs.length, a = -Math.PI / 2 + (n % 2 ? 0 : Math.PI / n) + (i * 2 * Math.PI) / n;
      const x = regs.length === 1 ? cx : cx + rx * Math.cos(a);
      const y = regs.length === 1 ? cy : cy + ry * Math.sin(a);
      const ids = groups.get(r), k = ids.length, R = rad(k);
      // A pair lies across the radius and a larger group points one node outwards, so that
      // links to other regions do not run through a region's own nodes.
      const start = regs.length === 1 ? (k === 2 ? Math.PI : -Math.PI / 2) : a + (k === 2 ? Math.PI / 2 : 0);
      ids.forEach((id, j) => {
        const b = start + (j * 2 * Math.PI) / k;
        p.set(id, { x: x + R * Math.cos(b), y: y + R * Math.sin(b) });
      });
      out.push({ name: r, x, y, r: R + 42 });
    });
    const half = (r) => Math.max(r.r, r.name.length * 5.5);
    const x0 = Math.min(0, ...out.map((r) => r.x - half(r) - 8)), x1 = Math.max(W, ...out.map((r) => r.x + half(r) + 8));
    const y0 = Math.min(0, ...out.map((r) => r.y - r.r - 28)), y1 = Math.max(H, ...out.map((r) => r.y + r.r + 4));
    return { p, regions: out, box: [x0, y0, x1 - x0, y1 - y0].map((v) => v.toFixed(0)).join(' ') };
  }
  function routeSets() {
    const path = new Set(), alt = new Set(), nodes = new Set();
    const r = selRoute();
    if (r) {
      for (const pa of r.paths || []) {
        const hp = pa.hops || [];
        hp.forEach((x, i) => { nodes.add(x); if (i) path.add(pair(hp[i - 1], x)); });
      }
      for (const pa of r.alternatives || []) {
        const hp = pa.hops || [];
        hp.forEach((x, i) => { if (i) alt.add(pair(hp[i - 1], x)); });
      }
    }
    return { path, alt, nodes };
  }
  // RTT labels sit at a link's midpoint unless that hides a node or another label: then a
  // little along or beside the line. Depends only on the layout and the set of links.
  let labelKey = '', labelPos = new Map();
  function placeLabels(links) {
    const key = layoutKey + '\u0002' + links.map(lkey).sort().join(',');
    if (key === labelKey) return labelPos;
    const boxes = [];
    for (const [id, p] of pos) boxes.push([p.x, p.y, 34, 34], [p.x, p.y + 27, id.length * 7.6 + 4, 16]);
    const hit = (x, y) => boxes.some(([bx, by, bw, bh]) => Math.abs(bx - x) * 2 < bw + 54 && Math.abs(by - y) * 2 < bh + 16);
    const out = new Map();
    for (const l of [...links].sort((x, y) => (lkey(x) < lkey(y) ? -1 : 1))) {
      const A = pos.get(l.a), B = pos.get(l.b), dx = B.x - A.x, dy = B.y - A.y, len = Math.hypot(dx, dy) || 1;
      let at = [A.x + dx / 2, A.y + dy / 2];
      search: for (const o of [0, 13, -13]) {
        for (const t of [0.5, 0.4, 0.6, 0.32, 0.68]) {
          const x = A.x + dx * t - (dy / len) * o, y = A.y + dy * t + (dx / len) * o;
          if (!hit(x, y)) { at = [x, y]; break search; }
        }
      }
      boxes.push([at[0], at[1], 54, 16]);
      out.set(lkey(l), at);
    }
    labelKey = key; labelPos = out;
    return out;
  }
  function filterText() { return $('filter').value.trim().toLowerCase(); }
  function renderMap() {
    const nodes = [...state.nodes].sort((x, y) => (x.region || '').localeCompare(y.region || '') || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    const map = $('map'), W = Math.round(map.clientWidth) || 1000, H = Math.round(map.clientHeight) || 560;
    const key = W + 'x' + H + '\u0001' + nodes.map((n) => n.region + '\u0000' + n.id).join('\u0001');
    if (key !== layoutKey) {
      layoutKey = key;
      const lay = layout(nodes, W, H);
      pos = lay.p;
      map.setAttribute('viewBox', lay.box);
      reconcile($('map-regions'), lay.regions, (r) => r.name, () => {
        const g = s('g', { class: 'region' });
        g.append(s('circle', {}), s('text', { class: 'region-label', 'text-anchor': 'middle' }));
        return g;
      }, (g, r) => {
        const [c, t] = g.children;
        c.setAttribute('cx', r.x); c.setAttribute('cy', r.y); c.setAttribute('r', r.r);
        t.setAttribute('x', r.x); t.setAttribute('y', r.y - r.r - 8);
        t.textContent = r.name;
      });
    }
    const q = filterText();
    const { path, alt, nodes: onNodes } = routeSets();
    const links = state.links.filter((l) => pos.has(l.a) && pos.has(l.b));
    const rank = (l) => (path.has(pair(l.a, l.b)) ? 2 : alt.has(pair(l.a, l.b)) ? 1 : 0);
    const match = (n) => !q || [n.id, n.region, n.address, n.state].join(' ').toLowerCase().includes(q);
    const shown = new Set(nodes.filter(match).map((n) => n.id));
    links.sort((x, y) => rank(x) - rank(y) || (lkey(x) < lkey(y) ? -1 : 1));
    const lab = placeLabels(links);
    reconcile($('map-links'), links, lkey, (l) => {
      const g = s('g', { class: 'link', 'data-a': l.a, 'data-b': l.b });
      g.append(s('title', {}), s('line', {}), s('text', { class: 'rtt-label', 'text-anchor': 'middle', dy: '0.35em' }));
      return g;
    }, (g, l) => {
      const [title, line, label] = g.children;
      const A = pos.get(l.a), B = pos.get(l.b), k = pair(l.a, l.b);
      line.setAttribute('x1', A.x); line.setAttribute('y1', A.y);
      line.setAttribute('x2', B.x); line.setAttribute('y2', B.y);
      const bits = (l.throughput_bytes_per_sec || 0) * 8;
      const w = 1.5 + 4.5 * Math.min(1, Math.max(0, Math.log10(Math.max(bits, 1) / 1e4) / 5));
      setAttr(line, 'stroke-width', w.toFixed(1));
      setAttr(g, 'data-state', l.state);
      setAttr(g, 'class', `link ${lossCls(l.loss)}${l.used ? '' : ' unused'}${shown.has(l.a) || shown.has(l.b) || lkey(l).toLowerCase().includes(q) ? '' : ' dim'}`);
      setAttr(g, 'data-on-path', path.has(k) ? '1' : null);
      setAttr(g, 'data-alt', alt.has(k) ? '1' : null);
      const parts = [l.rtt_ms != null ? fMs(l.rtt_ms) : 'no RTT'];
      if (l.loss != null) parts.push(fLoss(l.loss) + ' loss');
      if (l.throughput_bytes_per_sec != null) parts.push(fRate(l.throughput_bytes_per_sec));
      parts.push(stateWord(l.state) + (l.used ? '' : ' (unused)'));
      setText(title, `${l.a}–${l.b}: ${parts.join(', ')}`);
      const [lx, ly] = lab.get(lkey(l));
      setAttr(label, 'x', lx.toFixed(1)); setAttr(label, 'y', ly.toFixed(1));
      setText(label, l.state === 'dead' ? 'dead' : l.rtt_ms != null ? fMs(l.rtt_ms) : stateWord(l.state));
    });
    const self = state.self_id;
    reconcile($('map-nodes'), nodes, (n) => n.id, (n) => {
      const g = s('g', { class: 'node', 'data-node': n.id });
      g.append(s('title', {}), s('circle', { r: 14 }), s('text', { class: 'node-label', 'text-anchor': 'middle', y: 31 }));
      g.addEventListener('click', () => {
        const f = $('filter');
        f.value = f.value === n.id ? '' : n.id;
        render();
      });
      return g;
    }, (g, n) => {
      const [title, , text] = g.children;
      const p = pos.get(n.id);
      setAttr(g, 'transform', `translate(${p.x.toFixed(1)},${p.y.toFixed(1)})`);
      setAttr(g, 'data-state', n.state);
      setAttr(g, 'class', `node${n.id === self ? ' self' : ''}${shown.has(n.id) ? '' : ' dim'}`);
      setAttr(g, 'data-on-path', onNodes.has(n.id) ? '1' : null);
      setText(text, n.id);
      const bits = [n.region, n.address];
      if (n.flows != null) bits.push(`${n.flows} flows`);
      if (n.bytes_per_sec != null) bits.push(fRate(n.bytes_per_sec));
      if (n.last_seen_secs != null) bits.push(`last seen ${fAge(n.last_seen_secs)} ago`);
      if (n.relay) bits.push('relay');
      setText(title, `${n.id}${n.id === self ? ' (this node)' : ''} (${n.state}) — ${bits.filter(Boolean).join(', ')}`);
    });
    const dead = state.links.filter((l) => l.state === 'dead').length;
    const one = state.links.filter((l) => l.state === 'one_sided').length;
    const down = state.nodes.filter((n) => n.state === 'down').length;
    setAttr(map, 'aria-label', `Mesh map: ${state.nodes.length} nodes (${down} down) in ${new Set(state.nodes.map((n) => n.region)).size} regions, ` +
      `${state.links.length} links (${dead} dead, ${one} one-sided). Details are in the tables below.`);
  }

  // Tables ------------------------------------------------------------------
  // A column: header, sort value (a field name or a function) and text (from the value and row).
  const col = (h, v, t, x) => {
    const g = typeof v === 'string' ? (r) => r[v] : v;
    return { h, v: g, t: t ? (r) => t(g(r), r) : (r) => (g(r) == null ? NA : String(g(r))), ...x };
  };
  const num = { num: true }, hops = { cls: 'hops' };
  const stCls = (st) => (st === 'up' ? 'st-ok' : st === 'dead' || st === 'down' ? 'st-bad' : 'st-warn');
  const hopsCost = (p, w) => fHops(p.hops) + (w ? ` ×${fNum(p.weight)}` : '') + (p.cost_ms != null ? ` (${fMs(p.cost_ms)})` : '');
  const acts = (cell) => (canAct() ? [{ h: 'Actions', act: true, cell }] : []);
  const TABLES = {
    'routes-table': {
      rows: () => state.routes, key: (r) => r.node + '|' + r.route, empty: 'no routes reported',
      cols: () => [
        col('Node', 'node'), col('Route', 'route'), col('Exit', 'exit'), col('Objective', 'objective'),
        col('Path(s)', (r) => fHops(((r.paths || [])[0] || {}).hops), (_, r) => {
          const ps = r.paths || [];
          return ps.map((p) => hopsCost(p, ps.length > 1)).join('\n') || 'no path';
        }, hops),
        col('Alternatives', (r) => (r.alternatives || []).length, (_, r) => (r.alternatives || []).map((p) => hopsCost(p)).join('\n') || NA, hops),
        col('Version', 'instruction_version', null, num), col('Age', 'age_secs', fAge, num),
        col('Stale', 'stale', (v) => (v ? 'stale' : 'no'), { c: (r) => (r.stale ? 'st-warn' : '') }),
        col('Pinned', 'pinned', (v) => (v ? 'pinned' : 'no'), { c: (r) => (r.pinned ? 'st-info' : '') }),
      ].concat(acts(routeButtons)),
    },
    'nodes-table': {
      rows: () => state.nodes, key: (n) => n.id, empty: 'no nodes reported',
      cols: () => [
        col('Id', 'id', (v) => v + (v === state.self_id ? ' (this node)' : '')), col('Region', 'region'), col('Address', 'address'),
        col('State', 'state', null, { c: (n) => stCls(n.state) }),
        col('Last seen', 'last_seen_secs', (v) => (v == null ? NA : fAge(v) + ' ago'), num),
        col('Flows', 'flows', null, num), col('Rate', 'bytes_per_sec', fRate, num),
        col('Instr. version', 'instruction_version', null, num), col('Relay', 'relay', yn),
      ].concat(acts(nodeButtons)),
    },
    'links-table': {
      rows: () => state.links, key: lkey, empty: 'no links reported',
      cols: () => [
        col('A', 'a'), col('B', 'b'), col('State', 'state', stateWord, { c: (l) => stCls(l.state) }),
        col('RTT', 'rtt_ms', fMs, num),
        col('Loss', 'loss', fLoss, { num: true, c: (l) => ({ 'loss-warn': 'st-warn', 'loss-bad': 'st-bad' })[lossCls(l.loss)] }),
        col('Throughput', 'throughput_bytes_per_sec', fRate, num), col('Capacity', 'capacity_bytes_per_sec', fRate, num),
        col('Transport', 'transport'), col('Used', 'used', yn),
      ],
    },
    'flows-table': {
      rows: () => state.flows, key: (f) => f.id + '|' + f.route, empty: 'no flows reported',
      cols: () => [
        col('Id', 'id'), col('Route', 'route'), col('Bytes', 'bytes', fBytes, num), col('Rate', 'rate_bytes_per_sec', fRate, num),
        col('Age', 'age_secs', fAge, num), col('Path', (f) => fHops(f.path), null, hops),
      ],
    },
  };
  function cmp(x, y) {
    if (x == null || x === '') return y == null || y === '' ? 0 : 1;
    if (y == null || y === '') return -1;
    if (typeof x === 'number' && typeof y === 'number') return x - y;
    if (typeof x === 'boolean') return Number(x) - Number(y);
    return String(x).localeCompare(String(y), undefined, { numeric: true });
  }
  function renderTable(id) {
    const T = TABLES[id], table = $(id), cols = T.cols();
    const srt = sorts[id] || (sorts[id] = { col: 0, dir: 1 });
    if (srt.col >= cols.length || cols[srt.col].act) srt.col = 0;
    const sig = cols.map((c) => c.h).join('|');
    if (table._sig !== sig) {
      table._sig = sig;
      const tr = h('tr');
      cols.forEach((c, i) => tr.append(h('th', { scope: 'col', class: c.num ? 'num' : null }, c.act
        ? h('span', { class: 'sr-only', text: c.h })
        : h('button', { type: 'button', class: 'sort', onclick: () => { srt.dir = srt.col === i ? -srt.dir : 1; srt.col = i; renderTable(id); } },
          c.h, h('span', { class: 'arrow', 'aria-hidden': 'true' })))));
      table.replaceChildren(h('thead', {}, tr), h('tbody'));
    }
    [...table.tHead.rows[0].cells].forEach((th, i) => {
      const on = srt.col === i;
      setAttr(th, 'aria-sort', on ? (srt.dir > 0 ? 'ascending' : 'descending') : null);
      const ar = th.querySelector('.arrow');
      if (ar) setText(ar, on ? (srt.dir > 0 ? ' ▲' : ' ▼') : '');
    });
    const q = filterText(), all = T.rows();
    let rows = all;
    if (q) rows = rows.filter((r) => cols.some((c) => !c.act && c.t(r).toLowerCase().includes(q)));
    const sc = cols[srt.col];
    rows = [...rows].sort((a, b) => srt.dir * cmp(sc.v(a), sc.v(b)) || cmp(T.key(a), T.key(b)));
    const body = table.tBodies[0];
    reconcile(body, rows, T.key, (r) => {
      const tr = h('tr');
      for (const c of cols) tr.append(h('td', { class: c.cls || null }));
      if (id === 'routes-table') { tr.tabIndex = 0; tr.dataset.routeNode = r.node; tr.dataset.route = r.route; }
      return tr;
    }, (tr, r) => {
      cols.forEach((c, i) => {
        const td = tr.children[i];
        if (c.act) { c.cell(td, r); return; }
        setText(td, c.t(r));
        const cl = [c.cls, c.num ? 'num' : null, c.c ? c.c(r) : null].filter(Boolean).join(' ');
        if (td.className !== cl) td.className = cl;
      });
      if (id === 'routes-table') {
        const on = !!sel && sel.node === r.node && sel.route === r.route;
        setAttr(tr, 'aria-selected', on ? 'true' : null);
      }
    });
    if (!rows.length) body.append(h('tr', { class: 'empty' }, h('td', { colspan: cols.length, text: all.length ? `no rows match “${q}”` : T.empty })));
    setText($(id.replace('table', 'count')), rows.length === all.length ? `(${all.length})` : `(${rows.length} of ${all.length})`);
  }
  function routeButtons(td, r) {
    const sig = `${r.node}|${r.route}|${r.pinned}`;
    if (td._sig === sig) return;
    td._sig = sig;
    const name = `${r.node}/${r.route}`;
    td.replaceChildren(h('button', { type: 'button', class: 'small pin-route', 'data-node': r.node, 'data-route': r.route, 'aria-label': `Pin route ${name} to its current path`, text: 'Pin' }));
    if (r.pinned) td.append(h('button', { type: 'button', class: 'small unpin-route', 'data-node': r.node, 'data-route': r.route, 'aria-label': `Unpin route ${name}`, text: 'Unpin' }));
  }
  function nodeButtons(td, n) {
    if (td._sig === n.id) return;
    td._sig = n.id;
    td.replaceChildren(h('button', { type: 'button', class: 'small danger remove-node', 'data-node': n.id, 'aria-label': `Remove node ${n.id}`, text: 'Remove' }));
  }

  // Route selection -----------------------------------------------------------
  function selRoute() {
    return sel && state ? state.routes.find((r) => r.node === sel.node && r.route === sel.route) : null;
  }
  function select(node, route) {
    sel = node == null ? null : { node, route };
    renderMap();
    renderTable('routes-table');
    renderRouteInfo();
  }
  function renderRouteInfo() {
    const r = selRoute(), info = $('route-info');
    $('clear-route').hidden = !sel;
    if (!sel) return setText(info, 'Select a route (table below) to show its paths.');
    if (!r) return setText(info, `Route ${sel.node}/${sel.route} is no longer reported.`);
    const ps = r.paths || [];
    const what = ps.length > 1 ? `${ps.length} paths: ` + ps.map((p) => fHops(p.hops)).join(' and ') : ps.length ? fHops(ps[0].hops) : 'no path';
    const alts = (r.alternatives || []).length;
    setText(info, `${r.node}/${r.route} → ${r.exit}: ${what}${alts ? ` · ${alts} alternative${alts > 1 ? 's' : ''} dashed` : ''}${r.pinned ? ' · pinned' : ''}`);
  }
  const rtab = $('routes-table');
  rtab.addEventListener('click', (e) => {
    if (e.target.closest('button')) return;
    const tr = e.target.closest('tr[data-route]');
    if (tr) select(tr.dataset.routeNode, tr.dataset.route);
  });
  rtab.addEventListener('keydown', (e) => {
    const tr = e.target;
    if (!(tr instanceof HTMLTableRowElement) || !tr.dataset.route) return;
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(tr.dataset.routeNode, tr.dataset.route); }
    else if (e.key === 'Escape') select(null);
    else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const next = e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
      if (next && next.tabIndex === 0) { e.preventDefault(); next.focus(); }
    }
  });
  let resizing = 0;
  new ResizeObserver(() => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(() => { if (state) renderMap(); });
  }).observe($('map'));
  $('clear-route').addEventListener('click', () => select(null));
  $('filter').addEventListener('input', () => { if (state) { renderMap(); for (const id of Object.keys(TABLES)) renderTable(id); } });

  // Events ------------------------------------------------------------------
  const BAD = new Set(['link_down', 'node_down', 'node_removed', 'reload_refused']);
  const GOOD = new Set(['link_up', 'node_up', 'node_joined', 'cert_renewed', 'reload_applied']);
  function renderEvents() {
    reconcile($('events'), events, (e) => e.seq, (e) => {
      const tone = BAD.has(e.kind) ? 'bad' : GOOD.has(e.kind) ? 'good' : 'info';
      return h('li', {},
        h('time', { datetime: new Date(e.at_ms).toISOString(), text: hms(e.at_ms) }),
        h('span', { class: 'badge ' + tone, text: String(e.kind || 'event').replace(/_/g, ' ') }),
        h('span', { class: 'etext', text: e.text || '' }));
    }, () => {});
    if (!events.length) $('events').append(h('li', { class: 'muted', text: 'no events yet' }));
  }

  // History -------------------------------------------------------------------
  function spark(name, fmt, zero) {
    const svg = s('svg', { class: 'spark', viewBox: '0 0 120 28', preserveAspectRatio: 'none', role: 'img' });
    svg.append(s('path', {}));
    const row = h('div', { class: 'srow' }, h('span', { class: 'k', text: name }), svg, h('span', { class: 'v' }));
    row._draw = (pts, i, label) => {
      const last = pts.length ? pts[pts.length - 1] : null;
      const sig = pts.length + ':' + (last ? last[0] + ':' + last[i] : '');
      if (svg._sig === sig) return;
      svg._sig = sig;
      let lo = Infinity, hi = -Infinity;
      for (const p of pts) if (p[i] != null) { lo = Math.min(lo, p[i]); hi = Math.max(hi, p[i]); }
      const path = svg.firstChild;
      const v = last ? last[i] : null;
      setText(row.lastChild, fmt(v));
      if (lo === Infinity) {
        path.setAttribute('d', '');
        svg.setAttribute('aria-label', `${label} ${name}: no data in the last hour`);
        return;
      }
      let b0 = zero ? 0 : lo, b1 = hi;
      const m = Math.max((b1 - b0) * 0.12, Math.abs(b1) * 0.02, 1e-9);
      if (!zero) b0 = Math.max(0, b0 - m);
      b1 += m;
      const t1 = last[0], t0 = t1 - HOUR;
      let d = '', pen = false;
      for (const p of pts) {
        if (p[0] < t0 || p[i] == null) { pen = false; continue; }
        d += (pen ? 'L' : 'M') + (((p[0] - t0) / HOUR) * 118 + 1).toFixed(1) + ' ' + (27 - ((p[i] - b0) / (b1 - b0)) * 26).toFixed(1);
        pen = true;
      }
      path.setAttribute('d', d);
      svg.setAttribute('aria-label', `${label} ${name}: latest ${fmt(v)}, min ${fmt(lo)}, max ${fmt(hi)} over the last hour`);
    };
    return row;
  }
  function renderHistory() {
    if (!state) return;
    const links = [...state.links].sort((x, y) => (lkey(x) < lkey(y) ? -1 : 1));
    reconcile($('history-links'), links, lkey, (l) => h('article', { class: 'hcard', 'data-link': lkey(l) },
      h('h4', {}, `${l.a}–${l.b} `, h('span', { class: 'hst' })),
      spark('RTT', fMs, false), spark('Loss', fLoss, true), spark('Throughput', fRate, true)), (card, l) => {
      const hs = card.querySelector('.hst');
      setText(hs, stateWord(l.state));
      hs.className = 'hst ' + stCls(l.state);
      const pts = (hist.links.get(lkey(l)) || { pts: [] }).pts, rows = card.querySelectorAll('.srow');
      rows.forEach((r, i) => r._draw(pts, i + 1, `${l.a}–${l.b}`));
    });
    const nodes = [...state.nodes].sort((x, y) => (x.id < y.id ? -1 : 1));
    reconcile($('history-nodes'), nodes, (n) => n.id, (n) => h('article', { class: 'hcard', 'data-hnode': n.id },
      h('h4', {}, n.id + ' ', h('span', { class: 'hst' })), spark('Flows', fNum, true), spark('Rate', fRate, true)), (card, n) => {
      const hs = card.querySelector('.hst');
      setText(hs, n.state);
      hs.className = 'hst ' + stCls(n.state);
      const pts = (hist.nodes.get(n.id) || { pts: [] }).pts, rows = card.querySelectorAll('.srow');
      rows.forEach((r, i) => r._draw(pts, i + 1, n.id));
    });
  }

  // Actions -------------------------------------------------------------------
  let msgTimer = 0;
  function say(ok, text) {
    clearTimeout(msgTimer);
    setText($('action-status'), ok ? text : '');
    setText($('action-error'), ok ? '' : text);
    if (text) msgTimer = setTimeout(() => say(true, ''), ok ? 6000 : 20000);
  }
  async function act(btn, what, path, body, done) {
    say(true, '');
    if (btn) btn.disabled = true;
    try { say(true, done(await api(path, body))); } catch (e) { say(false, `${what} failed: ${e.message}`); } finally { if (btn) btn.disabled = false; }
  }
  document.addEventListener('click', (e) => {
    const b = e.target.closest('button.remove-node, button.pin-route, button.unpin-route');
    if (!b) return;
    const node = b.dataset.node, route = b.dataset.route;
    if (b.classList.contains('remove-node')) {
      if (!confirm(`Remove node ${node}? The scheduler closes its session and forgets it; it needs a new join token to come back.`)) return;
      act(b, `Removing ${node}`, '/api/console/actions/remove', { node }, (r) => `Removed node ${(r && r.removed) || node}.`);
    } else if (b.classList.contains('pin-route')) {
      const r = state && state.routes.find((x) => x.node === node && x.route === route);
      const hops = r && r.paths && r.paths[0] && r.paths[0].hops;
      if (!hops || hops.length < 2) return say(false, `Pinning ${node}/${route} failed: it has no current path.`);
      const relays = hops.slice(1, -1);
      act(b, `Pinning ${node}/${route}`, '/api/console/actions/pin', { node, route, relays },
        () => `Pinned ${node}/${route} to ${relays.length ? 'relays ' + relays.join(', ') : 'the direct path'}.`);
    } else {
      act(b, `Unpinning ${node}/${route}`, '/api/console/actions/unpin', { node, route }, () => `Unpinned ${node}/${route}.`);
    }
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const ttl = Number($('token-ttl').value), uses = Number($('token-uses').value), nodeId = $('token-node').value.trim() || null;
    if (!(Number.isInteger(ttl) && ttl > 0 && Number.isInteger(uses) && uses > 0)) return say(false, 'Validity and uses must be whole numbers above 0.');
    act(e.submitter || null, 'Creating a token', '/api/console/actions/token', { ttl_secs: ttl, uses, node_id: nodeId }, (r) => {
      const code = h('code', { text: r.token });
      const copy = h('button', { type: 'button', class: 'small copy', 'aria-label': 'Copy token' });
      copy.addEventListener('click', () => copyText(code, copy));
      $('token-result').replaceChildren(code, copy);
      const exp = r.expires_at_unix ? new Date(r.expires_at_unix * 1000) : null;
      setText($('token-meta'), `${uses} use${uses > 1 ? 's' : ''}${nodeId ? ', for node ' + nodeId : ''}${exp ? ', expires ' + exp.toLocaleString() : ''}. Shown once: copy it now.`);
      $('token-out').hidden = false;
      return 'Token created.';
    });
  });
  async function copyText(code, btn) {
    try { await navigator.clipboard.writeText(code.textContent); } catch (_) {
      const rg = document.createRange();
      rg.selectNodeContents(code);
      const sl = getSelection(); sl.removeAllRanges(); sl.addRange(rg);
      try { document.execCommand('copy'); } catch (_e) { /* selected: the user can copy */ }
    }
    btn.dataset.copied = '1';
    setTimeout(() => { delete btn.dataset.copied; }, 2000);
  }

  setLive(false, 'connecting');
  renderEvents();
  boot();
})();
