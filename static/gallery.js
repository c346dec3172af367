// The gallery's small conveniences; everything here also works without it (see gallery.html).
//  - the selection: shift-click selects a range of cells, the bar counts what is selected
//  - "f" stars or unstars the cell that has the focus
//  - a changed filter (other than the search box, which htmx handles) applies at once
//  - forms with data-confirm ask first (emptying the trash, deleting a collection)
(function () {
  "use strict";

  var lastClicked = null;

  function checkboxes() {
    return Array.prototype.slice.call(document.querySelectorAll(".cell .select"));
  }

  function updateCount() {
    var count = checkboxes().filter(function (box) { return box.checked; }).length;
    var label = document.getElementById("selected-count");
    if (label) label.textContent = String(count);
    var counter = document.getElementById("bulk-count");
    if (counter) counter.hidden = false;
    var bar = document.getElementById("bulk-form");
    if (bar) bar.classList.toggle("has-selection", count > 0);
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
    var form = target && target.form;
    if (form && form.id === "gallery-filters" && target.name !== "q") {
      form.requestSubmit();
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "f" || event.ctrlKey || event.metaKey || event.altKey) return;
    var active = document.activeElement;
    if (!active || active.matches("input:not([type=checkbox]), select, textarea")) return;
    var cell = active.closest(".cell");
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
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form instanceof HTMLFormElement && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // Swapped cells (deleted, restored, the next page) change what is selected.
  document.addEventListener("htmx:afterSettle", updateCount);
  document.addEventListener("DOMContentLoaded", updateCount);
})();
