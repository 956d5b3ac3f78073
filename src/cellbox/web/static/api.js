// The page's one way to the server: the public API, with the key from this browser's storage, errors as the API
// said them, and server-sent events read from a POST (EventSource can only GET).

const KEY = "cellbox.key";

export const apiKey = {
  get: () => localStorage.getItem(KEY) || "",
  set: (value) => (value ? localStorage.setItem(KEY, value) : localStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const key = apiKey.get();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not an OpenAI error envelope: the status line says it
  }
  return new ApiError(response.status, message);
}

export async function request(method, path, { json, form } = {}) {
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, `The server did not answer (${error.message}).`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export const get = async (path) => (await request("GET", path)).json();
export const post = async (path, body) => (await request("POST", path, { json: body })).json();
export const remove = async (path) => (await request("DELETE", path)).json();
export const blob = async (path) => (await request("GET", path)).blob();

export async function upload(path, file, fields = {}) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  form.append("file", file, file.name);
  return (await request("POST", path, { form })).json();
}

// Each server-sent event as {name, data}, data parsed from JSON.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
    }
  }
}

export async function stream(path, body) {
  return events(await request("POST", path, { json: body }));
}

// Save a file the API serves (it needs the key, so a plain link would not do) under its own name.
export async function save(path, filename) {
  const url = URL.createObjectURL(await blob(path));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
