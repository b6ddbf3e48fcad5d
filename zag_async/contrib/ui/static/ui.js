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
    return known;
  }
  var picture = document.getElementById("picture");
  if (picture) {
    var hide = function () { picture.parentNode.hidden = true; };
    picture.addEventListener("error", hide);
    if (picture.complete && picture.naturalWidth === 0) hide();  // failed before this ran
  }
  var version = null;
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
          version = data.version;
          apply(data);
        }
      })
      .catch(function () {})
      .finally(function () { window.setTimeout(poll, 1000); });
  }
  poll();
});
