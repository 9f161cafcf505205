// Keyring admin console: plain DOM, no build step. Data is rendered with textContent only.

import { PALETTE, bars, columns } from "./charts.js";

const $ = (selector) => document.querySelector(selector);
const REFRESH_MS = 4000;
const PAGE_SIZE = 250;

const state = { view: "pools", pools: [], keys: [], fetchedAt: 0, pageTokens: [""], page: 0, nextToken: null, timer: null, quotasAsked: 0 };

// ---------------------------------------------------------------- HTTP

function csrfToken() {
  const found = document.cookie.split("; ").find((item) => item.startsWith("keyring_csrf="));
  return found ? decodeURIComponent(found.slice("keyring_csrf=".length)) : "";
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.headers.get("Content-Type")?.startsWith("application/json") ? await response.json() : null;
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/login") showLogin();
    throw new ApiError(response.status, data?.error?.message || response.statusText);
  }
  return data;
}

// ---------------------------------------------------------------- helpers

function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) element.append(child instanceof Node ? child : String(child ?? ""));
  return element;
}

function say(text, isError = false) {
  const message = $("#message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

async function attempt(action) {
  try { await action(); } catch (error) { say(error.message, true); }
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

function formatSeconds(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  const m = Math.floor(total / 60), s = total % 60;
  return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : `${m}:${String(s).padStart(2, "0")}`;
}

// "in 42 s", "in 7 min", "in 5 h 12 min": how far off a time is.
function formatIn(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  if (total < 60) return `in ${total} s`;
  const minutes = Math.ceil(total / 60);
  if (minutes < 60) return `in ${minutes} min`;
  return `in ${Math.floor(minutes / 60)} h${minutes % 60 ? ` ${minutes % 60} min` : ""}`;
}

// ---------------------------------------------------------------- session

function showLogin() {
  stopRefresh();
  hideOnce();
  $("#nav").hidden = true;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("#login").hidden = false;
  $("#login-token").focus();
}

// The role decides what is shown (body[data-role]); the server checks every call itself.
async function showConsole(session) {
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#who").textContent = session.name;
  document.body.dataset.role = session.role || "operator";
  $("#role").textContent = session.role === "viewer" ? "(read only)" : "";
  await loadPools();
  await show(state.view);
}

async function login(event) {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    const answer = await api("POST", "/api/login", { token: $("#login-token").value });
    $("#login-token").value = "";
    await showConsole(answer);
  } catch (error) {
    $("#login-error").textContent = error.status === 401 ? "Wrong token." : error.message;
  }
}

async function logout() {
  await attempt(async () => {
    await api("POST", "/api/logout");
    say("Logged out.");
    showLogin();
  });
}

// ---------------------------------------------------------------- views

async function show(view) {
  state.view = view;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const button of document.querySelectorAll("nav [data-view]")) {
    button.toggleAttribute("aria-current", button.dataset.view === view);
    if (button.dataset.view === view) button.setAttribute("aria-current", "page");
  }
  stopRefresh();
  const loaders = { pools: loadOverview, overview: loadPoolOverview, keys: loadKeys, tokens: loadTokens, quotas: loadQuotas, audit: loadAudit };
  await attempt(loaders[view]);
  if (view === "pools" || view === "overview" || view === "keys" || view === "quotas") {
    state.timer = setInterval(() => attempt(loaders[view]), REFRESH_MS);
  }
}

function stopRefresh() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

async function loadPools() {
  const { pools } = await api("GET", "/api/pools");
  state.pools = pools.map((pool) => pool.name);
  for (const [selector, blank] of [["#filter-pool", "all pools"], ["#quota-filter-pool", "all pools"], ["#add-pool", null], ["#token-pool", null], ["#overview-pool", null]]) {
    const select = $(selector);
    const keep = select.value;
    select.replaceChildren(...(blank ? [h("option", { value: "" }, blank)] : []), ...state.pools.map((name) => h("option", { value: name }, name)));
    if ([...select.options].some((option) => option.value === keep)) select.value = keep;
  }
}

async function loadOverview() {
  const { pools, usage_available: usage } = await api("GET", "/api/overview");
  $("#pools-body").replaceChildren(...pools.map((pool) => h("tr", { "data-testid": "pool-row", "data-pool": pool.name },
    h("td", {}, pool.name), h("td", {}, pool.strategy), h("td", {}, pool.keys.total), h("td", {}, pool.keys.active),
    h("td", {}, pool.keys.cooling), h("td", {}, pool.keys.suspended), h("td", {}, pool.keys.invalid),
    h("td", {}, pool.keys.disabled), h("td", {}, pool.tokens),
    h("td", { "data-testid": "pool-requests" }, usage ? pool.requests_last_hour : "n/a"),
    h("td", { "data-testid": "pool-errors" }, usage ? pool.errors_last_hour : "n/a"))));
}

async function createPool(event) {
  event.preventDefault();
  await attempt(async () => {
    const pool = await api("POST", "/api/pools", { name: $("#pool-name").value.trim() });
    $("#pool-name").value = "";
    say(`Pool ${pool.name} created.`);
    await loadPools();
    await loadOverview();
  });
}

// ---------------------------------------------------------------- overview (one pool, charts)

// A 402 or a spend limit cools a whole billing account: its row says why and until when.
const BILLING_CAUSES = { billing_depleted: "prepaid credits spent (402)", spend_limit: "spend limit (429)" };

function renderBilling(accounts) {
  $("#billing-body").replaceChildren(...accounts.map((row) => {
    const cooling = row.state === "cooling";
    const projects = row.account || !cooling ? row.projects.join(", ") : `${row.projects.join(", ")} (cooling: ${row.cooling_projects.join(", ")})`;
    return h("tr", { "data-testid": "billing-row", "data-account": row.account, "data-state": row.state,
      "data-cause": row.cause, "data-until": row.until ?? "", "data-tier": row.tier, "data-projects": row.projects.join(" "),
      class: cooling ? "cooling" : null },
    h("td", {}, row.account || "(not given)"), h("td", {}, row.tier ? `Tier ${row.tier}` : "unknown"),
    h("td", {}, projects), h("td", {}, row.keys),
    h("td", {}, cooling ? "cooling" : "serving"), h("td", {}, BILLING_CAUSES[row.cause] ?? row.cause),
    h("td", {}, row.until ? new Date(row.until).toLocaleString() : ""));
  }));
}

const STATE_STYLE = { active: [PALETTE.green, "solid"], suspended: [PALETTE.orange, "hatch"],
  invalid: [PALETTE.vermillion, "cross"], disabled: [PALETTE.grey, "dots"] };
const CAUSE_STYLES = [[PALETTE.sky, "solid"], [PALETTE.orange, "hatch"], [PALETTE.purple, "dots"],
  [PALETTE.vermillion, "cross"], [PALETTE.blue, "vertical"], [PALETTE.yellow, "horizontal"]];
// Failed calls by the shared classifier's kind: quota answers warm, upstream trouble red, the key's own faults dark.
const ERROR_STYLE = { rate_limited: [PALETTE.orange, "hatch"], daily_quota: [PALETTE.yellow, "cross"],
  model_not_on_tier: [PALETTE.purple, "dots"], upstream_trouble: [PALETTE.vermillion, "cross"],
  model_overloaded: [PALETTE.vermillion, "vertical"], transport_failure: [PALETTE.grey, "horizontal"],
  request_at_fault: [PALETTE.sky, "dots"], key_invalid: [PALETTE.blue, "cross"], key_forbidden: [PALETTE.blue, "hatch"],
  key_misconfigured: [PALETTE.blue, "dots"], billing_depleted: [PALETTE.purple, "hatch"],
  not_for_project: [PALETTE.green, "hatch"], other: [PALETTE.grey, "solid"] };
const errorStyle = (kind) => ERROR_STYLE[kind] ?? [PALETTE.grey, "cross"];
const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

async function loadPoolOverview() {
  if (!$("#overview-pool").value) await loadPools();  // a pool created elsewhere since the login
  const pool = $("#overview-pool").value;
  $("#overview-none").hidden = Boolean(pool);
  $("#overview-charts").hidden = !pool;
  if (!pool) return;
  const asked = (state.overviewAsked = (state.overviewAsked || 0) + 1);
  const data = await api("GET", `/api/pools/${encodeURIComponent(pool)}/overview`);
  if (asked !== state.overviewAsked) return;  // a newer pool's answer wins over a slower refresh
  renderOverview(data);
}

function renderOverview(data) {
  $("#overview-charts").dataset.pool = data.pool;
  $("#overview-updated").textContent = `updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
  const totals = $("#traffic-totals");
  totals.dataset.requests = data.requests;
  totals.dataset.errors = data.errors;
  totals.textContent = `— ${data.requests} requests, ${data.errors} errors`;
  $("#traffic-chart").replaceChildren(...columns(data.series, [
    { key: "requests", label: "requests", colour: PALETTE.blue, pattern: "solid" },
    { key: "errors", label: "errors", colour: PALETTE.vermillion, pattern: "hatch",
      parts: (point) => point.errors_by_kind, style: errorStyle },
  ], { timeLabel: (point) => clock(point.start), label: "Requests and errors per five minutes, last hour" }));
  const states = Object.entries(data.keys_by_state).map(([name, count]) => ({
    label: name, value: count, colour: STATE_STYLE[name]?.[0] ?? PALETTE.grey, pattern: STATE_STYLE[name]?.[1] ?? "solid",
    testid: "state-bar", data: { state: name },
  }));
  states.push({ label: "cooling now (any model)", value: data.keys_cooling, colour: PALETTE.sky, pattern: "vertical",
    testid: "state-bar", data: { state: "cooling" } });
  const total = Object.values(data.keys_by_state).reduce((sum, count) => sum + count, 0);
  $("#states-chart").replaceChildren(...bars(total ? states : [], { empty: "No keys in this pool yet.", label: "Keys by state" }));
  $("#causes-chart").replaceChildren(...bars(Object.entries(data.cooldowns_by_cause).map(([cause, count], index) => ({
    label: cause, value: count, colour: CAUSE_STYLES[index % CAUSE_STYLES.length][0],
    pattern: CAUSE_STYLES[index % CAUSE_STYLES.length][1], testid: "cause-bar", data: { cause },
  })), { empty: "No key is cooling down.", label: "Cooldowns in force by cause" }));
  $("#quotas-chart").replaceChildren(...bars(data.quotas.map((quota) => {
    const share = quota.replica_share || quota.limit;
    const [colour, pattern] = quota.headroom_pct < 10 ? [PALETTE.vermillion, "cross"]
      : quota.headroom_pct < 30 ? [PALETTE.orange, "hatch"] : [PALETTE.blue, "solid"];
    return {
      label: `${quota.project} · ${quota.model} · ${QUOTA_METRICS[quota.metric] || quota.metric}`,
      value: quota.used, max: Math.max(share, 1), text: `${quota.used} of ${share} used, ${quota.headroom_pct}% left`,
      colour, pattern, testid: "quota-bar",
      data: { project: quota.project, model: quota.model, metric: quota.metric, share, headroom: quota.headroom_pct },
    };
  }), { empty: "No quota limit known yet (learnt from Gemini's 429s, or set in the pool policy).", label: "Quota headroom" }));
  renderBilling(data.billing_accounts);
  $("#tokens-chart").replaceChildren(...bars(data.busiest_tokens.map((token) => ({
    label: token.name || token.token_id, value: token.requests, text: `${token.requests} requests, ${token.errors} errors`,
    colour: PALETTE.blue, pattern: "solid", testid: "token-bar", data: { "token-id": token.token_id, errors: token.errors },
  })), { empty: "No client token called in the last hour.", label: "Busiest client tokens" }));
}

// ---------------------------------------------------------------- keys

function keyQuery() {
  const params = new URLSearchParams({ page_size: PAGE_SIZE });
  for (const [name, selector] of [["pool", "#filter-pool"], ["state", "#filter-state"], ["cooling_model", "#filter-model"], ["q", "#filter-q"]]) {
    const value = $(selector).value.trim();
    if (value) params.set(name, value);
  }
  const token = state.pageTokens[state.page];
  if (token) params.set("page_token", token);
  return params;
}

async function loadKeys() {
  const answer = await api("GET", `/api/keys?${keyQuery()}`);
  state.keys = answer.keys;
  state.nextToken = answer.next_page_token;
  state.fetchedAt = performance.now();
  const selected = new Set([...document.querySelectorAll(".key-select:checked")].map((box) => box.value));
  $("#keys-body").replaceChildren(...answer.keys.map((key) => keyRow(key, selected.has(key.key_id))));
  const first = state.page * PAGE_SIZE;
  $("#keys-count").textContent = answer.total ? `${first + 1}-${first + answer.keys.length} of ${answer.total}` : "no keys";
  $("#page-prev").disabled = state.page === 0;
  $("#page-next").disabled = !state.nextToken;
  tick();
}

function keyRow(key, checked) {
  const error = key.last_error;
  return h("tr", { "data-testid": "key-row", "data-key-id": key.key_id },
    h("td", {}, h("input", { type: "checkbox", class: "key-select", value: key.key_id, checked, "aria-label": `select ${key.mask}`, "data-testid": "key-select" })),
    h("td", { class: "mono" }, h("div", { "data-testid": "key-mask" }, key.mask), h("small", {}, key.key_id)),
    h("td", {}, h("span", { class: `kind kind-${key.kind}`, "data-testid": "key-kind", title: key.kind === "standard" ? "AIza key: Google rejects standard keys from September 2026" : "" }, key.kind)),
    h("td", {}, key.pool),
    h("td", {}, key.project, key.billing_account ? h("small", { "data-testid": "key-billing-account", title: "billing account" }, key.billing_account) : "",
      key.project_number ? h("small", { "data-testid": "key-project-number", title: "project number Google named for this key" }, `#${key.project_number}`) : "",
      key.project_warning ? h("small", { class: "warning", "data-testid": "key-project-warning" }, key.project_warning) : ""),
    h("td", {}, key.tier),
    h("td", {}, h("span", { class: `state state-${key.state}`, "data-testid": "key-state" }, key.state)),
    h("td", {}, key.cooldowns.map((cooldown) => h("span", {
      class: "cooldown", "data-testid": "key-cooldown", "data-seconds-left": cooldown.seconds_left,
    }, `${cooldown.model || "all"}${cooldown.asked_model ? ` (asked as ${cooldown.asked_model})` : ""} (${cooldown.reason}${cooldown.scope === "account" ? ", billing account" : ""}): `, h("span", { class: "left", "data-testid": "cooldown-left" }, formatSeconds(cooldown.seconds_left))))),
    h("td", {}, key.consecutive_failures),
    h("td", { title: error ? error.message : "" }, error ? `${error.http_status} ${error.reason || error.status}` : "",
      // A key whose restrictions refuse the pool's calls (issue 21): what to fix, shown, not only in the tooltip.
      error && /^API_KEY_.*_BLOCKED$/.test(error.reason) ? h("small", { "data-testid": "key-config-fault" }, error.message) : ""),
    h("td", { "data-testid": "key-last-used" }, key.last_used ? when(key.last_used) : "never"),
    h("td", {}, key.state === "disabled"
      ? h("button", { type: "button", class: "needs-operator", "data-testid": "key-enable", onclick: () => keyAction(key.key_id, "enable") }, "Enable")
      : h("button", { type: "button", class: "needs-operator", "data-testid": "key-disable", onclick: () => keyAction(key.key_id, "disable") }, "Disable")));
}

