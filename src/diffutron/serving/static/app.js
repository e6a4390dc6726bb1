// The playground: sends the conversation with stream_canvas=true and draws every partial canvas the
// server streams (text runs and mask counts), so the answer visibly unmasks. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const history = []; // chat turns sent with the next question

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function settings() {
  const body = { model: window.MODEL_ID, stream: true, stream_canvas: true, preset: $("preset").value };
  for (const key of ["max_tokens", "steps", "block_size", "threshold", "temperature", "seed"]) {
    const value = $(key).value.trim();
    if (value !== "") body[key] = Number(value);
  }
  body.remasking = $("remasking").value;
  if (mode() === "infill") delete body.max_tokens;
  return body;
}

function render(target, canvas, previous) {
  // canvas: ["text", 3, "more text", ...]: strings are decoded runs, numbers are runs of masks
  target.textContent = "";
  for (const part of canvas) {
    if (typeof part === "number") {
      for (let i = 0; i < part; i++) {
        const m = document.createElement("span");
        m.className = "mask";
        target.appendChild(m);
      }
    } else {
      const s = document.createElement("span");
      s.textContent = part;
      if (previous && !previous.includes(part)) s.className = "new";
      target.appendChild(s);
    }
  }
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const answer = document.createElement("div");
  answer.className = "answer";
  answer.textContent = text || "";
  div.appendChild(answer);
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

async function ask(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text) return;
  $("send").disabled = true;
  addMessage("user", text);
  const box = addMessage("assistant", "");
  box.dataset.state = "running";
  const answer = box.querySelector(".answer");
  const stats = document.createElement("div");
  stats.className = "stats";
  box.appendChild(stats);
  const frames = [];
  const body = settings();
  let path = "/v1/chat/completions";
  if (mode() === "infill") {
    path = "/v1/infill";
    body.prompt = text;
  } else {
    history.push({ role: "user", content: text });
    body.messages = history.slice();
  }
  const headers = { "Content-Type": "application/json" };
  if ($("api_key").value) headers.Authorization = "Bearer " + $("api_key").value;
  let final = null, summary = null;
  try {
    const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
    if (!response.ok) {
      const err = await response.json().catch(() => ({ error: { message: response.statusText } }));
      throw new Error(err.error.message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.diffutron) summary = chunk;
        for (const choice of chunk.choices || []) {
          render(answer, choice.canvas, frames.length ? frames[frames.length - 1] : null);
          frames.push(choice.canvas);
          box.dataset.frames = String(frames.length);
          stats.textContent = `step ${choice.step} · ${choice.forward_passes} forward passes`;
          if (choice.done) final = choice;
        }
      }
    }
    if (!final) throw new Error("the stream ended without an answer");
    answer.textContent = final.text;
    if (mode() === "chat") history.push({ role: "assistant", content: final.text });
    showStats(stats, answer, frames, final, summary);
    box.dataset.state = "done";
  } catch (err) {
    answer.textContent = "";
    answer.classList.add("error");
    answer.textContent = "Hata: " + err.message;
    box.dataset.state = "error";
  } finally {
    $("send").disabled = false;
    $("prompt").value = "";
  }
}

function showStats(stats, answer, frames, final, summary) {
  // the step slider replays the unmasking; the last frame is the finished answer
  stats.textContent = "";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.min = "1";
  slider.max = String(frames.length);
  slider.value = String(frames.length);
  slider.title = "replay the unmasking";
  slider.addEventListener("input", () => {
    const i = Number(slider.value) - 1;
    if (i === frames.length - 1) answer.textContent = final.text;
    else render(answer, frames[i], i ? frames[i - 1] : null);
  });
  const info = document.createElement("span");
  const d = summary ? summary.diffutron : { forward_passes: final.forward_passes, tokens_per_second: 0 };
  const tokens = summary && summary.usage ? summary.usage.completion_tokens : 0;
  info.textContent = `${d.forward_passes} forward passes · ${tokens} tokens · ${d.tokens_per_second} tokens/s`;
  stats.append("step", slider, info);
}

// the sampler fields a preset fills (page field -> GenerationConfig field); max_tokens stays the page's
const PRESET_FIELDS = {
  steps: "steps", block_size: "block_size", remasking: "remasking",
  threshold: "threshold", temperature: "temperature",
};
let PRESETS = {};

function applyPreset(name) {
  const values = PRESETS[name];
  if (!values) return;
  for (const [field, key] of Object.entries(PRESET_FIELDS)) {
    if (values[key] !== undefined && values[key] !== null) $(field).value = String(values[key]);
  }
}

async function init() {
  try {
    const headers = $("api_key").value ? { Authorization: "Bearer " + $("api_key").value } : {};
    const models = await (await fetch("/v1/models", { headers })).json();
    const info = models.data[0].diffutron || {};
    PRESETS = info.presets || {};
    if (Object.keys(PRESETS).length) {
      // the server's preset first, then the others: the page starts where the API does
      const names = [info.preset, ...Object.keys(PRESETS).filter((n) => n !== info.preset)];
      $("preset").replaceChildren(...names.map((n) => new Option(n, n)));
      $("preset").value = info.preset;
      applyPreset(info.preset);
    }
    window.MODEL_ID = models.data[0].id;
  } catch (err) {
    window.MODEL_ID = "diffutron";
  }
}

$("ask").addEventListener("submit", ask);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) ask(e);
});
$("api_key").addEventListener("change", init);
$("preset").addEventListener("change", () => applyPreset($("preset").value));
init();
