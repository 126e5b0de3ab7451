// Hash router: #/jobs, #/jobs/ID, #/models, #/models/ID, #/submit. Live views refresh while a job is active.
import { api, apiKey, signIn, signOut } from "./api.js";
import { el } from "./dom.js";
import { jobsView, jobView } from "./view-jobs.js";
import { modelsView, modelView } from "./view-models.js";
import { submitView } from "./view-submit.js";

const REFRESH_MS = 1000;
let timer = null;
let rendering = 0;

const routes = [
  [/^#\/jobs\/([\w-]+)$/, (id) => jobView(id)],
  [/^#\/models\/([\w-]+)$/, (id) => modelView(id)],
  [/^#\/models$/, () => modelsView()],
  [/^#\/submit$/, () => submitView()],
  [/^#\/jobs$/, () => jobsView()],
];

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function signInView() {
  const input = el("input", { id: "api-key", type: "password", autocomplete: "off", placeholder: "mp_..." });
  const form = el("form", { class: "card", id: "sign-in" },
    el("label", { for: "api-key" }, "API key ", el("small", {}, "(kept in this tab only)")), input,
    el("p", {}, el("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    signIn(input.value.trim());
    try {
      await api("/v1/jobs?limit=1");
      location.hash = "#/jobs";
      render();
    } catch (error) {
      signOut();
      showError(error.status === 401 ? "That key was not accepted." : error);
    }
  });
  return { node: el("section", {}, el("h1", {}, "Sign in"), form), live: false };
}

async function render() {
  clearTimeout(timer);
  const ticket = ++rendering;
  document.getElementById("nav").hidden = !apiKey();
  let view;
  try {
    if (!apiKey()) view = signInView();
    else {
      const hash = location.hash || "#/jobs";
      const [pattern, make] = routes.find(([re]) => re.test(hash)) || routes[routes.length - 1];
      view = await make(...(hash.match(pattern) || []).slice(1));
    }
    showError(null);
  } catch (error) {
    if (error.status === 401) { signOut(); return render(); }
    showError(error);
    view = { node: null, live: true };
  }
  if (ticket !== rendering) return; // a newer navigation won
  if (view.node) document.getElementById("view").replaceChildren(view.node);
  if (view.live) timer = setTimeout(render, REFRESH_MS);
}

window.addEventListener("hashchange", render);
window.addEventListener("unhandledrejection", (event) => showError(event.reason));
document.getElementById("sign-out").addEventListener("click", () => { signOut(); location.hash = ""; render(); });
render();
