// Ferry app. Plain JavaScript, no libraries, nothing from outside this
// device. Text from contacts is only ever put in the page with
// textContent, never parsed as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const S = {
  state: null,       // GET /api/state
  conv: null,        // the open conversation's id
  messages: [],      // its messages, oldest first
  more: false,       // earlier messages exist
  replyTo: null,     // the message being answered
  target: null,      // the message a dialog acts on
  typing: new Map(), // conversation -> timeout of its typing line
  typingSent: 0,     // when the user's typing was last told
  typingStop: null,
  progress: new Map(),  // message id -> percent of its transfer
  uploading: new Map(),
  uploadsDone: [],      // for the tests: what finished, and at what value
  progressLog: [],      // and the progress bars' values on the way
};

// --- the JSON API -------------------------------------------------------

async function api(path, body) {
  const opts = body === undefined ? {} :
    { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
  const r = await fetch('/api/' + path, opts);
  let j = {};
  try { j = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok && r.status !== 202) throw new Error(j.error || ('Ferry answered ' + r.status + '.'));
  if (j.queued && j.note) toast(j.note);
  return j;
}

let toastTimer = null;
function toast(text) {
  $('toast').textContent = text;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { $('toast').textContent = ''; }, 6000);
}

function run(fn) {
  return (...args) => Promise.resolve(fn(...args)).catch((e) => toast(e.message));
}

