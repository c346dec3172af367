// The Create page and the job page, made quicker (both work without this file):
//
// The job cards' watch (app.views.polling): while the page shows running jobs and is visible,
// one long-poll request at a time names every running card and the state it shows
// (data-watch-state); the server answers when one of them changed, with that card's new HTML,
// which the page swaps in (or, without it, fetches the card: htmx trigger `atelier-changed`),
// so an image shows within a few hundred milliseconds of being stored. Card requests say `X-Atelier-Watched: 1` while the watch
// works, and the server then asks the cards only for a slow safety-net poll; when the watch
// fails or the server has no slot free, cards poll on their own schedule again.
//
// The prompt form, made quicker to iterate with (templates/jobs/_prompt_form.html works
// without this file):
//  - Ctrl+Enter (Cmd+Enter on a Mac) in the prompt sends the form, as the Generate button does
//  - after Generate, or a refused submit, the new form's prompt gets the focus back, the caret
//    at the end of the kept text, so the next try is typed at once
(function () {
  "use strict";

  function promptField() {
    var form = document.getElementById("prompt-form");
    return form ? form.querySelector("textarea[name=prompt]") : null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.altKey) return;
    var field = event.target;
    if (!field || field.name !== "prompt" || !field.form || field.form.id !== "prompt-form") return;
    event.preventDefault();
    if (typeof field.form.requestSubmit === "function") {
      field.form.requestSubmit();
    } else {
      field.form.querySelector("button[type=submit]").click();
    }
  });

  // Set when the form is sent, so only a form that replaces a sent one takes the focus (not
  // one swapped in for another reason, such as a provider's options).
  var sent = false;
  document.addEventListener("submit", function (event) {
    if (event.target && event.target.id === "prompt-form") sent = true;
  }, true);

  function refocus() {
    if (!sent) return;
    var field = promptField();
    if (!field || !field.isConnected) return;
    sent = false;
    field.focus();
    var end = field.value.length;
    field.setSelectionRange(end, end);
  }

  // The fresh form arrives out of band with the new card (201) or in place of the old one
  // (422); either way it is settled when htmx has finished the request.
  document.addEventListener("htmx:afterSettle", refocus);
  document.addEventListener("htmx:oobAfterSwap", function () {
    window.setTimeout(refocus, 0);
  });

  // --- the job cards' watch ----------------------------------------------------------------

  var MAX_CARDS = 50; // app.views.polling.MAX_WATCHED_CARDS: more cards poll on their own
  var RETRY_MS = 1000; // after a failed watch, doubling up to MAX_RETRY_MS
  var MAX_RETRY_MS = 10000;
  var watch = null; // {controller, names}: the watch in flight
  var healthy = false; // the last watch worked: its cards need only their safety-net poll
  var watched = {}; // the element ids of the cards the watch names
  var retryMs = RETRY_MS;
  var timer = null;

  function runningCards() {
    var all = document.querySelectorAll(".job-card[data-watch-url]");
    return Array.prototype.slice.call(all, 0, MAX_CARDS);
  }

  function names(cards) {
    return cards.map(function (card) {
      return card.id.replace("job-", "") + "." + (card.getAttribute("data-watch-state") || "");
    }).join(",");
  }

  function later(ms) {
    window.clearTimeout(timer);
    timer = window.setTimeout(startWatch, ms);
  }

  function startWatch() {
    var cards = runningCards();
    var wanted = names(cards);
    if (watch) {
      if (watch.names === wanted) return;
      watch.controller.abort(); // the page's cards changed: name the new set
      watch = null;
    }
    if (!cards.length || document.hidden) return;
    var current = { controller: new AbortController(), names: wanted };
    watch = current;
    watched = {};
    cards.forEach(function (card) { watched[card.id] = true; });
    var url = cards[0].getAttribute("data-watch-url") + "?cards=" + encodeURIComponent(wanted);
    fetch(url, { credentials: "same-origin", signal: current.controller.signal,
                 headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("watch answered " + response.status);
        return response.json();
      })
      .then(function (body) {
        if (watch !== current) return;
        watch = null;
        healthy = !body.retry_ms;
        retryMs = RETRY_MS;
        var changed = body.changed || [];
        // The next watch: once the changed cards are swapped in (each swap's htmx:load below
        // sets the timer to 0 again: a watch started before would name their old state and
        // return at once), else now; a card that must be fetched instead has RETRY_MS.
        // Set before the swaps, which happen right here.
        later(body.retry_ms || (changed.length ? RETRY_MS : 0));
        changed.forEach(function (id) {
          var card = document.getElementById("job-" + id);
          if (!card || !window.htmx) return;
          var html = body.cards && body.cards[id];
          if (html) {
            window.htmx.swap(card, html, { swapStyle: "outerHTML" });
          } else {
            window.htmx.trigger(card, "atelier-changed"); // its own URL says why not (404)
          }
        });
      })
      .catch(function () {
        if (watch !== current) return; // aborted for a newer watch
        watch = null;
        healthy = false;
        later(retryMs);
        retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
      });
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail.elt;
    if (healthy && elt && watched[elt.id] && elt.matches(".job-card[data-watch-url]")) {
      event.detail.headers["X-Atelier-Watched"] = "1";
    }
  });
  // A card swapped in (new, changed or final) changes what the watch must name.
  document.addEventListener("htmx:load", function () { later(0); });
  document.addEventListener("visibilitychange", function () { later(0); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { later(0); });
  } else {
    later(0);
  }
})();
