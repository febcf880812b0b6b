// The dashboard's one script, small and hand-written: no framework, nothing from
// another host. Every page works without it; it adds local times, the import's
// upload progress and column choices, and a delivery's live confirm progress.
"use strict";

(function () {
  // The browser's time zone, for the charts the server draws (days in this zone).
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) {
      document.cookie = "coupons_tz=" + encodeURIComponent(zone) + "; path=/ui; SameSite=Strict";
    }
  } catch (e) { /* an old browser: the server uses UTC */ }

  function localTimes() {
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var when = new Date(times[i].getAttribute("datetime"));
      if (!isNaN(when)) {
        times[i].textContent = when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
        times[i].title = times[i].getAttribute("datetime");
      }
    }
  }

  function option(select, value, text) {
    var o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    select.appendChild(o);
  }

  // Column mapping: the first line of the chosen CSV fills the column choices.
  function columns(form) {
    var file = form.querySelector("input[type=file]");
    var codeColumn = form.querySelector("[name=code_column]");
    var poolColumn = form.querySelector("[name=pool_column]");
    var header = form.querySelector("[name=header]");
    var delimiter = form.querySelector("[name=delimiter]");
    function refill() {
      var chosen = file.files && file.files[0];
      [codeColumn, poolColumn].forEach(function (select) {
        while (select.options.length > 1) { select.remove(1); }
      });
      if (!chosen || /\.xml$/i.test(chosen.name)) { return; }
      var reader = new FileReader();
      reader.onload = function () {
        var first = String(reader.result).replace(/^\ufeff/, "").split(/\r?\n/)[0] || "";
        var sep = delimiter.value === "\\t" ? "\t" : delimiter.value;
        var cells = first.split(sep);
        for (var i = 0; i < cells.length && i < 50; i++) {
          var name = cells[i].replace(/^"|"$/g, "").trim();
          var named = header.value === "true" && name;
          var label = named ? name : "column " + (i + 1) + (name ? " (" + name + ")" : "");
          option(codeColumn, named ? name : String(i + 1), label);
          option(poolColumn, named ? name : String(i + 1), label);
        }
      };
      reader.readAsText(chosen.slice(0, 65536));
    }
    file.addEventListener("change", refill);
    header.addEventListener("change", refill);
    delimiter.addEventListener("change", refill);
  }

  // The upload with a progress bar; the server answers with the set's page.
  function upload(form) {
    var bar = document.getElementById("i-progress");
    var text = document.getElementById("i-progress-text");
    form.addEventListener("submit", function (event) {
      if (!window.FormData) { return; }
      event.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", form.getAttribute("data-csrf"));
      bar.hidden = false;
      bar.value = 0;
      text.textContent = "Uploading…";
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) {
          bar.value = Math.round((100 * e.loaded) / e.total);
          text.textContent = "Uploading: " + bar.value + " %";
        }
      };
      xhr.upload.onload = function () { bar.value = 100; text.textContent = "Uploaded, importing…"; };
      xhr.onload = function () {
        var next = null;
        try { next = JSON.parse(xhr.responseText).location; } catch (e) { /* an error page */ }
        if (next) {
          var target = new URL(next, window.location.href);
          if (target.pathname + target.search === window.location.pathname + window.location.search) {
            window.location.hash = target.hash;  // the same page: load it again
            window.location.reload();
          } else {
            window.location.assign(target.href);
          }
        } else { document.open(); document.write(xhr.responseText); document.close(); }
      };
      xhr.onerror = function () { text.textContent = "The upload failed: check the connection and try again."; };
      xhr.send(new FormData(form));
    });
  }

  // A delivery being confirmed: its progress, until it is no longer sending.
  function follow(bar) {
    var url = bar.getAttribute("data-progress-url");
    var text = document.getElementById("d-progress-text");
    var status = document.getElementById("d-status");
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (d) {
          if (d.messages) { bar.max = d.messages; }
          bar.value = d.processed;
          text.textContent = d.processed.toLocaleString() + " of " + (d.messages || bar.max).toLocaleString() + " targets handled";
          status.textContent = d.status;
          if (d.status === "sending") { setTimeout(poll, 500); } else { window.location.reload(); }
        })
        .catch(function () { setTimeout(poll, 2000); });
    }
    setTimeout(poll, 300);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    var form = document.getElementById("import-form");
    if (form) { columns(form); upload(form); }
    var bar = document.querySelector("progress[data-progress-url]");
    if (bar) { follow(bar); }
  });
})();
