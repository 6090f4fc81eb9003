/* fleetgate dashboard: client of the read-only JSON API under /api/v1 (bearer token auth).
 * Views, chosen by the location hash:
 *   #overview (or empty)              summary cards, expiry and activity plots, groups, backends, audit
 *   #devices[&group=G][&state=S][&after=ID]   paged device list (50 a page)
 *   #device/<url-encoded id>          one device: facts, certificates, commands, history
 * A token given as #token=... is moved into sessionStorage and removed from the address bar.
 * Every API string reaches the DOM as text (createElement / textContent), never as markup. */
'use strict';
(function () {
const API = '/api/v1';
const TOKEN_KEY = 'fleetgate.token';
const PAGE_SIZE = 50;
const SVGNS = 'http://www.w3.org/2000/svg';
const STATE_ORDER = ['active', 'preregistered', 'revoked', 'retired'];
const CERT_KEYS = [['valid', 'Valid'], ['expiring_7d', 'Expiring in 7 d'],
  ['expiring_30d', 'Expiring in 30 d'], ['revoked', 'Revoked'], ['expired', 'Expired']];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

let renderSeq = 0;
// Device paging: cursor of the page before each page, per filter ("stack" of cursors kept as
// links so that the browser's back/forward buttons keep it consistent).
const prevCursor = new Map();
const pageNumber = new Map();

/* ---------- DOM helpers ---------- */
function addKids(el, kids) {
  for (const k of kids) {
    if (k == null || k === false) continue;
    if (Array.isArray(k)) addKids(el, k);
    else if (k instanceof Node) el.appendChild(k);
    else el.appendChild(document.createTextNode(String(k)));
  }
  return el;
}
function setAttrs(el, attrs) {
  if (!attrs) return el;
  for (const key of Object.keys(attrs)) {
    const v = attrs[key];
    if (v == null || v === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), v);
    else el.setAttribute(key, v === true ? '' : String(v));
  }
  return el;
}
function h(tag, attrs, ...kids) { return addKids(setAttrs(document.createElement(tag), attrs), kids); }
function svg(tag, attrs, ...kids) { return addKids(setAttrs(document.createElementNS(SVGNS, tag), attrs), kids); }
function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
const $ = (id) => document.getElementById(id);

/* ---------- formatting ---------- */
function num(v) { const n = Number(v); return Number.isFinite(n) ? n : 0; }
function fmtNum(v) { return num(v).toLocaleString('en-US', { maximumFractionDigits: 1 }); }
function str(v) { return v == null ? '' : typeof v === 'string' ? v : JSON.stringify(v); }
function parseTime(v) {
  if (typeof v !== 'string' || v === '' || v === '-') return null;
  const d = new Date(v);
  return isNaN(d.getTime()) ? null : d;
}
function fmtTime(v, short) {
  const d = parseTime(v);
  if (!d) return v == null || v === '' || v === '-' ? '—' : String(v);
  return d.toISOString().slice(0, short ? 16 : 19).replace('T', ' ');
}
function relTime(v) {
  const d = parseTime(v);
  if (!d) return '';
  const s = (d.getTime() - Date.now()) / 1000, a = Math.abs(s);
  const t = a < 60 ? 'now' : a < 3600 ? Math.round(a / 60) + ' min' : a < 86400 ? Math.round(a / 3600) + ' h' : Math.round(a / 86400) + ' d';
  return t === 'now' ? 'just now' : s > 0 ? 'in ' + t : t + ' ago';
}
function timeEl(v, opts) {
  opts = opts || {};
  const d = parseTime(v);
  const rel = opts.rel && d ? relTime(v) : '';
  return h('span', { class: 'time' },
    h('time', { datetime: d ? v : null, title: d ? v : null }, fmtTime(v, opts.short)),
    rel ? h('span', { class: 'rel' }, ' · ' + rel) : null);
}
function dayLabel(day) {
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(String(day || ''));
  return m ? Number(m[3]) + ' ' + (MONTHS[Number(m[2]) - 1] || m[2]) : String(day || '');
}
function arr(v) { return Array.isArray(v) ? v : []; }
function muted(t) { return h('span', { class: 'muted' }, t); }
function badge(text, kind) { return h('span', { class: 'badge badge-' + (kind || 'neutral') }, text); }
function stateKind(s) {
  return { active: 'ok', valid: 'ok', done: 'ok', delivered: 'info', preregistered: 'info', pending: 'info',
    revoked: 'bad', failed: 'bad', expired: 'warn', retired: 'neutral' }[s] || 'neutral';
}
function auditKind(k) {
  k = String(k || '');
  return /fail|error|reject|deny|denied|invalid/.test(k) ? 'bad' : /revoke/.test(k) ? 'warn' :
    /^cert\./.test(k) ? 'info' : 'neutral';
}
function deviceLink(id) {
  if (id == null || id === '') return muted('—');
  return h('a', { href: '#device/' + encodeURIComponent(id), class: 'mono' }, String(id));
}
function fmtDetail(text) {
  const raw = text && typeof text === 'object' ? JSON.stringify(text) : str(text);
  try {
    const o = JSON.parse(raw);
    if (o && typeof o === 'object' && !Array.isArray(o)) {
      const parts = Object.keys(o).map((k) => k + '=' + (typeof o[k] === 'string' ? o[k] : JSON.stringify(o[k])));
      return parts.join('  ');
    }
  } catch (e) { /* plain text */ }
  return raw;
}
function detailCell(text) {
  return h('td', { class: 'detail', title: text && typeof text === 'object' ? JSON.stringify(text) : str(text) }, fmtDetail(text));
}

function table(id, headers, rows, emptyText) {
  const body = h('tbody', null, rows);
  if (!rows.length) body.appendChild(h('tr', { class: 'empty' }, h('td', { colspan: headers.length }, emptyText)));
  return h('div', { class: 'table-wrap' }, h('table', { id: id, class: 'data' },
    h('thead', null, h('tr', null, headers.map((t) => h('th', { scope: 'col' }, t)))), body));
}
function section(title, extra, ...kids) {
  return h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, title), extra), kids);
}

