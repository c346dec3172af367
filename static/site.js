// Loaded by every page from base.html's <head>, not deferred, so it runs before the page draws:
//  - marks <html> with "js" (stylesheets show script-only controls and hide what a script
//    replaces, such as the gallery's always-visible selection bar)
//  - puts this browser's remembered view choices on <html> as classes, so the first paint
//    already has them: "banner-dismissed" (the demo notice), "density-small"/"density-large"
//    and "group-by-job" (the gallery; static/gallery.js changes them)
//  - the demo notice's dismiss button
(function () {
  "use strict";

  var root = document.documentElement;
  var KEYS = { banner: "atelier.bannerDismissed", density: "atelier.density", group: "atelier.groupByJob" };

  function read(key) {
    try { return window.localStorage.getItem(key); } catch (error) { return null; }
  }

  root.classList.add("js");
  if (read(KEYS.banner) === "1") root.classList.add("banner-dismissed");
  var density = read(KEYS.density);
  if (density === "small" || density === "large") root.classList.add("density-" + density);
  if (read(KEYS.group) === "1") root.classList.add("group-by-job");

  window.atelierPrefs = {
    keys: KEYS,
    read: read,
    write: function (key, value) {
      try { window.localStorage.setItem(key, value); } catch (error) { /* private mode: this page only */ }
    },
  };

  document.addEventListener("DOMContentLoaded", function () {
    var dismiss = document.querySelector("[data-dismiss-banner]");
    if (!dismiss) return;
    dismiss.hidden = false;
    dismiss.addEventListener("click", function () {
      root.classList.add("banner-dismissed");
      window.atelierPrefs.write(KEYS.banner, "1");
      document.getElementById("main").focus({ preventScroll: true });
    });
  });
})();
