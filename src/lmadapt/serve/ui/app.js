// lmadapt web UI: a client of the same OpenAI-compatible API (and /api routes), with the same key.
// Data from the server (run names, metric names, model names, answers) goes into the page as text only
// (textContent, DOM nodes): never innerHTML, so a crafted run folder cannot run script here.
"use strict";
const T = {
  en: {tab_chat: "Chat", tab_runs: "Runs", tab_predict: "Predict", api_key: "API key", model: "Model",
       system: "System prompt", temperature: "Temperature", max_tokens: "Max new tokens", seed: "Seed",
       clear: "Clear history", send: "Send", say: "Type a message…", runs: "Runs", run: "Run", stage: "Stage",
       method: "Method", metrics: "Metrics (test)", leaderboards: "Leaderboards", metrics_all: "Metrics",
       recipe: "Recipe", file: "File (CSV / JSONL)", output: "Output", predict_go: "Predict",
       download: "Download predictions", you: "you", assistant: "assistant", no_runs: "No runs (start the server with --runs-root).",
       predicting: "Predicting…", need_file: "Choose a file first."},
  zh: {tab_chat: "对话", tab_runs: "运行记录", tab_predict: "批量预测", api_key: "API 密钥", model: "模型",
       system: "系统提示词", temperature: "温度", max_tokens: "最大新词元数", seed: "随机种子",
       clear: "清空历史", send: "发送", say: "输入消息…", runs: "运行记录", run: "运行", stage: "阶段",
       method: "方法", metrics: "指标（测试集）", leaderboards: "排行榜", metrics_all: "指标",
       recipe: "配方", file: "文件（CSV / JSONL）", output: "输出格式", predict_go: "预测",
       download: "下载预测结果", you: "你", assistant: "助手", no_runs: "没有运行记录（用 --runs-root 启动服务）。",
       predicting: "预测中…", need_file: "请先选择文件。"},
};
let lang = localStorage.getItem("lmadapt-lang") || "en";
const $ = (id) => document.getElementById(id);
const t = (k) => T[lang][k] || k;
const history = [];

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("lang").textContent = lang === "en" ? "中文" : "English";
  renderMessages();
}

function headers(extra = {}) {
  const key = $("key").value.trim();
  sessionStorage.setItem("lmadapt-key", key);
  return key ? {...extra, Authorization: "Bearer " + key} : extra;
}

async function api(path, options = {}) {
  const r = await fetch(path, {...options, headers: headers(options.headers || {})});
  if (!r.ok) {
    let message = r.status + " " + r.statusText;
    try { message = (await r.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return r;
}

// ------------------------------------------------------------------ tabs
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button").forEach((x) => x.setAttribute("aria-selected", x === b));
  document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== b.dataset.tab; });
  if (b.dataset.tab === "runs" || b.dataset.tab === "predict") loadRuns();
}));

// ------------------------------------------------------------------ chat
async function loadModels() {
  try {
    const data = await (await api("/v1/models")).json();
    $("model").replaceChildren();
    data.data.forEach((m) => $("model").add(new Option(m.id, m.id)));
    $("chat-error").textContent = "";
  } catch (e) { $("chat-error").textContent = e.message; }
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  history.forEach((m) => {
    const div = document.createElement("div");
    div.className = "msg " + m.role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = m.role === "user" ? t("you") : t("assistant");
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = m.content;
    div.append(who, text);
    box.append(div);
  });
  box.scrollTop = box.scrollHeight;
}

async function send(ev) {
  ev.preventDefault();
  const content = $("prompt").value.trim();
  if (!content) return;
  $("prompt").value = "";
  $("chat-error").textContent = "";
  history.push({role: "user", content});
  const reply = {role: "assistant", content: ""};
  history.push(reply);
  renderMessages();
  const messages = [];
  if ($("system").value.trim()) messages.push({role: "system", content: $("system").value.trim()});
  history.slice(0, -1).forEach((m) => messages.push({role: m.role, content: m.content}));
  const body = {model: $("model").value, messages, stream: true,
                temperature: Number($("temperature").value), top_p: Number($("top_p").value),
                max_tokens: Number($("max_tokens").value)};
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  $("send").disabled = true;
  try {
    const r = await api("/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
                                                 body: JSON.stringify(body)});
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const last = () => $("messages").lastElementChild.querySelector(".text");
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices.length ? chunk.choices[0].delta.content : "";
        if (delta) { reply.content += delta; last().textContent = reply.content; }
      }
    }
  } catch (e) {
    $("chat-error").textContent = e.message;
  } finally {
    $("send").disabled = false;
  }
}

// ------------------------------------------------------------------ runs
let runsCache = null;

