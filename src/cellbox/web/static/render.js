// Turning untrusted text into page content. Everything from a model, from code and from file names is untrusted:
// it enters the page as text nodes (`el`, `text`), or, for a model's Markdown, as HTML that DOMPurify has
// sanitised. Nothing here ever assigns innerHTML from anything else.

import { marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";
import hljs from "./vendor/highlight/core.min.js";
import bash from "./vendor/highlight/bash.min.js";
import json from "./vendor/highlight/json.min.js";
import plaintext from "./vendor/highlight/plaintext.min.js";
import python from "./vendor/highlight/python.min.js";

hljs.registerLanguage("python", python);
hljs.registerLanguage("bash", bash);
hljs.registerLanguage("json", json);
hljs.registerLanguage("plaintext", plaintext);

// DOMPurify's own URI rule, plus `sandbox:` (models link the files they wrote as sandbox:/mnt/data/NAME).
const URIS = /^(?:(?:https?|mailto|sandbox):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;
const POLICY = {
  ALLOWED_URI_REGEXP: URIS,
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "dialog"],
  FORBID_ATTR: ["style"],
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && !(node.getAttribute("href") || "").startsWith("sandbox:")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name.startsWith("aria-") || name.startsWith("data-") || name === "role") node.setAttribute(name, value);
    else node[name] = value;
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function highlight(code) {
  const language = /language-(\S+)/.exec(code.className);
  if (language && !hljs.getLanguage(language[1])) code.className = "language-plaintext";
  delete code.dataset.highlighted;
  hljs.highlightElement(code);
}

// A code block whose text is `source`, highlighted as Python.
export function codeBlock(source) {
  const code = el("code", { class: "language-python", text: source });
  highlight(code);
  return el("pre", { class: "code" }, code);
}

// A model's Markdown as sanitised DOM, code blocks highlighted.
export function markdown(source) {
  const fragment = DOMPurify.sanitize(marked.parse(source, { gfm: true }), POLICY);
  for (const code of fragment.querySelectorAll("pre code")) highlight(code);
  return fragment;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export const isImage = (name) => /\.(png|jpe?g|gif|webp|svg)$/i.test(name);

// A run's outputs (logs and figures, in the Responses API's shapes). Figures arrive as data: URLs; anything else
// is shown as text, never loaded.
export function outputs(items) {
  const box = el("div", { class: "outputs" });
  for (const item of items || []) {
    if (item.type === "logs") box.append(el("pre", { class: "logs", text: item.logs }));
    else if (item.type === "image" && /^data:image\/(png|jpeg|gif|webp);base64,/.test(item.url || "")) {
      box.append(el("img", { class: "figure", src: item.url, alt: "A figure the code drew" }));
    } else box.append(el("pre", { class: "logs", text: JSON.stringify(item) }));
  }
  return box;
}
