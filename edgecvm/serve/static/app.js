// The page of `edgecvm serve`: it uses only the JSON API documented in docs/serve.md.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);

function url(path) {
  return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
}

async function call(method, path, body) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const init = { method, headers };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw { error: "the device does not answer (" + err.message + ")" };
  }
  const data = await response.json().catch(() => ({ error: "HTTP " + response.status }));
  if (!response.ok) throw data;
  return data;
}

function say(text, isError, close) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
  for (const name of close || []) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.onclick = () => { $("concept").value = name; say("", false); };
    message.appendChild(button);
  }
}

function fail(err) { say(err.error || String(err), true, err.close); }

// ---- live preview: one JPEG after another, a few per second ---------------------------------------
function refreshPreview() {
  const img = $("preview");
  img.onload = () => setTimeout(refreshPreview, 250);
  img.onerror = () => setTimeout(refreshPreview, 1000);
  img.src = url("api/preview.jpg?t=" + Date.now());
}

// ---- the current answer, pushed by the server -----------------------------------------------------
function showAnswer(answer) {
  $("answer-concept").textContent = answer.concept;
  $("answer-score").textContent = answer.score.toFixed(2);
  $("answer-frame").textContent = answer.frame
    + (answer.latency_ms === null ? "" : " · " + Math.round(answer.latency_ms) + " ms after it arrived")
    + (answer.among === "all" ? " · zero-shot, among every concept" : "")
    + (answer.unknown ? " · none of the taught concepts; the nearest:" : "");
  const bars = $("bars");
  bars.replaceChildren(...answer.top_k.map(([name, score]) => {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = Math.max(0, Math.min(1, score)) * 100 + "%";
    bar.appendChild(fill);
    const value = document.createElement("span");
    value.textContent = score.toFixed(2);
    li.append(label, bar, value);
    return li;
  }));
}

function listenAnswers() {
  const feed = new EventSource(url("api/predictions"));
  feed.onmessage = (event) => showAnswer(JSON.parse(event.data));
}

// ---- status and concepts, polled ------------------------------------------------------------------
let paused = false;
let knownUpdates = -1;

async function refreshStatus() {
  try {
    const s = await call("GET", url("api/status"));
    const pill = $("stream-state");
    pill.textContent = s.stream.state;
    pill.className = "pill" + ({ reconnecting: " warn", lost: " bad", failed: " bad", ended: " warn" }[s.stream.state] || "");
    pill.title = s.stream.error || "";
    $("status-source").textContent = s.stream.source + " (" + s.stream.kind + "), " + s.stream.frames + " frames" +
      (s.stream.error ? " — " + s.stream.error : "");
    $("status-fps").textContent = s.stream.frames_per_s === null ? "–" : s.stream.frames_per_s;
    const r = s.learning.recording;
    $("status-recording").textContent = r ? r.concept + ", " + r.remaining + " frames to go" : "no";
    $("status-memory").textContent = (s.memory.rss_mb ?? "?") + " MB of " + s.memory.budget_mb + " MB budget (" +
      s.profile + "), peak " + s.memory.peak_rss_mb + " MB";
    const c = s.checkpoint;
    $("status-checkpoint").textContent = c.update === null ? "none yet" :
      "update " + c.update + " at " + new Date(c.at * 1000).toLocaleTimeString() + (c.failed ? ", " + c.failed + " failed" : "");
    paused = s.learning.paused;
    $("pause").textContent = paused ? "Resume learning" : "Pause learning";
    if (s.learning.updates !== knownUpdates) {
      knownUpdates = s.learning.updates;
      refreshConcepts();
    }
  } catch (err) {
    $("stream-state").textContent = "offline";
    $("stream-state").className = "pill bad";
  }
  setTimeout(refreshStatus, 1000);
}

async function refreshConcepts() {
  const c = await call("GET", url("api/concepts"));
  $("known").replaceChildren(...c.known.map((k) => {
    const li = document.createElement("li");
    li.textContent = k.name + " — " + k.examples + " examples";
    return li;
  }));
}

// ---- completion: the server sends the few names that match what is typed, never the whole vocabulary --------
let completing = 0;
let completionTimer;
async function complete() {
  const asked = ++completing;
  const text = $("concept").value.trim();
  const r = text ? await call("GET", url("api/vocabulary?limit=20&q=" + encodeURIComponent(text))) : { matches: [] };
  if (asked !== completing) return; // a newer keystroke is already on its way
  $("vocabulary").replaceChildren(...r.matches.map((name) => {
    const option = document.createElement("option");
    option.value = name;
    return option;
  }));
}
$("concept").addEventListener("input", () => {
  clearTimeout(completionTimer);
  completionTimer = setTimeout(() => complete().catch(fail), 120);
});

// ---- teaching -------------------------------------------------------------------------------------
const concept = () => $("concept").value.trim();

async function record(frames) {
  const r = await call("POST", "api/teach", { concept: concept(), frames });
  say("recording " + r.recording.remaining + " frames of " + r.recording.concept + (r.paused ? " (held: learning is paused)" : ""));
  return r;
}

$("record").onclick = () => record(parseInt($("frames").value, 10)).catch(fail);
$("stop").onclick = () => call("POST", "api/teach/stop").then(() => say("recording stopped")).catch(fail);

let holding = false;
$("hold").onpointerdown = (event) => {
  event.preventDefault();
  holding = true;
  record(10000).catch((err) => { holding = false; fail(err); });
};
for (const type of ["pointerup", "pointerleave", "pointercancel"]) {
  $("hold").addEventListener(type, () => {
    if (!holding) return;
    holding = false;
    call("POST", "api/teach/stop").then(() => say("recording stopped")).catch(fail);
  });
}

// Phone photos are several MB each; the backbone sees 224 px. Sending at most UPLOAD_PX a side keeps many
// photos inside one request's size limit. A file the browser cannot decode goes as it is: the server's
// guarded decoder then says what is wrong with it.
const UPLOAD_PX = 1024;
async function shrink(file) {
  let bitmap;
  try { bitmap = await createImageBitmap(file); } catch { return file; }
  const scale = UPLOAD_PX / Math.max(bitmap.width, bitmap.height);
  if (scale >= 1) { bitmap.close(); return file; }
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  return blob || file;
}

$("upload").onclick = async () => {
  const files = $("files").files;
  if (!files.length) { say("choose one or more images first", true); return; }
  const form = new FormData();
  form.append("concept", concept());
  for (const file of files) form.append("file", await shrink(file), file.name);
  say("uploading " + files.length + " image(s)…");
  try {
    const r = await call("POST", "api/upload", form);
    const refused = r.refused.map((x) => x.file + ": " + x.error).join("; ");
    say("taught " + r.taught + " image(s) of " + r.concept + (refused ? ". Refused " + refused : ""), r.refused.length > 0);
    $("files").value = "";
    refreshConcepts();
  } catch (err) { fail(err); }
};

$("pause").onclick = () => call("POST", paused ? "api/resume" : "api/pause")
  .then((r) => { paused = r.paused; $("pause").textContent = paused ? "Resume learning" : "Pause learning"; })
  .catch(fail);

refreshPreview();
listenAnswers();
refreshStatus();
refreshConcepts().catch(fail);