// Cooldowns count down client-side between refreshes (from the server's seconds_left, not the local clock);
// a quota's next reset is an instant (resets_at), counted down against the local clock.
function tick() {
  const elapsed = (performance.now() - state.fetchedAt) / 1000;
  for (const cooldown of document.querySelectorAll("[data-testid=key-cooldown]")) {
    const left = Number(cooldown.dataset.secondsLeft) - elapsed;
    cooldown.querySelector(".left").textContent = left > 0 ? formatSeconds(left) : "over";
  }
  for (const reset of document.querySelectorAll("[data-testid=quota-reset-in]")) {
    const left = (Date.parse(reset.dataset.resetsAt) - Date.now()) / 1000;
    reset.textContent = Number.isNaN(left) ? "" : left > 0 ? formatIn(left) : "now";
  }
}

async function keyAction(keyId, action) {
  await attempt(async () => {
    const key = await api("POST", `/api/keys/${encodeURIComponent(keyId)}/${action}`);
    say(`${key.mask}: ${key.state}`);
    await loadKeys();
  });
}

async function addKeys(event) {
  event.preventDefault();
  await attempt(async () => {
    const pool = $("#add-pool").value;
    if (!pool) throw new Error("Create a pool first.");
    const answer = await api("POST", `/api/pools/${encodeURIComponent(pool)}/keys`, { text: $("#add-text").value });
    $("#add-text").value = "";
    const problems = answer.results.filter((item) => item.status !== "added")
      .map((item) => `line ${item.index + 1} (${item.mask}): ${item.status}${item.message ? ` - ${item.message}` : ""}`);
    $("#add-result").replaceChildren(
      h("strong", {}, `${answer.added} added, ${answer.duplicate} duplicate, ${answer.malformed} malformed`),
      ...problems.slice(0, 50).map((line) => h("div", {}, line)));
    await loadKeys();
  });
}

