// Follows every running job on the page: polls its JSON once a second,
// updates the fields marked data-tk-field, stops when the job has ended
// (the job page then reloads once to show the result). No inline script,
// no innerHTML: CSP-friendly and nothing from the JSON is parsed as HTML.
(function () {
  "use strict";

  function fields(root, name) {
    return root.querySelectorAll('[data-tk-field="' + name + '"]');
  }

  function setText(root, name, value) {
    fields(root, name).forEach(function (el) { el.textContent = value == null ? "" : String(value); });
  }

  function render(root, data) {
    fields(root, "bar").forEach(function (el) { el.value = data.percent; });
    setText(root, "percent", data.percent.toFixed(1));
    setText(root, "state", data.state);
    setText(root, "step", data.step);
    setText(root, "summary", data.summary);
    setText(root, "lock", data.lock);
    setText(root, "duration", data.duration == null ? "" : data.duration.toFixed(1) + " s");
    var t = data.current_table;
    setText(root, "table", t ? t.table + (t.total != null ? " " + t.processed + " of " + t.total : "") : "");
    root.setAttribute("data-tk-state", data.state);
    var log = root.querySelector("#tk-log");
    if (log && data.log) {
      while (log.firstChild) log.removeChild(log.firstChild);
      data.log.forEach(function (entry) {
        var li = document.createElement("li");
        var time = document.createElement("time");
        time.textContent = entry.at;
        li.appendChild(time);
        li.appendChild(document.createTextNode(" " + (entry.summary || entry.step)));
        log.appendChild(li);
      });
    }
  }

  function follow(root) {
    var url = root.getAttribute("data-tk-progress-url");
    function again() { window.setTimeout(tick, 1000); }
    function tick() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (!data) return; // gone or forbidden: stop
          if (data.busy) return again();
          render(root, data);
          if (!data.finished) return again();
          root.removeAttribute("data-tk-progress-url");
          if (root.hasAttribute("data-tk-reload")) window.location.reload();
        })
        .catch(again);
    }
    tick();
  }

  function start() {
    document.querySelectorAll("[data-tk-job][data-tk-progress-url]").forEach(follow);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
