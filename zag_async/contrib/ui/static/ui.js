// zag-async operations UI: confirm actions, and update a flow's states without reload.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form.confirm").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm || "Are you sure?")) event.preventDefault();
    });
  });
  var flow = document.querySelector("dl.flow[data-poll]");
  if (!flow) return;
  var url = flow.dataset.poll;
  function badge(state) {
    var span = document.createElement("span");
    span.className = "state state-" + state.toLowerCase();
    span.textContent = state;
    return span;
  }
  function apply(data) {
    var cell = document.getElementById("flow-state");
    if (cell && cell.textContent !== data.state) cell.replaceChildren(badge(data.state));
    var known = 0;
    document.querySelectorAll("tr[data-atom]").forEach(function (row) {
      var atom = data.atoms[row.dataset.atom];
      if (!atom) return;
      known += 1;
      var stateCell = row.querySelector(".atom-state");
      if (stateCell.textContent !== atom.state) stateCell.replaceChildren(badge(atom.state));
      row.querySelector(".attempts").textContent = String(atom.attempts);
      row.querySelector(".took").textContent = atom.took;
      var pre = row.querySelector(".outcome pre");
      if (pre && pre.textContent !== atom.outcome) {
        pre.textContent = atom.outcome;
        pre.className = atom.failed ? "failure" : "result";
      }
    });
    document.querySelectorAll("details.story[data-story]").forEach(function (story) {
      var atom = data.atoms[story.dataset.story];
      var badgeNow = story.querySelector("summary .state");
      if (atom && badgeNow && badgeNow.textContent !== atom.state) {
        badgeNow.replaceWith(badge(atom.state));
      }
    });
    return known;
  }
  var picture = document.getElementById("picture");
  if (picture) {
    var hide = function () { picture.parentNode.hidden = true; };
    picture.addEventListener("error", hide);
    if (picture.complete && picture.naturalWidth === 0) hide();  // failed before this ran
  }
  // The timeline: redrawn from JSON with createElementNS and textContent (no HTML
  // parsing of server data), when the flow moves on or while a call runs.
  var figure = document.querySelector("figure.timeline[data-poll]");
  var SVG = "http://www.w3.org/2000/svg";
  var TAGS = { rect: true, line: true, text: true };
  var timelineRunning = !!(figure && figure.querySelector(".tl-running"));
  function svgNode(item) {
    var node = document.createElementNS(SVG, item[0]);
    Object.keys(item[1]).forEach(function (name) {
      if (/^[a-z][a-z0-9-]*$/.test(name) && name.indexOf("on") !== 0 && name !== "href") {
        node.setAttribute(name, String(item[1][name]));
      }
    });
    if (item[2] !== null) node.textContent = String(item[2]);
    if (item[3] !== null) {
      var title = document.createElementNS(SVG, "title");
      title.textContent = String(item[3]);
      node.appendChild(title);
    }
    return node;
  }
  function drawTimeline(data) {
    var svg = document.getElementById("timeline");
    if (!svg || !data) return;
    var nodes = data.items.filter(function (item) { return TAGS[item[0]] === true; }).map(svgNode);
    svg.replaceChildren.apply(svg, nodes);
    svg.setAttribute("width", String(data.width));
    svg.setAttribute("height", String(data.height));
    svg.setAttribute("viewBox", "0 0 " + data.width + " " + data.height);
    svg.setAttribute("aria-label", String(data.label));
    var label = document.getElementById("timeline-label");
    if (label) label.textContent = String(data.label);
    var body = document.getElementById("timeline-rows");
    if (body) {
      body.replaceChildren.apply(body, data.rows.map(function (row) {
        var tr = document.createElement("tr");
        row.forEach(function (cell) {
          var td = document.createElement("td");
          td.textContent = String(cell);
          tr.appendChild(td);
        });
        return tr;
      }));
    }
    timelineRunning = !!data.running;
  }
  function refreshTimeline() {
    fetch(figure.dataset.poll, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(drawTimeline)
      .catch(function () {});
  }
  var version = null;
  // A flow that has ended changes no more: polling stops once its end is shown.
  var ENDED = ["SUCCESS", "FAILURE", "REVERTED", "UNCOMPENSATED", "STUCK_PAST_PIVOT"];
  var ended = false;
  var stateCell = document.getElementById("flow-state");
  var shownState = stateCell ? stateCell.textContent : null;  // what the forms were made for
  var STOPPED = ["SUSPENDED", "WAITING"];
  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data) {
          if (version !== null && data.version !== version &&
              Object.keys(data.atoms).length !== document.querySelectorAll("tr[data-atom]").length) {
            window.location.reload();  // atoms were added: redraw the table
            return;
          }
          if (picture && version !== null && data.version !== version) {
            picture.src = picture.src.replace(/\?v=.*$/, "?v=" + data.version);
          }
          if (figure && (timelineRunning || version !== null && data.version !== version)) {
            refreshTimeline();
          }
          var forms = document.querySelector("section.actions");
          var typing = document.activeElement && /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
          if (forms && shownState !== null && data.state !== shownState &&
              STOPPED.indexOf(data.state) >= 0 && !typing) {
            window.location.reload();  // stopped: its forms (resume, signal) change
            return;
          }
          shownState = data.state;
          version = data.version;
          apply(data);
          ended = ENDED.indexOf(data.state) >= 0 && !timelineRunning;
          if (ENDED.indexOf(data.state) >= 0) {
            // nothing can be done to an ended flow: its action forms go
            document.querySelectorAll("section.actions").forEach(function (s) { s.hidden = true; });
          }
        }
      })
      .catch(function () {})
      .finally(function () { if (!ended) window.setTimeout(poll, 1000); });
  }
  poll();
});
