// Chat mode: a conversation through POST /v1/responses (streamed) with the code_interpreter tool. Each code call
// appears as the model writes it, then its logs and figures; the answer renders as sanitised Markdown, and each
// file it cites becomes a download (and a preview, for images). Follow-ups continue from the previous response,
// so they run in the same container.

import { get, save, blob, stream, upload } from "./api.js";
import { el, highlight, isImage, markdown, outputs } from "./render.js";

const contentPath = (cid, fid) =>
  `/v1/containers/${encodeURIComponent(cid)}/files/${encodeURIComponent(fid)}/content`;

function codeCall() {
  const code = el("code", { class: "language-python" });
  const state = el("span", { class: "state", text: "writing" });
  const where = el("span", { class: "where" });
  const results = el("div");
  const node = el("section", { class: "call", "aria-label": "Code the model ran" },
    el("div", { class: "call-head" }, el("span", {}, el("span", { text: "python " }), where), state),
    el("pre", { class: "code" }, code), results);
  return {
    node,
    delta(text) { code.textContent += text; },
    code(source) { code.textContent = source; highlight(code); },
    state(name) { state.textContent = name; state.dataset.state = name; },
    done(item) {
      this.code(item.code || "");
      where.textContent = item.container_id ? `in ${item.container_id}` : "";
      node.dataset.container = item.container_id || "";
      results.replaceChildren(outputs(item.outputs));
      this.state(item.status === "completed" ? "done" : item.status);
    },
  };
}

function reasoning() {
  const text = el("pre", { class: "thinking" });
  const node = el("details", { class: "reasoning" }, el("summary", { text: "Thinking" }), text);
  return { node, delta(piece) { text.textContent += piece; }, done() {} };
}

// The files an answer cites: a download each, and a preview under the answer for images.
function citedFiles(citations) {
  const list = el("div", { class: "cited" });
  for (const c of citations) {
    const path = contentPath(c.container_id, c.file_id);
    const link = el("button", { type: "button", class: "file-link", text: `⬇ ${c.filename}`,
      "aria-label": `Download ${c.filename}`, onclick: () => save(path, c.filename).catch(showFailure) });
    const figure = el("figure", {}, link);
    // A figure the code displayed is cited too (as FILE_ID.png, at 0..0): it is already shown above its call.
    const displayed = c.start_index === c.end_index && c.filename.startsWith(c.file_id);
    if (isImage(c.filename) && !displayed) {
      const img = el("img", { class: "preview", alt: `Preview of ${c.filename}` });
      figure.prepend(img);
      blob(path).then((data) => { img.src = URL.createObjectURL(data); }).catch(() => img.remove());
    }
    list.append(figure);
  }
  return list;
}

let showFailure = () => {};

function message() {
  const body = el("div", { class: "markdown" });
  const files = el("div");
  const node = el("div", { class: "message" }, body, files);
  let text = "";
  let citations = [];
  let frame = 0;
  const draw = () => {
    frame = 0;
    body.replaceChildren(markdown(text));
    // A model links the files it made as sandbox:/mnt/data/NAME; the citation says which container file it is.
    for (const link of body.querySelectorAll('a[href^="sandbox:"]')) {
      const name = link.getAttribute("href").split("/").pop();
      const cited = citations.find((c) => c.filename === name || c.filename.endsWith(`/${name}`));
      link.addEventListener("click", (event) => {
        event.preventDefault();
        if (cited) save(contentPath(cited.container_id, cited.file_id), cited.filename).catch(showFailure);
      });
      if (!cited) link.classList.add("missing");
    }
  };
  return {
    node,
    delta(piece) {
      text += piece;
      frame ||= requestAnimationFrame(draw);  // at most one render per frame while the text streams
    },
    done(item) {
      cancelAnimationFrame(frame);
      const parts = (item.content || []).filter((p) => p.type === "output_text");
      text = parts.map((p) => p.text).join("");
      const seen = new Set();
      citations = parts.flatMap((p) => p.annotations || [])
        .filter((a) => a.type === "container_file_citation" && !seen.has(a.file_id) && seen.add(a.file_id));
      draw();
      files.replaceChildren(citations.length ? citedFiles(citations) : "");
    },
  };
}

const VIEWS = { code_interpreter_call: codeCall, message, reasoning };
const STATES = {
  "response.code_interpreter_call.in_progress": "writing",
  "response.code_interpreter_call.interpreting": "running",
  "response.code_interpreter_call.completed": "done",
};

// One answer: its output items in order, updated from the stream's events.
class Turn {
  constructor(list) {
    this.node = el("article", { class: "turn assistant", "aria-label": "Assistant" });
    this.views = new Map();
    this.containerId = null;
    list.append(this.node);
  }

