// Evaluation charts: cumulative response rate per cell (lines) and uplift with its 95% interval
// per group (a bar with an error bar). Each [data-insights-chart] names a JSON <script> with:
//   {"kind": "cumulative", "days": [...], "series": [{"name", "data": [rate...]}]}
//   {"kind": "uplift", "categories": [...], "uplift": [pts...], "low": [pts...], "high": [pts...]}
(function () {
  "use strict";

  function pct(v) { return (v * 100).toFixed(2) + "%"; }

  function cumulative(spec) {
    return {
      tooltip: { trigger: "axis", valueFormatter: pct },
      legend: { top: 0 },
      grid: { left: 60, right: 40, bottom: 40, top: 40 },
      xAxis: { type: "category", data: spec.days, boundaryGap: false },
      yAxis: { type: "value", axisLabel: { formatter: pct } },
      color: ["#2563eb", "#9ca3af"],
      series: spec.series.map(function (s) {
        return { name: s.name, type: "line", showSymbol: spec.days.length < 40, data: s.data };
      })
    };
  }

  function errorBar(params, api) {
    var x = api.value(0);
    var high = api.coord([x, api.value(2)]);
    var low = api.coord([x, api.value(1)]);
    var half = api.size([1, 0])[0] * 0.12;
    var style = api.style({ stroke: "#111", fill: null, lineWidth: 1.5 });
    return {
      type: "group",
      children: [
        { type: "line", shape: { x1: high[0] - half, y1: high[1], x2: high[0] + half, y2: high[1] }, style: style },
        { type: "line", shape: { x1: high[0], y1: high[1], x2: low[0], y2: low[1] }, style: style },
        { type: "line", shape: { x1: low[0] - half, y1: low[1], x2: low[0] + half, y2: low[1] }, style: style }
      ]
    };
  }

  function uplift(spec) {
    var intervals = spec.categories.map(function (_, i) {
      return [i, spec.low[i], spec.high[i]];
    }).filter(function (d) { return d[1] !== null && d[2] !== null; });
    return {
      tooltip: { trigger: "axis", formatter: function (items) {
        var i = items[0].dataIndex;
        var fmt = function (v) { return v === null ? "—" : (v >= 0 ? "+" : "") + v.toFixed(2); };
        return spec.categories[i] + "<br>" + spec.label + " " + fmt(spec.uplift[i]) +
          " [" + fmt(spec.low[i]) + ", " + fmt(spec.high[i]) + "]";
      } },
      grid: { left: 60, right: 20, bottom: 40, top: 30 },
      xAxis: { type: "category", data: spec.categories },
      yAxis: { type: "value", name: spec.unit },
      series: [
        { name: spec.label, type: "bar", barMaxWidth: 48, data: spec.uplift.map(function (v, i) {
          return { value: v, itemStyle: { color: spec.significant[i] ? "#2563eb" : "#cbd5e1" } };
        }) },
        { name: "95%", type: "custom", renderItem: errorBar, data: intervals, z: 10,
          encode: { x: 0, y: [1, 2] } }
      ]
    };
  }

  function draw(el) {
    var spec = JSON.parse(document.getElementById(el.dataset.insightsChart).textContent);
    var chart = echarts.init(el);
    chart.setOption(spec.kind === "uplift" ? uplift(spec) : cumulative(spec));
    el.dataset.rendered = "1";
    window.addEventListener("resize", function () { chart.resize(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var found = document.querySelectorAll("[data-insights-chart]");
    if (found.length) { window.withCharts(function () { found.forEach(draw); }); }
  });
})();
