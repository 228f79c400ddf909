// Settlement (考核结算): the year's settlements and the city administrator's actions on them, budget
// used against the rule set's yearly caps (pro rata when the claims exceed them), statements per
// operator and owner (CSV and printable HTML from the API), the append-only ledger, disputes
// (raise on a statement line, re-evaluate, decide) and the carbon report.
//
// Every figure is the API's: the page asks for what the signed-in role may see and shows the
// server's refusal as it is.
//
// Routes: #/settlement?year=<y>                      the year's settlements, budget and actions
//         #/settlement/statements?year=<y>           statements per operator and owner
//         #/settlement/operator/<id>?year=<y>        one operator's statement (and its disputes)
//         #/settlement/owner/<id>?year=<y>           one owner's statement
//         #/settlement/ledger?year=<y>               the ledger of the year's settlement
//         #/settlement/disputes?year=<y>, #/settlement/disputes/<id>
//         #/settlement/carbon?year=<y>               emission reduction per event, operator, year

import { COLORS, axisStyle, baseOption, chart, loadCharts, tooltipLines } from "../charts.js";
import { $, api, API, ApiError, auth, can, CITY_ROLES, download, fmt, fmtInt, fmtTime, h, pageMessage, pageView, query, role, stat, table, tl, toApiError } from "../core.js";
import { addMessages, applyI18n, t } from "../i18n.js";
import { hrefFor, navigate, parseHash } from "../router.js";

const { view, setState, body } = pageView("settlement");

const enc = encodeURIComponent;