  view(item) {
    if (!this.views.has(item.id) && VIEWS[item.type]) {
      const view = VIEWS[item.type]();
      this.views.set(item.id, view);
      this.node.append(view.node);
    }
    return this.views.get(item.id);
  }

  fail(text) {
    this.node.append(el("p", { class: "failure", role: "alert", text }));
  }

  // Returns the finished response once the stream says so.
  handle(event) {
    const view = event.item_id ? this.views.get(event.item_id) : null;
    switch (event.type) {
      case "response.output_item.added":
        this.view(event.item);
        break;
      case "response.code_interpreter_call_code.delta":
      case "response.output_text.delta":
      case "response.reasoning_text.delta":
        view?.delta(event.delta);
        break;
      case "response.code_interpreter_call_code.done":
        view?.code(event.code);
        break;
      case "response.output_item.done":
        this.view(event.item)?.done(event.item);
        if (event.item.container_id) this.containerId = event.item.container_id;
        break;
      case "response.completed":
        return event.response;
      case "response.incomplete":
        this.fail(`The answer stopped early: ${event.response.incomplete_details?.reason || "incomplete"}.`);
        return event.response;
      case "response.failed":
        this.fail(event.response.error?.message || "The response failed.");
        return null;
      case "error":
        this.fail(event.message || event.error?.message || "The response failed.");
        return null;
      default:
        if (STATES[event.type]) view?.state(STATES[event.type]);
    }
    return undefined;
  }
}

export function startChat({ onError, onContainer }) {
  showFailure = (error) => onError(error.message);
  const $ = (id) => document.getElementById(id);
  const [list, prompt, model, send, attach, chips] =
    ["messages", "prompt", "model", "send", "attach", "attachments"].map($);
  const instructions = $("instructions");
  let previous = null;
  let pending = [];
  let busy = false;

  model.value = localStorage.getItem("cellbox.model") || "";
  let touched = false;
  model.addEventListener("input", () => { touched = true; });
  model.addEventListener("change", () => localStorage.setItem("cellbox.model", model.value.trim()));

  const drawChips = () => chips.replaceChildren(...pending.map((file, i) =>
    el("span", { class: "chip" }, el("span", { text: file.name }),
      el("button", { type: "button", text: "×", "aria-label": `Remove ${file.name}`,
        onclick: () => { pending.splice(i, 1); drawChips(); } }))));

  attach.addEventListener("change", () => {
    pending.push(...attach.files);
    attach.value = "";
    drawChips();
  });

  async function turn() {
    const text = prompt.value.trim();
    if (!text || busy) return;
    if (!model.value.trim()) {
      onError("Pick or type a model first.");
      model.focus();
      return;
    }
    busy = true;
    send.disabled = true;
    const files = pending;
    pending = [];
    drawChips();
    prompt.value = "";
    list.append(el("article", { class: "turn user", "aria-label": "You" }, el("p", { class: "said", text }),
      ...files.map((f) => el("span", { class: "chip", text: f.name }))));
    const answer = new Turn(list);
    try {
      const content = [{ type: "input_text", text }];
      for (const file of files) {
        const stored = await upload("/v1/files", file, { purpose: "user_data" });
        content.push({ type: "input_file", file_id: stored.id, filename: stored.filename });
      }
      const body = {
        model: model.value.trim(), stream: true, store: true, include: ["code_interpreter_call.outputs"],
        input: [{ type: "message", role: "user", content }],
        tools: [{ type: "code_interpreter", container: { type: "auto" } }],
      };
      if (instructions.value.trim()) body.instructions = instructions.value.trim();
      if (previous) body.previous_response_id = previous;
      for await (const { data } of await stream("/v1/responses", body)) {
        const finished = answer.handle(data);
        if (finished) previous = finished.id;
        list.scrollTop = list.scrollHeight;
      }
      if (answer.containerId) onContainer(answer.containerId);
    } catch (error) {
      answer.fail(error.message);
    } finally {
      busy = false;
      send.disabled = false;
      prompt.focus();
    }
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    turn();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      turn();
    }
  });
  $("new-chat").addEventListener("click", () => {
    previous = null;
    list.replaceChildren();
    prompt.focus();
  });

  return {
    async loadModels() {
      try {
        const known = await get("/v1/models");
        $("models").replaceChildren(...known.data.map((m) => el("option", { value: m.id })));
        // Offer the first model only in a field nobody is typing in (or has typed in).
        if (!model.value && !touched && document.activeElement !== model && known.data.length) {
          model.value = known.data[0].id;
        }
      } catch {
        // without a key yet, or no model server: the model is typed, and the first turn says what is wrong
      }
    },
  };
}