async function bulkApply() {
  const keyIds = [...document.querySelectorAll(".key-select:checked")].map((box) => box.value);
  const action = $("#bulk-action").value;
  if (!keyIds.length) return say("Select keys first.", true);
  if (action === "delete" && !confirm(`Delete ${keyIds.length} keys?`)) return;
  await attempt(async () => {
    const answer = await api("POST", "/api/keys/bulk", { action, key_ids: keyIds });
    say(`${action}: ${answer.succeeded} done, ${answer.failed} failed.`);
    $("#select-all").checked = false;
    if (action === "delete") for (const box of document.querySelectorAll(".key-select")) box.checked = false;
    await loadKeys();
  });
}

async function verifyUnhealthy() {
  await attempt(async () => {
    const pool = $("#filter-pool").value;
    const answer = await api("POST", "/api/keys/verify-unhealthy", pool ? { pool } : {});
    say(`Verified ${answer.checked} keys: ${answer.ok} answered.`);
    await loadKeys();
  });
}

function refilter() {
  state.page = 0;
  state.pageTokens = [""];
  attempt(loadKeys);
}

// ---------------------------------------------------------------- tokens

async function loadTokens() {
  const { tokens } = await api("GET", "/api/tokens");
  $("#tokens-body").replaceChildren(...tokens.map((token) => h("tr", { "data-testid": "token-row", "data-token-id": token.token_id },
    h("td", {}, token.name), h("td", { class: "mono" }, token.token_id), h("td", {}, token.pool),
    h("td", { class: "mono" }, `${token.prefix}...`), h("td", {}, when(token.created_at)),
    h("td", {}, token.expires_at ? when(token.expires_at) : "never"),
    h("td", { "data-testid": "token-last-used" }, token.last_used ? when(token.last_used) : "never"),
    h("td", { "data-testid": "token-status" }, token.revoked ? "revoked" : "active"),
    h("td", { "data-testid": "token-budgets" }, budgetText(token)),
    h("td", {}, token.revoked ? "" : [
      h("button", { type: "button", class: "needs-operator", "data-testid": "token-budget-edit", onclick: () => editBudgets(token) }, "Budget"), " ",
      h("button", { type: "button", class: "needs-operator", "data-testid": "token-rotate", onclick: () => tokenAction(token, "rotate") }, "Rotate"), " ",
      h("button", { type: "button", class: "needs-operator", "data-testid": "token-revoke", onclick: () => tokenAction(token, "revoke") }, "Revoke"),
    ]))));
}

