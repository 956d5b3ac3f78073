// The playground's frame: tabs, theme, the API key, one place that shows the API's errors, and the two modes.

import { apiKey } from "./api.js";
import { startChat } from "./chat.js";
import { startNotebook } from "./notebook.js";

const $ = (id) => document.getElementById(id);

function showError(text) {
  $("alert-text").textContent = text;
  $("alert").hidden = false;
}
$("alert-close").addEventListener("click", () => { $("alert").hidden = true; });

// Light or dark: the visitor's choice, else the system's.
function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $("code-light").disabled = theme === "dark";
  $("code-dark").disabled = theme !== "dark";
}
applyTheme(localStorage.getItem("cellbox.theme")
  || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
$("theme-button").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("cellbox.theme", next);
  applyTheme(next);
});

function select(name) {
  for (const tab of ["chat", "notebook"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(tab).hidden = tab !== name;
  }
}
$("tab-chat").addEventListener("click", () => select("chat"));
$("tab-notebook").addEventListener("click", () => select("notebook"));

const notebook = startNotebook({ onError: showError });
const chat = startChat({
  onError: showError,
  onContainer: (id) => {
    const open = $("open-in-notebook");
    open.hidden = false;
    open.onclick = () => { notebook.attach(id); select("notebook"); };
  },
});

async function describeServer() {
  try {
    const health = await (await fetch("/health")).json();
    $("server").textContent = `Cellbox ${health.version} · ${health.auth.startsWith("open") ? "open local mode" : "API keys"}`;
    $("key-button").hidden = health.auth.startsWith("open") && !apiKey.get();
  } catch {
    $("server").textContent = "server unreachable";
  }
}

const dialog = $("key-dialog");
$("key-button").addEventListener("click", () => {
  $("key-input").value = apiKey.get();
  dialog.showModal();
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (event.submitter?.value === "save") {
    apiKey.set($("key-input").value.trim());
    chat.loadModels();
  }
  dialog.close();
});

describeServer();
chat.loadModels();
