// gbproxy web console: plain JS over the admin API (/api/v1). Every value
// from the API reaches the page as text (textContent, never innerHTML):
// device and channel names come from devices we do not trust.
'use strict';

const TOKEN_KEY = 'gbproxy.token';
const PAGE_SIZE = 50;
const TREE_MAX = 5000; // channels shown per device; more are summed up
const POLL_SESSIONS_MS = 1000;
const POLL_OVERVIEW_MS = 2000;

const $ = (sel, root = document) => root.querySelector(sel);

// el builds an element; string children become text nodes.
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// ---- API access --------------------------------------------------------

class AuthError extends Error {}

// APIError carries the API's plain-text answer (a 400 names the field).
class APIError extends Error {
  constructor(status, text) {
    super(text.trim() || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    askToken(token ? 'The proxy refused this token.' : '');
    throw new AuthError('401');
  }
  if (!res.ok) throw new APIError(res.status, await res.text());
  return res;
}

async function getJSON(path) {
  const res = await api('GET', path);
  return { data: await res.json(), res };
}

// total reads X-Total-Count of a one-item page of a list.
async function total(path) {
  const { res } = await getJSON(path + (path.includes('?') ? '&' : '?') + 'limit=1');
  return Number(res.headers.get('X-Total-Count'));
}

function nextLink(res) {
  const m = /<([^>]*)>\s*;\s*rel="next"/.exec(res.headers.get('Link') || '');
  return m ? m[1] : null;
}

function askToken(why) {
  stopPolling();
  $('#token-why').textContent = why;
  $('#token-form').hidden = false;
  $('main').hidden = true;
  $('#token-input').focus();
}

function showError(err) {
  if (err instanceof AuthError) return;
  $('#status').textContent = String(err.message || err);
}

function clearError() { $('#status').textContent = ''; }

// ---- formatting --------------------------------------------------------

function age(iso) {
  if (!iso) return '–';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function duration(iso) {
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  return (h ? `${h}:${String(m).padStart(2, '0')}` : String(m)) + ':' + String(s % 60).padStart(2, '0');
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : '–'; }

function bits(bps) {
  if (bps === undefined || Number.isNaN(bps)) return '–';
  if (bps >= 1e6) return (bps / 1e6).toFixed(2) + ' Mbit/s';
  if (bps >= 1e3) return (bps / 1e3).toFixed(1) + ' kbit/s';
  return bps.toFixed(0) + ' bit/s';
}

function yesNo(b) { return el('span', { class: b ? 'yes' : 'no' }, b ? 'yes' : 'no'); }

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

// ---- polling and routing ----------------------------------------------

let pollTimer = null;
let pollGen = 0;

// poll runs fn now and every ms until the view changes (or a 401 stops
// it); runs never overlap.
function poll(fn, ms) {
  stopPolling();
  const gen = pollGen;
  const tick = async () => {
    try { await fn(); clearError(); } catch (e) { showError(e); }
    if (gen === pollGen) pollTimer = setTimeout(tick, ms);
  };
  tick();
}

function stopPolling() {
  pollGen++;
  clearTimeout(pollTimer);
}

const views = {
  overview: { enter: () => poll(refreshOverview, POLL_OVERVIEW_MS) },
  devices: { enter: enterDevices },
  sessions: { enter: () => poll(refreshSessions, POLL_SESSIONS_MS) },
  manage: { enter: enterManage },
};

function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const view = views[name] ? name : 'overview';
  for (const v of Object.keys(views)) $('#view-' + v).hidden = v !== view;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === view);
  stopPolling();
  clearError();
  $('#forget-token').hidden = !sessionStorage.getItem(TOKEN_KEY);
  views[view].enter(rest.map(decodeURIComponent));
}

// guard runs an async action, reporting failures on the status line.
function guard(fn) {
  return async (ev) => {
    try { await fn(ev); } catch (e) { showError(e); }
  };
}

// ---- sessions and throughput --------------------------------------------

// samples keeps each session's last byte count, so two polls give a bitrate.
const samples = new Map();