addMessages({
  en: {
    "settle.title": "Settlement",
    "settle.tab.overview": "Settlements and budget",
    "settle.tab.statements": "Statements",
    "settle.tab.ledger": "Ledger",
    "settle.tab.disputes": "Disputes",
    "settle.tab.carbon": "Carbon",
    "settle.year": "Year",
    "settle.none": "No settlement of {year} yet.",
    "settle.none_admin": "No settlement of {year} yet: compute it from the year's evaluated events.",
    "settle.list": "Settlements of {year}",
    "settle.col.id": "Settlement",
    "settle.col.state": "State",
    "settle.col.revision": "Revision",
    "settle.col.ruleset": "Rule set",
    "settle.col.created": "Computed",
    "settle.col.by": "By",
    "settle.col.updated": "Updated",
    "settle.state.computed": "computed",
    "settle.state.reviewed": "reviewed",
    "settle.state.approved": "approved",
    "settle.state.paid": "paid",
    "settle.state.superseded": "superseded",
    "settle.pending": "Events still waiting for an evaluation: {n}",
    "settle.evaluations": "Evaluations settled: {n}",
    "settle.actions": "Actions of the management center",
    "settle.actions.state": "Settlement {id} is {state}.",
    "settle.actions.none": "No action is open from this state.",
    "settle.actions.reason": "Reason (kept in the audit log)",
    "settle.action.review": "Review",
    "settle.action.approve": "Approve (post to the ledger)",
    "settle.action.pay": "Pay",
    "settle.action.pay_balances": "Pay balances left by disputes",
    "settle.action.compute": "Compute {year}",
    "settle.action.recompute": "Recompute {year}",
    "settle.action.done": "{action}: settlement {id} is {state}.",
    "settle.action.balances_done": "Balances paid: {n} ledger entries.",
    "settle.read_only": "Read only: the auditor sees every settlement and changes nothing.",
    "settle.budget": "Budget used",
    "settle.budget.main": "Active, reactive and reserve subsidy",
    "settle.budget.v2g": "V2G discharge subsidy",
    "settle.budget.cap": "Yearly budget",
    "settle.budget.claims": "Claims",
    "settle.budget.paid": "Allocated",
    "settle.budget.factor": "Pro-rata factor",
    "settle.budget.used": "Used",
    "settle.budget.scaled": "Claims of {claims} yuan exceed the budget of {budget} yuan: every claim is scaled by {factor}.",
    "settle.budget.within": "Claims within the budget: paid in full (factor {factor}).",
    "settle.rules": "Rule set {id}",
    "settle.rules.active": "Active power, at most",
    "settle.rules.reactive": "Reactive power, at most",
    "settle.rules.reserve": "Reserve capacity, at most",
    "settle.rules.v2g": "V2G discharge, at most",
    "settle.rules.penalty": "Penalty",
    "settle.rules.assumptions": "Assumptions",
    "settle.statements.operators": "Operators' statements ({n})",
    "settle.statements.owners": "Owners' statements ({n})",
    "settle.statements.mine_owner": "Your statement",
    "settle.col.operator": "Operator",
    "settle.col.owner": "Owner",
    "settle.col.name": "Name",
    "settle.col.lines": "Lines",
    "settle.col.claims": "Claims (yuan)",
    "settle.col.prorata": "Pro rata (yuan)",
    "settle.col.penalty": "Penalty (yuan)",
    "settle.col.payable": "Payable (yuan)",
    "settle.col.owner_shares": "Owners' shares (yuan)",
    "settle.col.retained": "Retained (yuan)",
    "settle.col.balance": "Balance (yuan)",
    "settle.col.contract": "Contract",
    "settle.col.revenue": "Revenue (yuan)",
    "settle.col.share": "Share (yuan)",
    "settle.col.files": "Files",
    "settle.csv": "CSV",
    "settle.html": "Printable",
    "settle.view": "Open",
    "settle.statement.operator": "Statement of operator {id}",
    "settle.statement.owner": "Statement of owner {id}",
    "settle.statement.meta": "{name} · settlement {sid} rev {rev} · {state} · rule set {ruleset}",
    "settle.statement.lines": "Lines ({n})",
    "settle.statement.amounts": "Amounts",
    "settle.statement.owners": "Owners' shares",
    "settle.statement.items": "Revenue and share per operator and contract",
    "settle.statement.ledger": "Ledger entries ({n})",
    "settle.statement.balance": "Balance",
    "settle.statement.total_share": "Total share",
    "settle.back": "← Statements",
    "settle.col.line": "Line",
    "settle.col.event": "Event",
    "settle.col.unit": "Trading unit",
    "settle.col.kind": "Kind",
    "settle.col.quantity": "Quantity",
    "settle.col.rate": "Rate (yuan)",
    "settle.col.amount": "Amount (yuan)",
    "settle.col.note": "Note",
    "settle.col.item": "Item",
    "settle.rate_varies": "varies",
    "settle.dispute": "Dispute",
    "settle.dispute.title": "Dispute line {line}",
    "settle.dispute.help": "Correct the metered power of your resources in the event window (kW per 15-minute slot); only the resources you change are sent as evidence.",
    "settle.dispute.reason": "Reason and evidence reference",
    "settle.dispute.submit": "Raise the dispute",
    "settle.dispute.cancel": "Cancel",
    "settle.dispute.resource": "Resource",
    "settle.dispute.day": "Day",
    "settle.dispute.slot": "Slot",
    "settle.dispute.corrected": "Corrected reading",
    "settle.dispute.loading": "Loading the metered values…",
    "settle.dispute.none": "No resource of yours in this line's evaluation.",
    "settle.ledger.title": "Ledger of settlement {id} ({n} entries)",
    "settle.ledger.note": "Append-only: approval posts the amounts, payments clear them, and a decided dispute appends the difference of every account; no entry is ever changed.",
    "settle.ledger.none": "No ledger entry yet: the ledger is posted when the settlement is approved.",
    "settle.ledger.entries": "Entries",
    "settle.ledger.postings": "Postings",
    "settle.ledger.payments": "Payments",
    "settle.ledger.adjustments": "Adjustments",
    "settle.ledger.kind.posting": "posting",
    "settle.ledger.kind.payment": "payment",
    "settle.ledger.kind.adjustment": "adjustment",
    "settle.ledger.kind.balance": "balance payment",
    "settle.col.entry": "Entry",
    "settle.col.at": "At",
    "settle.col.party_kind": "Party",
    "settle.col.party": "Party id",
    "settle.col.account": "Account",
    "settle.col.ref": "Reference",
    "settle.col.memo": "Memo",
    "settle.col.entry_kind": "Kind",
    "settle.disputes.title": "Disputes of settlement {id} ({n})",
    "settle.disputes.none": "No dispute.",
    "settle.disputes.owner": "Disputes are between operators and the center.",
    "settle.col.dispute": "Dispute",
    "settle.col.reason": "Reason",
    "settle.col.raised": "Raised",
    "settle.col.decided": "Decided",
    "settle.dispute.state.open": "open",
    "settle.dispute.state.reevaluated": "re-evaluated",
    "settle.dispute.state.approved": "approved",
    "settle.dispute.state.rejected": "rejected",
    "settle.dispute.detail": "Dispute {id}",
    "settle.dispute.meta": "Operator {op} · line {line} · event {event} · raised by {by} at {at}",
    "settle.dispute.evidence": "Evidence: corrected metered power",
    "settle.dispute.difference": "Re-evaluation: the difference",
    "settle.dispute.not_yet": "Not re-evaluated yet: the center re-evaluates the event with the evidence.",
    "settle.dispute.credited": "Credited {unit}: {before} → {after} ({delta})",
    "settle.dispute.parties": "Effect on the settlement's parties",
    "settle.dispute.no_party_change": "No party's amount changes.",
    "settle.dispute.decision": "Decision: {decision} ({by}, {at})",
    "settle.dispute.back": "← Disputes",
    "settle.col.slot": "Slot",
    "settle.col.response_before": "Response before (kW)",
    "settle.col.response_after": "Response after (kW)",
    "settle.col.ratio_before": "Ratio before",
    "settle.col.ratio_after": "Ratio after",
    "settle.col.credited_before": "Credited before",
    "settle.col.credited_after": "Credited after",
    "settle.col.before": "Before (yuan)",
    "settle.col.after": "After (yuan)",
    "settle.col.difference": "Difference (yuan)",
    "settle.chart.before": "credited before",
    "settle.chart.after": "credited after",
    "settle.action.reevaluate": "Re-evaluate with the evidence",
    "settle.action.approve_dispute": "Approve the dispute",
    "settle.action.reject_dispute": "Reject the dispute",
    "settle.action.dispute_done": "Dispute {id} is {state}.",
    "settle.action.ledger_appended": "{n} ledger entries appended (revision {rev}).",
    "settle.carbon.title": "Emission reduction of curtailed energy",
    "settle.carbon.curtailed": "Curtailed energy",
    "settle.carbon.southern": "Southern grid factor",
    "settle.carbon.national": "National factor",
    "settle.carbon.factors": "Factors: Southern grid {s} and national {n} tCO2/MWh ({source}, rule set {ruleset}). Only curtailed energy counts, never energy shifted to another hour.",
    "settle.carbon.by_operator": "Per operator",
    "settle.carbon.by_event": "Per event and operator ({n})",
    "settle.carbon.csv": "Download CSV",
    "settle.col.day": "Day",
    "settle.col.product": "Product",
    "settle.col.credited_kwh": "Credited (kWh)",
    "settle.col.curtailed_kwh": "Curtailed (kWh)",
    "settle.col.southern_t": "tCO2 (Southern grid)",
    "settle.col.national_t": "tCO2 (national)",
    "settle.unit.yuan": "yuan",
    "settle.unit.t": "tCO2",
    "settle.downloaded": "Downloaded {name} ({bytes} bytes)",
  },
  zh: {
    "settle.title": "考核结算",
    "settle.tab.overview": "结算与预算",
    "settle.tab.statements": "结算单",
    "settle.tab.ledger": "台账",
    "settle.tab.disputes": "争议",
    "settle.tab.carbon": "碳减排",
    "settle.year": "年度",
    "settle.none": "{year} 年尚无结算。",
    "settle.none_admin": "{year} 年尚无结算：可根据当年已评估的事件计算。",
    "settle.list": "{year} 年结算",
    "settle.col.id": "结算",
    "settle.col.state": "状态",
    "settle.col.revision": "修订",
    "settle.col.ruleset": "规则集",
    "settle.col.created": "计算时间",
    "settle.col.by": "计算人",
    "settle.col.updated": "更新时间",
    "settle.state.computed": "已计算",
    "settle.state.reviewed": "已审核",
    "settle.state.approved": "已批准",
    "settle.state.paid": "已支付",
    "settle.state.superseded": "已作废",
    "settle.pending": "尚待评估的事件：{n}",
    "settle.evaluations": "纳入结算的评估：{n}",
    "settle.actions": "管理中心操作",
    "settle.actions.state": "结算 {id} 当前状态：{state}。",
    "settle.actions.none": "此状态下无可执行的操作。",
    "settle.actions.reason": "理由（记入审计日志）",
    "settle.action.review": "审核",
    "settle.action.approve": "批准（记入台账）",
    "settle.action.pay": "支付",
    "settle.action.pay_balances": "支付争议产生的余额",
    "settle.action.compute": "计算 {year} 年结算",
    "settle.action.recompute": "重新计算 {year} 年结算",
    "settle.action.done": "{action}：结算 {id} 现为{state}。",
    "settle.action.balances_done": "余额已支付：{n} 条台账记录。",
    "settle.read_only": "只读：审计员可查看全部结算，不做任何修改。",
    "settle.budget": "预算使用",
    "settle.budget.main": "有功、无功与备用补贴",
    "settle.budget.v2g": "V2G 放电补贴",
    "settle.budget.cap": "年度预算",
    "settle.budget.claims": "申报金额",
    "settle.budget.paid": "分配金额",
    "settle.budget.factor": "同比例系数",
    "settle.budget.used": "已用",
    "settle.budget.scaled": "申报 {claims} 元超过预算 {budget} 元：所有申报按系数 {factor} 同比例缩减。",
    "settle.budget.within": "申报未超预算：全额支付（系数 {factor}）。",
    "settle.rules": "规则集 {id}",
    "settle.rules.active": "有功响应，上限",
    "settle.rules.reactive": "无功响应，上限",
    "settle.rules.reserve": "备用容量，上限",
    "settle.rules.v2g": "V2G 放电，上限",
    "settle.rules.penalty": "考核",
    "settle.rules.assumptions": "假设",
    "settle.statements.operators": "运营商结算单（{n}）",
    "settle.statements.owners": "资源业主结算单（{n}）",
    "settle.statements.mine_owner": "本业主结算单",
    "settle.col.operator": "运营商",
    "settle.col.owner": "业主",
    "settle.col.name": "名称",
    "settle.col.lines": "明细行",
    "settle.col.claims": "申报（元）",
    "settle.col.prorata": "同比例调整（元）",
    "settle.col.penalty": "考核（元）",
    "settle.col.payable": "应付（元）",
    "settle.col.owner_shares": "业主分成（元）",
    "settle.col.retained": "运营商留存（元）",
    "settle.col.balance": "余额（元）",
    "settle.col.contract": "合同",
    "settle.col.revenue": "收益（元）",
    "settle.col.share": "分成（元）",
    "settle.col.files": "文件",
    "settle.csv": "CSV",
    "settle.html": "打印版",
    "settle.view": "查看",
    "settle.statement.operator": "运营商 {id} 结算单",
    "settle.statement.owner": "业主 {id} 结算单",
    "settle.statement.meta": "{name} · 结算 {sid} 第 {rev} 版 · {state} · 规则集 {ruleset}",
    "settle.statement.lines": "明细（{n}）",
    "settle.statement.amounts": "金额",
    "settle.statement.owners": "业主分成",
    "settle.statement.items": "按运营商和合同的收益与分成",
    "settle.statement.ledger": "台账记录（{n}）",
    "settle.statement.balance": "余额",
    "settle.statement.total_share": "分成合计",
    "settle.back": "← 结算单",
    "settle.col.line": "明细",
    "settle.col.event": "事件",
    "settle.col.unit": "交易单元",
    "settle.col.kind": "类别",
    "settle.col.quantity": "数量",
    "settle.col.rate": "单价（元）",
    "settle.col.amount": "金额（元）",
    "settle.col.note": "备注",
    "settle.col.item": "项目",
    "settle.rate_varies": "多档",
    "settle.dispute": "提出争议",
    "settle.dispute.title": "对明细 {line} 提出争议",
    "settle.dispute.help": "更正本方资源在事件时段内的计量功率（每 15 分钟一个值，千瓦）；仅提交修改过的资源作为证据。",
    "settle.dispute.reason": "理由与证据说明",
    "settle.dispute.submit": "提交争议",
    "settle.dispute.cancel": "取消",
    "settle.dispute.resource": "资源",
    "settle.dispute.day": "日期",
    "settle.dispute.slot": "时段",
    "settle.dispute.corrected": "更正读数",
    "settle.dispute.loading": "正在加载计量值…",
    "settle.dispute.none": "此明细的评估中没有本方资源。",
    "settle.ledger.title": "结算 {id} 台账（{n} 条）",
    "settle.ledger.note": "只增不改：批准时记账，支付时冲销，争议裁定后追加各账户差额；任何记录都不会被修改。",
    "settle.ledger.none": "尚无台账记录：结算批准后记账。",
    "settle.ledger.entries": "记录数",
    "settle.ledger.postings": "记账",
    "settle.ledger.payments": "支付",
    "settle.ledger.adjustments": "调整",
    "settle.ledger.kind.posting": "记账",
    "settle.ledger.kind.payment": "支付",
    "settle.ledger.kind.adjustment": "调整",
    "settle.ledger.kind.balance": "余额支付",
    "settle.col.entry": "记录",
    "settle.col.at": "时间",
    "settle.col.party_kind": "主体",
    "settle.col.party": "主体编号",
    "settle.col.account": "科目",
    "settle.col.ref": "参照",
    "settle.col.memo": "摘要",
    "settle.col.entry_kind": "类型",
    "settle.disputes.title": "结算 {id} 的争议（{n}）",
    "settle.disputes.none": "暂无争议。",
    "settle.disputes.owner": "争议由运营商与管理中心处理。",
    "settle.col.dispute": "争议",
    "settle.col.reason": "理由",
    "settle.col.raised": "提出时间",
    "settle.col.decided": "裁定时间",
    "settle.dispute.state.open": "待处理",
    "settle.dispute.state.reevaluated": "已重新评估",
    "settle.dispute.state.approved": "已支持",
    "settle.dispute.state.rejected": "已驳回",
    "settle.dispute.detail": "争议 {id}",
    "settle.dispute.meta": "运营商 {op} · 明细 {line} · 事件 {event} · {by} 于 {at} 提出",
    "settle.dispute.evidence": "证据：更正后的计量功率",
    "settle.dispute.difference": "重新评估：差异",
    "settle.dispute.not_yet": "尚未重新评估：管理中心将依据证据重新评估该事件。",
    "settle.dispute.credited": "认定{unit}：{before} → {after}（{delta}）",
    "settle.dispute.parties": "对各结算主体的影响",
    "settle.dispute.no_party_change": "各主体金额不变。",
    "settle.dispute.decision": "裁定：{decision}（{by}，{at}）",
    "settle.dispute.back": "← 争议",
    "settle.col.slot": "时段",
    "settle.col.response_before": "原响应（千瓦）",
    "settle.col.response_after": "新响应（千瓦）",
    "settle.col.ratio_before": "原响应率",
    "settle.col.ratio_after": "新响应率",
    "settle.col.credited_before": "原认定",
    "settle.col.credited_after": "新认定",
    "settle.col.before": "调整前（元）",
    "settle.col.after": "调整后（元）",
    "settle.col.difference": "差额（元）",
    "settle.chart.before": "原认定",
    "settle.chart.after": "新认定",
    "settle.action.reevaluate": "依据证据重新评估",
    "settle.action.approve_dispute": "支持争议",
    "settle.action.reject_dispute": "驳回争议",
    "settle.action.dispute_done": "争议 {id} 现为{state}。",
    "settle.action.ledger_appended": "已追加 {n} 条台账记录（第 {rev} 版）。",
    "settle.carbon.title": "削减电量的碳减排",
    "settle.carbon.curtailed": "削减电量",
    "settle.carbon.southern": "南方电网因子",
    "settle.carbon.national": "全国电网因子",
    "settle.carbon.factors": "排放因子：南方电网 {s}、全国 {n} tCO2/MWh（{source}，规则集 {ruleset}）。仅计削减电量，不计转移到其他时段的电量。",
    "settle.carbon.by_operator": "按运营商",
    "settle.carbon.by_event": "按事件和运营商（{n}）",
    "settle.carbon.csv": "下载 CSV",
    "settle.col.day": "日期",
    "settle.col.product": "品种",
    "settle.col.credited_kwh": "认定（千瓦时）",
    "settle.col.curtailed_kwh": "削减（千瓦时）",
    "settle.col.southern_t": "tCO2（南方电网）",
    "settle.col.national_t": "tCO2（全国）",
    "settle.unit.yuan": "元",
    "settle.unit.t": "吨CO2",
    "settle.downloaded": "已下载 {name}（{bytes} 字节）",
  },
});