// --- helpers ------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function dayLabel(ms) {
  const d = new Date(ms);
  const today = new Date();
  const start = (x) => new Date(x.getFullYear(), x.getMonth(), x.getDate()).getTime();
  const days = Math.round((start(today) - start(d)) / 86400000);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  return d.toLocaleDateString(undefined, { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
}

function timeLabel(ms) {
  return new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

const stateWords = { queued: 'Waiting to send', sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not delivered' };
const stateMarks = { queued: '…', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };

function timerWords(s) {
  const opt = [...$('timer').options].find((o) => Number(o.value) === s);
  return opt ? opt.textContent : s + ' seconds';
}

// drawQR draws a QR code's modules (rows of '0' and '1') as SVG.
function drawQR(box, rows) {
  const ns = 'http://www.w3.org/2000/svg';
  const n = rows.length;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `-4 -4 ${n + 8} ${n + 8}`);
  svg.setAttribute('aria-hidden', 'true');
  let d = '';
  rows.forEach((row, y) => {
    for (let x = 0; x < row.length; x++) if (row[x] === '1') d += `M${x} ${y}h1v1h-1z`;
  });
  const bg = document.createElementNS(ns, 'rect');
  bg.setAttribute('x', '-4'); bg.setAttribute('y', '-4');
  bg.setAttribute('width', n + 8); bg.setAttribute('height', n + 8); bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', d); path.setAttribute('fill', '#000'); path.setAttribute('shape-rendering', 'crispEdges');
  svg.append(bg, path);
  box.replaceChildren(svg);
}

// --- the overview -------------------------------------------------------

async function refresh(changed) {
  S.state = await api('state');
  const st = S.state;
  $('onboarding').hidden = !!st.profile;
  $('app').hidden = !st.profile;
  if (!st.profile) {
    if (st.suggestedRelay && !$('onboarding-relay').value) $('onboarding-relay').value = st.suggestedRelay;
    return;
  }
  $('me').textContent = 'You are ' + st.profile.name;
  $('settings-relay').textContent = 'Your relay: ' + st.profile.relay;
  $('typing-setting').checked = st.typingIndicators;
  renderConversations();
  renderStatus(st.status);
  if (S.conv !== null && (!changed || !changed.length || changed.includes(S.conv))) await loadMessages();
}

function current() {
  return S.state && S.state.conversations.find((c) => c.id === S.conv);
}

function lastText(m) {
  if (!m) return 'No messages yet';
  return (m.outgoing ? 'You: ' : '') + m.text;
}

function renderConversations() {
  const list = $('conversations');
  const items = S.state.conversations.map((c) => el('li', {},
    el('button', {
      type: 'button', 'aria-current': c.id === S.conv ? 'true' : 'false', 'data-conv': c.id,
      onclick: run(() => openConversation(c.id)),
    },
    el('span', { class: 'name' }, c.name),
    c.unread ? el('span', { class: 'badge' }, el('span', { class: 'visually-hidden' }, ', unread: '), c.unread) : el('span'),
    el('span', { class: 'last' }, el('span', { class: 'visually-hidden' }, '. '), lastText(c.last)))));
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.conv : null;
  list.replaceChildren(...items);
  if (focused) {
    const again = list.querySelector(`[data-conv="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  const c = current();
  if (c) {
    $('conv-title').textContent = c.name;
    $('conv-status').textContent = c.status === 'pending' ? 'Waiting for their Ferry to answer your introduction' :
      c.status === 'refused' ? 'Their Ferry refused you as a contact; ask for a new invite' :
        c.status === 'blocked' ? 'Blocked' : '';
    const group = c.kind === 'group';
    $('members-btn').hidden = !group;
    $('safety-btn').hidden = group;
    if (document.activeElement !== $('timer')) $('timer').value = String(c.timer);
    if (![...$('timer').options].some((o) => o.value === String(c.timer))) {
      $('timer').append(el('option', { value: c.timer }, c.timer + ' seconds'));
      $('timer').value = String(c.timer);
    }
  }
}

// --- the relay banner ---------------------------------------------------

let bannerTimer = null;
function renderStatus(st) {
  clearInterval(bannerTimer);
  const down = st && st.known && !st.online;
  $('banner').hidden = !down;
  document.body.classList.toggle('banner', down);
  $('connection').textContent = st && st.online ? `Connected to your relay over ${st.transport}.` : '';
  if (!down) return;
  const draw = () => {
    const secs = Math.max(0, Math.ceil((st.retry - Date.now()) / 1000));
    const how = st.trying && st.trying.length ? ` over ${st.trying.join(', then ')}` +
      (st.ranked ? ', in the order a monitor of this network found best' : '') : '';
    const when = st.retry ? (secs > 0 ? `in ${secs} second${secs === 1 ? '' : 's'}` : 'now') : 'soon';
    const queued = ' What you send meanwhile waits on this device and goes out when the relay is back.';
    $('banner-text').textContent = `Ferry cannot reach your relay. ${st.reason} Trying again ${when}${how} (attempt ${st.failures + 1}).${queued}`;
  };
  draw();
  bannerTimer = setInterval(draw, 1000);
}

// --- a conversation -----------------------------------------------------

async function openConversation(id) {
  if (S.conv !== id) {
    S.conv = id;
    S.replyTo = null;
    S.messages = [];
    renderReplyTo();
    $('composer-text').value = '';
  }
  $('empty').hidden = true;
  $('conv').hidden = false;
  $('app').classList.add('in-conversation');
  renderConversations();
  renderTyping();
  await loadMessages();
  $('composer-text').focus();
}

async function loadMessages(before) {
  const conv = S.conv;
  const q = `messages?conversation=${conv}&limit=100` + (before ? `&before=${before}` : '');
  const j = await api(q);
  if (conv !== S.conv) return;
  if (before) {
    S.messages = j.messages.concat(S.messages);
  } else {
    // Keep the earlier pages already loaded.
    const first = j.messages.length ? j.messages[0].seq : Infinity;
    S.messages = S.messages.filter((m) => m.seq < first).concat(j.messages);
  }
  if (!before || true) S.more = before ? j.more : (S.more && S.messages.length > j.messages.length) || j.more;
  renderMessages(!!before);
  markRead();
}

function atBottom() {
  const sc = $('scroller');
  return sc.scrollHeight - sc.scrollTop - sc.clientHeight < 40;
}

function renderMessages(keepTop) {
  const sc = $('scroller');
  const stick = atBottom();
  const oldHeight = sc.scrollHeight;
  const active = document.activeElement;
  const focusKey = active && active.dataset && active.dataset.key;
  const items = [];
  let day = null;
  for (const m of S.messages) {
    const d = dayLabel(m.sent || m.received);
    if (d !== day) {
      day = d;
      items.push(el('li', { class: 'day' }, el('h3', { class: 'visually-hidden' }, d), el('span', { 'aria-hidden': 'true' }, d)));
    }
    items.push(renderMessage(m));
  }
  $('messages').replaceChildren(...items);
  $('earlier').hidden = !S.more;
  if (focusKey) {
    const again = $('messages').querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
  if (keepTop) sc.scrollTop = sc.scrollHeight - oldHeight;
  else if (stick || !S.rendered) sc.scrollTop = sc.scrollHeight;
  S.rendered = true;
}

function renderMessage(m) {
  const cls = ['msg', m.kind];
  if (m.outgoing) cls.push('mine');
  const who = m.kind === 'notice' ? 'Ferry' : m.outgoing ? 'You' : m.from;
  const li = el('li', { class: cls.join(' '), 'data-id': m.id });
  li.append(el('span', { class: 'visually-hidden' }, who + ': '));
  if (m.quote) {
    const q = m.quote.missing ? 'The original message is not available.' :
      (m.quote.mine ? 'You' : m.quote.from) + ': ' + m.quote.text;
    li.append(el('blockquote', { class: 'quote' }, el('span', { class: 'visually-hidden' }, 'Replying to '), q));
  }
  if (m.attachment) li.append(renderAttachment(m));
  else li.append(el('p', { class: 'text' }, m.text));
  if (m.reactions && m.reactions.length) {
    li.append(el('p', { class: 'reactions' }, ...m.reactions.map((r) =>
      el('span', { title: r.mine ? 'You' : r.from }, r.emoji, el('span', { class: 'visually-hidden' }, ' from ' + (r.mine ? 'you' : r.from))))));
  }
  const meta = el('p', { class: 'meta' });
  meta.append(el('time', { datetime: new Date(m.sent).toISOString() }, timeLabel(m.sent)));
  if (m.edited) meta.append(el('span', {}, 'edited'));
  if (m.timer) {
    const t = m.expires ? `disappears at ${timeLabel(m.expires)}` : `disappears ${timerWords(m.timer)} after it is read`;
    meta.append(el('span', { title: t }, '⏱', el('span', { class: 'visually-hidden' }, ' ' + t)));
  }
  if (m.outgoing && m.kind !== 'timer') {
    meta.append(el('span', { class: 'state state-' + m.state, title: stateWords[m.state] },
      el('span', { 'aria-hidden': 'true' }, stateMarks[m.state] || ''), el('span', { class: 'visually-hidden' }, stateWords[m.state] || m.state)));
  }
  li.append(meta);
  if (m.kind === 'text' || m.kind === 'reply') li.append(messageTools(m));
  return li;
}

function messageTools(m) {
  const key = (a) => a + ':' + m.id;
  const tools = el('div', { class: 'tools' },
    el('button', { type: 'button', 'data-key': key('reply'), 'aria-label': 'Reply to this message', onclick: () => startReply(m) }, 'Reply'),
    el('button', { type: 'button', 'data-key': key('react'), 'aria-label': 'React to this message', onclick: () => openReact(m) }, 'React'));
  if (m.editable) {
    tools.append(
      el('button', { type: 'button', 'data-key': key('edit'), 'aria-label': 'Edit this message', onclick: () => openEdit(m) }, 'Edit'),
      el('button', { type: 'button', 'data-key': key('delete'), 'aria-label': 'Delete this message for everyone', onclick: () => openDelete(m) }, 'Delete'));
  }
  return tools;
}

async function markRead() {
  if (document.hidden || S.conv === null) return;
  const unread = S.messages.filter((m) => !m.outgoing && m.state !== 'read');
  if (!unread.length) return;
  const upto = Math.max(...unread.map((m) => m.seq));
  await api('read', { conversation: S.conv, upto });
}

// --- writing ------------------------------------------------------------

async function send() {
  const box = $('composer-text');
  const text = box.value;
  if (!text.trim()) return;
  const body = { conversation: S.conv, text };
  if (S.replyTo) body.reply = S.replyTo.id;
  box.value = '';
  S.replyTo = null;
  renderReplyTo();
  stopTyping();
  try {
    await api('send', body);
  } catch (e) {
    box.value = text;
    throw e;
  }
  S.rendered = false;
  await loadMessages();
}

function startReply(m) {
  S.replyTo = m;
  renderReplyTo();
  $('composer-text').focus();
}

function renderReplyTo() {
  $('reply-to').hidden = !S.replyTo;
  if (S.replyTo) $('reply-to-text').textContent = 'Replying to ' + (S.replyTo.outgoing ? 'yourself' : S.replyTo.from) + ': ' + S.replyTo.text;
}

function onTyping() {
  if (!S.state || !S.state.typingIndicators || S.conv === null) return;
  const now = Date.now();
  if (now - S.typingSent > 3000) {
    S.typingSent = now;
    api('typing', { conversation: S.conv, on: true }).catch(() => {});
  }
  clearTimeout(S.typingStop);
  S.typingStop = setTimeout(stopTyping, 5000);
}

function stopTyping() {
  clearTimeout(S.typingStop);
  if (S.typingSent && S.conv !== null) {
    S.typingSent = 0;
    api('typing', { conversation: S.conv, on: false }).catch(() => {});
  }
}

function onTypingEvent(t) {
  const old = S.typing.get(t.conversation);
  if (old) clearTimeout(old.timer);
  if (t.typing) {
    S.typing.set(t.conversation, { name: t.name, timer: setTimeout(() => { S.typing.delete(t.conversation); renderTyping(); }, 6000) });
  } else {
    S.typing.delete(t.conversation);
  }
  renderTyping();
}

function renderTyping() {
  const c = current();
  const t = c && S.typing.get(c.id);
  $('typing').textContent = t ? `${t.name || c.name} is typing…` : '';
}

// --- dialogs ------------------------------------------------------------

function openDialog(id) {
  const d = $(id);
  if (!d.open) d.showModal();
  return d;
}

async function openInvite() {
  const j = await api('invite', {});
  $('invite-link').value = j.link;
  drawQR($('invite-qr'), j.qr);
  openDialog('invite-dialog');
  $('invite-copy').focus();
}

async function copyInvite() {
  const link = $('invite-link').value;
  try {
    await navigator.clipboard.writeText(link);
    toast('The invite link is copied.');
  } catch (e) {
    $('invite-link').select();
    toast('Select the link and copy it (Ctrl+C).');
  }
}

async function addContact(ev) {
  ev.preventDefault();
  const link = $('add-link').value.trim();
  const j = await api('accept', { link });
  stopScan();
  $('add-dialog').close();
  $('add-link').value = '';
  toast(`${j.name} is added. They become a contact as soon as their Ferry answers.`);
  await refresh();
  if (j.conversation) await openConversation(j.conversation);
}

// Scanning a QR code with the camera: with the browser's BarcodeDetector
// where it reads QR codes (Chromium on Android, macOS and ChromeOS),
// else with jsQR (vendor/jsQR.js, loaded from this server only when
// needed; vendor/README.md says which version).
let scanStream = null;
let jsQRLoading = null;
function loadJsQR() {
  if (window.jsQR) return Promise.resolve();
  if (!jsQRLoading) {
    jsQRLoading = new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = '/vendor/jsQR.js';
      s.onload = resolve;
      s.onerror = () => { jsQRLoading = null; reject(new Error('The QR code reader did not load; paste the link instead.')); };
      document.head.append(s);
    });
  }
  return jsQRLoading;
}

// qrReader returns a function that reads a QR code's text from a video
// frame, or null if it finds none.
async function qrReader() {
  if ('BarcodeDetector' in window) {
    const formats = await BarcodeDetector.getSupportedFormats().catch(() => []);
    if (formats.includes('qr_code')) {
      const det = new BarcodeDetector({ formats: ['qr_code'] });
      return async (video) => {
        const codes = await det.detect(video).catch(() => []);
        return codes.length ? codes[0].rawValue : null;
      };
    }
  }
  await loadJsQR();
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  return async (video) => {
    const scale = Math.min(1, 960 / Math.max(video.videoWidth, video.videoHeight, 1));
    const w = Math.round(video.videoWidth * scale);
    const h = Math.round(video.videoHeight * scale);
    if (!w || !h) return null;
    canvas.width = w;
    canvas.height = h;
    ctx.drawImage(video, 0, 0, w, h);
    const code = window.jsQR(ctx.getImageData(0, 0, w, h).data, w, h, { inversionAttempts: 'attemptBoth' });
    return code && code.data ? code.data : null;
  };
}

async function scan(onCode) {
  const video = $('scan-video');
  const read = await qrReader();
  try {
    scanStream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
  } catch (e) {
    throw new Error('Ferry cannot use a camera here (none, or permission refused); paste the link instead.');
  }
  video.srcObject = scanStream;
  $('scan-area').hidden = false;
  $('scan-status').textContent = 'Hold the QR code in front of the camera.';
  await video.play();
  while (scanStream) {
    const text = await read(video);
    if (text) {
      $('scan-status').textContent = 'QR code read.';
      onCode(text);
      stopScan();
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function stopScan() {
  if (scanStream) scanStream.getTracks().forEach((t) => t.stop());
  scanStream = null;
  $('scan-area').hidden = true;
}

async function openSafety() {
  const c = current();
  if (!c) return;
  const j = await api('safety?contact=' + c.contact);
  $('safety-title').textContent = 'Safety number with ' + c.name;
  $('safety-number').textContent = j.number;
  $('safety-result').textContent = '';
  drawQR($('safety-qr'), j.qr);
  openDialog('safety-dialog');
}

async function scanSafety() {
  const c = current();
  $('safety-dialog').append($('scan-area'));
  await scan(run(async (code) => {
    const j = await api('safety/scan', { contact: c.contact, code });
    $('safety-result').textContent = j.match ? `The codes match: you are talking with ${c.name}, and nobody is in between.` :
      `The codes do not match. This may not be ${c.name}'s Ferry; do not trust this conversation until you know why.`;
  }));
}

const reactions = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
function openReact(m) {
  S.target = m;
  $('react-choices').replaceChildren(...reactions.map((e) =>
    el('button', { type: 'button', 'aria-label': 'React with ' + e, onclick: run(() => react(e)) }, e)));
  openDialog('react-dialog');
  $('react-choices').firstChild.focus();
}

async function react(emoji) {
  $('react-dialog').close();
  await api('react', { conversation: S.conv, message: S.target.id, emoji });
  await loadMessages();
}

function openEdit(m) {
  S.target = m;
  $('edit-text').value = m.text;
  openDialog('edit-dialog');
  $('edit-text').focus();
}

async function saveEdit(ev) {
  ev.preventDefault();
  $('edit-dialog').close();
  await api('edit', { conversation: S.conv, message: S.target.id, text: $('edit-text').value });
  await loadMessages();
}

function openDelete(m) {
  S.target = m;
  openDialog('delete-dialog');
  $('delete-confirm').focus();
}

async function confirmDelete() {
  $('delete-dialog').close();
  await api('delete', { conversation: S.conv, message: S.target.id });
  await loadMessages();
}

async function setTimer() {
  const seconds = Number($('timer').value);
  await api('timer', { conversation: S.conv, seconds });
  toast(seconds ? `New messages disappear ${timerWords(seconds)} after they are read.` : 'Messages no longer disappear.');
  await refresh();
}

function notifyState() {
  if (!('Notification' in window)) return 'This browser cannot show notifications.';
  return { granted: 'On.', denied: 'Blocked in the browser settings.', default: 'Off.' }[Notification.permission];
}


// --- files and voice notes ---------------------------------------------

function fileURL(m, thumb) {
  return '/api/file?message=' + m.id + (thumb ? '&thumb=1' : '');
}

function sizeWords(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + ' GB';
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MB';
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KB';
  return n + ' bytes';
}

// drawWave draws a voice note's waveform (levels 0-255) as SVG bars.
function drawWave(levels) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${levels.length * 3} 32`);
  svg.setAttribute('class', 'wave');
  svg.setAttribute('aria-hidden', 'true');
  levels.forEach((v, i) => {
    const h = 2 + (v / 255) * 30;
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', i * 3); r.setAttribute('y', (32 - h) / 2);
    r.setAttribute('width', 2); r.setAttribute('height', h); r.setAttribute('fill', 'currentColor');
    svg.append(r);
  });
  return svg;
}

function renderAttachment(m) {
  const a = m.attachment;
  const box = el('div', { class: 'file' });
  const label = a.voice ? `Voice note, ${Math.round(a.duration / 1000)} seconds` : `${a.name} (${sizeWords(a.size)})`;
  if (a.voice) {
    box.append(drawWave(a.waveform || []));
    if (a.ready) box.append(el('audio', { controls: true, preload: 'metadata', src: fileURL(m), 'aria-label': label }));
  } else if (a.ready && a.type.startsWith('image/') && a.type !== 'image/svg+xml') {
    box.append(el('a', { href: fileURL(m), target: '_blank', rel: 'noopener' },
      el('img', { class: 'media', src: fileURL(m), alt: 'Photo: ' + a.name })));
  } else if (a.ready && a.type.startsWith('video/')) {
    box.append(el('video', { class: 'media', controls: true, preload: 'metadata', src: fileURL(m), 'aria-label': 'Video: ' + a.name }));
  } else if (a.thumb) {
    box.append(el('img', { class: 'media', src: fileURL(m, true), alt: 'Preview of ' + a.name }));
  }
  const pct = S.progress.get(m.id);
  if (a.transfer === 'pending' && !m.outgoing && pct === undefined) {
    box.append(el('p', {}, label + ' ',
      el('button', { type: 'button', 'data-key': 'download:' + m.id, 'aria-label': 'Download ' + label,
        onclick: run(async () => { S.progress.set(m.id, 0); renderMessages(); await api('download', { message: m.id }); S.progress.delete(m.id); await loadMessages(); }) }, 'Download')));
  } else if (a.transfer === 'pending' && !m.outgoing) {
    box.append(el('p', { class: 'muted' }, `Downloading ${label} (${pct}%)`));
  } else if (a.transfer === 'failed') {
    box.append(el('p', { class: 'muted' }, `${label}: ${a.error || 'the transfer failed'}`));
  } else if (a.ready) {
    box.append(el('a', { href: fileURL(m), download: a.name }, a.voice ? 'Save the voice note' : 'Save ' + label));
  } else {
    box.append(el('p', {}, label));
  }
  return box;
}

// upload sends one file (or a recorded voice note) with its progress:
// first into Ferry on this device, then to the relay (transfer events).
function upload(blob, name, voice) {
  const conv = S.conv;
  const bar = el('progress', { max: 100, value: 0, 'aria-label': 'Sending ' + name });
  const words = el('span', {}, 'Preparing ' + name);
  const item = el('li', {}, words, bar);
  $('uploads').append(item);
  const url = `/api/upload?conversation=${conv}&name=${encodeURIComponent(name)}` + (voice ? '&voice=1' : '');
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    const show = (v) => { bar.value = Math.max(bar.value, v); S.progressLog.push(bar.value); };
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) show(Math.round(50 * e.loaded / e.total)); };
    item.onTransfer = (t) => { words.textContent = 'Sending ' + name; show(50 + Math.round(50 * t.done / Math.max(1, t.total))); };
    xhr.onload = () => {
      let j = {};
      try { j = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 200 || xhr.status === 202) {
        bar.value = 100;
        words.textContent = (xhr.status === 200 ? 'Sent ' : 'Waiting to send ') + name;
        if (j.note) toast(j.note);
        S.uploadsDone.push({ name, value: bar.value });
      } else {
        toast(j.error || 'The file could not be sent.');
      }
      setTimeout(() => item.remove(), 1500);
      run(loadMessages)();
      resolve();
    };
    xhr.onerror = () => { toast('The file could not be sent.'); item.remove(); resolve(); };
    S.uploading.set(item, true);
    xhr.send(blob);
  });
}

function onTransferEvent(t) {
  S.progress.set(t.message, Math.round(100 * t.done / Math.max(1, t.total)));
  if (t.outgoing) {
    for (const item of $('uploads').children) if (item.onTransfer) item.onTransfer(t);
  } else if (t.done < t.total) {
    renderMessages();
  }
}

async function sendFiles(files) {
  for (const f of files) await upload(f, f.name, false);
}

// Voice notes: MediaRecorder gives Opus (in WebM in Chromium); Ferry
// turns it into the Ogg Opus every Ferry reads.
let recorder = null;
async function toggleRecording() {
  if (recorder) { recorder.stop(); return; }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const type = ['audio/ogg;codecs=opus', 'audio/webm;codecs=opus'].find((t) => MediaRecorder.isTypeSupported(t));
  if (!type) { stream.getTracks().forEach((t) => t.stop()); throw new Error('This browser cannot record Opus audio.'); }
  const chunks = [];
  const started = Date.now();
  recorder = new MediaRecorder(stream, { mimeType: type });
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  const tick = setInterval(() => { $('record-state').textContent = `Recording: ${Math.round((Date.now() - started) / 1000)} s`; }, 500);
  recorder.onstop = run(async () => {
    clearInterval(tick);
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    $('record-btn').textContent = 'Record a voice note';
    $('record-btn').setAttribute('aria-pressed', 'false');
    $('record-state').textContent = '';
    await upload(new Blob(chunks, { type }), 'voice note', true);
  });
  recorder.start(250);
  $('record-btn').textContent = 'Stop and send';
  $('record-btn').setAttribute('aria-pressed', 'true');
  $('record-state').textContent = 'Recording…';
}

// --- groups -------------------------------------------------------------

async function openNewGroup() {
  const j = await api('groups');
  $('group-contacts').replaceChildren(...j.contacts.map((k) => el('p', {},
    el('label', {}, el('input', { type: 'checkbox', value: k.id, name: 'member' }), ' ' + k.name))));
  $('group-name').value = '';
  openDialog('group-dialog');
  $('group-name').focus();
}

async function createGroup(ev) {
  ev.preventDefault();
  const contacts = [...document.querySelectorAll('#group-contacts input:checked')].map((i) => Number(i.value));
  const j = await api('group', { op: 'create', name: $('group-name').value.trim(), contacts });
  $('group-dialog').close();
  await refresh();
  if (j.conversation) await openConversation(j.conversation);
}

async function openMembers() {
  const j = await api('groups');
  const g = j.groups.find((x) => x.conversation === S.conv);
  if (!g) return;
  $('members-title').textContent = 'Members of ' + g.name;
  const items = [el('li', {}, 'You' + (g.admin ? ' (admin)' : ''))];
  for (const name of g.members) {
    const li = el('li', {}, el('span', {}, name + (g.admins.includes(name) ? ' (admin)' : '')));
    if (g.admin && !g.gone) {
      li.append(el('button', { type: 'button', 'aria-label': 'Remove ' + name + ' from the group',
        onclick: run(async () => { await api('group', { op: 'remove', conversation: S.conv, member: name }); await openMembers(); await refresh(); }) }, 'Remove'));
    }
    items.push(li);
  }
  if (g.gone) items.push(el('li', { class: 'muted' }, g.gone));
  $('members-list').replaceChildren(...items);
  const others = j.contacts.filter((k) => !g.members.includes(k.name));
  $('members-add').replaceChildren(...others.map((k) => el('option', { value: k.id }, k.name)));
  $('members-add-row').hidden = !g.admin || !!g.gone || !others.length;
  $('leave-btn').hidden = !!g.gone;
  openDialog('members-dialog');
}

// --- events from Ferry --------------------------------------------------

function listen() {
  const es = new EventSource('/api/events');
  let timer = null;
  const later = (ids) => {
    // Coalesce bursts of changes into one refresh.
    later.ids = later.ids === undefined ? ids : (ids && later.ids ? later.ids.concat(ids) : null);
    clearTimeout(timer);
    timer = setTimeout(run(() => { const x = later.ids; later.ids = undefined; return refresh(x); }), 50);
  };
  es.addEventListener('changed', (e) => later(JSON.parse(e.data).conversations || null));
  es.addEventListener('status', (e) => { if (S.state) { S.state.status = JSON.parse(e.data); renderStatus(S.state.status); } later([]); });
  es.addEventListener('typing', (e) => onTypingEvent(JSON.parse(e.data)));
  es.addEventListener('message', (e) => notify(JSON.parse(e.data)));
  es.addEventListener('transfer', (e) => onTransferEvent(JSON.parse(e.data)));
  es.addEventListener('open', () => later(null));
}

function notify(m) {
  if (!document.hidden && m.conversation === S.conv) return;
  if (!('Notification' in window) || Notification.permission !== 'granted' || !document.hidden) return;
  const n = new Notification(m.name, { body: m.text, tag: 'ferry-' + m.conversation });
  n.onclick = () => { window.focus(); openConversation(m.conversation); n.close(); };
}

// --- wiring -------------------------------------------------------------

function wire() {
  $('onboarding-form').addEventListener('submit', run(async (ev) => {
    ev.preventDefault();
    await api('init', { name: $('onboarding-name').value.trim(), relay: $('onboarding-relay').value.trim() });
    await refresh();
    await openInvite();
  }));
  $('invite-btn').addEventListener('click', run(openInvite));
  $('invite-copy').addEventListener('click', run(copyInvite));
  $('add-btn').addEventListener('click', () => { openDialog('add-dialog'); $('add-link').focus(); });
  $('add-form').addEventListener('submit', run(addContact));
  $('scan-btn').addEventListener('click', run(() => { $('add-form').append($('scan-area')); return scan((code) => { $('add-link').value = code; $('add-form').requestSubmit(); }); }));
  $('settings-btn').addEventListener('click', () => { $('notify-state').textContent = notifyState(); openDialog('settings-dialog'); });
  $('typing-setting').addEventListener('change', run(async () => {
    await api('settings', { typingIndicators: $('typing-setting').checked });
    await refresh();
  }));
  $('notify-btn').addEventListener('click', run(async () => {
    if ('Notification' in window) await Notification.requestPermission();
    $('notify-state').textContent = notifyState();
  }));
  $('safety-btn').addEventListener('click', run(openSafety));
  $('safety-scan').addEventListener('click', run(scanSafety));
  $('react-remove').addEventListener('click', run(() => react('')));
  $('edit-form').addEventListener('submit', run(saveEdit));
  $('delete-confirm').addEventListener('click', run(confirmDelete));
  $('timer').addEventListener('change', run(setTimer));
  $('back').addEventListener('click', () => { $('app').classList.remove('in-conversation'); S.conv = null; renderConversations(); });
  $('earlier').addEventListener('click', run(() => loadMessages(S.messages.length ? S.messages[0].seq : 0)));
  $('reply-cancel').addEventListener('click', () => { S.replyTo = null; renderReplyTo(); $('composer-text').focus(); });
  $('composer').addEventListener('submit', run((ev) => { ev.preventDefault(); return send(); }));
  $('composer-text').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      run(send)();
    } else if (ev.key === 'Escape' && S.replyTo) {
      S.replyTo = null;
      renderReplyTo();
    }
  });
  $('composer-text').addEventListener('input', onTyping);
  for (const d of document.querySelectorAll('dialog')) {
    for (const b of d.querySelectorAll('button.close')) b.addEventListener('click', () => { stopScan(); d.close(); });
    d.addEventListener('close', stopScan);
  }
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    $('scan-btn').hidden = false;
    $('safety-scan').hidden = false;
  }
  document.addEventListener('visibilitychange', run(markRead));
  $('attach-btn').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', run(async () => { const fs = [...$('file-input').files]; $('file-input').value = ''; await sendFiles(fs); }));
  $('record-btn').addEventListener('click', run(toggleRecording));
  const conv = $('conv');
  conv.addEventListener('dragover', (ev) => { if (ev.dataTransfer && [...ev.dataTransfer.types].includes('Files')) { ev.preventDefault(); conv.classList.add('dragging'); } });
  conv.addEventListener('dragleave', () => conv.classList.remove('dragging'));
  conv.addEventListener('drop', run(async (ev) => {
    ev.preventDefault();
    conv.classList.remove('dragging');
    await sendFiles([...ev.dataTransfer.files]);
  }));
  $('group-btn').addEventListener('click', run(openNewGroup));
  $('group-form').addEventListener('submit', run(createGroup));
  $('members-btn').addEventListener('click', run(openMembers));
  $('members-add-btn').addEventListener('click', run(async () => {
    await api('group', { op: 'add', conversation: S.conv, contact: Number($('members-add').value) });
    await openMembers();
  }));
  $('leave-btn').addEventListener('click', run(async () => {
    await api('group', { op: 'leave', conversation: S.conv });
    $('members-dialog').close();
    await refresh();
  }));
}

wire();
listen();
run(refresh)();