async function sampleSessions() {
  const { data } = await getJSON('/api/v1/sessions');
  const now = performance.now();
  const seen = new Set();
  for (const s of data) {
    seen.add(s.call_id);
    const prev = samples.get(s.call_id);
    if (prev && now > prev.t) s.bitrate = (s.bytes - prev.bytes) * 8 / ((now - prev.t) / 1000);
    else s.bitrate = prev ? prev.bitrate : undefined;
    samples.set(s.call_id, { bytes: s.bytes, t: now, bitrate: s.bitrate });
  }
  for (const id of samples.keys()) if (!seen.has(id)) samples.delete(id);
  return data;
}

function loss(s) {
  const all = s.packets + s.lost;
  return all ? (100 * s.lost / all).toFixed(2) + ' %' : '–';
}

async function refreshSessions() {
  const list = await sampleSessions();
  fill($('#sessions tbody'), list.map((s) => el('tr', { data: { call: s.call_id } },
    el('td', { class: 'mono' }, s.call_id),
    el('td', {}, s.kind),
    el('td', { class: 'mono' }, s.upper_id),
    el('td', { class: 'mono' }, s.upper_channel_id, s.upper_channel_id !== s.channel_id ? el('br') : null,
      s.upper_channel_id !== s.channel_id ? s.channel_id : null),
    el('td', { class: 'mono' }, s.device_id),
    el('td', {}, `${s.lower_transport} → ${s.upper_transport}`),
    el('td', {}, duration(s.started_at)),
    el('td', { class: 'num' }, s.packets),
    el('td', { class: 'num' }, s.bytes),
    el('td', { class: 'num bitrate' }, bits(s.bitrate)),
    el('td', { class: 'num loss' }, loss(s)),
    el('td', {}, el('button', { type: 'button', class: 'danger', onclick: guard(() => endSession(s.call_id)) }, 'End')),
  )));
  $('#sessions-empty').hidden = list.length > 0;
}

async function endSession(callID) {
  await api('DELETE', '/api/v1/sessions/' + encodeURIComponent(callID));
  await refreshSessions();
}

// ---- overview ------------------------------------------------------------

function catalogText(c) {
  if (!c) return '–';
  const state = c.finished_at ? `done ${age(c.finished_at)}` : `running since ${age(c.started_at)}`;
  const failed = c.failed_messages ? `, ${c.failed_messages} failed` : '';
  return `${c.sent}/${c.sum_num} items in ${c.messages} messages${failed}, ${state}`;
}

async function refreshOverview() {
  const [{ data: platforms }, known, online, channels, sessions] = await Promise.all([
    getJSON('/api/v1/platforms'),
    total('/api/v1/devices'),
    total('/api/v1/devices?status=online'),
    total('/api/v1/channels'),
    sampleSessions(),
  ]);
  fill($('#platforms tbody'), platforms.map((p) => el('tr', { data: { id: p.id } },
    el('td', { class: 'mono' }, p.id),
    el('td', { class: 'mono' }, p.address),
    el('td', { class: 'mono' }, p.server || '–'),
    el('td', {}, p.transport),
    el('td', { class: 'registered' }, yesNo(p.registered)),
    el('td', { class: 'error-text' }, p.last_error || ''),
    el('td', {}, age(p.last_keepalive)),
    el('td', {}, p.negotiated_version + (p.gb_version ? ` (peer ${p.gb_version})` : '')),
    el('td', { class: 'num' }, p.shared_channels),
    el('td', {}, catalogText(p.last_catalog)),
  )));
  if (platforms.length === 0) fill($('#platforms tbody'), [el('tr', {}, el('td', { colSpan: 10, class: 'hint' }, 'No upper platform configured.'))]);
  $('#count-devices').textContent = `${online} / ${known}`;
  $('#count-channels').textContent = String(channels);
  $('#count-sessions').textContent = String(sessions.length);
  const rates = sessions.map((s) => s.bitrate).filter((b) => b !== undefined);
  $('#count-throughput').textContent = rates.length ? bits(rates.reduce((a, b) => a + b, 0)) : '–';
}

// ---- devices and the channel tree ---------------------------------------

const devicePager = { cursors: [null], index: 0 };

function devicesQuery() {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const text = $('#device-q').value.trim();
  const status = $('#device-status').value;
  if (text) q.set('q', text);
  if (status) q.set('status', status);
  const cursor = devicePager.cursors[devicePager.index];
  return cursor || '/api/v1/devices?' + q;
}