/** SETTLEMENT_MACHINE (services/settlement.py): the city administrator's action from each state. */
const NEXT_ACTION = { computed: "review", reviewed: "approve", approved: "pay" };
const TABS = ["overview", "statements", "ledger", "disputes", "carbon"];
const AMOUNT_KEYS = ["claim_active", "claim_reactive", "claim_reserve", "claim_v2g", "prorata_main", "prorata_v2g",
  "penalty", "payable", "net", "owner_shares", "retained"];

let token = 0;
let current = null; // {route, year, settlements, live, data}
let actionResult = null; // {ok, message, violations, details}
let disputeLine = null; // line id whose dispute form is open
let disputeForm = null; // {line, resources: [{id, slots, values}], error}

function isCenter() {
  return CITY_ROLES.has(role());
}

function yuan(value) {
  return value === null || value === undefined ? "–" : fmt(value, 2);
}

function money(value) {
  return h("span", { class: `money${Number(value) < 0 ? " neg" : ""}`, dataset: { value: value ?? "" }, text: yuan(value) });
}

function stateBadge(state, prefix = "settle.state") {
  return h("span", { class: "pill pill-settle", dataset: { state: state || "" }, text: state ? t(`${prefix}.${state}`) : "–" });
}

function slotLabel(slot) {
  const m = Number(slot) * 15;
  return `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;
}

function href(part, params = {}, parts = []) {
  return hrefFor("settlement", part ? [part, ...parts] : parts, { year: current?.year, ...params });
}

function resultBox(id = "settle-result") {
  const box = h("div", { id, role: "status" });
  if (!actionResult) return box;
  box.dataset.ok = String(actionResult.ok);
  box.className = actionResult.ok ? "result result-ok" : "result result-bad";
  box.setAttribute("role", actionResult.ok ? "status" : "alert");
  box.append(h("span", { class: "result-message", text: actionResult.message }));
  const items = [...(actionResult.violations || []).map((v) => t("error.violation", {
    field: v.field ?? "?", rule: v.rule ?? "?", value: JSON.stringify(v.value ?? null),
  })), ...(actionResult.details || [])];
  if (items.length) box.append(h("ul", {}, items.map((x) => h("li", { text: x }))));
  return box;
}

function failed(err) {
  return { ok: false, message: err.message, violations: err.violations || [], status: err.status };
}

// ---------------------------------------------------------------- files (CSV, printable HTML)

async function fetchText(path) {
  const gen = auth.generation;
  let resp;
  try {
    resp = await fetch(`${API}${path}`, {
      headers: { Authorization: `Bearer ${auth.session?.access_token}` }, cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, t("error.network", { msg: err.message }));
  }
  const text = await resp.text();
  if (!resp.ok) {
    let data = null;
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
    if (resp.status === 401 && gen === auth.generation) auth.onExpired();
    throw toApiError(resp.status, data, text);
  }
  return text;
}

/** Open the API's printable HTML statement in a new tab (fetched with the bearer token). */
async function openPrintable(path) {
  const tab = window.open("", "_blank");
  try {
    const text = await fetchText(path);
    const url = URL.createObjectURL(new Blob([text], { type: "text/html;charset=utf-8" }));
    if (tab) tab.location.href = url;
    else window.location.assign(url);
    window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    if (tab) tab.close();
    showFileError(err);
  }
}

async function downloadFile(path, name) {
  try {
    const out = await download(path, name);
    const box = $("settle-file-result");
    if (box) {
      box.className = "result result-ok";
      box.textContent = t("settle.downloaded", { name: out.name, bytes: fmtInt(out.bytes) });
    }
  } catch (err) {
    showFileError(err);
  }
}

function showFileError(err) {
  const box = $("settle-file-result");
  if (!box) return;
  box.className = "result result-bad";
  box.setAttribute("role", "alert");
  box.textContent = err.message || String(err);
}

function fileLinks(kind, settlementId, partyId) {
  const base = `/statements/${enc(settlementId)}/${kind}s/${enc(partyId)}`;
  return h("span", { class: "file-links" },
    h("button", {
      type: "button", class: "btn btn-ghost btn-small", dataset: { file: "csv", party: partyId },
      text: t("settle.csv"), onclick: () => downloadFile(`${base}?format=csv`, `statement-${partyId}.csv`),
    }),
    h("button", {
      type: "button", class: "btn btn-ghost btn-small", dataset: { file: "html", party: partyId },
      text: t("settle.html"), onclick: () => openPrintable(`${base}?format=html`),
    }));
}

// ---------------------------------------------------------------- loading

async function load(route) {
  const my = ++token;
  const gen = auth.generation;
  setState("loading");
  const part = route.parts[0] || "overview";
  try {
    const all = await api("/settlements");
    if (my !== token || gen !== auth.generation) return;
    const years = [...new Set(all.items.map((s) => s.year))].sort((a, b) => b - a);
    const year = Number(route.params.year) || years[0] || new Date().getFullYear();
    const ofYear = all.items.filter((s) => s.year === year);
    const live = ofYear.find((s) => s.state !== "superseded") || null;
    const ctx = { route, part, year, years, settlements: ofYear, live, data: null };
    ctx.data = await loadPart(ctx);
    if (my !== token || gen !== auth.generation) return;
    current = ctx;
    render();
    setState("ready");
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    current = null;
    body().replaceChildren(pageMessage(err));
    setState("error");
  }
}

async function loadPart(ctx) {
  const { part, live, route } = ctx;
  const sid = live?.settlement_id;
  const session = auth.session;
  if (part === "overview") return null;
  if (part === "carbon") {
    const [rep] = await Promise.all([api(`/reports/carbon${query({ year: ctx.year })}`), loadCharts()]);
    return rep;
  }
  if (!sid) return null;
  if (part === "statements") {
    if (role() === "owner") {
      return { owner: await api(`/statements/${enc(sid)}/owners/${enc(session.owner_id)}`).catch((err) => ({ error: err })) };
    }
    let ids;
    if (isCenter()) ids = (await api("/operators")).items.map((o) => o.operator_id);
    else ids = [session.operator_id];
    const results = await Promise.all(ids.map((id) => api(`/statements/${enc(sid)}/operators/${enc(id)}`)
      .catch((err) => ({ error: err, party_id: id }))));
    const errors = results.filter((r) => r.error && r.error.status !== 404);
    return { operators: results.filter((r) => !r.error), errors };
  }
  if (part === "operator") {
    const id = route.parts[1];
    const [stmt, disputes] = await Promise.all([
      api(`/statements/${enc(sid)}/operators/${enc(id)}`),
      role() === "owner" ? Promise.resolve({ items: [] })
        : api(`/disputes${query({ settlement_id: sid })}`).catch(() => ({ items: [] })),
    ]);
    return { stmt, disputes: disputes.items.filter((d) => d.operator_id === id) };
  }
  if (part === "owner") return { stmt: await api(`/statements/${enc(sid)}/owners/${enc(route.parts[1])}`) };
  if (part === "ledger") return await api(`/settlements/${enc(sid)}/ledger`);
  if (part === "disputes") {
    if (route.parts[1]) {
      const [d] = await Promise.all([api(`/disputes/${enc(route.parts[1])}`), loadCharts()]);
      return { dispute: d };
    }
    return await api(`/disputes${query({ settlement_id: sid })}`);
  }
  return null;
}

// ---------------------------------------------------------------- frame

function tabs() {
  const visible = TABS.filter((x) => x !== "disputes" || role() !== "owner");
  const active = ["operator", "owner"].includes(current.part) ? "statements" : current.part;
  return h("nav", { class: "tabs", id: "settle-tabs" }, visible.map((x) => h("a", {
    class: `tab${x === active ? " active" : ""}`, href: href(x === "overview" ? "" : x), dataset: { tab: x },
    text: t(`settle.tab.${x}`),
  })));
}

function yearPicker() {
  const years = [...new Set([current.year, ...current.years])].sort((a, b) => b - a);
  const select = h("select", { id: "settle-year" }, years.map((y) => h("option", { value: y, text: y, selected: y === current.year })));
  select.addEventListener("change", () => {
    const r = parseHash();
    navigate("settlement", r.parts, { ...r.params, year: select.value });
  });
  return h("label", { class: "field settle-year" }, h("span", { text: t("settle.year") }), select);
}

function render() {
  const parts = [h("div", { class: "settle-head" }, tabs(), yearPicker())];
  const p = current.part;
  if (p === "carbon") parts.push(...renderCarbon());
  else if (p === "overview") parts.push(...renderOverview());
  else if (!current.live) parts.push(h("p", { class: "notice", id: "settle-none", text: t("settle.none", { year: current.year }) }));
  else if (p === "statements") parts.push(...renderStatements());
  else if (p === "operator") parts.push(...renderOperatorStatement());
  else if (p === "owner") parts.push(...renderOwnerStatement());
  else if (p === "ledger") parts.push(...renderLedger());
  else if (p === "disputes" && current.data?.dispute) parts.push(...renderDispute());
  else if (p === "disputes") parts.push(...renderDisputes());
  parts.push(h("div", { id: "settle-file-result", role: "status" }));
  body().replaceChildren(...parts);
  if (p === "carbon") drawCarbonChart();
  if (p === "disputes" && current.data?.dispute?.difference) drawDisputeChart();
}

// ---------------------------------------------------------------- overview: settlements, actions, budget

function renderOverview() {
  const { live, settlements, year } = current;
  const out = [];
  if (!live && !settlements.length) {
    out.push(h("p", { class: "notice", id: "settle-none", text: t(can("sign_settlements") ? "settle.none_admin" : "settle.none", { year }) }));
  }
  if (settlements.length) {
    out.push(h("article", { class: "panel", id: "settle-list-panel" },
      h("h2", { text: t("settle.list", { year }) }),
      table([
        { key: "id", label: "settle.col.id", render: (s) => h("span", { class: "mono", text: s.settlement_id }) },
        { key: "state", label: "settle.col.state", render: (s) => stateBadge(s.state) },
        { key: "revision", label: "settle.col.revision", num: true, render: (s) => fmtInt(s.revision) },
        { key: "ruleset", label: "settle.col.ruleset", render: (s) => s.ruleset },
        { key: "created", label: "settle.col.created", render: (s) => fmtTime(s.created_at) },
        { key: "by", label: "settle.col.by", render: (s) => s.created_by },
        { key: "updated", label: "settle.col.updated", render: (s) => fmtTime(s.updated_at) },
      ], settlements, { id: "settle-list", rowProps: (s) => ({ dataset: { id: s.settlement_id, state: s.state } }) })));
  }
  if (can("sign_settlements")) out.push(actionsPanel());
  else if (role() === "auditor") out.push(h("p", { class: "muted", id: "settle-read-only", text: t("settle.read_only") }));
  if (live) {
    out.push(budgetPanel(live));
    if (live.summary.rules) out.push(rulesPanel(live));
  }
  return out;
}

function actionsPanel() {
  const { live, year } = current;
  const panel = h("article", { class: "panel panel-actions", id: "settle-actions" }, tl("h2", "settle.actions"));
  const buttons = [];
  if (live) {
    panel.append(h("p", { class: "muted", text: t("settle.actions.state", { id: live.settlement_id, state: t(`settle.state.${live.state}`) }) }));
    const next = NEXT_ACTION[live.state];
    if (next) {
      buttons.push(h("button", {
        type: "button", class: "btn btn-primary", dataset: { action: next }, text: t(`settle.action.${next}`),
        onclick: () => transition(live, next),
      }));
    }
    if (live.state === "paid") {
      buttons.push(h("button", {
        type: "button", class: "btn btn-primary", dataset: { action: "pay_balances" }, text: t("settle.action.pay_balances"),
        onclick: () => payBalances(live),
      }));
    }
  }
  if (!live || ["computed", "reviewed"].includes(live.state)) {
    buttons.push(h("button", {
      type: "button", class: "btn btn-ghost", dataset: { action: "compute" },
      text: t(live ? "settle.action.recompute" : "settle.action.compute", { year }), onclick: () => compute(year),
    }));
  }
  if (buttons.length) {
    panel.append(h("label", { class: "field field-wide" }, h("span", { text: t("settle.actions.reason") }),
      h("textarea", { id: "settle-reason", rows: "2" })));
    panel.append(h("div", { class: "actions" }, buttons));
  } else {
    panel.append(h("p", { class: "muted", text: t("settle.actions.none") }));
  }
  panel.append(resultBox());
  return panel;
}

async function runAction(fn) {
  for (const b of document.querySelectorAll("#settlement-body .panel-actions button")) b.disabled = true;
  const gen = auth.generation;
  try {
    actionResult = await fn();
  } catch (err) {
    actionResult = failed(err);
  }
  if (gen !== auth.generation) return;
  await load(parseHash());
}

function transition(live, action) {
  const reason = $("settle-reason")?.value.trim() || null;
  return runAction(async () => {
    const out = await api(`/settlements/${enc(live.settlement_id)}/transitions`, { method: "POST", json: { action, reason } });
    return { ok: true, message: t("settle.action.done", { action: t(`settle.action.${action}`), id: out.settlement_id, state: t(`settle.state.${out.state}`) }) };
  });
}

function payBalances(live) {
  return runAction(async () => {
    const out = await api(`/settlements/${enc(live.settlement_id)}/pay-balances`, { method: "POST" });
    return { ok: true, message: t("settle.action.balances_done", { n: fmtInt(out.ledger_entries) }) };
  });
}

function compute(year) {
  return runAction(async () => {
    const out = await api("/settlements", { method: "POST", json: { year } });
    return { ok: true, message: t("settle.action.done", { action: t("settle.action.compute", { year }), id: out.settlement_id, state: t(`settle.state.${out.state}`) }) };
  });
}

function budgetBlock(id, labelKey, b) {
  const budget = Number(b.budget);
  const paid = Number(b.paid);
  const factor = Number(b.factor);
  const used = budget > 0 ? paid / budget : 0;
  const scaled = factor < 1;
  return h("div", { class: "budget", id, dataset: { scaled: String(scaled), factor: b.factor } },
    tl("h3", labelKey),
    h("div", { class: "stats stats-compact" },
      stat(`${id}-cap`, "settle.budget.cap", b.budget, fmtInt(b.budget), t("settle.unit.yuan")),
      stat(`${id}-claims`, "settle.budget.claims", b.claims, yuan(b.claims), t("settle.unit.yuan")),
      stat(`${id}-paid`, "settle.budget.paid", b.paid, yuan(b.paid), t("settle.unit.yuan")),
      stat(`${id}-factor`, "settle.budget.factor", b.factor, fmt(factor, 6))),
    h("div", { class: "budget-used" },
      h("span", { class: "muted", text: `${t("settle.budget.used")} ${fmt(100 * used, used < 0.01 ? 4 : 1)}%` }),
      h("div", { class: "bar" }, h("div", { class: `bar-fill${scaled ? " over" : ""}`, style: `width:${Math.min(100, 100 * used).toFixed(3)}%` }))),
    h("p", {
      class: scaled ? "notice notice-warn" : "muted", dataset: { prorata: String(scaled) },
      text: scaled ? t("settle.budget.scaled", { claims: yuan(b.claims), budget: yuan(b.budget), factor: fmt(factor, 6) })
        : t("settle.budget.within", { factor: fmt(factor, 0) }),
    }));
}

function budgetPanel(live) {
  const s = live.summary;
  const panel = h("article", { class: "panel", id: "settle-budget" }, tl("h2", "settle.budget"));
  panel.append(h("div", { class: "split split-even" },
    budgetBlock("settle-budget-main", "settle.budget.main", s.main),
    budgetBlock("settle-budget-v2g", "settle.budget.v2g", s.v2g)));
  const notes = [];
  if (s.evaluations) notes.push(t("settle.evaluations", { n: fmtInt(s.evaluations.length) }));
  if (s.pending_events?.length) notes.push(t("settle.pending", { n: fmtInt(s.pending_events.length) }));
  if (notes.length) panel.append(h("p", { class: "muted", text: notes.join(" · ") }));
  return panel;
}

function rulesPanel(live) {
  const s = live.summary;
  const sub = s.rules.subsidy || {};
  const rows = [
    ["settle.rules.active", `${sub.active_yuan_per_kwh} ${t("settle.unit.yuan")}/kWh`],
    ["settle.rules.reactive", `${sub.reactive_yuan_per_kvarh} ${t("settle.unit.yuan")}/kvarh`],
    ["settle.rules.reserve", `${sub.reserve_yuan_per_kw_h} ${t("settle.unit.yuan")}/(kW·h)`],
    ["settle.rules.v2g", `${sub.v2g_discharge_yuan_per_kwh} ${t("settle.unit.yuan")}/kWh`],
    ["settle.rules.penalty", s.penalty ? `${s.penalty.mode}${s.penalty.mode !== "none" ? ` × ${s.penalty.ratio}` : ""}` : "–"],
  ];
  return h("article", { class: "panel", id: "settle-rules" },
    h("h2", { text: t("settle.rules", { id: s.ruleset }) }),
    h("dl", { class: "pairs" }, rows.flatMap(([k, v]) => [h("dt", { text: t(k) }), h("dd", { class: "mono", text: v })])),
    s.assumptions ? h("p", { class: "muted small", text: `${t("settle.rules.assumptions")}: ${s.assumptions.join("; ")}` }) : null,
    sub.source ? h("p", { class: "muted small", text: sub.source }) : null);
}

// ---------------------------------------------------------------- statements

function renderStatements() {
  const sid = current.live.settlement_id;
  const d = current.data;
  if (d.owner !== undefined) {
    if (d.owner.error) return [pageMessage(d.owner.error)];
    return [ownerTable([{ ...d.owner, owner_id: d.owner.party_id }], sid, "settle.statements.mine_owner")];
  }
  const ops = d.operators;
  const out = [];
  for (const e of d.errors) out.push(pageMessage(e.error));
  out.push(h("article", { class: "panel", id: "settle-operators-panel" },
    h("h2", { text: t("settle.statements.operators", { n: fmtInt(ops.length) }) }),
    table([
      { key: "id", label: "settle.col.operator", render: (s) => h("a", { class: "mono", href: href("operator", {}, [s.party_id]), text: s.party_id }) },
      { key: "name", label: "settle.col.name", cls: "wrap", render: (s) => s.name },
      { key: "lines", label: "settle.col.lines", num: true, render: (s) => fmtInt(s.lines.length) },
      { key: "claims", label: "settle.col.claims", num: true, render: (s) => money(sumOf(s.amounts, ["claim_active", "claim_reactive", "claim_reserve", "claim_v2g"])) },
      { key: "prorata", label: "settle.col.prorata", num: true, render: (s) => money(sumOf(s.amounts, ["prorata_main", "prorata_v2g"])) },
      { key: "penalty", label: "settle.col.penalty", num: true, render: (s) => money(s.amounts.penalty) },
      { key: "payable", label: "settle.col.payable", num: true, render: (s) => money(s.amounts.net) },
      { key: "owner_shares", label: "settle.col.owner_shares", num: true, render: (s) => money(s.amounts.owner_shares) },
      { key: "retained", label: "settle.col.retained", num: true, render: (s) => money(s.amounts.retained) },
      { key: "balance", label: "settle.col.balance", num: true, render: (s) => money(s.balance) },
      { key: "files", label: "settle.col.files", render: (s) => fileLinks("operator", sid, s.party_id) },
    ], ops, { id: "settle-operators", rowProps: (s) => ({ dataset: { id: s.party_id } }) })));
  const owners = ops.flatMap((s) => s.owners.map((o) => ({ ...o, operator_id: s.party_id })));
  out.push(ownerTable(owners, sid));
  return out;
}

/** Exact sum of decimal strings (yuan with 2 decimals) through integer fen. */
function sumOf(amounts, keys) {
  const fen = keys.reduce((acc, k) => acc + Math.round(Number(amounts[k] || 0) * 100), 0);
  return (fen / 100).toFixed(2);
}

function sumList(values) {
  return (values.reduce((acc, v) => acc + Math.round(Number(v || 0) * 100), 0) / 100).toFixed(2);
}

function ownerTable(rows, sid, titleKey = null) {
  return h("article", { class: "panel", id: "settle-owners-panel" },
    h("h2", { text: titleKey ? t(titleKey) : t("settle.statements.owners", { n: fmtInt(rows.length) }) }),
    table([
      { key: "id", label: "settle.col.owner", render: (o) => h("a", { class: "mono", href: href("owner", {}, [o.owner_id]), text: o.owner_id }) },
      { key: "operator", label: "settle.col.operator", render: (o) => o.operator_id ?? (o.items || []).map((i) => i.operator_id).join(", ") },
      { key: "contract", label: "settle.col.contract", render: (o) => o.contract ?? (o.items || []).map((i) => i.contract).join(", ") },
      { key: "revenue", label: "settle.col.revenue", num: true, render: (o) => money(o.revenue ?? sumList((o.items || []).map((i) => i.revenue))) },
      { key: "share", label: "settle.col.share", num: true, render: (o) => money(o.owner_share ?? o.total_share) },
      { key: "files", label: "settle.col.files", render: (o) => fileLinks("owner", sid, o.owner_id) },
    ], rows, { id: "settle-owners", rowProps: (o) => ({ dataset: { id: o.owner_id, operator: o.operator_id ?? "" } }) }));
}

function statementHead(stmt, titleKey) {
  return h("div", { class: "node-head", dataset: { id: stmt.party_id } },
    h("div", {},
      h("h2", { class: "node-title", text: t(titleKey, { id: stmt.party_id }) }),
      h("div", { class: "muted", text: t("settle.statement.meta", { name: stmt.name, sid: stmt.settlement_id, rev: stmt.revision, state: t(`settle.state.${stmt.state}`), ruleset: stmt.ruleset }) })),
    h("div", { class: "detail-badges" }, stateBadge(stmt.state), fileLinks(stmt.kind, stmt.settlement_id, stmt.party_id)));
}

function ledgerEntries(entries, id) {
  return table([
    { key: "entry", label: "settle.col.entry", num: true, render: (e) => String(e.entry_id) },
    { key: "at", label: "settle.col.at", render: (e) => fmtTime(e.created_at) },
    { key: "account", label: "settle.col.account", render: (e) => e.account },
    { key: "operator", label: "settle.col.operator", render: (e) => e.operator_id },
    { key: "amount", label: "settle.col.amount", num: true, render: (e) => money(e.amount) },
    { key: "kind", label: "settle.col.entry_kind", render: (e) => entryKindBadge(e.ref) },
    { key: "ref", label: "settle.col.ref", render: (e) => h("span", { class: "mono", text: e.ref }) },
    { key: "memo", label: "settle.col.memo", cls: "wrap", render: (e) => e.memo },
  ], entries, { id, rowProps: (e) => ({ dataset: { id: e.entry_id, ref: e.ref, kind: entryKind(e.ref) } }) });
}

function renderOperatorStatement() {
  const { stmt, disputes } = current.data;
  const mine = role() === "operator_admin" && auth.session.operator_id === stmt.party_id && stmt.state !== "superseded";
  const busy = new Set(disputes.filter((d) => ["open", "reevaluated"].includes(d.state)).map((d) => d.line_id));
  const cols = [
    { key: "line", label: "settle.col.line", render: (l) => h("span", { class: "mono small", text: l.line_id }) },
    { key: "event", label: "settle.col.event", render: (l) => h("span", { class: "mono small", text: l.event_id }) },
    { key: "unit", label: "settle.col.unit", render: (l) => l.unit_id },
    { key: "kind", label: "settle.col.kind", render: (l) => l.kind },
    { key: "quantity", label: "settle.col.quantity", num: true, render: (l) => `${fmt(l.quantity, 3)} ${l.quantity_unit}` },
    { key: "rate", label: "settle.col.rate", num: true, render: (l) => l.rate_yuan ?? t("settle.rate_varies") },
    { key: "amount", label: "settle.col.amount", num: true, render: (l) => money(l.amount) },
    { key: "note", label: "settle.col.note", cls: "wrap", render: (l) => l.note },
  ];
  if (mine) {
    cols.push({
      key: "dispute", label: "settle.col.dispute",
      render: (l) => (busy.has(l.line_id)
        ? h("a", { href: href("disputes", {}, [disputes.find((d) => d.line_id === l.line_id && busy.has(d.line_id)).dispute_id]), text: t("settle.dispute.state.open") })
        : h("button", { type: "button", class: "btn btn-ghost btn-small", dataset: { action: "dispute", line: l.line_id }, text: t("settle.dispute"), onclick: () => openDisputeForm(stmt, l) })),
    });
  }
  const out = [h("a", { class: "back", href: href("statements"), text: t("settle.back") }), statementHead(stmt, "settle.statement.operator")];
  out.push(h("article", { class: "panel", id: "settle-lines-panel" },
    h("h2", { text: t("settle.statement.lines", { n: fmtInt(stmt.lines.length) }) }),
    table(cols, stmt.lines, { id: "settle-lines", rowProps: (l) => ({ dataset: { id: l.line_id, event: l.event_id, kind: l.kind } }) })));
  if (mine && disputeLine) out.push(disputePanel());
  if (mine) out.push(resultBox());
  out.push(h("div", { class: "split split-even" },
    h("article", { class: "panel", id: "settle-amounts" }, tl("h2", "settle.statement.amounts"),
      h("dl", { class: "pairs" }, AMOUNT_KEYS.filter((k) => k in stmt.amounts).flatMap((k) => [
        h("dt", { class: "mono", text: k }), h("dd", { dataset: { key: k } }, money(stmt.amounts[k]))]),
      h("dt", { text: t("settle.statement.balance") }), h("dd", { id: "settle-balance" }, money(stmt.balance)))),
    h("article", { class: "panel", id: "settle-stmt-owners" }, tl("h2", "settle.statement.owners"),
      table([
        { key: "owner", label: "settle.col.owner", render: (o) => h("a", { class: "mono", href: href("owner", {}, [o.owner_id]), text: o.owner_id }) },
        { key: "contract", label: "settle.col.contract", render: (o) => o.contract },
        { key: "revenue", label: "settle.col.revenue", num: true, render: (o) => money(o.revenue) },
        { key: "share", label: "settle.col.share", num: true, render: (o) => money(o.owner_share) },
      ], stmt.owners, { rowProps: (o) => ({ dataset: { id: o.owner_id } }) }))));
  out.push(h("article", { class: "panel", id: "settle-stmt-ledger" },
    h("h2", { text: t("settle.statement.ledger", { n: fmtInt(stmt.ledger.length) }) }),
    ledgerEntries(stmt.ledger, "settle-stmt-ledger-table")));
  return out;
}

function renderOwnerStatement() {
  const { stmt } = current.data;
  return [
    h("a", { class: "back", href: href("statements"), text: t("settle.back") }),
    statementHead(stmt, "settle.statement.owner"),
    h("article", { class: "panel", id: "settle-owner-items" }, tl("h2", "settle.statement.items"),
      table([
        { key: "operator", label: "settle.col.operator", render: (i) => i.operator_id },
        { key: "contract", label: "settle.col.contract", render: (i) => i.contract },
        { key: "scheme", label: "settle.col.kind", render: (i) => i.scheme ?? "–" },
        { key: "revenue", label: "settle.col.revenue", num: true, render: (i) => money(i.revenue) },
        { key: "share", label: "settle.col.share", num: true, render: (i) => money(i.owner_share) },
      ], stmt.items, { id: "settle-owner-items-table", rowProps: (i) => ({ dataset: { id: i.operator_id } }) }),
      h("p", {}, h("span", { text: `${t("settle.statement.total_share")}: ` }), h("strong", { id: "settle-total-share" }, money(stmt.total_share)),
        ` ${t("settle.unit.yuan")}`)),
    h("article", { class: "panel", id: "settle-stmt-ledger" },
      h("h2", { text: t("settle.statement.ledger", { n: fmtInt(stmt.ledger.length) }) }),
      ledgerEntries(stmt.ledger, "settle-stmt-ledger-table")),
  ];
}

// ---------------------------------------------------------------- raising a dispute

async function openDisputeForm(stmt, line) {
  disputeLine = line.line_id;
  disputeForm = { line, resources: null, error: null };
  actionResult = null;
  render();
  const gen = auth.generation;
  try {
    const ev = await api(`/evaluations/${enc(line.event_id)}${query({ level: "resource" })}`);
    if (gen !== auth.generation || disputeLine !== line.line_id) return;
    const byRes = new Map();
    for (const r of ev.resources || []) {
      if (r.unit_id !== line.unit_id || r.operator_id !== stmt.party_id) continue;
      if (!byRes.has(r.key_id)) byRes.set(r.key_id, []);
      byRes.get(r.key_id).push(r);
    }
    disputeForm.resources = [...byRes.entries()].map(([id, rows]) => {
      rows.sort((a, b) => a.slot - b.slot);
      return { id, slots: rows.map((r) => r.slot), values: rows.map((r) => r.metered_kw) };
    });
  } catch (err) {
    disputeForm.error = err;
  }
  if (current?.part === "operator") render();
}

function disputePanel() {
  const f = disputeForm;
  const panel = h("article", { class: "panel panel-actions", id: "settle-dispute-form", dataset: { line: f.line.line_id } },
    h("h2", { text: t("settle.dispute.title", { line: f.line.line_id }) }),
    h("p", { class: "muted", text: t("settle.dispute.help") }));
  if (f.error) {
    panel.append(pageMessage(f.error));
    return panel;
  }
  if (!f.resources) {
    panel.append(h("p", { class: "muted", text: t("settle.dispute.loading") }));
    return panel;
  }
  if (!f.resources.length) panel.append(h("p", { class: "muted", text: t("settle.dispute.none") }));
  for (const r of f.resources) {
    panel.append(h("div", { class: "table-wrap" }, h("table", { class: "data dispute-grid", dataset: { resource: r.id } },
      h("thead", {}, h("tr", {}, h("th", { text: t("settle.dispute.resource") }), r.slots.map((s) => h("th", { class: "num", text: slotLabel(s) })))),
      h("tbody", {}, h("tr", {}, h("td", { class: "mono", text: r.id }), r.values.map((v, i) => h("td", {},
        h("input", {
          type: "number", step: "any", class: "meter-input", value: v === null ? "" : String(Number(v.toFixed(3))),
          dataset: { resource: r.id, slot: r.slots[i], original: v === null ? "" : String(Number(v.toFixed(3))) },
        }))))))));
  }
  panel.append(h("label", { class: "field field-wide" }, h("span", { text: t("settle.dispute.reason") }),
    h("textarea", { id: "settle-dispute-reason", rows: "2" })));
  panel.append(h("div", { class: "actions" },
    h("button", { type: "button", class: "btn btn-primary", dataset: { action: "submit-dispute" }, text: t("settle.dispute.submit"), onclick: submitDispute }),
    h("button", { type: "button", class: "btn btn-ghost", dataset: { action: "cancel-dispute" }, text: t("settle.dispute.cancel"), onclick: () => { disputeLine = null; disputeForm = null; render(); } })));
  return panel;
}

async function submitDispute() {
  const f = disputeForm;
  const meter = {};
  for (const r of f.resources) {
    const inputs = [...document.querySelectorAll(`#settle-dispute-form input[data-resource="${CSS.escape(r.id)}"]`)];
    if (!inputs.some((x) => x.value !== x.dataset.original)) continue;
    // unchanged slots keep their metered value at full precision; an empty or invalid field is sent as null
    // so the API names it
    meter[r.id] = inputs.map((x, i) => (x.value === x.dataset.original ? r.values[i] : (x.value.trim() === "" ? null : Number(x.value))));
  }
  const reason = $("settle-dispute-reason")?.value ?? "";
  for (const b of document.querySelectorAll("#settle-dispute-form button")) b.disabled = true;
  const gen = auth.generation;
  try {
    const d = await api("/disputes", {
      method: "POST", json: { settlement_id: current.live.settlement_id, line_id: f.line.line_id, reason, evidence: { meter } },
    });
    if (gen !== auth.generation) return;
    disputeLine = null;
    disputeForm = null;
    actionResult = { ok: true, message: t("settle.action.dispute_done", { id: d.dispute_id, state: t(`settle.dispute.state.${d.state}`) }) };
    navigate("settlement", ["disputes", d.dispute_id], { year: current.year });
  } catch (err) {
    if (gen !== auth.generation) return;
    actionResult = failed(err);
    for (const b of document.querySelectorAll("#settle-dispute-form button")) b.disabled = false;
    const box = $("settle-result");
    if (box) box.replaceWith(resultBox());
  }
}