/* ---------- token and API ---------- */
class AuthError extends Error {}
class ApiError extends Error {}

function getToken() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; } }
function setToken(t) { try { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage off */ } }

function takeTokenFromHash() {
  const raw = location.hash.replace(/^#/, '');
  if (!/(^|&)token=/.test(raw)) return;
  let token = '';
  const keep = raw.split('&').filter((p) => {
    if (!p.startsWith('token=')) return true;
    try { token = decodeURIComponent(p.slice(6).replace(/\+/g, ' ')); } catch (e) { token = p.slice(6); }
    return false;
  });
  if (token.trim()) setToken(token.trim());
  const rest = keep.join('&');
  history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
}

async function api(path) {
  const token = getToken();
  if (!token) throw new AuthError('');
  if (/[^\x21-\x7e]/.test(token)) throw new AuthError('The token contains characters that cannot be sent; paste it again.');
  let resp;
  try {
    resp = await fetch(API + path, { headers: { Authorization: 'Bearer ' + token, Accept: 'application/json' },
      cache: 'no-store', credentials: 'same-origin', redirect: 'error' });
  } catch (e) {
    throw new ApiError('GET ' + API + path + ': cannot reach the gateway (' + e.message + ')');
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  const msg = body && typeof body.error === 'string' && body.error ? body.error : 'HTTP ' + resp.status + ' ' + resp.statusText;
  if (resp.status === 401) { if (getToken() === token) setToken(''); throw new AuthError(msg); }
  if (!resp.ok) throw new ApiError('GET ' + API + path + ' failed: ' + msg);
  if (!body || typeof body !== 'object') throw new ApiError('GET ' + API + path + ': the answer is not a JSON object');
  return body;
}

/* ---------- routing ---------- */
function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, '');
  const amp = raw.indexOf('&');
  const path = amp < 0 ? raw : raw.slice(0, amp);
  const q = new URLSearchParams(amp < 0 ? '' : raw.slice(amp + 1));
  if (path === '' || path === 'overview') return { view: 'overview' };
  if (path === 'devices') return { view: 'devices', group: q.get('group') || '', state: q.get('state') || '', after: q.get('after') || '' };
  if (path.startsWith('device/')) {
    let id = path.slice(7);
    try { id = decodeURIComponent(id); } catch (e) { /* keep raw */ }
    return { view: 'device', id: id };
  }
  return { view: 'unknown', path: path };
}
function devicesHash(group, state, after) {
  let s = '#devices';
  if (group) s += '&group=' + encodeURIComponent(group);
  if (state) s += '&state=' + encodeURIComponent(state);
  if (after) s += '&after=' + encodeURIComponent(after);
  return s;
}

