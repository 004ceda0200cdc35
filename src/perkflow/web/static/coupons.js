// Coupons: flash-sale countdown, live console charts, QR scanning at the counter, copy links.
(function () {
  "use strict";

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  function countdowns() {
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var end = Date.now() + parseInt(el.dataset.countdown, 10) * 1000;
      var button = document.getElementById(el.dataset.enable);
      function tick() {
        var left = Math.max(0, Math.round((end - Date.now()) / 1000));
        var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
        el.textContent = (h ? pad(h) + ":" : "") + pad(m) + ":" + pad(s);
        if (left === 0) {
          if (button) { button.disabled = false; button.textContent = button.dataset.ready; }
          return;
        }
        setTimeout(tick, 250);
      }
      tick();
    });
  }

  function liveChart() {
    var el = document.getElementById("chart-activity");
    if (!el || !window.withCharts) { return; }
    window.withCharts(function () { drawActivity(el); });
  }

  function drawActivity(el) {
    var chart = echarts.init(el);
    function load() {
      fetch(el.dataset.url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (d) {
        chart.setOption({
          tooltip: { trigger: "axis" }, legend: { top: 0 },
          grid: { left: 50, right: 20, bottom: 30, top: 30 },
          xAxis: { type: "category", data: d.labels },
          yAxis: { type: "value" },
          series: [
            { name: el.dataset.claims, type: "line", smooth: true, data: d.claims },
            { name: el.dataset.redemptions, type: "line", smooth: true, data: d.redemptions }
          ]
        });
        el.dataset.rendered = "1";
        var fmt = function (n) { return n.toLocaleString(); };
        var set = function (id, v) { var x = document.getElementById(id); if (x) { x.textContent = fmt(v); } };
        set("stock-remaining", d.remaining); set("stock-claimed", d.claimed); set("stock-redeemed", d.redeemed);
        var shards = document.getElementById("shards");
        if (shards) {
          shards.querySelectorAll(".shard").forEach(function (s, i) { if (i < d.shards.length) { s.textContent = fmt(d.shards[i]); } });
        }
      }).catch(function () { /* keep the last picture; the next poll retries */ });
    }
    load();
    setInterval(load, 5000);
    window.addEventListener("resize", function () { chart.resize(); });
  }

  function scanner() {
    var button = document.getElementById("scan");
    if (!button) { return; }
    if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia) || typeof jsQR === "undefined") {
      button.hidden = true;  // no camera here: the clerk types the short code
      return;
    }
    button.addEventListener("click", function () {
      var box = document.getElementById("scanner");
      var video = document.getElementById("scan-video");
      var canvas = document.getElementById("scan-canvas");
      var ctx = canvas.getContext("2d", { willReadFrequently: true });
      box.hidden = false;
      navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } }).then(function (stream) {
        video.srcObject = stream;
        video.play();
        function frame() {
          if (video.readyState === video.HAVE_ENOUGH_DATA) {
            canvas.width = video.videoWidth; canvas.height = video.videoHeight;
            ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
            var img = ctx.getImageData(0, 0, canvas.width, canvas.height);
            var found = jsQR(img.data, img.width, img.height, { inversionAttempts: "dontInvert" });
            if (found && found.data) {
              stream.getTracks().forEach(function (t) { t.stop(); });
              document.getElementById(button.dataset.target).value = found.data;
              document.getElementById(button.dataset.form).submit();
              return;
            }
          }
          requestAnimationFrame(frame);
        }
        requestAnimationFrame(frame);
      }).catch(function () { box.hidden = true; button.hidden = true; });
    });
  }

  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () {
        var input = document.getElementById(b.dataset.copy);
        input.select();
        if (navigator.clipboard) { navigator.clipboard.writeText(input.value); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    countdowns(); liveChart(); scanner(); copyButtons();
  });
})();