// ---------------------------------------------------------------- ledger

function entryKind(ref) {
  if (/^rev\d+$/.test(ref)) return "posting";
  if (ref === "payment") return "payment";
  if (String(ref).startsWith("balance")) return "balance";
  return "adjustment";
}

function entryKindBadge(ref) {
  const k = entryKind(ref);
  return h("span", { class: "pill pill-ledger", dataset: { kind: k }, text: t(`settle.ledger.kind.${k}`) });
}

function renderLedger() {
  const items = current.data.items;
  const count = (k) => items.filter((e) => entryKind(e.ref) === k).length;
  const out = [h("div", { class: "stats stats-compact", id: "settle-ledger-stats" },
    stat("settle-ledger-n", "settle.ledger.entries", items.length, fmtInt(items.length)),
    stat("settle-ledger-postings", "settle.ledger.postings", count("posting"), fmtInt(count("posting"))),
    stat("settle-ledger-payments", "settle.ledger.payments", count("payment") + count("balance"), fmtInt(count("payment") + count("balance"))),
    stat("settle-ledger-adjustments", "settle.ledger.adjustments", count("adjustment"), fmtInt(count("adjustment"))))];
  const panel = h("article", { class: "panel", id: "settle-ledger-panel" },
    h("h2", { text: t("settle.ledger.title", { id: current.live.settlement_id, n: fmtInt(items.length) }) }),
    h("p", { class: "muted", text: t("settle.ledger.note") }));
  if (!items.length) panel.append(h("p", { class: "notice", text: t("settle.ledger.none") }));
  panel.append(table([
    { key: "entry", label: "settle.col.entry", num: true, render: (e) => String(e.entry_id) },
    { key: "at", label: "settle.col.at", render: (e) => fmtTime(e.created_at) },
    { key: "party_kind", label: "settle.col.party_kind", render: (e) => e.party_kind },
    { key: "party", label: "settle.col.party", render: (e) => h("span", { class: "mono", text: e.party_id }) },
    { key: "operator", label: "settle.col.operator", render: (e) => e.operator_id },
    { key: "account", label: "settle.col.account", render: (e) => e.account },
    { key: "amount", label: "settle.col.amount", num: true, render: (e) => money(e.amount) },
    { key: "kind", label: "settle.col.entry_kind", render: (e) => entryKindBadge(e.ref) },
    { key: "ref", label: "settle.col.ref", render: (e) => h("span", { class: "mono", text: e.ref }) },
    { key: "memo", label: "settle.col.memo", cls: "wrap", render: (e) => e.memo },
    { key: "by", label: "settle.col.by", render: (e) => e.created_by },
  ], items, { id: "settle-ledger", rowProps: (e) => ({ class: `ledger-${entryKind(e.ref)}`, dataset: { id: e.entry_id, ref: e.ref, kind: entryKind(e.ref), party: e.party_id, account: e.account, amount: e.amount } }) }));
  out.push(panel);
  return out;
}