async function image(path, alt) {
  const img = document.createElement("img");
  img.className = "plot";
  img.alt = alt;
  const r = await api("/api/file?path=" + encodeURIComponent(path));
  img.src = URL.createObjectURL(await r.blob());
  return img;
}

function mainMetrics(run) {
  const split = run.final.test || run.final.eval || Object.values(run.final)[0] || {};
  return Object.entries(split).filter(([k, v]) => typeof v === "number").slice(0, 3)
    .map(([k, v]) => k + " " + v.toFixed(3)).join(", ");
}

async function loadRuns() {
  $("runs-error").textContent = "";
  try {
    runsCache = await (await api("/api/runs")).json();
  } catch (e) { $("runs-error").textContent = e.message; return; }
  const body = $("run-table").querySelector("tbody");
  body.replaceChildren();
  if (!runsCache.runs.length) $("runs-error").textContent = t("no_runs");
  runsCache.runs.forEach((run) => {
    const tr = document.createElement("tr");
    [run.path, run.stage, run.method, run.model, mainMetrics(run)].forEach((v) => {
      const td = document.createElement("td"); td.textContent = v == null ? "" : v; tr.append(td);
    });
    tr.addEventListener("click", () => showRun(run));
    body.append(tr);
  });
  const boards = $("boards");
  boards.replaceChildren();
  for (const b of runsCache.leaderboards) {
    const div = document.createElement("div");
    const h = document.createElement("h3"); h.textContent = b.path || "."; div.append(h);
    const rows = (b.board && b.board.rows) || [];
    const metric = b.board && b.board.metric;
    const table = document.createElement("table");
    table.className = "board";
    const head = document.createElement("tr");
    ["#", "name", "method", metric || ""].forEach((v) => {
      const th = document.createElement("th"); th.textContent = v; head.append(th);
    });
    table.append(head);
    rows.forEach((row, i) => {
      const tr = document.createElement("tr");
      [i + 1, row.name, row.method, typeof row[metric] === "number" ? row[metric].toFixed(3) : ""].forEach((v) => {
        const td = document.createElement("td"); td.textContent = v; tr.append(td);
      });
      table.append(tr);
    });
    div.append(table);
    if (b.plot) div.append(await image(b.plot, "leaderboard " + b.path));
    boards.append(div);
  }
  const select = $("predict-run");
  select.replaceChildren();
  runsCache.runs.filter((r) => r.stage === "finetune").forEach((r) => select.add(new Option(r.path, r.path)));
}

async function showRun(run) {
  $("run-detail").hidden = false;
  $("run-title").textContent = run.path;
  const plots = $("plots");
  plots.replaceChildren();
  for (const p of run.plots) plots.append(await image(p, p));
  const table = $("metric-table");
  table.replaceChildren();
  Object.entries(run.final).forEach(([split, values]) => {
    Object.entries(values).forEach(([k, v]) => {
      const tr = document.createElement("tr");
      [split, k, typeof v === "number" ? v.toFixed(4) : JSON.stringify(v)].forEach((x) => {
        const td = document.createElement("td"); td.textContent = x; tr.append(td);
      });
      table.append(tr);
    });
  });
  try {
    $("recipe").textContent = await (await api("/api/file?path=" + encodeURIComponent(run.recipe))).text();
  } catch (e) { $("recipe").textContent = e.message; }
}

// ------------------------------------------------------------------ predict
async function predict() {
  $("predict-error").textContent = "";
  const file = $("predict-file").files[0];
  if (!file) { $("predict-error").textContent = t("need_file"); return; }
  const fmt = $("predict-format").value;
  $("predict-preview").textContent = t("predicting");
  try {
    const q = "run=" + encodeURIComponent($("predict-run").value) + "&filename=" + encodeURIComponent(file.name)
      + "&output=" + fmt;
    // octet-stream: a type no page can send here cross-site without a CORS preflight (the server insists)
    const r = await api("/api/predict?" + q, {method: "POST", body: file,
                                              headers: {"Content-Type": "application/octet-stream"}});
    const blob = await r.blob();
    const link = $("predict-download");
    link.href = URL.createObjectURL(blob);
    link.download = "predictions." + fmt;
    link.hidden = false;
    $("predict-preview").textContent = (await blob.text()).split("\n").slice(0, 10).join("\n");
  } catch (e) {
    $("predict-preview").textContent = "";
    $("predict-error").textContent = e.message;
  }
}

$("key").value = sessionStorage.getItem("lmadapt-key") || "";
$("key").addEventListener("change", loadModels);
$("ask").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) send(e); });
$("clear").addEventListener("click", () => { history.length = 0; renderMessages(); });
$("predict-go").addEventListener("click", predict);
$("lang").addEventListener("click", () => {
  lang = lang === "en" ? "zh" : "en";
  localStorage.setItem("lmadapt-lang", lang);
  applyLang();
});
applyLang();
loadModels();