async function loadDevices() {
  const { data, res } = await getJSON(devicesQuery());
  const next = nextLink(res);
  devicePager.cursors.length = devicePager.index + 1;
  if (next) devicePager.cursors.push(next);
  const count = Number(res.headers.get('X-Total-Count'));
  const from = devicePager.index * PAGE_SIZE;
  $('#devices-page').textContent = count ? `${from + 1}–${from + data.length} of ${count}` : 'no device';
  $('#devices-prev').disabled = devicePager.index === 0;
  $('#devices-next').disabled = !next;
  fill($('#devices tbody'), data.map((d) => el('tr', { data: { id: d.id } },
    el('td', { class: 'mono' }, d.id),
    el('td', {}, yesNo(d.online)),
    el('td', {}, d.transport),
    el('td', { class: 'mono' }, d.remote),
    el('td', {}, when(d.registered_at)),
    el('td', {}, age(d.last_keepalive)),
    el('td', {}, when(d.expires_at)),
    el('td', {}, d.gb_version || '–'),
    el('td', {}, d.user_agent || ''),
    el('td', {}, el('a', { href: '#/devices/' + encodeURIComponent(d.id) }, 'Channels')),
  )));
}

async function enterDevices([deviceID]) {
  await guard(loadDevices)();
  $('#tree-box').hidden = !deviceID;
  if (deviceID) await guard(() => loadTree(deviceID))();
}

// GB/T 28181 appendix D: digits 11-13 of a 20-digit ID say what it is.
const TYPES = {
  111: 'DVR', 112: 'video server', 113: 'encoder', 114: 'decoder', 118: 'NVR',
  121: 'alarm controller', 131: 'camera', 132: 'IP camera', 133: 'display', 134: 'alarm input',
  135: 'alarm output', 136: 'voice input', 137: 'voice output', 200: 'platform',
  215: 'business group', 216: 'virtual organisation',
};

function kindOf(id) {
  if (/^(\d{2}){1,4}$/.test(id)) return 'civil code';
  if (/^\d{20}$/.test(id)) return TYPES[id.slice(10, 13)] || 'type ' + id.slice(10, 13);
  return '';
}

function isDirectory(id) { return ['civil code', 'business group', 'virtual organisation'].includes(kindOf(id)); }

// buildTree hangs each channel under its parent: ParentID (last element of
// a path) when it names a node of this device, else its business group,
// else its civil code (a node made up when the device reported none).
// Whatever a cycle keeps out of reach is shown at the top, not dropped.
function buildTree(channels) {
  const byID = new Map(channels.map((c) => [c.id, c]));
  const kids = new Map();
  const made = new Map();
  const add = (parent, node) => { if (!kids.has(parent)) kids.set(parent, []); kids.get(parent).push(node); };
  const parentOf = (c) => {
    const p = (c.parent_id || '').split('/').filter(Boolean).pop();
    if (p && p !== c.id && byID.has(p)) return p;
    if (c.business_group_id && c.business_group_id !== c.id && byID.has(c.business_group_id)) return c.business_group_id;
    if (c.civil_code && c.civil_code !== c.id) {
      if (byID.has(c.civil_code)) return c.civil_code;
      if (!made.has(c.civil_code)) {
        made.set(c.civil_code, { id: c.civil_code, name: 'civil code ' + c.civil_code, made: true });
        add('', made.get(c.civil_code));
      }
      return c.civil_code;
    }
    return '';
  };
  for (const c of channels) add(parentOf(c), c);
  const order = (a, b) => (isDirectory(b.id) - isDirectory(a.id)) || a.id.localeCompare(b.id);
  const rows = [];
  const seen = new Set();
  const walk = (parent, depth) => {
    for (const c of (kids.get(parent) || []).sort(order)) {
      if (seen.has(c.id)) continue;
      seen.add(c.id);
      rows.push({ c, depth });
      walk(c.id, depth + 1);
    }
  };
  walk('', 0);
  for (const c of channels) if (!seen.has(c.id)) { seen.add(c.id); rows.push({ c, depth: 0 }); walk(c.id, 1); }
  return rows;
}

