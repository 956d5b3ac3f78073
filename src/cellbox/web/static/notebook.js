// Notebook mode, no model needed: cells run in one container through Cellbox's execute extension (outputs
// streamed as they come), beside the container's status, expiry and files.

import { get, post, remove, save, stream, upload } from "./api.js";
import { bytes, el, outputs } from "./render.js";

const STORED = "cellbox.container";
const SOURCES = "cellbox.cells";
const path = (id, rest = "") => `/v1/containers/${encodeURIComponent(id)}${rest}`;

export function startNotebook({ onError }) {
  const $ = (id) => document.getElementById(id);
  const [cells, info, files, uploader] = ["cells", "container-info", "files", "upload"].map($);
  let container = null;
  let runs = 0;

  function describe() {
    if (!container) {
      info.replaceChildren(el("dt", { text: "None yet" }), el("dd", { text: "the first run makes one" }));
      files.replaceChildren();
      return;
    }
    const expires = (container.last_active_at + container.expires_after.minutes * 60) * 1000;
    const minutes = Math.max(0, Math.round((expires - Date.now()) / 60000));
    const rows = [["Id", container.id], ["Name", container.name], ["Status", container.status],
      ["Memory", container.memory_limit],
      ["Expires", container.status === "running"
        ? `after ${container.expires_after.minutes} min idle: at ${new Date(expires).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}, in ${minutes} min`
        : "—"]];
    info.replaceChildren(...rows.flatMap(([term, value]) => [el("dt", { text: term }),
      el("dd", { text: String(value), "data-field": term.toLowerCase() })]));
  }

  async function refresh() {
    if (!container) return describe();
    try {
      container = await get(path(container.id));
      const listed = await get(path(container.id, "/files?limit=100&order=asc"));
      files.replaceChildren(...listed.data.map((f) => {
        const name = f.path.replace(/^\/mnt\/data\//, "");
        return el("li", {}, el("span", { class: "name", text: name }), el("span", { class: "muted", text: bytes(f.bytes) }),
          el("button", { type: "button", text: "Download", "aria-label": `Download ${name}`,
            onclick: () => save(path(container.id, `/files/${encodeURIComponent(f.id)}/content`), name.split("/").pop())
              .catch((error) => onError(error.message)) }));
      }));
    } catch (error) {
      if (error.status === 404) forget(`Container ${container.id} is gone (expired or deleted).`);
      else onError(error.message);
    }
    return describe();
  }

  function forget(why) {
    container = null;
    localStorage.removeItem(STORED);
    if (why) onError(why);
    describe();
  }

  async function attach(id) {
    container = { id };
    localStorage.setItem(STORED, id);
    await refresh();
  }

  async function ensure() {
    if (!container) {
      const made = await post("/v1/containers", { name: "playground" });
      await attach(made.id);
    }
    return container.id;
  }

  const remember = () => localStorage.setItem(SOURCES,
    JSON.stringify([...cells.querySelectorAll("textarea.source")].map((t) => t.value)));

  function addCell(after = null, text = "") {
    const index = cells.children.length + 1;
    const source = el("textarea", { class: "source", rows: 3, spellcheck: false, "aria-label": `Code cell ${index}`,
      placeholder: "Python; Shift+Enter runs", value: text, oninput: remember });
    const state = el("span", { class: "state", text: "" });
    const results = el("div", { class: "cell-results" });
    const run = el("button", { type: "button", text: "Run", "aria-label": `Run cell ${index}` });
    const cell = el("section", { class: "cell", "aria-label": `Cell ${index}` },
      el("div", { class: "cell-head" }, run, state), source, results);
    const execute = async () => {
      if (run.disabled || !source.value.trim()) return;
      run.disabled = true;
      state.textContent = "running";
      state.dataset.state = "running";
      results.replaceChildren();
      try {
        const id = await ensure();
        for await (const { name, data } of await stream(path(id, "/execute"), { code: source.value, stream: true })) {
          if (name === "output") results.append(outputs([data]));
          else if (name === "done") {
            runs += 1;
            state.textContent = `[${runs}] ${data.status}${data.restarted ? " (session restarted)" : ""}`;
            state.dataset.state = data.status;
            if (data.message) results.append(el("p", { class: "failure", text: data.message }));
          } else if (name === "error") {
            state.textContent = "error";
            results.append(el("p", { class: "failure", text: data.error?.message || data.message || "failed" }));
          }
        }
      } catch (error) {
        state.textContent = "error";
        state.dataset.state = "error";
        if (error.status === 404 && container) forget(`Container ${container.id} is gone (expired or deleted).`);
        results.append(el("p", { class: "failure", role: "alert", text: error.message }));
      } finally {
        run.disabled = false;
        refresh();
      }
    };
    run.addEventListener("click", execute);
    source.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.shiftKey || event.ctrlKey)) {
        event.preventDefault();
        execute();
        if (event.shiftKey) (cell.nextElementSibling?.querySelector("textarea") || addCell(cell)).focus();
      }
    });
    if (after) after.after(cell);
    else cells.append(cell);
    return source;
  }

  uploader.addEventListener("change", async () => {
    const chosen = [...uploader.files];
    uploader.value = "";
    try {
      const id = await ensure();
      for (const file of chosen) await upload(path(id, "/files"), file);
    } catch (error) {
      onError(error.message);
    }
    refresh();
  });
  $("add-cell").addEventListener("click", () => addCell().focus());
  $("new-container").addEventListener("click", async () => {
    try {
      container = null;
      await ensure();
    } catch (error) {
      onError(error.message);
    }
  });
  $("delete-container").addEventListener("click", async () => {
    if (!container) return;
    try {
      await remove(path(container.id));
    } catch (error) {
      if (error.status !== 404) return onError(error.message);
    }
    return forget();
  });
  setInterval(describe, 30_000);

  let kept = [];
  try {
    kept = JSON.parse(localStorage.getItem(SOURCES) || "[]");
  } catch {
    // unreadable: start empty
  }
  if (kept.length) for (const text of kept) addCell(null, String(text));
  else addCell();
  const stored = localStorage.getItem(STORED);
  if (stored) attach(stored);
  else describe();
  return { attach };
}
