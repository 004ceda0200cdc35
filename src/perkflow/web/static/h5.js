// H5 behaviour, served from 'self' (the Content-Security-Policy refuses inline handlers).
(function () {
  "use strict";

  // A copy button copies the text of the element it names and says so.
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("[data-copy-from]") : null;
    if (!b) { return; }
    var source = document.getElementById(b.dataset.copyFrom);
    if (!source) { return; }
    var text = source.textContent.trim();
    var done = function () { if (b.dataset.copied) { b.textContent = b.dataset.copied; } };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, done);
    } else {
      done();
    }
  });
})();