function showOnce(token) {
  $("#token-value").textContent = token;
  $("#token-once").hidden = false;
}

function hideOnce() {
  $("#token-value").textContent = "";
  $("#token-once").hidden = true;
}

const BUDGET_FIELDS = [["requests_per_minute", "req/min", "#token-rpm"], ["requests_per_day", "req/day", "#token-rpd"],
  ["tokens_per_minute", "tokens/min", "#token-tpm"], ["tokens_per_day", "tokens/day", "#token-tpd"]];

function budgetText(token) {
  const parts = (token.budgets || []).map((budget) => `${budget.model || "all models"}: ` +
    BUDGET_FIELDS.filter(([name]) => budget[name]).map(([name, unit]) => `${budget[name]} ${unit}`).join(", "));
  if (token.requests_per_minute) parts.unshift(`rate limit: ${token.requests_per_minute} req/min`);
  return parts.length ? parts.join("; ") : "none";
}

function formBudgets() {
  const budget = { model: "" };
  for (const [name, , selector] of BUDGET_FIELDS) budget[name] = Number($(selector).value || 0);
  return BUDGET_FIELDS.some(([name]) => budget[name]) ? [budget] : [];
}

async function editBudgets(token) {
  const text = prompt("Budgets as JSON: [{\"model\": \"\" (all models) or a model, \"requests_per_minute\", \"requests_per_day\", " +
    "\"tokens_per_minute\", \"tokens_per_day\"}]; [] removes them", JSON.stringify(token.budgets || []));
  if (text === null) return;
  await attempt(async () => {
    let budgets;
    try { budgets = JSON.parse(text); } catch { throw new Error("The budgets are not valid JSON."); }
    await api("PATCH", `/api/tokens/${encodeURIComponent(token.token_id)}`, { budgets });
    await loadTokens();
  });
}