function setGenerated(iso) {
  const t = $('generated');
  t.textContent = fmtTime(iso) + ' UTC';
  t.setAttribute('datetime', String(iso || ''));
  t.title = relTime(iso);
  $('generated-wrap').hidden = !iso;
}
function hideError() { const e = $('error'); e.hidden = true; clear(e); }
function showError(msg) {
  const e = clear($('error'));
  e.appendChild(h('strong', null, 'Error: '));
  e.appendChild(document.createTextNode(msg));
  e.hidden = false;
  document.body.dataset.ready = 'error';
}

async function render() {
  const seq = ++renderSeq;
  delete document.body.dataset.ready;
  const route = parseRoute();
  const view = $('view');
  for (const v of ['overview', 'devices']) {
    const a = $('nav-' + v);
    if ((route.view === v) || (v === 'devices' && route.view === 'device')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  $('sign-out').hidden = !getToken();
  view.classList.add('busy');
  try {
    let node;
    if (route.view === 'overview') node = await overview();
    else if (route.view === 'devices') node = await devices(route);
    else if (route.view === 'device') node = await device(route.id);
    else throw new ApiError('Unknown page "#' + route.path + '". Go to the overview or the device list.');
    if (seq !== renderSeq) return;
    hideError();
    clear(view).appendChild(node);
    document.title = (route.view === 'device' ? route.id + ' · ' : route.view === 'devices' ? 'Devices · ' : '') + 'fleetgate dashboard';
    document.body.dataset.ready = route.view;
  } catch (e) {
    if (seq !== renderSeq) return;
    if (e instanceof AuthError) {
      hideError();
      clear(view).appendChild(tokenForm(e.message));
      $('sign-out').hidden = true;
      $('token-input').focus();
      document.body.dataset.ready = 'auth';
    } else {
      clear(view);
      if (!(e instanceof ApiError)) console.error(e);
      showError(e instanceof ApiError ? e.message : 'the page failed to render: ' + e.message);
    }
  } finally {
    if (seq === renderSeq) view.classList.remove('busy');
  }
}

function tokenForm(errorText) {
  const input = h('input', { id: 'token-input', name: 'token', type: 'password', autocomplete: 'off',
    spellcheck: 'false', placeholder: 'API token', 'aria-describedby': 'auth-error', required: true });
  const err = h('p', { id: 'auth-error', class: 'auth-error', role: 'alert', hidden: !errorText }, errorText || '');
  const form = h('form', { id: 'token-form', class: 'token-form', novalidate: true, onsubmit: (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    if (!t) { err.textContent = 'Enter a token.'; err.hidden = false; return; }
    setToken(t);
    render();
  } },
  h('label', { for: 'token-input' }, 'Bearer token'),
  h('div', { class: 'token-row' }, input, h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in')));
  return h('div', { class: 'auth-card panel' },
    h('h2', null, 'Sign in to the dashboard'),
    h('p', { class: 'muted' }, 'Paste the gateway\'s API token. It is kept in this browser tab only (session storage) and sent as an Authorization header.'),
    err, form);
}

/* ---------- overview ---------- */
async function overview() {
  const [sum, exp, act, aud] = await Promise.all([
    api('/summary'), api('/expiries?days=90'), api('/activity?hours=24'), api('/audit?limit=20')]);
  setGenerated(sum.generated);
  const devs = sum.devices || {};
  const states = Object.keys(devs).sort((a, b) => {
    const ia = STATE_ORDER.indexOf(a), ib = STATE_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a < b ? -1 : a > b ? 1 : 0);
  });
  const totalDevices = states.reduce((s, k) => s + num(devs[k]), 0);
  const card = (id, label, value, kind, href) => h(href ? 'a' : 'div', { class: 'card card-' + kind, href: href },
    h('div', { class: 'card-label', title: label }, label),
    h('div', { class: 'card-value', id: id }, value == null ? '—' : String(num(value))));
  const certs = sum.certificates || {};
  const certKeys = CERT_KEYS.concat(Object.keys(certs).filter((k) => !CERT_KEYS.some((c) => c[0] === k)).map((k) => [k, k]));
  const certKind = { valid: 'ok', revoked: 'bad', expired: 'neutral', expiring_7d: 'warn', expiring_30d: 'warn' };
  const fail = sum.failures_last_hour || {};
  const failKinds = Object.keys(fail).filter((k) => k !== 'total').sort();
  const jobs = sum.jobs_open || {};

  const kpis = [h('div', { class: 'kpi-grid' },
    section('Devices', muted(fmtNum(totalDevices) + ' total'),
      h('div', { class: 'cards cards-fit' }, states.map((k) => card('count-' + k, k, devs[k], stateKind(k), devicesHash('', k, ''))))),
    section('Certificates', null,
      h('div', { class: 'cards cards-fit' }, certKeys.map((c) => card('cert-' + c[0], c[1], certs[c[0]], certKind[c[0]] || 'neutral'))))),
  h('div', { class: 'kpi-grid kpi-small' },
    section('Failures, last hour', null,
      h('div', { class: 'cards' }, card('failures-total', 'total', fail.total, num(fail.total) ? 'bad' : 'ok')),
      failKinds.length ? h('ul', { class: 'chips', id: 'failures' }, failKinds.map((k) =>
        h('li', { class: 'chip' }, h('span', null, k), h('b', null, fmtNum(fail[k]))))) : null),
    section('Open jobs', null,
      h('div', { class: 'cards' }, Object.keys(jobs).map((k) => card('jobs-' + k, k, jobs[k], 'info')))))];

  const groups = arr(sum.groups);
  const groupRows = groups.map((g) => {
    const name = str(g.group);
    const total = num(g.devices), active = num(g.active);
    const pct = total ? Math.round(active / total * 100) : 0;
    const meter = h('div', { class: 'meter', title: pct + '% active' }, h('div', { class: 'meter-fill' }));
    meter.firstChild.style.width = pct + '%';
    return h('tr', { class: 'group-row', 'data-group': name },
      h('td', null, name === '' ? muted('(none)') : h('a', { href: devicesHash(name, '', '') }, name)),
      h('td', { class: 'num' }, fmtNum(total)), h('td', { class: 'num' }, fmtNum(active)),
      h('td', { class: 'meter-cell' }, meter, muted(pct + '%')));
  });
  const backends = arr(sum.backends);
  const nbad = backends.filter((b) => !b.ok).length;
  const backendList = h('ul', { id: 'backends', class: 'backends' }, backends.map((b) =>
    h('li', { class: 'backend ' + (b.ok ? 'ok' : 'bad'), 'data-name': str(b.name) },
      h('span', { class: 'dot', title: b.ok ? 'healthy' : 'failing' }),
      h('div', { class: 'backend-body' },
        h('div', null, h('strong', { class: 'backend-name' }, str(b.name)), ' ', h('span', { class: 'tag backend-type' }, str(b.plugin)),
          ' ', badge(b.ok ? 'ok' : 'failing', b.ok ? 'ok' : 'bad')),
        h('div', { class: 'backend-detail muted' }, b.ok ? 'CA ' + str(b.ca) + (b.ca_not_after ? ', until ' + str(b.ca_not_after).slice(0, 10) : '') : str(b.error))))));
  if (!backends.length) backendList.appendChild(h('li', { class: 'muted' }, 'No backends configured'));

  const records = arr(aud.records);
  const auditRows = records.map((r) => h('tr', { class: 'audit-row', 'data-seq': str(r.seq), title: r.request_id ? 'request ' + str(r.request_id) : null },
    h('td', { class: 'nowrap' }, timeEl(r.time)), h('td', null, badge(str(r.kind), auditKind(r.kind))),
    h('td', null, deviceLink(r.device_id)), detailCell(r.detail)));

  return h('div', { class: 'overview' }, kpis,
    section('Certificate expiries, next 90 days', muted('per day'), expiryPlot(arr(exp.days))),
    section('Enrollment activity, last 24 hours', muted('per hour'), activityPlot(arr(act.hours))),
    h('div', { class: 'two-col' },
      section('Groups', h('a', { href: '#devices' }, 'All devices →'),
        table('groups', ['Group', 'Devices', 'Active', 'Active share'], groupRows, 'No groups')),
      section('Backends', h('span', { class: nbad ? 'bad-text' : 'muted' }, nbad ? nbad + ' failing' : 'all healthy'), backendList)),
    section('Recent audit records', muted('newest first'),
      table('audit', ['Time', 'Kind', 'Device', 'Detail'], auditRows, 'No audit records')));
}

/* ---------- plots ---------- */
function niceScale(max) {
  if (!(max > 0)) max = 1;
  const rough = max / 4, p = Math.pow(10, Math.floor(Math.log10(rough))), f = rough / p;
  const step = Math.max(1, (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p);
  const top = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = 0; v <= top + 1e-9; v += step) ticks.push(v);
  return { top: top, ticks: ticks };
}
function plotFrame(W, H, m, scale, attrs, titleText) {
  const root = svg('svg', Object.assign({ viewBox: '0 0 ' + W + ' ' + H, class: 'plot', role: 'img' }, attrs), svg('title', null, titleText));
  const ph = H - m.t - m.b;
  const g = svg('g', { class: 'y-axis' });
  for (const v of scale.ticks) {
    const y = m.t + ph - v / scale.top * ph;
    g.appendChild(svg('line', { class: v ? 'grid' : 'axis', x1: m.l, x2: W - m.r, y1: y, y2: y }));
    g.appendChild(svg('text', { class: 'tick-label', x: m.l - 8, y: y + 4, 'text-anchor': 'end' }, fmtNum(v)));
  }
  root.appendChild(g);
  return root;
}
function xTick(g, cx, base, label, anchor) {
  g.appendChild(svg('line', { class: 'tick', x1: cx, x2: cx, y1: base, y2: base + 5 }));
  g.appendChild(svg('text', { class: 'tick-label', x: cx, y: base + 19, 'text-anchor': anchor }, label));
}
function legend(x, y, items) {
  const g = svg('g', { class: 'legend', transform: 'translate(' + x + ',' + y + ')' });
  let off = 0;
  for (const it of items) {
    g.appendChild(it.line
      ? svg('path', { class: 'swatch swatch-' + it.cls, d: 'M' + off + ' 0h16' })
      : svg('path', { class: 'swatch swatch-' + it.cls, d: 'M' + off + ' -5h12v10h-12z' }));
    g.appendChild(svg('text', { x: off + 20, y: 4 }, it.label));
    off += 28 + it.label.length * 6.6;
  }
  return g;
}

function expiryPlot(days) {
  const W = 960, H = 290, m = { l: 52, r: 16, t: 34, b: 40 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b, n = days.length || 1;
  let total = 0, peak = 0, max = 0;
  for (const d of days) {
    total += num(d.expiring); peak = Math.max(peak, num(d.renewals));
    max = Math.max(max, num(d.expiring), num(d.renewals));
  }
  const sc = niceScale(max), bw = pw / n, base = m.t + ph;
  const y = (v) => base - v / sc.top * ph;
  const root = plotFrame(W, H, m, sc, { id: 'expiry-plot', 'data-days': days.length,
    'data-expiring-total': Math.round(total * 1e6) / 1e6, 'data-renewals-peak': peak },
  'Certificates expiring per day and renewals scheduled per day, next ' + days.length + ' days');
  const bars = svg('g', { class: 'bars' }), pts = svg('g', { class: 'points' }), xs = svg('g', { class: 'x-axis' });
  const line = [];
  days.forEach((d, i) => {
    const e = num(d.expiring), r = num(d.renewals), cx = m.l + (i + 0.5) * bw;
    const tip = str(d.day) + ': ' + fmtNum(e) + ' expiring, ' + fmtNum(r) + ' renewals scheduled';
    bars.appendChild(svg('rect', { class: 'bar', 'data-day': str(d.day), x: (m.l + i * bw + bw * 0.14).toFixed(2),
      y: y(e).toFixed(2), width: (bw * 0.72).toFixed(2), height: (base - y(e)).toFixed(2) }, svg('title', null, tip)));
    line.push(cx.toFixed(2) + ',' + y(r).toFixed(2));
    pts.appendChild(svg('circle', { class: 'renewal-point', cx: cx.toFixed(2), cy: y(r).toFixed(2), r: 2.6, 'data-day': str(d.day) },
      svg('title', null, tip)));
    if (i % 15 === 0 || i === days.length - 1) xTick(xs, cx, base, i === 0 ? 'today' : dayLabel(d.day), i === days.length - 1 ? 'end' : 'middle');
  });
  root.appendChild(bars);
  root.appendChild(svg('polyline', { class: 'renewals-line', points: line.join(' '), fill: 'none' }));
  root.appendChild(pts);
  root.appendChild(xs);
  root.appendChild(legend(m.l, 14, [{ cls: 'bar', label: 'certificates expiring (' + fmtNum(total) + ')' },
    { cls: 'line', line: true, label: 'renewals scheduled (peak ' + fmtNum(peak) + '/day)' }]));
  return h('div', { class: 'plot-wrap' }, root);
}

function activityPlot(hours) {
  const W = 960, H = 250, m = { l: 52, r: 16, t: 34, b: 40 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b, n = hours.length || 1;
  let max = 0, te = 0, tf = 0;
  for (const x of hours) {
    const ok = num(x.enrolled) + num(x.renewed);
    te += ok; tf += num(x.failed); max = Math.max(max, ok, num(x.failed));
  }
  const sc = niceScale(max), gw = pw / n, base = m.t + ph;
  const y = (v) => base - v / sc.top * ph;
  const root = plotFrame(W, H, m, sc, { id: 'activity-plot', 'data-hours': hours.length, 'data-enrolled-total': te, 'data-failed-total': tf },
    'Enrollments and renewals, and failures, per hour over the last ' + hours.length + ' hours');
  const g = svg('g', { class: 'bars' }), xs = svg('g', { class: 'x-axis' });
  hours.forEach((x, i) => {
    const ok = num(x.enrolled) + num(x.renewed), f = num(x.failed), x0 = m.l + i * gw, bw = gw * 0.36;
    const when = fmtTime(x.hour, true) + ' UTC';
    const tip = when + ': ' + fmtNum(x.enrolled) + ' enrolled, ' + fmtNum(x.renewed) + ' renewed, ' + fmtNum(f) + ' failed';
    g.appendChild(svg('rect', { class: 'bar enrolled', x: (x0 + gw * 0.12).toFixed(2), y: y(ok).toFixed(2), width: bw.toFixed(2),
      height: (base - y(ok)).toFixed(2), 'data-hour': str(x.hour) }, svg('title', null, tip)));
    g.appendChild(svg('rect', { class: 'bar failed', x: (x0 + gw * 0.12 + bw + 1).toFixed(2), y: y(f).toFixed(2), width: bw.toFixed(2),
      height: (base - y(f)).toFixed(2), 'data-hour': str(x.hour) }, svg('title', null, tip)));
    if (i % 3 === 0 || i === hours.length - 1) {
      const d = parseTime(x.hour);
      xTick(xs, x0 + gw / 2, base, i === hours.length - 1 ? 'now' : d ? String(d.getUTCHours()).padStart(2, '0') + ':00' : str(x.hour), 'middle');
    }
  });
  root.appendChild(g);
  root.appendChild(xs);
  root.appendChild(legend(m.l, 14, [{ cls: 'enrolled', label: 'enrolled + renewed (' + fmtNum(te) + ')' },
    { cls: 'failed', label: 'failed (' + fmtNum(tf) + ')' }]));
  return h('div', { class: 'plot-wrap' }, root);
}

/* ---------- devices ---------- */
async function devices(route) {
  let q = '/devices?limit=' + PAGE_SIZE;
  if (route.after) q += '&after=' + encodeURIComponent(route.after);
  if (route.group) q += '&group=' + encodeURIComponent(route.group);
  if (route.state) q += '&state=' + encodeURIComponent(route.state);
  const res = await api(q);
  const list = arr(res.devices);
  const fkey = route.group + '\n' + route.state + '\n';
  const page = route.after ? pageNumber.get(fkey + route.after) : 1;
  const total = num(res.total);
  const next = res.next_after == null || res.next_after === '' ? '' : String(res.next_after);

  const rows = list.map((d) => h('tr', { class: 'device-row', 'data-id': str(d.id) },
    h('td', null, deviceLink(d.id)), h('td', null, badge(str(d.state), stateKind(d.state))),
    h('td', null, d.group ? h('a', { href: devicesHash(str(d.group), route.state, '') }, str(d.group)) : muted('(none)')),
    h('td', null, str(d.hostname) || '—'), h('td', { class: 'nowrap' }, timeEl(d.last_seen, { rel: true, short: true }))));

  const stateSel = h('select', { id: 'filter-state', name: 'state', onchange: () => { location.hash = devicesHash(groupIn.value.trim(), stateSel.value, ''); } },
    h('option', { value: '' }, 'any state'),
    STATE_ORDER.concat(route.state && STATE_ORDER.indexOf(route.state) < 0 ? [route.state] : []).map((s) =>
      h('option', { value: s, selected: s === route.state }, s)));
  const groupIn = h('input', { id: 'filter-group', name: 'group', type: 'search', placeholder: 'group', value: route.group, spellcheck: 'false' });
  const form = h('form', { class: 'filters', id: 'device-filters', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = devicesHash(groupIn.value.trim(), stateSel.value, '');
  } }, h('label', { for: 'filter-state' }, 'State'), stateSel, h('label', { for: 'filter-group' }, 'Group'), groupIn,
  h('button', { type: 'submit', class: 'btn' }, 'Filter'),
  route.group || route.state ? h('a', { href: '#devices', class: 'btn btn-ghost', id: 'clear-filters' }, 'Clear') : null);

  const prev = h('button', { type: 'button', class: 'btn', id: 'prev-page', disabled: !route.after, onclick: () => {
    const p = prevCursor.get(fkey + route.after);
    location.hash = devicesHash(route.group, route.state, p || '');
  } }, '← Previous');
  const nextBtn = h('button', { type: 'button', class: 'btn', id: 'next-page', disabled: !next, 'data-after': next || null, onclick: () => {
    prevCursor.set(fkey + next, route.after);
    if (page) pageNumber.set(fkey + next, page + 1);
    location.hash = devicesHash(route.group, route.state, next);
  } }, 'Next →');
  const first = list.length && page ? (page - 1) * PAGE_SIZE + 1 : 0;
  const range = list.length ? (first ? 'showing ' + fmtNum(first) + '–' + fmtNum(first + list.length - 1) : 'showing ' + list.length) +
    (page ? ' · page ' + page : '') : '';
  const filt = [route.state ? 'state ' + route.state : '', route.group ? 'group ' + route.group : ''].filter(Boolean).join(', ');

  return h('div', { class: 'devices-view' },
    h('div', { class: 'page-head' }, h('h1', null, 'Devices'),
      h('span', { id: 'devices-total', class: 'total', 'data-total': total }, total + ' devices'),
      filt ? muted(' matching ' + filt) : null),
    h('section', { class: 'panel' }, form,
      table('devices', ['Device', 'State', 'Group', 'Hostname', 'Last seen'], rows, 'No devices match.'),
      h('div', { class: 'pager' }, prev, h('span', { class: 'muted', id: 'page-info' }, range), nextBtn)));
}

/* ---------- one device ---------- */
async function device(id) {
  const res = await api('/devices/' + encodeURIComponent(id));
  const d = res || {};
  const dl = (elId, pairs, emptyText) => {
    const el = h('dl', { id: elId, class: 'kv' });
    for (const p of pairs) addKids(el, [h('dt', null, p[0]), h('dd', null, p[1])]);
    if (!pairs.length) el.appendChild(h('dd', { class: 'muted empty' }, emptyText));
    return el;
  };
  const info = dl('device-info', [
    ['State', badge(str(d.state), stateKind(d.state))],
    ['Group', d.group ? h('a', { href: devicesHash(str(d.group), '', '') }, str(d.group)) : muted('(none)')],
    ['Hostname', str(d.hostname) || '—'],
    ['Key', h('span', { class: 'mono wrap-any' }, str(d.curve_key) || '—')],
    ['Created', timeEl(d.created, { rel: true })],
    ['Last seen', timeEl(d.last_seen, { rel: true })]], '');
  const facts = d.facts && typeof d.facts === 'object' ? d.facts : null;
  const factPairs = facts ? Object.keys(facts).sort().map((k) => [k, h('span', { class: 'wrap-any' }, str(facts[k]))]) : [];
  const factsEl = dl('facts', factPairs, facts ? 'No facts.' : 'The device has not reported facts.');

  const certs = arr(res.certificates);
  const certRows = certs.map((c) => {
    const w = c.renew_window && typeof c.renew_window === 'object' ? c.renew_window : null;
    const na = parseTime(c.not_after);
    const soon = c.status === 'valid' && na && na.getTime() - Date.now() < 7 * 86400e3;
    return h('tr', { class: 'cert-row', 'data-serial': str(c.serial), title: c.subject ? 'subject ' + str(c.subject) : null },
      h('td', { class: 'mono wrap-any' }, str(c.serial)), h('td', null, str(c.slot)), h('td', null, str(c.backend)),
      h('td', null, badge(str(c.status), stateKind(c.status))),
      h('td', { class: 'nowrap' + (soon ? ' warn-text' : '') }, timeEl(c.not_after, { rel: true, short: true })),
      h('td', { class: 'nowrap' }, w ? [timeEl(w.start, { short: true }), ' – ', timeEl(w.end, { short: true })] : muted('—')));
  });
  const cmds = arr(res.commands);
  const cmdRows = cmds.map((c) => h('tr', { class: 'command-row', 'data-id': str(c.id) },
    h('td', { class: 'mono' }, str(c.id)), h('td', null, str(c.kind)), h('td', null, str(c.slot) || '—'),
    h('td', null, badge(str(c.state), stateKind(c.state))), h('td', { class: 'nowrap' }, timeEl(c.created, { short: true })),
    h('td', { class: 'nowrap' }, timeEl(c.delivered, { short: true })), h('td', { class: 'nowrap' }, timeEl(c.done, { short: true })),
    detailCell(c.result)));
  const hist = arr(res.history);
  const histRows = hist.map((r) => h('tr', { class: 'history-row', 'data-seq': str(r.seq) },
    h('td', { class: 'nowrap' }, timeEl(r.time)), h('td', null, badge(str(r.kind), auditKind(r.kind))),
    h('td', { class: 'mono small' }, str(r.request_id) || '—'), detailCell(r.detail)));

  return h('div', { id: 'device-page', 'data-id': str(d.id || id) },
    h('nav', { class: 'crumbs' }, h('a', { href: '#devices' }, 'Devices'), ' / ', h('span', { class: 'mono' }, str(d.id || id))),
    h('div', { class: 'page-head' }, h('h1', { class: 'mono' }, str(d.id || id)), badge(str(d.state), stateKind(d.state)),
      d.hostname ? muted(str(d.hostname)) : null),
    h('div', { class: 'two-col' }, section('Device', null, info), section('Facts', null, factsEl)),
    section('Certificates', muted(certs.length + ''),
      table('certs', ['Serial', 'Slot', 'Backend', 'Status', 'Not after', 'Renewal window'], certRows, 'No certificates.')),
    section('Commands', muted(cmds.length + ''),
      table('commands', ['ID', 'Kind', 'Slot', 'State', 'Created', 'Delivered', 'Done', 'Result'], cmdRows, 'No commands.')),
    section('History', muted('newest first'),
      table('history', ['Time', 'Kind', 'Request', 'Detail'], histRows, 'No audit records.')));
}

/* ---------- start ---------- */
function start() {
  takeTokenFromHash();
  window.addEventListener('hashchange', () => { takeTokenFromHash(); render(); });
  $('refresh').addEventListener('click', () => render());
  $('sign-out').addEventListener('click', (ev) => {
    ev.preventDefault();
    setToken('');
    $('generated-wrap').hidden = true;
    render();
  });
  render();
}
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
})();