// ---------------------------------------------------------------- disputes

function disputeBadge(state) {
  return stateBadge(state, "settle.dispute.state");
}

function renderDisputes() {
  const items = current.data.items;
  const out = [];
  out.push(h("article", { class: "panel", id: "settle-disputes-panel" },
    h("h2", { text: t("settle.disputes.title", { id: current.live.settlement_id, n: fmtInt(items.length) }) }),
    table([
      { key: "id", label: "settle.col.dispute", render: (d) => h("a", { class: "mono", href: href("disputes", {}, [d.dispute_id]), text: d.dispute_id }) },
      { key: "state", label: "settle.col.state", render: (d) => disputeBadge(d.state) },
      { key: "operator", label: "settle.col.operator", render: (d) => d.operator_id },
      { key: "line", label: "settle.col.line", render: (d) => h("span", { class: "mono small", text: d.line_id }) },
      { key: "event", label: "settle.col.event", render: (d) => h("span", { class: "mono small", text: d.event_id }) },
      { key: "reason", label: "settle.col.reason", cls: "wrap", render: (d) => d.reason },
      { key: "raised", label: "settle.col.raised", render: (d) => fmtTime(d.created_at) },
      { key: "decided", label: "settle.col.decided", render: (d) => (d.decided_at ? fmtTime(d.decided_at) : "–") },
    ], items, { id: "settle-disputes", empty: "settle.disputes.none", rowProps: (d) => ({ dataset: { id: d.dispute_id, state: d.state } }) })));
  return out;
}

