// The counter page: shows what the writer node sends. Every text the clerk reads comes from the
// node's API or from the page's HTML; this script only places it.
"use strict";

function byId(id) {
  return document.getElementById(id);
}

function put(element, value) {
  element.textContent = value == null ? "" : String(value);
}

function cell(row, zh, en, className) {
  const td = row.insertCell();
  put(td, zh);
  if (en) {
    const span = document.createElement("span");
    span.className = "en";
    put(span, " " + en);
    td.appendChild(span);
  }
  if (className) {
    td.className = className;
  }
  return td;
}

function showState(state) {
  const box = byId("state");
  box.dataset.kind = state.state;
  box.dataset.code = state.code || "";
  put(byId("state-zh"), state.zh);
  put(byId("state-en"), state.en);
  byId("read-card").disabled = state.busy;
}

function showReaders(view) {
  const error = byId("readers-error");
  error.hidden = !view.error;
  put(byId("readers-error-zh"), view.error ? view.error.zh : "");
  put(byId("readers-error-en"), view.error ? view.error.en : "");
  const body = byId("readers").tBodies[0];
  body.replaceChildren();
  for (const reader of view.readers) {
    const row = body.insertRow();
    row.dataset.cardPresent = reader.card_present;
    cell(row, reader.name);
    cell(row, reader.zh, reader.en);
    cell(row, reader.configured ? "✔" : "");
  }
}

async function loadWrites() {
  const answer = await fetch("api/v1/writes/today", { cache: "no-store" });
  if (!answer.ok) {
    return;
  }
  const today = await answer.json();
  const body = byId("writes").tBodies[0];
  body.replaceChildren();
  for (const write of today.writes) {
    const row = body.insertRow();
    row.dataset.outcome = write.outcome;
    cell(row, write.time);
    cell(row, write.iccid);
    cell(row, write.msisdn);
    cell(row, write.zh, write.en, "outcome-" + write.outcome);
  }
}

async function readCard() {
  put(byId("read-zh"), "");
  put(byId("read-en"), "");
  put(byId("read-iccid"), "");
  const answer = await fetch("api/v1/read-card", { method: "POST" });
  const read = await answer.json();
  put(byId("read-zh"), read.zh);
  put(byId("read-en"), read.en);
  put(byId("read-iccid"), read.iccid);
}

function follow() {
  const events = new EventSource("api/v1/events");
  events.addEventListener("open", () => {
    byId("lost").hidden = true;
    loadWrites();
  });
  events.addEventListener("error", () => {
    byId("lost").hidden = false;
  });
  events.addEventListener("state", (event) => {
    const state = JSON.parse(event.data);
    showState(state);
    if (state.state === "done" || state.state === "error") {
      loadWrites();
    }
  });
  events.addEventListener("readers", (event) => {
    showReaders(JSON.parse(event.data));
  });
}

byId("read-card").addEventListener("click", readCard);
follow();
