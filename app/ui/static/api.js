// The REST API with the signed-in key. The key lives in sessionStorage: it is gone when the tab closes.
const KEY = "modelpress.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? `${body.error}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}` : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

export const apiKey = () => sessionStorage.getItem(KEY);
export const signIn = (key) => sessionStorage.setItem(KEY, key);
export const signOut = () => sessionStorage.removeItem(KEY);

export async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${apiKey()}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* a body that is not JSON still gets its status shown */ }
    throw new ApiError(response.status, body);
  }
  return response.status === 204 ? null : response.json();
}

export async function allPages(path) {
  const items = [];
  for (let offset = 0; ; offset += 200) {
    const separator = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${separator}limit=200&offset=${offset}`);
    items.push(...page.items);
    if (items.length >= page.total || page.items.length === 0) return items;
  }
}

export async function download(artifact) {
  // A plain link cannot carry the Authorization header, so the file is fetched and handed to the browser.
  const response = await fetch(artifact.download_url, { headers: { Authorization: `Bearer ${apiKey()}` } });
  if (!response.ok) throw new ApiError(response.status, null);
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: artifact.name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