function renderDispute() {
  const d = current.data.dispute;
  const out = [h("a", { class: "back", href: href("disputes"), text: t("settle.dispute.back") }),
    h("div", { class: "node-head", id: "settle-dispute", dataset: { id: d.dispute_id, state: d.state } },
      h("div", {},
        h("h2", { class: "node-title", text: t("settle.dispute.detail", { id: d.dispute_id }) }),
        h("div", { class: "muted", text: t("settle.dispute.meta", { op: d.operator_id, line: d.line_id, event: d.event_id, by: d.created_by, at: fmtTime(d.created_at) }) }),
        h("p", { class: "dispute-reason", text: d.reason })),
      h("div", { class: "detail-badges" }, disputeBadge(d.state)))];
  // stored evidence: {resource: {"YYYY-MM-DD": {slot: kW}}}, one row per corrected reading
  const readings = Object.entries(d.evidence?.meter || {}).flatMap(([rid, days]) =>
    Object.entries(days).flatMap(([day, slots]) =>
      Object.entries(slots).map(([slot, kw]) => ({ rid, day, slot: Number(slot), kw })).sort((a, b) => a.slot - b.slot)));
  out.push(h("article", { class: "panel", id: "settle-dispute-evidence" }, tl("h2", "settle.dispute.evidence"),
    h("div", { class: "table-wrap" }, table(
      [{ key: "resource", label: "settle.dispute.resource", render: (r) => h("span", { class: "mono", text: r.rid }) },
        { key: "day", label: "settle.dispute.day", render: (r) => r.day },
        { key: "slot", label: "settle.dispute.slot", render: (r) => slotLabel(r.slot) },
        { key: "kw", label: "settle.dispute.corrected", num: true, render: (r) => fmt(r.kw, 3) }],
      readings, { rowProps: (r) => ({ dataset: { id: r.rid, day: r.day, slot: r.slot } }) }))));
  const center = ["city_admin", "dispatcher"].includes(role());
  if (center || can("sign_settlements")) out.push(disputeActions(d, center));
  const diff = d.difference;
  const panel = h("article", { class: "panel", id: "settle-dispute-difference" }, tl("h2", "settle.dispute.difference"));
  if (!diff) {
    panel.append(h("p", { class: "muted", text: t("settle.dispute.not_yet") }));
  } else {
    const delta = diff.credited_after - diff.credited_before;
    panel.append(h("p", { class: "dispute-credited", dataset: { before: diff.credited_before, after: diff.credited_after } },
      t("settle.dispute.credited", { unit: diff.unit_id, before: fmt(diff.credited_before, 3), after: fmt(diff.credited_after, 3), delta: `${delta >= 0 ? "+" : ""}${fmt(delta, 3)}` })));
    panel.append(h("div", { class: "split split-even" },
      h("div", { class: "table-wrap" }, table([
        { key: "slot", label: "settle.col.slot", render: (s) => slotLabel(s.slot) },
        { key: "rb", label: "settle.col.response_before", num: true, render: (s) => fmt(s.response_before, 1) },
        { key: "ra", label: "settle.col.response_after", num: true, render: (s) => fmt(s.response_after, 1) },
        { key: "qb", label: "settle.col.ratio_before", num: true, render: (s) => fmt(s.ratio_before, 3) },
        { key: "qa", label: "settle.col.ratio_after", num: true, render: (s) => fmt(s.ratio_after, 3) },
        { key: "cb", label: "settle.col.credited_before", num: true, render: (s) => fmt(s.credited_before, 3) },
        { key: "ca", label: "settle.col.credited_after", num: true, render: (s) => fmt(s.credited_after, 3) },
      ], diff.slots, { id: "settle-dispute-slots", rowProps: (s) => ({ dataset: { slot: s.slot } }) })),
      h("div", { id: "chart-settle-dispute", class: "chart chart-small" })));
    panel.append(tl("h3", "settle.dispute.parties"));
    panel.append(diff.parties.length ? table([
      { key: "kind", label: "settle.col.party_kind", render: (p) => p.party_kind },
      { key: "party", label: "settle.col.party", render: (p) => h("span", { class: "mono", text: p.party_id }) },
      { key: "operator", label: "settle.col.operator", render: (p) => p.operator_id },
      { key: "item", label: "settle.col.item", render: (p) => p.item },
      { key: "before", label: "settle.col.before", num: true, render: (p) => money(p.before) },
      { key: "after", label: "settle.col.after", num: true, render: (p) => money(p.after) },
      { key: "difference", label: "settle.col.difference", num: true, render: (p) => money(p.difference) },
    ], diff.parties, { id: "settle-dispute-parties", rowProps: (p) => ({ dataset: { party: p.party_id, kind: p.party_kind, difference: p.difference } }) })
      : h("p", { class: "muted", text: t("settle.dispute.no_party_change") }));
  }
  out.push(panel);
  if (d.decision) {
    out.push(h("p", { class: "notice", id: "settle-dispute-decision", text: t("settle.dispute.decision", { decision: d.decision, by: d.decided_by, at: fmtTime(d.decided_at) }) }));
  }
  return out;
}