function seenAs(localID, sharedTo) {
  const entries = Object.entries(sharedTo || {});
  if (!entries.length) return el('span', { class: 'hint' }, 'not shared');
  const span = el('span');
  entries.sort().forEach(([upper, id], i) => {
    if (i) span.append(el('br'));
    span.append(el('span', { class: 'mono' }, upper), ': ',
      id === localID ? el('span', { class: 'hint' }, 'same ID') : el('span', { class: 'mono seen' }, id));
  });
  return span;
}

async function loadTree(deviceID) {
  $('#tree-device').textContent = deviceID;
  let path = '/api/v1/channels?' + new URLSearchParams({ device_id: deviceID, limit: '1000' });
  const channels = [];
  let count = 0;
  while (path && channels.length < TREE_MAX) {
    const { data, res } = await getJSON(path);
    count = Number(res.headers.get('X-Total-Count'));
    channels.push(...data);
    path = nextLink(res);
  }
  $('#tree-note').textContent = count > channels.length
    ? `Showing ${channels.length} of ${count} channels.` : `${count} channels.`;
  fill($('#tree tbody'), buildTree(channels).map(({ c, depth }) => {
    const name = el('td', { class: 'tree-name' + (isDirectory(c.id) || c.made ? ' dir' : '') }, c.name || '');
    name.style.setProperty('--depth', depth);
    return el('tr', { data: { id: c.id } },
      name,
      el('td', { class: 'mono' }, c.id),
      el('td', {}, kindOf(c.id)),
      el('td', { class: 'status-' + String(c.status || '').toLowerCase() }, c.made ? '' : c.status),
      el('td', {}, c.made ? '' : seenAs(c.id, c.shared_to)),
    );
  }));
}

// ---- manage --------------------------------------------------------------

// formBody turns a form's filled-in fields into a JSON body: empty fields
// are left out (the proxy applies the config file's defaults), numbers stay
// numbers, and the "More keys" box adds its keys.
function formBody(form, skip = []) {
  const body = {};
  for (const f of form.elements) {
    if (!f.name || f.name === 'extra' || skip.includes(f.name) || f.value.trim() === '') continue;
    body[f.name] = f.type === 'number' ? Number(f.value) : f.value.trim();
  }
  const extra = form.elements.extra?.value.trim();
  if (extra) {
    let more;
    try { more = JSON.parse(extra); } catch (e) { throw new APIError(400, 'More keys: not JSON: ' + e.message); }
    if (typeof more !== 'object' || more === null || Array.isArray(more)) throw new APIError(400, 'More keys: want a JSON object');
    for (const k of Object.keys(more)) if (k in body) throw new APIError(400, `More keys: ${k} is already a field of the form`);
    Object.assign(body, more);
  }
  return body;
}

// submitter runs a form's action, showing the API's answer next to it.
function submitter(form, prefix, action) {
  return async (ev) => {
    ev?.preventDefault();
    $(`#${prefix}-error`).textContent = '';
    $(`#${prefix}-ok`).textContent = '';
    try {
      $(`#${prefix}-ok`).textContent = await action();
    } catch (e) {
      if (!(e instanceof AuthError)) $(`#${prefix}-error`).textContent = e.message;
    }
  };
}

// confirmButton asks for a second click before a destructive action.
function confirmButton(label, action) {
  const b = el('button', { type: 'button', class: 'danger' }, label);
  b.addEventListener('click', async () => {
    if (!b.classList.contains('armed')) {
      b.classList.add('armed');
      b.textContent = 'Really ' + label.toLowerCase() + '?';
      return;
    }
    await action();
  });
  return b;
}

let platformsCache = [];
let editingPlatform = null;
let editingDevice = null;

function resetPlatformForm() {
  editingPlatform = null;
  $('#platform-form').reset();
  $('#platform-form').elements.id.readOnly = false;
  $('#platform-form-title').textContent = 'Add an upper platform';
  $('#platform-submit').textContent = 'Add platform';
}

const PLATFORM_FIELDS = ['id', 'domain', 'address', 'transport', 'username', 'expires',
  'keepalive_interval', 'keepalive_timeout_count', 'retry_interval', 'charset'];

