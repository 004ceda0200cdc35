// Charts: each element with data-chart names a <script type="application/json"> holding its data.
(function () {
  function draw(el) {
    var spec = JSON.parse(document.getElementById(el.dataset.chart).textContent);
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
  });
})();