function disputeActions(d, center) {
  const panel = h("article", { class: "panel panel-actions", id: "settle-dispute-actions" }, tl("h2", "settle.actions"));
  const buttons = [];
  if (d.state === "open" && center) {
    buttons.push(h("button", { type: "button", class: "btn btn-primary", dataset: { action: "reevaluate" }, text: t("settle.action.reevaluate"), onclick: () => reevaluate(d) }));
  }
  if (d.state === "reevaluated" && can("sign_settlements")) {
    panel.append(h("label", { class: "field field-wide" }, h("span", { text: t("settle.actions.reason") }),
      h("textarea", { id: "settle-decision-reason", rows: "2" })));
    buttons.push(
      h("button", { type: "button", class: "btn btn-primary", dataset: { action: "approve" }, text: t("settle.action.approve_dispute"), onclick: () => decide(d, true) }),
      h("button", { type: "button", class: "btn btn-danger", dataset: { action: "reject" }, text: t("settle.action.reject_dispute"), onclick: () => decide(d, false) }));
  }
  if (buttons.length) panel.append(h("div", { class: "actions" }, buttons));
  else panel.append(h("p", { class: "muted", text: t("settle.actions.none") }));
  panel.append(resultBox());
  return panel;
}

function reevaluate(d) {
  return runAction(async () => {
    const out = await api(`/disputes/${enc(d.dispute_id)}/reevaluate`, { method: "POST" });
    return { ok: true, message: t("settle.action.dispute_done", { id: out.dispute_id, state: t(`settle.dispute.state.${out.state}`) }) };
  });
}

