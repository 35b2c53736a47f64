// atlas_kit web page: plain JavaScript over the JSON API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${response.status}: ${body.detail || response.statusText}`);
  }
  return body;
}

function label(index) {
  return index.ref || `${index.name} v${index.version}`;
}

function showIndex(info) {
  const v = $("version");
  v.textContent = label(info);
  v.dataset.ref = info.ref || "";
  $("index-meta").textContent = `(${info.kind}, ${info.count} passages)`;
}

async function refreshIndex() {
  showIndex(await api("/v1/index"));
}

async function refreshVersions() {
  const { indexes } = await api("/v1/indexes");
  const select = $("versions");
  select.replaceChildren(...indexes.map((entry) => {
    const option = document.createElement("option");
    option.value = entry.ref;
    option.textContent = entry.ref + (entry.current ? " (published)" : "");
    return option;
  }));
  $("swap").disabled = indexes.length === 0;
}

function showPassages(passages) {
  $("passages").replaceChildren(...passages.map((p) => {
    const li = document.createElement("li");
    li.className = "passage";
    li.dataset.id = p.id;
    const head = document.createElement("div");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = p.score.toFixed(3) + " ";
    const title = document.createElement("strong");
    title.textContent = p.title || p.id;
    head.append(score, title, document.createTextNode(` [${p.id}]`));
    const text = document.createElement("div");
    text.textContent = p.text;
    li.append(head, text);
    return li;
  }));
}

$("ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("question").value;
  const k = Number($("k").value) || 5;
  $("error").hidden = true;
  $("ask").disabled = true;
  try {
    let answer = "", passages, index;
    if ($("retrieve-only").checked) {
      const body = await api("/v1/retrieve", { method: "POST", body: JSON.stringify({ questions: [question], k }) });
      [passages, index] = [body.results[0], body.index];
    } else {
      ({ answer, passages, index } = await api("/v1/ask", { method: "POST", body: JSON.stringify({ question, k }) }));
    }
    $("answer").textContent = answer || "(retrieval only)";
    $("answer-version").textContent = label(index);
    showPassages(passages);
    $("result").hidden = false;
  } catch (err) {
    $("error").textContent = err.message;
    $("error").hidden = false;
  } finally {
    $("ask").disabled = false;
  }
});

$("swap-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const ref = $("versions").value;
  $("swap-status").textContent = `swapping to ${ref}…`;
  try {
    const body = await api("/v1/index/swap", {
      method: "POST",
      headers: { Authorization: `Bearer ${$("token").value}` },
      body: JSON.stringify({ ref }),
    });
    showIndex(body.index);
    $("swap-status").textContent = `now serving ${label(body.index)}`;
  } catch (err) {
    $("swap-status").textContent = `swap refused: ${err.message}`;
  }
});

refreshIndex().catch((err) => { $("version").textContent = `unavailable (${err.message})`; });
refreshVersions().catch(() => { $("swap").disabled = true; });
