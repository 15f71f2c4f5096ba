/* Draws every <div class="timeline" data-figure="x.json"> of a page with Plotly: hover
   values, zoom, the load window and pool cap as the figure file says. Plotly (plotly.min.js,
   beside this file, once per site) is loaded only on pages that have a timeline; until it
   is drawn, and wherever scripts do not run (GitHub, a feed), the static SVG inside stays. */
(function () {
  var here = document.currentScript ? document.currentScript.src : "";
  var plotlyUrl = here.replace(/[^/]*$/, "plotly.min.js");
  var loading = null;

  function plotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!loading) {
      loading = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = plotlyUrl;
        script.onload = function () { resolve(window.Plotly); };
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return loading;
  }

  function draw() {
    var boxes = document.querySelectorAll("div.timeline[data-figure]:not([data-drawn])");
    if (!boxes.length) return;
    plotly().then(function (Plotly) {
      boxes.forEach(function (box) {
        box.setAttribute("data-drawn", "pending");
        fetch(box.getAttribute("data-figure"))
          .then(function (answer) { return answer.json(); })
          .then(function (figure) {
            var chart = document.createElement("div");
            chart.className = "timeline-chart";
            box.appendChild(chart);
            return Plotly.newPlot(chart, figure.data, figure.layout, {
              displaylogo: false, responsive: true,
              modeBarButtonsToRemove: ["select2d", "lasso2d"]
            }).then(function () {
              var fallback = box.querySelector("img");
              if (fallback) fallback.remove();
              box.setAttribute("data-drawn", "yes");
            });
          })
          .catch(function () { box.setAttribute("data-drawn", "failed"); });
      });
    });
  }

  if (window.document$ && window.document$.subscribe) window.document$.subscribe(draw);
  else if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