function editPlatform(p) {
  resetPlatformForm();
  editingPlatform = p.id;
  const form = $('#platform-form');
  // config (the entry without secrets) when the proxy gives it, else the state's own fields.
  const cfg = p.config || { id: p.id, address: p.address, transport: p.transport, charset: p.charset };
  for (const k of PLATFORM_FIELDS) if (cfg[k] !== undefined && cfg[k] !== null) form.elements[k].value = cfg[k];
  // Every other key goes back unchanged (share included: a PUT without it
  // would reset it to the default).
  const extra = {};
  for (const [k, v] of Object.entries(cfg)) {
    if (!PLATFORM_FIELDS.includes(k) && k !== 'password_set' && v !== null && v !== '' &&
      !(Array.isArray(v) && !v.length)) extra[k] = v;
  }
  form.elements.extra.value = Object.keys(extra).length ? JSON.stringify(extra) : '';
  form.elements.id.readOnly = true;
  form.elements.password.placeholder = cfg.password_set ? 'unchanged unless given' : '';
  $('#platform-form-title').textContent = 'Change upper platform ' + p.id;
  $('#platform-submit').textContent = 'Save platform';
  form.elements.address.focus();
}

async function savePlatform() {
  const body = formBody($('#platform-form'));
  if (editingPlatform) {
    await api('PUT', '/api/v1/platforms/' + encodeURIComponent(editingPlatform), body);
  } else {
    await api('POST', '/api/v1/platforms', body);
  }
  const id = editingPlatform || body.id;
  resetPlatformForm();
  await loadManage();
  return `Platform ${id} saved; the proxy registers to it.`;
}

async function deletePlatform(id) {
  await submitter($('#platform-form'), 'platform', async () => {
    await api('DELETE', '/api/v1/platforms/' + encodeURIComponent(id));
    await loadManage();
    return `Platform ${id} removed; the proxy unregistered from it.`;
  })();
}

function resetDeviceForm() {
  editingDevice = null;
  $('#device-form').reset();
  $('#device-form').elements.id.readOnly = false;
  $('#device-form-title').textContent = 'Allow a device';
  $('#device-submit').textContent = 'Allow device';
}

function editDevice(d) {
  resetDeviceForm();
  editingDevice = d.id;
  const form = $('#device-form');
  form.elements.id.value = d.id;
  form.elements.id.readOnly = true;
  form.elements.stream_mode.value = d.stream_mode || '';
  const extra = {};
  for (const [k, v] of Object.entries(d)) {
    if (!['id', 'stream_mode', 'password_set'].includes(k) && v !== null && v !== '') extra[k] = v;
  }
  form.elements.extra.value = Object.keys(extra).length ? JSON.stringify(extra) : '';
  form.elements.password.placeholder = d.password_set ? 'unchanged unless given' : 'default: lower.password';
  $('#device-form-title').textContent = 'Change device ' + d.id;
  $('#device-submit').textContent = 'Save device';
}

async function saveDevice() {
  const body = formBody($('#device-form'));
  if (editingDevice) {
    await api('PUT', '/api/v1/devices/' + encodeURIComponent(editingDevice), body);
  } else {
    await api('POST', '/api/v1/devices', body);
  }
  const id = editingDevice || body.id;
  resetDeviceForm();
  await loadManage();
  return `Device ${id} saved.`;
}

async function deleteDevice(id) {
  await submitter($('#device-form'), 'device', async () => {
    await api('DELETE', '/api/v1/devices/' + encodeURIComponent(id));
    await loadManage();
    return `Device ${id} removed; it is unregistered and its sessions ended.`;
  })();
}

const lines = (s) => s.split(/[\s,]+/).filter(Boolean);

// pairs reads "local = other" lines into an object.
function pairs(field, s) {
  const out = {};
  for (const line of s.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const m = /^(\S+)\s*[=:]\s*(.+)$/.exec(line);
    if (!m) throw new APIError(400, `${field}: want "local-ID = value" lines, got ${JSON.stringify(line)}`);
    out[m[1]] = m[2].trim();
  }
  return out;
}

function showShare() {
  const form = $('#share-form');
  const p = platformsCache.find((x) => x.id === form.elements.platform.value);
  const s = (p && p.share) || {};
  form.elements.all.value = s.all === true ? 'true' : s.all === false ? 'false' : '';
  for (const k of ['devices', 'channels', 'groups']) form.elements[k].value = (s[k] || []).join('\n');
  for (const k of ['map', 'names']) form.elements[k].value = Object.entries(s[k] || {}).map(([a, b]) => `${a} = ${b}`).join('\n');
}

