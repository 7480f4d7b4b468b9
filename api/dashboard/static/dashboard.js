// Hotline dashboard: confirmations, "go back" links, and the live calls page (server-sent events).
// No framework; every value from the server is put in the page as text (never as HTML).
"use strict";

(function () {
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-back]");
    if (link && window.history.length > 1) { event.preventDefault(); window.history.back(); }
  });

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function badge(status) {
    return el("span", {"class": "status s-" + String(status).toLowerCase()}, [String(status)]);
  }

  function parse(iso) { return iso ? Date.parse(iso.endsWith("Z") ? iso : iso + "Z") : NaN; }

  function formatSeconds(total) {
    if (!(total >= 0)) return "";
    total = Math.floor(total);
    if (total < 60) return total + " s";
    var s = total % 60;
    return Math.floor(total / 60) + " min " + (s < 10 ? "0" : "") + s + " s";
  }

  function tick() {
    document.querySelectorAll(".duration[data-started]").forEach(function (node) {
      var started = parse(node.getAttribute("data-started"));
      if (isNaN(started)) return;
      var ended = parse(node.getAttribute("data-ended"));
      node.textContent = formatSeconds(((isNaN(ended) ? Date.now() : ended) - started) / 1000);
    });
  }

  function renderCall(call, href) {
    var legs = el("ul", {"class": "legs"}, call.legs.map(function (leg) {
      return el("li", {"data-status": leg.status}, [
        "Rule " + leg.rule + " rings ", el("strong", {}, [leg.user || "?"]), " ",
        el("span", {"class": "muted"}, [leg.number || ""]), " ", badge(leg.status)]);
    }));
    return el("article", {"class": "call", "data-call-id": call.id, "data-status": call.status}, [
      el("header", {}, [
        el("a", {"class": "caller", "href": href + encodeURIComponent(call.id)}, [call.caller || "Unknown caller"]),
        " ", el("span", {"class": "policy"}, [call.policy || ""]), " ", badge(call.status), " ",
        el("span", {"class": "duration", "data-started": call.startedAt || "", "data-ended": call.endedAt || ""}, [""])
      ]),
      call.answeredBy ? el("p", {"class": "answered"}, ["Answered by ", el("strong", {}, [call.answeredBy])]) : null,
      call.message ? el("p", {"class": "muted"}, [call.message]) : null,
      legs
    ]);
  }

  function startLive(box) {
    var state = document.getElementById("live-state");
    var open = document.getElementById("live-open");
    var href = box.getAttribute("data-calls-href");
    var source = new EventSource(box.getAttribute("data-stream"));
    function setState(name, text) { state.setAttribute("data-state", name); state.textContent = text; }
    source.onopen = function () { setState("live", "(live)"); };
    source.onerror = function () { setState("lost", "(reconnecting…)"); };
    source.onmessage = function (event) {
      var snapshot = JSON.parse(event.data);
      var nodes = snapshot.calls.map(function (call) { return renderCall(call, href); });
      if (!nodes.length) nodes = [el("p", {"class": "empty"}, ["No calls right now."])];
      box.replaceChildren.apply(box, nodes);
      open.textContent = String(snapshot.open);
      box.setAttribute("data-updated", String(Date.now()));
      setState("live", "(live)");
      tick();
    };
    source.addEventListener("signed-out", function () {
      source.close();
      window.location.assign("/dashboard/sign-in");
    });
    source.addEventListener("failed", function (event) {
      source.close();
      setState("lost", "(" + JSON.parse(event.data).error + ")");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("live");
    if (box && window.EventSource) startLive(box);
    tick();
    window.setInterval(tick, 1000);
  });
})();
