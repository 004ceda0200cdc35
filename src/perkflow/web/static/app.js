// Charts: each element with data-chart names a <script type="application/json"> holding its data;
// one with data-chart-url fetches the same kind of spec as JSON from that (same-origin) address.
// ECharts (1 MB) is fetched only by a page that has a chart, once: withCharts(fn) runs fn when it is there.
(function () {
  var loading = null;
  window.withCharts = function (fn) {
    if (typeof echarts !== "undefined") { fn(); return; }
    if (!loading) {
      loading = new Promise(function (resolve, reject) {
        var s = document.createElement("script");
        s.src = "/static/vendor/echarts.min.js";
        s.onload = resolve;
        s.onerror = reject;
        document.head.appendChild(s);
      });
    }
    loading.then(fn);
  };
})();
(function () {
  function draw(el) {
    var spec = JSON.parse(document.getElementById(el.dataset.chart).textContent);
    window.withCharts(function () { render(el, spec); });
  }
  function fetchAndDraw(el) {
    fetch(el.dataset.chartUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (spec) {
        if (!spec.categories || spec.categories.length === 0) { throw new Error("empty"); }
        window.withCharts(function () { render(el, spec); });
      })
      .catch(function () {
        el.classList.add("empty");
        el.textContent = el.dataset.empty || "—";
        el.dataset.rendered = "empty";
      });
  }
  function render(el, spec) {
    var chart = echarts.init(el);
    var option;
    if (spec.kind === "pie") {
      option = { tooltip: { trigger: "item" }, legend: { bottom: 0 },
        series: [{ type: "pie", radius: ["40%", "70%"], data: spec.data }] };
    } else {
      option = { tooltip: { trigger: "axis" }, legend: { top: 0 },
        grid: { left: 60, right: 20, bottom: spec.rotate ? 80 : 40, top: 40 },
        xAxis: { type: "category", data: spec.categories, axisLabel: { rotate: spec.rotate || 0 } },
        yAxis: { type: "value" },
        series: spec.series.map(function (s) {
          return { name: s.name, type: "bar", stack: spec.stack ? "all" : undefined, data: s.data };
        }) };
    }
    if (spec.colors) { option.color = spec.colors; }
    if (spec.clickUrl) {
      chart.on("click", function (p) { window.location = spec.clickUrl.replace("{code}", spec.codes[p.dataIndex]); });
    }
    chart.setOption(option);
    el.dataset.rendered = "1";
    window.addEventListener("resize", function () { chart.resize(); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(draw);
    document.querySelectorAll("[data-chart-url]").forEach(fetchAndDraw);
    // Long form posts (uploads): show their [data-busy-show] parts and stop a second submit.
    document.querySelectorAll("form[data-busy]").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("[data-busy-show]").forEach(function (el) { el.hidden = false; });
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      });
    });
  });
  // No inline handlers (the Content-Security-Policy refuses them): listeners on the document
  // serve the elements htmx swaps in as well.
  document.addEventListener("click", function (e) {
    var remove = e.target.closest && e.target.closest(".rule-remove");
    if (!remove) { return; }
    // The segment builder: drop one rule, then let the form's live preview count again.
    var form = remove.closest("form");
    remove.closest(".rule").remove();
    if (form) { htmx.trigger(form, "change"); }
  });
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
    }
  });
  // Fragments swapped in by htmx (the segment builder's live preview) bring their own charts.
  document.addEventListener("htmx:load", function (e) {
    var root = e.detail && e.detail.elt;
    if (!root || !root.querySelectorAll) { return; }
    var found = root.matches && root.matches("[data-chart]") ? [root] : [];
    root.querySelectorAll("[data-chart]").forEach(function (el) { found.push(el); });
    found.forEach(function (el) { if (!el.dataset.rendered) { draw(el); } });
  });
})();