async function saveShare() {
  const f = $('#share-form').elements;
  const id = f.platform.value;
  if (!id) throw new APIError(400, 'platform: choose an upper platform');
  const body = { devices: lines(f.devices.value), channels: lines(f.channels.value), groups: lines(f.groups.value),
    map: pairs('map', f.map.value), names: pairs('names', f.names.value) };
  if (f.all.value) body.all = f.all.value === 'true';
  const { shared_channels: n } = await (await api('PUT', '/api/v1/platforms/' + encodeURIComponent(id) + '/share', body)).json();
  await loadManage();
  return `Sharing of ${id} saved: it sees ${n} channels.`;
}

async function resetShare() {
  const id = $('#share-form').elements.platform.value;
  if (!id) throw new APIError(400, 'platform: choose an upper platform');
  const { shared_channels: n } = await (await api('DELETE', '/api/v1/platforms/' + encodeURIComponent(id) + '/share')).json();
  await loadManage();
  return `Sharing of ${id} is the config file's again: it sees ${n} channels.`;
}

async function loadManage() {
  const { data: platforms } = await getJSON('/api/v1/platforms');
  platformsCache = platforms;
  fill($('#manage-platforms tbody'), platforms.map((p) => el('tr', { data: { id: p.id } },
    el('td', { class: 'mono' }, p.id),
    el('td', { class: 'mono' }, p.address),
    el('td', {}, p.transport),
    el('td', {}, yesNo(p.registered)),
    el('td', { class: 'actions' },
      el('button', { type: 'button', onclick: () => editPlatform(p) }, 'Edit'),
      confirmButton('Delete', () => deletePlatform(p.id))),
  )));
  const select = $('#share-platform');
  const chosen = select.value;
  select.replaceChildren(...platforms.map((p) => el('option', { value: p.id }, p.id)));
  if (platforms.some((p) => p.id === chosen)) select.value = chosen;
  showShare();
  try {
    const { data: allowed } = await getJSON('/api/v1/devices/allowed');
    $('#allowed-note').textContent = allowed.length ? '' : 'No device listed: see lower.allow_unknown for who may register.';
    fill($('#manage-devices tbody'), allowed.map((d) => el('tr', { data: { id: d.id } },
      el('td', { class: 'mono' }, d.id),
      el('td', {}, yesNo(d.password_set)),
      el('td', {}, d.stream_mode || 'inherited'),
      el('td', { class: 'actions' },
        el('button', { type: 'button', onclick: () => editDevice(d) }, 'Edit'),
        confirmButton('Delete', () => deleteDevice(d.id))),
    )));
  } catch (e) {
    if (!(e instanceof APIError)) throw e;
    $('#allowed-note').textContent = `This proxy does not list allowed devices (GET /api/v1/devices/allowed: HTTP ${e.status}).`;
  }
}

async function enterManage() {
  await guard(loadManage)();
}

// ---- start ----------------------------------------------------------------

function init() {
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('#token-input').value.trim());
    $('#token-input').value = '';
    $('#token-form').hidden = true;
    $('main').hidden = false;
    route();
  });
  $('#forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  $('#device-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    devicePager.cursors = [null];
    devicePager.index = 0;
    guard(loadDevices)();
  });
  $('#devices-prev').addEventListener('click', guard(() => { devicePager.index--; return loadDevices(); }));
  $('#devices-next').addEventListener('click', guard(() => { devicePager.index++; return loadDevices(); }));
  const pf = $('#platform-form');
  pf.addEventListener('submit', submitter(pf, 'platform', savePlatform));
  $('#platform-clear').addEventListener('click', resetPlatformForm);
  const df = $('#device-form');
  df.addEventListener('submit', submitter(df, 'device', saveDevice));
  $('#device-clear').addEventListener('click', resetDeviceForm);
  const sf = $('#share-form');
  sf.addEventListener('submit', submitter(sf, 'share', saveShare));
  $('#share-reset').addEventListener('click', submitter(sf, 'share', resetShare));
  $('#share-platform').addEventListener('change', showShare);
  window.addEventListener('hashchange', route);
  route();
}

init();