async function createToken(event) {
  event.preventDefault();
  await attempt(async () => {
    const answer = await api("POST", "/api/tokens", { pool: $("#token-pool").value, name: $("#token-name").value.trim(), budgets: formBudgets() });
    $("#token-name").value = "";
    for (const [, , selector] of BUDGET_FIELDS) $(selector).value = "";
    showOnce(answer.token);
    await loadTokens();
  });
}

async function tokenAction(token, action) {
  if (action === "revoke" && !confirm(`Revoke ${token.name || token.token_id}?`)) return;
  await attempt(async () => {
    const answer = await api("POST", `/api/tokens/${encodeURIComponent(token.token_id)}/${action}`);
    if (action === "rotate") showOnce(answer.token);
    await loadTokens();
  });
}

// ---------------------------------------------------------------- quotas

const QUOTA_METRICS = { requests_per_minute: "requests/min", requests_per_day: "requests/day",
  input_tokens_per_minute: "input tokens/min", input_tokens_per_day: "input tokens/day" };

function quotaQuery() {
  const params = new URLSearchParams();
  for (const [name, selector] of [["pool", "#quota-filter-pool"], ["project", "#quota-filter-project"]]) {
    const value = $(selector).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

async function loadQuotas() {
  const query = quotaQuery();
  const asked = ++state.quotasAsked;
  const { quotas } = await api("GET", `/api/quotas?${query}`);
  if (asked !== state.quotasAsked) return;  // a newer filter's answer wins over a slower refresh
  $("#quotas-body").replaceChildren(...quotas.map(quotaRow));
  $("#quotas-table").hidden = !quotas.length;
  $("#quotas-empty").hidden = Boolean(quotas.length);
  $("#quotas-empty").textContent = (query.toString() ? "No quota limit is known yet for this pool or project. " : "No quota limit is known yet. ") +
    "Keyring learns a project's limits from the 429s Gemini answers (the quotaValue of their QuotaFailure violations), " +
    "or an operator sets them per pool (the pool policy's quota_requests_per_minute, quota_requests_per_day and " +
    "quota_input_tokens_per_minute fields); a limit is listed once a key of the project has been leased for the model.";
  tick();
}

function quotaRow(quota) {
  const source = quota.source === "learnt"
    ? `learnt from a 429${quota.learnt_at ? `, ${when(quota.learnt_at)}` : ""}`
    : quota.source === "operator" ? "set by the pool policy" : quota.source;
  const shared = quota.replica_share !== quota.limit;
  return h("tr", { "data-testid": "quota-row", "data-pool": quota.pool, "data-project": quota.project, "data-model": quota.model, "data-metric": quota.metric },
    h("td", {}, quota.pool), h("td", { "data-testid": "quota-project" }, quota.project),
    h("td", { "data-testid": "quota-model" }, quota.model), h("td", {}, QUOTA_METRICS[quota.metric] || quota.metric),
    h("td", { "data-testid": "quota-limit" }, quota.limit),
    h("td", { "data-testid": "quota-source", "data-source": quota.source }, source),
    h("td", { "data-testid": "quota-used" }, quota.used),
    h("td", { title: shared ? `of this replica's share, ${quota.replica_share} (the limit split across the live keyring replicas)` : "" },
      h("span", { "data-testid": "quota-remaining" }, quota.remaining), shared ? h("small", {}, ` of ${quota.replica_share}`) : ""),
    h("td", { "data-testid": "quota-reset" }, when(quota.resets_at),
      h("span", { class: "reset-in", "data-testid": "quota-reset-in", "data-resets-at": quota.resets_at }, "")));
}

// ---------------------------------------------------------------- audit

async function loadAudit() {
  const { entries } = await api("GET", "/api/audit?limit=200");
  $("#audit-body").replaceChildren(...entries.map((entry) => h("tr", { "data-testid": "audit-row" },
    h("td", {}, when(entry.at)), h("td", {}, entry.actor), h("td", {}, entry.action),
    h("td", { class: "mono" }, entry.target), h("td", {}, entry.detail))));
}

// ---------------------------------------------------------------- start

function wire() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  for (const button of document.querySelectorAll("nav [data-view]")) {
    button.addEventListener("click", () => show(button.dataset.view));
  }
  $("#pool-form").addEventListener("submit", createPool);
  $("#add-form").addEventListener("submit", addKeys);
  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); refilter(); });
  for (const selector of ["#filter-pool", "#filter-state", "#filter-model", "#filter-q"]) $(selector).addEventListener("change", refilter);
  $("#select-all").addEventListener("change", (event) => {
    for (const box of document.querySelectorAll(".key-select")) box.checked = event.target.checked;
  });
  $("#bulk-apply").addEventListener("click", bulkApply);
  $("#verify-unhealthy").addEventListener("click", verifyUnhealthy);
  $("#page-next").addEventListener("click", () => {
    if (!state.nextToken) return;
    state.pageTokens[state.page + 1] = state.nextToken;
    state.page += 1;
    attempt(loadKeys);
  });
  $("#page-prev").addEventListener("click", () => { if (state.page > 0) { state.page -= 1; attempt(loadKeys); } });
  $("#overview-pool").addEventListener("change", () => attempt(loadPoolOverview));
  $("#overview-form").addEventListener("submit", (event) => { event.preventDefault(); attempt(loadPoolOverview); });
  $("#quota-filters").addEventListener("submit", (event) => { event.preventDefault(); attempt(loadQuotas); });
  for (const selector of ["#quota-filter-pool", "#quota-filter-project"]) $(selector).addEventListener("change", () => attempt(loadQuotas));
  $("#token-form").addEventListener("submit", createToken);
  $("#token-copy").addEventListener("click", () => attempt(async () => {
    await navigator.clipboard.writeText($("#token-value").textContent);
    say("Token copied.");
  }));
  $("#token-dismiss").addEventListener("click", hideOnce);
  setInterval(tick, 1000);
}

async function start() {
  wire();
  try {
    const session = await api("GET", "/api/session");
    await showConsole(session);
  } catch {
    showLogin();
  }
}

start();
