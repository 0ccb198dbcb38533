/* securex — live progress of a signing batch (registry/job.html).
 *
 * Progressive enhancement: without this script, the page of a running batch offers a
 * link that reloads it; it never refreshes itself on a timer (a timed refresh moves
 * people and screen readers back to the top of the page: WCAG 2.2.1). With it, while
 * #lot-suite is marked data-running, the page fetches itself every 2 seconds and
 * copies the fresh figures into the status line #lot-etat (role=status: read out
 * politely, the focus stays where it is) and the fresh #lot-suite in place of the old.
 */
(function () {
  "use strict";

  var DELAY_MS = 2000;

  function poll(url) {
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var status = document.getElementById("lot-etat");
        var rest = document.getElementById("lot-suite");
        var newStatus = fresh.getElementById("lot-etat");
        var newRest = fresh.getElementById("lot-suite");
        if (!status || !rest || !newStatus || !newRest) return;
        status.innerHTML = newStatus.innerHTML;
        rest.replaceWith(document.importNode(newRest, true));
        if (newRest.hasAttribute("data-running")) window.setTimeout(poll, DELAY_MS, url);
      })
      .catch(function () {
        window.setTimeout(poll, DELAY_MS * 5, url); // the link still reloads by hand
      });
  }

  function start() {
    var rest = document.getElementById("lot-suite");
    if (!rest || !rest.hasAttribute("data-running")) return;
    if (!window.fetch || !window.DOMParser) return;
    window.setTimeout(poll, DELAY_MS, window.location.href);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