function decide(d, approve) {
  const reason = $("settle-decision-reason")?.value ?? "";
  return runAction(async () => {
    const out = await api(`/disputes/${enc(d.dispute_id)}/decision`, { method: "POST", json: { approve, reason } });
    const r = out.resettle;
    return {
      ok: true,
      message: [t("settle.action.dispute_done", { id: out.dispute_id, state: t(`settle.dispute.state.${out.state}`) }),
        r ? t("settle.action.ledger_appended", { n: fmtInt(r.ledger_entries), rev: r.revision }) : ""].filter(Boolean).join(" "),
      details: r ? r.differences.map((x) => `${x.party_kind} ${x.party_id} (${x.operator_id}) ${x.account}: ${x.amount}`) : [],
    };
  });
}

function drawDisputeChart() {
  const diff = current.data.dispute.difference;
  chart("chart-settle-dispute").setOption({
    ...baseOption(!diff.slots.length, t("chart.empty")),
    grid: { left: 8, right: 16, top: 36, bottom: 24, containLabel: true },
    tooltip: { ...baseOption(false).tooltip, trigger: "axis" },
    xAxis: { type: "category", data: diff.slots.map((s) => slotLabel(s.slot)), ...axisStyle() },
    yAxis: { type: "value", ...axisStyle() },
    series: [
      { name: t("settle.chart.before"), type: "bar", data: diff.slots.map((s) => s.credited_before), itemStyle: { color: COLORS.muted } },
      { name: t("settle.chart.after"), type: "bar", data: diff.slots.map((s) => s.credited_after), itemStyle: { color: COLORS.connected } },
    ],
  }, { notMerge: true });
}

// ---------------------------------------------------------------- carbon

function renderCarbon() {
  const rep = current.data;
  const year = rep.by_year.find((y) => y.year === current.year) || { curtailed_kwh: 0, southern_grid_tco2: 0, national_tco2: 0 };
  const f = rep.factors;
  return [
    h("div", { class: "stats", id: "settle-carbon-stats" },
      stat("settle-carbon-kwh", "settle.carbon.curtailed", year.curtailed_kwh, fmt(year.curtailed_kwh, 1), t("unit.kwh")),
      stat("settle-carbon-southern", "settle.carbon.southern", year.southern_grid_tco2, fmt(year.southern_grid_tco2, 3), t("settle.unit.t")),
      stat("settle-carbon-national", "settle.carbon.national", year.national_tco2, fmt(year.national_tco2, 3), t("settle.unit.t"))),
    h("p", { class: "muted", id: "settle-carbon-factors", text: t("settle.carbon.factors", { s: f.southern_grid_t_per_mwh, n: f.national_t_per_mwh, source: f.source ?? "–", ruleset: f.ruleset }) }),
    h("div", { class: "split" },
      h("article", { class: "panel", id: "settle-carbon-operators" }, tl("h2", "settle.carbon.by_operator"),
        table([
          { key: "operator", label: "settle.col.operator", render: (r) => r.operator_id },
          { key: "curtailed", label: "settle.col.curtailed_kwh", num: true, render: (r) => fmt(r.curtailed_kwh, 1) },
          { key: "southern", label: "settle.col.southern_t", num: true, render: (r) => fmt(r.southern_grid_tco2, 4) },
          { key: "national", label: "settle.col.national_t", num: true, render: (r) => fmt(r.national_tco2, 4) },
        ], rep.by_operator, { id: "settle-carbon-by-operator", rowProps: (r) => ({ dataset: { id: r.operator_id, tco2: r.southern_grid_tco2 } }) })),
      h("article", { class: "panel" }, h("div", { id: "chart-settle-carbon", class: "chart chart-small" }))),
    h("article", { class: "panel", id: "settle-carbon-events" },
      h("div", { class: "panel-head" }, h("h2", { text: t("settle.carbon.by_event", { n: fmtInt(rep.rows.length) }) }),
        h("button", { type: "button", class: "btn btn-ghost btn-small", dataset: { file: "carbon-csv" }, text: t("settle.carbon.csv"), onclick: () => downloadFile(`/reports/carbon${query({ year: current.year, format: "csv" })}`, `carbon-${current.year}.csv`) })),
      table([
        { key: "day", label: "settle.col.day", render: (r) => r.day },
        { key: "event", label: "settle.col.event", render: (r) => h("span", { class: "mono small", text: r.event_id }) },
        { key: "product", label: "settle.col.product", render: (r) => r.product },
        { key: "operator", label: "settle.col.operator", render: (r) => r.operator_id },
        { key: "credited", label: "settle.col.credited_kwh", num: true, render: (r) => fmt(r.credited_kwh, 1) },
        { key: "curtailed", label: "settle.col.curtailed_kwh", num: true, render: (r) => fmt(r.curtailed_kwh, 1) },
        { key: "southern", label: "settle.col.southern_t", num: true, render: (r) => fmt(r.southern_grid_tco2, 4) },
        { key: "national", label: "settle.col.national_t", num: true, render: (r) => fmt(r.national_tco2, 4) },
      ], rep.rows, { id: "settle-carbon-rows", rowProps: (r) => ({ dataset: { event: r.event_id, operator: r.operator_id } }) })),
  ];
}

function drawCarbonChart() {
  const rows = current.data.by_operator;
  chart("chart-settle-carbon").setOption({
    ...baseOption(!rows.length, t("chart.empty")),
    grid: { left: 8, right: 24, top: 36, bottom: 24, containLabel: true },
    tooltip: {
      ...baseOption(false).tooltip, trigger: "axis", axisPointer: { type: "shadow" },
      formatter: (params) => tooltipLines(rows[params[0].dataIndex].operator_id,
        params.map((p) => [p.marker, p.seriesName, `${fmt(p.value, 4)} tCO2`])),
    },
    xAxis: { type: "category", data: rows.map((r) => r.operator_id), ...axisStyle() },
    yAxis: { type: "value", name: "tCO2", ...axisStyle() },
    series: [
      { name: t("settle.carbon.southern"), type: "bar", data: rows.map((r) => r.southern_grid_tco2), itemStyle: { color: COLORS.connected } },
      { name: t("settle.carbon.national"), type: "bar", data: rows.map((r) => r.national_tco2), itemStyle: { color: COLORS.adjustable } },
    ],
  }, { notMerge: true });
}

// ---------------------------------------------------------------- page

function enter(route) {
  applyI18n(view());
  const same = current && current.part === (route.parts[0] || "overview") && current.route.parts.join("/") === route.parts.join("/");
  if (!same) {
    disputeLine = null;
    disputeForm = null;
    if (!(route.parts[0] === "disputes" && actionResult?.ok)) actionResult = null;
  }
  load(route);
}

export default {
  id: "settlement",
  title: "settle.title",
  enter,
  leave() {
    token += 1;
  },
  reset() {
    token += 1;
    current = null;
    actionResult = null;
    disputeLine = null;
    disputeForm = null;
    body().replaceChildren();
    setState("");
  },
  relabel() {
    applyI18n(view());
    if (view().dataset.state === "ready" && current) render();
  },
  refresh() {
    actionResult = null;
    load(parseHash());
  },
};
