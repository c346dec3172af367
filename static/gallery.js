// The gallery's conveniences; everything here also works without it (see gallery.html).
//  - the selection: shift-click selects a range of cells; the bar (hidden until something is
//    ticked) counts it; Compare is enabled with 2 to 4 ticked (static/viewer.js handles it)
//  - the view controls, remembered in this browser: thumbnail size, grouping by job
//  - the keyboard: the grid is one tab stop (roving tabindex); arrows move between cells,
//    Home/End, x or Space select, "f" stars, "?" shows the shortcuts
//  - a changed filter (other than the search box, which htmx handles) applies at once
//  - Back from an image comes to it: a click puts the URL of the page holding the image in the
//    address bar and remembers the image, which is scrolled to when the gallery loads again
//  - messages float as toasts with a Dismiss button; forms with data-confirm ask first
(function () {
  "use strict";

  var prefs = window.atelierPrefs;
  var root = document.documentElement;
  var RETURN_KEY = "atelier.galleryReturn";
  var lastClicked = null;

  function grid() {
    return document.getElementById("gallery-grid");
  }

  function thumbs() {
    var container = grid();
    return container ? Array.prototype.slice.call(container.querySelectorAll(".cell a.thumb")) : [];
  }

  function checkboxes() {
    return Array.prototype.slice.call(document.querySelectorAll(".cell .select"));
  }

  // --- the selection ----------------------------------------------------------------------

  function updateCount() {
    var count = checkboxes().filter(function (box) { return box.checked; }).length;
    var label = document.getElementById("selected-count");
    if (label) label.textContent = String(count);
    var counter = document.getElementById("bulk-count");
    if (counter) counter.hidden = false;
    var bar = document.getElementById("bulk-form");
    if (bar) bar.classList.toggle("has-selection", count > 0);
    var compare = document.querySelector("[data-compare]");
    if (compare) compare.disabled = count < 2 || count > 4;
  }

  document.addEventListener("click", function (event) {
    var box = event.target;
    if (!(box instanceof HTMLInputElement) || !box.classList.contains("select")) return;
    if (event.shiftKey && lastClicked && lastClicked !== box && document.contains(lastClicked)) {
      var all = checkboxes();
      var from = all.indexOf(lastClicked);
      var to = all.indexOf(box);
      if (from >= 0 && to >= 0) {
        var start = Math.min(from, to);
        var end = Math.max(from, to);
        for (var i = start; i <= end; i++) all[i].checked = box.checked;
      }
    }
    lastClicked = box;
    updateCount();
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLInputElement && target.classList.contains("select")) {
      updateCount();
      return;
    }
    if (target instanceof HTMLInputElement && target.name === "density") {
      setDensity(target.value);
      return;
    }
    if (target instanceof HTMLInputElement && target.id === "group-by-job") {
      root.classList.toggle("group-by-job", target.checked);
      prefs.write(prefs.keys.group, target.checked ? "1" : "0");
      return;
    }
    var form = target && target.form;
    if (form && form.id === "gallery-filters" && target.name !== "q") {
      form.requestSubmit();
    }
  });

  // --- view controls ------------------------------------------------------------------------

  function setDensity(value) {
    root.classList.remove("density-small", "density-large");
    if (value === "small" || value === "large") root.classList.add("density-" + value);
    prefs.write(prefs.keys.density, value);
  }

  function showViewControls() {
    var controls = document.getElementById("view-controls");
    if (!controls) return;
    controls.hidden = false;
    var density = root.classList.contains("density-small")
      ? "small" : root.classList.contains("density-large") ? "large" : "medium";
    var radio = document.getElementById("density-" + density);
    if (radio) radio.checked = true;
    var group = document.getElementById("group-by-job");
    if (group) group.checked = root.classList.contains("group-by-job");
  }

  // --- the cells: one header per job, one tab stop ---------------------------

  function prepareCells() {
    // A page that starts inside the previous page's last job repeats its header: drop it.
    var container = grid();
    if (container) {
      var previousJob = null;
      Array.prototype.slice.call(container.children).forEach(function (item) {
        if (item.classList.contains("job-group")) {
          var job = item.getAttribute("data-job-id");
          if (job === previousJob) {
            var end = item.previousElementSibling;
            if (end && end.classList.contains("group-end")) end.remove();
            item.remove();
          }
        } else if (item.classList.contains("cell")) {
          previousJob = item.getAttribute("data-job-id");
        }
      });
    }
    rovingTabindex();
  }

  function current() {
    var all = thumbs();
    for (var i = 0; i < all.length; i++) if (all[i].tabIndex === 0) return all[i];
    return null;
  }

  function rovingTabindex() {
    var all = thumbs();
    var chosen = current() || all[0];
    all.forEach(function (thumb) {
      thumb.tabIndex = thumb === chosen ? 0 : -1;
      var cell = thumb.closest(".cell");
      cell.querySelectorAll("input, button").forEach(function (control) { control.tabIndex = -1; });
    });
  }

  function moveTo(thumb) {
    if (!thumb) return;
    thumbs().forEach(function (other) { other.tabIndex = other === thumb ? 0 : -1; });
    thumb.focus({ preventScroll: true });
    thumb.scrollIntoView({ block: "nearest" });
  }

  function centre(element) {
    var box = element.getBoundingClientRect();
    return { x: box.left + box.width / 2, y: box.top + box.height / 2, top: box.top, bottom: box.bottom };
  }

  // The cell in the next row up or down whose middle is nearest horizontally (rows differ).
  function vertical(from, down) {
    var start = centre(from);
    var best = null;
    var bestRow = null;
    var bestDistance = Infinity;
    thumbs().forEach(function (thumb) {
      if (thumb === from) return;
      var here = centre(thumb);
      var beyond = down ? here.top >= start.bottom - 1 : here.bottom <= start.top + 1;
      if (!beyond) return;
      var row = here.top;
      if (bestRow !== null && (down ? row > bestRow + 1 : row < bestRow - 1)) return;
      if (bestRow === null || (down ? row < bestRow - 1 : row > bestRow + 1)) {
        bestRow = row;
        bestDistance = Infinity;
      }
      var distance = Math.abs(here.x - start.x);
      if (distance < bestDistance) {
        best = thumb;
        bestDistance = distance;
      }
    });
    return best;
  }

  function typing(element) {
    return element && element.matches("input:not([type=checkbox]):not([type=radio]), select, textarea");
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    // The full-window viewer (static/viewer.js) has keys of its own while it is open.
    if (document.querySelector("dialog.viewer[open]")) return;
    var active = document.activeElement;
    var dialog = document.getElementById("grid-shortcuts");
    if (event.key === "?" && !typing(active) && dialog && !dialog.open) {
      event.preventDefault();
      dialog.showModal();
      return;
    }
    if (dialog && dialog.open) return;
    if (event.key === "f" && !typing(active)) {
      starFocused(active, event);
      return;
    }
    var thumb = active && active.matches("#gallery-grid .cell a.thumb") ? active : null;
    if (!thumb) return;
    var all = thumbs();
    var index = all.indexOf(thumb);
    var target = null;
    if (event.key === "ArrowRight") target = all[index + 1];
    else if (event.key === "ArrowLeft") target = all[index - 1];
    else if (event.key === "ArrowDown") target = vertical(thumb, true);
    else if (event.key === "ArrowUp") target = vertical(thumb, false);
    else if (event.key === "Home") target = all[0];
    else if (event.key === "End") target = all[all.length - 1];
    else if (event.key === "x" || event.key === " ") {
      event.preventDefault();
      var box = thumb.closest(".cell").querySelector(".select");
      if (box) box.click();
      return;
    } else return;
    event.preventDefault();
    moveTo(target);
  });

  function starFocused(active, event) {
    var cell = active && active.closest(".cell");
    var star = cell && cell.querySelector(".star-form button");
    if (!star) return;
    event.preventDefault();
    var form = star.form;
    if (form && form.classList.contains("htmx-added")) {
      // Swapped in a moment ago and not yet wired by htmx (it settles 20 ms later): a click
      // now would post the plain form and reload the page. Press it once htmx has loaded it.
      form.addEventListener("htmx:load", function () { star.click(); }, { once: true });
      return;
    }
    star.click();
  }

  // Focus anywhere in a cell (a click on its checkbox, say) makes it the grid's tab stop.
  document.addEventListener("focusin", function (event) {
    var cell = event.target.closest && event.target.closest("#gallery-grid .cell");
    var thumb = cell && cell.querySelector("a.thumb");
    if (thumb && thumb.tabIndex !== 0) {
      thumbs().forEach(function (other) { other.tabIndex = other === thumb ? 0 : -1; });
    }
  });

  // --- the skip link, the shortcuts button, the toasts --------------------------------------

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var skip = target.closest(".skip-link[href='#gallery-grid']");
    if (skip && current()) {
      event.preventDefault();
      moveTo(current());
      return;
    }
    if (target.closest("#shortcuts-button")) {
      document.getElementById("grid-shortcuts").showModal();
      return;
    }
    var dismiss = target.closest("[data-dismiss-notice]");
    if (dismiss) dismiss.closest(".notice").remove();
  });

  function showDismissButtons() {
    document.querySelectorAll("[data-dismiss-notice]").forEach(function (button) { button.hidden = false; });
  }

  // --- Back comes to the clicked image ------------------------------------------------------

  // Capture: the viewer may stop a plain click from bubbling; remembering it does no harm.
  document.addEventListener("click", function (event) {
    var thumb = event.target instanceof Element && event.target.closest("#gallery-grid a.thumb");
    if (!thumb || event.button !== 0) return;
    var cell = thumb.closest(".cell");
    var item = cell;
    while (item && !item.hasAttribute("data-page-url")) item = item.previousElementSibling;
    var pageUrl = item ? item.getAttribute("data-page-url") : window.location.pathname + window.location.search;
    if (pageUrl !== window.location.pathname + window.location.search) {
      history.replaceState(history.state, "", pageUrl);
    }
    history.scrollRestoration = "manual";
    try {
      window.sessionStorage.setItem(RETURN_KEY, JSON.stringify({ url: pageUrl, id: cell.id }));
    } catch (error) { /* no session storage: Back shows the page's top */ }
  }, true);

  function returnToClicked() {
    var saved = null;
    try { saved = JSON.parse(window.sessionStorage.getItem(RETURN_KEY) || "null"); } catch (error) { saved = null; }
    if (!saved || saved.url !== window.location.pathname + window.location.search) return;
    try { window.sessionStorage.removeItem(RETURN_KEY); } catch (error) { /* nothing kept */ }
    var cell = document.getElementById(saved.id);
    var thumb = cell && cell.querySelector("a.thumb");
    if (!thumb) return;
    thumbs().forEach(function (other) { other.tabIndex = other === thumb ? 0 : -1; });
    cell.scrollIntoView({ block: "center" });
    thumb.focus({ preventScroll: true });
  }

  // --- forms that ask first -----------------------------------------------------------------

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form instanceof HTMLFormElement && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // Swapped cells (deleted, restored, the next page) change what is selected and what is shown.
  document.addEventListener("htmx:afterSettle", function () {
    prepareCells();
    updateCount();
    showDismissButtons();
  });
  document.addEventListener("DOMContentLoaded", function () {
    showViewControls();
    prepareCells();
    updateCount();
    showDismissButtons();
    returnToClicked();
  });
  // Restored from the back-forward cache: the page is as it was, scroll place included.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) returnToClicked();
  });
})();
